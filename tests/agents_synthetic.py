"""A small synthetic trace for the agents' tests (modelled timings and powers, not measurements).

Times follow a roofline-like model: compute time = FLOPs / (efficiency x peak GFLOP/s), plus a
fixed per-batch launch overhead and, on discrete GPUs, the input transfer over the host link.
Powers are a utilisation share of TDP (method ``modelled``). Edge targets get knob sweeps:
CPU runs at every core level (Amdahl scaling, recurrent models scaling worst, as paper B
found) and GPU runs at every (cores, cap) level, out of memory below the working set and
slower when over-allocated. Only the tests use it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from placement.core.catalogue import get_target
from placement.core.decision import GROW
from placement.core.job import FAMILIES
from placement.core.trace import pair_outcomes, target_columns, validate
from placement.envs.device_placement import cap_levels, core_levels

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
        parallel = 0.3 if family == "rnn" else 0.9
        for tid in targets:
            t = get_target(tid)
            hw = target_columns(t)
            flops = flops_per_sample * batch
            link = t.host_link_gbs if not t.unified_memory else math.inf
            t_gpu = flops / (0.5 * t.gpu_gflops * 1e9) + 3e-3 + batch * elems * 4 / (link * 1e9)
            util = min(1.0, 0.2 + flops / (t.gpu_gflops * 1e9 * t_gpu))
            ws_mib = (params * 16 + batch * elems * 4) / 2**20
            base = dict(source="simulated", job_id=f"job{j}", model=f"{family}-{j % 10}", family=family, mode="train",
                        batch_size=batch, flops_per_batch=flops, param_count=params, input_elems_per_sample=elems,
                        input_bytes_per_sample=elems * 4, **hw, feasible=True, n_samples=batch)
            core_counts = sorted(set(core_levels(t))) if t.is_edge else [t.cpu_cores]
            caps = list(cap_levels(t)) if t.is_edge else [GROW]
            for cores in core_counts:
                amdahl = 1.0 / ((1 - parallel) + parallel * cores / t.cpu_cores)
                t_cpu = flops / (0.4 * t.cpu_gflops * 1e9) * amdahl + 2e-4
                p_cpu = t.cpu_idle_w + (t.cpu_tdp_w - t.cpu_idle_w) * cores / t.cpu_cores
                rows.append({**base, "device": "cpu", "cpu_cores": cores, "time_total_s": t_cpu,
                             "avg_cpu_power_w": p_cpu, "avg_gpu_power_w": None, "cpu_power_method": "modelled",
                             "gpu_power_method": "unknown"})
                for cap in caps:
                    mib = None if cap == GROW else int(cap)
                    oom = mib is not None and mib < ws_mib
                    over = 0.0 if mib is None else max(0.0, math.log2(mib / max(ws_mib, 1.0)))
                    slow = (1 + 0.3 / cores) * (1 + 0.05 * over) if t.is_edge else 1.0
                    rows.append({**base, "device": "gpu", "cpu_cores": cores, "gpu_mem_cap_mib": mib,
                                 "feasible": not oom, "infeasible_reason": "oom" if oom else None,
                                 "n_samples": None if oom else batch,
                                 "time_total_s": None if oom else t_gpu * slow,
                                 "avg_cpu_power_w": None if oom else 0.3 * t.cpu_tdp_w,
                                 "avg_gpu_power_w": None if oom else util * t.gpu_tdp_w,
                                 "cpu_power_method": "unknown" if oom else "modelled",
                                 "gpu_power_method": "unknown" if oom else "modelled"})
    return pd.DataFrame(rows)


def synthetic_pairs(n_jobs: int = 60, seed: int = 0) -> pd.DataFrame:
    return pair_outcomes(validate(synthetic_trace(n_jobs, seed)))
