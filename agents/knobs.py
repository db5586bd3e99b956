"""Edge knobs as discrete levels, as ``DevicePlacement-v0`` encodes them (paper B).

Paper B (Ma et al. 2025) varies the number of CPU cores and the GPU memory limit on Jetson
devices; gains flatten from about 4 cores, and an explicit memory cap is the stable choice
(``mem_grow`` fragments in long runs). A policy answers a *level index* per knob; the
environment's grids (:data:`placement.envs.device_placement.CORE_GRID`, ``CAP_GRID``) and
:func:`placement.envs.device_placement.decode_action` turn levels into a core count and a cap in MiB
for a target, the same way for every policy, the service and the evaluation.

:class:`KnobLevels` records the grids a model was trained with, so a model whose grids no
longer match the environment's is refused instead of silently mis-decoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from placement.core.decision import GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.envs.device_placement import CAP_GRID, CORE_GRID, decode_action


@dataclass(frozen=True)
class KnobLevels:
    """The core and cap grids of the action encoding (must equal the environment's)."""

    core_grid: tuple[int, ...] = CORE_GRID
    cap_grid: tuple[float | str, ...] = CAP_GRID

    def __post_init__(self) -> None:
        core = tuple(int(c) for c in self.core_grid)
        cap = tuple(c if isinstance(c, str) else float(c) for c in self.cap_grid)
        if core != CORE_GRID or cap != tuple(c if isinstance(c, str) else float(c) for c in CAP_GRID):
            raise ValueError(
                f"knob grids {list(core)} / {list(cap)} differ from the environment's {list(CORE_GRID)} / "
                f"{list(CAP_GRID)}: the model was trained with another action encoding; retrain it"
            )
        object.__setattr__(self, "core_grid", core)
        object.__setattr__(self, "cap_grid", cap)

    @property
    def n_core_levels(self) -> int:
        """Number of core-count levels (:attr:`core_grid`)."""
        return len(self.core_grid)

    @property
    def n_cap_levels(self) -> int:
        """Number of GPU-memory-cap levels (:attr:`cap_grid`)."""
        return len(self.cap_grid)

    def knobs(self, target: HardwareTarget, core_level: int, cap_level: int | None, *, gpu: bool) -> tuple[int, GpuMemCap]:
        """``(cpu_cores, gpu_mem_cap)`` for the levels on ``target`` (defaults off the edge;
        ``"grow"`` on a CPU placement), by :func:`placement.envs.device_placement.decode_action`."""
        cap = self.n_cap_levels - 1 if cap_level is None else cap_level
        decision = decode_action(np.array([int(gpu), core_level, cap], dtype=np.int64), target)
        return decision.cpu_cores, decision.gpu_mem_cap

    def knobs_many(self, target: HardwareTarget, core_levels: npt.ArrayLike, cap_levels: npt.ArrayLike | None,
                   gpu: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], list[GpuMemCap]]:
        """:meth:`knobs` of many jobs (levels and GPU placements per job): each distinct
        (device, core level, cap level) is decoded once."""
        core = np.asarray(core_levels, dtype=np.int64).reshape(-1)
        cap = (np.full(core.size, self.n_cap_levels - 1, dtype=np.int64) if cap_levels is None
               else np.asarray(cap_levels, dtype=np.int64).reshape(-1))
        dev = np.asarray(gpu, dtype=bool).reshape(-1)
        keys, inverse = np.unique(np.stack([dev.astype(np.int64), core, cap], axis=1), axis=0, return_inverse=True)
        decoded = [self.knobs(target, int(c), int(m), gpu=bool(d)) for d, c, m in keys.tolist()]
        table_cores = np.array([k[0] for k in decoded], dtype=np.int64)
        inverse = inverse.reshape(-1)
        return table_cores[inverse], [decoded[k][1] for k in inverse.tolist()]

    def to_dict(self) -> dict[str, Any]:
        """The grids as JSON-ready lists."""
        return {"core_grid": list(self.core_grid), "cap_grid": list(self.cap_grid)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KnobLevels:
        """The levels from :meth:`to_dict` output."""
        return cls(tuple(data["core_grid"]), tuple(data["cap_grid"]))
