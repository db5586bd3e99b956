"""Baselines of paper A (CPU-only, GPU-only, Random, Rule-based) and the Oracle."""

from __future__ import annotations

import numpy as np
import pytest

from placement.agents.baselines import (
    CpuOnlyPolicy,
    GpuOnlyPolicy,
    OraclePolicy,
    RandomPolicy,
    RuleBasedPolicy,
)
from placement.agents.evaluation import labelled_set
from placement.core.catalogue import get_target
from placement.model.features import FEATURE_INDEX, build_features
from tests.agents_synthetic import synthetic_pairs


@pytest.fixture(scope="module")
def data():
    return labelled_set(synthetic_pairs(40, seed=1))


def test_constant_policies(data, example_job):
    assert not CpuOnlyPolicy().predict(data.x)[0].any()
    assert GpuOnlyPolicy().predict(data.x)[0].all()
    cpu_only_target = get_target("A").model_copy(update={"id": "cpu", "gpu_model": None, "gpu_gflops": 0.0})
    assert GpuOnlyPolicy().decide(example_job, cpu_only_target).device == "cpu"
    assert GpuOnlyPolicy().decide(example_job, get_target("A")).device == "gpu"
    single, state = CpuOnlyPolicy().predict(data.x[0])
    assert single == 0 and state is None


def test_random_is_seeded_and_balanced(data):
    a = RandomPolicy(seed=3).predict(data.x)[0]
    b = RandomPolicy(seed=3).predict(data.x)[0]
    np.testing.assert_array_equal(a, b)
    assert 0.35 < a.mean() < 0.65
    with pytest.raises(ValueError, match="p_gpu"):
        RandomPolicy(p_gpu=1.5)


def test_rule_based_fits_flops_threshold(data):
    rule = RuleBasedPolicy.fit(data.x, data.y)
    pred = rule.predict(data.x)[0].astype(bool)
    acc = float((pred == data.y).mean())
    assert acc == pytest.approx(rule.rule.train_accuracy)
    assert acc > 0.8  # far better than the constant policies on this trace
    assert acc >= max(data.y.mean(), 1 - data.y.mean())
    # monotone in FLOPs: more work never moves a job from GPU to CPU
    x = data.x[:1].repeat(2, axis=0)
    x[1, FEATURE_INDEX["log10_flops_per_batch"]] += 5
    p = rule.predict(x)[0]
    assert p[1] >= p[0]


def test_oracle_reproduces_labels_and_refuses_unknown_jobs(data, example_job):
    oracle = OraclePolicy.from_pairs(data.pairs)
    np.testing.assert_array_equal(oracle.predict(data.x)[0].astype(bool), data.y)
    with pytest.raises(KeyError, match="no measured outcome"):
        oracle.predict(build_features(example_job, get_target("jetson-nano")))
