"""Where a zoo training step's time goes: forward, backward, optimizer step (diagnostic).

The operator model (``placement.model.opmodel``) is fitted on the reference micro-benchmarks
alone; on the zoo's training steps it was short by about 2x on the GPU where inference was
close. This script times, for a few zoo jobs on one device, the phases of the zoo's own step
(``placement.lab.workloads.make_step``: ``zero_grad``, forward + cross-entropy, ``backward``,
SGD ``step``) cumulatively, each with the measurement protocol (``placement.lab.timing.time_step``):

* ``infer``: forward under ``inference_mode`` (the zoo's infer step);
* ``forward``: ``zero_grad`` + forward + loss with autograd recording;
* ``backward``: the above + ``loss.backward()``;
* ``step``: the above + ``optimizer.step()`` (the zoo's train step).

Differences give each phase. It reads no trace and fits nothing: what it measures informs the
reference micro-benchmarks' design and the documentation (``docs/calibration.md``), never a fit.

Run on the measurement host (one CUDA GPU)::

    python -m experiments.train_step_split --out results/train_step_split/h200.json
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass
class Args:
    out: Path = Path("results/train_step_split/h200.json")
    device: str = "cuda"
    jobs: tuple[tuple[str, int], ...] = field(default_factory=lambda: (
        ("mlp_cifar10", 2), ("alexnet_cifar10", 2), ("resnet18_cifar10", 2), ("mixer_cifar10", 2),
        ("vit_cifar10", 2), ("transformer_imdb", 2), ("unet_cifar10", 2), ("dlrm_criteo", 2)))
    seed: int = 0


def _phases(name: str, batch: int, device: torch.device) -> dict[str, float]:
    from placement.lab.timing import TimingSettings, time_step
    from placement.lab.workloads import get_workload, make_batch, make_optimizer

    w = get_workload(name)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    settings = TimingSettings(warmup_steps=3, min_repeats=5, floor_repeats=3, min_repeat_s=0.01, min_time_s=0.05,
                              max_time_s=1.5)
    torch.manual_seed(0)
    model = w.build().to(device)
    x, y = make_batch(w.dataset, batch, device)
    opt = make_optimizer(model)
    loss_fn = nn.CrossEntropyLoss()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)

    def upto(phase: str) -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        if phase in ("backward", "step"):
            loss.backward()
        if phase == "step":
            opt.step()

    out: dict[str, float] = {"infer_s": time_step(infer, settings, sync=sync).trimmed_mean_s}
    for phase in ("forward", "backward", "step"):
        out[f"{phase}_s"] = time_step(lambda phase=phase: upto(phase), settings, sync=sync).trimmed_mean_s
    out["params"] = float(sum(1 for p in model.parameters() if p.requires_grad))
    return out


def main(args: Args) -> dict[str, object]:
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    rows = []
    for name, batch in args.jobs:
        rows.append({"model": name, "batch_size": batch, "device": device.type, **_phases(name, batch, device)})
        sys.stdout.write(json.dumps(rows[-1]) + "\n")
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "code_version": os.environ.get("PLACEMENT_CODE_VERSION", "")}
    payload = {"schema": "placement.train_step_split/1", "seed": args.seed, "environment": env,
               "finished_unix_s": time.time(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    return payload


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Args.out)
    parser.add_argument("--device", default=Args.device)
    a = parser.parse_args()
    main(Args(out=a.out, device=a.device))
