"""The learner's poisoned-feedback screen (:func:`serve.rewards.screen_feedback`), library level, no Ray:
plausible feedback (noise, a 3x GPU drift) is kept; outliers and contradictory reports are excluded."""

from __future__ import annotations

from pathlib import Path

import pytest

from placement.catalogue import get_target
from serve.placer import Placer, bootstrap_store
from serve.rewards import RewardSettings, screen_feedback
from serve.schemas import FeedbackRequest, PlacementRequest
from serve.settings import Settings
from serve.store import Store

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

    reports = ([(j, honest) for j in jobs[:10]] + [(j, drifted) for j in jobs[10:20]]
               + [(j, outlier) for j in jobs[20:25]]
               + [(j, claims(f)) for j in jobs[25:27] for f in (1 / 30, 30, 1 / 30, 30)])
    feedback = _feedback(tmp_path, serve_model_dir, world, reports)
    kept, excluded = screen_feedback(feedback)
    assert excluded.get("excluded_outlier", 0) + excluded.get("excluded_contradictory", 0) == 5 + 8
    assert excluded.get("excluded_contradictory", 0) >= 1
    kept_jobs = {fb.decision.job.model_dump_json() for fb in kept}
    assert all(j.model_dump_json() in kept_jobs for j in jobs[:20])  # honest and drifted kept
    assert not any(j.model_dump_json() in kept_jobs for j in jobs[20:27])
    # looser limits keep the contradictory reports' individual runs; the settings are validated
    assert screen_feedback(feedback, settings=RewardSettings(max_outlier_factor=1e6,
                                                             contradiction_factor=1e4))[1] == {}
    with pytest.raises(ValueError, match="must be > 1"):
        RewardSettings(contradiction_factor=1.0)
