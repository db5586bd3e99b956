"""One plot style for every study and report figure: readable on a laptop screen at a glance.

* :func:`apply` sets matplotlib's defaults once per script: 10-11 pt text, light grid, framed
  legends, and :data:`DPI` (>= 120) for saved figures.
* One colour per policy (:data:`POLICY_COLORS`) and per model architecture
  (:func:`model_color`: ``resnet18_cifar10`` and ``resnet18_imagenet100`` share ResNet-18's
  colour; the dataset is told apart by line style, :func:`model_style`), the same in every
  panel and every study.
* :func:`integer_ticks` puts whole-number ticks on a core-count axis (log or linear); no
  fractional cores.
* :func:`save` lays the figure out and writes it at :data:`DPI`.

Axis labels carry units (``time per batch (s)``, ``energy (J, modelled)``); that part stays with
each study, which knows its quantities.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

DPI = 130
"""Saved figures' resolution (dots per inch)."""

POLICY_COLORS: dict[str, str] = {
    "oracle": "#000000",
    "oracle_with_queue": "#000000",
    "oracle_without_queue": "#7f7f7f",
    "cpu_only": "#1f77b4",
    "gpu_only": "#d62728",
    "random": "#bcbd22",
    "rule_based": "#9467bd",
    "threshold": "#9467bd",
    "dnn": "#2ca02c",
    "static_dnn": "#2ca02c",
    "ppo_warm": "#ff7f0e",
    "warm": "#ff7f0e",
    "ppo_contention": "#ff7f0e",
    "ppo_cold": "#17becf",
    "cold": "#17becf",
    "online_learner": "#e377c2",
    "online": "#e377c2",
    "paper A": "#8c564b",
}
"""Policy -> colour, the same in every study (the Oracle black, CPU-only blue, GPU-only red, ...)."""

ARCH_COLORS: dict[str, str] = {
    "mlp": "#1f77b4",
    "alexnet": "#ff7f0e",
    "mobilenet": "#2ca02c",
    "resnet18": "#d62728",
    "lstm": "#9467bd",
    "gru": "#8c564b",
    "transformer": "#e377c2",
    "lenet5": "#7f7f7f",
    "vgg11": "#bcbd22",
    "textcnn": "#17becf",
    "fasttext": "#aec7e8",
    "tabular_mlp": "#98df8a",
}
"""Model architecture -> colour, the same in every panel and study."""

_SPARE = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
_DATASET_STYLES = {"cifar10": "-", "imdb": "-", "imagenet100": "--", "mnist": ":", "k400": "-."}


def apply() -> None:
    """Set the shared defaults (call once at the top of a plotting script)."""
    plt.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": DPI,
        "font.size": 10,
        "axes.titlesize": 10.5,
        "axes.labelsize": 10,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.fontsize": 8.5,
        "legend.framealpha": 0.9,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.6,
        "lines.linewidth": 1.6,
        "lines.markersize": 4.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })


def policy_color(policy: str) -> str:
    """The policy's colour (unknown names get a stable spare colour)."""
    return POLICY_COLORS.get(policy) or _spare(policy)


def architecture(model: str) -> str:
    """``resnet18_cifar10`` -> ``resnet18``; ``tabular_mlp`` stays whole; an unknown name as is."""
    for arch in sorted(ARCH_COLORS, key=len, reverse=True):
        if model == arch or model.startswith(arch + "_") or model.startswith(arch + "-"):
            return arch
    return model


def model_color(model: str) -> str:
    """The colour of the model's architecture (stable for names outside :data:`ARCH_COLORS`)."""
    return ARCH_COLORS.get(architecture(model)) or _spare(model)


def model_style(model: str) -> str:
    """Line style by dataset: solid CIFAR-10/IMDB, dashed ImageNet-100, ..."""
    for dataset, style in _DATASET_STYLES.items():
        if dataset in model:
            return style
    return "-"


def _spare(name: str) -> str:
    return _SPARE[sum(name.encode()) % len(_SPARE)]


def integer_ticks(ax: Axes, values: Iterable[float] | None = None, *, axis: str = "x") -> None:
    """Whole-number ticks on a core-count axis: ``values`` (the cores plotted) or powers of two over
    the axis range; no minor ticks, no fractional labels, on linear and log axes alike."""
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    if values is None:
        ticks = [2**k for k in range(0, 13) if lo <= 2**k <= hi] or [1]
    else:
        ticks = sorted({int(round(v)) for v in values if v == v and v >= 1})
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(ticks))
    target.set_minor_locator(NullLocator())
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks, [str(t) for t in ticks])


def legend(ax: Axes, **kwargs: Any) -> None:
    """A legend when the axes has labelled artists (every panel with several lines gets one)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(**kwargs)


def save(fig: Figure, path: str | Path, *, tight: bool = True) -> Path:
    """Lay out and write ``fig`` at :data:`DPI`; close it. Returns the path."""
    out = Path(path)
    if tight:
        fig.tight_layout()
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return out


def colors(names: Sequence[str], kind: str = "policy") -> list[str]:
    """Colours for a list of policies (``kind='policy'``) or models (``kind='model'``)."""
    pick = policy_color if kind == "policy" else model_color
    return [pick(n) for n in names]
