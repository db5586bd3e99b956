"""Offline training from logged traces: DNN, then PPO warm-started from it, into a model directory.

:func:`train_from_traces` is what ``placement train --traces A.parquet B.csv --out models/NAME``
runs:

1. read and validate the traces, pair runs into (job, target) rows and label them by the
   joint threshold (:func:`placement.core.trace.pair_outcomes`);
2. estimate generalisation: grouped k-fold cross-validation (whole model families, or
   hardware targets, held out per fold) of the DNN and the baselines, reported as paper A's
   Table 5 with regret against the Oracle (:mod:`placement.agents.evaluation`);
3. train the DNN on every row (:func:`placement.agents.dnn.train_dnn`);
4. optionally warm-start PPO from it and fine-tune on ``DevicePlacement-v0`` replaying the
   same traces (:mod:`placement.agents.ppo`);
5. write the versioned model directory (:func:`placement.agents.artifact.save_model`) with the trace
   hashes, seed, thresholds, code version and every metric.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from placement.agents.artifact import ModelMetadata, save_model
from placement.agents.baselines import CpuOnlyPolicy, GpuOnlyPolicy, RandomPolicy, RuleBasedPolicy
from placement.agents.dnn import DnnConfig, DnnPolicy, classification_metrics, train_dnn
from placement.agents.evaluation import (
    LabelledSet,
    Split,
    covered_rows,
    evaluate_choices,
    evaluate_policy,
    grouped_kfold,
    labelled_set,
    out_of_fold,
    reports_frame,
)
from placement.agents.policy import Policy
from placement.core.threshold import Thresholds
from placement.core.trace import pair_outcomes, read_traces
from placement.core.version import code_version

if TYPE_CHECKING:
    from placement.agents.ppo import PpoConfig, PpoPolicy

CV_COLUMNS = ("arch", "model", "family", "target_id", "random")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a trained model besides the traces.

    ``cv_column``: the group held out per fold (``arch`` = model family such as resnet18 or
    lstm, ``model``, ``family`` = job family such as cnn, ``target_id``) or ``random`` rows; ``cv_folds``: number of folds (0 skips cross-validation);
    ``ppo_timesteps``: PPO fine-tuning steps after the warm start (0 = DNN only).
    """

    seed: int = 0
    thresholds: Thresholds = field(default_factory=Thresholds)
    dnn: DnnConfig = field(default_factory=DnnConfig)
    ppo_timesteps: int = 0
    ppo: PpoConfig | None = None
    cv_column: str = "arch"
    cv_folds: int = 5
    version: str | None = None
    progress: bool = False
    threads: int = 2
    augment_copies: int = 4
    """Estimate-augmented copies per labelled row for the DNN (:mod:`placement.agents.augmentation`; 0: none)."""

    def __post_init__(self) -> None:
        if self.cv_column not in CV_COLUMNS:
            raise ValueError(f"cv_column must be one of {', '.join(CV_COLUMNS)}, got '{self.cv_column}'")
        if self.cv_folds < 0 or self.cv_folds == 1:
            raise ValueError(f"cv_folds must be 0 (skip) or >= 2, got {self.cv_folds}")
        if self.ppo_timesteps < 0:
            raise ValueError(f"ppo_timesteps must be >= 0, got {self.ppo_timesteps}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclass
class TrainResult:
    """What :func:`train_from_traces` produced: the model folder and its metadata, the
    cross-validation table (``None`` when skipped), and the trained DNN and PPO policies."""

    path: Path
    metadata: ModelMetadata
    cv_table: pd.DataFrame | None
    dnn: DnnPolicy
    ppo: PpoPolicy | None = None


def baseline_policies(train: LabelledSet, seed: int) -> dict[str, Policy]:
    """Paper A's baselines, the rule fitted on ``train``."""
    return {
        "cpu_only": CpuOnlyPolicy(),
        "gpu_only": GpuOnlyPolicy(),
        "random": RandomPolicy(0.5, seed),
        "rule_based": RuleBasedPolicy.fit(train.x, train.y),
    }


def cv_splits(data: LabelledSet, column: str, folds: int, seed: int) -> list[Split]:
    """``folds`` cross-validation splits of ``data``: random folds when ``column == "random"``,
    else grouped by ``column`` (every value's rows in one test fold, :func:`grouped_kfold`)."""
    if column == "random":
        perm = np.random.default_rng(seed).permutation(len(data))
        return [
            Split(f"random fold {k}", np.sort(np.setdiff1d(perm, perm[k::folds])), np.sort(perm[k::folds]))
            for k in range(folds)
        ]
    return grouped_kfold(data, column, folds, seed)


def cross_validate(
    data: LabelledSet, dnn_config: DnnConfig, *, column: str = "arch", folds: int = 5, seed: int = 0,
    progress: bool = False, augment_copies: int = 0, thresholds: Thresholds | None = None,
) -> pd.DataFrame:
    """Out-of-fold Table 5 for the DNN and the baselines (whole ``column`` groups held out per fold)."""
    splits = cv_splits(data, column, folds, seed)
    fold_iter: Sequence[Split] = splits
    if progress:
        from tqdm.auto import tqdm

        fold_iter = tqdm(splits, desc=f"cross-validation ({column})", unit="fold")

    def fit(train: LabelledSet) -> Mapping[str, Policy]:
        policies = baseline_policies(train, seed)
        x, y = train.x, train.y
        if augment_copies:
            from placement.agents.augmentation import estimate_augmentation, with_augmentation

            th = thresholds or Thresholds()
            xa, ya, _ = estimate_augmentation(train, augment_copies, seed, th.speedup_min, th.energy_ratio_max)
            x, y, _ = with_augmentation(x, y, {}, xa, ya)
        policies["dnn"], _ = train_dnn(x, y, config=dnn_config)
        return policies

    choices = out_of_fold(data, fold_iter, fit)
    covered = covered_rows(len(data), splits)
    test = data.subset(np.flatnonzero(covered))
    reports = [evaluate_choices(test.y, test, "oracle")]
    reports += [evaluate_choices(c[covered], test, name) for name, c in choices.items()]
    return reports_frame(reports)


def _has_edge(pairs: pd.DataFrame) -> bool:
    return bool((pairs["hw_kind"].astype(str) == "edge").any())


def _version(hashes: Mapping[str, str], settings: TrainSettings) -> str:
    digest = hashlib.sha256()
    for path in sorted(hashes):
        digest.update(hashes[path].encode())
    digest.update(repr((settings.seed, settings.thresholds.as_dict(), settings.dnn.to_dict(),
                        settings.ppo_timesteps)).encode())
    return f"{code_version()}-{digest.hexdigest()[:10]}"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]


