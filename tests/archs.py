"""Architectures that appear in no trace (for the evidence tests): built from torch layers only."""

from __future__ import annotations

from torch import nn


class GatedMlp(nn.Module):
    """A gated MLP on 256-wide inputs: x -> (W1 x * sigmoid(W2 x)) -> W3, ten classes."""

    def __init__(self, width: int = 256, hidden: int = 1024) -> None:
        super().__init__()
        self.value = nn.Linear(width, hidden)
        self.gate = nn.Linear(width, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.out(self.norm(self.value(x) * self.gate(x).sigmoid()))
