"""Paper A's supervised selector: a two-hidden-layer DNN giving P(GPU is a valid acceleration).

Paper A (section 3.3) trains "a lightweight DNN with two hidden layers" with dropout,
weight decay and early stopping, by SGD with learning rate 0.05 for 800 epochs on binary
cross-entropy; it reports calibrated probabilities and ROC-AUC near 1. :func:`train_dnn`
implements that, with two recipes:

* :meth:`DnnConfig.paper` -- the paper's recipe (SGD, lr 0.05, up to 800 epochs, BCE);
* ``DnnConfig()`` -- our default (AdamW, lr 3e-3, up to 400 epochs), faster on our traces.

Both use early stopping on a stratified validation split (the validation error rate is
monitored), then refit on every row for the chosen number of epochs.
Edge targets optionally train two more heads (core level, GPU-memory-cap level) by
cross-entropy on the best knob setting seen in the trace (:mod:`placement.agents.knobs`).

:class:`DnnPolicy` serves with numpy (:class:`placement.agents.actor.NumpyMlp`), not torch.
Metrics (:func:`classification_metrics`): accuracy, precision, recall, average precision
(area under PR), ROC-AUC, Brier score, log loss and expected calibration error, computed
with scikit-learn.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from placement.agents.actor import NumpyMlp, sigmoid
from placement.agents.knobs import KnobLevels
from placement.agents.network import PlacementNet
from placement.agents.policy import Policy, as_batch, default_knobs
from placement.core.decision import GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.outcome import GPU
from placement.model.features import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, N_FEATURES, Normaliser

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class DnnConfig:
    """Training recipe. ``hidden`` are layer widths; ``lr`` the learning rate;
    ``weight_decay`` L2 (decoupled for AdamW); ``patience`` epochs without improvement of the
    monitored validation figure before stopping: ``monitor="error"`` (default) is the
    validation error rate of the GPU decision, averaged over the last ``smooth_epochs`` epochs
    (the last epoch at the lowest error is kept);
    ``"loss"`` the validation loss (BCE plus knob cross-entropy; improvement by more than
    ``min_delta``). On our traces the validation loss bottoms out while the error rate still
    falls (probabilities sharpen), so stopping on the loss under-fits. ``refit``: after early
    stopping has chosen the number of epochs on the validation split, train again from the
    same initialisation on every row for that many epochs (the labels are a deterministic
    rule; holding 20 % of them out of the final model only loses information)."""

    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9
    max_epochs: int = 400
    batch_size: int = 256
    patience: int = 100
    min_delta: float = 1e-5
    val_fraction: float = 0.2
    monitor: str = "error"
    refit: bool = True
    smooth_epochs: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got '{self.optimizer}'")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.max_epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("max_epochs, batch_size and patience must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.smooth_epochs < 1:
            raise ValueError(f"smooth_epochs must be >= 1, got {self.smooth_epochs}")
        if self.monitor not in ("error", "loss"):
            raise ValueError(f"monitor must be 'error' or 'loss', got '{self.monitor}'")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    @classmethod
    def paper(cls, **overrides: Any) -> DnnConfig:
        """Paper A's recipe: SGD, lr 0.05, up to 800 epochs, binary cross-entropy (section 3.3)."""
        base: dict[str, Any] = dict(optimizer="sgd", lr=0.05, momentum=0.0, max_epochs=800, patience=200)
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready values (``hidden`` a list), as stored in checkpoints and metadata."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DnnConfig:
        """The recipe from :meth:`to_dict` output (unknown keys ignored, absent ones at their defaults)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


PRESETS: dict[str, Callable[..., DnnConfig]] = {"default": DnnConfig, "paper": DnnConfig.paper}
"""DNN recipes by name (``placement train --preset``)."""


@dataclass
class TrainingHistory:
    """Per-epoch mean losses (BCE, plus knob cross-entropy when trained) and where it stopped."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_error: list[float] = field(default_factory=list)
    best_epoch: int = 0
    epochs_run: int = 0
    refit_epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Summary of the run: best and last epoch, refit epochs, final training loss and best
        validation loss and error."""
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "refit_epochs": self.refit_epochs,
            "final_train_loss": self.train_loss[-1] if self.train_loss else None,
            "best_val_loss": min(self.val_loss) if self.val_loss else None,
            "best_val_error": min(self.val_error) if self.val_error else None,
        }


class DnnPolicy(Policy):
    """The trained DNN as a policy: raw features in, numpy inference.

    ``net`` (torch, eval mode) is kept for export and for the PPO weight copy; decisions
    use ``mlp``, the same weights as numpy matrices with the normaliser folded in.
    """

    name = "dnn"

    def __init__(
        self,
        net: PlacementNet,
        normaliser: Normaliser,
        config: DnnConfig,
        knob_levels: KnobLevels | None = None,
    ) -> None:
        self.net = net.eval()
        self.normaliser = normaliser
        self.config = config
        self.knob_levels = knob_levels
        self.mlp = NumpyMlp.from_net(net, normaliser)

    # --- inference -----------------------------------------------------------------
    def gpu_logit(self, obs: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """The GPU logit (log-odds of P(GPU)) per row of raw features, shape ``(n,)``."""
        batch, _ = as_batch(obs)
        return self.mlp.logits(batch)[:, 0]

    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """P(GPU) per row of raw features: the sigmoid of :meth:`gpu_logit`."""
        return sigmoid(self.gpu_logit(obs))

    def predict(
        self, obs: npt.ArrayLike, state: object = None, episode_start: object = None, deterministic: bool = True
    ) -> tuple[npt.NDArray[np.int64], None]:
        """SB3-style ``(actions, None)``: 1 (GPU) where the GPU logit is > 0, else 0 (an exact tie
        goes to the CPU); a scalar for one observation. ``state``, ``episode_start`` and
        ``deterministic`` are ignored."""
        batch, single = as_batch(obs)
        # GPU iff z > 0 (P > 0.5); an exact tie goes to the CPU, as the PPO actor's argmax does
        actions = (self.mlp.logits(batch)[:, 0] > 0.0).astype(np.int64)
        return (actions[0] if single else actions), None

    def knob_logits(self, obs: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Core-level and cap-level logits, shapes ``(n, n_core_levels)`` and ``(n, n_cap_levels)``."""
        batch, _ = as_batch(obs)
        logits = self.mlp.logits(batch)
        nc = self.net.core_head.out_features if self.net.core_head is not None else 0
        return logits[:, 1 : 1 + nc], logits[:, 1 + nc :]

    def knobs(self, job: Job, target: HardwareTarget, device: int) -> tuple[int, GpuMemCap]:
        """Cores and GPU memory cap from the knob heads' most likely levels on edge targets; the
        machine's defaults elsewhere or without knob heads."""
        if self.knob_levels is None or not target.is_edge or self.net.core_head is None:
            return super().knobs(job, target, device)
        from placement.model.features import build_features

        core_logits, cap_logits = self.knob_logits(build_features(job, target))
        return self.knob_levels.knobs(
            target, int(np.argmax(core_logits[0])), int(np.argmax(cap_logits[0])) if cap_logits.shape[1] else None,
            gpu=device == GPU,
        )

    def knobs_batch(self, x: npt.ArrayLike, target: HardwareTarget, devices: npt.ArrayLike,
                    job_at: Callable[[int], Job] | None = None) -> tuple[npt.NDArray[np.int64], list[GpuMemCap]]:
        """:meth:`knobs` of many jobs from their feature rows in one pass of the knob heads."""
        dev = np.asarray(devices, dtype=np.int64).reshape(-1)
        if self.knob_levels is None or not target.is_edge or self.net.core_head is None:
            return default_knobs(target, dev.size)
        core_logits, cap_logits = self.knob_logits(x)
        caps = np.argmax(cap_logits, axis=1) if cap_logits.shape[1] else None
        return self.knob_levels.knobs_many(target, np.argmax(core_logits, axis=1), caps, dev == GPU)

    # --- persistence (torch.load(weights_only=True) safe: tensors and plain values) ---
    def to_checkpoint(self) -> dict[str, Any]:
        """The net's weights, shape and recipe with the feature schema, as plain values and tensors
        (safe for ``torch.load(weights_only=True)``)."""
        return {
            "format": "placement.dnn/1",
            "feature_schema_version": FEATURE_SCHEMA_VERSION,
            "feature_names": list(FEATURE_NAMES),
            "n_inputs": self.net.n_inputs,
            "config": self.config.to_dict(),
            "n_core_levels": self.net.core_head.out_features if self.net.core_head is not None else 0,
            "n_cap_levels": self.net.cap_head.out_features if self.net.cap_head is not None else 0,
            "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
        }

    @classmethod
    def from_checkpoint(
        cls, ckpt: Mapping[str, Any], normaliser: Normaliser, knob_levels: KnobLevels | None = None
    ) -> DnnPolicy:
        """The policy from :meth:`to_checkpoint` output and the normaliser saved with it;
        ``ValueError`` when it is not a DNN checkpoint or its feature schema differs from this
        code's."""
        if ckpt.get("format") != "placement.dnn/1":
            raise ValueError(f"not a placement DNN checkpoint (format {ckpt.get('format')!r})")
        if ckpt.get("feature_schema_version") != FEATURE_SCHEMA_VERSION or tuple(ckpt.get("feature_names", ())) != FEATURE_NAMES:
            raise ValueError(
                f"DNN checkpoint feature schema (version {ckpt.get('feature_schema_version')}) does not match "
                f"this code (version {FEATURE_SCHEMA_VERSION}): retrain the model"
            )
        config = DnnConfig.from_dict(ckpt["config"])
        net = PlacementNet(
            int(ckpt["n_inputs"]), config.hidden, config.dropout, int(ckpt["n_core_levels"]), int(ckpt["n_cap_levels"])
        )
        net.load_state_dict(ckpt["state_dict"])
        return cls(net, normaliser, config, knob_levels)


