"""One knob recommender: CPU cores and GPU memory cap for a job on a target.

:func:`advise_knobs` replaces ``perfmodel.recommend_knobs`` (model-based) and is the
model-based counterpart of :func:`placement.model.recommend.recommend_cores` (measured tables):

* **Cores**: the fewest cores whose predicted step time is within ``tolerance`` (default 2 %)
  of the fastest predicted over the candidate core counts (all of 1..cores, or the given
  ``candidates``). Jobs that carry operators are timed by the operator-level model
  (:mod:`placement.model.opmodel`, thread scaling per operator kind); others by the aggregate
  :class:`placement.model.perfmodel.PerformanceModel`.
* **GPU memory cap**: never below the estimated peak plus ``margin`` (default 25 %), rounded
  up to 64 MiB; ``"grow"`` on the CPU, without a GPU, or when that does not fit. The peak
  estimate is the larger of the aggregate model's working set and an operator bound on what
  PyTorch's caching allocator *reserves* (:func:`operator_peak_mib`):
  weights (x4 when training: weights, gradients, momentum, a spare) + every byte the step's
  non-optimizer operators write (training keeps activations for backward; an upper bound) or,
  for inference, twice the largest operator's bytes or a recurrent layer's workspace plus its
  largest operator, whichever is more + one input batch + 64 MiB of library workspace
  (cuBLAS/cuDNN) -- the *allocated* peak -- plus the largest single allocation again: with
  default segments the allocator can hold a freed block of that size while the same request
  takes a new segment (measured: a GRU's 274 MiB cuDNN workspace reserved twice,
  ``results/cap_check/memory.jsonl``). On all 52 reference runs of
  ``data/traces/h200_microbench_memory.json`` the reserved peak is at most the allocated peak
  plus the largest allocation plus 17 MiB (segment rounding, inside the 64 MiB).

  A recurrent layer's cuDNN workspace is not one of its per-step operators: it is
  :data:`RECURRENT_WORKSPACE_PER_GATE_BYTE` x the bytes of its largest gate GEMM (its
  largest recurrent bin with FLOPs), at least :data:`RECURRENT_WORKSPACE_FLOOR_MIB`, both
  fitted by :func:`fit_recurrent_workspace` from the recurrent reference layers' inference
  runs of that file alone (never from the architectures advised): the upper envelope, since
  the workspace per gate byte varies 1.4-7.5x with the hidden size there. It was measured on the
  H200 (torch 2.11, cuDNN 9) only; the same constants serve every target (Jetsons' cuDNN
  workspaces are not measured).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from placement.core.decision import GROW, GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.operator_summary import OperatorSummary

MIB = float(2**20)
DEFAULT_CORE_TOLERANCE = 0.02
DEFAULT_CAP_MARGIN = 0.25
WORKSPACE_MIB = 64.0
CAP_STEP_MIB = 64
MEMORY_REFERENCE = Path("data/traces/h200_microbench_memory.json")
RECURRENT_WORKSPACE_PER_GATE_BYTE = 7.5
"""cuDNN recurrent workspace per byte of the layer's largest gate GEMM output (inference): the
largest ratio over the reference layers of :data:`MEMORY_REFERENCE` whose gate output is >= 1 MiB
(:func:`fit_recurrent_workspace`; a test refits it)."""
RECURRENT_WORKSPACE_FLOOR_MIB = 9.73
"""The smallest recurrent workspace (MiB): the largest one among the reference layers whose gate
output is below 1 MiB."""


@dataclass(frozen=True)
class KnobAdvice:
    """Advised knobs and what they rest on (``basis``; ``peak_mib``: the estimated peak)."""

    cpu_cores: int
    gpu_mem_cap_mib: GpuMemCap
    """The advised cap: MiB, or GROW (on the CPU, without a GPU, or when no explicit cap fits)."""
    peak_mib: float
    basis: str


def _gate_bytes(ops: OperatorSummary) -> float:
    """The bytes written by the largest recurrent bin with FLOPs (a recurrent layer's gate GEMM
    over the sequence); 0 without recurrent operators."""
    return max((b.bytes_written for b in ops.bins if b.kind == "recurrent" and b.flops > 0), default=0.0)


def recurrent_workspace_bytes(ops: OperatorSummary) -> float:
    """The cuDNN workspace of the step's recurrent layers (module docstring); 0 without any."""
    gate = _gate_bytes(ops)
    if gate <= 0:
        return 0.0
    return max(RECURRENT_WORKSPACE_FLOOR_MIB * MIB, RECURRENT_WORKSPACE_PER_GATE_BYTE * gate)


