"""Temperature scaling of the policy's P(GPU) (Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017, https://arxiv.org/abs/1706.04599).

A DNN trained to separate the two devices answers with P(GPU) near 0 or 1 even on architectures
it has never seen, where it is right far less often than that says (issue 12: expected
calibration error 0.086 on held-out architectures). One scalar ``T`` divides the logit,
``P = sigmoid(logit / T)``: the answers (which side of 0.5) never change, only how sure they
claim to be. ``T`` is fitted by log-loss on predictions for architectures the network did
*not* train on (:func:`fit_temperature` on grouped out-of-fold logits), so it measures the
confidence the policy deserves on an unseen architecture -- never on the rows it is scored on.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

T_MIN, T_MAX = 0.25, 20.0
"""Bounds of a fitted temperature (a bounded 1-D search on log T)."""
_EPS = 1e-7


def logit(p: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """log(p / (1 - p)), with ``p`` clipped away from 0 and 1."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.asarray(np.log(q) - np.log1p(-q), dtype=np.float64)


def scale(p: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """P(GPU) at ``temperature``: sigmoid(logit(p) / T); ``T = 1`` returns ``p`` unchanged."""
    arr = np.asarray(p, dtype=np.float64)
    if temperature == 1.0:
        return arr
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return np.asarray(1.0 / (1.0 + np.exp(-logit(arr) / temperature)), dtype=np.float64)


def log_loss(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Mean binary log-loss (nats) of probabilities ``p`` for labels ``y`` (True = GPU)."""
    yy = np.asarray(y, dtype=bool)
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return float(-np.mean(np.where(yy, np.log(q), np.log1p(-q))))


def fit_temperature(p: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """The temperature in [:data:`T_MIN`, :data:`T_MAX`] minimising the log-loss of
    ``scale(p, T)`` against ``y``. ``p`` must be predictions for rows the model did not train on."""
    from scipy.optimize import minimize_scalar

    pp = np.asarray(p, dtype=np.float64).reshape(-1)
    yy = np.asarray(y, dtype=bool).reshape(-1)
    if pp.shape != yy.shape or pp.size == 0:
        raise ValueError(f"need as many labels as predictions (> 0), got {pp.size} and {yy.size}")
    if not np.all(np.isfinite(pp)):
        raise ValueError("predictions must be finite")

    def loss(log_t: float) -> float:
        return log_loss(yy, scale(pp, math.exp(log_t)))

    res = minimize_scalar(loss, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
                          options={"xatol": 1e-4})
    return float(math.exp(res.x))