def _split(n: int, y: npt.NDArray[np.bool_], config: DnnConfig) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    n_val = int(round(n * config.val_fraction))
    if config.val_fraction == 0 or n_val < 1 or n - n_val < 1:
        return idx, idx[:0]
    stratify = y if min(int(y.sum()), int((~y).sum())) >= 2 else None
    # training only: serving never imports sklearn
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(idx, test_size=n_val, random_state=config.seed, stratify=stratify)
    return np.sort(train), np.sort(val)


@dataclass
class _TrainTensors:
    """The training rows as tensors: normalised features ``x``, GPU labels ``y`` (0/1), knob
    target distributions (NaN rows zeroed) and the rows whose knob targets are known (``None``
    when that head is not trained)."""

    x: torch.Tensor
    y: torch.Tensor
    cores: torch.Tensor
    caps: torch.Tensor
    cores_known: torch.Tensor | None
    caps_known: torch.Tensor | None
    bce: nn.BCEWithLogitsLoss = field(default_factory=nn.BCEWithLogitsLoss)

    def loss(self, net: PlacementNet, idx: torch.Tensor) -> torch.Tensor:
        """Mean BCE of the GPU head on rows ``idx``, plus the knob heads' cross-entropy on those
        of the rows whose knob targets are known."""
        gpu, core_logits, cap_logits = net(self.x[idx])
        loss = self.bce(gpu, self.y[idx])
        for logits, target, known in ((core_logits, self.cores, self.cores_known), (cap_logits, self.caps, self.caps_known)):
            if logits is not None and known is not None:
                rows = known[idx]
                if bool(rows.any()):
                    logp = torch.log_softmax(logits[rows], dim=-1)
                    loss = loss - (target[idx][rows] * logp).sum(dim=-1).mean()
        return loss

    def validate(self, net: PlacementNet, idx: torch.Tensor) -> tuple[float, float]:
        """Validation loss and GPU-decision error rate (fraction) of ``net`` on rows ``idx``."""
        net.eval()
        with torch.no_grad():
            val = float(self.loss(net, idx))
            error = float(((net(self.x[idx])[0] > 0) != (self.y[idx] > 0.5)).float().mean())
        return val, error


