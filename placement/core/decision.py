"""The answer the service gives for one job: device, CPU cores and a GPU memory cap."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from placement.core.outcome import Device
from placement.core.record import Record

GROW: Literal["grow"] = "grow"
"""No explicit GPU memory cap: the allocator grows on demand (paper B's ``mem_grow``)."""

GpuMemCap = int | Literal["grow"]


class PlacementDecision(Record):
    """Where to run a job and with which knobs.

    ``cpu_cores`` is the number of cores the job may use (affinity and intra-op threads);
    ``gpu_mem_cap`` is a cap in MiB or ``"grow"``. On server and desktop targets the
    knobs are the machine's defaults (all usable cores, ``"grow"``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=True, validate_default=True)

    device: Device
    cpu_cores: int = Field(ge=1, le=4096)
    gpu_mem_cap: GpuMemCap = GROW

    @field_validator("gpu_mem_cap")
    @classmethod
    def _cap_positive(cls, value: GpuMemCap) -> GpuMemCap:
        if value != GROW and (isinstance(value, bool) or int(value) < 1):
            raise ValueError("gpu_mem_cap must be a positive number of MiB or 'grow'")
        return value

    @property
    def gpu_mem_cap_mib(self) -> int | None:
        """The cap in MiB, or ``None`` for ``"grow"``."""
        return None if self.gpu_mem_cap == GROW else int(self.gpu_mem_cap)
