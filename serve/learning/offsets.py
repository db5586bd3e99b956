"""Target offsets: how far the measured outcomes on one hardware target sit from the performance
model, as log offsets of time and power per device.

A drifted device -- a GPU slower than its description says, a throttled CPU -- shows in every
outcome reported on it. The median log residual of the last :data:`TARGET_HISTORY` outcomes at
default knobs (all cores, no GPU memory cap), once at least :data:`TARGET_MIN_OUTCOMES`
arrived, shrunk by ``n / (n + 2)``, shifts every estimate on that target
(:func:`shift`): one architecture's outcomes do not move a median. When the last
:data:`RECENT_OUTCOMES` clearly moved away from the ones before (:func:`offset_level`), their
median is taken instead: a change of the device shows within a few outcomes. Only feedback that passes
the quarantine (:mod:`placement.serve.learning.quarantine`) and the poison screens
(:func:`placement.serve.learning.rewards.screen_feedback`) counts, so lying feedback cannot move every answer.

One definition for both readers: the placer decides on shifted estimates, and the learner
trains and gates on features formed with the same offsets (otherwise a candidate trained on
unshifted margins learns the drift a second time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from placement.core.decision import GROW
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.model.estimate import Estimate, model_estimate

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
MIN_SEGMENT = 20
"""Fewest outcomes since a change that can show it."""
SHORT_CHANGE_SHARE = 0.95
"""The share a change needs while fewer than :data:`RECENT_OUTCOMES` outcomes followed it."""
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


@dataclass(frozen=True)
class OffsetTimeline:
    """One target's offsets now and, where the device changed within the window, before the
    change: ``since_seq`` is the feedback sequence number of the first outcome after it."""

    now: dict[str, float]
    before: dict[str, float]
    since_seq: dict[str, int]
    distrusted: frozenset[str] = frozenset()
    """Decision ids of the window's feedback from clients the client screen distrusts
    (:mod:`placement.serve.learning.clients`): the placer leaves their runs out of the history."""
    distrusted_clients: frozenset[str] = frozenset()
    """Those clients' names (attributed feedback only): the placer leaves out *every* run of theirs
    the history holds, older ones beyond this window too, while the window distrusts them."""

    def at(self, seq: int) -> dict[str, float]:
        """The offsets that held when feedback ``seq`` arrived (the world that outcome measured)."""
        out = dict(self.now)
        for name, since in self.since_seq.items():
            if seq < since:
                if name in self.before:
                    out[name] = self.before[name]
                else:
                    out.pop(name, None)
        return out


def target_offsets(store: Any, perf_model: Any, target: HardwareTarget) -> dict[str, float]:
    """The log offsets (names in :data:`OFFSET_NAMES`, each present once it has
    :data:`TARGET_MIN_OUTCOMES` outcomes) of ``target`` now, from the store's recent screened feedback."""
    return target_timeline(store, perf_model, target).now