def _optimizer(net: PlacementNet, cfg: DnnConfig) -> torch.optim.Optimizer:
    """SGD (with ``cfg.momentum``) or AdamW over ``net``'s parameters, as ``cfg.optimizer`` says."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _train_epoch(
    net: PlacementNet, opt: torch.optim.Optimizer, data: _TrainTensors, tidx: torch.Tensor,
    gen: torch.Generator, batch_size: int,
) -> float:
    """One pass over rows ``tidx`` in a shuffled order (from ``gen``), in minibatches of
    ``batch_size``; returns the mean training loss per row."""
    net.train()
    perm = tidx[torch.randperm(len(tidx), generator=gen)]
    total, count = 0.0, 0
    for start in range(0, len(perm), batch_size):
        idx = perm[start : start + batch_size]
        opt.zero_grad()
        loss = data.loss(net, idx)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    return total / max(count, 1)


def _improvement(
    cfg: DnnConfig, history: TrainingHistory, error: float, val: float, best: tuple[float, float]
) -> tuple[bool, bool, float]:
    """Early stopping's verdict on the latest epoch, against ``best`` (lowest error, its loss):
    ``(strict, keep, error)`` -- whether the monitored figure strictly improved (resets the
    patience), whether to keep this epoch's weights, and the error as monitored (smoothed over
    the last ``cfg.smooth_epochs`` epochs when ``cfg.monitor == "error"``)."""
    if cfg.monitor == "error":
        # smoothed over the last few epochs: one validation row is ~1 % of the split
        error = float(np.mean(history.val_error[-cfg.smooth_epochs :]))
        # the last epoch at the lowest error wins (the best fitted model that generalises as
        # well); patience counts epochs since the error last fell
        strict = error < best[0] - 1e-12
        return strict, strict or error <= best[0] + 1e-12, error
    better = val < best[1] - cfg.min_delta
    return better, better, error


def _fit(
    data: _TrainTensors, cfg: DnnConfig, heads: tuple[int, int], tidx: torch.Tensor, vidx: torch.Tensor,
    max_epochs: int, history: TrainingHistory, desc: str, progress: bool,
) -> PlacementNet:
    """Train a fresh net (``heads``: core and cap levels, 0 = no head) from ``cfg.seed`` on rows
    ``tidx`` for up to ``max_epochs``, recording ``history``. With validation rows ``vidx``,
    stop early on ``cfg.monitor`` and return the kept epoch's weights; without, run every epoch.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = PlacementNet(N_FEATURES, cfg.hidden, cfg.dropout, *heads)
    opt = _optimizer(net, cfg)
    best_state = copy.deepcopy(net.state_dict())
    best: tuple[float, float] = (math.inf, math.inf)
    since_best = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(range(max_epochs), desc=desc, unit="epoch")
    for epoch in bar if bar is not None else range(max_epochs):
        train_loss = _train_epoch(net, opt, data, tidx, gen, cfg.batch_size)
        history.train_loss.append(train_loss)
        if not len(vidx):  # refit: a fixed number of epochs, no monitoring
            if bar is not None:
                bar.set_postfix(train=f"{train_loss:.4f}")
            continue
        val, error = data.validate(net, vidx)
        history.val_loss.append(val)
        history.val_error.append(error)
        history.epochs_run = epoch + 1
        strict, keep, error = _improvement(cfg, history, error, val, best)
        if keep:
            best = (min(best[0], error), val)
            history.best_epoch = epoch + 1
            best_state = copy.deepcopy(net.state_dict())
        since_best = 0 if strict else since_best + 1
        if bar is not None:
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val:.4f}", val_err=f"{error:.3f}")
        if since_best >= cfg.patience:
            break
    if bar is not None:
        bar.close()
    if len(vidx):
        net.load_state_dict(best_state)
    return net.eval()


