"""Decision latency and throughput of every policy (a benchmark, not a test).

Run: ``.venv/bin/python benchmarks/bench_decide.py [--model models/default] [--calls N] [--batch B]``

Prints, measured in this run on this machine, per policy:

* single decision, features -> answer: ``policy.predict(x)`` on one raw feature vector,
  timed call by call over ``N`` calls cycling through real feature rows (p50 / p90 / p99 in
  microseconds), in ``--passes`` passes; the pass with the lowest p50 is reported (the one
  least disturbed by other processes on a shared host). Target: p50 <= 20 us for the
  serving policies (DNN, PPO).
* batched: ``policy.predict(X)`` on ``B`` rows at a time, decisions per second (best of
  ``--repeats``). Target: >= 200k decisions/s.
* for reference, ``policy.decide(job, target)`` (typed records in, feature building
  included) p50 for the serving policies.

Feature rows are the labelled (job, target) pairs of the shipped traces. The serving
policies run their numpy path (no torch). BLAS is held to one thread.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from placement.agents.artifact import DEFAULT_MODEL_DIR, load_model  # noqa: E402
from placement.agents.baselines import (  # noqa: E402
    CpuOnlyPolicy,
    GpuOnlyPolicy,
    OraclePolicy,
    RandomPolicy,
    RuleBasedPolicy,
)
from placement.agents.evaluation import load_labelled  # noqa: E402
from placement.agents.policy import Policy  # noqa: E402
from placement.core.job import Job  # noqa: E402
from placement.core.trace import row_target  # noqa: E402
from placement.core.version import code_version  # noqa: E402

TRACE_DIR = ROOT / "data" / "traces"
TRACES = [TRACE_DIR / "paper_table2.csv", TRACE_DIR / "simulated.parquet", *sorted(TRACE_DIR.glob("*_measured.parquet"))]


def single_latency_us(policy: Policy, x: np.ndarray, calls: int) -> np.ndarray:
    rows = [np.ascontiguousarray(r) for r in x]
    for r in rows[:200]:  # warm-up
        policy.predict(r)
    out = np.empty(calls)
    clock = time.perf_counter_ns
    n = len(rows)
    for i in range(calls):
        r = rows[i % n]
        t0 = clock()
        policy.predict(r)
        out[i] = clock() - t0
    return out / 1e3


def best_pass_us(policy: Policy, x: np.ndarray, calls: int, passes: int) -> np.ndarray:
    """Per-call latencies of the pass with the lowest median."""
    runs = [single_latency_us(policy, x, calls) for _ in range(max(1, passes))]
    return min(runs, key=lambda r: float(np.median(r)))


def batched_rate(policy: Policy, x: np.ndarray, batch: int, repeats: int) -> float:
    reps = int(np.ceil(batch / len(x)))
    xb = np.ascontiguousarray(np.tile(x, (reps, 1))[:batch])
    policy.predict(xb)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        policy.predict(xb)
        best = min(best, time.perf_counter() - t0)
    return batch / best


def decide_p50_us(policy: Policy, pairs, calls: int) -> float:
    jobs, targets = [], []
    for _, row in pairs.head(64).iterrows():
        jobs.append(Job(family=row["family"], mode=row["mode"], batch_size=int(row["batch_size"]),
                        flops_per_batch=float(row["flops_per_batch"]), param_count=int(row["param_count"]),
                        input_elems_per_sample=int(row["input_elems_per_sample"]),
                        input_bytes_per_sample=int(row["input_bytes_per_sample"])))
        targets.append(row_target(row))
    times = np.empty(calls)
    for i in range(calls):
        k = i % len(jobs)
        t0 = time.perf_counter_ns()
        policy.decide(jobs[k], targets[k])
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times) / 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()

    loaded = load_model(args.model)
    traces = [p for p in TRACES if p.exists()]
    data, _ = load_labelled(traces, loaded.thresholds)
    x = data.x
    policies: dict[str, Policy] = {
        "cpu_only": CpuOnlyPolicy(),
        "gpu_only": GpuOnlyPolicy(),
        "random": RandomPolicy(seed=0),
        "rule_based": RuleBasedPolicy.fit(x, data.y),
        "oracle (lookup)": OraclePolicy.from_pairs(data.pairs, x),
        "dnn": loaded.dnn,
    }
    if loaded.ppo is not None:
        policies["ppo"] = loaded.ppo

    print(f"bench_decide  model {loaded.metadata.version} ({args.model})  code {code_version()}")
    print(f"host {platform.node()}  {platform.processor() or platform.machine()}  cpus {os.cpu_count()}  "
          f"python {platform.python_version()}  numpy {np.__version__}  load average {os.getloadavg()[0]:.1f}")
    print(f"feature rows: {len(x)} labelled pairs from {', '.join(p.name for p in traces)}")
    print(f"single: {args.calls} calls of predict(one row), best of {args.passes} passes by p50; "
          f"batched: predict({args.batch} rows), best of {args.repeats}")
    print()
    print(f"{'policy':18s} {'p50 us':>8s} {'p90 us':>8s} {'p99 us':>8s} {'batched dec/s':>15s}")
    measured: dict[str, tuple[float, float]] = {}
    for name, policy in policies.items():
        lat = best_pass_us(policy, x, args.calls, args.passes)
        rate = batched_rate(policy, x, args.batch, args.repeats)
        measured[name] = (float(np.percentile(lat, 50)), rate)
        print(f"{name:18s} {np.percentile(lat, 50):8.2f} {np.percentile(lat, 90):8.2f} {np.percentile(lat, 99):8.2f} "
              f"{rate:15,.0f}")
    print()
    for name in ("dnn", "ppo"):
        if name in policies:
            print(f"{name}: decide(job, target) p50 {decide_p50_us(policies[name], data.pairs, 5000):.1f} us "
                  "(typed records in, feature building included)")
    serving = "ppo" if "ppo" in policies else "dnn"
    p50, rate = measured[serving]
    print()
    print(f"targets ({serving}, the serving policy): single p50 {p50:.2f} us (<= 20: {'met' if p50 <= 20 else 'MISSED'}); "
          f"batched {rate:,.0f}/s (>= 200,000: {'met' if rate >= 200_000 else 'MISSED'})")


if __name__ == "__main__":
    main()
