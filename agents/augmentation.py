"""Training rows for the estimate features: the same jobs under other thresholds and sources.

The policy decides on the estimate's threshold margins (:mod:`placement.model.estimate`), which
at serving time come from the performance model, from the job signature's history or from
a probe, at the request's thresholds. A trace labelled at one joint threshold with
model-source margins only would teach the policy neither that a margin measured with
sigma 0.1 is nearly the answer nor that the answer moves with ``T_t``/``T_e``.
:func:`estimate_augmentation` therefore adds, for every labelled row, ``copies`` rows
that keep the row's job and target features and change only the estimate features and
the label:

* the thresholds are drawn log-uniformly (``T_t`` in [1, 8], ``T_e`` in [0.5, 4]) for half
  of the copies and kept at the trace's for the rest; the label is the joint threshold
  applied to the row's *measured* speedup and energy ratio at those thresholds;
* the estimate is either the performance model's (sigma :data:`placement.model.estimate.SIGMA_MODEL_TIME`)
  or a measurement-like one: the measured speedup and ratio times ``exp(N(0, s))`` with
  ``s`` drawn log-uniformly from [0.03, 0.6] and reported as the margin sigma (a probe is
  about 0.1; history at other batch sizes 0.1-0.4; a model-grade guess 0.6).

Rows whose energy ratio is unknown, or whose CPU run failed, are not augmented. The
GPU-infeasible rows (measured OOM) keep ``est_gpu_feasible = 0`` and their CPU label.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from placement.agents.baselines import pairs_features
from placement.agents.evaluation import LabelledSet
from placement.model.estimate import INFEASIBLE_MARGIN, MARGIN_CLIP, SIGMA_MODEL_TIME
from placement.model.features import ESTIMATE_COLUMNS, estimate_columns

T_T_RANGE = (1.0, 8.0)
T_E_RANGE = (0.5, 4.0)
SIGMA_RANGE = (0.03, 0.6)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> npt.NDArray[np.float64]:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def estimate_augmentation(data: LabelledSet, copies: int, seed: int, speedup_min: float,
                          energy_ratio_max: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], dict[str, Any]]:
    """``copies`` augmented rows per usable labelled row (see the module docstring).

    Returns raw features ``(m, N_FEATURES)``, labels ``(m,)`` and a summary for the model's
    metadata. ``speedup_min``/``energy_ratio_max``: the trace's thresholds (kept for half the copies)."""
    pairs = data.pairs
    speedup = pairs["speedup"].to_numpy(dtype=np.float64)
    ratio = pairs["energy_ratio"].to_numpy(dtype=np.float64)
    gpu_ok = pairs["gpu_feasible"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    cpu_ok = pairs["cpu_feasible"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    usable = cpu_ok & (~gpu_ok | (np.isfinite(speedup) & np.isfinite(ratio) & (speedup > 0) & (ratio > 0)))
    idx = np.flatnonzero(usable)
    summary = {"copies": copies, "seed": seed, "rows": int(idx.size), "t_t_range": list(T_T_RANGE),
               "t_e_range": list(T_E_RANGE), "sigma_range": list(SIGMA_RANGE)}
    if copies <= 0 or idx.size == 0:
        return np.zeros((0, data.x.shape[1]), np.float32), np.zeros(0, bool), summary
    rng = np.random.default_rng([seed, 12])
    rep = np.repeat(idx, copies)
    m = rep.size
    frame = pairs.iloc[rep].reset_index(drop=True)
    keep_th = rng.random(m) < 0.5
    t_t = np.where(keep_th, speedup_min, _log_uniform(rng, *T_T_RANGE, m))
    t_e = np.where(keep_th, energy_ratio_max, _log_uniform(rng, *T_E_RANGE, m))
    s_true, r_true, g_ok = speedup[rep], ratio[rep], gpu_ok[rep]
    label = g_ok & (s_true >= t_t) & (r_true <= t_e)

    measured_like = rng.random(m) < 0.6
    sigma = _log_uniform(rng, *SIGMA_RANGE, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_t = np.log(s_true / t_t) + rng.standard_normal(m) * sigma
        m_e = np.log(t_e / r_true) + rng.standard_normal(m) * sigma
    m_t = np.clip(np.where(g_ok, m_t, INFEASIBLE_MARGIN), -MARGIN_CLIP, MARGIN_CLIP)
    m_e = np.clip(np.where(g_ok, m_e, INFEASIBLE_MARGIN), -MARGIN_CLIP, MARGIN_CLIP)

    cols: dict[str, Any] = {c: frame[c].to_numpy() for c in frame.columns}
    cols["cpu_cores"] = frame["hw_cpu_cores"].to_numpy(dtype=np.float64)
    cols["hw_unified_memory"] = frame["hw_unified_memory"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    cols["hw_host_link_gbs"] = frame["hw_host_link_gbs"].astype("Float64").fillna(0.0).to_numpy(dtype=np.float64)
    cols["threshold_speedup_min"] = t_t
    cols["threshold_energy_ratio_max"] = t_e
    model = estimate_columns(cols)
    est = {
        "est_margin_speedup": np.where(measured_like, m_t, model["est_margin_speedup"]),
        "est_margin_energy": np.where(measured_like, m_e, model["est_margin_energy"]),
        "est_margin_sigma": np.where(measured_like, sigma, SIGMA_MODEL_TIME * np.ones(m)),
        "est_gpu_feasible": np.where(measured_like, g_ok.astype(np.float64), model["est_gpu_feasible"]),
    }
    out = frame.copy()
    for c in ESTIMATE_COLUMNS:
        out[c] = est[c]
    x = pairs_features(pd.DataFrame(out))
    summary.update(augmented_rows=int(m), measured_like_share=float(measured_like.mean()),
                   gpu_label_share=float(label.mean()))
    return x, np.asarray(label, dtype=bool), summary


def with_augmentation(x: npt.NDArray[np.float32], y: npt.NDArray[np.bool_], knob_kwargs: dict[str, Any],
                      x_aug: npt.NDArray[np.float32], y_aug: npt.NDArray[np.bool_]) -> tuple[
                          npt.NDArray[np.float32], npt.NDArray[np.bool_], dict[str, Any]]:
    """Append augmented rows to a training set; their knob labels are unknown (NaN / -1)."""
    if x_aug.shape[0] == 0:
        return x, y, knob_kwargs
    out = dict(knob_kwargs)
    for key in ("core_labels", "cap_labels"):
        if out.get(key) is None:
            continue
        arr = np.asarray(out[key])
        fill = np.nan if arr.dtype.kind == "f" else -1
        out[key] = np.concatenate([arr, np.full((x_aug.shape[0], *arr.shape[1:]), fill, dtype=arr.dtype)])
    return np.concatenate([x, x_aug]).astype(np.float32), np.concatenate([y, y_aug]), out