def target_timeline(store: Any, perf_model: Any, target: HardwareTarget) -> OffsetTimeline:
    """:func:`target_offsets` with the levels before a change of the device (:class:`OffsetTimeline`)."""
    from placement.serve.learning.quarantine import screen_stored
    from placement.serve.learning.rewards import screen_feedback
    from placement.serve.placer import JobBatch
    from placement.serve.storage.store import target_key

    key = target_key(target)
    skipped: list[tuple[int, str, str]] = []
    window = screen_stored(store.recent_feedback(limit=4 * TARGET_HISTORY, skipped=skipped), skipped).usable
    distrusted: set[str] = set()
    stored, _ = screen_feedback(window, perf_model, distrusted=distrusted)
    liars = frozenset(str(fb.client) for fb in window if fb.client is not None and fb.decision.decision_id in distrusted)
    jobs: list[Job] = []
    runs: list[Any] = []
    seqs: list[int] = []
    for fb in stored:
        d = fb.decision
        if d.cpu_cores != target.cpu_cores or d.gpu_mem_cap != GROW or target_key(d.target) != key:
            continue
        for run in (fb.outcome, fb.other):
            if run is None or not run.feasible or run.gpu_mem_cap_mib is not None or (
                    run.cpu_cores is not None and run.cpu_cores != target.cpu_cores):
                continue
            jobs.append(d.job)
            runs.append(run)
            seqs.append(int(fb.seq))
    jobs, runs, seqs = jobs[-TARGET_HISTORY:], runs[-TARGET_HISTORY:], seqs[-TARGET_HISTORY:]
    timeline = OffsetTimeline(now={}, before={}, since_seq={}, distrusted=frozenset(distrusted), distrusted_clients=liars)
    if not jobs:
        return timeline
    est = model_estimate(perf_model, JobBatch.from_jobs(jobs).model_columns(target))
    res: dict[str, list[float]] = {name: [] for name in OFFSET_NAMES}
    res_seq: dict[str, list[int]] = {name: [] for name in OFFSET_NAMES}
    for i, run in enumerate(runs):
        out = run.device_outcome()
        dev = str(run.device)
        mt = est.cpu_time_per_sample_s[i] if dev == "cpu" else est.gpu_time_per_sample_s[i]
        mp = est.cpu_power_w[i] if dev == "cpu" else est.gpu_power_w[i] + est.gpu_host_cpu_power_w[i]
        if mt > 0 and math.isfinite(mt) and out.time_per_sample_s > 0 and math.isfinite(out.time_per_sample_s):
            res[f"{dev}_time"].append(math.log(out.time_per_sample_s / mt))
            res_seq[f"{dev}_time"].append(seqs[i])
            e = out.energy_per_sample_j
            if math.isfinite(e) and e > 0 and mp > 0 and math.isfinite(mp):
                res[f"{dev}_power"].append(math.log(e / out.time_per_sample_s / mp))
                res_seq[f"{dev}_power"].append(seqs[i])
    for name, values in res.items():
        if len(values) < TARGET_MIN_OUTCOMES:
            continue
        x = np.asarray(values, dtype=np.float64)
        start = change_point(x)
        level, n = _level(x, start)
        timeline.now[name] = level * n / (n + 2.0)
        if start is not None:
            timeline.since_seq[name] = res_seq[name][start]
            if start >= TARGET_MIN_OUTCOMES:
                timeline.before[name] = float(np.median(x[:start])) * start / (start + 2.0)
    return timeline


def change_point(x: np.ndarray) -> int | None:
    """Where the device changed: the index ``s`` (at least :data:`RECENT_OUTCOMES` from the start,
    :data:`MIN_SEGMENT` from the end) at which the largest share of ``x[s:]`` lies more than
    :data:`MIN_SHIFT` beyond the median of ``x[:s]`` on one side (the earliest of equals), that
    share at least :data:`CHANGE_SHARE` (:data:`SHORT_CHANGE_SHARE` while ``x[s:]`` is shorter
    than :data:`RECENT_OUTCOMES`). None: no change in the window."""
    best, best_share = None, 0.0
    for s in range(RECENT_OUTCOMES, x.size - MIN_SEGMENT + 1):
        seg = x[s:]
        m_older = float(np.median(x[:s]))
        beyond = max(float(np.mean(seg > m_older + MIN_SHIFT)), float(np.mean(seg < m_older - MIN_SHIFT)))
        needed = CHANGE_SHARE if seg.size >= RECENT_OUTCOMES else SHORT_CHANGE_SHARE
        if beyond >= needed and beyond > best_share + 1e-9:
            best, best_share = s, beyond
    return best


def offset_level(values: list[float]) -> tuple[float, int]:
    """The log offset of one kind from its residuals (oldest first) and how many outcomes it
    stands on: the median of all of them, or, where the device changed within the window
    (:func:`change_point`: at least :data:`CHANGE_SHARE` of the outcomes since some point, at
    least :data:`RECENT_OUTCOMES` of them, lie more than :data:`MIN_SHIFT` beyond the median
    of the ones before, on one side), the median of the outcomes since the change. A changed
    device moves every outcome, so it shows within about ``MIN_SEGMENT`` to ``RECENT_OUTCOMES`` outcomes instead of
    after it outnumbers the whole history, and stays shown while the history fills; a lying
    minority (20 % by 3x to 10x in one direction) cannot reach the share while the honest
    outcomes stay put (``tests/test_offsets.py``)."""
    x = np.asarray(values, dtype=np.float64)
    return _level(x, change_point(x))


def _level(x: np.ndarray, start: int | None) -> tuple[float, int]:
    """The median of ``x`` since ``start`` (all of it without a change) and how many it stands on."""
    since = x if start is None else x[start:]
    return float(np.median(since)), int(since.size)
