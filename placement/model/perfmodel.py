"""Analytical performance model: time and power of a job on a device, any target and knobs.

For a (job, hardware target, device, CPU cores, GPU memory cap) the model predicts the
time of one batch and the average CPU and GPU power during it. Every figure it gives is
*modelled*, never measured; calibration against a measured trace (placement.model.calibration)
fits the constants and reports the error.

Time of one batch (seconds)
---------------------------
* **Roofline per device**: compute time ``F / (peak * eff_family)`` and memory time
  ``bytes / (bandwidth * mem_eff)`` combined by a q-norm ``(t_c**q + t_m**q)**(1/q)``
  (``q -> inf`` is the strict roofline max; a finite q models partial overlap).
  ``bytes`` = weights touched (``x train_weight_traffic_mult`` when training) plus
  ``act_bytes_per_flop * F`` activation traffic.
* **Amdahl over CPU cores** with a per-family parallel fraction (paper B: recurrent
  models scale poorly) and the universal-scalability coherency term ``cpu_coherency``
  (gains flatten, even reverse, past the cores that share caches and memory; SMT
  siblings). ``model_overrides`` refine any family constant per architecture;
  ``edge_model_overrides`` hold paper B's edge finding (an LSTM is flat, a GRU is not). CPU memory bandwidth grows with cores until
  ``cpu_bw_sat_cores``, and every op pays a fork/join cost per extra core
  (``cpu_thread_sync_s``), so small jobs stop gaining early (paper B: gains flatten from
  about 4 cores on the Jetsons).
* **Overheads**: per-op dispatch on the CPU, per-kernel launch on the GPU (overlapping
  with execution, so combined by the same q-norm), a minimum GPU time per kernel
  (small grids do not fill the GPU), a per-batch host overhead, a GPU
  sync, host input preparation, and host->device transfer of the batch's input over the
  link -- **zero transfer on unified-memory targets** (the Jetsons). Host-side overheads
  scale with the host core's speed: ``(host_ref_core_gflops / core_gflops) **
  host_speed_exponent``. Recurrent jobs launch ``kernels_per_pass`` per time step; their
  sequence length is ``input_elems_per_sample``.
* **GPU memory cap** (paper B): a cap below the working set is OOM; a cap above it
  slows the run by ``overalloc_slowdown_per_doubling`` per doubling of cap / working set
  (``"grow"``, no cap, has no penalty). The working set is the weights (x4 when training:
  weights, gradients, optimizer state), the live activations (bytes per FLOP, by mode),
  one input batch and, on the GPU, library workspaces and allocator rounding inside the
  cap (``gpu_cap_overhead_mib``); calibration fits these to the OOMs measured under caps.

Power (watts, ``modelled``)
---------------------------
* CPU run: ``idle + (TDP - idle) * cores_used / cores`` -- the job's intra-op threads
  hold (spin on) every core they are given, as the profiler's process-utilisation meter
  sees on the measured host.
* GPU run: GPU ``idle + (TDP - idle) * busy_frac * (gpu_power_base + (1 - base) *
  intensity)``, busy_frac = share of the batch the GPU executes kernels, intensity =
  achieved share of peak compute or bandwidth; the host CPU draws ``idle + (TDP - idle)
  * host_busy_cores / cores`` too (paper A eq. 2 counts it).

Noise (only when an ``rng`` is given): log-normal on time with sigma
``noise_time_sigma + noise_overhead_sigma * overhead_share`` (small, overhead-bound jobs
are noisier), log-normal on powers with ``noise_power_sigma``.

Default constants are engineering priors; ``placement/data/perf_params.json``, when
present, holds constants fitted by ``placement calibrate`` and is loaded by default.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from placement.core.decision import GROW, GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.core.job import FAMILIES, MODES, Job
from placement.core.outcome import Device, DeviceOutcome, EnergyMethod, as_device
from placement.model.features import FEATURE_INPUT_COLUMNS, MODEL_INPUT_COLUMNS, pair_columns

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ColumnsLike = Mapping[str, Any] | pd.DataFrame
"""Named columns: a mapping of name -> array-like, or a trace DataFrame."""

MODEL_VERSION = "perfmodel/1"
"""Version of the model's equations; bump when they change (parameters are versioned by hash)."""
PERF_PARAMS_SCHEMA = "placement.perf_params/1"
PERF_PARAMS_RESOURCE = "data/perf_params.json"
MIB = float(2**20)

# Columns predict_columns uses when present, and the fallback when a column is absent
# (a feature-only mapping, features.FEATURE_INPUT_COLUMNS, lacks them).
OPTIONAL_HW_COLUMNS: dict[str, str] = {
    "hw_cpu_mem_bw_gbs": "50 GB/s (the trace schema default)",
    "hw_gpu_mem_bw_gbs": "hw_gpu_gflops / 20 (20 FLOP per byte)",
    "hw_cpu_idle_w": "0.2 x hw_cpu_tdp_w",
    "hw_gpu_idle_w": "0.1 x hw_gpu_tdp_w",
}
_FALLBACK_CPU_BW_GBS = 50.0
_FALLBACK_GPU_FLOP_PER_BYTE = 20.0
_FALLBACK_CPU_IDLE_FRAC = 0.2
_FALLBACK_GPU_IDLE_FRAC = 0.1

FAMILY_PARAM_NAMES: tuple[str, ...] = (
    "cpu_eff",
    "gpu_eff",
    "parallel_frac",
    "kernels_per_pass",
    "act_bytes_per_flop",
    "weight_traffic_frac",
    "gpu_kernel_frac",
    "cpu_train_eff_mult",
    "gpu_train_eff_mult",
)


