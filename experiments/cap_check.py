"""Run every advised GPU memory cap on the GPU: does any job run out of memory under its cap?

Issue 14's target "no recommended cap that runs out of memory" was scored against a proxy: the
caching allocator's *reserved* peak of the job's uncapped run (journals of the reference traces),
which overstates what the job needs. This experiment measures it: for every job of that check,
the cap :func:`placement.model.knob_advice.advise_knobs` recommends on the H200 host is applied
(``torch.cuda.set_per_process_memory_fraction``, the profiler's own knob,
:mod:`placement.lab.knobs`) and the job is run on the GPU by the job probe (build under the cap,
warm-up, timed steps), recording whether it ran or hit OOM and its allocated peak.

Two steps, because the advice needs the operator model's LOAO frame (minutes, here) and the run
needs the GPU:

    python -m experiments.cap_check --plan                # here: results/cap_check/plan.json
    python -m experiments.cap_check --run                 # on the lent H200: results/cap_check/runs.jsonl
    python -m experiments.cap_check --scan                # on the lent H200: results/cap_check/scan.jsonl

``--scan`` reruns each job that ran out of memory under caps growing by 1.25x (64 MiB steps) until
it runs: how far below its need the advice was.

``--run --devices cpu --limit 2`` is a smoke test without a GPU (no cap applies there).
The calibration report (``python -m placement.model.opcalibration --report docs/calibration.md``)
reads ``runs.jsonl`` when present.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT = Path("results/cap_check")


@dataclass
class Args:
    plan: bool = False
    run: bool = False
    scan: bool = False
    out: Path = OUT
    budget_s: float = 2.0
    """The probe's budget per job (timing only: no energy window, no CPU side)."""
    devices: tuple[str, ...] = ("gpu",)
    limit: int = 0
    seed: int = 0


def make_plan(args: Args) -> Path:
    """Every (workload, mode, batch) of the knob evaluation's cap check with the advised cap."""
    from placement.core.catalogue import get_target
    from placement.core.decision import GROW
    from placement.core.version import code_version
    from placement.model import opcalibration as oc
    from placement.model.knob_advice import advise_knobs

    df = oc.leave_one_architecture_out(oc.predictions(oc.REFERENCE_TRACES, None))
    peaks = oc.journal_peaks([str(p) + ".journal.jsonl" for p in oc.REFERENCE_TRACES
                              if Path(str(p) + ".journal.jsonl").exists()])
    target = get_target("h200-host")
    jobs = []
    for (model, mode, batch), peak in sorted(peaks.items()):
        row = df[(df.model == model) & (df["mode"] == mode) & (df.batch_size == batch)]
        if row.empty:
            continue
        advice = advise_knobs(oc._job(row.iloc[0]), target, "gpu")
        jobs.append({"workload": model, "mode": mode, "batch_size": batch,
                     "cap_mib": None if advice.gpu_mem_cap_mib == GROW else int(advice.gpu_mem_cap_mib),
                     "estimated_peak_mib": round(advice.peak_mib, 1), "reserved_peak_mib": peak})
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "plan.json"
    path.write_text(json.dumps({"code_version": code_version(), "target": target.id,
                                "advice": "placement.model.knob_advice.advise_knobs(job, h200-host, 'gpu')",
                                "jobs": jobs}, indent=1) + "\n")
    print(f"{len(jobs)} jobs, {sum(j['cap_mib'] is not None for j in jobs)} with an explicit cap -> {path}")
    return path


