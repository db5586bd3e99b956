"""The placement network: paper A's two-hidden-layer selector, in torch (training) and numpy (serving).

Paper A (Ju, Kwak, Park 2026, section 3.3) uses "a lightweight DNN with two hidden layers"
(we default to ``[128, 64]``, the paper's own example), ReLU, dropout and a single sigmoid
output for P(GPU is a valid acceleration). PPO's policy network uses the same layout
(``net_arch=dict(pi=[128, 64], vf=[128, 64])``, ReLU), which is what lets the supervised
weights be copied into it (:mod:`placement.agents.ppo`).

Edge targets add two optional heads on the same trunk: one logit per CPU-core level and
one per GPU-memory-cap level (paper B's knobs), matching the ``MultiDiscrete`` action of
``DevicePlacement-v0`` on edge targets.

Serving does not run torch: :class:`NumpyMlp` holds the weights as ``float32`` matrices,
with the feature normaliser folded into the first layer, so one decision is three small
matrix products (the issue's p50 <= 20 us target; ``benchmarks/bench_decide.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from placement.model.features import Normaliser

F32 = npt.NDArray[np.float32]


class PlacementNet(nn.Module):
    """Trunk ``in -> hidden[0] -> ... -> hidden[-1]`` (Linear, ReLU, Dropout), a GPU logit head
    and optional core-level / cap-level heads. Inputs are *normalised* features."""

    def __init__(
        self,
        n_inputs: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        n_core_levels: int = 0,
        n_cap_levels: int = 0,
    ) -> None:
        super().__init__()
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive layer widths, got {list(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = n_inputs
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.gpu_head = nn.Linear(width, 1)
        self.core_head = nn.Linear(width, n_core_levels) if n_core_levels else None
        self.cap_head = nn.Linear(width, n_cap_levels) if n_cap_levels else None
        self.hidden = tuple(int(h) for h in hidden)
        self.n_inputs = n_inputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Logits for normalised features ``x`` ``(n, in)``: GPU ``(n,)``, then core levels and cap
        levels ``(n, levels)`` (``None`` without those heads)."""
        z = self.trunk(x)
        gpu = self.gpu_head(z).squeeze(-1)
        cores = self.core_head(z) if self.core_head is not None else None
        caps = self.cap_head(z) if self.cap_head is not None else None
        return gpu, cores, caps

    def linear_layers(self) -> list[nn.Linear]:
        """The trunk's Linear layers, in order."""
        return [m for m in self.trunk if isinstance(m, nn.Linear)]


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
