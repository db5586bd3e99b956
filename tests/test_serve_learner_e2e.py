"""The online learner through the running Ray Serve app (session fixture ``serve_app``): a stored
pathological outcome is quarantined and later updates and exports still succeed; a rollback stays
pinned until an operator releases it. Tests run in file order and share the app."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from placement.core.catalogue import get_target
from placement.core.trace import read_trace
from placement.serve.schemas import ReportedOutcome
from placement.serve.storage.store import Store

TARGET = get_target("B")


def _client(serve_app) -> httpx.Client:
    return httpx.Client(base_url=serve_app.url, timeout=900, headers=serve_app.headers)


def _place_and_report(c: httpx.Client, world, jobs) -> list[str]:
    r = c.post("/v1/placements", json={"jobs": [j.model_dump() for j in jobs], "target": "B", "explore": False})
    assert r.status_code == 200, r.text
    ids = []
    for job, d in zip(jobs, r.json()["decisions"], strict=True):
        fb = c.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                          "outcome": world.outcome(job, TARGET, d["device"])})
        assert fb.status_code == 200, fb.text
        ids.append(d["decision_id"])
    return ids


@pytest.mark.slow
def test_pathological_stored_outcome_is_quarantined(serve_app, serve_world, tmp_path):
    with _client(serve_app) as c:
        jobs = serve_world.jobs(30, seed=131)
        _place_and_report(c, serve_world, jobs[:-1])
        (d,) = c.post("/v1/placements", json={"job": jobs[-1].model_dump(), "target": "B"}).json()["decisions"]
        # accepted before the edge validated derived quantities: average power 1e15 J / 1e-300 s
        bad = ReportedOutcome.model_construct(
            device=d["device"], feasible=True, n_samples=jobs[-1].batch_size, time_total_s=1e-300, energy_j=1e15,
            energy_method="measured", infeasible_reason=None, avg_cpu_power_w=None, avg_gpu_power_w=None,
            cpu_power_method=None, gpu_power_method=None, cpu_cores=None, gpu_mem_cap_mib=None)
        with Store(serve_app.settings.database) as store:
            store.record_feedback(d["decision_id"], "pathological", "{}", bad, None)
        r = c.post("/v1/policy/update")  # the next test's update succeeds with the row still in the window
        assert r.status_code == 200, r.text
        assert sum(r.json()["quarantined"].values()) >= 1, r.json()
        learner = c.get("/v1/policy").json()["learner"]
        assert sum(learner["quarantine"]["counts"].values()) >= 1
        assert d["decision_id"] in {q["decision_id"] for q in learner["quarantine"]["recent"]}
    out = tmp_path / "fb.parquet"
    done = subprocess.run([sys.executable, "-m", "placement.cli", "export-feedback", str(out), "--db-path",
                           str(serve_app.settings.database)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    trace = read_trace(out)
    assert d["decision_id"] not in set(trace.frame["job_id"])
    assert sum(trace.meta.extra["quarantined"].values()) >= 1


@pytest.mark.slow
def test_rollback_stays_pinned_until_released(serve_app, serve_world):
    with _client(serve_app) as c:
        versions = [v["version"] for v in c.get("/v1/policy").json()["versions"] if v["status"] != "rejected"]
        if len(versions) < 2:  # make sure there is an earlier version to roll back to
            with Store(serve_app.settings.database) as store:
                from placement.core.threshold import Thresholds

                active = store.get_version(store.active_version())
                store.register_version("e2e-copy", active.path, parent=active.version, status="serving",
                                       thresholds=Thresholds(), metrics={}, activate=True)
        r = c.post("/v1/policy/rollback", json={})
        assert r.status_code == 200, r.text
        rolled = r.json()["active_version"]
        assert c.get("/v1/policy").json()["learner"]["pinned_version"] == rolled
        _place_and_report(c, serve_world, serve_world.jobs(16, seed=137))
        r = c.post("/v1/policy/update")
        assert r.status_code == 200, r.text
        report = r.json()
        assert sum(report["quarantined"].values()) >= 1  # the stored pathological row, still in the window
        policy = c.get("/v1/policy").json()
        if report["status"] == "promoted":  # only a candidate that beats the pinned version by the bound
            assert report["gate"]["confidence"] == serve_app.settings.pinned_gate_confidence
            assert policy["learner"]["pinned_version"] is None
        else:
            assert policy["learner"]["active_version_in_store"] == rolled
            assert policy["learner"]["pinned_version"] == rolled
        recent = policy["learner"]["recent_updates"][-1]
        assert {"feedback_used", "screened_out", "quarantined", "reason"} <= set(recent)
        released = c.post("/v1/policy/release").json()
        assert c.get("/v1/policy").json()["learner"]["pinned_version"] is None
        assert released["released"] in (rolled, None)
