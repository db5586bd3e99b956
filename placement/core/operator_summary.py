"""The compact operator summary of a job: per operator kind and size, what its kernels compute and move.

Recorded by :mod:`placement.model.operators` (on the ``meta`` device) and carried by a
:class:`placement.core.job.Job` (its optional ``operators`` field), in traces and in the HTTP job
description; read by the operator-level model (:mod:`placement.model.opmodel`). This module has
no torch dependency, so the service can validate a summary without it.
"""

from __future__ import annotations

import math

from pydantic import ConfigDict, Field

from placement.core.record import Record

OPERATOR_KINDS: tuple[str, ...] = (
    "matmul", "conv", "dwconv", "attention", "recurrent", "gather", "norm", "pool", "reduction",
    "elementwise", "copy", "optimizer",
)
"""Operator kinds. ``optimizer`` rows are the SGD step's element-wise updates."""


def size_bin(flops: float, nbytes: float) -> int:
    """The decade of an operator's work: ``floor(log10(FLOPs))``, or of its bytes (+ 100)
    for an operator without FLOPs (element-wise, copies, lookups)."""
    if flops > 0:
        return int(math.floor(math.log10(flops)))
    return 100 + int(math.floor(math.log10(max(nbytes, 1.0))))


class OperatorBin(Record):
    """Operators of one kind and size bin, summed. ``launches``: GPU kernel launches (CPU
    dispatches are ``count``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(min_length=1, max_length=32, description="Operator kind: " + ", ".join(OPERATOR_KINDS) + ".")
    size_bin: int = Field(ge=-10, le=130, description="floor(log10 FLOPs per op), or 100 + floor(log10 bytes) without FLOPs.")
    count: int = Field(ge=1, le=10**9, description="Operators in the bin.")
    flops: float = Field(ge=0, le=1e21, description="FLOPs of the bin's operators.")
    bytes_read: float = Field(ge=0, le=1e18, description="Bytes read by the bin's operators.")
    bytes_written: float = Field(ge=0, le=1e18, description="Bytes written by the bin's operators.")
    launches: float = Field(ge=0, le=1e9, description="GPU kernel launches of the bin.")


class OperatorSummary(Record):
    """The compact operator description of one step (see module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bins: tuple[OperatorBin, ...] = Field(min_length=1, max_length=400, description="Per kind and size bin.")
    param_tensors: int = Field(0, ge=0, le=10**7, description="Trainable parameter tensors (optimizer launches).")

    @property
    def flops(self) -> float:
        """FLOPs of the whole step (every bin)."""
        return float(sum(b.flops for b in self.bins))

    @property
    def count(self) -> int:
        """Operators in the whole step (every bin)."""
        return int(sum(b.count for b in self.bins))
