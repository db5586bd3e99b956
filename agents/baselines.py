"""Paper A's baselines (Table 5) and the Oracle every policy is measured against.

* :class:`CpuOnlyPolicy`, :class:`GpuOnlyPolicy` -- always one device;
* :class:`RandomPolicy` -- GPU with probability ``p_gpu`` (0.5 in paper A), seeded;
* :class:`RuleBasedPolicy` -- paper A's "Rule-based (FLOPs)": GPU when the job's FLOPs
  and input size exceed thresholds. Paper A does not give its thresholds; ours are fitted
  on training data (:meth:`RuleBasedPolicy.fit`: exhaustive search over quantile cut
  points of log10 FLOPs per batch and log10 input bytes per sample, combined by AND or
  OR, maximising training accuracy). The rule sees no hardware -- that is its weakness;
* :class:`OraclePolicy` -- the joint threshold applied to the *true* outcomes of a
  labelled frame (:func:`placement.core.trace.pair_outcomes`): the ceiling. It answers only
  for (job, target) rows it was built from, and says so otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from placement.agents.policy import Policy, as_batch
from placement.model.features import FEATURE_INDEX, feature_matrix

_FLOPS = FEATURE_INDEX["log10_flops_per_batch"]
_INPUT = FEATURE_INDEX["log10_input_bytes_per_sample"]
_HAS_GPU = FEATURE_INDEX["has_gpu"]


class CpuOnlyPolicy(Policy):
    """Always the CPU."""

    name = "cpu_only"

    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """0 for every row: this baseline always picks the CPU."""
        batch, _ = as_batch(obs)
        return np.zeros(batch.shape[0])


class GpuOnlyPolicy(Policy):
    """Always the GPU (where the target has one)."""

    name = "gpu_only"

    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """1 for every row whose target has a GPU, 0 where it has none."""
        batch, _ = as_batch(obs)
        return (batch[:, _HAS_GPU] > 0.5).astype(np.float64)


class RandomPolicy(Policy):
    """GPU with probability ``p_gpu`` per decision, from a seeded generator.

    ``gpu_probability`` returns the drawn choice (0.0 or 1.0), so ``predict`` and the
    evaluation agree on what the policy did.
    """

    name = "random"

    def __init__(self, p_gpu: float = 0.5, seed: int = 0) -> None:
        if not 0.0 <= p_gpu <= 1.0:
            raise ValueError(f"p_gpu must be in [0, 1], got {p_gpu}")
        self.p_gpu = p_gpu
        self.rng = np.random.default_rng(seed)

    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """1 with probability ``p_gpu`` per row (from the policy's generator) where the target has a
        GPU, else 0."""
        batch, _ = as_batch(obs)
        draw = self.rng.random(batch.shape[0]) < self.p_gpu
        return (draw & (batch[:, _HAS_GPU] > 0.5)).astype(np.float64)


@dataclass(frozen=True)
class Rule:
    """GPU iff ``log10 FLOPs/batch >= flops_log10`` (AND | OR) ``log10 input bytes/sample >= input_log10``."""

    flops_log10: float
    input_log10: float
    combine: str  # "and" | "or"
    train_accuracy: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The fitted rule as JSON-ready values: log10 cut points, how they combine and the training
        accuracy."""
        return {"flops_log10": self.flops_log10, "input_log10": self.input_log10, "combine": self.combine,
                "train_accuracy": self.train_accuracy}


class RuleBasedPolicy(Policy):
    """Paper A's rule-based baseline with thresholds fitted on training data."""

    name = "rule_based"

    def __init__(self, rule: Rule) -> None:
        if rule.combine not in ("and", "or"):
            raise ValueError(f"rule combine must be 'and' or 'or', got '{rule.combine}'")
        self.rule = rule

    @classmethod
    def fit(cls, x_raw: npt.ArrayLike, y_gpu: npt.ArrayLike, n_cuts: int = 41) -> RuleBasedPolicy:
        """Thresholds maximising accuracy on ``(x_raw, y_gpu)``; ties go to the earliest
        (lowest) cut points. ``n_cuts`` quantiles per feature, plus +-inf (feature unused)."""
        x = np.asarray(x_raw, dtype=np.float64)
        y = np.asarray(y_gpu, dtype=bool)
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise ValueError("RuleBasedPolicy.fit needs raw features (n, N_FEATURES) and n labels, n > 0")
        f, i = x[:, _FLOPS], x[:, _INPUT]
        qs = np.linspace(0, 1, n_cuts)
        fc = np.unique(np.concatenate([[-np.inf, np.inf], np.quantile(f, qs)]))
        ic = np.unique(np.concatenate([[-np.inf, np.inf], np.quantile(i, qs)]))
        fge = f[None, :] >= fc[:, None]  # (n_fc, n)
        ige = i[None, :] >= ic[:, None]  # (n_ic, n)
        candidates = []
        for combine in ("and", "or"):
            pred = (fge[:, None, :] & ige[None, :, :]) if combine == "and" else (fge[:, None, :] | ige[None, :, :])
            acc = (pred == y[None, None, :]).mean(axis=2)
            a, b = np.unravel_index(int(np.argmax(acc)), acc.shape)
            candidates.append(Rule(float(fc[a]), float(ic[b]), combine, float(acc[a, b])))
        return cls(max(candidates, key=lambda r: r.train_accuracy))

    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """1 where the rule passes (log10 FLOPs and log10 input bytes against their cut points,
        combined by ``and``/``or``) and the target has a GPU, else 0."""
        batch, _ = as_batch(obs)
        f = batch[:, _FLOPS] >= self.rule.flops_log10
        i = batch[:, _INPUT] >= self.rule.input_log10
        gpu = (f & i) if self.rule.combine == "and" else (f | i)
        return (gpu & (batch[:, _HAS_GPU] > 0.5)).astype(np.float64)


def pairs_features(pairs: pd.DataFrame) -> npt.NDArray[np.float32]:
    """Raw feature rows of a labelled frame (:func:`placement.core.trace.pair_outcomes`) at default
    knobs (all of the target's cores)."""
    cols: dict[str, Any] = {c: pairs[c].to_numpy() for c in pairs.columns}
    if "cpu_cores" not in cols:
        cols["cpu_cores"] = pairs["hw_cpu_cores"].to_numpy(dtype=np.float64)
    for name in ("hw_unified_memory",):
        cols[name] = pairs[name].astype("boolean").fillna(False).to_numpy(dtype=bool)
    for name in ("hw_host_link_gbs",):
        cols[name] = pairs[name].astype("Float64").fillna(0.0).to_numpy(dtype=np.float64)
    return feature_matrix(cols)


class OraclePolicy(Policy):
    """The joint threshold on true outcomes: knows the label of every row it was built from.

    Rows are matched by their exact feature vector; an unknown row raises ``KeyError``
    (the Oracle cannot answer for a job nobody has run).
    """

    name = "oracle"

    def __init__(self, labels: Mapping[bytes, bool]) -> None:
        self.labels = dict(labels)

    @classmethod
    def from_pairs(cls, pairs: pd.DataFrame, x_raw: npt.ArrayLike | None = None) -> OraclePolicy:
        """The Oracle of the labelled ``pairs`` (``label_gpu``), keyed by each row's raw features
        (``x_raw``, or built from the pairs)."""
        x = pairs_features(pairs) if x_raw is None else np.asarray(x_raw, dtype=np.float32)
        y = pairs["label_gpu"].to_numpy(dtype=bool)
        return cls({row.tobytes(): bool(lab) for row, lab in zip(x, y, strict=True)})

    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The measured label (1 = GPU) of each row; ``KeyError`` for a (job, target) the Oracle has
        no outcome for."""
        batch, _ = as_batch(obs)
        out = np.empty(batch.shape[0])
        for k, row in enumerate(np.ascontiguousarray(batch)):
            key = row.tobytes()
            if key not in self.labels:
                raise KeyError("the Oracle has no measured outcome for this (job, target): build it from a frame holding it")
            out[k] = 1.0 if self.labels[key] else 0.0
        return out
