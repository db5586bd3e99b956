"""Probe every zoo job of the measured traces (and every zoo architecture they lack) into a trace.

For each job (workload, mode, batch size) measured at default knobs in the long H200 sweeps
(``data/traces/h200_measured.parquet``, ``h200_pairs_measured.parquet``) -- plus batch sizes
8 and 64 of any zoo architecture absent from them -- :func:`placement.lab.job_probe.probe_workload`
runs the job probe on this host (GPU timing first, then the CPU, then the GPU energy window where it can
change the answer; early exit; 5 s budget) and
the runs are written as a placement trace with ``source='probe'`` beside the long
measurements they are scored against (``placement.agents.grounding``), with a JSON-lines journal of
every :class:`~placement.lab.job_probe.ProbeResult` (cost ``wall_s``, early exits, windows).

Run (on the lent H200): ``python -m experiments.probe_zoo --out data/traces/h200_probe.parquet``.
Here (CPU only, a smoke test): ``python -m experiments.probe_zoo --devices cpu --limit 3 --out /tmp/p.parquet``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

METHOD = (
    "placement.lab.job_probe.probe_workload per job at default knobs (all cores, no GPU memory cap), timed by "
    "placement.lab.job_probe.ProbeTiming's defaults: GPU side first: warm-up of >= 3 steps over >= 50 ms, then "
    "synchronised repeats of >= 10 ms, >= 5 of them over >= 50 ms (their median); the model stays on the GPU while "
    "the CPU side runs: one cold step (an upper bound of a step, its power over it); early exit when it decides the "
    "speed half by 1.25x (after a 0.1 s setup allowance on the slow side, and only for a cold step of >= 1 s): the "
    "cold step is the CPU time (time_is_upper_bound in the journal); else warm-up to >= 2 steps over >= 50 ms (a step "
    "of >= 0.25 s ends it), then repeats of >= 10 ms, >= 5 of them over >= 50 ms (or 0.5 s of long steps), their "
    "median. Then, unless the speed half already answers CPU (energy='auto': the CPU step's upper bound below "
    "T_t = 2 x the GPU step by 1.25x; energy_skipped in the "
    "journal, no GPU power then), the GPU's energy window: repeats of >= 10 ms inside an NVML total-energy counter "
    "window of >= 0.3 s aligned to counter updates (measured), whose median is the GPU time; host CPU power over "
    "the GPU's windows by RAPL if readable else modelled (idle + (TDP - idle) x utilisation); "
    "torch.cuda.max_memory_allocated as the memory peak; OOM -> feasible=False. Budget 5 s per job; phases_s in the "
    "journal says where each probe's time went."
)


@dataclass
class Args:
    out: Path = Path("data/traces/h200_probe.parquet")
    traces: list[Path] = field(default_factory=lambda: [Path("data/traces/h200_measured.parquet"),
                                                        Path("data/traces/h200_pairs_measured.parquet")])
    budget_s: float = 5.0
    time_limit_s: float = 420.0
    """Stop starting new jobs after this many seconds (the trace keeps what was probed)."""
    devices: tuple[str, ...] = ("cpu", "gpu")
    limit: int = 0
    """Probe only the first ``limit`` jobs (0: all)."""
    seed: int = 0
    extra_batches: tuple[int, ...] = (8, 64)


def job_list(args: Args) -> list[tuple[str, str, int]]:
    """(workload, mode, batch) of every default-knob job of the traces, then the zoo's other architectures."""
    from placement.core.trace import read_trace
    from placement.lab.workloads import ZOO

    keys: dict[tuple[str, str, int], None] = {}
    for path in args.traces:
        frame = read_trace(path).frame
        full = frame[(frame["cpu_cores"] == frame["hw_cpu_cores"]) & frame["gpu_mem_cap_mib"].isna()]
        for row in full[["model", "mode", "batch_size"]].drop_duplicates().itertuples(index=False):
            if str(row.model) in ZOO:
                keys[(str(row.model), str(row.mode), int(row.batch_size))] = None
    seen = {k[0] for k in keys}
    for name in ZOO:
        if name not in seen:
            for mode in ("infer", "train"):
                for b in args.extra_batches:
                    keys[(name, mode, b)] = None
    out = list(keys)
    return out[: args.limit] if args.limit else out


