"""Target offsets: how far the measured outcomes on one hardware target sit from the performance
model, as log offsets of time and power per device.

A drifted device -- a GPU slower than its description says, a throttled CPU -- shows in every
outcome reported on it. The median log residual of the last :data:`TARGET_HISTORY` outcomes at
default knobs (all cores, no GPU memory cap), once at least :data:`TARGET_MIN_OUTCOMES`
arrived, shrunk by ``n / (n + 2)``, shifts every estimate on that target
(:func:`shift`): one architecture's outcomes do not move a median. When the last
:data:`RECENT_OUTCOMES` clearly moved away from the ones before (:func:`offset_level`), their
median is taken instead: a change of the device shows within a few outcomes. Only feedback that passes
the quarantine (:mod:`serve.quarantine`) and the poison screens
(:func:`serve.rewards.screen_feedback`) counts, so lying feedback cannot move every answer.

One definition for both readers: the placer decides on shifted estimates, and the learner
trains and gates on features formed with the same offsets (otherwise a candidate trained on
unshifted margins learns the drift a second time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from placement.estimate import Estimate, model_estimate
from placement.hardware import HardwareTarget
from placement.job import Job

TARGET_HISTORY = 200
"""Outcomes per target whose median residual shifts every estimate on that target."""
TARGET_MIN_OUTCOMES = 20
"""Outcomes of one kind (device, time or power) a target needs before its offset applies."""
RECENT_OUTCOMES = 32
"""Outcomes whose median is compared with the older ones' to see a change (:func:`offset_level`)."""
CHANGE_SHARE = 0.8
"""Share of the recent outcomes that must sit beyond the older median (by :data:`MIN_SHIFT`, on
one side) to count as a change of the device: a lying fifth cannot reach it unless three
quarters of the honest outcomes moved too."""
MIN_SHIFT = math.log(1.25)
"""Smallest change counted (log): 25 %, the band the service treats as marginal."""
OFFSET_NAMES = ("cpu_time", "gpu_time", "cpu_power", "gpu_power")


def shift(est: Estimate, offsets: Mapping[str, float]) -> Estimate:
    """The estimate with a target's log offsets applied (times, powers; sigmas and sources unchanged)."""
    if not offsets:
        return est
    g = math.exp(offsets.get("gpu_power", 0.0))
    return replace(
        est,
        cpu_time_per_sample_s=est.cpu_time_per_sample_s * math.exp(offsets.get("cpu_time", 0.0)),
        gpu_time_per_sample_s=est.gpu_time_per_sample_s * math.exp(offsets.get("gpu_time", 0.0)),
        cpu_power_w=est.cpu_power_w * math.exp(offsets.get("cpu_power", 0.0)),
        gpu_power_w=est.gpu_power_w * g, gpu_host_cpu_power_w=est.gpu_host_cpu_power_w * g,
    )


def target_offsets(store: Any, perf_model: Any, target: HardwareTarget) -> dict[str, float]:
    """The log offsets (names in :data:`OFFSET_NAMES`, each present once it has
    :data:`TARGET_MIN_OUTCOMES` outcomes) of ``target`` from the store's recent screened feedback."""
    from serve.placer import JobBatch
    from serve.quarantine import screen_stored
    from serve.rewards import screen_feedback
    from serve.store import target_key

    key = target_key(target)
    skipped: list[tuple[int, str, str]] = []
    stored = screen_stored(store.recent_feedback(limit=4 * TARGET_HISTORY, skipped=skipped), skipped).usable
    stored, _ = screen_feedback(stored, perf_model)
    jobs: list[Job] = []
    runs: list[Any] = []
    for fb in stored:
        d = fb.decision
        if d.cpu_cores != target.cpu_cores or d.gpu_mem_cap_mib is not None or target_key(d.target) != key:
            continue
        for run in (fb.outcome, fb.other):
            if run is None or not run.feasible or run.gpu_mem_cap_mib is not None or (
                    run.cpu_cores is not None and run.cpu_cores != target.cpu_cores):
                continue
            jobs.append(d.job)
            runs.append(run)
    jobs, runs = jobs[-TARGET_HISTORY:], runs[-TARGET_HISTORY:]
    offsets: dict[str, float] = {}
    if not jobs:
        return offsets
    est = model_estimate(perf_model, JobBatch.from_jobs(jobs).model_columns(target))
    res: dict[str, list[float]] = {name: [] for name in OFFSET_NAMES}
    for i, run in enumerate(runs):
        out = run.device_outcome()
        dev = str(run.device)
        mt = est.cpu_time_per_sample_s[i] if dev == "cpu" else est.gpu_time_per_sample_s[i]
        mp = est.cpu_power_w[i] if dev == "cpu" else est.gpu_power_w[i] + est.gpu_host_cpu_power_w[i]
        if mt > 0 and math.isfinite(mt) and out.time_per_sample_s > 0 and math.isfinite(out.time_per_sample_s):
            res[f"{dev}_time"].append(math.log(out.time_per_sample_s / mt))
            e = out.energy_per_sample_j
            if math.isfinite(e) and e > 0 and mp > 0 and math.isfinite(mp):
                res[f"{dev}_power"].append(math.log(e / out.time_per_sample_s / mp))
    for name, values in res.items():
        if len(values) >= TARGET_MIN_OUTCOMES:
            level, n = offset_level(values)
            offsets[name] = level * n / (n + 2.0)
    return offsets


def offset_level(values: list[float]) -> tuple[float, int]:
    """The log offset of one kind from its residuals (oldest first) and how many outcomes it
    stands on: the median of all of them, unless the last :data:`RECENT_OUTCOMES` moved away
    from the ones before -- at least :data:`CHANGE_SHARE` of them lie more than
    :data:`MIN_SHIFT` beyond the older ones' median, on one side -- then the recent median. A
    changed device moves every outcome, so it shows within about ``CHANGE_SHARE *
    RECENT_OUTCOMES`` outcomes instead of after it outnumbers the whole history; a lying
    minority (20 % by 3x to 10x in one direction) cannot reach the share while the honest
    outcomes stay put (``tests/test_offsets.py``)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size >= 2 * RECENT_OUTCOMES:
        recent, older = x[-RECENT_OUTCOMES:], x[:-RECENT_OUTCOMES]
        m_older = float(np.median(older))
        beyond = max(float(np.mean(recent > m_older + MIN_SHIFT)), float(np.mean(recent < m_older - MIN_SHIFT)))
        if beyond >= CHANGE_SHARE:
            return float(np.median(recent)), RECENT_OUTCOMES
    return float(np.median(x)), int(x.size)
