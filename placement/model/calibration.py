"""Calibrate the performance model against a measured trace, and report its held-out error.

The fit (:func:`fit_params`) minimises robust least squares (``scipy.optimize.least_squares``,
soft-L1 loss) of ``log(predicted time) - log(measured time)`` over the measured rows,
with a weak Gaussian prior pulling each free constant towards its starting value (in
log or logit units, ``PRIOR_SD``) so that constants the trace cannot identify stay put
instead of drifting. The free constants are chosen from what the trace contains
(:func:`free_params`): per-family compute efficiencies where the family ran on that
device, Amdahl fractions where cores were swept, per-op and per-batch overheads. When
the trace has *measured* powers, a second stage fits the power constants to them.
The noise model is set from the repeat spread the trace records (``time_cv``).

Error (:func:`cross_validate`) is measured only on rows held out of the fit, two ways:
random rows (K folds) and whole models (group K folds on the ``model`` column, so the
model never saw any run of a held-out network). Reported per device and family: the
median absolute relative error of the time per batch and the share of rows within
+-25%. Target: median <= 15% (stretch 10%).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import least_squares, minimize
from threadpoolctl import threadpool_limits

from placement.core.job import FAMILIES
from placement.core.version import code_version
from placement.model.features import MODEL_INPUT_COLUMNS
from placement.model.perfmodel import PerformanceModel, PerfParams, save_params

PRIOR_SD = 2.0
"""Prior width of each free constant, in log units (log params) or logit units (fractions)."""
HYPER = "hyper.families."
"""Path prefix of the cross-family centres: fitted, used as priors, never stored in PerfParams."""
ARCH_PRIOR_SD = 2.0
"""Prior width of an architecture's constant around its family's (hierarchical shrinkage)."""
LOSS_SCALE = 0.1
"""Soft-L1 scale on log-time residuals: a row off by more than ~10% counts linearly."""
WITHIN = 0.25
TARGET_MEDIAN_ERR = 0.15
STRETCH_MEDIAN_ERR = 0.10

_MODEL_COLUMNS = tuple(c for c in MODEL_INPUT_COLUMNS if c != "cpu_cores")
"""The trace columns the fit hands the performance model (the cores are each row's own knob)."""


@dataclass(frozen=True)
class FreeParam:
    """A fitted constant: flat path into :class:`PerfParams`, transform and natural bounds."""

    path: str
    transform: Literal["log", "logit"]
    lower: float
    upper: float
    start: float | None = None  # starting value where the path is not in the parameters yet
    parent: str | None = None  # prior centred on this constant (an architecture's on its family's)
    prior_sd: float = 2.0  # prior width in transformed (log / logit) units

    def initial(self, params: PerfParams) -> float:
        """The starting value: the constant's value in ``params``, or ``start`` where the path is not there yet."""
        try:
            return params.get(self.path)
        except KeyError:
            if self.start is None:
                raise
            return self.start

    def forward(self, value: float) -> float:
        """The optimiser's unbounded coordinate of ``value`` (log, or logit for a fraction), clipped to the bounds first."""
        v = min(max(value, self.lower), self.upper)
        return math.log(v) if self.transform == "log" else math.log(v / (1.0 - v))

    def backward(self, x: float) -> float:
        """The constant's value at optimiser coordinate ``x`` (inverse of :meth:`forward`), within the bounds."""
        v = math.exp(x) if self.transform == "log" else 1.0 / (1.0 + math.exp(-x))
        return min(max(v, self.lower), self.upper)

    def bounds(self) -> tuple[float, float]:
        """The (lower, upper) bounds in the optimiser's coordinates."""
        return self.forward(self.lower), self.forward(self.upper)


_FAMILY_SPECS: dict[str, tuple[Literal["log", "logit"], float, float]] = {
    "cpu_eff": ("log", 1e-4, 2.0),
    "gpu_eff": ("log", 1e-4, 8.0),
    "parallel_frac": ("logit", 1e-3, 0.999),
    "kernels_per_pass": ("log", 0.1, 5000.0),
    "act_bytes_per_flop": ("log", 1e-6, 10.0),
    "gpu_kernel_frac": ("log", 1e-3, 10.0),
    "cpu_train_eff_mult": ("log", 0.05, 5.0),
    "gpu_train_eff_mult": ("log", 0.05, 5.0),
}
_GLOBAL_SPECS: dict[str, tuple[Literal["log", "logit"], float, float]] = {
    "cpu_op_overhead_s": ("log", 1e-8, 1e-2),
    "cpu_thread_sync_s": ("log", 1e-10, 1e-3),
    "gpu_launch_overhead_s": ("log", 1e-7, 1e-2),
    "gpu_kernel_min_s": ("log", 1e-8, 1e-3),
    "batch_overhead_s": ("log", 1e-7, 1.0),
    "host_prep_gbs_per_core": ("log", 1e-2, 1e3),
    "link_eff": ("log", 1e-2, 1.0),
    "overalloc_slowdown_per_doubling": ("log", 1e-4, 0.5),
    "gpu_power_base": ("logit", 1e-3, 0.999),
    "host_busy_cores": ("log", 0.05, 64.0),
    "roofline_q": ("log", 1.0, 16.0),
    "train_kernel_mult": ("log", 0.5, 20.0),
    "train_weight_traffic_mult": ("log", 1.0, 50.0),

    "train_step_overhead_s": ("log", 1e-7, 1.0),
    "cpu_cache_mib_per_core": ("log", 1e-2, 1e3),
    "cpu_cache_bw_mult": ("log", 0.1, 100.0),
    "cpu_mem_eff": ("log", 1e-2, 20.0),
    "cpu_coherency": ("log", 1e-7, 0.2),
    "cpu_bw_sat_cores": ("log", 1.0, 64.0),
}
POWER_PARAMS = ("gpu_power_base", "host_busy_cores")


# --------------------------------------------------------------------------- rows


def measured_time_per_batch_s(frame: pd.DataFrame) -> npt.NDArray[np.float64]:
    """The measured time of one batch per row: the repeat median where recorded, else
    ``time_per_batch_s``, else ``time_total_s / n_samples * batch_size``; NaN if none."""

    def f(name: str) -> npt.NDArray[np.float64]:
        if name not in frame.columns:
            return np.full(len(frame), np.nan)
        return np.asarray(frame[name].astype("Float64").to_numpy(dtype="float64", na_value=np.nan))

    per_sample = f("time_total_s") / f("n_samples")
    t = np.where(np.isfinite(f("time_per_batch_s")), f("time_per_batch_s"), per_sample * f("batch_size"))
    return np.where(np.isfinite(f("time_per_batch_median_s")), f("time_per_batch_median_s"), t)


def fit_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows usable for the time fit: feasible runs with a positive measured time."""
    feasible = frame["feasible"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    t = measured_time_per_batch_s(frame)
    keep = feasible & np.isfinite(t) & (t > 0)
    out = frame.loc[keep].reset_index(drop=True).copy()
    out["_time_s"] = t[keep]
    return out


@dataclass
class _Arrays:
    """Trace rows as plain numpy columns (converted once; the fit evaluates many times)."""

    columns: dict[str, np.ndarray]
    device: np.ndarray
    cores: npt.NDArray[np.float64]
    caps: npt.NDArray[np.float64]
    time_s: npt.NDArray[np.float64]
    cpu_power_w: npt.NDArray[np.float64]
    gpu_power_w: npt.NDArray[np.float64]
    cpu_power_measured: npt.NDArray[np.bool_]
    gpu_power_measured: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, rows: pd.DataFrame) -> _Arrays:
        cols: dict[str, np.ndarray] = {}
        for name in _MODEL_COLUMNS:
            if name not in rows.columns:
                continue
            s = rows[name]
            if name in ("family", "mode", "hw_kind", "model"):
                cols[name] = s.astype(str).to_numpy(dtype=object)
            elif name == "hw_unified_memory":
                cols[name] = s.astype("boolean").fillna(False).to_numpy(dtype=bool)
            else:
                cols[name] = s.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)

        def f(name: str) -> npt.NDArray[np.float64]:
            return np.asarray(rows[name].astype("Float64").to_numpy(dtype="float64", na_value=np.nan))

        return cls(
            columns=cols,
            device=rows["device"].astype(str).to_numpy(dtype=object),
            cores=f("cpu_cores"),
            caps=f("gpu_mem_cap_mib"),
            time_s=rows["_time_s"].to_numpy(dtype=np.float64),
            cpu_power_w=f("avg_cpu_power_w"),
            gpu_power_w=f("avg_gpu_power_w"),
            cpu_power_measured=(rows["cpu_power_method"].astype(str) == "measured").to_numpy(dtype=bool) & np.isfinite(f("avg_cpu_power_w")),
            gpu_power_measured=(rows["gpu_power_method"].astype(str) == "measured").to_numpy(dtype=bool) & np.isfinite(f("avg_gpu_power_w")),
        )

    def predict(self, params: PerfParams):  # -> Prediction
        return PerformanceModel(params).predict_columns(
            self.columns, self.device, self.cores, self.caps, mask_infeasible=False
        )


# --------------------------------------------------------------------------- fit


def architecture(model: str) -> str:
    """The architecture part of a model name: lower-case text before the first ``_`` or
    ``-`` (``resnet18_cifar10`` -> ``resnet18``), the key of the name-keyed overrides."""
    return re.split(r"[_\-.\s]", str(model).strip().lower(), maxsplit=1)[0] or "model"


def swept_rows(rows: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Rows of a workload (model or job, mode, batch, target, device) run at more than one core count."""
    key = ["model" if "model" in rows.columns else "job_id", "mode", "batch_size", "target_id", "device"]
    counts = rows.groupby(key, dropna=False)["cpu_cores"].transform("nunique")
    return np.asarray(counts.to_numpy(dtype="float64", na_value=0.0) > 1, dtype=bool)


def _wanted_constants(rows_in: npt.NDArray[np.bool_], is_cpu: npt.NDArray[np.bool_], is_gpu: npt.NDArray[np.bool_],
                      trains: npt.NDArray[np.bool_], in_sweep: npt.NDArray[np.bool_]) -> list[str]:
    """The per-family constants the selected rows can inform (for a family or one architecture)."""
    wanted = ["kernels_per_pass", "act_bytes_per_flop"]
    if (rows_in & is_cpu).any():
        wanted += ["cpu_eff"] + (["cpu_train_eff_mult"] if (rows_in & is_cpu & trains).any() else [])
    if (rows_in & is_gpu).any():
        wanted += ["gpu_eff", "gpu_kernel_frac"] + (["gpu_train_eff_mult"] if (rows_in & is_gpu & trains).any() else [])
    if (rows_in & in_sweep).any():
        wanted.append("parallel_frac")
    return wanted


def _global_names(rows: pd.DataFrame, is_cpu: npt.NDArray[np.bool_], is_gpu: npt.NDArray[np.bool_],
                  in_sweep: npt.NDArray[np.bool_], fit_power: bool) -> list[str]:
    """The global constants ``rows`` can inform."""
    names = ["batch_overhead_s", "host_prep_gbs_per_core", "roofline_q"]
    if (rows["mode"].astype(str) == "train").any():
        names += ["train_kernel_mult", "train_step_overhead_s", "train_weight_traffic_mult"]
    if is_cpu.any():
        names += ["cpu_op_overhead_s", "cpu_mem_eff", "cpu_cache_mib_per_core", "cpu_cache_bw_mult"]
        if in_sweep.any():
            names += ["cpu_thread_sync_s", "cpu_coherency", "cpu_bw_sat_cores"]
    if is_gpu.any():
        names += ["gpu_launch_overhead_s", "gpu_kernel_min_s"]
        discrete = ~rows["hw_unified_memory"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        if (is_gpu & discrete).any():
            names.append("link_eff")
        capped = rows["gpu_mem_cap_mib"].notna().to_numpy(dtype=bool) if "gpu_mem_cap_mib" in rows.columns else np.zeros(len(rows), bool)
        if (is_gpu & capped).any():
            names.append("overalloc_slowdown_per_doubling")
    if fit_power:
        names += list(POWER_PARAMS)
    return names


def free_params(rows: pd.DataFrame, params: PerfParams, fit_power: bool = False) -> list[FreeParam]:
    """The constants ``rows`` can inform (see module docstring)."""
    free: list[FreeParam] = []
    dev = rows["device"].astype(str)
    fam = rows["family"].astype(str)
    is_cpu = (dev == "cpu").to_numpy()
    is_gpu = (dev == "gpu").to_numpy()
    trains = (rows["mode"].astype(str) == "train").to_numpy()
    in_sweep = swept_rows(rows) & is_cpu
    hyper_fields: set[str] = set()
    for f in sorted(set(fam)):
        for name in _wanted_constants((fam == f).to_numpy(), is_cpu, is_gpu, trains, in_sweep):
            kind, lo, hi = _FAMILY_SPECS[name]
            free.append(FreeParam(f"families.{f}.{name}", kind, lo, hi, prior_sd=PRIOR_SD, parent=HYPER + name))
            hyper_fields.add(name)
    # cross-family centres (hierarchical prior; they also stand in for families never run)
    for name in sorted(hyper_fields):
        kind, lo, hi = _FAMILY_SPECS[name]
        centre = FreeParam("x", kind, lo, hi)
        mean_x = float(np.mean([centre.forward(getattr(params.families[f], name)) for f in FAMILIES]))
        free.append(FreeParam(HYPER + name, kind, lo, hi, centre.backward(mean_x), prior_sd=PRIOR_SD))
    if "model" in rows.columns:
        # per architecture seen: its own constants, with a prior centred on its family's
        arch = rows["model"].astype(str).map(architecture).to_numpy()
        fams_of = pd.DataFrame({"arch": arch, "family": fam}).groupby("arch")["family"].agg(set)
        for arch_name, fams in sorted(fams_of.items(), key=lambda kv: str(kv[0])):
            if len(fams) != 1:
                continue  # one name part over several families: leave to the families
            f = next(iter(fams))
            for name in _wanted_constants(arch == arch_name, is_cpu, is_gpu, trains, in_sweep):
                kind, lo, hi = _FAMILY_SPECS[name]
                path = f"model_overrides.{arch_name}.{name}"
                try:
                    start: float | None = params.get(path)
                except KeyError:
                    start = params.get(f"families.{f}.{name}")
                free.append(FreeParam(path, kind, lo, hi, start, parent=f"families.{f}.{name}", prior_sd=ARCH_PRIOR_SD))
    for name in _global_names(rows, is_cpu, is_gpu, in_sweep, fit_power):
        kind, lo, hi = _GLOBAL_SPECS[name]
        free.append(FreeParam(name, kind, lo, hi, prior_sd=PRIOR_SD))
    return free


@dataclass(frozen=True)
class FitResult:
    """Outcome of one fit: parameters, what was free, and the optimiser's report."""

    params: PerfParams
    free: tuple[str, ...]
    n_rows: int
    success: bool
    nfev: int
    message: str
    log_residual_sd: float  # robust (1.4826 x MAD) sd of log(pred / measured) on the fitted rows
    power_rows: int = 0
    start: tuple[float, ...] = ()  # starting value (prior centre) of each free constant
    hyper: dict[str, float] = field(default_factory=dict)  # fitted cross-family centres

    def fitted(self, path: str) -> float:
        """The fitted value of a free constant (cross-family centres included)."""
        if path.startswith(HYPER):
            return self.hyper[path[len(HYPER):]]
        return self.params.get(path)


def _solve(
    free: Sequence[FreeParam],
    start: PerfParams,
    residuals: Any,
    max_nfev: int,
) -> tuple[PerfParams, Any]:
    x0 = np.array([p.forward(p.initial(start)) for p in free])
    lo = np.array([p.bounds()[0] for p in free])
    hi = np.array([p.bounds()[1] for p in free])
    x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
    index = {p.path: i for i, p in enumerate(free)}
    # prior centre: the start value, or the (free or fixed) parent constant
    parent_idx = np.array([index.get(p.parent, -1) if p.parent else -1 for p in free])
    fixed_centre = np.array([
        p.forward(start.get(p.parent)) if p.parent and p.parent not in index else x0[i] for i, p in enumerate(free)
    ])
    sd = np.array([p.prior_sd for p in free])
    has_parent = parent_idx >= 0

    def to_params(x: npt.NDArray[np.float64]) -> PerfParams:
        return start.with_values(
            {p.path: p.backward(float(v)) for p, v in zip(free, x, strict=True) if not p.path.startswith(HYPER)}
        )

    def fun(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        data = residuals(to_params(x))
        centre = np.where(has_parent, x[np.maximum(parent_idx, 0)], fixed_centre)
        prior = (x - centre) / sd
        return np.concatenate([data, prior])

    # one BLAS thread: the Jacobians are small, and threaded SVDs on a busy host are ~50x slower
    with threadpool_limits(limits=1):
        sol = least_squares(fun, x0, bounds=(lo, hi), loss="soft_l1", f_scale=LOSS_SCALE, max_nfev=max_nfev,
                            x_scale=1.0, method="trf", ftol=1e-10, xtol=1e-10, gtol=1e-10)
    sol.hyper = {p.path[len(HYPER):]: p.backward(float(v)) for p, v in zip(free, sol.x, strict=True) if p.path.startswith(HYPER)}
    return to_params(sol.x), sol


def fit_params(
    frame: pd.DataFrame,
    initial: PerfParams | None = None,
    fit_power: bool | None = None,
    max_nfev: int = 400,
) -> FitResult:
    """Fit the model's constants to the measured times (and powers) of ``frame``'s rows.

    ``initial``: starting values and prior centres (default: code defaults).
    ``fit_power``: fit the power constants too; default: when the rows have measured GPU
    power. The noise constants are set from the rows' ``time_cv`` when recorded.
    """
    start = initial or PerfParams()
    rows = fit_rows(frame)
    if len(rows) < 10:
        raise ValueError(f"calibration needs at least 10 feasible rows with a measured time, got {len(rows)}")
    arr = _Arrays.of(rows)
    log_t = np.log(arr.time_s)

    def time_residuals(params: PerfParams) -> npt.NDArray[np.float64]:
        pred = arr.predict(params).time_per_batch_s
        return np.nan_to_num(np.log(pred) - log_t, nan=5.0, posinf=5.0, neginf=-5.0)

    time_free = [p for p in free_params(rows, start) if p.path not in POWER_PARAMS]
    params, sol = _solve(time_free, start, time_residuals, max_nfev)
    # families the rows never ran take the cross-family centre of each fitted constant
    seen = set(rows["family"].astype(str))
    fill = {f"families.{f}.{name}": value for f in FAMILIES if f not in seen for name, value in sol.hyper.items()}
    if fill:
        params = params.with_values(fill)
    nfev = int(sol.nfev)
    message = str(sol.message)
    success = bool(sol.success)

    n_power = int((arr.gpu_power_measured & (arr.device == "gpu")).sum() + arr.cpu_power_measured.sum())
    do_power = (arr.gpu_power_measured & (arr.device == "gpu")).any() if fit_power is None else fit_power
    power_free: list[FreeParam] = []
    if do_power and n_power >= 5:
        gpu_rows = arr.gpu_power_measured & (arr.device == "gpu")
        cpu_rows = arr.cpu_power_measured

        def power_residuals(p: PerfParams) -> npt.NDArray[np.float64]:
            pred = arr.predict(p)
            r_gpu = np.log(pred.avg_gpu_power_w[gpu_rows]) - np.log(arr.gpu_power_w[gpu_rows])
            r_cpu = np.log(pred.avg_cpu_power_w[cpu_rows]) - np.log(arr.cpu_power_w[cpu_rows])
            return np.nan_to_num(np.concatenate([r_gpu, r_cpu]), nan=5.0, posinf=5.0, neginf=-5.0)

        power_free = [FreeParam(n, *_GLOBAL_SPECS[n], prior_sd=PRIOR_SD) for n in POWER_PARAMS]
        params, psol = _solve(power_free, params, power_residuals, max_nfev)
        nfev += int(psol.nfev)
        success = success and bool(psol.success)

    params = params.with_values(noise_from_repeats(rows, params))
    params = fit_memory(frame, params)
    resid = time_residuals(params)
    mad_sd = float(1.4826 * np.median(np.abs(resid - np.median(resid))))
    return FitResult(
        params=params,
        free=tuple(p.path for p in time_free + power_free),
        n_rows=len(rows),
        success=success,
        nfev=nfev,
        message=message,
        log_residual_sd=mad_sd,
        power_rows=n_power if power_free else 0,
        start=tuple(p.initial(start) for p in time_free + power_free),
        hyper=dict(sol.hyper),
    )


MEMORY_PARAMS = ("ws_act_bytes_per_flop_train", "ws_act_bytes_per_flop_infer", "gpu_cap_overhead_mib", "ws_weight_mult_train")
MEMORY_MARGIN = 0.1
"""Logistic scale (log units) of the cap-vs-working-set margin in the memory fit."""


def capped_gpu_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """GPU rows run under an explicit cap or that hit OOM, with ``ran`` (bool)."""
    feasible = frame["feasible"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    reason = frame["infeasible_reason"].astype("string").fillna("").to_numpy(dtype=object)
    gpu = (frame["device"].astype(str) == "gpu").to_numpy()
    capped = frame["gpu_mem_cap_mib"].notna().to_numpy(dtype=bool)
    keep = gpu & (capped | (reason == "oom")) & (feasible | (reason == "oom"))
    rows = frame.loc[keep].reset_index(drop=True).copy()
    rows["ran"] = feasible[keep]
    rows["_time_s"] = 1.0
    return rows


def _memory_margin(arr: _Arrays, params: PerfParams) -> npt.NDArray[np.float64]:
    """log(cap / working set); for uncapped rows log(GPU memory - context / working set)."""
    ws = arr.predict(params).working_set_mib
    mem = arr.columns["hw_gpu_mem_gib"] * 1024.0 - params.gpu_context_mib
    cap = np.where(np.isfinite(arr.caps), arr.caps, mem)
    return np.asarray(np.log(cap) - np.log(np.maximum(ws, 1e-9)), dtype=np.float64)


def fit_memory(frame: pd.DataFrame, params: PerfParams) -> PerfParams:
    """Fit the working-set constants (:data:`MEMORY_PARAMS`) to which capped GPU runs ran and
    which hit OOM: logistic loss on the log margin between cap and working set, weak prior.
    Returns ``params`` unchanged when the rows have no OOM or no capped run."""
    rows = capped_gpu_rows(frame)
    if rows.empty or rows["ran"].all() or not rows["ran"].any():
        return params
    arr = _Arrays.of(rows)
    sign = np.where(rows["ran"].to_numpy(dtype=bool), 1.0, -1.0)
    x0 = np.log([params.get(n) for n in MEMORY_PARAMS])

    def values(x: npt.NDArray[np.float64]) -> dict[str, float]:
        v = dict(zip(MEMORY_PARAMS, np.exp(x).tolist(), strict=True))
        v["ws_weight_mult_train"] = max(v["ws_weight_mult_train"], 1.0)  # at least the weights
        return v

    def loss(x: npt.NDArray[np.float64]) -> float:
        margin = _memory_margin(arr, params.with_values(values(x)))
        data = np.logaddexp(0.0, -sign * margin / MEMORY_MARGIN).mean()
        return float(data + 0.5 * np.sum(((x - x0) / PRIOR_SD) ** 2) / len(rows))

    sol = minimize(loss, x0, method="Powell", options={"xtol": 1e-4, "ftol": 1e-8, "maxfev": 4000})
    return params.with_values(values(np.asarray(sol.x, dtype=np.float64)))


def noise_from_repeats(rows: pd.DataFrame, params: PerfParams) -> dict[str, float]:
    """Noise constants from the recorded repeat spread: ``time_cv ~ a + b * overhead_share``
    (least squares, both >= 0). Empty when fewer than 10 rows record ``time_cv``."""
    if "time_cv" not in rows.columns:
        return {}
    cv = rows["time_cv"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    ok = np.isfinite(cv)
    if ok.sum() < 10:
        return {}
    arr = _Arrays.of(rows.loc[ok].reset_index(drop=True))
    share = _overhead_share(arr, params)
    design = np.column_stack([np.ones(share.shape[0]), share])
    coef, *_ = np.linalg.lstsq(design, cv[ok], rcond=None)
    a, b = float(max(coef[0], 0.0)), float(max(coef[1], 0.0))
    if a == 0.0 and coef[1] <= 0:
        a = float(np.median(cv[ok]))
    return {"noise_time_sigma": a, "noise_overhead_sigma": b}


def _overhead_share(arr: _Arrays, params: PerfParams) -> npt.NDArray[np.float64]:
    """Share of each row's predicted time that is not roofline work (0 compute-bound, 1 overhead-bound)."""
    full = arr.predict(params).time_per_batch_s
    lean = arr.predict(
        params.with_values(
            {"batch_overhead_s": 0.0, "train_step_overhead_s": 0.0, "cpu_op_overhead_s": 0.0, "gpu_launch_overhead_s": 0.0, "gpu_kernel_min_s": 0.0,
             "gpu_sync_overhead_s": 0.0, "transfer_latency_s": 0.0, "cpu_thread_sync_s": 0.0}
        )
    ).time_per_batch_s
    return np.clip(1.0 - lean / full, 0.0, 1.0)


# --------------------------------------------------------------------------- error


def row_errors(frame: pd.DataFrame, params: PerfParams) -> pd.DataFrame:
    """Per usable row: device, family, model, target, measured and predicted time, relative error."""
    rows = fit_rows(frame)
    pred = _Arrays.of(rows).predict(params)
    out = rows[["job_id", "target_id", "device", "family", "mode", "batch_size", "cpu_cores"]].copy()
    out["model"] = rows["model"].astype(str) if "model" in rows.columns else "job"
    out["measured_s"] = rows["_time_s"].to_numpy()
    out["predicted_s"] = pred.time_per_batch_s
    out["rel_err"] = (out["predicted_s"] - out["measured_s"]) / out["measured_s"]
    out["predicted_feasible"] = pred.feasible
    return out


def summarise(errors: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """``n``, median absolute relative error and share within +-25%, overall or per group."""

    def stats(g: pd.DataFrame) -> pd.Series:
        a = g["rel_err"].abs()
        return pd.Series({"n": len(g), "median_abs_rel_err": float(a.median()), "within_25pct": float((a <= WITHIN).mean())})

    if not by:
        return stats(errors).to_frame().T
    return pd.DataFrame({k: stats(g) for k, g in errors.groupby(list(by), sort=True)}).T.rename_axis(list(by)).reset_index()


def cross_validate(
    frame: pd.DataFrame,
    split: Literal["random", "model", "architecture"],
    folds: int = 5,
    seed: int = 0,
    initial: PerfParams | None = None,
    max_nfev: int = 400,
) -> pd.DataFrame:
    """Held-out errors: fit on K-1 folds, predict the K-th, for every fold.

    ``split='random'`` folds rows at random; ``split='model'`` folds whole models (all rows
    of a ``model`` name fall in one fold), so each error is of a network the fit never saw
    on that input; ``split='architecture'`` folds whole architectures (every input of
    ``resnet18``), so the fit saw no run of it at all and its name-keyed overrides fall
    back to the family's.
    Returns :func:`row_errors` rows plus ``fold``.
    """
    rows = fit_rows(frame).drop(columns="_time_s")
    rng = np.random.default_rng(seed)
    if split == "random":
        fold_of = rng.permutation(np.arange(len(rows)) % folds)
    elif split in ("model", "architecture"):
        if "model" not in rows.columns:
            raise ValueError(f"split='{split}' needs a 'model' column naming each row's network")
        groups = rows["model"].astype(str)
        if split == "architecture":
            groups = groups.map(architecture)
        models = np.array(sorted(groups.unique()))
        if len(models) < folds:
            raise ValueError(f"split='{split}' with {folds} folds needs >= {folds} distinct groups, got {len(models)}")
        assign = dict(zip(rng.permutation(models), np.arange(len(models)) % folds, strict=True))
        fold_of = groups.map(assign).to_numpy()
    else:
        raise ValueError(f"split must be 'random' or 'model', got {split!r}")
    parts = []
    for k in range(folds):
        train, test = rows[fold_of != k], rows[fold_of == k]
        if test.empty:
            continue
        fit = fit_params(train, initial, max_nfev=max_nfev)
        err = row_errors(test, fit.params)
        err["fold"] = k
        parts.append(err)
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- the whole run


@dataclass
class CalibrationResult:
    """Everything the report shows: the final fit, held-out errors, provenance."""

    fit: FitResult
    initial: PerfParams
    held_out: dict[str, pd.DataFrame]  # split -> row errors
    in_sample: pd.DataFrame
    uncalibrated: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)
    power_errors: pd.DataFrame | None = None
    oom: pd.DataFrame | None = None

    def headline(self, split: str = "model") -> dict[str, float]:
        """Held-out time error under ``split``: rows, median |relative error| and the share within 25 %."""
        s = summarise(self.held_out[split]).iloc[0]
        return {"n": int(s["n"]), "median_abs_rel_err": float(s["median_abs_rel_err"]), "within_25pct": float(s["within_25pct"])}

    def summary_text(self) -> str:
        """A few lines for the console: the fit and the held-out error of every split."""
        lines = [f"calibrated on {self.fit.n_rows} rows, {len(self.fit.free)} free constants (success={self.fit.success})"]
        for split in self.held_out:
            h = self.headline(split)
            verdict = "meets" if h["median_abs_rel_err"] <= TARGET_MEDIAN_ERR else "MISSES"
            lines.append(
                f"held-out ({split} split): median |rel err| {h['median_abs_rel_err']:.1%}, "
                f"within +-25% {h['within_25pct']:.1%} of {h['n']} rows -- {verdict} the 15% target"
            )
        return "\n".join(lines)


def power_errors(frame: pd.DataFrame, params: PerfParams) -> pd.DataFrame:
    """Relative error of modelled vs measured average power (rows with measured power)."""
    rows = fit_rows(frame)
    arr = _Arrays.of(rows)
    pred = arr.predict(params)
    parts = []
    for kind, mask, meas, p in (
        ("gpu", arr.gpu_power_measured & (arr.device == "gpu"), arr.gpu_power_w, pred.avg_gpu_power_w),
        ("cpu", arr.cpu_power_measured, arr.cpu_power_w, pred.avg_cpu_power_w),
    ):
        if mask.any():
            parts.append(pd.DataFrame({"power": kind, "device": arr.device[mask], "family": rows.loc[mask, "family"].astype(str).to_numpy(),
                                       "measured_w": meas[mask], "predicted_w": p[mask],
                                       "rel_err": (p[mask] - meas[mask]) / meas[mask]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["power", "device", "family", "measured_w", "predicted_w", "rel_err"])


def oom_agreement(frame: pd.DataFrame, params: PerfParams) -> pd.DataFrame:
    """Measured vs predicted feasibility of every GPU row with an explicit cap or a measured
    OOM: counts per (measured, predicted) outcome, each ``'ran'`` or ``'oom'``."""
    rows = capped_gpu_rows(frame)
    if rows.empty:
        return pd.DataFrame(columns=["measured", "predicted", "n"])
    pred = _Arrays.of(rows).predict(params)
    out = pd.DataFrame({
        "measured": np.where(rows["ran"].to_numpy(dtype=bool), "ran", "oom"),
        "predicted": np.where(pred.feasible, "ran", "oom"),
    })
    return out.value_counts().rename("n").reset_index().sort_values(["measured", "predicted"]).reset_index(drop=True)


def calibrate_frame(
    frame: pd.DataFrame,
    seed: int = 0,
    folds: int = 5,
    initial: PerfParams | None = None,
    provenance: Mapping[str, Any] | None = None,
    max_nfev: int = 400,
) -> CalibrationResult:
    """Cross-validate (random rows, whole models), then fit on all rows."""
    start = initial or PerfParams()
    held_out = {"random": cross_validate(frame, "random", folds, seed, start, max_nfev)}
    models = frame["model"].astype(str) if "model" in frame.columns else pd.Series(dtype=str)
    if models.nunique() >= folds:
        held_out["model"] = cross_validate(frame, "model", folds, seed, start, max_nfev)
    if models.map(architecture).nunique() >= folds:
        held_out["architecture"] = cross_validate(frame, "architecture", folds, seed, start, max_nfev)
    fit = fit_params(frame, start, max_nfev=max_nfev)
    return CalibrationResult(
        fit=fit,
        initial=start,
        held_out=held_out,
        in_sample=row_errors(frame, fit.params),
        uncalibrated=row_errors(frame, start),
        provenance=dict(provenance or {}),
        power_errors=power_errors(frame, fit.params),
        oom=oom_agreement(frame, fit.params),
    )


def calibrate_traces(
    paths: Sequence[Path],
    params_out: Path | None = None,
    seed: int = 0,
    folds: int = 5,
    max_nfev: int = 400,
) -> CalibrationResult:
    """Read measured traces, calibrate, write the parameters to ``params_out`` (when given) and
    return the result. The Markdown report of a result is written by
    ``experiments/calibration_report.py`` (``placement calibrate --report``)."""
    from placement.core.trace import read_traces

    frame, hashes = read_traces([Path(p) for p in paths])
    sources = sorted(frame["source"].astype(str).unique())
    provenance = {
        "traces": hashes,
        "sources": sources,
        "targets": sorted(frame["target_id"].astype(str).unique()),
        "seed": seed,
        "folds": folds,
        "max_nfev": max_nfev,
        "code_version": code_version(),
        "rows": int(len(frame)),
    }
    result = calibrate_frame(frame, seed=seed, folds=folds, provenance=provenance, max_nfev=max_nfev)
    result.provenance["held_out"] = {k: result.headline(k) for k in result.held_out}
    if params_out is not None:
        save_params(result.fit.params, Path(params_out), result.provenance | {"free": list(result.fit.free)})
    return result