@dataclass(frozen=True)
class FamilyParams:
    """Constants of one model family.

    ``cpu_eff`` / ``gpu_eff``: achieved share of the device's peak FP32 FLOP/s when
    compute-bound (dimensionless; the GPU's may exceed 1 where TF32 tensor cores run
    FP32 work). ``parallel_frac``: Amdahl parallel fraction over CPU cores, in [0, 1].
    ``kernels_per_pass``: framework ops per forward pass (per time step for ``rnn``).
    ``act_bytes_per_flop``: activation bytes moved per FLOP (memory roofline and working
    set). ``weight_traffic_frac``: share of the parameters touched per batch (small for
    embedding tables). ``gpu_kernel_frac``: GPU kernels per CPU op (fused libraries such as
    cuDNN's RNN launch fewer). ``cpu_train_eff_mult`` / ``gpu_train_eff_mult``: a training
    step's achieved FLOP/s over inference's (backward kernels are less efficient).
    """

    cpu_eff: float
    gpu_eff: float
    parallel_frac: float
    kernels_per_pass: float
    act_bytes_per_flop: float
    weight_traffic_frac: float = 1.0
    gpu_kernel_frac: float = 1.0
    cpu_train_eff_mult: float = 1.0
    gpu_train_eff_mult: float = 1.0

    def __post_init__(self) -> None:
        for name in FAMILY_PARAM_NAMES:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"FamilyParams.{name} must be a finite number >= 0, got {value!r}")
        if self.parallel_frac > 1:
            raise ValueError(f"FamilyParams.parallel_frac must be in [0, 1], got {self.parallel_frac}")
        if self.cpu_eff <= 0 or self.gpu_eff <= 0:
            raise ValueError("FamilyParams.cpu_eff and gpu_eff must be > 0 (share of peak FLOP/s)")


def _default_families() -> dict[str, FamilyParams]:
    return {
        "mlp": FamilyParams(cpu_eff=0.35, gpu_eff=0.35, parallel_frac=0.90, kernels_per_pass=8.0, act_bytes_per_flop=0.004),
        "cnn": FamilyParams(cpu_eff=0.30, gpu_eff=0.45, parallel_frac=0.95, kernels_per_pass=60.0, act_bytes_per_flop=0.003),
        "rnn": FamilyParams(cpu_eff=0.15, gpu_eff=0.10, parallel_frac=0.30, kernels_per_pass=6.0, act_bytes_per_flop=0.01),
        "transformer": FamilyParams(cpu_eff=0.35, gpu_eff=0.50, parallel_frac=0.93, kernels_per_pass=80.0, act_bytes_per_flop=0.004),
        "embedding": FamilyParams(cpu_eff=0.10, gpu_eff=0.10, parallel_frac=0.60, kernels_per_pass=10.0, act_bytes_per_flop=0.05, weight_traffic_frac=0.02),
        "tree": FamilyParams(cpu_eff=0.05, gpu_eff=0.02, parallel_frac=0.70, kernels_per_pass=20.0, act_bytes_per_flop=0.5),
        "other": FamilyParams(cpu_eff=0.20, gpu_eff=0.25, parallel_frac=0.80, kernels_per_pass=30.0, act_bytes_per_flop=0.005),
    }


def _default_edge_model_overrides() -> dict[str, dict[str, float]]:
    # Paper B (TensorFlow on Jetsons): LSTM gains nothing from more cores, GRU does. No edge
    # device was measured here, so on edge targets these published findings override.
    return {"lstm": {"parallel_frac": 0.02}, "gru": {"parallel_frac": 0.60}}


Overrides = dict[str, dict[str, float]]