def operator_peak_mib(job: Job) -> float | None:
    """The operator bound on a step's reserved GPU memory (see module docstring), MiB, or None
    without operators."""
    ops = job.operators
    if ops is None:
        return None
    weights = float(job.param_count) * 4.0 * (4.0 if job.mode == "train" else 1.0)
    largest_op = max((b.bytes_read + b.bytes_written) / b.count for b in ops.bins)
    largest_write = max(b.bytes_written / b.count for b in ops.bins)
    if job.mode == "train":
        acts = sum(b.bytes_written for b in ops.bins if b.kind != "optimizer")
        largest_alloc = largest_write
    else:
        workspace = recurrent_workspace_bytes(ops)
        acts = max(2.0 * largest_op, workspace + largest_op)
        largest_alloc = max(largest_write, workspace)
    batch = float(job.batch_size) * float(job.input_bytes_per_sample)
    return (weights + acts + batch + largest_alloc) / MIB + WORKSPACE_MIB


def fit_recurrent_workspace(path: Path = MEMORY_REFERENCE) -> tuple[float, float]:
    """(per gate byte, floor MiB) of the recurrent workspace (module docstring) from the GPU memory
    reference file (``python -m placement.lab.microbench --memory``): the recurrent reference
    layers' inference runs, their largest allocation against their gate GEMM's bytes."""
    from placement.lab import microbench
    from placement.model.opmodel import bench_summaries

    runs = [r for r in json.loads(Path(path).read_text())["runs"]
            if r["op_kind"] == "recurrent" and r["mode"] == "infer"]
    if not runs:
        raise ValueError(f"{path}: no recurrent inference run")
    summaries = bench_summaries([microbench.get_bench(r["bench"]) for r in runs])
    ratios: list[float] = []
    small: list[float] = []
    for r in runs:
        gate = _gate_bytes(summaries[(r["bench"], "infer")])
        largest = float(r["largest_allocation_mib"]) * MIB
        (ratios if gate >= MIB else small).append(largest / gate if gate >= MIB else largest / MIB)
    return max(ratios), max(small, default=0.0)


def advise_knobs(job: Job, target: HardwareTarget, device: str, model: object | None = None,
                 candidates: Sequence[int] | None = None, tolerance: float = DEFAULT_CORE_TOLERANCE,
                 margin: float = DEFAULT_CAP_MARGIN) -> KnobAdvice:
    """Cores and GPU memory cap for ``job`` on ``target``'s ``device`` (see module docstring)."""
    from placement.model.perfmodel import PerformanceModel, model_columns

    if not (0.0 <= tolerance < 1.0):
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    pm = model if isinstance(model, PerformanceModel) else PerformanceModel()
    dev = "gpu" if device == "gpu" and target.has_gpu else "cpu"
    grid = sorted({int(c) for c in (candidates or range(1, target.cpu_cores + 1)) if 1 <= int(c) <= target.cpu_cores})
    if not grid:
        raise ValueError(f"no candidate core count in 1..{target.cpu_cores}")
    ops = pm.operator_model if job.operators is not None else None
    if ops is not None:
        times = np.array([ops.time_s(job, target, dev, c)[0] for c in grid])
        basis = str(ops.basis(target))
    else:
        base = model_columns(job, target)
        cols = {k: v * len(grid) for k, v in base.items()}
        times = pm.predict_columns(cols, dev, np.array(grid, dtype=np.float64), np.nan).time_per_batch_s
        basis = "aggregate: FLOPs, parameters, input size, family"
    cores = target.cpu_cores
    if np.isfinite(times).any():
        best = float(np.nanmin(times))
        cores = next(c for c, t in zip(grid, times, strict=True) if math.isfinite(t) and t <= best * (1.0 + tolerance))
    peak = float(pm.predict_columns(model_columns(job, target), dev, np.nan, np.nan).working_set_mib[0])
    op_peak = operator_peak_mib(job)
    if op_peak is not None:
        peak = max(peak, op_peak)
    cap: GpuMemCap = GROW
    if dev == "gpu":
        want = max(CAP_STEP_MIB, math.ceil(peak * (1.0 + margin) / CAP_STEP_MIB) * CAP_STEP_MIB)
        if want <= target.gpu_mem_mib:
            cap = int(want)
    return KnobAdvice(int(cores), cap, peak, basis)
