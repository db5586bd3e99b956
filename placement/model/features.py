"""Feature vectors for placement policies, and the fitted normaliser saved with models.

The features are paper A's Table 3 (CPU and GPU throughput, GPU memory, system RAM, CPU
and GPU TDP, model FLOPs, batch size, parameter count, input size) plus features that let
one learner generalise across hardware: log scales, compute-time estimates (FLOPs over
throughput), a transfer-time estimate (bytes over the host link; zero on unified memory),
the GPU working set against GPU memory, and one-hot family and mode.

Schema 2 adds the *estimate* (:mod:`placement.model.estimate`): the threshold margins
``log(speedup / T_t)`` and ``log(T_e / energy_ratio)`` of the estimated outcomes, their
uncertainty and whether the GPU is estimated to fit. They come from the columns
``ESTIMATE_COLUMNS`` when given (the service passes probe- and history-corrected
estimates at the request's thresholds); otherwise from the performance model at the
thresholds in the optional columns ``threshold_speedup_min`` / ``threshold_energy_ratio_max``
(default: paper A's 2.0 and 1.5).

One function, :func:`feature_matrix`, builds every vector from named columns (arrays);
:func:`build_features` is the single-job view of it. ``FEATURE_NAMES`` gives the order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from placement.core.hardware import HardwareTarget
from placement.core.job import FAMILIES, Job
from placement.core.trace import job_columns, target_columns

FEATURE_SCHEMA_VERSION = 2
_EPS = 1e-12

FEATURE_NAMES: tuple[str, ...] = (
    # paper A Table 3 (log10 where the range spans orders of magnitude)
    "log10_cpu_gflops",
    "log10_gpu_gflops",
    "log10_gpu_mem_gib",
    "log10_ram_gib",
    "log10_cpu_tdp_w",
    "log10_gpu_tdp_w",
    "log10_flops_per_batch",
    "log10_batch_size",
    "log10_param_count",
    "log10_input_elems_per_sample",
    # generalisation across hardware
    "log10_input_bytes_per_sample",
    "log10_flops_per_sample",
    "log10_cpu_time_est_s",
    "log10_gpu_time_est_s",
    "log10_est_speedup",
    "log10_transfer_time_est_s",
    "log10_gpu_working_set_frac",
    "cpu_cores_frac",
    "log10_cpu_cores",
    "has_gpu",
    "is_edge",
    "unified_memory",
    "mode_train",
    *(f"family_{f}" for f in FAMILIES),
    # the estimate (placement.model.estimate): threshold margins, their uncertainty, GPU fit
    "est_margin_speedup",
    "est_margin_energy",
    "est_margin_sigma",
    "est_gpu_feasible",
)
N_FEATURES = len(FEATURE_NAMES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

JOB_COLUMNS = (
    "family",
    "mode",
    "batch_size",
    "flops_per_batch",
    "param_count",
    "input_elems_per_sample",
    "input_bytes_per_sample",
)
TARGET_COLUMNS = (
    "hw_cpu_cores",
    "hw_cpu_gflops",
    "hw_cpu_tdp_w",
    "hw_ram_gib",
    "hw_gpu_gflops",
    "hw_gpu_mem_gib",
    "hw_gpu_tdp_w",
    "hw_host_link_gbs",
    "hw_kind",
    "hw_unified_memory",
)
FEATURE_INPUT_COLUMNS = JOB_COLUMNS + TARGET_COLUMNS + ("cpu_cores",)
MODEL_INPUT_COLUMNS = FEATURE_INPUT_COLUMNS + (
    "hw_cpu_mem_bw_gbs", "hw_gpu_mem_bw_gbs", "hw_cpu_idle_w", "hw_gpu_idle_w", "model",
)
"""What the performance model reads (:meth:`placement.model.perfmodel.PerformanceModel.predict_columns`):
the feature inputs, the optional hardware figures (``perfmodel.OPTIONAL_HW_COLUMNS``) and the model
name. Every (job, target) -> columns conversion goes through :func:`pair_columns`."""
ESTIMATE_COLUMNS = ("est_margin_speedup", "est_margin_energy", "est_margin_sigma", "est_gpu_feasible")
THRESHOLD_COLUMNS = ("threshold_speedup_min", "threshold_energy_ratio_max")

_DEFAULT_PERF_MODEL: object | None = None


def estimate_columns(columns: Mapping[str, npt.ArrayLike]) -> dict[str, npt.NDArray[np.float64]]:
    """``ESTIMATE_COLUMNS`` of the performance model's estimate (source ``model``) at the
    thresholds of ``THRESHOLD_COLUMNS`` (defaults 2.0 and 1.5 where absent)."""
    global _DEFAULT_PERF_MODEL
    from placement.model.estimate import margin_columns, margins, model_estimate
    from placement.model.perfmodel import PerformanceModel

    if _DEFAULT_PERF_MODEL is None:
        _DEFAULT_PERF_MODEL = PerformanceModel()
    est = model_estimate(_DEFAULT_PERF_MODEL, columns)
    t_t = np.asarray(columns["threshold_speedup_min"], dtype=np.float64) if "threshold_speedup_min" in columns else 2.0
    t_e = (np.asarray(columns["threshold_energy_ratio_max"], dtype=np.float64)
           if "threshold_energy_ratio_max" in columns else 1.5)
    return margin_columns(margins(est, t_t, t_e), est)


def _log10(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.log10(np.maximum(x, _EPS))


def feature_matrix(columns: Mapping[str, npt.ArrayLike]) -> npt.NDArray[np.float32]:
    """Features for ``n`` (job, target, cores) rows given as named columns.

    ``columns`` needs every name in ``FEATURE_INPUT_COLUMNS`` (a trace DataFrame has
    them); ``cpu_cores`` is the cores the job may use (the target's cores by default).
    Returns ``float32`` of shape ``(n, N_FEATURES)``.
    """
    missing = [c for c in FEATURE_INPUT_COLUMNS if c not in columns]
    if missing:
        raise KeyError(f"feature columns missing: {', '.join(missing)}")

    def f64(name: str) -> npt.NDArray[np.float64]:
        return np.asarray(columns[name], dtype=np.float64).reshape(-1)

    batch = f64("batch_size")
    flops = f64("flops_per_batch")
    cores_total = f64("hw_cpu_cores")
    cores = np.where(np.isfinite(f64("cpu_cores")), f64("cpu_cores"), cores_total)
    cores = np.clip(cores, 1.0, cores_total)
    cpu_gflops = f64("hw_cpu_gflops")
    gpu_gflops = f64("hw_gpu_gflops")
    gpu_mem_gib = f64("hw_gpu_mem_gib")
    link = f64("hw_host_link_gbs")
    unified = np.asarray(columns["hw_unified_memory"], dtype=bool).reshape(-1)
    has_gpu = gpu_gflops > 0
    in_bytes = f64("input_bytes_per_sample")
    params = f64("param_count")
    train = np.asarray(columns["mode"]).reshape(-1) == "train"
    family = np.asarray(columns["family"]).reshape(-1)
    kind = np.asarray(columns["hw_kind"]).reshape(-1)
    if all(c in columns for c in ESTIMATE_COLUMNS):
        # given estimate columns (the service's own, or a trace's); rows without them (NaN) use the model's
        est = {c: np.asarray(columns[c], dtype=np.float64).reshape(-1) for c in ESTIMATE_COLUMNS}
        missing_rows = ~np.logical_and.reduce([np.isfinite(v) for v in est.values()])
        if missing_rows.any():
            model = estimate_columns(columns)
            est = {c: np.where(missing_rows, model[c], est[c]) for c in ESTIMATE_COLUMNS}
    else:
        est = estimate_columns(columns)

    cpu_time = flops / (cpu_gflops * 1e9 * cores / cores_total)
    gpu_time = np.where(has_gpu, flops / (np.maximum(gpu_gflops, _EPS) * 1e9), np.inf)
    transfer = np.where(unified | ~has_gpu, 0.0, batch * in_bytes / (np.maximum(link, _EPS) * 1e9))
    # weights (+ grads + 2 Adam moments when training) + one batch of input, bytes
    working_set = params * 4.0 * np.where(train, 4.0, 1.0) + batch * in_bytes
    ws_frac = np.where(has_gpu, working_set / (np.maximum(gpu_mem_gib, _EPS) * 2**30), 1e3)

    out = np.empty((batch.shape[0], N_FEATURES), dtype=np.float32)
    cols = [
        _log10(cpu_gflops),
        _log10(np.where(has_gpu, gpu_gflops, 1.0)),
        _log10(np.where(has_gpu, gpu_mem_gib, 0.01)),
        _log10(f64("hw_ram_gib")),
        _log10(f64("hw_cpu_tdp_w")),
        _log10(np.where(has_gpu, f64("hw_gpu_tdp_w"), 1.0)),
        _log10(flops + 1.0),
        _log10(batch),
        _log10(params + 1.0),
        _log10(f64("input_elems_per_sample")),
        _log10(in_bytes),
        _log10(flops / batch + 1.0),
        _log10(cpu_time),
        _log10(np.where(has_gpu, gpu_time, 1e3)),
        np.where(has_gpu, _log10(cpu_time) - _log10(np.where(has_gpu, gpu_time + transfer, 1.0)), -3.0),
        _log10(transfer + 1e-9),
        _log10(ws_frac),
        cores / cores_total,
        _log10(cores),
        has_gpu.astype(np.float64),
        (kind == "edge").astype(np.float64),
        unified.astype(np.float64),
        train.astype(np.float64),
        *((family == f).astype(np.float64) for f in FAMILIES),
        *(est[c] for c in ESTIMATE_COLUMNS),
    ]
    for i, col in enumerate(cols):
        out[:, i] = col
    return out


def pair_columns(job: Job, target: HardwareTarget, names: tuple[str, ...] = MODEL_INPUT_COLUMNS,
                 cpu_cores: int | None = None) -> dict[str, list[Any]]:
    """The columns ``names`` of one (job, target) pair, one-element lists: the trace's job and
    target columns (:func:`placement.core.trace.job_columns`, :func:`~placement.core.trace.target_columns`)
    and ``cpu_cores`` (the target's cores unless given)."""
    row = {**job_columns(job), **target_columns(target), "cpu_cores": target.cpu_cores if cpu_cores is None else cpu_cores}
    return {name: [row[name]] for name in names}


def build_features(job: Job, target: HardwareTarget, cpu_cores: int | None = None) -> npt.NDArray[np.float32]:
    """The feature vector of one job on one target, shape ``(N_FEATURES,)`` (estimate: the
    performance model's at the default thresholds, on :data:`MODEL_INPUT_COLUMNS`)."""
    return feature_matrix(pair_columns(job, target, MODEL_INPUT_COLUMNS, cpu_cores))[0]


@dataclass(frozen=True)
class Normaliser:
    """Per-feature standardisation fitted on training data; saved beside every model."""

    mean: npt.NDArray[np.float32]
    scale: npt.NDArray[np.float32]
    feature_names: tuple[str, ...] = FEATURE_NAMES

    @classmethod
    def fit(cls, x: npt.ArrayLike) -> Normaliser:
        """Per-feature mean and standard deviation of raw features ``x`` ``(n, N_FEATURES)`` (a
        constant feature gets scale 1)."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != N_FEATURES or arr.shape[0] == 0:
            raise ValueError(f"Normaliser.fit needs shape (n>0, {N_FEATURES}), got {arr.shape}")
        scale = arr.std(axis=0)
        scale = np.where(scale < 1e-6, 1.0, scale)
        return cls(arr.mean(axis=0).astype(np.float32), scale.astype(np.float32))

    def transform(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``(x - mean) / scale``, float32, same shape."""
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        """Mean and scale as lists, with the feature schema version and names they belong to."""
        return {
            "feature_schema_version": FEATURE_SCHEMA_VERSION,
            "feature_names": list(self.feature_names),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Normaliser:
        """The normaliser from :meth:`to_dict` output; ``ValueError`` when it was saved for another
        feature schema."""
        names = tuple(data.get("feature_names", ()))
        if data.get("feature_schema_version") != FEATURE_SCHEMA_VERSION or names != FEATURE_NAMES:
            raise ValueError(
                "normaliser feature schema does not match this code "
                f"(saved version {data.get('feature_schema_version')}, {len(names)} features; "
                f"expected version {FEATURE_SCHEMA_VERSION}, {N_FEATURES} features): retrain the model"
            )
        mean = np.asarray(data["mean"], dtype=np.float32)
        scale = np.asarray(data["scale"], dtype=np.float32)
        if mean.shape != (N_FEATURES,) or scale.shape != (N_FEATURES,) or not np.all(scale > 0):
            raise ValueError("normaliser mean/scale have the wrong shape or a non-positive scale")
        return cls(mean, scale, names)

    def save(self, path: Path) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Normaliser:
        """Read a normaliser saved by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
