"""The accuracy ceiling of a labelled set: how well a policy must predict a job to place it right.

The joint threshold places a job on the GPU iff its *margin* is positive,
``m = min(ln(speedup / T_t), ln(T_e / energy_ratio))`` (natural-log units;
:func:`placement.core.threshold.joint_threshold`). A policy that predicts a job's GPU time
with a multiplicative error ``exp(-eps)`` (or its CPU time with ``exp(eps)``), powers
known, moves ``ln speedup`` by ``+eps`` and ``ln energy_ratio`` (energy = power x time,
paper A eq. 2) by ``-eps``: its predicted margin is exactly ``m + eps``. With
``eps ~ N(0, sigma^2)`` it places the job right with probability ``Phi(|m| / sigma)``, so
its expected accuracy on a set is ``mean_i Phi(|m_i| / sigma)`` -- analytic, no sampling
(:func:`expected_accuracy`). :func:`sigma_for_accuracy` inverts it: the largest error a
policy may make and still reach a target accuracy.

Two measured counterparts place a real policy or a real measurement on that scale:

* :func:`margin_prediction` -- gradient-boosted trees (scikit-learn) regress the margin
  from the policy features out of fold (held-out families or random rows): how far a
  learned predictor misses, and the ``sigma`` its median error corresponds to
  (``median |error| / 0.6745`` for normal errors).
* :func:`reproducibility` -- the same jobs measured twice: how often the Oracle's own
  label flips, and the ``sigma`` of one measurement's margin (``MAD(m1 - m2) / 0.6745 /
  sqrt(2)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from placement.agents.evaluation import LabelledSet, Split
from placement.core.trace import PAIR_KEYS

NORMAL_MAD = 0.6744897501960817
"""Median of ``|N(0, 1)|``: a normal error's median absolute value is ``NORMAL_MAD * sigma``."""

_ERF = np.frompyfunc(math.erf, 1, 1)


def _margins(margin: npt.ArrayLike) -> npt.NDArray[np.float64]:
    m = np.asarray(margin, dtype=np.float64).reshape(-1)
    if m.size == 0:
        raise ValueError("margin is empty: need at least one labelled job")
    if not np.all(np.isfinite(m)):
        raise ValueError("margin has NaN or infinite values: use the 'margin' column of placement.core.trace.pair_outcomes")
    return m


def _check_sigma(sigma: float) -> float:
    s = float(sigma)
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"sigma (std of the log prediction error) must be a finite number >= 0, got {sigma!r}")
    return s


def expected_accuracy(margin: npt.ArrayLike, sigma: float) -> float:
    """Expected share of jobs placed as the Oracle places them by a policy whose log time
    prediction error is ``N(0, sigma^2)``. A job exactly on the threshold (``m = 0``) counts
    1/2 for any ``sigma > 0``; ``sigma = 0`` is the Oracle (1.0)."""
    m = _margins(margin)
    s = _check_sigma(sigma)
    if s == 0:
        return 1.0
    z = np.abs(m) / (s * math.sqrt(2.0))
    erf = np.asarray(_ERF(z), dtype=np.float64)
    return float(np.mean(0.5 * (1.0 + erf)))


def median_relative_time_error_pct(sigma: float) -> float:
    """The median ``|predicted / true - 1|`` (percent, overestimates) of a log error ``N(0, sigma^2)``."""
    return 100.0 * math.expm1(NORMAL_MAD * _check_sigma(sigma))


@dataclass(frozen=True)
class CeilingPoint:
    """Expected accuracy at one prediction error ``sigma`` (std of the log time error)."""

    sigma: float
    median_relative_time_error_pct: float
    expected_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """The point's fields as a plain dict (JSON-ready)."""
        return asdict(self)


def accuracy_curve(margin: npt.ArrayLike, sigmas: Sequence[float]) -> list[CeilingPoint]:
    """:func:`expected_accuracy` at each ``sigma`` (non-increasing in ``sigma``)."""
    return [CeilingPoint(float(s), median_relative_time_error_pct(s), expected_accuracy(margin, s)) for s in sigmas]


