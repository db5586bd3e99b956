"""Shared fixtures. Heavy shared resources (a Ray cluster) are started once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PLACEMENT_TEST", "1")


@pytest.fixture
def example_job():
    from placement.job import Job

    return Job(
        name="resnet18",
        family="cnn",
        mode="train",
        batch_size=64,
        flops_per_batch=3 * 3.64e9 * 64,
        param_count=11_230_000,
        input_elems_per_sample=3 * 224 * 224,
        input_bytes_per_sample=3 * 224 * 224 * 4,
    )