@dataclass(frozen=True)
class PerfParams:
    """Every constant of the model, units in the names (s, GB/s, MiB; the rest fractions).

    ``families`` maps each of :data:`placement.core.job.FAMILIES` to :class:`FamilyParams`.
    ``model_overrides`` maps an *architecture* -- a lower-case part of the model name such
    as ``resnet18`` or ``lstm`` -- to :class:`FamilyParams` fields that replace the
    family's for models whose name contains it (the longest matching key wins).
    Calibration fits them per architecture in the trace; an architecture never measured
    falls back to its family. ``edge_model_overrides`` apply on top, on edge targets only
    (by default paper B's LSTM/GRU core scaling). Treat the mappings as read-only; derive
    new parameters with :meth:`with_values`.
    """

    families: dict[str, FamilyParams] = field(default_factory=_default_families)
    model_overrides: Overrides = field(default_factory=dict)
    edge_model_overrides: Overrides = field(default_factory=_default_edge_model_overrides)
    train_kernel_mult: float = 3.0  # ops of forward + backward + optimizer step / forward
    train_weight_traffic_mult: float = 4.0  # weight bytes moved when training / inference
    cpu_op_overhead_s: float = 8.0e-6  # per framework op on the CPU, reference host core
    cpu_thread_sync_s: float = 1.0e-6  # per op and extra core: fork/join of intra-op threads
    cpu_coherency: float = 1.0e-3  # USL coherency (kappa): cross-core cost growing as c(c-1)
    gpu_launch_overhead_s: float = 1.5e-5  # per kernel launch, reference host core
    gpu_kernel_min_s: float = 3.0e-6  # per kernel on the GPU: ramp-up and tail of a small grid
    batch_overhead_s: float = 1.0e-4  # per batch on the host (Python call, loader)
    train_step_overhead_s: float = 3.0e-4  # extra per training step (loss, autograd engine, optimizer)
    gpu_sync_overhead_s: float = 3.0e-5  # per batch, device synchronise
    host_ref_core_gflops: float = 128.0  # core speed at which the overheads above hold
    host_speed_exponent: float = 0.7  # overheads scale as (ref / core_gflops) ** this
    host_prep_gbs_per_core: float = 4.0  # input preparation throughput per reference core, GB/s
    cpu_mem_eff: float = 0.6  # achieved share of peak host memory bandwidth (> 1: cache-resident)
    gpu_mem_eff: float = 0.7  # achieved share of peak GPU memory bandwidth
    cpu_bw_sat_cores: float = 4.0  # cores that saturate host memory bandwidth
    cpu_cache_mib_per_core: float = 2.0  # cache (L2 + LLC share) per core holding weights, MiB
    cpu_cache_bw_mult: float = 3.0  # cache / DRAM bandwidth per core
    roofline_q: float = 3.0  # q-norm exponent combining compute, memory and launch times
    link_eff: float = 0.7  # achieved share of the host link (PCIe) bandwidth
    transfer_latency_s: float = 1.0e-5  # per host->device copy
    gpu_context_mib: float = 300.0  # CUDA context and allocator reserve outside any cap
    ws_weight_mult_train: float = 4.0  # weights, gradients, two Adam moments
    ws_act_bytes_per_flop_train: float = 1.5e-3  # activations kept for backward, bytes per FLOP
    ws_act_bytes_per_flop_infer: float = 1.5e-4  # live activations in inference, bytes per FLOP
    gpu_cap_overhead_mib: float = 64.0  # inside a cap besides tensors: library workspaces, allocator rounding
    overalloc_slowdown_per_doubling: float = 0.02  # paper B: over-allocating slows inference
    overalloc_max_doublings: float = 8.0
    cap_headroom_frac: float = 0.25  # recommend_knobs: cap = working set x (1 + this)
    host_busy_cores: float = 1.0  # host cores busy while the GPU runs (driver thread)
    gpu_power_base: float = 0.35  # GPU power share while busy at zero intensity
    noise_time_sigma: float = 0.03  # log-normal sigma of time, compute-bound runs
    noise_overhead_sigma: float = 0.08  # extra sigma x overhead share of the time
    noise_power_sigma: float = 0.03  # log-normal sigma of powers

    def __post_init__(self) -> None:
        missing = [f for f in FAMILIES if f not in self.families]
        if missing:
            raise ValueError(f"PerfParams.families lacks {', '.join(missing)} (one entry per placement.core.job.FAMILIES)")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"PerfParams.families has unknown families {', '.join(unknown)}")
        for table in _OVERRIDE_TABLES:
            self._check_overrides(table)
        self._check_scalars()

    def _check_overrides(self, table: str) -> None:
        """Raise ``ValueError`` unless every key of override ``table`` is a lower-case model-name
        part and every value a known :class:`FamilyParams` field with a finite value >= 0
        (at most 1 for ``parallel_frac``)."""
        for key, values in getattr(self, table).items():
            if not key or key != key.lower() or "." in key:
                raise ValueError(f"PerfParams.{table}: key '{key}' must be a lower-case part of a model name, no dots")
            for name, value in values.items():
                if name not in FAMILY_PARAM_NAMES:
                    raise ValueError(f"PerfParams.{table}.{key}: '{name}' is not one of {', '.join(FAMILY_PARAM_NAMES)}")
                if not (math.isfinite(float(value)) and float(value) >= 0) or (name == "parallel_frac" and value > 1):
                    raise ValueError(f"PerfParams.{table}.{key}.{name} must be a finite number >= 0 (a fraction for parallel_frac)")

    def _check_scalars(self) -> None:
        """Raise ``ValueError`` unless every scalar field is a finite number >= 0, the rates and
        efficiencies that divide are > 0, ``roofline_q >= 1`` and ``gpu_power_base <= 1``."""
        for f in fields(self):
            if f.name in _TABLES:
                continue
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"PerfParams.{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("host_ref_core_gflops", "host_prep_gbs_per_core", "cpu_mem_eff", "gpu_mem_eff", "link_eff", "cpu_bw_sat_cores"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PerfParams.{name} must be > 0")
        if self.roofline_q < 1:
            raise ValueError("PerfParams.roofline_q must be >= 1 (1 = sum, large = max)")
        if self.gpu_power_base > 1:
            raise ValueError("PerfParams.gpu_power_base must be in [0, 1]")

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every constant as JSON-ready values (families and override tables as nested dicts), as
        :meth:`from_dict` reads them."""
        data = asdict(self)
        data["families"] = {k: asdict(v) for k, v in self.families.items()}
        for table in _OVERRIDE_TABLES:
            data[table] = {k: dict(v) for k, v in getattr(self, table).items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerfParams:
        """Parameters from :meth:`to_dict` output; absent keys keep their defaults, unknown
        keys raise (a typo would otherwise be silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ValueError(f"unknown PerfParams keys: {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k not in _TABLES}
        for k, v in kwargs.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"PerfParams.{k} must be a number, got {v!r}")
            kwargs[k] = float(v)
        families = _default_families()
        for name, values in dict(data.get("families", {})).items():
            if name not in FAMILIES:
                raise ValueError(f"PerfParams.families has unknown family '{name}' (known: {', '.join(FAMILIES)})")
            bad = [k for k in values if k not in FAMILY_PARAM_NAMES]
            if bad:
                raise ValueError(f"PerfParams.families.{name} has unknown keys {', '.join(bad)}")
            families[name] = replace(families[name], **{k: float(v) for k, v in values.items()})
        kwargs["families"] = families
        for table in _OVERRIDE_TABLES:
            if table in data:
                kwargs[table] = {str(k): {str(n): float(x) for n, x in dict(v).items()} for k, v in dict(data[table]).items()}
        return cls(**kwargs)

    # -- flat access used by calibration -----------------------------------------------
    def get(self, path: str) -> float:
        """A value by flat path: ``"gpu_launch_overhead_s"``, ``"families.cnn.gpu_eff"``,
        ``"model_overrides.resnet18.cpu_eff"`` or ``"edge_model_overrides.lstm.parallel_frac"``."""
        parts = path.split(".")
        if parts[0] == "families" and len(parts) == 3 and parts[1] in self.families and parts[2] in FAMILY_PARAM_NAMES:
            return float(getattr(self.families[parts[1]], parts[2]))
        if parts[0] in _OVERRIDE_TABLES and len(parts) == 3:
            table = getattr(self, parts[0])
            if parts[1] in table and parts[2] in table[parts[1]]:
                return float(table[parts[1]][parts[2]])
        if len(parts) == 1 and parts[0] in {f.name for f in fields(self)} and parts[0] not in _TABLES:
            return float(getattr(self, parts[0]))
        raise KeyError(f"no PerfParams value at '{path}'")

    def with_values(self, values: Mapping[str, float]) -> PerfParams:
        """A copy with the values at the given flat paths replaced; a path into an override
        table (``model_overrides.<arch>.<field>``) may add a new entry."""
        top: dict[str, float] = {}
        fam: dict[str, dict[str, float]] = {}
        tables = {t: {k: dict(v) for k, v in getattr(self, t).items()} for t in _OVERRIDE_TABLES}
        for path, value in values.items():
            parts = path.split(".")
            if parts[0] in _OVERRIDE_TABLES and len(parts) == 3:
                if parts[2] not in FAMILY_PARAM_NAMES:
                    raise KeyError(f"no PerfParams value at '{path}' ({parts[2]} is not a family parameter)")
                tables[parts[0]].setdefault(parts[1], {})[parts[2]] = float(value)
                continue
            self.get(path)  # raises on an unknown path
            if parts[0] == "families":
                fam.setdefault(parts[1], {})[parts[2]] = float(value)
            else:
                top[parts[0]] = float(value)
        families = {k: (replace(v, **fam[k]) if k in fam else v) for k, v in self.families.items()}
        changes: dict[str, Any] = {"families": families, **tables, **top}
        return replace(self, **changes)


_OVERRIDE_TABLES = ("model_overrides", "edge_model_overrides")
_TABLES = ("families", *_OVERRIDE_TABLES)


def save_params(params: PerfParams, path: Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write parameters with their provenance (trace hash, seed, code version, errors)."""
    payload = {"schema": PERF_PARAMS_SCHEMA, "params": params.to_dict(), "provenance": dict(provenance or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")
    return path


def load_params(path: Path | None = None) -> tuple[PerfParams, dict[str, Any]]:
    """Parameters and provenance from ``path`` or the bundled ``placement/data/perf_params.json``."""
    text = Path(path).read_text() if path is not None else resources.files("placement").joinpath(PERF_PARAMS_RESOURCE).read_text()
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("schema") != PERF_PARAMS_SCHEMA:
        raise ValueError(f"{path or PERF_PARAMS_RESOURCE}: not a '{PERF_PARAMS_SCHEMA}' file")
    return PerfParams.from_dict(data["params"]), dict(data.get("provenance", {}))


def bundled_params() -> PerfParams:
    """The calibrated bundled parameters if shipped, else the code defaults."""
    try:
        return load_params()[0]
    except FileNotFoundError:
        return PerfParams()


@dataclass(frozen=True)
class Prediction:
    """Vectorised prediction, numpy arrays of shape ``(n,)``.

    Times in s per batch, powers in W (all ``modelled``); NaN where infeasible, and
    ``avg_gpu_power_w`` NaN on CPU rows (eq. 2 counts no GPU there).
    ``infeasible_reason`` is ``''`` when feasible, else ``'oom'`` or ``'no_gpu'``.
    """

    time_per_batch_s: FloatArray
    avg_cpu_power_w: FloatArray
    avg_gpu_power_w: FloatArray
    feasible: BoolArray
    infeasible_reason: npt.NDArray[np.str_]
    working_set_mib: FloatArray
    is_gpu: BoolArray

    @property
    def power_w(self) -> FloatArray:
        """Power counted by paper A eq. (2): CPU on CPU rows, host CPU + GPU on GPU rows."""
        return np.where(self.is_gpu, self.avg_cpu_power_w + self.avg_gpu_power_w, self.avg_cpu_power_w)

    @property
    def energy_per_batch_j(self) -> FloatArray:
        """Energy per batch by eq. (2), J: :attr:`power_w` x ``time_per_batch_s``."""
        return self.power_w * self.time_per_batch_s


class _Cols:
    """Typed float/bool/str arrays of the columns predict_columns needs (NaN-safe)."""

    def __init__(self, columns: ColumnsLike) -> None:
        missing = [c for c in FEATURE_INPUT_COLUMNS if c not in columns and c != "cpu_cores"]
        if missing:
            raise KeyError(
                f"predict_columns needs columns {', '.join(missing)} (placement.model.features.FEATURE_INPUT_COLUMNS; a trace DataFrame has them)"
            )
        self.columns = columns
        self.n = len(self.f64("batch_size"))

    def raw(self, name: str) -> np.ndarray:
        value = self.columns[name]
        to_numpy = getattr(value, "to_numpy", None)
        if to_numpy is not None:
            try:
                return np.asarray(to_numpy(dtype="float64", na_value=np.nan))
            except (TypeError, ValueError):
                return np.asarray(to_numpy()).reshape(-1)
        return np.asarray(value).reshape(-1)

    def f64(self, name: str) -> FloatArray:
        value = self.columns[name]
        to_numpy = getattr(value, "to_numpy", None)
        if to_numpy is not None:
            try:
                arr = to_numpy(dtype="float64", na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"column '{name}' must be numeric: {exc}") from exc
        else:
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"column '{name}' must be numeric: {exc}") from exc
        return np.asarray(arr, dtype=np.float64).reshape(-1)

    def f64_or(self, name: str, fallback: FloatArray) -> FloatArray:
        if name not in self.columns:
            return fallback
        arr = self.f64(name)
        return np.where(np.isfinite(arr), arr, fallback)

    def strs(self, name: str) -> np.ndarray:
        value = self.columns[name]
        to_numpy = getattr(value, "to_numpy", None)
        arr = to_numpy(dtype=object, na_value="") if to_numpy is not None else np.asarray(value, dtype=object)
        return np.asarray(arr, dtype=object).reshape(-1)

    def bools(self, name: str) -> BoolArray:
        value = self.columns[name]
        to_numpy = getattr(value, "to_numpy", None)
        arr = to_numpy(dtype=bool, na_value=False) if to_numpy is not None else np.asarray(value)
        return np.asarray(arr, dtype=bool).reshape(-1)


def _broadcast(value: npt.ArrayLike, n: int, name: str, dtype: Any) -> np.ndarray:
    to_numpy = getattr(value, "to_numpy", None)
    if to_numpy is not None:
        value = to_numpy(dtype=dtype, na_value=np.nan) if dtype is np.float64 else to_numpy(dtype=dtype)
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim == 0:
        return np.full(n, arr.item(), dtype=dtype)
    arr = arr.reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but the columns have {n}")
    return arr


_SMALL = 64  # below this many rows, plain dict lookups beat pandas.factorize


def _codes(values: np.ndarray, allowed: tuple[str, ...], name: str) -> npt.NDArray[np.intp]:
    index = {v: i for i, v in enumerate(allowed)}
    if values.shape[0] <= _SMALL:
        small = np.array([index.get(v, -1) for v in values.tolist()], dtype=np.intp)
        if (small < 0).any():
            raise ValueError(f"column '{name}': '{values[small < 0][0]}' is not one of {', '.join(allowed)}")
        return small
    codes, uniques = pd.factorize(values)
    if (codes < 0).any():
        raise ValueError(f"column '{name}': missing value (one of {', '.join(allowed)})")
    lookup = np.array([index.get(u, -1) for u in uniques.tolist()], dtype=np.intp)
    if (lookup < 0).any():
        bad = uniques[int(np.flatnonzero(lookup < 0)[0])]
        raise ValueError(f"column '{name}': '{bad}' is not one of {', '.join(allowed)}")
    return np.asarray(lookup[codes], dtype=np.intp)


def _qnorm(a: FloatArray, b: FloatArray, q: float) -> FloatArray:
    hi = np.maximum(a, b)
    safe = np.where(hi > 0, hi, 1.0)
    return np.where(hi > 0, safe * ((a / safe) ** q + (b / safe) ** q) ** (1.0 / q), 0.0)


class PerformanceModel:
    """Predicts one batch's time and power; see the module docstring for the equations.

    ``PerformanceModel()`` uses the bundled calibrated parameters when shipped
    (``placement/data/perf_params.json``), else the code defaults.
    """

    def __init__(self, params: PerfParams | None = None, use_operators: bool = True) -> None:
        self.params = params if params is not None else bundled_params()
        self.use_operators = use_operators
        p = self.params
        self._fam = {
            name: np.array([getattr(p.families[f], name) for f in FAMILIES], dtype=np.float64) for name in FAMILY_PARAM_NAMES
        }
        self._rnn = FAMILIES.index("rnn")
        # longest key first, so "resnet18" beats "resnet"
        self._overrides = tuple(sorted(p.model_overrides.items(), key=lambda kv: -len(kv[0])))
        self._edge_overrides = tuple(sorted(p.edge_model_overrides.items(), key=lambda kv: -len(kv[0])))
        self._override_cache: dict[str, int] = {}
        self._edge_override_cache: dict[str, int] = {}

    @property
    def version(self) -> str:
        """``perfmodel/<equations>+params.<sha256[:12] of the parameters>``: what produced a prediction."""
        digest = hashlib.sha256(json.dumps(self.params.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{MODEL_VERSION}+params.{digest}"

    # -- vectorised core ---------------------------------------------------------------
    def predict_columns(
        self,
        columns: ColumnsLike,
        device: npt.ArrayLike,
        cpu_cores: npt.ArrayLike,
        gpu_mem_cap_mib: npt.ArrayLike,
        rng: np.random.Generator | None = None,
        *,
        mask_infeasible: bool = True,
    ) -> Prediction:
        """Predict ``n`` rows at once.

        ``columns``: the names in :data:`placement.model.features.FEATURE_INPUT_COLUMNS` (its
        ``cpu_cores`` entry is ignored: pass ``cpu_cores`` here), plus, when present,
        ``hw_cpu_mem_bw_gbs``, ``hw_gpu_mem_bw_gbs``, ``hw_cpu_idle_w``, ``hw_gpu_idle_w``
        (fallbacks in :data:`OPTIONAL_HW_COLUMNS`) and ``model`` (for the per-architecture
        overrides ``model_overrides`` and ``edge_model_overrides``). ``device``: ``'cpu'``/``'gpu'`` per row or one for all.
        ``cpu_cores``: cores used, NaN = all the target's cores. ``gpu_mem_cap_mib``:
        cap in MiB, NaN = grow. ``rng``: draw noise; ``None`` = noiseless.
        ``mask_infeasible=False`` keeps the modelled time and powers of infeasible rows
        (calibration uses it; ``feasible`` still says which rows would fail).
        """
        p = self.params
        c = _Cols(columns)
        n = c.n
        fam = _codes(c.strs("family"), FAMILIES, "family")
        train = _codes(c.strs("mode"), MODES, "mode") == MODES.index("train")
        dev = _broadcast(device, n, "device", object)
        is_gpu = dev == Device.GPU.value
        bad_dev = ~is_gpu & (dev != Device.CPU.value)
        if bad_dev.any():
            raise ValueError(f"device must be 'cpu' or 'gpu', got {dev[bad_dev][0]!r}")

        batch = c.f64("batch_size")
        flops = c.f64("flops_per_batch")
        params_n = c.f64("param_count")
        elems = c.f64("input_elems_per_sample")
        in_bytes = c.f64("input_bytes_per_sample")
        hw_cores = c.f64("hw_cpu_cores")
        cpu_gflops = c.f64("hw_cpu_gflops")
        cpu_tdp = c.f64("hw_cpu_tdp_w")
        ram_gib = c.f64("hw_ram_gib")
        gpu_gflops = c.f64("hw_gpu_gflops")
        gpu_mem_gib = c.f64("hw_gpu_mem_gib")
        gpu_tdp = c.f64("hw_gpu_tdp_w")
        link = c.f64("hw_host_link_gbs")
        unified = c.bools("hw_unified_memory")
        for name, arr, low in (
            ("batch_size", batch, 1.0), ("flops_per_batch", flops, 0.0), ("param_count", params_n, 0.0),
            ("input_elems_per_sample", elems, 1.0), ("input_bytes_per_sample", in_bytes, 1.0),
            ("hw_cpu_cores", hw_cores, 1.0), ("hw_cpu_gflops", cpu_gflops, 1e-9), ("hw_cpu_tdp_w", cpu_tdp, 1e-9),
            ("hw_ram_gib", ram_gib, 1e-9), ("hw_gpu_gflops", gpu_gflops, 0.0),
        ):
            bad = ~(arr >= low) | ~np.isfinite(arr)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"column '{name}' row {i}: must be a finite number >= {low:g}, got {arr[i]!r}")
        has_gpu = gpu_gflops > 0
        cpu_bw = c.f64_or("hw_cpu_mem_bw_gbs", np.full(n, _FALLBACK_CPU_BW_GBS))
        gpu_bw = c.f64_or("hw_gpu_mem_bw_gbs", gpu_gflops / _FALLBACK_GPU_FLOP_PER_BYTE)
        gpu_bw = np.where(gpu_bw > 0, gpu_bw, gpu_gflops / _FALLBACK_GPU_FLOP_PER_BYTE)
        cpu_idle = np.minimum(c.f64_or("hw_cpu_idle_w", _FALLBACK_CPU_IDLE_FRAC * cpu_tdp), cpu_tdp)
        gpu_idle = np.minimum(c.f64_or("hw_gpu_idle_w", _FALLBACK_GPU_IDLE_FRAC * gpu_tdp), gpu_tdp)

        cores = _broadcast(cpu_cores, n, "cpu_cores", np.float64)
        cores = np.where(np.isfinite(cores), cores, hw_cores)
        bad = (cores < 1) | (cores > hw_cores)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"cpu_cores row {i}: {cores[i]:g} is outside 1..hw_cpu_cores ({hw_cores[i]:g}); use NaN for all cores")
        cap = _broadcast(gpu_mem_cap_mib, n, "gpu_mem_cap_mib", np.float64)
        gpu_mem_mib = gpu_mem_gib * 1024.0
        capped = np.isfinite(cap)
        bad = capped & ((cap <= 0) | (has_gpu & (cap > gpu_mem_mib)))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"gpu_mem_cap_mib row {i}: {cap[i]:g} MiB must be > 0 and <= the GPU's memory ({gpu_mem_mib[i]:g} MiB); use NaN for grow"
            )

        # per-row family constants, then per-architecture (and, on edge targets, edge) overrides
        fp = {name: self._fam[name][fam] for name in FAMILY_PARAM_NAMES}
        if (self._overrides or self._edge_overrides) and "model" in columns:
            names = c.strs("model")
            fp = _apply_overrides(names, fp, self._overrides, np.ones(n, dtype=bool), self._override_cache)
            edge = c.strs("hw_kind") == "edge"
            if edge.any():
                fp = _apply_overrides(names, fp, self._edge_overrides, edge, self._edge_override_cache)
        cpu_eff, gpu_eff, par = fp["cpu_eff"], fp["gpu_eff"], fp["parallel_frac"]
        kpp, abpf, wtf = fp["kernels_per_pass"], fp["act_bytes_per_flop"], fp["weight_traffic_frac"]

        # shared terms
        core_gflops = cpu_gflops / hw_cores
        host_scale = (p.host_ref_core_gflops / core_gflops) ** p.host_speed_exponent
        # Amdahl (sigma = 1 - parallel_frac) with the USL coherency term: c / (1 + s(c-1) + k c(c-1))
        amdahl = cores / (1.0 + (1.0 - par) * (cores - 1.0) + p.cpu_coherency * cores * (cores - 1.0))
        seq = np.where(fam == self._rnn, np.maximum(elems, 1.0), 1.0)
        kernels = kpp * seq * np.where(train, p.train_kernel_mult, 1.0)
        weight_bytes = params_n * 4.0
        weight_traffic = wtf * weight_bytes * np.where(train, p.train_weight_traffic_mult, 1.0)
        bytes_moved = weight_traffic + abpf * flops
        input_bytes = batch * in_bytes
        t_prep = input_bytes * host_scale / (p.host_prep_gbs_per_core * 1e9) / amdahl
        t_host = (p.batch_overhead_s + np.where(train, p.train_step_overhead_s, 0.0)) * host_scale

        # CPU: weights resident in the caches stream at cache bandwidth, the rest from DRAM
        t_comp_cpu = flops / (core_gflops * 1e9 * cpu_eff * np.where(train, fp["cpu_train_eff_mult"], 1.0)) / amdahl
        sat = np.minimum(p.cpu_bw_sat_cores, hw_cores)
        dram_core_bw = cpu_bw * 1e9 * p.cpu_mem_eff / sat
        resident = np.clip(p.cpu_cache_mib_per_core * hw_cores * MIB / np.maximum(wtf * weight_bytes, 1.0), 0.0, 1.0)
        t_mem_cpu = (bytes_moved - resident * weight_traffic) / (dram_core_bw * np.minimum(cores, sat)) + (
            resident * weight_traffic
        ) / (dram_core_bw * p.cpu_cache_bw_mult * cores)
        t_roof_cpu = _qnorm(t_comp_cpu, t_mem_cpu, p.roofline_q)
        t_ops_cpu = kernels * (p.cpu_op_overhead_s + p.cpu_thread_sync_s * (cores - 1.0)) * host_scale
        t_cpu = t_roof_cpu + t_ops_cpu + t_host + t_prep

        # GPU
        safe_gflops = np.where(has_gpu, gpu_gflops, 1.0)
        t_comp_gpu = flops / (safe_gflops * 1e9 * gpu_eff * np.where(train, fp["gpu_train_eff_mult"], 1.0))
        t_mem_gpu = bytes_moved / (np.where(has_gpu, gpu_bw, 1.0) * 1e9 * p.gpu_mem_eff)
        gpu_kernels = kernels * fp["gpu_kernel_frac"]
        t_roof_gpu = _qnorm(t_comp_gpu, t_mem_gpu, p.roofline_q) + gpu_kernels * p.gpu_kernel_min_s
        t_launch = gpu_kernels * p.gpu_launch_overhead_s * host_scale
        t_exec = _qnorm(t_roof_gpu, t_launch, p.roofline_q)
        t_xfer = np.where(unified, 0.0, input_bytes / (np.maximum(link, 1e-3) * 1e9 * p.link_eff) + p.transfer_latency_s)
        t_gpu = t_exec + t_xfer + t_host + p.gpu_sync_overhead_s + t_prep

        # memory: working set, OOM, over-allocation
        ws_bytes = (
            weight_bytes * np.where(train, p.ws_weight_mult_train, 1.0)
            + flops * np.where(train, p.ws_act_bytes_per_flop_train, p.ws_act_bytes_per_flop_infer)
            + input_bytes
        )
        ws_mib = ws_bytes / MIB + np.where(is_gpu, p.gpu_cap_overhead_mib, 0.0)
        doublings = np.clip(np.log2(np.where(capped, cap, 1.0) / np.maximum(ws_mib, 1e-9)), 0.0, p.overalloc_max_doublings)
        t_gpu = t_gpu * (1.0 + p.overalloc_slowdown_per_doubling * np.where(capped, doublings, 0.0))

        gpu_oom = (ws_mib + p.gpu_context_mib > gpu_mem_mib) | (capped & (ws_mib > cap))
        cpu_oom = ws_mib > ram_gib * 1024.0
        feasible = np.where(is_gpu, has_gpu & ~gpu_oom, ~cpu_oom)
        reason = np.where(feasible, "", np.where(is_gpu & ~has_gpu, "no_gpu", "oom")).astype(str)

        time = np.where(is_gpu, t_gpu, t_cpu)
        t_roof = np.where(is_gpu, t_roof_gpu, t_roof_cpu)

        # power
        busy_cpu = cores  # the job's threads hold its cores (framework threads spin between ops)
        host_busy = (t_prep * amdahl + (t_gpu - t_prep) * p.host_busy_cores) / t_gpu
        busy_cores = np.where(is_gpu, host_busy, busy_cpu)
        p_cpu = cpu_idle + (cpu_tdp - cpu_idle) * np.minimum(1.0, busy_cores / hw_cores)
        with np.errstate(divide="ignore", invalid="ignore"):
            intensity = np.minimum(
                1.0,
                np.maximum(flops / (safe_gflops * 1e9), bytes_moved / (np.where(has_gpu, gpu_bw, 1.0) * 1e9)) / t_roof_gpu,
            )
        intensity = np.nan_to_num(intensity, nan=0.0)
        gpu_busy = np.minimum(1.0, t_roof_gpu / t_gpu)
        p_gpu = gpu_idle + (gpu_tdp - gpu_idle) * gpu_busy * (p.gpu_power_base + (1.0 - p.gpu_power_base) * intensity)

        if rng is not None:
            overhead_share = np.clip(1.0 - t_roof / time, 0.0, 1.0)
            sigma = p.noise_time_sigma + p.noise_overhead_sigma * overhead_share
            time = time * np.exp(rng.standard_normal(n) * sigma)
            p_cpu = p_cpu * np.exp(rng.standard_normal(n) * p.noise_power_sigma)
            p_gpu = p_gpu * np.exp(rng.standard_normal(n) * p.noise_power_sigma)

        nan = np.full(n, np.nan)
        shown = feasible | (not mask_infeasible)
        return Prediction(
            time_per_batch_s=np.where(shown, time, nan),
            avg_cpu_power_w=np.where(shown, p_cpu, nan),
            avg_gpu_power_w=np.where(shown & is_gpu, p_gpu, nan),
            feasible=np.asarray(feasible, dtype=bool),
            infeasible_reason=reason,
            working_set_mib=ws_mib,
            is_gpu=is_gpu,
        )

    # -- one job -----------------------------------------------------------------------
    def predict(
        self,
        job: Job,
        target: HardwareTarget,
        device: str,
        cpu_cores: int | None = None,
        gpu_mem_cap_mib: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> DeviceOutcome:
        """One batch of ``job`` on ``target``'s ``device`` (``'cpu'``/``'gpu'``).

        ``n_samples = batch_size`` and ``time_total_s = time_per_batch_s``; powers are
        ``modelled``. Infeasible -> ``feasible=False`` with ``infeasible_reason`` ``'oom'``
        or ``'no_gpu'``. ``cpu_cores=None`` = all cores; ``gpu_mem_cap_mib=None`` = grow.
        """
        dev = _device_str(device)
        if cpu_cores is not None and not (1 <= int(cpu_cores) <= target.cpu_cores):
            raise ValueError(f"cpu_cores must be in 1..{target.cpu_cores} for target {target.id}, got {cpu_cores}")
        if gpu_mem_cap_mib is not None and (int(gpu_mem_cap_mib) < 1 or (target.has_gpu and int(gpu_mem_cap_mib) > target.gpu_mem_mib)):
            raise ValueError(
                f"gpu_mem_cap_mib must be in 1..{target.gpu_mem_mib} MiB for target {target.id} (None = grow), got {gpu_mem_cap_mib}"
            )
        pred = self.predict_columns(
            model_columns(job, target),
            dev,
            np.nan if cpu_cores is None else float(cpu_cores),
            np.nan if gpu_mem_cap_mib is None else float(gpu_mem_cap_mib),
            rng,
        )
        ops = self.operator_model if job.operators is not None else None
        if ops is not None and bool(pred.feasible[0]):
            # the operator-level model (placement.model.opmodel) times the job; feasibility (OOM,
            # no GPU) stays the working-set model's
            op = ops.predict(job, target, dev, None if cpu_cores is None else int(cpu_cores))
            t = op.time_per_batch_s
            if rng is not None:
                t *= float(np.exp(rng.normal(0.0, self.params.noise_time_sigma)))
            return DeviceOutcome.model_validate({
                "device": dev, "n_samples": job.batch_size, "time_total_s": t, "time_per_batch_s": t,
                "avg_cpu_power_w": op.avg_cpu_power_w, "avg_gpu_power_w": op.avg_gpu_power_w,
                "cpu_power_method": EnergyMethod.MODELLED.value,
                "gpu_power_method": (EnergyMethod.MODELLED if op.avg_gpu_power_w is not None else EnergyMethod.UNKNOWN).value,
            })
        return _outcome(pred, 0, dev, job.batch_size)

    @property
    def operator_model(self) -> Any:
        """The operator-level model used for jobs that carry operators (bundled fit of the
        reference micro-benchmarks), or None. Set ``use_operators=False`` to disable."""
        if not self.use_operators:
            return None
        from placement.model.opmodel import bundled_operator_model

        return bundled_operator_model()

    def basis(self, job: Job, target: HardwareTarget) -> str:
        """What a prediction for ``job`` rests on: its operators, or today's aggregate fields."""
        ops = self.operator_model if job.operators is not None else None
        if ops is not None:
            return str(ops.basis(target))
        return "aggregate: FLOPs, parameters, input size, family"


def _apply_overrides(
    models: np.ndarray, fp: dict[str, FloatArray], table: tuple[tuple[str, dict[str, float]], ...], rows: BoolArray,
    cache: dict[str, int],
) -> dict[str, FloatArray]:
    """``fp`` with the rows (of ``rows``) whose model name contains a key of ``table`` given
    that key's values (longest key first)."""
    if not table:
        return fp
    if models.shape[0] <= _SMALL:
        codes = np.arange(models.shape[0])
        uniques = models.tolist()
    else:
        codes, uniq = pd.factorize(models)
        uniques = uniq.tolist()
    match = [_override_index(u, table, cache) for u in uniques] + [-1]
    which = np.asarray(match, dtype=np.intp)[codes]  # code -1 (missing name) picks the trailing -1
    which = np.where(rows, which, -1)
    if (which < 0).all():
        return fp
    out = dict(fp)
    for i, (_, values) in enumerate(table):
        hit = which == i
        if not hit.any():
            continue
        for name, value in values.items():
            out[name] = np.where(hit, value, out[name])
    return out


_OVERRIDE_CACHE_MAX = 65536


def _override_index(name: Any, table: tuple[tuple[str, dict[str, float]], ...], cache: dict[str, int]) -> int:
    """Index of the first key of ``table`` contained in the lower-cased model name, or -1;
    remembered in ``cache`` (one per model and table: the service sees the same names again and again)."""
    text = str(name)
    hit = cache.get(text)
    if hit is None:
        hit = next((i for i, (k, _) in enumerate(table) if k in text.lower()), -1)
        if len(cache) >= _OVERRIDE_CACHE_MAX:
            cache.clear()
        cache[text] = hit
    return hit


def _device_str(device: Any) -> str:
    return as_device(device).value


def _outcome(pred: Prediction, i: int, device: str, batch_size: int) -> DeviceOutcome:
    if not pred.feasible[i]:
        return DeviceOutcome.model_validate(
            {"device": device, "feasible": False, "infeasible_reason": str(pred.infeasible_reason[i])}
        )
    t = float(pred.time_per_batch_s[i])
    gpu_w = float(pred.avg_gpu_power_w[i]) if device == "gpu" else None
    return DeviceOutcome.model_validate(
        {
            "device": device,
            "n_samples": batch_size,
            "time_total_s": t,
            "time_per_batch_s": t,
            "avg_cpu_power_w": float(pred.avg_cpu_power_w[i]),
            "avg_gpu_power_w": gpu_w,
            "cpu_power_method": EnergyMethod.MODELLED.value,
            "gpu_power_method": (EnergyMethod.MODELLED if gpu_w is not None else EnergyMethod.UNKNOWN).value,
        }
    )


def model_columns(job: Job, target: HardwareTarget) -> dict[str, list[Any]]:
    """The columns :meth:`PerformanceModel.predict_columns` reads, for one (job, target):
    :data:`placement.model.features.MODEL_INPUT_COLUMNS` (the feature inputs plus the optional
    hardware columns and the model name) by :func:`placement.model.features.pair_columns`."""
    return pair_columns(job, target, MODEL_INPUT_COLUMNS)


def safe_cap_mib(working_set_mib: float, target: HardwareTarget, headroom_frac: float, step_mib: int = 64) -> int | None:
    """Smallest explicit cap >= working set x (1 + headroom), rounded up to ``step_mib``;
    ``None`` when that does not fit the GPU's memory."""
    want = math.ceil(working_set_mib * (1.0 + headroom_frac) / step_mib) * step_mib
    want = max(step_mib, want)
    return want if want <= target.gpu_mem_mib else None


def recommend_knobs(
    model: PerformanceModel,
    job: Job,
    target: HardwareTarget,
    device: str | int | Device,
    tolerance: float = 0.05,
) -> tuple[int, GpuMemCap]:
    """CPU cores and GPU memory cap for ``job`` placed on ``device`` of ``target``.

    Cores: the fewest whose predicted time is within ``tolerance`` (relative) of the best
    over 1..cores (paper B: about 4 cores on the Jetsons). Cap: on the GPU, the
    smallest explicit cap with ``cap_headroom_frac`` headroom over the predicted working
    set -- the fastest cap without OOM risk, since over-allocating slows the run and an
    explicit cap is paper B's stable choice; ``"grow"`` on the CPU, on targets without a
    GPU, or when no such cap fits.
    """
    if not (0.0 <= tolerance < 1.0):
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    dev = _device_str(device)
    if dev == "gpu" and not target.has_gpu:
        dev = "cpu"
    if job.operators is not None and model.operator_model is not None:
        # one recommender for jobs with operators: placement.model.knob_advice
        from placement.model.knob_advice import advise_knobs

        advice = advise_knobs(job, target, dev, model, tolerance=tolerance, margin=model.params.cap_headroom_frac)
        return advice.cpu_cores, advice.gpu_mem_cap_mib
    grid = np.arange(1, target.cpu_cores + 1, dtype=np.float64)
    base = model_columns(job, target)
    cols = {k: v * len(grid) for k, v in base.items()}
    pred = model.predict_columns(cols, dev, grid, np.nan)
    cap: GpuMemCap = GROW
    if dev == "gpu":
        safe = safe_cap_mib(float(pred.working_set_mib[0]), target, model.params.cap_headroom_frac)
        if safe is not None:
            cap = safe
    times = pred.time_per_batch_s
    if not np.isfinite(times).any():
        return target.cpu_cores, cap
    best = np.nanmin(times)
    ok = np.flatnonzero(times <= best * (1.0 + tolerance))
    return int(grid[ok[0]]), cap