def run_plan(args: Args) -> Path:
    """Probe each planned job on the GPU under its cap; one JSON line per job, then a summary line."""
    import torch

    from placement.core.version import code_version
    from placement.lab.job_probe import probe_workload
    from placement.lab.profiler import resolve_target

    plan = json.loads((args.out / "plan.json").read_text())
    jobs = [j for j in plan["jobs"] if j["cap_mib"] is not None]
    jobs = jobs[: args.limit] if args.limit else jobs
    target = resolve_target("auto")
    torch.set_num_threads(target.cpu_cores)
    path = args.out / "runs.jsonl"
    ran = oom = failed = 0
    started = time.perf_counter()
    with path.open("w") as fh:
        for j in jobs:
            rec: dict[str, Any] = dict(j)
            try:
                result = probe_workload(j["workload"], j["batch_size"], j["mode"], seed=args.seed, devices=args.devices,
                                        budget_s=args.budget_s, gpu_mem_cap_mib=j["cap_mib"], energy="auto",
                                        cpu_tdp_w=target.cpu_tdp_w, cpu_idle_w=target.cpu_idle_w, host=target.id)
                run = next(r for r in result.runs if r.device == args.devices[0])
                rec.update(feasible=bool(run.feasible), infeasible_reason=run.infeasible_reason,
                           peak_allocated_mib=run.gpu_mem_peak_mib, wall_s=round(result.wall_s, 3))
                ran += int(run.feasible)
                oom += int(not run.feasible and (run.infeasible_reason or "") == "oom")
                failed += int(not run.feasible and (run.infeasible_reason or "") != "oom")
            except Exception as exc:  # recorded, the sweep goes on
                rec.update(feasible=None, error=f"{type(exc).__name__}: {exc}"[:300])
                failed += 1
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
        summary = {"summary": True, "jobs": len(jobs), "ran": ran, "oom": oom, "failed": failed,
                   "host": target.id, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                   "torch": torch.__version__, "code_version": code_version(), "seed": args.seed,
                   "plan_code_version": plan["code_version"], "wall_s": round(time.perf_counter() - started, 1)}
        fh.write(json.dumps(summary) + "\n")
    print(json.dumps(summary))
    return path


def scan_ooms(args: Args, steps: int = 8) -> Path:
    """For each job of runs.jsonl that ran out of memory: the smallest cap of advised x 1.25^k
    (rounded up to 64 MiB, k = 1..steps) under which it runs."""
    import math

    import torch

    from placement.core.version import code_version
    from placement.lab.job_probe import probe_workload
    from placement.lab.profiler import resolve_target

    recs = [json.loads(line) for line in (args.out / "runs.jsonl").read_text().splitlines()]
    ooms = [r for r in recs if not r.get("summary") and r.get("feasible") is False]
    target = resolve_target("auto")
    torch.set_num_threads(target.cpu_cores)
    path = args.out / "scan.jsonl"
    with path.open("w") as fh:
        for r in ooms:
            tried = []
            for k in range(1, steps + 1):
                cap = int(math.ceil(r["cap_mib"] * 1.25**k / 64.0) * 64)
                result = probe_workload(r["workload"], r["batch_size"], r["mode"], seed=args.seed, devices=("gpu",),
                                        budget_s=args.budget_s, gpu_mem_cap_mib=cap, energy="auto",
                                        cpu_tdp_w=target.cpu_tdp_w, cpu_idle_w=target.cpu_idle_w, host=target.id)
                run = result.runs[0]
                tried.append({"cap_mib": cap, "feasible": bool(run.feasible), "peak_allocated_mib": run.gpu_mem_peak_mib})
                if run.feasible:
                    break
            fh.write(json.dumps({**{k: r[k] for k in ("workload", "mode", "batch_size", "cap_mib", "estimated_peak_mib",
                                                      "reserved_peak_mib")}, "tried": tried,
                                 "smallest_cap_that_ran_mib": next((t["cap_mib"] for t in tried if t["feasible"]), None),
                                 "code_version": code_version(), "torch": torch.__version__}) + "\n")
    print(path.read_text())
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", action="store_true", help="write plan.json (advised caps; no GPU needed)")
    p.add_argument("--run", action="store_true", help="run plan.json's capped jobs on this machine's GPU")
    p.add_argument("--scan", action="store_true", help="find the cap each out-of-memory job of runs.jsonl needs")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--budget-s", type=float, default=2.0)
    p.add_argument("--devices", default="gpu")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    args = Args(plan=a.plan, run=a.run, scan=a.scan, out=a.out, budget_s=a.budget_s, devices=tuple(a.devices.split(",")),
                limit=a.limit, seed=a.seed)
    if not (args.plan or args.run or args.scan):
        p.error("give --plan, --run and/or --scan")
    if args.plan:
        make_plan(args)
    if args.run:
        run_plan(args)
    if args.scan:
        scan_ooms(args)


if __name__ == "__main__":
    main()