def train_dnn(
    x_raw: npt.ArrayLike,
    y_gpu: npt.ArrayLike,
    *,
    config: DnnConfig | None = None,
    normaliser: Normaliser | None = None,
    core_labels: npt.ArrayLike | None = None,
    cap_labels: npt.ArrayLike | None = None,
    knob_levels: KnobLevels | None = None,
    progress: bool = False,
) -> tuple[DnnPolicy, TrainingHistory]:
    """Train the selector on raw features ``x_raw`` ``(n, N_FEATURES)`` and labels ``y_gpu``.

    ``normaliser`` defaults to one fitted on ``x_raw``. ``core_labels`` / ``cap_labels`` are
    knob-level indices per row (``-1`` where unknown, e.g. non-edge rows) or per-row
    distributions over levels (:func:`knob_targets`); given with ``knob_levels``, the knob
    heads are trained too (cross-entropy against the targets). Deterministic for a given ``config.seed``
    and thread count.
    """
    cfg = config or DnnConfig()
    x = np.asarray(x_raw, dtype=np.float32)
    y = np.asarray(y_gpu, dtype=bool).reshape(-1)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise ValueError(f"x_raw must have shape (n, {N_FEATURES}) in FEATURE_NAMES order, got {x.shape}")
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need >= 2 rows and one label per row (x has {x.shape[0]} rows, y {y.shape[0]})")
    if not np.all(np.isfinite(x)):
        raise ValueError("x_raw has NaN or infinite features: check the trace rows it was built from")
    norm = normaliser or Normaliser.fit(x)
    n_core = knob_levels.n_core_levels if (knob_levels and core_labels is not None) else 0
    n_cap = knob_levels.n_cap_levels if (knob_levels and cap_labels is not None) else 0
    cores = knob_targets(core_labels, len(y), n_core, "core_labels")
    caps = knob_targets(cap_labels, len(y), n_cap, "cap_labels")
    data = _TrainTensors(
        x=torch.from_numpy(norm.transform(x)),
        y=torch.from_numpy(y.astype(np.float32)),
        cores=torch.nan_to_num(torch.from_numpy(cores)),
        caps=torch.nan_to_num(torch.from_numpy(caps)),
        cores_known=torch.from_numpy(np.isfinite(cores).all(axis=1)) if n_core else None,
        caps_known=torch.from_numpy(np.isfinite(caps).all(axis=1)) if n_cap else None,
    )
    train_idx, val_idx = _split(len(y), y, cfg)

    history = TrainingHistory()
    tidx, vidx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    net = _fit(data, cfg, (n_core, n_cap), tidx, vidx, cfg.max_epochs, history, "DNN", progress)
    if cfg.refit and len(vidx):
        # early stopping chose the epoch count; train on every row for that many epochs
        history.refit_epochs = history.best_epoch
        net = _fit(data, cfg, (n_core, n_cap), torch.arange(len(y)), vidx[:0], history.best_epoch,
                   TrainingHistory(), "DNN refit", progress)
    return DnnPolicy(net, norm, cfg, knob_levels if (n_core or n_cap) else None), history


