"""PPO training steps/s and the online learner's update time (a benchmark, not a test).

Run: ``.venv/bin/python benchmarks/bench_train.py [--model models/default] [--steps 8192] [--feedback 300]``

Prints, measured in this run on this machine (torch and BLAS held to ``--threads``):

1. **PPO training steps/s** -- environment steps per second of ``model.learn`` (rollout
   collection, GAE and the optimisation epochs together) on ``DevicePlacement-v0``:

   * ``cold``: a fresh agent (:meth:`placement.agents.ppo.PpoConfig.cold`) on a simulated trace;
   * ``fine-tune``: the bundled model's PPO continued by :func:`placement.agents.ppo.fine_tune` (the
     learner's recipe) on the same trace.

2. **Learner update time** -- one :meth:`placement.serve.learning.learner.Learner.update` (the whole online
   update: read the feedback window, form rewards, split, fine-tune PPO for
   ``ppo_timesteps``, score serving and candidate on the holdout, save and register the
   candidate) on ``--feedback`` feedback rows made by the in-process placer on catalogue
   target B, outcomes from the performance model with noise; repeated ``--repeats`` times
   (each on fresh state), median and spread printed with the reward-formation share.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _feedback_store(model: Path, state: Path, n: int, seed: int, ppo_timesteps: int):
    from placement.core.catalogue import get_target
    from placement.core.job import Job
    from placement.model.perfmodel import PerformanceModel, model_columns
    from placement.model.simulate import generate_jobs
    from placement.serve.placer import Placer, bootstrap_store
    from placement.serve.schemas import FeedbackRequest, PlacementRequest
    from placement.serve.settings import Settings
    from placement.serve.storage.store import Store

    target = get_target("B")
    settings = Settings(state_dir=state, model_path=model, exploration_rate=0.1, min_holdout=8, seed=seed,
                        ppo_timesteps=ppo_timesteps, history_window=max(n, 10))
    store = Store(settings.database)
    placer = Placer(bootstrap_store(store, settings), settings=settings, store=store)
    perf = PerformanceModel()
    rng = np.random.default_rng(seed)
    frame = generate_jobs(n, rng)
    for r in frame.itertuples():
        job = Job(name=r.model, family=r.family, mode=r.mode, batch_size=r.batch_size, flops_per_batch=r.flops_per_batch,
                  param_count=r.param_count, input_elems_per_sample=r.input_elems_per_sample,
                  input_bytes_per_sample=r.input_bytes_per_sample)
        (d,) = placer.place(PlacementRequest(job=job, target="B")).to_response().decisions
        pred = perf.predict_columns(model_columns(job, target), d.device, np.nan, np.nan, rng)
        if not pred.feasible[0]:
            out = {"device": d.device, "feasible": False, "infeasible_reason": str(pred.infeasible_reason[0])}
        else:
            out = {"device": d.device, "n_samples": job.batch_size, "time_total_s": float(pred.time_per_batch_s[0]),
                   "avg_cpu_power_w": float(pred.avg_cpu_power_w[0]), "cpu_power_method": "modelled"}
            if d.device == "gpu":
                out.update(avg_gpu_power_w=float(pred.avg_gpu_power_w[0]), gpu_power_method="modelled")
        placer.feedback(FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": out}))
    return settings, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: bundled models/default)")
    parser.add_argument("--steps", type=int, default=8192, help="PPO timesteps per training measurement")
    parser.add_argument("--feedback", type=int, default=300, help="feedback rows for the learner update")
    parser.add_argument("--ppo-timesteps", type=int, default=4096, help="learner's ppo_timesteps (the service default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from placement.agents.artifact import DEFAULT_MODEL_DIR, load_model
    from placement.agents.ppo import PpoConfig, fine_tune, make_env, make_ppo
    from placement.core.catalogue import default_catalogue
    from placement.core.version import code_version
    from placement.model.simulate import simulate_trace
    from placement.serve.learning.learner import Learner

    torch.set_num_threads(args.threads)
    model_dir = args.model or DEFAULT_MODEL_DIR
    catalogue = default_catalogue()
    trace = simulate_trace([t for t in catalogue.values() if t.kind != "edge"], n_jobs=200, seed=args.seed)
    print(f"# training benchmark  code {code_version()}  python {platform.python_version()}  torch {torch.__version__}"
          f"  threads {args.threads}  cpus {os.cpu_count()}  load average {os.getloadavg()[0]:.1f}")
    print(f"# simulated trace {len(trace)} runs on {trace['target_id'].nunique()} desktop/server targets (seed {args.seed})")

    # 1. PPO training steps/s
    rows = []
    env = make_env(trace)
    loaded = load_model(model_dir)
    cold = make_ppo(env, loaded.normaliser, PpoConfig.cold(), args.seed)
    cold.learn(total_timesteps=min(2048, args.steps))  # warm-up (first rollout, torch kernels)
    t0 = time.perf_counter()
    cold.learn(total_timesteps=args.steps, reset_num_timesteps=False)
    rows.append(("cold PPO", args.steps, time.perf_counter() - t0))
    t0 = time.perf_counter()
    fine_tune(load_model(model_dir), make_env(trace), args.steps, seed=args.seed, config=PpoConfig.warm())
    rows.append(("fine-tune (learner recipe)", args.steps, time.perf_counter() - t0))
    print(f"{'PPO training':<30} {'steps':>8} {'seconds':>9} {'steps/s':>9}")
    for name, steps, secs in rows:
        print(f"{name:<30} {steps:>8} {secs:>9.2f} {steps / secs:>9.0f}")

    # 2. learner update time
    durations, forming = [], []
    statuses = []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
            settings, store = _feedback_store(model_dir, Path(tmp), args.feedback, args.seed + r, args.ppo_timesteps)
            learner = Learner(settings, store)
            from placement.serve.learning.rewards import form_rewards

            t0 = time.perf_counter()
            form_rewards(store.recent_feedback(settings.history_window), load_model(model_dir).thresholds,
                         learner.perf_model, learner.reward_settings)
            forming.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = learner.update()
            durations.append(time.perf_counter() - t0)
            statuses.append(report.status)
            store.close()
    print(f"learner update ({args.feedback} feedback, ppo_timesteps {args.ppo_timesteps}, {args.repeats} runs): "
          f"median {statistics.median(durations):.2f} s (min {min(durations):.2f}, max {max(durations):.2f}); "
          f"reward formation alone median {statistics.median(forming):.3f} s; results {statuses}")


if __name__ == "__main__":
    main()
