"""The HTTP API in process: FastAPI's ``TestClient`` on the app every Ray ingress replica serves
(:func:`tests.plain_server.plain_app`: :func:`placement.serve.app.build_fastapi` around a
``PlacementService`` and an in-process learner), with no Ray, no server process and no socket.

Query/decide, feedback (token, idempotent replay, conflict), policy routes, and every bad input
of the Ray end-to-end tests (``tests/test_serve_e2e.py``) answered 4xx naming the field. Each test
gets its own app and store, so the tests pass alone and in any order."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from placement.core.catalogue import get_target
from placement.serve.settings import Settings
from tests.plain_server import plain_app
from tests.test_serve_e2e import _bad_feedback, _bad_placements

TARGET = get_target("B")
TOKEN = "inprocess-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path, serve_model_dir):
    """A fresh app (own state dir and store) on the session's test model; limits as the Ray app's
    (``conftest.serve_app``), so the same bad inputs get the same answers."""
    settings = Settings(state_dir=tmp_path, model_path=serve_model_dir, token=TOKEN, exploration_rate=0.2,
                        explore_band=0.45, learn_interval_s=3600, ppo_timesteps=64, policy_poll_s=60.0,
                        max_body_bytes=4 * 2**20, max_batch_jobs=20_000)
    app, service = plain_app(settings, replica="inprocess")
    try:
        with TestClient(app) as c:
            yield c
    finally:
        service.close()


def _place(c: TestClient, body: dict) -> dict:
    r = c.post("/v1/placements", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_health_targets_openapi_and_metrics(client, example_job):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["policy_version"] == "serve-test-dnn"
    assert health["replica"] == "inprocess"
    assert {"A", "B", "agx-orin"} <= {t["id"] for t in client.get("/v1/targets").json()["targets"]}
    spec = client.get("/openapi.json").json()
    assert {"/v1/placements", "/v1/feedback", "/v1/policy", "/v1/policy/rollback", "/v1/policy/update", "/healthz",
            "/metrics"} <= set(spec["paths"])
    _place(client, {"job": example_job.model_dump(), "target": "B"})
    metrics = client.get("/metrics").text
    assert 'placement_decisions_total{device=' in metrics and "placement_http_request_duration_seconds" in metrics


def test_one_job_a_batch_and_columns_are_decided(client, example_job):
    job = example_job.model_dump()
    (d,) = _place(client, {"job": job, "target": "B", "explore": False})["decisions"]
    assert d["device"] in ("cpu", "gpu") and d["policy_version"] == "serve-test-dnn" and d["decision_id"]
    assert not d["explored"]
    (again,) = _place(client, {"job": job, "target": "B", "explore": False})["decisions"]
    assert again["decision_id"] != d["decision_id"]
    assert (again["device"], again["gpu_probability"]) == (d["device"], pytest.approx(d["gpu_probability"]))
    edge = _place(client, {"job": job, "target": "agx-orin", "explore": False})["decisions"][0]
    assert 1 <= edge["cpu_cores"] <= 12 and (edge["gpu_mem_cap"] == "grow" or edge["gpu_mem_cap"] >= 1)
    batch = _place(client, {"jobs": [job] * 3, "target": "B", "thresholds": {"speedup_min": 1e4}})
    assert [x["device"] for x in batch["decisions"]] == ["cpu"] * 3
    assert len({x["decision_id"] for x in batch["decisions"]}) == 3
    columns = _place(client, {"columns": {k: [v, v] for k, v in job.items()}, "target": "B", "explore": False})
    assert columns["columns"]["device"] == [d["device"]] * 2 and len(set(columns["columns"]["decision_id"])) == 2


def test_bad_placements_are_4xx_naming_the_field(client, example_job):
    for body, status, field in _bad_placements(example_job.model_dump()):
        if isinstance(body, (dict, list)):
            r = client.post("/v1/placements", json=body)
        else:
            r = client.post("/v1/placements", content=body if isinstance(body, bytes) else body.encode(),
                            headers={"content-type": "application/json"})
        assert r.status_code == status, (body if not isinstance(body, bytes) else body[:20], r.text[:300])
        assert field in [x["field"] for x in r.json()["detail"]], (field, r.json())
    # what a client sends that is no request at all: refused before parsing, the header named
    r = client.post("/v1/placements", content=b"job=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["detail"][0]["field"] == "Content-Type", r.text


def test_feedback_is_recorded_once_replayed_and_checked(client, example_job, serve_world):
    job = example_job.model_dump()
    (d,) = _place(client, {"job": job, "target": "B", "explore": False})["decisions"]
    run = serve_world.outcome(example_job, TARGET, d["device"])
    other = serve_world.outcome(example_job, TARGET, "cpu" if d["device"] == "gpu" else "gpu")
    body = {"decision_id": d["decision_id"], "outcome": run}
    r = client.post("/v1/feedback", json=body)  # token first, then fields
    assert r.status_code == 401 and r.json()["detail"][0]["field"] == "Authorization"
    assert r.headers["www-authenticate"] == "Bearer"
    for bad, status, field in _bad_feedback(d, run, other):
        r = client.post("/v1/feedback", json=bad, headers=AUTH)
        assert r.status_code == status, (bad, r.text)
        assert field in [x["field"] for x in r.json()["detail"]], (field, r.json())
    assert client.get("/v1/policy", headers=AUTH).json()["feedback"]["total"] == 0  # nothing refused was stored
    first = client.post("/v1/feedback", json=body, headers=AUTH)
    assert first.status_code == 200 and first.headers["idempotent-replayed"] == "false", first.text
    answer = first.json()
    assert answer["decision_id"] == d["decision_id"] and answer["observed_devices"] == [d["device"]]
    again = client.post("/v1/feedback", json=body, headers=AUTH)
    assert again.status_code == 200 and again.text == first.text and again.headers["idempotent-replayed"] == "true"
    changed = client.post("/v1/feedback", json={**body, "outcome": {**run, "time_total_s": 99.0}}, headers=AUTH)
    assert changed.status_code == 409 and changed.json()["detail"][0]["field"] == "decision_id"
    counts = client.get("/v1/policy", headers=AUTH).json()
    assert counts["feedback"]["total"] == 1 and counts["decisions"]["total"] == 1


def test_policy_routes_need_the_token_and_check_their_input(client):
    for method, path in (("GET", "/v1/policy"), ("POST", "/v1/policy/rollback"), ("POST", "/v1/policy/release"),
                         ("POST", "/v1/policy/update")):
        r = client.request(method, path, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"})
        assert r.status_code == 401 and r.json()["detail"][0]["field"] == "Authorization", (path, r.text)
    policy = client.get("/v1/policy", headers=AUTH).json()
    assert policy["version"] == "serve-test-dnn" and (policy["exploration_rate"], policy["explore_band"]) == (0.2, 0.45)
    assert policy["explore_z"] == 1.0 and policy["temperature"] == 1.0  # the test model records no temperature
    assert client.post("/v1/policy/update", headers=AUTH).json()["status"] == "skipped"  # no feedback yet
    r = client.post("/v1/policy/rollback", json={}, headers=AUTH)
    assert r.status_code == 409 and r.json()["detail"][0]["field"] == "version"  # nothing earlier to serve
    r = client.post("/v1/policy/rollback", json={"version": "no-such-version"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["detail"][0]["field"] == "version"
    r = client.post("/v1/policy/rollback", json={"version": 3}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "version"
    # no pin to release (the version that was pinned, None when none was)
    assert client.post("/v1/policy/release", headers=AUTH).json() == {"released": None,
                                                                      "active_version": "serve-test-dnn"}
