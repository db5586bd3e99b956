"""Time the operator-level model on the request path: one job's estimate from its operators.

Prints p50/p90 in microseconds of ``OperatorModel.time_s`` (and of the full
``PerformanceModel.predict`` with operators) over the zoo's jobs; target p50 <= 50 us.
Run: ``python benchmarks/bench_opmodel.py``.
"""

from __future__ import annotations

import time

import numpy as np

from placement.core.catalogue import get_target
from placement.lab.workloads import describe_workload
from placement.model.operators import zoo_operators
from placement.model.opmodel import bundled_operator_model
from placement.model.perfmodel import PerformanceModel

NAMES = ("mlp_cifar10", "resnet18_cifar10", "gpt_tinytext", "dlrm_criteo", "convnext_cifar10", "gnn_graph")


def main() -> None:
    model = bundled_operator_model()
    assert model is not None, "no bundled operator model (placement/data/op_params.json)"
    target = get_target("h200-host")
    jobs = []
    for name in NAMES:
        for mode in ("infer", "train"):
            job = describe_workload(name, 32, mode)
            jobs.append(job.model_copy(update={"operators": zoo_operators(name, mode, 32)}))
    pm = PerformanceModel()
    for label, fn in (("OperatorModel.time_s", lambda j, d: model.time_s(j, target, d, 8)),
                      ("PerformanceModel.predict", lambda j, d: pm.predict(j, target, d, 8))):
        times = []
        for _ in range(200):
            for job in jobs:
                for dev in ("cpu", "gpu"):
                    t0 = time.perf_counter()
                    fn(job, dev)
                    times.append(time.perf_counter() - t0)
        us = np.array(times) * 1e6
        print(f"{label}: {len(us)} estimates, p50 {np.median(us):.1f} us, p90 {np.quantile(us, 0.9):.1f} us")


if __name__ == "__main__":
    main()