def knob_training_labels(frame: pd.DataFrame, data: LabelledSet, thresholds: Thresholds,
                         seed: int = 0) -> tuple[dict[str, Any], dict[str, int]]:
    """Core-count and memory-cap labels for the DNN's knob heads, from the edge targets' rows of
    ``frame`` (:func:`placement.agents.ppo.knob_labels`); ``({}, {})`` when ``frame`` has no edge target.

    Returns the keyword arguments for :func:`placement.agents.dnn.train_dnn` (``core_labels``,
    ``cap_labels``, ``knob_levels``) and counts of labelled rows. Every DNN that warm-starts a
    PPO policy with knob actions should get them: without, the copied knob heads are untrained."""
    from placement.agents.knobs import KnobLevels
    from placement.agents.ppo import knob_labels, make_env

    env = make_env(frame, thresholds)
    if not env.knobs:
        return {}, {}
    edge_ids = [t.id for t in env.targets if t.is_edge]
    n_edge = int(np.isin(data.pairs["target_id"].astype(str), edge_ids).sum())
    cores, caps = knob_labels(make_env(frame, thresholds, targets=edge_ids), data.x,
                              max_steps=max(1000, 20 * n_edge), seed=seed)
    counts = {"edge_pairs": n_edge, "core_labelled": int(np.isfinite(cores).all(axis=1).sum()),
              "cap_labelled": int(np.isfinite(caps).all(axis=1).sum())}
    return dict(core_labels=cores, cap_labels=caps, knob_levels=KnobLevels()), counts


def train_from_traces(
    trace_paths: Sequence[Path], out_dir: Path, settings: TrainSettings | None = None
) -> TrainResult:
    """Train a model from trace files and write it to ``out_dir`` (see the module docstring)."""
    if not trace_paths:
        raise ValueError("give at least one trace (--traces A.parquet B.csv ...)")
    frame, hashes = read_traces([Path(p) for p in trace_paths])
    return train_from_frame(frame, hashes, out_dir, settings)


