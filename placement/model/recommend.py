"""Knob recommender: CPU cores and a GPU memory cap from measured (or predicted) times.

Paper B (Ma et al. 2025) finds that inference gains flatten from about 4 cores and that
an explicit GPU memory limit is the stable choice (TensorFlow's ``mem_grow`` was usually
fastest but can fragment memory in long runs). The rules here work on any table of
times, measured or from a model:

* :func:`recommend_cores` -- the **fewest cores within** ``tolerance`` (default 5 %) of the
  best time: ``min{c : T(c) <= (1 + tolerance) * min_c T(c)}``.
* :func:`recommend_gpu_cap` -- the **fastest cap without OOM risk**. Candidates are the
  feasible caps (and ``"grow"``) with a finite time. An explicit cap is *at risk* when it
  leaves less than ``headroom`` (default 25 %) over the job's peak memory, where known
  (``peak_mib``: the allocator's peak under ``"grow"``), or -- when the peak is unknown --
  when it is the smallest feasible cap right above one that ran out of memory. Among the
  safe candidates within ``tolerance`` of the fastest safe time, an explicit cap is
  preferred to ``"grow"`` (paper B's stability argument; ``prefer_explicit=False`` turns
  this off), and among explicit caps the smallest (it leaves the most memory to others).

:func:`recommend_from_trace` applies both per (job, target) to a trace's rows, and
:func:`recommend_for_target` restricts measured rows to what a smaller target offers
(its core count and GPU memory) -- how the catalogue's edge targets get knobs from
measured data until a performance model supplies them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from placement.core.decision import GROW, GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.core.trace import cap_from_column

DEFAULT_TOLERANCE = 0.05
DEFAULT_HEADROOM = 0.25


def _check_tolerance(tolerance: float) -> None:
    if not (math.isfinite(tolerance) and 0.0 <= tolerance < 1.0):
        raise ValueError(f"tolerance must be a fraction in [0, 1) (0.05 = within 5 %), got {tolerance!r}")


def recommend_cores(times_s: Mapping[int, float], tolerance: float = DEFAULT_TOLERANCE) -> int:
    """The fewest cores whose time is within ``tolerance`` of the best (times in seconds).

    Core counts with a missing or non-finite time are ignored; raises when none is left.
    """
    _check_tolerance(tolerance)
    valid: dict[int, float] = {}
    for cores, t in times_s.items():
        if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
            raise ValueError(f"core counts must be whole numbers >= 1, got {cores!r}")
        if t is not None and math.isfinite(float(t)):
            if float(t) <= 0:
                raise ValueError(f"time for {cores} cores must be > 0 seconds, got {t!r}")
            valid[cores] = float(t)
    if not valid:
        raise ValueError("recommend_cores needs at least one core count with a finite time")
    best = min(valid.values())
    return min(c for c, t in valid.items() if t <= best * (1.0 + tolerance))


def _cap_order(cap: GpuMemCap) -> float:
    return math.inf if cap == GROW else float(cap)


def recommend_gpu_cap(
    times_s: Mapping[GpuMemCap, float | None],
    feasible: Mapping[GpuMemCap, bool] | None = None,
    peak_mib: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    headroom: float = DEFAULT_HEADROOM,
    prefer_explicit: bool = True,
) -> GpuMemCap:
    """The GPU memory cap (MiB, or ``"grow"``) that is fastest without risking OOM.

    ``times_s`` maps each measured cap to its time (``None``/NaN where it did not run);
    ``feasible`` marks OOM'd caps ``False`` (default: feasible where the time is finite).
    See the module docstring for the rule. Raises when no cap is feasible.
    """
    _check_tolerance(tolerance)
    if not (math.isfinite(headroom) and headroom >= 0):
        raise ValueError(f"headroom must be a fraction >= 0 (0.25 = 25 % over the peak), got {headroom!r}")
    for cap in times_s:
        if cap != GROW and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"caps must be whole MiB >= 1 or 'grow', got {cap!r}")
    ok: dict[GpuMemCap, float] = {}
    failed: list[float] = []
    for cap, t in times_s.items():
        finite = t is not None and math.isfinite(float(t))
        is_ok = feasible.get(cap, finite) if feasible is not None else finite
        if is_ok and finite:
            ok[cap] = float(t)  # type: ignore[arg-type]
        elif not is_ok:
            failed.append(_cap_order(cap))
    if not ok:
        raise ValueError("recommend_gpu_cap: no feasible cap with a finite time (every cap ran out of memory?)")

    def at_risk(cap: GpuMemCap) -> bool:
        if cap == GROW:
            return False
        if peak_mib is not None and math.isfinite(peak_mib):
            return float(cap) < peak_mib * (1.0 + headroom)
        below = [f for f in failed if f < float(cap)]
        if not below:
            return False
        nearest_failure = max(below)
        smaller_ok = [c for c in ok if c != GROW and nearest_failure < float(c) < float(cap)]
        return not smaller_ok

    safe = {c: t for c, t in ok.items() if not at_risk(c)} or ok
    best = min(safe.values())
    near = [c for c, t in safe.items() if t <= best * (1.0 + tolerance)]
    explicit = [c for c in near if c != GROW]
    if prefer_explicit and explicit:
        return min(explicit, key=_cap_order)
    return min(near, key=lambda c: (safe[c], _cap_order(c)))


@dataclass(frozen=True)
class KnobRecommendation:
    """Recommended knobs for one job on one target, with the evidence behind them."""

    job_id: str
    target_id: str
    cpu_cores: int | None
    cpu_time_s: float | None
    best_cpu_cores: int | None
    best_cpu_time_s: float | None
    gpu_mem_cap: GpuMemCap | None
    gpu_time_s: float | None
    cores_measured: tuple[int, ...]
    caps_measured: tuple[str, ...]
    tolerance: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        """The recommendation's fields as a plain dict."""
        return asdict(self)


