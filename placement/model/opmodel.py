"""Operator-level performance model: a job's time as a sum over its operators of a bounded
fraction of each device's roofline (NeuSight, ASPLOS'25, per-operator utilisation; nn-Meter,
MobiSys'21, kernel by kernel), calibrated on reference micro-benchmarks only.

Time of one step on a device (seconds), over the bins of the job's
:class:`placement.core.operator_summary.OperatorSummary` (``n`` operators of kind ``k`` with
``f`` FLOPs and ``b`` bytes each)::

    exec(k, f, b)  = max((f + f_half) / (peak * e_k), (b + b_half) / (bandwidth * m_k))
    CPU:  t = step_s [+ train_step_s] + sum_bins n * (dispatch_k + exec)
    GPU:  t = step_s [+ train_step_s] + h2d(input bytes) + sum_bins max(launches * launch_k, n * exec)

``e_k`` and ``m_k`` (per kind, at most 1.5 of the data-sheet peak) are the achieved shares of
peak FLOP/s and bandwidth; ``f_half``/``b_half`` make a small operator reach only part of
them (``e_k * f / (f + f_half)``: a bounded, size-dependent utilisation); ``dispatch_k``/
``launch_k`` are the per-operator host costs, **one per kind** (fitted: a cuDNN
convolution's host side costs several times an element-wise launch's, and the per-step
operators of a recurrent layer, which real kernels fuse, almost nothing each);
``train_step_s`` is what a training step pays once beyond its operators (the autograd
engine's start, the loss); ``h2d`` is a latency plus the batch over the host link. CPU
thread scaling per kind: the CPU is fitted at each reference thread count (1, 4, 16) and a
prediction at ``c`` cores interpolates log time in ``log2 c`` between the two nearest.

**Fitted only from the reference micro-benchmarks** (``data/traces/h200_microbench.json``,
:mod:`placement.lab.microbench`): :func:`fit` takes the benchmark file and nothing else; it
records each bench's operators on ``meta`` exactly as a job's are and minimises the
squared log error of the predicted bench times, with a weak prior on every parameter.
Kinds without their own bench take a benchmarked kind's parameters (reduction, copy and
optimizer updates: element-wise).

Powers (W, ``modelled``): CPU run ``idle + (TDP - idle) * cores_used / cores``; GPU run
``idle + (TDP - idle) * busy * (0.35 + 0.65 * intensity)`` (busy: share of the step the GPU
executes, intensity: achieved share of peak), the host CPU one busy core.

Targets: the measured device (``h200-host``) uses its fitted parameters. Any other
catalogue target uses the same efficiencies against **its data-sheet peaks**, with host
overheads scaled by its per-core speed: :meth:`OperatorModel.basis` says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.operator_summary import OperatorSummary

OPMODEL_VERSION = "opmodel/2"
OP_PARAMS_SCHEMA = "placement.op_params/1"
OP_PARAMS_RESOURCE = "data/op_params.json"
MEASURED_TARGET = "h200-host"
CPU_THREAD_POINTS = (1, 4, 16)
FIT_KINDS = ("matmul", "conv", "dwconv", "attention", "recurrent", "gather", "norm", "pool", "elementwise")
KIND_SOURCE = {k: k for k in FIT_KINDS} | {"reduction": "elementwise", "copy": "elementwise", "optimizer": "elementwise"}
_OLD_GROUPS = ("op", "recurrent", "attention")  # opmodel/1 kept three host costs: every other kind was "op"
GPU_POWER_BASE = 0.35
LABEL_BYTES = 8  # an int64 label per sample travels with the batch


def _old_group(kind: str) -> str:
    return kind if kind in ("recurrent", "attention") else "op"


@dataclass(frozen=True)
class DeviceParams:
    """Fitted constants of one device configuration (``cpu1``/``cpu4``/``cpu16``/``gpu``)."""

    eff: dict[str, float]  # e_k: share of peak FLOP/s
    mem_eff: dict[str, float]  # m_k: share of peak bandwidth
    f_half: float  # FLOPs
    b_half: float  # bytes
    overhead_s: dict[str, float]  # per operator (CPU dispatch) / per launch (GPU), by kind
    step_s: float
    h2d_latency_s: float = 0.0
    h2d_gbs: float = 0.0
    train_step_s: float = 0.0  # extra per training step: autograd engine, loss, backward start

    def to_dict(self) -> dict[str, Any]:
        """The parameters as JSON-ready values (per-kind tables as dicts)."""
        return {"eff": self.eff, "mem_eff": self.mem_eff, "f_half": self.f_half, "b_half": self.b_half,
                "overhead_s": self.overhead_s, "step_s": self.step_s, "h2d_latency_s": self.h2d_latency_s,
                "h2d_gbs": self.h2d_gbs, "train_step_s": self.train_step_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceParams:
        """The parameters from :meth:`to_dict` output (absent host-transfer and training-step terms are 0;
        an ``opmodel/1`` set's three host costs, op/recurrent/attention, stand for every kind of their group)."""
        ov = {k: float(v) for k, v in d["overhead_s"].items()}
        if set(ov) <= set(_OLD_GROUPS):
            ov = {k: ov[_old_group(k)] for k in FIT_KINDS}
        return cls(eff={k: float(v) for k, v in d["eff"].items()}, mem_eff={k: float(v) for k, v in d["mem_eff"].items()},
                   f_half=float(d["f_half"]), b_half=float(d["b_half"]), overhead_s=ov, step_s=float(d["step_s"]),
                   h2d_latency_s=float(d.get("h2d_latency_s", 0.0)), h2d_gbs=float(d.get("h2d_gbs", 0.0)),
                   train_step_s=float(d.get("train_step_s", 0.0)))


@dataclass(frozen=True)
class Peaks:
    """Data-sheet peaks the efficiencies are shares of."""

    cpu_gflops: float  # all cores
    cpu_cores: int
    cpu_bw_gbs: float
    gpu_gflops: float
    gpu_bw_gbs: float

    @classmethod
    def of(cls, target: HardwareTarget) -> Peaks:
        return cls(float(target.cpu_gflops), int(target.cpu_cores), float(target.cpu_mem_bw_gbs),
                   float(target.gpu_gflops or 0.0), float(target.gpu_mem_bw_gbs or 0.0))


# --------------------------------------------------------------------------- arrays of a summary


@dataclass(frozen=True)
class _Bins:
    kind_idx: np.ndarray  # index into FIT_KINDS (the parameter source)
    count: np.ndarray
    flops: np.ndarray  # per operator
    nbytes: np.ndarray  # per operator
    launches: np.ndarray


def _bins(summary: OperatorSummary) -> _Bins:
    ki, n, f, b, la = [], [], [], [], []
    for x in summary.bins:
        ki.append(FIT_KINDS.index(KIND_SOURCE.get(x.kind, "elementwise")))
        n.append(x.count)
        f.append(x.flops / x.count)
        b.append((x.bytes_read + x.bytes_written) / x.count)
        la.append(x.launches)
    return _Bins(np.array(ki, dtype=np.intp), np.array(n, float), np.array(f, float), np.array(b, float), np.array(la, float))


def _vec(p: DeviceParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([p.eff[k] for k in FIT_KINDS]), np.array([p.mem_eff[k] for k in FIT_KINDS]),
            np.array([p.overhead_s[k] for k in FIT_KINDS]))


def _exec_s(b: _Bins, p: DeviceParams, gflops: float, bw_gbs: float) -> np.ndarray:
    eff, meff, _ = _vec(p)
    tc = np.where(b.flops > 0, (b.flops + p.f_half) / (gflops * 1e9 * eff[b.kind_idx]), 0.0)
    tm = (b.nbytes + p.b_half) / (bw_gbs * 1e9 * meff[b.kind_idx])
    return np.maximum(tc, tm)


def _cpu_time(b: _Bins, p: DeviceParams, gflops: float, bw_gbs: float, train: bool = False) -> tuple[float, float]:
    ex = _exec_s(b, p, gflops, bw_gbs)
    _, _, ov = _vec(p)
    work = float(np.dot(b.count, ex))
    step = p.step_s + (p.train_step_s if train else 0.0)
    return step + float(np.dot(b.count, ov[b.kind_idx])) + work, work


def _gpu_time(b: _Bins, p: DeviceParams, gflops: float, bw_gbs: float, h2d_bytes: float,
              train: bool = False) -> tuple[float, float]:
    ex = _exec_s(b, p, gflops, bw_gbs)
    _, _, ov = _vec(p)
    work = float(np.dot(b.count, ex))
    per_bin = np.maximum(b.launches * ov[b.kind_idx], b.count * ex)
    h2d = p.h2d_latency_s + h2d_bytes / (p.h2d_gbs * 1e9) if h2d_bytes > 0 and p.h2d_gbs > 0 else 0.0
    step = p.step_s + (p.train_step_s if train else 0.0)
    return step + h2d + float(per_bin.sum()), work


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class OperatorPrediction:
    """One step's modelled time (s) and powers (W, ``modelled``) and what it rests on."""

    time_per_batch_s: float
    avg_cpu_power_w: float
    avg_gpu_power_w: float | None
    basis: str


class OperatorModel:
    """Predicts a job's step time from its operators (see module docstring)."""

    def __init__(self, devices: Mapping[str, DeviceParams], provenance: Mapping[str, Any] | None = None,
                 reference: HardwareTarget | None = None) -> None:
        missing = [k for k in (*[f"cpu{t}" for t in CPU_THREAD_POINTS], "gpu") if k not in devices]
        if missing:
            raise ValueError(f"OperatorModel needs device parameters for {', '.join(missing)}")
        self.devices = dict(devices)
        self.provenance = dict(provenance or {})
        if reference is None:
            from placement.core.catalogue import get_target

            reference = get_target(MEASURED_TARGET)
        self.reference = reference
        self._ref = Peaks.of(reference)
        self._cache: dict[int, tuple[OperatorSummary, _Bins]] = {}

    # -- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Schema, model version, per-device parameters and provenance, JSON-ready."""
        return {"schema": OP_PARAMS_SCHEMA, "version": OPMODEL_VERSION,
                "devices": {k: v.to_dict() for k, v in self.devices.items()}, "provenance": self.provenance}

    def save(self, path: Path) -> Path:
        """Write :meth:`to_dict` to ``path`` as JSON (parent folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperatorModel:
        """The model from :meth:`to_dict` output; ``ValueError`` for another parameter schema."""
        if data.get("schema") != OP_PARAMS_SCHEMA:
            raise ValueError(f"not a '{OP_PARAMS_SCHEMA}' parameter set")
        return cls({k: DeviceParams.from_dict(v) for k, v in data["devices"].items()}, data.get("provenance"))

    @classmethod
    def load(cls, path: Path | None = None) -> OperatorModel:
        """From ``path`` or the bundled ``placement/data/op_params.json``."""
        text = Path(path).read_text() if path is not None else resources.files("placement").joinpath(OP_PARAMS_RESOURCE).read_text()
        return cls.from_dict(json.loads(text))

    # -- prediction ---------------------------------------------------------------------
    def basis(self, target: HardwareTarget) -> str:
        """``measured-reference``: fitted on this host's micro-benchmarks; otherwise the
        efficiencies of the nearest measured device on this target's data-sheet peaks."""
        if target.id == self.reference.id:
            return "operators: micro-benchmarks of this host"
        return f"operators: {self.reference.id} efficiencies on {target.id}'s data-sheet peaks"

    def _summary_bins(self, summary: OperatorSummary) -> _Bins:
        """The summary's bins, remembered per summary object. The entry holds the summary itself:
        keyed by ``id`` alone, a summary freed and another allocated at the same address would be
        given the first one's bins (seen: the calibration report's figures changed from run to run)."""
        key = id(summary)
        hit = self._cache.get(key)
        if hit is None or hit[0] is not summary:
            if len(self._cache) > 4096:
                self._cache.clear()
            hit = self._cache[key] = (summary, _bins(summary))
        return hit[1]

    def _host_scale(self, target: HardwareTarget) -> float:
        ref = self._ref.cpu_gflops / max(self._ref.cpu_cores, 1)
        here = float(target.cpu_gflops) / max(int(target.cpu_cores), 1)
        return (ref / here) ** 0.7 if here > 0 else 1.0

    def _scaled(self, p: DeviceParams, scale: float) -> DeviceParams:
        if scale == 1.0:
            return p
        return DeviceParams(p.eff, p.mem_eff, p.f_half, p.b_half, {k: v * scale for k, v in p.overhead_s.items()},
                            p.step_s * scale, p.h2d_latency_s, p.h2d_gbs, p.train_step_s * scale)

    def time_s(self, job: Job, target: HardwareTarget, device: str, cpu_cores: int | None = None) -> tuple[float, float]:
        """(step time, executing time) in seconds; raises without operators."""
        if job.operators is None:
            raise ValueError("job has no operators (describe it with `placement describe` to record them)")
        b = self._summary_bins(job.operators)
        train = str(job.mode) == "train"
        scale = 1.0 if target.id == self.reference.id else self._host_scale(target)
        if device == "gpu":
            if not target.has_gpu:
                raise ValueError(f"target {target.id} has no GPU")
            p = self._scaled(self.devices["gpu"], scale)
            h2d = float(job.batch_size) * (job.input_bytes_per_sample + LABEL_BYTES)
            if target.unified_memory:
                h2d = 0.0
            return _gpu_time(b, p, float(target.gpu_gflops or 0.0), float(target.gpu_mem_bw_gbs or 0.0), h2d, train)
        cores = int(target.cpu_cores) if cpu_cores is None else int(cpu_cores)
        per_core = float(target.cpu_gflops) / max(int(target.cpu_cores), 1)
        bw = float(target.cpu_mem_bw_gbs)
        pts = CPU_THREAD_POINTS
        if cores <= pts[0]:
            lo = hi = pts[0]
        elif cores >= pts[-1]:
            lo = hi = pts[-1]
        else:
            lo = max(t for t in pts if t <= cores)
            hi = min(t for t in pts if t >= cores)

        def at(t: int) -> tuple[float, float]:
            # the fitted efficiencies at t threads are shares of t cores' peak
            return _cpu_time(b, self._scaled(self.devices[f"cpu{t}"], scale), per_core * t, bw, train)

        t_lo, w_lo = at(lo)
        if hi == lo:
            if cores != lo:  # beyond the measured points: Amdahl-free extrapolation of the work
                t_lo, w_lo = t_lo - w_lo + w_lo * lo / cores, w_lo * lo / cores
            return t_lo, w_lo
        t_hi, w_hi = at(hi)
        a = (math.log2(cores) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
        return math.exp((1 - a) * math.log(t_lo) + a * math.log(t_hi)), math.exp((1 - a) * math.log(w_lo) + a * math.log(w_hi))

    def predict(self, job: Job, target: HardwareTarget, device: str, cpu_cores: int | None = None) -> OperatorPrediction:
        """Step time and modelled powers of ``job`` on ``target``'s ``device``."""
        t, work = self.time_s(job, target, device, cpu_cores)
        cores = int(target.cpu_cores)
        if device == "gpu":
            busy = min(1.0, work / t) if t > 0 else 0.0
            ops = job.operators
            flops = ops.flops if ops is not None else 0.0
            intensity = min(1.0, flops / (t * float(target.gpu_gflops or 1.0) * 1e9)) if t > 0 else 0.0
            gpu_w = float(target.gpu_idle_w) + (float(target.gpu_tdp_w) - float(target.gpu_idle_w)) * busy * (
                GPU_POWER_BASE + (1 - GPU_POWER_BASE) * intensity)
            cpu_w = float(target.cpu_idle_w) + (float(target.cpu_tdp_w) - float(target.cpu_idle_w)) / cores
            return OperatorPrediction(t, cpu_w, gpu_w, self.basis(target))
        used = cores if cpu_cores is None else int(cpu_cores)
        cpu_w = float(target.cpu_idle_w) + (float(target.cpu_tdp_w) - float(target.cpu_idle_w)) * used / cores
        return OperatorPrediction(t, cpu_w, None, self.basis(target))


_BUNDLED: OperatorModel | None = None


def bundled_operator_model() -> OperatorModel | None:
    """The bundled fitted model (``placement/data/op_params.json``), or None when absent."""
    global _BUNDLED
    if _BUNDLED is None:
        try:
            _BUNDLED = OperatorModel.load()
        except FileNotFoundError:
            return None
    return _BUNDLED


# --------------------------------------------------------------------------- fitting


def bench_summaries(benches: Sequence[Any] | None = None) -> dict[tuple[str, str], OperatorSummary]:
    """The operators of every reference bench (default :data:`placement.lab.microbench.BENCHES`)
    and mode (recorded on ``meta``)."""
    import torch

    from placement.lab import microbench
    from placement.model.operators import record_step, summarise

    out: dict[tuple[str, str], OperatorSummary] = {}
    for bench in microbench.BENCHES if benches is None else benches:
        for mode in bench.modes:
            with torch.device("meta"):
                module = bench.build()
            ops = record_step(module, bench, mode)
            tensors = sum(1 for p in module.parameters() if p.requires_grad)
            out[(bench.name, mode)] = summarise(ops, tensors if mode == "train" else 0)
    return out


def _device_keys() -> list[str]:
    return [f"cpu{t}" for t in CPU_THREAD_POINTS] + ["gpu"]


def _unpack(theta: np.ndarray, gpu: bool) -> DeviceParams:
    """Parameters from the fit's log vector: per-kind e_k, m_k; f_half, b_half; per-kind host cost;
    step; training step; (GPU) host-link latency and GB/s."""
    n = len(FIT_KINDS)
    e = np.exp(theta[:n])
    m = np.exp(theta[n:2 * n])
    f_half, b_half = np.exp(theta[2 * n:2 * n + 2])
    ov = np.exp(theta[2 * n + 2:3 * n + 2])
    step, train_step = math.exp(theta[3 * n + 2]), math.exp(theta[3 * n + 3])
    lat, gbs = (math.exp(theta[3 * n + 4]), math.exp(theta[3 * n + 5])) if gpu else (0.0, 0.0)
    return DeviceParams(dict(zip(FIT_KINDS, e.tolist(), strict=True)), dict(zip(FIT_KINDS, m.tolist(), strict=True)),
                        float(f_half), float(b_half), dict(zip(FIT_KINDS, ov.tolist(), strict=True)), step, lat, gbs,
                        train_step)


def _prior(gpu: bool) -> np.ndarray:
    """The fit's start and prior centre (log units; see :func:`_unpack` for the order)."""
    n = len(FIT_KINDS)
    theta = [math.log(0.5)] * n + [math.log(0.5)] * n + [math.log(1e6 if gpu else 1e4), math.log(1e5 if gpu else 1e3)]
    theta += [math.log(5e-6 if gpu else 3e-6)] * n
    theta += [math.log(2e-5 if gpu else 1e-5), math.log(2e-4 if gpu else 1e-4)]
    if gpu:
        theta += [math.log(1e-5), math.log(10.0)]
    return np.array(theta)


def fit(microbench_path: Path, reference: HardwareTarget | None = None, prior_weight: float = 0.05,
        benches: Sequence[Any] | None = None) -> OperatorModel:
    """Fit every device configuration from the micro-benchmark file alone (see module docstring);
    ``benches`` (default :data:`placement.lab.microbench.BENCHES`) are the benches whose runs it reads."""
    from scipy.optimize import least_squares

    from placement.core.catalogue import get_target
    from placement.lab import microbench

    data = microbench.load(microbench_path)
    ref = reference or get_target(MEASURED_TARGET)
    peaks = Peaks.of(ref)
    summaries = bench_summaries(benches)
    runs = data["runs"]
    devices: dict[str, DeviceParams] = {}
    report: dict[str, Any] = {}
    for key in _device_keys():
        gpu = key == "gpu"
        threads = None if gpu else int(key[3:])
        rows = [r for r in runs if r["device"] == ("gpu" if gpu else "cpu") and (gpu or int(r["threads"]) == threads)]
        rows = [r for r in rows if (r["bench"], r["mode"]) in summaries and r["time_s"] > 0]
        if not rows:
            raise ValueError(f"{microbench_path}: no runs for {key}")
        bins = [_bins(summaries[(r["bench"], r["mode"])]) for r in rows]
        h2d = [float(np.prod(microbench.get_bench(r["bench"]).input_shape)) * 4.0 if r["bench"].startswith("copy") else 0.0
               for r in rows]
        meas = np.log(np.array([r["time_s"] for r in rows]))
        trains = [r["mode"] == "train" for r in rows]
        theta0 = _prior(gpu)
        gflops = peaks.gpu_gflops if gpu else peaks.cpu_gflops / peaks.cpu_cores * (threads or 1)
        bw = peaks.gpu_bw_gbs if gpu else peaks.cpu_bw_gbs

        def resid(theta: np.ndarray, bins: list[_Bins] = bins, h2d: list[float] = h2d, gpu: bool = gpu,
                  gflops: float = gflops, bw: float = bw, meas: np.ndarray = meas, theta0: np.ndarray = theta0,
                  trains: list[bool] = trains) -> np.ndarray:
            p = _unpack(theta, gpu)
            pred = [(_gpu_time(b, p, gflops, bw, h, tr)[0] if gpu else _cpu_time(b, p, gflops, bw, tr)[0])
                    for b, h, tr in zip(bins, h2d, trains, strict=True)]
            return np.concatenate([np.log(np.array(pred)) - meas, prior_weight * (theta - theta0)])

        n = len(FIT_KINDS)
        lo = np.full_like(theta0, -30.0)
        hi = np.full_like(theta0, 30.0)
        lo[:2 * n], hi[:2 * n] = math.log(1e-4), math.log(1.5)  # bounded shares of the peak
        sol = least_squares(resid, theta0, bounds=(lo, hi), max_nfev=3000)
        devices[key] = _unpack(sol.x, gpu)
        err = np.abs(np.expm1(sol.fun[: len(rows)]))
        report[key] = {"runs": len(rows), "median_abs_err": float(np.median(err)), "max_abs_err": float(err.max())}
    prov = {"microbench": str(Path(microbench_path).name), "microbench_sha256": _sha256(Path(microbench_path)),
            "reference_target": ref.id, "fit": report, "prior_weight": prior_weight, "version": OPMODEL_VERSION,
            "inputs": "the reference micro-benchmarks only"}
    return OperatorModel(devices, prov, ref)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = ["OperatorModel", "OperatorPrediction", "DeviceParams", "fit", "bench_summaries", "bundled_operator_model",
           "Sequence"]
