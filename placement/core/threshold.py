"""The joint threshold of paper A, its missing-data rules, and the placement reward.

A job goes to the GPU only when the GPU is a *valid acceleration*:

* speedup ``T_cpu / T_gpu >= T_t`` (default ``T_t = 2.0``), **and**
* per-sample energy ratio ``(E_gpu / N) / (E_cpu / N) <= T_e`` (default ``T_e = 1.5``),

with the energy of paper A eq. (2), which counts the host CPU during GPU runs::

    E_cpu = P_cpu * T_cpu
    E_gpu = (P_cpu_host + P_gpu) * T_gpu

Paper A contradicts itself: its eq. (1) is printed as the *CPU* condition
(``speedup < T_t OR ratio > T_e``) while the text labels such jobs GPU, and its abstract
says "no more than 50% of per-sample energy" while the body and ``T_e = 1.5`` say "not
more than 50% *worse*". We use **GPU iff speedup >= T_t AND energy ratio <= T_e**; both
thresholds are configurable (:class:`Thresholds`). Both comparisons are inclusive, with a
relative tolerance of ``1e-9`` so that float round-off at exactly 2.0 or 1.5 does not flip
a label.

Missing data, decided explicitly (``reason`` says which rule fired):

==========================  ===========  =================================================
case                        label        reason
==========================  ===========  =================================================
CPU infeasible, GPU ran     GPU          ``cpu_infeasible`` (e.g. TimeSformer_k400)
GPU infeasible (OOM, ...)   CPU          ``gpu_infeasible``
both infeasible             CPU          ``both_infeasible`` (nothing runs; CPU is cheaper)
energy unknown              per policy   ``energy_unknown`` flag set
==========================  ===========  =================================================

When a power reading is missing (paper A's xgb_iris GPU run), ``Thresholds.missing_power``
declares the rule: ``speed_only`` (default) decides on the speedup alone and flags the
label ``energy_unknown``; ``cpu`` refuses the GPU without energy evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

REL_TOL = 1e-9
MARGIN_CAP = 2.0
"""Largest |margin| (natural log units, i.e. e**2 = 7.4x beyond a threshold) a reward counts."""


class MissingPower(str, Enum):
    """What a label does without a power reading: ``speed_only`` decides on the speedup alone
    (flagged ``energy_unknown``), ``cpu`` refuses the GPU without energy evidence."""

    SPEED_ONLY = "speed_only"
    CPU = "cpu"


class Reason(str, Enum):
    """Why a pair got its label: the joint-threshold verdict or the missing-data rule that fired
    (see the module docstring)."""

    VALID_ACCELERATION = "valid_acceleration"
    TOO_SLOW = "too_slow"
    TOO_COSTLY = "too_costly"
    CPU_INFEASIBLE = "cpu_infeasible"
    GPU_INFEASIBLE = "gpu_infeasible"
    BOTH_INFEASIBLE = "both_infeasible"
    NO_ENERGY_EVIDENCE = "no_energy_evidence"


@dataclass(frozen=True)
class Thresholds:
    """``speedup_min`` is paper A's T_t, ``energy_ratio_max`` its T_e (both dimensionless)."""

    speedup_min: float = 2.0
    energy_ratio_max: float = 1.5
    missing_power: MissingPower = MissingPower.SPEED_ONLY

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speedup_min) and self.speedup_min > 0):
            raise ValueError(f"speedup_min (T_t) must be a finite number > 0, got {self.speedup_min!r}")
        if not (math.isfinite(self.energy_ratio_max) and self.energy_ratio_max > 0):
            raise ValueError(
                f"energy_ratio_max (T_e) must be a finite number > 0, got {self.energy_ratio_max!r}"
            )
        object.__setattr__(self, "missing_power", MissingPower(self.missing_power))

    def as_dict(self) -> dict[str, float | str]:
        """The thresholds as JSON-ready values (``missing_power`` its string)."""
        return {
            "speedup_min": self.speedup_min,
            "energy_ratio_max": self.energy_ratio_max,
            "missing_power": self.missing_power.value,
        }


@dataclass(frozen=True)
class Labels:
    """Vectorised labels. ``margin`` is the GPU's slack in natural-log units:
    ``min(ln(speedup / T_t), ln(T_e / energy_ratio))`` -- positive iff the GPU is a valid
    acceleration -- and ``+-MARGIN_CAP`` when one device is infeasible."""

    gpu: BoolArray
    speedup: FloatArray
    energy_ratio: FloatArray
    margin: FloatArray
    energy_unknown: BoolArray
    reason: npt.NDArray[np.str_]


def cpu_energy_j(cpu_power_w: npt.ArrayLike, time_s: npt.ArrayLike) -> FloatArray:
    """Eq. (2), CPU run: ``P_cpu * T``."""
    return np.asarray(cpu_power_w, dtype=np.float64) * np.asarray(time_s, dtype=np.float64)


def gpu_energy_j(
    host_cpu_power_w: npt.ArrayLike, gpu_power_w: npt.ArrayLike, time_s: npt.ArrayLike
) -> FloatArray:
    """Eq. (2), GPU run: ``(P_cpu_host + P_gpu) * T`` -- the host CPU counts too."""
    power = np.asarray(host_cpu_power_w, dtype=np.float64) + np.asarray(gpu_power_w, dtype=np.float64)
    return power * np.asarray(time_s, dtype=np.float64)