def knob_targets(labels: npt.ArrayLike | None, n: int, n_levels: int, name: str) -> npt.NDArray[np.float32]:
    """Knob targets as distributions over levels, shape ``(n, n_levels)``; NaN rows = unknown.

    ``labels`` is either level indices ``(n,)`` (``-1`` = unknown; one-hot targets) or
    distributions ``(n, n_levels)`` (NaN rows = unknown), e.g. a softmax of each level's
    reward, so equally good levels share the target instead of one being picked arbitrarily.
    """
    if not n_levels or labels is None:
        return np.full((n, max(n_levels, 1)), np.nan, dtype=np.float32)
    arr = np.asarray(labels)
    if arr.ndim == 1:
        if arr.shape[0] != n or np.any((arr < -1) | (arr >= n_levels)):
            raise ValueError(f"{name}: need {n} level indices in -1..{n_levels - 1} (-1 = unknown)")
        out = np.full((n, n_levels), np.nan, dtype=np.float32)
        known = arr >= 0
        out[known] = 0.0
        out[np.flatnonzero(known), arr[known].astype(np.int64)] = 1.0
        return out
    if arr.shape != (n, n_levels):
        raise ValueError(f"{name}: distributions must have shape ({n}, {n_levels}), got {arr.shape}")
    out = arr.astype(np.float32)
    rows_known = np.isfinite(out).all(axis=1)
    if np.any(out[rows_known] < 0) or not np.allclose(out[rows_known].sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(f"{name}: each known row must be a probability distribution (>= 0, sums to 1)")
    return out


def expected_calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> float:
    """ECE: mean |accuracy - confidence| over equal-width probability bins, weighted by bin size."""
    y_arr = np.asarray(y, dtype=np.float64)
    p_arr = np.asarray(p, dtype=np.float64)
    bins = np.minimum((p_arr * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(y_arr[mask].mean() - p_arr[mask].mean())
    return float(ece)


def classification_metrics(y_true: npt.ArrayLike, p_gpu: npt.ArrayLike, n_bins: int = 10) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, PR-AUC (average precision), ROC-AUC, Brier, log loss, ECE
    and the calibration curve (scikit-learn). AUCs are ``None`` when only one class is present."""
    from sklearn import metrics as skm
    from sklearn.calibration import calibration_curve

    y = np.asarray(y_true, dtype=bool)
    p = np.clip(np.asarray(p_gpu, dtype=np.float64), 0.0, 1.0)
    pred = p >= 0.5
    both = 0 < y.sum() < len(y)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "average_precision": float(skm.average_precision_score(y, p)) if both else None,
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else None,
        "brier": float(skm.brier_score_loss(y, p)),
        "log_loss": float(skm.log_loss(y, p, labels=[False, True])),
        "ece": expected_calibration_error(y, p, n_bins),
    }
    if both:
        frac_pos, mean_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
        out["calibration"] = {"mean_predicted": mean_pred.tolist(), "fraction_positive": frac_pos.tolist()}
    return out