def peak_memory_from_journal(path: Path) -> dict[str, float]:
    """Peak GPU memory reserved (MiB) per ``job_id`` under ``"grow"``, from a profiler journal."""
    peaks: dict[str, float] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("kind") != "row" or not rec.get("feasible"):
            continue
        spec = rec["spec"]
        if spec["device"] != "gpu" or spec.get("gpu_mem_cap_mib") is not None or rec.get("peak_reserved_mib") is None:
            continue
        job_id = f"{spec['workload']}-{spec['mode']}-b{spec['batch_size']}"
        peaks[job_id] = max(peaks.get(job_id, 0.0), float(rec["peak_reserved_mib"]))
    return peaks


def _time_col(rows: pd.DataFrame) -> pd.Series:
    return rows["time_per_batch_s"].astype("Float64").astype("float64")


def recommend_from_trace(
    frame: pd.DataFrame,
    tolerance: float = DEFAULT_TOLERANCE,
    headroom: float = DEFAULT_HEADROOM,
    peaks_mib: Mapping[str, float] | None = None,
    prefer_explicit: bool = True,
    max_cores: int | None = None,
    max_cap_mib: int | None = None,
    target_id: str | None = None,
    source: str = "measured",
) -> list[KnobRecommendation]:
    """Knobs per (job, target) from a trace's rows (``time_per_batch_s`` per core count on
    the CPU, per cap on the GPU). ``max_cores``/``max_cap_mib`` drop rows a smaller target
    could not run; ``target_id`` renames the target in the answer."""
    _check_tolerance(tolerance)
    out: list[KnobRecommendation] = []
    for (job_id, tgt), rows in frame.groupby(["job_id", "target_id"], sort=True):
        cpu = rows[(rows["device"] == "cpu") & rows["feasible"].astype(bool)]
        if max_cores is not None:
            cpu = cpu[cpu["cpu_cores"].astype(int) <= max_cores]
        cpu_times = {int(c): float(t) for c, t in zip(cpu["cpu_cores"], _time_col(cpu), strict=True) if math.isfinite(t)}
        cores = best_cores = None
        cpu_t = best_t = None
        if cpu_times:
            cores = recommend_cores(cpu_times, tolerance)
            cpu_t = cpu_times[cores]
            best_cores = min(cpu_times, key=lambda c: cpu_times[c])
            best_t = cpu_times[best_cores]
        gpu = rows[rows["device"] == "gpu"]
        caps = gpu["gpu_mem_cap_mib"].astype("Float64")
        if max_cap_mib is not None:
            gpu = gpu[(caps.isna() | (caps <= max_cap_mib)).to_numpy(dtype=bool)]
            caps = gpu["gpu_mem_cap_mib"].astype("Float64")
        gpu_times: dict[GpuMemCap, float | None] = {}
        gpu_ok: dict[GpuMemCap, bool] = {}
        for cap, t, f in zip(caps, _time_col(gpu), gpu["feasible"].astype(bool), strict=True):
            key = cap_from_column(cap)
            gpu_times[key] = float(t) if math.isfinite(t) else None
            gpu_ok[key] = bool(f)
        cap_choice: GpuMemCap | None = None
        gpu_t = None
        if any(gpu_ok.values()):
            peak = None if peaks_mib is None else peaks_mib.get(str(job_id))
            cap_choice = recommend_gpu_cap(gpu_times, gpu_ok, peak, tolerance, headroom, prefer_explicit)
            gpu_t = gpu_times[cap_choice]
        out.append(KnobRecommendation(
            job_id=str(job_id), target_id=target_id or str(tgt), cpu_cores=cores, cpu_time_s=cpu_t,
            best_cpu_cores=best_cores, best_cpu_time_s=best_t, gpu_mem_cap=cap_choice, gpu_time_s=gpu_t,
            cores_measured=tuple(sorted(cpu_times)),
            caps_measured=tuple(str(c) for c in sorted(gpu_times, key=_cap_order)),
            tolerance=tolerance, source=source,
        ))
    return out


def recommend_for_target(
    frame: pd.DataFrame,
    target: HardwareTarget,
    tolerance: float = DEFAULT_TOLERANCE,
    headroom: float = DEFAULT_HEADROOM,
    peaks_mib: Mapping[str, float] | None = None,
) -> list[KnobRecommendation]:
    """Knobs for ``target`` from rows measured elsewhere: only core counts the target has and
    caps that fit its GPU memory are considered. The answer's ``source`` names the machine
    the rows came from, so nobody mistakes it for a measurement on ``target``."""
    measured_on = ", ".join(sorted({str(t) for t in frame["target_id"].unique()}))
    return recommend_from_trace(
        frame, tolerance, headroom, peaks_mib, max_cores=target.cpu_cores,
        max_cap_mib=target.gpu_mem_mib if target.has_gpu else 0, target_id=target.id,
        source=f"measured on {measured_on}, restricted to {target.id}'s {target.cpu_cores} cores"
        + (f" and {target.gpu_mem_mib} MiB GPU memory" if target.has_gpu else ""),
    )


def recommendations_frame(recs: list[KnobRecommendation]) -> pd.DataFrame:
    """Recommendations as a table (one row each)."""
    return pd.DataFrame([r.to_dict() for r in recs])