def trace_rows(result: Any, target: Any) -> list[dict[str, Any]]:
    from placement.core.trace import target_columns

    job = result.job
    rows = []
    for run in result.runs:
        steps = max(1, run.timed_steps)
        feasible = bool(run.feasible and run.time_per_sample_s)
        n = job.batch_size * steps if feasible else None
        rows.append({
            "source": "probe", "job_id": f"{job.name}-{job.mode}-b{job.batch_size}", "model": job.name,
            "family": job.family, "mode": job.mode, "batch_size": job.batch_size,
            "flops_per_batch": job.flops_per_batch, "param_count": job.param_count,
            "input_elems_per_sample": job.input_elems_per_sample, "input_bytes_per_sample": job.input_bytes_per_sample,
            "dataset_size": None, **target_columns(target), "device": run.device,
            "cpu_cores": int(min(run.cpu_cores or target.cpu_cores, target.cpu_cores)), "gpu_mem_cap_mib": None,
            "feasible": feasible, "infeasible_reason": None if feasible else (run.infeasible_reason or "failed"),
            "n_samples": n, "time_total_s": run.time_per_sample_s * n if feasible else None,
            "time_per_batch_s": run.time_per_sample_s * job.batch_size if feasible else None,
            "repeats": steps if feasible else None,
            "avg_cpu_power_w": run.avg_cpu_power_w if feasible else None,
            "cpu_power_method": str(run.cpu_power_method) if feasible and run.avg_cpu_power_w is not None else "unknown",
            "avg_gpu_power_w": run.avg_gpu_power_w if feasible and run.device == "gpu" else None,
            "gpu_power_method": (str(run.gpu_power_method) if feasible and run.device == "gpu"
                                 and run.avg_gpu_power_w is not None else "unknown"),
        })
    return rows


def main(args: Args) -> Path:
    import torch

    from placement.core.trace import TraceMeta, file_sha256, write_trace
    from placement.core.version import code_version
    from placement.lab.job_probe import probe_workload
    from placement.lab.profiler import resolve_target

    target = resolve_target("auto")
    torch.set_num_threads(target.cpu_cores)
    jobs = job_list(args)
    journal = args.out.with_name(args.out.name + ".journal.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    with journal.open("w") as fh:
        for k, (name, mode, batch) in enumerate(jobs):
            if time.perf_counter() - started > args.time_limit_s:
                failures.append({"job": [name, mode, batch], "error": "time limit: not probed"})
                continue
            try:
                result = probe_workload(name, batch, mode, seed=args.seed, devices=args.devices, budget_s=args.budget_s,
                                        cpu_tdp_w=target.cpu_tdp_w, cpu_idle_w=target.cpu_idle_w, host=target.id)
            except Exception as exc:  # one job's failure is recorded, the sweep goes on
                failures.append({"job": [name, mode, batch], "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            fh.write(result.model_dump_json() + "\n")
            fh.flush()
            rows.extend(trace_rows(result, target))
            print(f"[{k + 1}/{len(jobs)}] {name} {mode} b{batch}: {result.wall_s:.2f} s"
                  f"{' early' if result.early_exit else ''}", flush=True)
    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    meta = TraceMeta(source="probe", description="job probes of the zoo jobs of the long H200 sweeps (experiments/probe_zoo.py)",
                     seed=args.seed, code_version=code_version(),
                     hardware=json.dumps({"environment": env, "target": target.model_dump(mode="json")}, sort_keys=True),
                     method=METHOD, extra={"journal": journal.name, "journal_sha256": file_sha256(journal),
                                           "failures": failures, "budget_s": args.budget_s, "jobs": len(jobs),
                                           "sweep_wall_s": time.perf_counter() - started})
    write_trace(pd.DataFrame(rows), args.out, meta)
    print(f"wrote {len(rows)} rows to {args.out}; {len(failures)} failures; {time.perf_counter() - started:.1f} s")
    return args.out


def parse(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Args.out)
    p.add_argument("--budget-s", type=float, default=Args.budget_s)
    p.add_argument("--time-limit-s", type=float, default=Args.time_limit_s)
    p.add_argument("--devices", default="cpu,gpu")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    return Args(out=a.out, budget_s=a.budget_s, time_limit_s=a.time_limit_s, devices=tuple(a.devices.split(",")),
                limit=a.limit, seed=a.seed)


if __name__ == "__main__":
    main(parse())
