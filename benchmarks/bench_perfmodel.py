"""Throughput of the performance model and the job generator (a benchmark, not a test).

Run: ``.venv/bin/python benchmarks/bench_perfmodel.py [--rows N] [--repeats R] [--seed S]``

Prints, measured in this run on this machine:

* ``predict_columns`` rows/s on N rows drawn from a simulated trace of every catalogue target
  (numpy columns and a trace DataFrame; noise on). Target: >= 1e5 rows/s.
* the latency of one ``predict_columns`` call on one row and of ``predict()`` (the serving path);
* ``generate_jobs`` jobs/s (the environment's model job source draws blocks of 1024).

Each figure is the best of R repeats (the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from placement.core.catalogue import default_catalogue, get_target  # noqa: E402
from placement.core.job import Job  # noqa: E402
from placement.core.version import code_version  # noqa: E402
from placement.model.perfmodel import PerformanceModel  # noqa: E402
from placement.model.simulate import generate_jobs, simulate_trace  # noqa: E402

TARGET_ROWS_PER_S = 1e5


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    model = PerformanceModel()
    trace = simulate_trace(list(default_catalogue().values()), 200, args.seed)
    big = trace.sample(args.rows, replace=True, random_state=args.seed).reset_index(drop=True)
    cols = {c: big[c].to_numpy() for c in big.columns}
    device = big["device"].to_numpy(dtype=object)
    cores = big["cpu_cores"].to_numpy(dtype=np.float64)
    caps = big["gpu_mem_cap_mib"].to_numpy(dtype=np.float64, na_value=np.nan)
    rng = np.random.default_rng(args.seed)

    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"code {code_version()}; model {model.version}")
    t = best_of(args.repeats, lambda: model.predict_columns(cols, device, cores, caps, rng))
    rate = args.rows / t
    print(f"predict_columns, numpy columns: {rate:,.0f} rows/s ({args.rows} rows in {t * 1e3:.1f} ms) "
          f"-- target >= {TARGET_ROWS_PER_S:,.0f}: {'met' if rate >= TARGET_ROWS_PER_S else 'MISSED'}")
    t = best_of(args.repeats, lambda: model.predict_columns(big, device, cores, caps, rng))
    print(f"predict_columns, trace DataFrame: {args.rows / t:,.0f} rows/s")

    one = {k: v[:1] for k, v in cols.items()}
    n_calls = 500
    t = best_of(args.repeats, lambda: [model.predict_columns(one, device[:1], cores[:1], caps[:1]) for _ in range(n_calls)])
    print(f"predict_columns, one row: {t / n_calls * 1e6:.0f} us per call")
    job = Job(name="resnet18_cifar10", family="cnn", mode="infer", batch_size=32, flops_per_batch=74_033_152.0 * 32,
              param_count=11_181_642, input_elems_per_sample=3072, input_bytes_per_sample=12288)
    target = get_target("orin-nano")
    t = best_of(args.repeats, lambda: [model.predict(job, target, "gpu") for _ in range(n_calls)])
    print(f"predict(job, target, device): {t / n_calls * 1e6:.0f} us per call")

    gen_rng = np.random.default_rng(args.seed)
    t = best_of(args.repeats, lambda: generate_jobs(1024, gen_rng))
    print(f"generate_jobs: {1024 / t:,.0f} jobs/s (blocks of 1024)")


if __name__ == "__main__":
    main()