def sigma_for_accuracy(margin: npt.ArrayLike, accuracy: float, *, tol: float = 1e-6) -> float:
    """The largest ``sigma`` at which :func:`expected_accuracy` still reaches ``accuracy`` (bisection).

    ``accuracy`` must lie in ``(0.5, 1)``: every ``sigma`` reaches 1/2 or less as it grows,
    and only the Oracle (``sigma = 0``) reaches 1."""
    m = _margins(margin)
    a = float(accuracy)
    if not (0.5 < a < 1.0):
        raise ValueError(f"accuracy must be in (0.5, 1), got {accuracy!r}")
    lo, hi = 0.0, 1.0
    while expected_accuracy(m, hi) >= a:
        hi *= 2.0
        if hi > 1e6:  # every margin huge: no realistic error flips a label
            return math.inf
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if expected_accuracy(m, mid) >= a:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class MarginPrediction:
    """How far an out-of-fold regression of the margin misses (natural-log units)."""

    split: str
    n: int
    median_abs_error: float
    sigma_equivalent: float
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """The prediction's fields as a plain dict (JSON-ready)."""
        return asdict(self)


def margin_regression(data: LabelledSet, splits: Sequence[Split], seed: int = 0) -> npt.NDArray[np.float64]:
    """Out-of-fold predicted margins: gradient-boosted trees (scikit-learn defaults, ``seed``)
    fitted on each split's training rows (policy features -> margin) and applied to its
    test rows. Rows in no test fold are NaN."""
    from sklearn.ensemble import GradientBoostingRegressor

    m = _margins(data.pairs["margin"].to_numpy(dtype=np.float64))
    pred = np.full(len(data), np.nan)
    for split in splits:
        if len(split.train) < 2:
            raise ValueError(f"split {split.name} has {len(split.train)} training rows: need >= 2 to fit a regression")
        reg = GradientBoostingRegressor(random_state=seed).fit(data.x[split.train], m[split.train])
        pred[split.test] = reg.predict(data.x[split.test])
    return pred


def margin_prediction(data: LabelledSet, splits: Sequence[Split], name: str, seed: int = 0) -> MarginPrediction:
    """:func:`margin_regression` scored on the rows its splits hold out: median absolute margin
    error, its normal-equivalent ``sigma``, and the accuracy of placing by the predicted margin's sign."""
    pred = margin_regression(data, splits, seed)
    rows = np.isfinite(pred)
    if not rows.any():
        raise ValueError("the splits hold out no rows: nothing to score")
    m = data.pairs["margin"].to_numpy(dtype=np.float64)[rows]
    err = np.abs(pred[rows] - m)
    med = float(np.median(err))
    acc = float(np.mean((pred[rows] > 0) == data.y[rows]))
    return MarginPrediction(name, int(rows.sum()), med, med / NORMAL_MAD, acc)


@dataclass(frozen=True)
class Reproducibility:
    """The same (job, target) pairs labelled from two independent measurement runs."""

    n: int
    label_agreement: float
    median_abs_margin_difference: float
    sigma_measurement: float
    flipped: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The result as a plain dict (JSON-ready; ``flipped`` a list)."""
        d = asdict(self)
        d["flipped"] = list(self.flipped)
        return d


def reproducibility(first: pd.DataFrame, second: pd.DataFrame, on: Sequence[str] = PAIR_KEYS) -> Reproducibility:
    """Compare two labelled frames (:func:`placement.core.trace.pair_outcomes`) of the same jobs,
    matched on ``on`` (default ``job_id`` and ``target_id``: the same target measured twice;
    ``("job_id",)`` compares the same jobs on two targets). ``sigma_measurement`` is one run's
    margin noise (robust: ``median |m1 - m2| / NORMAL_MAD / sqrt(2)``; across targets it mixes
    the targets' real difference in)."""
    keys = list(dict.fromkeys(on))
    if not keys or any(k not in PAIR_KEYS for k in keys):
        raise ValueError(f"on must name one or both of {', '.join(PAIR_KEYS)}, got {list(on)}")
    for name, frame in (("first", first), ("second", second)):
        missing = [c for c in (*PAIR_KEYS, "margin", "label_gpu") if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} frame lacks {', '.join(missing)}: build it with placement.core.trace.pair_outcomes")
    cols = [*PAIR_KEYS, "margin", "label_gpu"]
    both = first[cols].merge(second[cols], on=keys, suffixes=("_1", "_2"))
    if both.empty:
        raise ValueError(f"the two frames share no ({', '.join(keys)}) value: nothing to compare")
    m1 = both["margin_1"].to_numpy(dtype=np.float64)
    m2 = both["margin_2"].to_numpy(dtype=np.float64)
    l1 = both["label_gpu_1"].to_numpy(dtype=bool)
    l2 = both["label_gpu_2"].to_numpy(dtype=bool)
    diff = np.abs(m1 - m2)
    med = float(np.median(diff))
    flipped = tuple(sorted("@".join(map(str, k)) for k in both.loc[l1 != l2, keys].itertuples(index=False)))
    return Reproducibility(len(both), float(np.mean(l1 == l2)), med, med / NORMAL_MAD / math.sqrt(2.0), flipped)
