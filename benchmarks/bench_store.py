"""Store cost per call on the request path: SQLite, and PostgreSQL when a URL is given (a benchmark, not a test).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_store.py [--db-url postgresql+psycopg://...] [--n 400]``

For each engine: ``insert_decisions`` of a one-job batch (what every single placement
commits before answering), ``record_feedback`` (idempotent insert, committed before the
answer) and ``get_meta`` (what each replica's policy poll reads), ``--n`` calls each, after
a warm-up; printed as wall and process-CPU microseconds per call. The PostgreSQL URL must
name an empty database the benchmark may write (e.g. one a test server created).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _batch(n: int = 1):
    import numpy as np

    from placement.core.catalogue import get_target
    from placement.core.threshold import Thresholds
    from placement.serve.storage.store import DecisionBatch

    cols = {
        "batch_size": np.full(n, 64), "flops_per_batch": np.full(n, 7e11), "param_count": np.full(n, 11_230_000),
        "input_elems_per_sample": np.full(n, 150_528), "input_bytes_per_sample": np.full(n, 602_112),
        "dataset_size": np.full(n, -1), "gpu": np.full(n, True), "cpu_cores": np.full(n, 8),
        "gpu_mem_cap_mib": np.full(n, -1), "gpu_probability": np.full(n, 0.7), "predicted_speedup": np.full(n, 9.8),
        "predicted_energy_ratio": np.full(n, np.nan), "explored": np.zeros(n, dtype=bool), "propensity": np.ones(n),
        "name": ["resnet18"] * n, "family": ["cnn"] * n, "mode": ["train"] * n, "decided_by": ["policy"] * n,
    }
    return DecisionBatch(uuid.uuid4().hex, time.time(), get_target("B"), Thresholds(), None, "v1", cols)


def _measure(location: str | Path, n: int) -> dict[str, tuple[float, float]]:
    from placement.serve.schemas import ReportedOutcome
    from placement.serve.storage.store import Store

    store = Store(location)
    run = ReportedOutcome(device="gpu", n_samples=64, time_total_s=1.0, energy_j=90.0, energy_method="measured")
    batches = [_batch() for _ in range(n + 20)]
    out: dict[str, tuple[float, float]] = {}

    def timed(name: str, calls: list) -> None:
        for call in calls[:20]:  # warm-up
            call()
        wall, cpu = time.perf_counter(), time.process_time()
        for call in calls[20:]:
            call()
        k = len(calls) - 20
        out[name] = ((time.perf_counter() - wall) / k * 1e6, (time.process_time() - cpu) / k * 1e6)

    timed("insert_decisions", [lambda b=b: store.insert_decisions(b) for b in batches])
    timed("record_feedback", [lambda b=b: store.record_feedback(b.decision_id(0), "h", "{}", run, None)
                              for b in batches])
    timed("get_meta", [lambda: store.get_meta("active_version")] * (n + 20))
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="calls per operation")
    parser.add_argument("--db-url", default=None, help="also measure this (empty) PostgreSQL database")
    args = parser.parse_args()
    import os

    engines: dict[str, str | Path] = {"sqlite (WAL, synchronous=normal)": Path(tempfile.mkdtemp()) / "bench.db"}
    if args.db_url:
        engines["postgresql"] = args.db_url
    print(f"store cost per call ({args.n} calls each; load average {os.getloadavg()[0]:.1f}):")
    print(f"  {'engine':<34} {'operation':<18} {'wall us':>9} {'cpu us':>8}")
    for name, location in engines.items():
        for op, (wall, cpu) in _measure(location, args.n).items():
            print(f"  {name:<34} {op:<18} {wall:9.0f} {cpu:8.0f}")


if __name__ == "__main__":
    main()
