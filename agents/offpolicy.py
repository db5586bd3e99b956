"""Off-policy estimates of a policy's mean reward from logged bandit data, with confidence intervals.

After Vowpal Wabbit's estimators (``vowpalwabbit/estimators``) and Dudík, Langford & Li,
"Doubly Robust Policy Evaluation and Learning" (ICML 2011, https://arxiv.org/abs/1103.4601).
Logged data: for each row ``i`` the action taken ``a_i`` (0 = CPU, 1 = GPU), its logging
propensity ``p_i = mu(a_i | x_i)`` (stored with every decision), and the observed reward
``r_i``. A target policy is given by its action probabilities ``pi(a | x_i)``, shape
``(n, 2)`` (a deterministic policy: one-hot rows).

* :func:`snips` -- self-normalised importance sampling, ``sum w_i r_i / sum w_i`` with
  ``w_i = pi(a_i|x_i) / p_i``; interval by the delta method.
* :func:`doubly_robust` -- ``mean_i [ sum_a pi(a|x_i) rhat_i(a) + w_i (r_i - rhat_i(a_i)) ]``
  with a reward model ``rhat`` ``(n, 2)``; unbiased when either the propensities or the
  reward model are right; interval from the per-row terms.
* :func:`paired_difference` -- the difference of two policies' DR estimates on the same rows
  (per-row terms subtracted first, so what both policies answer alike cancels): the gate's
  bound.

Intervals are two-sided at ``confidence`` (Student t on ``n - 1`` degrees of freedom); their
coverage on synthetic logs is tested (``tests/test_offpolicy.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate: ``value`` within [``lower``, ``upper``] at ``confidence``;
    ``n`` rows, ``effective_n`` = (sum w)^2 / sum w^2 of the importance weights."""

    method: str
    value: float
    lower: float
    upper: float
    confidence: float
    n: int
    effective_n: float

    def to_dict(self) -> dict[str, Any]:
        """The estimate as a dict, finite floats rounded to 6 decimals."""
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}


def _check(action: npt.ArrayLike, propensity: npt.ArrayLike, target: npt.ArrayLike,
           ) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray]:
    a = np.asarray(action, dtype=np.int64).reshape(-1)
    p = np.asarray(propensity, dtype=np.float64).reshape(-1)
    t = np.asarray(target, dtype=np.float64)
    if t.ndim != 2 or t.shape != (len(a), 2) or len(p) != len(a):
        raise ValueError(f"need action (n,), propensity (n,), target probabilities (n, 2); got {a.shape}, {p.shape}, {t.shape}")
    if len(a) == 0:
        raise ValueError("no logged rows to estimate from")
    if not np.all((a == 0) | (a == 1)):
        raise ValueError("actions must be 0 (CPU) or 1 (GPU)")
    if not np.all(np.isfinite(p) & (p > 0) & (p <= 1)):
        raise ValueError("propensities must be in (0, 1]")
    return a, p, t


def _t(confidence: float, n: int) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, max(n - 1, 1)))


def importance_weights(action: npt.ArrayLike, propensity: npt.ArrayLike, target: npt.ArrayLike) -> FloatArray:
    """``w_i = pi(a_i | x_i) / p_i``."""
    a, p, t = _check(action, propensity, target)
    return t[np.arange(len(a)), a] / p


def _effective_n(w: FloatArray) -> float:
    s2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / s2 if s2 > 0 else 0.0


def snips(reward: npt.ArrayLike, action: npt.ArrayLike, propensity: npt.ArrayLike, target: npt.ArrayLike,
          confidence: float = 0.9) -> Estimate:
    """Self-normalised IPS with a delta-method interval. Rows the target never takes get weight 0;
    when every weight is 0 the estimate is NaN."""
    r = np.asarray(reward, dtype=np.float64).reshape(-1)
    w = importance_weights(action, propensity, target)
    n = len(r)
    total = float(w.sum())
    if total <= 0:
        return Estimate("snips", math.nan, math.nan, math.nan, confidence, n, 0.0)
    value = float(np.sum(w * r) / total)
    # delta method for a ratio estimator: var = sum w_i^2 (r_i - V)^2 / (sum w)^2 (times n/(n-1))
    var = float(np.sum(w * w * (r - value) ** 2)) / total**2 * (n / max(n - 1, 1))
    half = _t(confidence, n) * math.sqrt(var)
    return Estimate("snips", value, value - half, value + half, confidence, n, _effective_n(w))


