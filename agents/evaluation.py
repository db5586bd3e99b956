"""Evaluation harness: paper A's Table 5 metrics, regret against the Oracle, generalisation splits.

For a policy on a labelled frame (one row per (job, target), :func:`placement.core.trace.pair_outcomes`)
:func:`evaluate_policy` reports:

* ``throughput_vs_cpu_only`` -- geometric mean over jobs of ``t_cpu / t_chosen`` (per-sample
  times; CPU-only = 1.00). Paper A does not say how it aggregates; the geometric mean
  counts every job equally whatever its size.
* ``energy_efficiency_vs_gpu_only`` -- geometric mean of ``e_gpu / e_chosen`` (per-sample
  energy by paper A eq. 2; GPU-only = 1.00; higher is better).
* ``accuracy`` -- share of jobs where the policy's device equals the Oracle's (the joint
  threshold on the true outcomes).
* ``gpu_usage_reduction_pct`` -- ``100 * (1 - GPU jobs / GPU jobs of GPU-only)``.
* ``time_regret_pct`` / ``energy_regret_pct`` -- ``100 * (geomean(x_chosen / x_oracle) - 1)``
  for per-sample time / energy: how much slower / costlier than the Oracle (signed: the
  Oracle trades time for energy, so a policy can beat it on one of the two).
* ``mean_reward`` and ``reward_ratio`` -- :func:`placement.core.threshold.placement_reward`
  and its ratio to the Oracle's mean reward (1.0 = Oracle).

Time metrics use jobs where both devices ran; energy metrics jobs whose both energies are
known. A choice of a device that could not run (CPU for TimeSformer, an OOM GPU) is
counted in ``infeasible_choices`` (and is wrong by accuracy). Every report names how its
energies were obtained (``energy_method``: ``measured``, ``modelled``, or ``mixed``).

Rows on targets without a GPU are dropped by :func:`labelled_set` (there is no choice).

Splits (:func:`random_split`, :func:`group_split`, :func:`leave_one_group_out`) test
generalisation: holding out model families or hardware targets, not just random rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from placement.agents.baselines import pairs_features
from placement.agents.policy import Policy
from placement.core.threshold import Labels, Thresholds, placement_reward
from placement.core.trace import pair_outcomes, read_traces


@dataclass(frozen=True)
class LabelledSet:
    """Labelled jobs: the paired frame, raw features ``x`` ``(n, N_FEATURES)`` and Oracle labels ``y``."""

    pairs: pd.DataFrame
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: npt.ArrayLike) -> LabelledSet:
        """The rows ``idx`` (positions) as a new set."""
        i = np.asarray(idx)
        return LabelledSet(self.pairs.iloc[i].reset_index(drop=True), self.x[i], self.y[i])

    @property
    def labels(self) -> Labels:
        """The rows' joint-threshold labels: GPU choice, speedup, energy ratio, margin,
        energy-unknown flag and reason."""
        p = self.pairs
        return Labels(
            gpu=self.y,
            speedup=p["speedup"].to_numpy(dtype=np.float64),
            energy_ratio=p["energy_ratio"].to_numpy(dtype=np.float64),
            margin=p["margin"].to_numpy(dtype=np.float64),
            energy_unknown=p["energy_unknown"].to_numpy(dtype=bool),
            reason=p["reason"].to_numpy(dtype=str),
        )

    def column(self, name: str) -> npt.NDArray[Any]:
        """Column ``name`` of the paired frame as a numpy array."""
        return self.pairs[name].to_numpy()


def labelled_set(pairs: pd.DataFrame) -> LabelledSet:
    """A :class:`LabelledSet` from :func:`placement.core.trace.pair_outcomes` output (GPU targets only)."""
    required = ("label_gpu", "margin", "speedup", "energy_ratio", "cpu_time_per_sample_s", "gpu_time_per_sample_s")
    missing = [c for c in required if c not in pairs.columns]
    if missing:
        raise ValueError(f"labelled frame lacks {', '.join(missing)}: build it with placement.core.trace.pair_outcomes")
    keep = pairs["hw_gpu_gflops"].astype("float64").to_numpy() > 0
    frame = pairs[keep].reset_index(drop=True)
    if frame.empty:
        raise ValueError("no labelled (job, target) rows on a target with a GPU: nothing to decide")
    frame["arch"] = model_architecture(frame["model"] if "model" in frame.columns else frame["job_id"])
    return LabelledSet(frame, pairs_features(frame), frame["label_gpu"].to_numpy(dtype=bool))


_ARCH_ALIASES = {"xgboost": "xgb", "timesformer": "transformer_video"}


def model_architecture(models: pd.Series) -> npt.NDArray[np.object_]:
    """The model family of each model name: the part before the first ``_`` or ``-``, with a
    purely numeric next part joined (``resnet18_cifar10`` -> ``resnet18``,
    ``gru-w0.4-d0.6-seq128_imdb`` -> ``gru``, paper A's ``resnet-18`` -> ``resnet18``) and
    ``xgboost`` spelled ``xgb``. Used to hold out whole model families (group column ``arch``)."""
    out = []
    for m in models:
        parts = str(m).lower().split("_")[0].split("-")
        name = parts[0] + (parts[1] if len(parts) > 1 and parts[1].isdigit() else "")
        out.append(_ARCH_ALIASES.get(name, name) or str(m))
    return np.asarray(out, dtype=object)


def load_labelled(paths: Iterable[Path], thresholds: Thresholds | None = None) -> tuple[LabelledSet, dict[str, str]]:
    """Read traces, pair runs and label them by the joint threshold. Returns the set and trace hashes."""
    frame, hashes = read_traces(paths)
    return labelled_set(pair_outcomes(frame, thresholds)), hashes


@dataclass(frozen=True)
class PolicyReport:
    """Table 5 metrics plus regret against the Oracle, for one policy on one labelled set."""

    policy: str
    n: int
    accuracy: float
    throughput_vs_cpu_only: float
    energy_efficiency_vs_gpu_only: float
    gpu_share: float
    gpu_usage_reduction_pct: float
    time_regret_pct: float
    energy_regret_pct: float
    mean_reward: float
    oracle_mean_reward: float
    reward_ratio: float
    infeasible_choices: int
    n_time_rows: int
    n_energy_rows: int
    energy_method: str

    def to_dict(self) -> dict[str, Any]:
        """The report's fields as a plain dict (one Table 5 row)."""
        return asdict(self)


def _geomean(x: npt.NDArray[np.float64]) -> float:
    return float(np.exp(np.mean(np.log(x)))) if len(x) else float("nan")


def _energy_method(pairs: pd.DataFrame, rows: npt.NDArray[np.bool_]) -> str:
    methods: set[str] = set()
    for col in ("cpu_energy_method", "gpu_energy_method"):
        if col in pairs.columns:
            methods |= set(pairs.loc[rows, col].dropna().astype(str))
    methods.discard("unknown")
    if not methods:
        return "none"
    return methods.pop() if len(methods) == 1 else "mixed (" + " + ".join(sorted(methods)) + ")"


def evaluate_choices(chose_gpu: npt.ArrayLike, data: LabelledSet, name: str = "policy") -> PolicyReport:
    """Score a vector of device choices (True = GPU) against the Oracle on ``data``."""
    chose = np.asarray(chose_gpu, dtype=bool).reshape(-1)
    if chose.shape[0] != len(data):
        raise ValueError(f"{chose.shape[0]} choices for {len(data)} labelled rows")
    p = data.pairs
    t_cpu = p["cpu_time_per_sample_s"].to_numpy(dtype=np.float64)
    t_gpu = p["gpu_time_per_sample_s"].astype("float64").to_numpy()
    e_cpu = p["cpu_energy_per_sample_j"].to_numpy(dtype=np.float64)
    e_gpu = p["gpu_energy_per_sample_j"].astype("float64").to_numpy()
    cpu_ok = p["cpu_feasible"].to_numpy(dtype=bool)
    gpu_ok = p["gpu_feasible"].to_numpy(dtype=bool)
    oracle = data.y

    time_rows = cpu_ok & gpu_ok & np.isfinite(t_cpu) & np.isfinite(t_gpu)
    energy_rows = time_rows & np.isfinite(e_cpu) & np.isfinite(e_gpu) & (e_cpu > 0) & (e_gpu > 0)
    t_choice = np.where(chose, t_gpu, t_cpu)
    t_oracle = np.where(oracle, t_gpu, t_cpu)
    e_choice = np.where(chose, e_gpu, e_cpu)
    e_oracle = np.where(oracle, e_gpu, e_cpu)

    labels = data.labels
    reward = placement_reward(chose, labels)
    oracle_reward = placement_reward(oracle, labels)
    gpu_only_share = 1.0  # every row of a LabelledSet is on a GPU target
    share = float(chose.mean()) if len(chose) else float("nan")
    oracle_mean = float(oracle_reward.mean())
    return PolicyReport(
        policy=name,
        n=len(chose),
        accuracy=float((chose == oracle).mean()),
        throughput_vs_cpu_only=_geomean(t_cpu[time_rows] / t_choice[time_rows]),
        energy_efficiency_vs_gpu_only=_geomean(e_gpu[energy_rows] / e_choice[energy_rows]),
        gpu_share=share,
        gpu_usage_reduction_pct=100.0 * (1.0 - share / gpu_only_share),
        time_regret_pct=100.0 * (_geomean(t_choice[time_rows] / t_oracle[time_rows]) - 1.0),
        energy_regret_pct=100.0 * (_geomean(e_choice[energy_rows] / e_oracle[energy_rows]) - 1.0),
        mean_reward=float(reward.mean()),
        oracle_mean_reward=oracle_mean,
        reward_ratio=float(reward.mean()) / oracle_mean if oracle_mean else float("nan"),
        infeasible_choices=int(((chose & ~gpu_ok) | (~chose & ~cpu_ok)).sum()),
        n_time_rows=int(time_rows.sum()),
        n_energy_rows=int(energy_rows.sum()),
        energy_method=_energy_method(p, energy_rows),
    )


def evaluate_policy(policy: Policy, data: LabelledSet, name: str | None = None) -> PolicyReport:
    """Score ``policy`` (deterministic decisions on raw features) on a labelled set."""
    actions, _ = policy.predict(data.x, deterministic=True)
    return evaluate_choices(np.asarray(actions).reshape(-1) == 1, data, name or policy.name)


def evaluate_frame(policy: Policy, pairs: pd.DataFrame, name: str | None = None) -> PolicyReport:
    """Score ``policy`` on a :func:`placement.core.trace.pair_outcomes` frame."""
    return evaluate_policy(policy, labelled_set(pairs), name)


def compare(policies: Mapping[str, Policy], data: LabelledSet) -> pd.DataFrame:
    """Table 5 style comparison, one row per policy, plus the Oracle row."""
    reports = [evaluate_choices(data.y, data, "oracle")]
    reports += [evaluate_policy(p, data, name) for name, p in policies.items()]
    return reports_frame(reports)


TABLE5_COLUMNS = (
    "policy", "n", "throughput_vs_cpu_only", "energy_efficiency_vs_gpu_only", "accuracy",
    "gpu_usage_reduction_pct", "time_regret_pct", "energy_regret_pct", "reward_ratio",
    "infeasible_choices", "energy_method",
)


def reports_frame(reports: Sequence[PolicyReport]) -> pd.DataFrame:
    """Policy reports as a Table 5 frame: one row per report, the columns of :data:`TABLE5_COLUMNS`."""
    frame = pd.DataFrame([r.to_dict() for r in reports])
    return frame[list(TABLE5_COLUMNS)]


# --- splits ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """Row indices of a train/test split; ``held_out`` names the test groups (if grouped)."""

    name: str
    train: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]
    held_out: tuple[str, ...] = ()


