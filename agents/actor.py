"""The served actor: a trained policy network as numpy matrices, loaded and run without torch.

Serving never runs torch (one decision is three small matrix products), but loading a model
used to: the DNN checkpoint and PPO's weights are torch files, so every ingress replica paid
the torch import (about 1.6-2.2 s on the 2-core reference host, most of a replica's own
start-up; issue 16's start-to-first-answer target). :class:`NumpyMlp` holds the weights
with the feature normaliser folded into the first layer; :func:`save_actor` writes exactly
those matrices to ``actor.npz`` in the model directory (:mod:`placement.agents.artifact`
lists it in the sha256 manifest), and :func:`load_actor` reads them back with numpy alone
(``allow_pickle=False``: arrays only), so the served answers are bit-for-bit the ones of the
torch-loaded policy (tested).

:class:`ActorPolicy` decides from such an actor: the GPU-minus-CPU logit of the device
action, and on edge targets the core-level and cap-level actions (PPO's ``MultiDiscrete``
action; :class:`placement.agents.ppo.PpoPolicy` is this class plus the SB3 agent it came from).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from placement.agents.knobs import KnobLevels
from placement.agents.policy import Policy, as_batch, default_knobs
from placement.core.decision import GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.outcome import GPU
from placement.envs.device_placement import N_CORE_LEVELS
from placement.model.features import N_FEATURES, Normaliser, build_features

if TYPE_CHECKING:
    from placement.agents.network import PlacementNet

F32 = npt.NDArray[np.float32]

ACTOR_FORMAT = 1
"""Version of the ``actor.npz`` layout (its ``format`` entry)."""


@dataclass(frozen=True)
class NumpyMlp:
    """A ReLU MLP as numpy matrices: ``h = relu(x @ W_i + b_i)`` for the trunk, then
    linear heads. ``weights[i]`` has shape ``(in, out)``. Inputs are RAW features when
    built with :meth:`from_net` with a normaliser (it is folded into the first layer)."""

    weights: tuple[F32, ...]
    biases: tuple[F32, ...]
    head_w: F32  # (hidden[-1], n_logits): GPU logit(s), then core levels, then cap levels
    head_b: F32
    n_inputs: int

    def trunk(self, x: F32) -> F32:
        """The hidden activations ``relu(... relu(x @ W_0 + b_0) ...)`` of raw features ``x``
        ``(n, in)``, shape ``(n, hidden[-1])``."""
        h = x
        for w, b in zip(self.weights, self.biases, strict=True):
            h = h @ w
            h += b
            np.maximum(h, 0.0, out=h)
        return h

    def logits(self, x: F32) -> F32:
        """All head logits for raw rows ``x`` of shape ``(n, n_inputs)`` (extra columns are ignored)."""
        if x.shape[1] != self.n_inputs:
            if x.shape[1] < self.n_inputs:
                raise ValueError(f"observation has {x.shape[1]} features, the network needs {self.n_inputs}")
            x = x[:, : self.n_inputs]
        out = self.trunk(x) @ self.head_w
        out += self.head_b
        return out

    @classmethod
    def from_layers(
        cls,
        layers: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
        head: tuple[npt.ArrayLike, npt.ArrayLike],
        mean: npt.ArrayLike | None,
        scale: npt.ArrayLike | None,
        n_inputs: int,
    ) -> NumpyMlp:
        """Build from torch-layout layers (``weight`` of shape ``(out, in)``, ``bias``); the
        input standardisation ``(x - mean) / scale`` (first ``len(mean)`` inputs) is folded in."""
        ws = [np.asarray(w, dtype=np.float64).T for w, _ in layers]
        bs = [np.asarray(b, dtype=np.float64) for _, b in layers]
        if mean is not None and scale is not None:
            m = np.asarray(mean, dtype=np.float32).astype(np.float64)
            sc = np.asarray(scale, dtype=np.float32).astype(np.float64)
            mean = np.zeros(ws[0].shape[0])
            scale = np.ones(ws[0].shape[0])
            mean[: len(m)] = m
            scale[: len(sc)] = sc
            # (x - m) / s @ W + b  ==  x @ (W / s[:, None]) + (b - (m / s) @ W)
            bs[0] = bs[0] - (mean / scale) @ ws[0]
            ws[0] = ws[0] / scale[:, None]
        hw, hb = head
        return cls(
            tuple(w.astype(np.float32) for w in ws),
            tuple(b.astype(np.float32) for b in bs),
            np.asarray(hw, dtype=np.float64).T.astype(np.float32),
            np.asarray(hb, dtype=np.float64).astype(np.float32),
            n_inputs,
        )

    @classmethod
    def from_net(cls, net: PlacementNet, normaliser: Normaliser | None) -> NumpyMlp:
        """Export a trained :class:`PlacementNet` (GPU logit first, then core, then cap logits)."""
        layers = [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in net.linear_layers()]
        heads = [net.gpu_head] + [h for h in (net.core_head, net.cap_head) if h is not None]
        hw = np.concatenate([h.weight.detach().numpy() for h in heads], axis=0)
        hb = np.concatenate([h.bias.detach().numpy() for h in heads], axis=0)
        mean = normaliser.mean if normaliser is not None else None
        scale = normaliser.scale if normaliser is not None else None
        return cls.from_layers(layers, (hw, hb), mean, scale, net.n_inputs)


def sigmoid(z: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Numerically stable logistic function."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def save_actor(path: Path, mlp: NumpyMlp, knobbed: bool) -> None:
    """Write ``mlp`` (its float32 matrices as they are, normaliser folded in) and whether its
    action has knob levels to ``path`` (``.npz``, arrays only)."""
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "format": np.array(ACTOR_FORMAT, dtype=np.int64),
        "n_inputs": np.array(mlp.n_inputs, dtype=np.int64),
        "knobbed": np.array(bool(knobbed)),
        "head_w": mlp.head_w,
        "head_b": mlp.head_b,
    }
    for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        arrays[f"w{i}"] = w
        arrays[f"b{i}"] = b
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def load_actor(path: Path) -> tuple[NumpyMlp, bool]:
    """``(mlp, knobbed)`` from a file :func:`save_actor` wrote (numpy only, no pickles). Raises
    ``ValueError`` naming what is wrong with a file of another layout."""
    with np.load(path, allow_pickle=False) as data:
        names = set(data.files)
        missing = {"format", "n_inputs", "knobbed", "head_w", "head_b", "w0", "b0"} - names
        if missing:
            raise ValueError(f"{path}: not an actor file (missing {', '.join(sorted(missing))})")
        if int(data["format"]) != ACTOR_FORMAT:
            raise ValueError(f"{path}: actor format {int(data['format'])}, this code reads {ACTOR_FORMAT}")
        n_layers = sum(1 for k in names if k.startswith("w") and k[1:].isdigit())
        weights = tuple(np.asarray(data[f"w{i}"], dtype=np.float32) for i in range(n_layers))
        biases = tuple(np.asarray(data[f"b{i}"], dtype=np.float32) for i in range(n_layers))
        mlp = NumpyMlp(weights, biases, np.asarray(data["head_w"], dtype=np.float32),
                       np.asarray(data["head_b"], dtype=np.float32), int(data["n_inputs"]))
        knobbed = bool(data["knobbed"])
    width = mlp.n_inputs
    for w, b in zip(mlp.weights, mlp.biases, strict=True):
        if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
            raise ValueError(f"{path}: layer shapes do not chain ({w.shape} after width {width})")
        width = w.shape[1]
    if mlp.head_w.shape[0] != width or mlp.head_b.shape != (mlp.head_w.shape[1],) or mlp.head_w.shape[1] < 2:
        raise ValueError(f"{path}: action head {mlp.head_w.shape} does not fit the trunk's width {width}")
    return mlp, knobbed


class ActorPolicy(Policy):
    """A policy network with a device action (two logits: CPU, GPU) and, when ``knobbed``,
    core-level and cap-level actions after it, decided by numpy. ``predict`` answers the
    device (0/1) like every :class:`~placement.agents.policy.Policy`; :meth:`env_action` the
    environment's full action (``[device, core_level, cap_level]`` on a knob environment)."""

    name = "ppo"

    def __init__(self, mlp: NumpyMlp, knobbed: bool, knob_levels: KnobLevels | None = None) -> None:
        self.mlp = mlp
        self.knobbed = knobbed
        self.knob_levels = knob_levels if knob_levels is not None else (KnobLevels() if knobbed else None)

    def gpu_logit(self, obs: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """The actor's GPU-minus-CPU logit per row of raw features, shape ``(n,)``: log-odds of
        picking the GPU."""
        batch, _ = as_batch(obs)
        logits = self.mlp.logits(self._pad(batch))
        return logits[:, 1] - logits[:, 0]

    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """P(GPU) per row of raw features: the sigmoid of :meth:`gpu_logit`."""
        return sigmoid(self.gpu_logit(obs))

    def predict(
        self, obs: npt.ArrayLike, state: object = None, episode_start: object = None, deterministic: bool = True
    ) -> tuple[npt.NDArray[np.int64], None]:
        """SB3-style ``(actions, None)``: the actor's argmax device per row (ties to the CPU, as SB3
        does); a scalar for one observation. ``state``, ``episode_start`` and ``deterministic`` are
        ignored."""
        batch, single = as_batch(obs)
        logits = self.mlp.logits(self._pad(batch))
        actions = (logits[:, 1] > logits[:, 0]).astype(np.int64)  # argmax, ties to CPU as SB3 does
        return (actions[0] if single else actions), None

    def env_action(self, obs: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Deterministic environment actions: ``(n,)`` devices or ``(n, 3)`` with knob levels."""
        batch, single = as_batch(obs)
        logits = self.mlp.logits(self._pad(batch))
        device = (logits[:, 1] > logits[:, 0]).astype(np.int64)
        if not self.knobbed:
            return device[0] if single else device
        core = np.argmax(logits[:, 2 : 2 + N_CORE_LEVELS], axis=1)
        cap = np.argmax(logits[:, 2 + N_CORE_LEVELS :], axis=1)
        out = np.stack([device, core, cap], axis=1).astype(np.int64)
        return out[0] if single else out

    def _pad(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Contention-mode models take extras after the features; plain feature rows get zeros."""
        n_in = self.mlp.n_inputs
        if batch.shape[1] < n_in:
            if batch.shape[1] != N_FEATURES:
                raise ValueError(f"observation has {batch.shape[1]} entries, the PPO policy needs {n_in}")
            batch = np.concatenate([batch, np.zeros((batch.shape[0], n_in - N_FEATURES), dtype=np.float32)], axis=1)
        return batch

    def knobs(self, job: Job, target: HardwareTarget, device: int) -> tuple[int, GpuMemCap]:
        """Cores and GPU memory cap from the actor's knob actions on edge targets (knobbed agents
        only); the machine's defaults elsewhere."""
        if not self.knobbed or not target.is_edge or self.knob_levels is None:
            return super().knobs(job, target, device)
        action = self.env_action(build_features(job, target))
        return self.knob_levels.knobs(target, int(action[1]), int(action[2]), gpu=device == GPU)

    def knobs_batch(self, x: npt.ArrayLike, target: HardwareTarget, devices: npt.ArrayLike,
                    job_at: Callable[[int], Job] | None = None) -> tuple[npt.NDArray[np.int64], list[GpuMemCap]]:
        """:meth:`knobs` of many jobs from their feature rows in one pass of the actor."""
        dev = np.asarray(devices, dtype=np.int64).reshape(-1)
        if not self.knobbed or not target.is_edge or self.knob_levels is None:
            return default_knobs(target, dev.size)
        action = np.asarray(self.env_action(np.asarray(x, dtype=np.float32).reshape(dev.size, -1)))
        return self.knob_levels.knobs_many(target, action[:, 1], action[:, 2], dev == GPU)
