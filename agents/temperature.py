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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class PolicyTemperature:
    """A serving policy's temperature and how it was obtained: ``folds`` grouped refits of the model's
    own recipe (:func:`fit_policy_temperature`), each without a group of measured architectures, predict
    those architectures zero-shot; ``rows`` such predictions fit the temperature. Log-loss (nats) and
    expected calibration error of those predictions before (T = 1) and after."""

    value: float
    rows: int
    folds: int
    seed: int
    log_loss_before: float
    log_loss_after: float
    ece_before: float
    ece_after: float
    held_out: str = "arch"
    code_version: str = ""
    """The code that fitted it (:func:`placement.core.version.code_version`)."""
    method: str = ("grouped refits of the model's recipe; zero-shot P(GPU) on the held-out measured "
                   "architectures; log-loss (Guo et al. 2017)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as the model's metadata stores it (``ModelMetadata.temperature``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyTemperature:
        """Read back from :meth:`to_dict` (unknown keys ignored); ``ValueError`` on a bad value."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        t = cls(**known)
        if not (math.isfinite(t.value) and T_MIN <= t.value <= T_MAX):
            raise ValueError(f"temperature.value must lie in [{T_MIN}, {T_MAX}], got {t.value!r}")
        return t


def fit_policy_temperature(trace_paths: Sequence[Path], settings: Any, folds: int = 4,
                           work_dir: Path | None = None) -> PolicyTemperature:
    """The temperature of the policy that ``settings`` (a :class:`placement.agents.training.TrainSettings`)
    trains from ``trace_paths``: the measured architectures are split into ``folds`` seeded groups; per
    group the whole recipe (DNN, warm PPO) is trained on every row of the other architectures and its
    serving policy predicts the group's measured jobs zero-shot (the performance model without the
    group's per-architecture constants, as for an architecture the service has never seen). Each refit
    goes to a temporary model directory under ``work_dir`` (removed afterwards)."""
    import tempfile
    from dataclasses import replace

    from placement.agents.artifact import load_served
    from placement.agents.dnn import expected_calibration_error
    from placement.agents.evaluation import labelled_set, model_architecture
    from placement.agents.grounding import zero_shot_probability
    from placement.agents.training import train_from_frame
    from placement.core.trace import pair_outcomes, read_traces
    from placement.core.version import code_version

    if folds < 2:
        raise ValueError(f"folds must be >= 2 (grouped refits), got {folds}")
    frame, hashes = read_traces([Path(p) for p in trace_paths])
    data = labelled_set(pair_outcomes(frame, settings.thresholds))
    arch_col = data.pairs["arch"].astype(str).to_numpy()
    is_meas = (data.pairs["source"].astype(str) == "measured").to_numpy()
    archs = sorted(set(arch_col[is_meas]))
    if len(archs) < folds:
        raise ValueError(f"{len(archs)} measured architectures in the traces: need at least {folds} for {folds} folds")
    frame_arch = model_architecture(frame["model"] if "model" in frame.columns else frame["job_id"])
    order = np.random.default_rng([settings.seed, 15]).permutation(len(archs))
    ps: list[npt.NDArray[np.float64]] = []
    ys: list[npt.NDArray[np.bool_]] = []
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for g in range(folds):
            group = [archs[i] for i in order[g::folds]]
            sub = frame[~np.isin(frame_arch, group)].reset_index(drop=True)
            fold_settings = replace(settings, cv_folds=0, version=f"temperature-fold-{g}", progress=False)
            out = train_from_frame(sub, hashes, Path(tmp) / f"fold{g}", fold_settings)
            policy = load_served(out.path).policy
            for a in group:
                rows = np.flatnonzero(is_meas & (arch_col == a))
                raw, usable = zero_shot_probability(policy, data, rows, a, settings.thresholds)
                ps.append(raw[usable])
                ys.append(np.asarray(data.subset(rows).y, dtype=bool)[usable])
    p, y = np.concatenate(ps), np.concatenate(ys)
    t = fit_temperature(p, y)
    return PolicyTemperature(value=t, rows=int(p.size), folds=folds, seed=int(settings.seed), code_version=code_version(),
                             log_loss_before=log_loss(y, p), log_loss_after=log_loss(y, scale(p, t)),
                             ece_before=float(expected_calibration_error(y, p)),
                             ece_after=float(expected_calibration_error(y, scale(p, t))))
