"""The learner's poisoned-feedback screen (:func:`placement.serve.learning.rewards.screen_feedback`), library level, no Ray:
plausible feedback (noise, a 3x GPU drift) is kept; outliers and contradictory reports are excluded."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from placement.core.catalogue import get_target
from placement.serve.learning.rewards import RewardSettings, robust_outliers, screen_feedback
from placement.serve.placer import Placer, bootstrap_store
from placement.serve.schemas import FeedbackRequest, PlacementRequest
from placement.serve.settings import Settings
from placement.serve.storage.store import Store

TARGET = get_target("B")


def _feedback(tmp_path, model_dir, world, reports):
    """Place each job of ``reports`` and send its ``(outcome, other)`` pair; return the stored feedback."""
    settings = Settings(state_dir=tmp_path, model_path=Path(model_dir), exploration_rate=0.0)
    store = Store(settings.database)
    placer = Placer(bootstrap_store(store, settings), settings=settings, store=store)
    for job, make in reports:
        (d,) = placer.place(PlacementRequest(job=job, target="B", explore=False)).to_response().decisions
        runs = make(job)
        other = "cpu" if d.device == "gpu" else "gpu"
        placer.feedback(FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": runs[d.device],
                                                        "other_outcome": runs[other]}))
    return store.recent_feedback()


def _feasible_jobs(world, n):
    out = []
    for job in world.jobs(200, seed=23):
        runs = {d: world.outcome(job, TARGET, d, noise=False) for d in ("cpu", "gpu")}
        if all("time_total_s" in r for r in runs.values()):
            out.append(job)
        if len(out) == n:
            return out
    raise AssertionError("too few feasible jobs")


def test_plausible_feedback_is_kept_and_poison_excluded(tmp_path, serve_model_dir, serve_world):
    world = serve_world
    jobs = _feasible_jobs(world, 30)

    def honest(job):
        return {d: world.outcome(job, TARGET, d) for d in ("cpu", "gpu")}

    def drifted(job):  # the GPU 3x slower than the model thinks: drift, not poison
        runs = honest(job)
        runs["gpu"]["time_total_s"] *= 3
        return runs

    def outlier(job):
        runs = honest(job)
        runs["cpu"]["time_total_s"] *= 1e4
        return runs

    def claims(factor):
        def make(job):
            runs = {d: world.outcome(job, TARGET, d, noise=False) for d in ("cpu", "gpu")}
            runs["gpu"]["time_total_s"] = runs["cpu"]["time_total_s"] * factor
            return runs
        return make

    # the drift is last: it lasts (a drift that reverts after 10 runs is a lying minority)
    reports = ([(j, honest) for j in jobs[:10]] + [(j, outlier) for j in jobs[20:25]]
               + [(j, claims(f)) for j in jobs[25:27] for f in (1 / 30, 30, 1 / 30, 30)]
               + [(j, drifted) for j in jobs[10:20]])
    feedback = _feedback(tmp_path, serve_model_dir, world, reports)
    kept, excluded = screen_feedback(feedback, settings=RewardSettings(min_reference=4))
    assert excluded.get("excluded_outlier", 0) + excluded.get("excluded_contradictory", 0) == 5 + 8
    assert excluded.get("excluded_contradictory", 0) >= 1
    kept_jobs = {fb.decision.job.model_dump_json() for fb in kept}
    assert all(j.model_dump_json() in kept_jobs for j in jobs[:10])  # honest kept
    # drifted kept, but for the newest few whose drift fewer than min_reference later runs confirm yet
    assert sum(j.model_dump_json() in kept_jobs for j in jobs[10:20]) >= 10 - 4, excluded
    assert not any(j.model_dump_json() in kept_jobs for j in jobs[20:27])
    # looser limits keep the contradictory reports' individual runs; the settings are validated
    loose = RewardSettings(max_outlier_factor=1e6, contradiction_factor=1e4, near_contradiction_factor=1e4,
                           robust_k=1e4)
    assert screen_feedback(feedback, settings=loose)[1] == {}
    with pytest.raises(ValueError, match="must be > 1"):
        RewardSettings(contradiction_factor=1.0)


def _stream(tmp_path, model_dir, world, poison, *, n=100, share=0.2, seed=3, drift=1.0):
    """``n`` jobs placed on B with chosen-device feedback; a share ``share`` of them (every 5th)
    reported through ``poison(job, run) -> run``. Returns (stored feedback, poisoned decision ids)."""
    import numpy as np

    settings = Settings(state_dir=tmp_path, model_path=Path(model_dir), exploration_rate=0.0)
    store = Store(settings.database)
    placer = Placer(bootstrap_store(store, settings), settings=settings, store=store)
    rng = np.random.default_rng(seed)
    world.gpu_slowdown = drift
    poisoned = set()
    jobs = [j for j in world.jobs(3 * n, seed=seed) if "time_total_s" in world.outcome(j, TARGET, "cpu", noise=False)
            and "time_total_s" in world.outcome(j, TARGET, "gpu", noise=False)][:n]
    every = round(1 / share)
    for k, job in enumerate(jobs):
        (d,) = placer.place(PlacementRequest(job=job, target="B", explore=False)).to_response().decisions
        run = world.outcome(job, TARGET, d.device)
        if k % every == every - 1:
            run = poison(job, run, d.device, float(rng.uniform(3, 10)))
            if run is None:
                continue
            poisoned.add(d.decision_id)
        placer.feedback(FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": run}))
    return store.recent_feedback(), poisoned


def _gpu_slower(job, run, device, factor):
    if device != "gpu":
        return None
    return {**run, "time_total_s": run["time_total_s"] * factor}


def _cpu_slower(job, run, device, factor):
    if device != "cpu":
        return None
    return {**run, "time_total_s": run["time_total_s"] * factor}


def _gpu_faster(job, run, device, factor):
    if device != "gpu":
        return None
    return {**run, "time_total_s": run["time_total_s"] / factor}


def _gpu_energy_higher(job, run, device, factor):
    if device != "gpu":
        return None
    return {**run, "avg_gpu_power_w": run["avg_gpu_power_w"] * factor, "avg_cpu_power_w": run["avg_cpu_power_w"] * factor}


@pytest.mark.slow
@pytest.mark.parametrize("poison", [_gpu_slower, _cpu_slower, _gpu_faster, _gpu_energy_higher],
                         ids=["gpu_slower", "cpu_slower", "gpu_faster", "gpu_energy_higher"])
def test_consistent_minority_lies_are_screened(tmp_path, serve_model_dir, serve_world, poison):
    # 150 jobs: a fifth of those placed on the poisoned device is at least 5 for every shape (with 100,
    # cpu_slower hinged on the serve test model's CPU share)
    feedback, poisoned = _stream(tmp_path, serve_model_dir, serve_world, poison, n=150)
    assert len(poisoned) >= 5
    kept, excluded = screen_feedback(feedback)
    kept_ids = {fb.decision.decision_id for fb in kept}
    honest = {fb.decision.decision_id for fb in feedback} - poisoned
    assert not (poisoned & kept_ids), (excluded, len(poisoned & kept_ids))
    assert len(honest - kept_ids) <= 0.05 * len(honest), excluded  # honest feedback stays


def test_drift_is_not_screened_once_it_is_the_majority(tmp_path, serve_model_dir, serve_world):
    """Every GPU run 3x slower (drift, not a minority lie): only the first few drifted runs, still a
    minority of their neighbourhood, may be held back."""
    def none(job, run, device, factor):
        return run

    feedback, _ = _stream(tmp_path, serve_model_dir, serve_world, none, drift=3.0, n=80)
    kept, excluded = screen_feedback(feedback)
    assert len(kept) == len(feedback), excluded  # all drifted alike: nothing stands out


def test_a_lie_in_the_middle_of_a_small_group_is_flagged():
    # no side of the lie has 3 runs, both together have 4: compared with all of them
    res = [0.0, 0.05, math.log(5.0), -0.03, 0.02]
    assert robust_outliers(res, [math.nan] * len(res)).tolist() == [False, False, True, False, False]
