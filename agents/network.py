"""The placement network: paper A's two-hidden-layer selector, in torch (training) and numpy (serving).

Paper A (Ju, Kwak, Park 2026, section 3.3) uses "a lightweight DNN with two hidden layers"
(we default to ``[128, 64]``, the paper's own example), ReLU, dropout and a single sigmoid
output for P(GPU is a valid acceleration). PPO's policy network uses the same layout
(``net_arch=dict(pi=[128, 64], vf=[128, 64])``, ReLU), which is what lets the supervised
weights be copied into it (:mod:`placement.agents.ppo`).

Edge targets add two optional heads on the same trunk: one logit per CPU-core level and
one per GPU-memory-cap level (paper B's knobs), matching the ``MultiDiscrete`` action of
``DevicePlacement-v0`` on edge targets.

Serving does not run torch: :class:`placement.agents.actor.NumpyMlp` holds the weights as
``float32`` matrices, with the feature normaliser folded into the first layer, so one decision
is three small matrix products (the issue's p50 <= 20 us target; ``benchmarks/bench_decide.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


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