def train_from_frame(frame: pd.DataFrame, hashes: Mapping[str, str], out_dir: Path,
                     settings: TrainSettings | None = None) -> TrainResult:
    """:func:`train_from_traces` on traces already read (``frame`` as :func:`placement.core.trace.read_traces`
    gives it, ``hashes`` its files' sha256): the grouped refits of :mod:`placement.agents.temperature` train
    the same recipe on a subset of the rows."""
    s = settings or TrainSettings()
    torch.set_num_threads(s.threads)
    pairs = pair_outcomes(frame, s.thresholds)
    data = labelled_set(pairs)
    if data.y.all() or not data.y.any():
        raise ValueError(
            f"every labelled job is {'GPU' if data.y.all() else 'CPU'} under T_t={s.thresholds.speedup_min:g}, "
            f"T_e={s.thresholds.energy_ratio_max:g}: a selector needs both classes (add traces or change thresholds)"
        )
    dnn_config = DnnConfig.from_dict({**s.dnn.to_dict(), "seed": s.seed})
    metrics: dict[str, Any] = {
        "n_pairs": len(data),
        "gpu_label_share": float(data.y.mean()),
        "sources": sorted(set(pairs["source"].astype(str))),
        "targets": sorted(set(pairs["target_id"].astype(str))),
    }

    cv_table = None
    n_groups = len(set(data.pairs[s.cv_column].astype(str))) if s.cv_column != "random" else len(data)
    if s.cv_folds and n_groups >= 2:
        cv_table = cross_validate(data, dnn_config, column=s.cv_column, folds=min(s.cv_folds, n_groups),
                                  seed=s.seed, progress=s.progress, augment_copies=s.augment_copies,
                                  thresholds=s.thresholds)
        metrics["cv"] = {"held_out": s.cv_column, "folds": min(s.cv_folds, n_groups), "table5": _records(cv_table)}

    env = None
    knob_kwargs: dict[str, Any] = {}
    if s.ppo_timesteps or _has_edge(pairs):
        from placement.agents.ppo import make_env

        env = make_env(frame, s.thresholds)
        knob_kwargs, knob_counts = knob_training_labels(frame, data, s.thresholds, s.seed)
        if knob_counts:
            metrics["knob_labels"] = knob_counts

    from placement.agents.augmentation import estimate_augmentation, with_augmentation

    x_aug, y_aug, aug_summary = estimate_augmentation(data, s.augment_copies, s.seed, s.thresholds.speedup_min,
                                                      s.thresholds.energy_ratio_max)
    metrics["estimate_augmentation"] = aug_summary
    x_fit, y_fit, knob_kwargs = with_augmentation(data.x, data.y, knob_kwargs, x_aug, y_aug)
    dnn, history = train_dnn(x_fit, y_fit, config=dnn_config, progress=s.progress, **knob_kwargs)
    metrics["dnn_history"] = history.to_dict()
    metrics["dnn_in_sample"] = {k: v for k, v in classification_metrics(data.y, dnn.gpu_probability(data.x)).items()
                                if k != "calibration"}
    metrics["dnn_in_sample_table5"] = evaluate_policy(dnn, data).to_dict()

    ppo = None
    ppo_config: dict[str, Any] = {}
    if s.ppo_timesteps and env is not None:
        from placement.agents.ppo import PpoConfig, train_warm_ppo

        cfg = s.ppo or PpoConfig.warm()
        run = train_warm_ppo(dnn, env, timesteps=s.ppo_timesteps, config=cfg, seed=s.seed, progress=s.progress)
        ppo = run.policy
        ppo_config = cfg.to_dict()
        metrics["ppo"] = run.metrics
        metrics["ppo_in_sample_table5"] = evaluate_policy(ppo, data).to_dict()

    meta = ModelMetadata(
        version=s.version or _version(hashes, s),
        seed=s.seed,
        thresholds=s.thresholds.as_dict(),
        trace_hashes=dict(hashes),
        metrics=metrics,
        ppo_config=ppo_config,
    )
    path = save_model(Path(out_dir), dnn=dnn, ppo=ppo, normaliser=dnn.normaliser, thresholds=s.thresholds,
                      metadata=meta)
    from placement.agents.artifact import read_metadata

    return TrainResult(path, read_metadata(path), cv_table, dnn, ppo)


def model_report(loaded: Any, data: LabelledSet, seed: int = 0) -> pd.DataFrame:
    """Table 5 for a loaded model (:class:`placement.agents.artifact.LoadedModel`) on ``data``: the Oracle,
    the baselines (the rule fitted on ``data`` itself, so it is an in-sample upper bound), the
    model's DNN and, when present, its PPO policy."""
    policies = baseline_policies(data, seed)
    policies["dnn"] = loaded.dnn
    if loaded.ppo is not None:
        policies["ppo"] = loaded.ppo
    reports = [evaluate_choices(data.y, data, "oracle")] + [evaluate_policy(p, data, n) for n, p in policies.items()]
    return reports_frame(reports)
