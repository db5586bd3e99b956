"""The job: what a user wants to run, described by what a placement policy can see.

Units live in field names. A job says nothing about where it runs; the hardware it may
run on is a :class:`placement.core.hardware.HardwareTarget`, and what happened when it ran is
a :class:`placement.core.outcome.DeviceOutcome`.
"""

from __future__ import annotations

import math
from enum import Enum

from pydantic import ConfigDict, Field, field_validator

from placement.core.operator_summary import OperatorSummary
from placement.core.record import Record


class Family(str, Enum):
    """Model family. Families differ in how they use cores and GPUs (paper B: recurrent
    models scale poorly over cores), so a policy sees the family as a feature."""

    MLP = "mlp"
    CNN = "cnn"
    RNN = "rnn"
    TRANSFORMER = "transformer"
    EMBEDDING = "embedding"
    TREE = "tree"  # gradient-boosted trees (paper A's xgb_iris)
    OTHER = "other"


class Mode(str, Enum):
    """What a job runs: a training step (forward, backward, optimizer) or inference (forward only)."""

    TRAIN = "train"
    INFER = "infer"


FAMILIES: tuple[str, ...] = tuple(f.value for f in Family)
MODES: tuple[str, ...] = tuple(m.value for m in Mode)


class Job(Record):
    """One ML job to place.

    ``flops_per_batch`` counts one forward pass for ``infer`` and forward + backward +
    optimizer step for ``train`` (roughly 3x forward), for one batch of ``batch_size``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=True, validate_default=True)

    name: str = Field(default="job", min_length=1, max_length=200, description="Free-form job or model name.")
    family: Family = Field(description="Model family: " + ", ".join(FAMILIES) + ".")
    mode: Mode = Field(description="train (forward+backward+step) or infer (forward only).")
    batch_size: int = Field(ge=1, le=1_000_000, description="Samples per batch.")
    flops_per_batch: float = Field(ge=0, le=1e21, description="Floating-point operations per batch.")
    param_count: int = Field(ge=0, le=10**13, description="Trainable parameters.")
    input_elems_per_sample: int = Field(ge=1, le=10**12, description="Input elements per sample.")
    input_bytes_per_sample: int = Field(ge=1, le=10**13, description="Input bytes per sample.")
    dataset_size: int | None = Field(default=None, ge=1, le=10**13, description="Samples in the dataset, where known.")
    operators: OperatorSummary | None = Field(
        default=None, description="The step's operators per kind and size (placement describe records them on 'meta'); "
        "absent: the performance model predicts from the aggregate fields above (labelled as such).")
    signature: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{16,64}$",
        description="Structural hash of the model (placement.lab.signature; `placement describe` prints it): the "
        "service keeps every measured outcome of a signature as evidence for its other jobs.",
    )

    @field_validator("flops_per_batch")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("flops_per_batch must be a finite number (FLOPs per batch, >= 0)")
        return value

    @property
    def flops_per_sample(self) -> float:
        """FLOPs per sample of one step: ``flops_per_batch / batch_size``."""
        return self.flops_per_batch / self.batch_size
