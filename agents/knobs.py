"""Edge knobs as discrete levels: how many CPU cores a job gets and the GPU memory cap (paper B).

Paper B (Ma et al. 2025) varies the number of CPU cores and the GPU memory limit on Jetson
devices; gains flatten from about 4 cores, and an explicit memory cap is the stable choice
(``mem_grow`` fragments in long runs). A policy answers a *level index* per knob; a
:class:`KnobLevels` turns the indices into a core count (clipped to the target's cores)
and a cap in MiB (a fraction of the target's GPU memory) for a given target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from placement.decision import GROW, GpuMemCap
from placement.hardware import HardwareTarget


@dataclass(frozen=True)
class KnobLevels:
    """``core_counts``: absolute core counts per level (clipped to the target's cores);
    ``cap_fractions``: fraction of the target's GPU memory per cap level."""

    core_counts: tuple[int, ...] = (1, 2, 4, 6, 8, 12)
    cap_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

    def __post_init__(self) -> None:
        if not self.core_counts or any(c < 1 for c in self.core_counts):
            raise ValueError(f"core_counts must be positive core counts, got {self.core_counts}")
        if not self.cap_fractions or any(not 0.0 < f <= 1.0 for f in self.cap_fractions):
            raise ValueError(f"cap_fractions must be in (0, 1], got {self.cap_fractions}")
        object.__setattr__(self, "core_counts", tuple(int(c) for c in self.core_counts))
        object.__setattr__(self, "cap_fractions", tuple(float(f) for f in self.cap_fractions))

    @property
    def n_core_levels(self) -> int:
        return len(self.core_counts)

    @property
    def n_cap_levels(self) -> int:
        return len(self.cap_fractions)

    def cores(self, target: HardwareTarget, level: int) -> int:
        return max(1, min(self.core_counts[level], target.cpu_cores))

    def cap_mib(self, target: HardwareTarget, level: int) -> int:
        return max(1, int(self.cap_fractions[level] * target.gpu_mem_mib))

    def knobs(self, target: HardwareTarget, core_level: int, cap_level: int | None, *, gpu: bool) -> tuple[int, GpuMemCap]:
        """``(cpu_cores, gpu_mem_cap)`` for the levels; a CPU placement gets ``"grow"`` (no cap)."""
        cores = self.cores(target, core_level)
        if not gpu or cap_level is None or not target.has_gpu:
            return cores, GROW
        return cores, self.cap_mib(target, cap_level)

    def to_dict(self) -> dict[str, Any]:
        return {"core_counts": list(self.core_counts), "cap_fractions": list(self.cap_fractions)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KnobLevels:
        return cls(tuple(data["core_counts"]), tuple(data["cap_fractions"]))
