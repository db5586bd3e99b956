"""Per-step CPU timings of ``mlp_cifar10`` training: the long protocol vs the probe, with and without
flushing subnormal numbers (a diagnostic of the probe's one persistent miss, session 7).

On the H200 leases the long protocol (:mod:`placement.lab.timing` with the profiler's CPU settings)
measured this job's batch-4 CPU step as 2.3-4.3 ms and its batch-16 step as 1.8 ms, while the
probe read 1.4-1.8 ms and 2.4 ms. For batch sizes ``Args.batches`` and each
``torch.set_flush_denormal`` setting this script times the step both ways in one process, keeps
every step's time and counts subnormal parameters and gradients afterwards, one JSON line per
configuration.

Run (on the lent H200): ``OUT=... python -m experiments.mlp_step_check`` (writes ``$OUT/mlp_check.jsonl``);
the committed run is ``data/traces/h200_mlp_step_check.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from placement.lab.job_probe import probe_workload
from placement.lab.knobs import cpu_cores
from placement.lab.profiler import ProfileSettings
from placement.lab.timing import TimingSettings, TimingStats, time_step
from placement.lab.workloads import get_workload, make_batch, make_step

SMALLEST_NORMAL_F32 = 1.1754944e-38


@dataclass
class Args:
    out: Path = Path(os.environ.get("OUT", ".")) / "mlp_check.jsonl"
    batches: tuple[int, ...] = (2, 4, 8, 16, 32)
    flush: tuple[bool, ...] = (False, True)
    cores: int = 16
    seed: int = 0


def long_protocol(step: Callable[[], object]) -> tuple[TimingStats, list[float]]:
    """The profiler's CPU protocol (warm-up, >= 7 repeats of >= 20 ms over >= 0.2 s), every step's time kept."""
    steps: list[float] = []

    def timed() -> None:
        a = time.perf_counter()
        step()
        steps.append(time.perf_counter() - a)

    ps = ProfileSettings()  # the long sweeps' CPU settings, read from where the profiler keeps them
    stats = time_step(timed, TimingSettings(warmup_steps=ps.cpu_warmup_steps, min_repeats=ps.cpu_min_repeats,
                                            min_repeat_s=ps.cpu_min_repeat_s, min_time_s=ps.cpu_min_time_s,
                                            max_time_s=ps.cpu_max_time_s))
    return stats, steps


def main(args: Args) -> list[dict[str, object]]:
    """Run every configuration; torch's flush-subnormals state is process-wide, so it is put back
    to torch's default (off) on the way out."""
    try:
        return _run(args)
    finally:
        torch.set_flush_denormal(False)


def _run(args: Args) -> list[dict[str, object]]:
    torch.set_num_threads(args.cores)
    records: list[dict[str, object]] = []
    with args.out.open("w") as fh:
        for flush in args.flush:
            torch.set_flush_denormal(flush)
            for b in args.batches:
                torch.manual_seed(args.seed)
                w = get_workload("mlp_cifar10")
                x, y = make_batch(w.dataset, b, "cpu", torch.Generator().manual_seed(args.seed))
                with cpu_cores(args.cores) as used:
                    model = w.build()
                    step = make_step(model, "train")
                    stats, steps = long_protocol(lambda: step(x, y))  # noqa: B023 - called before the loop moves on
                    sub_p = sum(int(((p != 0) & (p.abs() < SMALLEST_NORMAL_F32)).sum()) for p in model.parameters())
                    sub_g = sum(int(((p.grad != 0) & (p.grad.abs() < SMALLEST_NORMAL_F32)).sum())
                                for p in model.parameters() if p.grad is not None)
                probe = probe_workload("mlp_cifar10", b, "train", devices=("cpu",), cpu_cores=args.cores,
                                       cpu_tdp_w=100.0, cpu_idle_w=30.0)
                rec: dict[str, object] = {
                    "flush_denormal": flush, "batch": b, "cores": used, "long_trimmed_mean_s": stats.trimmed_mean_s,
                    "long_steps": len(steps), "first_steps_s": steps[:12], "last_steps_s": steps[-12:],
                    "subnormal_params": sub_p, "subnormal_grads": sub_g,
                    "probe_step_s": (probe.runs[0].time_per_sample_s or 0.0) * b, "probe_steps": probe.runs[0].timed_steps,
                }
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                records.append(rec)
                print(f"flush={flush} b{b}: long {stats.trimmed_mean_s * 1e3:.2f} ms over {len(steps)} steps; probe "
                      f"{float(rec['probe_step_s']) * 1e3:.2f} ms; subnormal params/grads {sub_p}/{sub_g}", flush=True)  # type: ignore[arg-type]
    return records


def parse(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Args.out)
    p.add_argument("--batches", default="2,4,8,16,32")
    p.add_argument("--cores", type=int, default=Args.cores)
    a = p.parse_args(argv)
    return Args(out=a.out, batches=tuple(int(v) for v in a.batches.split(",")), cores=a.cores)


if __name__ == "__main__":
    main(parse())