def dr_terms(reward: npt.ArrayLike, action: npt.ArrayLike, propensity: npt.ArrayLike, target: npt.ArrayLike,
             reward_hat: npt.ArrayLike) -> FloatArray:
    """Per-row doubly robust terms (their mean is the DR estimate)."""
    a, p, t = _check(action, propensity, target)
    r = np.asarray(reward, dtype=np.float64).reshape(-1)
    rh = np.asarray(reward_hat, dtype=np.float64)
    if rh.shape != t.shape or len(r) != len(a):
        raise ValueError(f"reward (n,) and reward_hat (n, 2) needed; got {r.shape}, {rh.shape}")
    rows = np.arange(len(a))
    w = t[rows, a] / p
    return np.sum(t * rh, axis=1) + w * (r - rh[rows, a])


def mean_interval(terms: npt.ArrayLike, confidence: float = 0.9, method: str = "mean",
                  weights: npt.ArrayLike | None = None, row_weights: npt.ArrayLike | None = None) -> Estimate:
    """Mean of per-row terms with a Student-t interval. ``row_weights`` (e.g. recency) make it a
    weighted mean, its variance ``sum v^2 (x - mean)^2 / (sum v)^2`` on ``n_eff - 1`` degrees of
    freedom, ``n_eff = (sum v)^2 / sum v^2``; ``weights`` (importance weights) only report their
    effective sample size."""
    x = np.asarray(terms, dtype=np.float64).reshape(-1)
    n = len(x)
    if n == 0:
        raise ValueError("no terms")
    if row_weights is None:
        value = float(x.mean())
        sd = float(x.std(ddof=1)) if n > 1 else math.inf
        half = _t(confidence, n) * sd / math.sqrt(n)
        eff = _effective_n(np.asarray(weights, dtype=np.float64)) if weights is not None else float(n)
        return Estimate(method, value, value - half, value + half, confidence, n, eff)
    v = np.asarray(row_weights, dtype=np.float64).reshape(-1)
    if v.shape != x.shape or not np.all(np.isfinite(v) & (v >= 0)) or v.sum() <= 0:
        raise ValueError("row_weights must be finite, >= 0, not all 0, one per term")
    total = float(v.sum())
    value = float(np.sum(v * x) / total)
    n_eff = _effective_n(v)
    var = float(np.sum(v * v * (x - value) ** 2)) / total**2 * (n_eff / max(n_eff - 1, 1e-9)) if n_eff > 1 else math.inf
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, max(n_eff - 1, 1))) * math.sqrt(var)
    return Estimate(method, value, value - half, value + half, confidence, n, n_eff)


def doubly_robust(reward: npt.ArrayLike, action: npt.ArrayLike, propensity: npt.ArrayLike, target: npt.ArrayLike,
                  reward_hat: npt.ArrayLike, confidence: float = 0.9, row_weights: npt.ArrayLike | None = None,
                  ) -> Estimate:
    """The DR estimate (Dudík et al. 2011) with a t interval over its per-row terms (optionally
    weighted per row, e.g. by recency)."""
    terms = dr_terms(reward, action, propensity, target, reward_hat)
    return mean_interval(terms, confidence, "doubly_robust", importance_weights(action, propensity, target),
                         row_weights)


def paired_difference(terms_a: npt.ArrayLike, terms_b: npt.ArrayLike, confidence: float = 0.9,
                      row_weights: npt.ArrayLike | None = None) -> Estimate:
    """``a - b`` from per-row terms on the same rows (e.g. :func:`dr_terms` of two policies)."""
    a = np.asarray(terms_a, dtype=np.float64).reshape(-1)
    b = np.asarray(terms_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError("paired terms must have the same rows")
    return mean_interval(a - b, confidence, "paired_difference", row_weights=row_weights)


def one_hot(actions: npt.ArrayLike) -> FloatArray:
    """Action probabilities ``(n, 2)`` of a deterministic policy."""
    a = np.asarray(actions, dtype=np.int64).reshape(-1)
    out = np.zeros((len(a), 2))
    out[np.arange(len(a)), a] = 1.0
    return out
