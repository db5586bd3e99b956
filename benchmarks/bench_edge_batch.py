"""Batch placement on edge targets, where the answer carries cores and a GPU memory cap (a benchmark, not a test).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_edge_batch.py [--jobs 2000] [--repeats 5]``

In process (:class:`placement.serve.placer.Placer`, the bundled model, no store), one batch of
``--jobs`` generated jobs in the columns format, measured in this run:

* ``place_batch`` decisions/s on a server target and on each edge target (best of ``--repeats``),
  and the edge / server ratio;
* the knobs alone for the same batch: ``policy.knobs_batch`` (one pass of the actor over the
  batch's feature rows) against ``policy.knobs`` asked job by job (what ``place_batch`` did
  before), and their ratio.

One thread for torch and BLAS.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def _best(fn: object, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return float(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from placement.agents.artifact import DEFAULT_MODEL_DIR
    from placement.core.catalogue import get_target
    from placement.core.version import code_version
    from placement.model.features import feature_matrix
    from placement.serve.placer import JobBatch, Placer, load_bundle
    from placement.serve.schemas import PlacementRequest
    from placement.serve.settings import Settings

    torch.set_num_threads(1)
    bundle = load_bundle(DEFAULT_MODEL_DIR)
    placer = Placer(bundle, settings=Settings.model_validate({"state_dir": tempfile.mkdtemp(prefix="bench_edge."),
                                                              "exploration_rate": 0.0}),
                    store=None)
    rng = np.random.default_rng(args.seed)
    n = args.jobs
    columns = {
        "name": [f"job{i}" for i in range(n)], "family": rng.choice(["cnn", "mlp", "transformer", "rnn"], n).tolist(),
        "mode": rng.choice(["infer", "train"], n).tolist(), "batch_size": rng.integers(1, 257, n).tolist(),
        "flops_per_batch": (10 ** rng.uniform(6, 13, n)).tolist(), "param_count": rng.integers(10**4, 10**9, n).tolist(),
        "input_elems_per_sample": rng.integers(10, 200_000, n).tolist(),
    }
    columns["input_bytes_per_sample"] = [4 * e for e in columns["input_elems_per_sample"]]
    print(f"bench_edge_batch  policy {type(bundle.policy).__name__} {bundle.version}  code {code_version()}")
    print(f"host {platform.node()}  cpus {os.cpu_count()}  load average {os.getloadavg()[0]:.1f}  "
          f"{n} jobs, best of {args.repeats}")
    print(f"{'target':14s} {'place_batch dec/s':>18s} {'vs server':>10s} {'knobs_batch ms':>15s} "
          f"{'knobs per job ms':>17s} {'per job / batch':>16s}")
    server = None
    for target_id in ("B", "jetson-nano", "orin-nano", "agx-orin"):
        target = get_target(target_id)
        request = PlacementRequest.model_validate({"columns": columns, "target": target_id, "explore": False})
        placer.place(request, record=False)
        rate = n / _best(lambda r=request: placer.place(r, record=False), args.repeats)
        server = server or rate
        batch = JobBatch.from_columns(request.columns)
        x = feature_matrix(batch.model_columns(target))
        devices = placer.place(request, record=False).gpu.astype(np.int64)
        one_pass = _best(lambda t=target, x=x, d=devices, b=batch: bundle.policy.knobs_batch(x, t, d, job_at=b.job),
                         args.repeats)
        jobs = [batch.job(i) for i in range(n)]
        per_job = _best(lambda t=target, d=devices, jobs=jobs: [bundle.policy.knobs(j, t, int(g))
                                                                 for j, g in zip(jobs, d, strict=True)], 1)
        print(f"{target_id:14s} {rate:18,.0f} {rate / server:10.3f} {1e3 * one_pass:15.2f} {1e3 * per_job:17.1f} "
              f"{per_job / one_pass:16.0f}")


if __name__ == "__main__":
    main()