def joint_threshold(
    cpu_time_per_sample_s: npt.ArrayLike,
    gpu_time_per_sample_s: npt.ArrayLike,
    cpu_energy_per_sample_j: npt.ArrayLike,
    gpu_energy_per_sample_j: npt.ArrayLike,
    cpu_feasible: npt.ArrayLike = True,
    gpu_feasible: npt.ArrayLike = True,
    thresholds: Thresholds | None = None,
) -> Labels:
    """Label jobs CPU or GPU by the joint threshold. Inputs broadcast; NaN energy = missing.

    Times in seconds per sample, energies in joules per sample (eq. 2). An infeasible
    device's time and energy are ignored.
    """
    th = thresholds or Thresholds()
    t_cpu = np.asarray(cpu_time_per_sample_s, dtype=np.float64)
    t_gpu = np.asarray(gpu_time_per_sample_s, dtype=np.float64)
    e_cpu = np.asarray(cpu_energy_per_sample_j, dtype=np.float64)
    e_gpu = np.asarray(gpu_energy_per_sample_j, dtype=np.float64)
    t_cpu, t_gpu, e_cpu, e_gpu, cpu_ok, gpu_ok = np.broadcast_arrays(
        t_cpu, t_gpu, e_cpu, e_gpu, np.asarray(cpu_feasible, dtype=bool), np.asarray(gpu_feasible, dtype=bool)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        speedup = np.where(cpu_ok & gpu_ok, t_cpu / t_gpu, np.nan)
        energy_ratio = np.where(cpu_ok & gpu_ok, e_gpu / e_cpu, np.nan)
        speed_margin = np.log(speedup / th.speedup_min)
        energy_margin = np.log(th.energy_ratio_max / energy_ratio)
    both = cpu_ok & gpu_ok
    energy_unknown = both & ~np.isfinite(energy_ratio)
    fast = speedup >= th.speedup_min * (1.0 - REL_TOL)
    frugal = energy_ratio <= th.energy_ratio_max * (1.0 + REL_TOL)

    if th.missing_power is MissingPower.SPEED_ONLY:
        gpu_when_unknown = fast
        margin_unknown = speed_margin
    else:
        gpu_when_unknown = np.zeros_like(fast)
        margin_unknown = np.minimum(speed_margin, 0.0)

    gpu = np.where(both, np.where(energy_unknown, gpu_when_unknown, fast & frugal), ~cpu_ok) & gpu_ok
    margin = np.where(energy_unknown, margin_unknown, np.minimum(speed_margin, energy_margin))
    margin = np.where(~cpu_ok & gpu_ok, MARGIN_CAP, margin)
    margin = np.where(~gpu_ok, -MARGIN_CAP, margin)
    margin = np.nan_to_num(margin, nan=0.0, posinf=MARGIN_CAP, neginf=-MARGIN_CAP)

    reason = np.full(gpu.shape, Reason.VALID_ACCELERATION.value, dtype=object)
    reason[both & ~fast] = Reason.TOO_SLOW.value
    reason[both & fast & ~frugal & ~energy_unknown] = Reason.TOO_COSTLY.value
    if th.missing_power is MissingPower.CPU:
        reason[both & energy_unknown & fast] = Reason.NO_ENERGY_EVIDENCE.value
    reason[~cpu_ok & gpu_ok] = Reason.CPU_INFEASIBLE.value
    reason[cpu_ok & ~gpu_ok] = Reason.GPU_INFEASIBLE.value
    reason[~cpu_ok & ~gpu_ok] = Reason.BOTH_INFEASIBLE.value
    return Labels(
        gpu=np.asarray(gpu, dtype=bool),
        speedup=speedup,
        energy_ratio=energy_ratio,
        margin=margin,
        energy_unknown=energy_unknown,
        reason=reason.astype(str),
    )


def placement_reward(
    chose_gpu: npt.ArrayLike,
    labels: Labels,
    *,
    correct_bonus: float = 0.5,
    margin_cap: float = MARGIN_CAP,
) -> FloatArray:
    """Reward of a CPU/GPU choice against the joint threshold (dimensionless).

    ``r = +(correct_bonus + min(|margin|, margin_cap))`` when the choice matches the label
    and the negative of that when it does not. ``margin`` is in natural-log units of the
    binding ratio's slack: a job whose GPU run is 4x faster than needed (speedup 8 with
    ``T_t = 2``) and within energy has margin ``ln 4 = 1.39``; putting it on the CPU costs
    ``-(0.5 + 1.39)``. Valid GPU acceleration is rewarded, GPU use that is not valid is
    penalised, and the magnitude grows with how much time or energy was won or lost.
    The Oracle earns ``correct_bonus + min(|margin|, cap)`` on every job.
    """
    if correct_bonus < 0 or margin_cap <= 0:
        raise ValueError("correct_bonus must be >= 0 and margin_cap > 0")
    chose = np.asarray(chose_gpu, dtype=bool)
    size = correct_bonus + np.minimum(np.abs(labels.margin), margin_cap)
    return np.where(chose == labels.gpu, size, -size)
