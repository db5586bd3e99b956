"""Quarantine (:mod:`placement.serve.learning.quarantine`), library level: a stored row whose derived quantities are
unusable is kept, counted by reason and never trained on; learner updates and exports still succeed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from placement.core.catalogue import get_target
from placement.core.trace import read_trace
from placement.serve.learning.learner import Learner, learner_fields
from placement.serve.learning.quarantine import run_reason, screen_stored
from placement.serve.placer import Placer, bootstrap_store
from placement.serve.schemas import FeedbackRequest, PlacementRequest, ReportedOutcome
from placement.serve.settings import Settings
from placement.serve.storage.store import Store

TARGET = get_target("B")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _service(tmp_path, model_dir, **overrides):
    values = {"exploration_rate": 0.0, "min_holdout": 4, "ppo_timesteps": 128, **overrides}
    settings = Settings(state_dir=tmp_path, model_path=Path(model_dir), **values)
    store = Store(settings.database)
    return settings, store, Placer(bootstrap_store(store, settings), settings=settings, store=store)


def store_pathological(store: Store, placer: Placer, job) -> str:
    """Place ``job`` and store, bypassing the HTTP edge, the outcome of issue 13: time_total_s
    1e-300 with energy_j 1e15 (average power 1e315 W: not a finite number)."""
    (d,) = placer.place(PlacementRequest(job=job, target="B", explore=False)).to_response().decisions
    bad = ReportedOutcome.model_construct(device=d.device, feasible=True, n_samples=job.batch_size,
                                          time_total_s=1e-300, energy_j=1e15, energy_method="measured",
                                          infeasible_reason=None, avg_cpu_power_w=None, avg_gpu_power_w=None,
                                          cpu_power_method=None, gpu_power_method=None, cpu_cores=None,
                                          gpu_mem_cap_mib=None)
    store.record_feedback(d.decision_id, "pathological", "{}", bad, None)
    return d.decision_id


def test_run_reasons():
    ok = {"feasible": True, "device": "gpu", "time_total_s": 2.0, "n_samples": 64, "avg_cpu_power_w": 50.0,
          "avg_gpu_power_w": 200.0}
    assert run_reason(ok) is None
    assert run_reason({**ok, "feasible": False}) is None
    assert run_reason({**ok, "time_total_s": 1e-300}) == "time_per_sample_out_of_range"
    assert run_reason({**ok, "time_total_s": float("nan")}) == "time_per_sample_out_of_range"
    assert run_reason({**ok, "avg_cpu_power_w": float("inf")}) == "power_out_of_range"
    assert run_reason({**ok, "avg_gpu_power_w": -1.0}) == "power_out_of_range"
    assert run_reason({**ok, "time_total_s": 1e9, "n_samples": 1}) == "time_per_sample_out_of_range"


@pytest.mark.slow
def test_pathological_row_is_quarantined_and_updates_and_export_succeed(tmp_path, serve_model_dir, serve_world):
    settings, store, placer = _service(tmp_path, serve_model_dir)
    jobs = serve_world.jobs(40)
    for job in jobs[:-1]:
        (d,) = placer.place(PlacementRequest(job=job, target="B", explore=False)).to_response().decisions
        placer.feedback(FeedbackRequest.model_validate(
            {"decision_id": d.decision_id, "outcome": serve_world.outcome(job, TARGET, d.device)}))
    bad_id = store_pathological(store, placer, jobs[-1])
    # a row an older version wrote and this one no longer parses
    conn = sqlite3.connect(store.path)
    (did,) = conn.execute("SELECT decision_id FROM feedback ORDER BY seq LIMIT 1").fetchone()
    conn.execute("UPDATE feedback SET outcome_json='{\"device\": \"tpu\"}' WHERE decision_id=?", (did,))
    conn.commit()
    conn.close()
    skipped: list = []
    screened = screen_stored(store.recent_feedback(skipped=skipped), skipped)
    # the pathological row is refused when read back (the stored outcome fails the implied-quantity
    # checks of placement.serve.schemas) or, where it still parses, when its power is derived: either way quarantined
    assert sum(screened.counts.values()) == 2 and set(screened.counts) <= {"underivable", "unreadable"}
    assert bad_id in {q.decision_id for q in screened.quarantined} and len(screened.usable) == 38
    with pytest.raises(ValueError):
        store.recent_feedback()  # without `skipped` the store still refuses to hide a bad row

    report = Learner(settings, store).update()
    assert report.status in ("promoted", "rejected", "skipped") and report.quarantined == screened.counts
    assert report.feedback_used == 38
    trace = read_trace(tmp_path / "traces" / f"{report.candidate_version}.parquet") if report.candidate_version else None
    if trace is not None:
        assert bad_id not in set(trace.frame["job_id"])
    assert learner_fields(store)["quarantine"]["counts"] == screened.counts
    Learner(settings, store).update()  # counted once, not per update
    assert learner_fields(store)["quarantine"]["counts"] == screened.counts

    path, _ = store.export_trace(tmp_path / "fb.parquet")
    exported = read_trace(path)
    assert bad_id not in set(exported.frame["job_id"]) and did not in set(exported.frame["job_id"])
    assert exported.meta.extra["quarantined"] == screened.counts
