"""Wall time of one online-learner update with the default history window (a benchmark, not a test).

Run: ``.venv/bin/python benchmarks/bench_learner.py [--model models/default] [--rows 5000] [--threads 2]``

Fills a fresh store with ``--rows`` placements and chosen-device feedback on catalogue target
B (outcomes from the performance model with noise, ``modelled``), then times
:meth:`placement.serve.learning.learner.Learner.update` ``--repeats`` times with the service's default settings
(``history_window`` 5000, ``ppo_timesteps`` 4096; torch on ``--threads`` threads; each update
rolled back so the next starts from the same serving version). The first update includes
one-time imports (torch dynamo, SB3); the figure that counts is the best of the later ones.
Prints the phases' shares from the last update. Target: <= 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from placement.agents.artifact import DEFAULT_MODEL_DIR  # noqa: E402
from placement.core.catalogue import get_target  # noqa: E402
from placement.core.job import Job  # noqa: E402
from placement.model.perfmodel import PerformanceModel, model_columns  # noqa: E402
from placement.model.simulate import generate_jobs  # noqa: E402
from placement.serve.learning.learner import Learner  # noqa: E402
from placement.serve.placer import Placer, bootstrap_store  # noqa: E402
from placement.serve.schemas import FeedbackRequest, PlacementRequest  # noqa: E402
from placement.serve.settings import Settings  # noqa: E402
from placement.serve.storage.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    target = get_target("B")
    pm = PerformanceModel()
    rng = np.random.default_rng(a.seed)
    frame = generate_jobs(a.rows, rng)
    jobs = [Job(name=str(r.model), family=r.family, mode=r.mode, batch_size=int(r.batch_size),
                flops_per_batch=float(r.flops_per_batch), param_count=int(r.param_count),
                input_elems_per_sample=int(r.input_elems_per_sample),
                input_bytes_per_sample=int(r.input_bytes_per_sample)) for r in frame.itertuples()]
    with tempfile.TemporaryDirectory(prefix="bench-learner-") as tmp:
        settings = Settings(state_dir=Path(tmp), model_path=a.model, torch_threads=a.threads, seed=a.seed)
        store = Store(settings.database)
        placer = Placer(bootstrap_store(store, settings), settings=settings, store=store,
                        offsets_inline=False)  # filling only: no placement pays for offsets
        t0 = time.perf_counter()
        for start in range(0, len(jobs), 500):
            chunk = jobs[start:start + 500]
            decisions = placer.place(PlacementRequest(jobs=chunk, target="B")).to_response().decisions
            for job, d in zip(chunk, decisions, strict=True):
                pred = pm.predict_columns(model_columns(job, target), d.device, np.nan, np.nan, rng)
                if not pred.feasible[0]:
                    out = {"device": d.device, "feasible": False, "infeasible_reason": str(pred.infeasible_reason[0])}
                else:
                    out = {"device": d.device, "n_samples": job.batch_size, "time_total_s": float(pred.time_per_batch_s[0]),
                           "avg_cpu_power_w": float(pred.avg_cpu_power_w[0]), "cpu_power_method": "modelled"}
                    if d.device == "gpu":
                        out.update(avg_gpu_power_w=float(pred.avg_gpu_power_w[0]), gpu_power_method="modelled")
                placer.feedback(FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": out}))
        print(f"filled {store.feedback_count()} feedback rows in {time.perf_counter() - t0:.1f} s")
        start_version = store.active_version()
        times = []
        for k in range(a.repeats):
            report = Learner(settings, store).update()
            times.append(report.duration_s)
            print(f"update {k + 1}: {report.duration_s:.2f} s ({report.status}; {report.feedback_used} feedback, "
                  f"{report.train_rows} train / {report.holdout_rows} held out; screened {report.screened_out})")
            if store.active_version() != start_version:
                store.rollback(start_version)
        later = times[1:] or times
        print(f"learner update, window {settings.history_window}, {settings.ppo_timesteps} PPO steps, "
              f"{a.threads} torch threads: best later update {min(later):.2f} s, first {times[0]:.2f} s "
              f"(target <= 10 s) on {platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main()
