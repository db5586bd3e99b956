"""A small synthetic trace for the agents' tests (modelled timings and powers, not measurements).

Times follow a roofline-like model: compute time = FLOPs / (efficiency x peak GFLOP/s), plus a
fixed per-batch launch overhead and, on discrete GPUs, the input transfer over the host link.
Powers are a utilisation share of TDP (method ``modelled``). Only the tests use it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from placement.catalogue import get_target
from placement.job import FAMILIES
from placement.trace import pair_outcomes, target_columns

TARGETS = ("A", "B", "C", "D", "h100-host")


def synthetic_trace(n_jobs: int = 60, seed: int = 0, targets: tuple[str, ...] = TARGETS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(n_jobs):
        family = FAMILIES[j % 6]
        batch = int(2 ** rng.integers(0, 9))
        flops_per_sample = float(10 ** rng.uniform(4, 11))
        params = int(10 ** rng.uniform(3, 8))
        elems = int(10 ** rng.uniform(1, 5.5))
        for tid in targets:
            t = get_target(tid)
            hw = target_columns(t)
            flops = flops_per_sample * batch
            t_cpu = flops / (0.4 * t.cpu_gflops * 1e9) + 2e-4
            t_gpu = flops / (0.5 * t.gpu_gflops * 1e9) + 3e-3 + batch * elems * 4 / (t.host_link_gbs * 1e9)
            util = min(1.0, 0.2 + flops / (t.gpu_gflops * 1e9 * t_gpu))
            base = dict(source="simulated", job_id=f"job{j}", model=f"{family}-{j % 10}", family=family, mode="train",
                        batch_size=batch, flops_per_batch=flops, param_count=params, input_elems_per_sample=elems,
                        input_bytes_per_sample=elems * 4, **hw, cpu_cores=t.cpu_cores, feasible=True, n_samples=batch)
            rows.append({**base, "device": "cpu", "time_total_s": t_cpu, "avg_cpu_power_w": 0.8 * t.cpu_tdp_w,
                         "avg_gpu_power_w": None, "cpu_power_method": "modelled", "gpu_power_method": "unknown"})
            rows.append({**base, "device": "gpu", "time_total_s": t_gpu, "avg_cpu_power_w": 0.3 * t.cpu_tdp_w,
                         "avg_gpu_power_w": util * t.gpu_tdp_w, "cpu_power_method": "modelled",
                         "gpu_power_method": "modelled"})
    return pd.DataFrame(rows)


def synthetic_pairs(n_jobs: int = 60, seed: int = 0) -> pd.DataFrame:
    from placement.trace import validate

    return pair_outcomes(validate(synthetic_trace(n_jobs, seed)))
