"""Steps per second of ``placement/DevicePlacement-v0``, per mode (a benchmark, not a test).

Run: ``.venv/bin/python benchmarks/bench_env.py [--steps N] [--seed S]``

Each mode builds its environment, warms it up (first block, trace tables), then times
``N`` ``step()`` calls with pre-sampled random actions (so the policy costs nothing),
resets included whenever an episode is truncated. Both the bare environment and the
``gymnasium.make`` one (with its passive checker and order-enforcing wrappers) are timed.
Target: >= 20k steps/s for the single environment on a 2-core machine.

Modes:

* ``trace-discrete``: a simulated trace on the desktop/server targets (``Discrete(2)``).
* ``trace-edge``: a simulated trace on every catalogue target, edge knob runs included
  (``MultiDiscrete([2, 6, 5])``).
* ``trace-contention``: the edge trace, Poisson arrivals and one GPU queue (wait-aware
  labels recomputed whenever the GPU is busy).
* ``model-edge``: jobs from ``placement.model.simulate.generate_jobs``, outcomes from
  ``placement.model.perfmodel`` per block of 1024 jobs (the generator is the cost here).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import placement.envs  # noqa: E402,F401  (registers the env)
from placement.core.catalogue import default_catalogue  # noqa: E402
from placement.core.version import code_version  # noqa: E402
from placement.envs.device_placement import ENV_ID, DevicePlacementEnv  # noqa: E402
from placement.model.simulate import simulate_trace  # noqa: E402


def _time_steps(env: gym.Env, steps: int, seed: int) -> float:
    """Steps per second over ``steps`` steps with pre-sampled random actions."""
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=seed)
    for a in actions[:2000]:  # warm-up: first blocks, caches
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    env.reset(seed=seed + 1)
    start = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--model-steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    catalogue = default_catalogue()
    t0 = time.perf_counter()
    edge_trace = simulate_trace(list(catalogue.values()), n_jobs=300, seed=args.seed)
    flat_trace = edge_trace[edge_trace["hw_kind"] != "edge"].reset_index(drop=True)
    build_s = time.perf_counter() - t0

    modes = {
        "trace-discrete": ({"source": flat_trace}, args.steps),
        "trace-edge": ({"source": edge_trace}, args.steps),
        "trace-contention": ({"source": edge_trace, "contention": True}, args.steps),
        "model-edge": ({"source": "model"}, args.model_steps),
    }
    print(f"# DevicePlacement-v0 steps/s  code {code_version()}  python {platform.python_version()}  "
          f"numpy {np.__version__}  gymnasium {gym.__version__}  cpus {os.cpu_count()}  "
          f"affinity {len(os.sched_getaffinity(0))}")
    print(f"# simulated trace: {len(edge_trace)} runs, {edge_trace['job_id'].nunique()} jobs x "
          f"{edge_trace['target_id'].nunique()} targets, built in {build_s:.1f} s (seed {args.seed})")
    print(f"{'mode':<18} {'action space':<24} {'steps':>8} {'bare env':>12} {'gym.make':>12}")
    for name, (kwargs, steps) in modes.items():
        bare = DevicePlacementEnv(**kwargs)
        made = gym.make(ENV_ID, **kwargs)
        rate_bare = _time_steps(bare, steps, args.seed)
        rate_made = _time_steps(made, steps, args.seed)
        space = str(bare.action_space)
        print(f"{name:<18} {space:<24} {steps:>8} {rate_bare:>10,.0f}/s {rate_made:>10,.0f}/s")


if __name__ == "__main__":
    main()