def random_split(data: LabelledSet, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Random rows (memorisation check, not generalisation)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(len(data))
    n_test = max(1, int(round(len(data) * test_fraction)))
    return Split(f"random{test_fraction:g}", np.sort(perm[n_test:]), np.sort(perm[:n_test]))


def group_split(data: LabelledSet, column: str, held_out: Sequence[str]) -> Split:
    """Hold out every row whose ``column`` (``arch`` = model family, ``family``, ``model``, ``target_id``)
    is in ``held_out``."""
    if column not in data.pairs.columns:
        raise ValueError(f"unknown group column '{column}' (try arch, family, model or target_id)")
    values = data.pairs[column].astype(str).to_numpy()
    unknown = sorted(set(held_out) - set(values))
    if unknown:
        raise ValueError(f"held-out {column} values not in the data: {', '.join(unknown)}")
    test = np.isin(values, list(held_out))
    if test.all():
        raise ValueError(f"holding out {', '.join(held_out)} leaves no training rows")
    return Split(f"{column}={'+'.join(held_out)}", np.flatnonzero(~test), np.flatnonzero(test), tuple(held_out))


def leave_one_group_out(data: LabelledSet, column: str) -> list[Split]:
    """One split per distinct value of ``column``, holding that group out."""
    values = sorted(set(data.pairs[column].astype(str)))
    if len(values) < 2:
        raise ValueError(f"column '{column}' has {len(values)} group(s); need >= 2 to hold one out")
    return [group_split(data, column, [v]) for v in values]


def grouped_kfold(data: LabelledSet, column: str, n_splits: int = 5, seed: int = 0) -> list[Split]:
    """``n_splits`` folds of whole groups (groups shuffled by ``seed``, then dealt round-robin)."""
    values = np.array(sorted(set(data.pairs[column].astype(str))))
    if len(values) < n_splits:
        return leave_one_group_out(data, column)
    order = np.random.default_rng(seed).permutation(len(values))
    folds = [values[order[k::n_splits]] for k in range(n_splits)]
    return [group_split(data, column, list(map(str, f))) for f in folds]


def out_of_fold(
    data: LabelledSet,
    splits: Sequence[Split],
    fit: Callable[[LabelledSet], Mapping[str, Policy]],
) -> dict[str, npt.NDArray[np.bool_]]:
    """Fit policies on each split's train rows (``fit``) and collect their choices on its test rows.

    Returns ``{policy name: choices}`` over the union of the test rows, in row order; rows in
    no test fold are ``False`` (check coverage with :func:`covered_rows`).
    """
    choices: dict[str, npt.NDArray[np.bool_]] = {}
    for split in splits:
        policies = fit(data.subset(split.train))
        test = data.subset(split.test)
        for name, policy in policies.items():
            actions, _ = policy.predict(test.x, deterministic=True)
            choices.setdefault(name, np.zeros(len(data), dtype=bool))[split.test] = np.asarray(actions).reshape(-1) == 1
    return choices


def covered_rows(n: int, splits: Sequence[Split]) -> npt.NDArray[np.bool_]:
    """Which of ``n`` rows fall in the test side of at least one of ``splits``, shape ``(n,)``."""
    covered = np.zeros(n, dtype=bool)
    for split in splits:
        covered[split.test] = True
    return covered
