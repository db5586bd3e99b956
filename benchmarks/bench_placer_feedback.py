"""Placement latency while feedback streams in (a benchmark, not a test).

Run: ``.venv/bin/python benchmarks/bench_placer_feedback.py [--model models/default] [--events 800]``

The library placer (no HTTP) on catalogue target A with a fresh SQLite store: every event places
one job and feeds back its chosen device's outcome (performance model with noise, ``modelled``).
The target's offsets (:mod:`placement.serve.learning.offsets`: read and screen the last 800 feedback rows) are
recomputed once every ``placement.serve.placer.OFFSET_REFRESH_ROWS`` rows, in one run two ways on the same
events: ``inline`` (the library default: the first placement that finds them stale pays for it)
and ``background`` (as the service runs: ``offsets_inline=False`` and a thread calling
``Placer.refresh_offsets`` every ``placement.serve.app.OFFSETS_POLL_S``, like ``PlacementService``).
Prints the placement latency per block of events for each, their p90 ratio, and the time of one
offsets recomputation at the end, all measured in this run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from placement.core.catalogue import get_target  # noqa: E402
from placement.core.job import Job  # noqa: E402
from placement.model.perfmodel import PerformanceModel, model_columns  # noqa: E402
from placement.model.simulate import generate_jobs  # noqa: E402
from placement.serve.app import OFFSETS_POLL_S  # noqa: E402
from placement.serve.learning.offsets import target_timeline  # noqa: E402
from placement.serve.placer import OFFSET_REFRESH_ROWS, Placer, bootstrap_store  # noqa: E402
from placement.serve.schemas import FeedbackRequest, PlacementRequest  # noqa: E402
from placement.serve.settings import Settings  # noqa: E402
from placement.serve.storage.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--events", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    target = get_target("A")
    model = PerformanceModel()
    frame = generate_jobs(args.events, np.random.default_rng(args.seed + 1))
    jobs = [Job(name=r.model, family=r.family, mode=r.mode, batch_size=r.batch_size, flops_per_batch=r.flops_per_batch,
                param_count=r.param_count, input_elems_per_sample=r.input_elems_per_sample,
                input_bytes_per_sample=r.input_bytes_per_sample) for r in frame.itertuples()]
    p90 = {}
    for mode in ("inline", "background"):
        p90[mode] = _stream(mode, jobs, target, model, args)
    print(f"p90 of the last block, background / inline: {p90['background'] / p90['inline']:.3f}")


def _stream(mode: str, jobs: list[Job], target, model, args) -> float:
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-placer-") as tmp:
        settings = Settings(state_dir=Path(tmp), model_path=args.model, exploration_rate=0.1, seed=args.seed)
        store = Store(settings.database)
        placer = Placer(bootstrap_store(store, settings), settings=settings, store=store,
                        offsets_inline=mode == "inline")
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(OFFSETS_POLL_S):
                placer.refresh_offsets()

        worker = threading.Thread(target=refresh, daemon=True)
        if mode == "background":
            worker.start()
        latency_s = []
        for job in jobs:
            t0 = time.perf_counter()
            (d,) = placer.place(PlacementRequest(job=job, target="A")).to_response().decisions
            latency_s.append(time.perf_counter() - t0)
            pred = model.predict_columns(model_columns(job, target), d.device, np.nan, np.nan, rng)
            outcome: dict = {"device": d.device, "feasible": bool(pred.feasible[0])}
            if pred.feasible[0]:
                outcome.update(n_samples=job.batch_size, time_total_s=float(pred.time_per_batch_s[0]),
                               avg_cpu_power_w=float(pred.avg_cpu_power_w[0]), cpu_power_method="modelled")
                if d.device == "gpu":
                    outcome.update(avg_gpu_power_w=float(pred.avg_gpu_power_w[0]), gpu_power_method="modelled")
            else:
                outcome["infeasible_reason"] = str(pred.infeasible_reason[0])
            placer.feedback(FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": outcome}))
        stop.set()
        if worker.is_alive():
            worker.join()
        lat = np.asarray(latency_s) * 1000
        print(f"[{mode}] {args.events} events, offsets recomputed every {OFFSET_REFRESH_ROWS} feedback rows")
        block = max(1, args.events // 4)
        for lo in range(0, args.events, block):
            part = lat[lo:lo + block]
            print(f"events {lo:4d}-{lo + len(part) - 1:4d}: placement p50 {np.median(part):7.1f} ms  "
                  f"p90 {np.quantile(part, 0.9):7.1f} ms  max {part.max():7.1f} ms")
        t0 = time.perf_counter()
        target_timeline(store, placer.perf_model, target)
        print(f"[{mode}] one offsets recomputation: {1000 * (time.perf_counter() - t0):.1f} ms; "
              f"offsets in use at the end: {placer._target_offsets(target)}")
        store.close()
        return float(np.quantile(lat[-block:], 0.9))


if __name__ == "__main__":
    main()
