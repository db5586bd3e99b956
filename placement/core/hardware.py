"""Hardware targets: a host CPU with, optionally, one GPU.

A target is what a placement is made *for*. The fields are paper A's Table 3 hardware
features (CPU and GPU throughput, GPU memory, system RAM, CPU and GPU TDP) plus the
figures a performance model needs (memory bandwidths, host link, idle power) and the
kind of machine (server, desktop, edge), which decides whether cores and a GPU memory
cap are part of the answer.
"""

from __future__ import annotations

import math
from enum import Enum

from pydantic import ConfigDict, Field, model_validator

from placement.core.record import Record


class TargetKind(str, Enum):
    """The class of a hardware target: server, desktop or edge (edge targets get core and
    GPU-memory-cap knobs)."""

    SERVER = "server"
    DESKTOP = "desktop"
    EDGE = "edge"


TARGET_KINDS: tuple[str, ...] = tuple(k.value for k in TargetKind)


class HardwareTarget(Record):
    """A machine a job may be placed on. ``gpu_model`` is ``None`` when there is no GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=True, validate_default=True)

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$", description="Target id (letters, digits, _ . : -), e.g. a catalogue id such as agx-orin.")
    kind: TargetKind = Field(description="server, desktop or edge (edge targets also get core counts and GPU memory caps).")
    cpu_model: str = Field(min_length=1, max_length=200, description="CPU model name.")
    cpu_cores: int = Field(ge=1, le=4096, description="Physical cores usable by jobs.")
    cpu_gflops: float = Field(ge=1e-3, le=1e6, description="Peak FP32 GFLOP/s of those cores.")
    cpu_tdp_w: float = Field(ge=1e-2, le=5000, description="CPU package TDP, W.")
    ram_gib: float = Field(ge=1e-3, le=1e5, description="Host memory, GiB.")
    cpu_mem_bw_gbs: float = Field(50.0, gt=0, le=1e5, description="Host memory bandwidth, GB/s.")
    cpu_idle_w: float = Field(0.0, ge=0, le=5000, description="Package power at idle, W.")
    gpu_model: str | None = Field(None, max_length=200, description="GPU model name; null for a CPU-only target.")
    gpu_gflops: float = Field(0.0, ge=0, le=1e7, description="Peak FP32 (non-tensor) GFLOP/s.")
    gpu_mem_gib: float = Field(0.0, ge=0, le=1e5, description="GPU memory, GiB (0 without a GPU).")
    gpu_tdp_w: float = Field(0.0, ge=0, le=5000, description="GPU board power limit, W.")
    gpu_mem_bw_gbs: float = Field(0.0, ge=0, le=1e6, description="GPU memory bandwidth, GB/s.")
    gpu_idle_w: float = Field(0.0, ge=0, le=5000, description="GPU power at idle, W.")
    host_link_gbs: float = Field(0.0, ge=0, le=1e5, description="Host-device link (PCIe) GB/s; unused when unified.")
    unified_memory: bool = Field(False, description="True when CPU and GPU share one memory (Jetsons).")
    source: str = Field("", max_length=2000, description="Where the figures come from.")

    @model_validator(mode="after")
    def _gpu_consistent(self) -> HardwareTarget:
        for name in ("cpu_gflops", "cpu_tdp_w", "ram_gib", "gpu_gflops", "gpu_mem_gib", "gpu_tdp_w"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        if self.gpu_model is not None and (self.gpu_gflops <= 0 or self.gpu_mem_gib <= 0):
            raise ValueError(
                "a target with gpu_model set needs gpu_gflops > 0 and gpu_mem_gib > 0 "
                "(set gpu_model to null for a CPU-only target)"
            )
        if self.gpu_model is None and self.gpu_gflops > 0:
            raise ValueError("gpu_gflops > 0 needs gpu_model (name the GPU)")
        return self

    @property
    def has_gpu(self) -> bool:
        """Whether the target has a GPU (``gpu_model`` set)."""
        return self.gpu_model is not None

    @property
    def is_edge(self) -> bool:
        """Whether the target is an edge device (core and GPU-memory-cap knobs apply)."""
        return self.kind == TargetKind.EDGE.value

    @property
    def gpu_mem_mib(self) -> int:
        """GPU memory in MiB (0 without a GPU)."""
        return int(self.gpu_mem_gib * 1024)
