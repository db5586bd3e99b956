"""End to end against one real Ray Serve instance (session fixture ``serve_app``): bad input,
query -> feedback -> learner update -> new version served after scripted drift, rollback,
and a restart that keeps every acknowledged decision and feedback. The tests share the app and
a ledger of what it acknowledged; each also passes alone (the restart test places and reports
its own when no earlier test did). The same HTTP behaviour without Ray: ``tests/test_http_app.py``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from placement.core.catalogue import get_target
from placement.serve.storage.store import Store

TARGET = get_target("B")
LEDGER: dict[str, dict] = {"decisions": {}, "feedback": {}}
"""Every decision id and feedback payload the service acknowledged (for the restart test)."""


@pytest.fixture(autouse=True)
def _baseline(request):
    """The session app's counts before this module's first request: other modules share the app
    (and may have placed jobs and sent feedback), so this module checks its own additions. Taken
    once, before the first test of this module that uses the app (a test without ``serve_app``
    starts no Ray)."""
    if "serve_app" not in request.fixturenames or "baseline" in LEDGER:
        return
    serve_app = request.getfixturevalue("serve_app")
    with _client(serve_app, auth=True) as c:
        counts = c.get("/v1/policy").json()
    LEDGER["baseline"] = {"feedback": counts["feedback"]["total"], "decisions": counts["decisions"]["total"],
                          "explored": counts["decisions"]["explored"]}


def _client(serve_app, auth: bool = False) -> httpx.Client:
    return httpx.Client(base_url=serve_app.url, timeout=120, headers=serve_app.headers if auth else None)


def _place(c: httpx.Client, body: dict) -> dict:
    r = c.post("/v1/placements", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    for d in out["decisions"] or []:
        LEDGER["decisions"][d["decision_id"]] = d
    return out


def _feedback(c: httpx.Client, body: dict) -> httpx.Response:
    r = c.post("/v1/feedback", json=body)
    if r.status_code == 200:
        LEDGER["feedback"][body["decision_id"]] = (body, r.text)
    return r


@pytest.mark.slow
def test_health_openapi_and_one_decision(serve_app, example_job):
    serving = LEDGER.get("serving", "serve-test-dnn")  # the drift test's version, when it ran first
    with _client(serve_app) as c:
        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["policy_version"] == serving
        spec = c.get("/openapi.json").json()
        assert {"/v1/placements", "/v1/feedback", "/v1/policy", "/v1/policy/rollback", "/healthz", "/metrics"} <= set(spec["paths"])
        assert "PlacementRequest" in spec["components"]["schemas"]
        (d,) = _place(c, {"job": example_job.model_dump(), "target": "B"})["decisions"]
        assert d["device"] in ("cpu", "gpu") and d["policy_version"] == serving and d["decision_id"]
        edge = _place(c, {"job": example_job.model_dump(), "target": "agx-orin", "explore": False})["decisions"][0]
        assert 1 <= edge["cpu_cores"] <= 12 and (edge["gpu_mem_cap"] == "grow" or edge["gpu_mem_cap"] >= 1)
        # Ray's own HTTP proxy serves the same app (the fallback path)
        r = httpx.post(f"{serve_app.proxy_url}/v1/placements", json={"job": example_job.model_dump(), "target": "B"},
                       timeout=60)
        assert r.status_code == 200 and r.json()["decisions"][0]["gpu_probability"] == pytest.approx(d["gpu_probability"])
        LEDGER["decisions"][r.json()["decisions"][0]["decision_id"]] = r.json()["decisions"][0]
        metrics = c.get("/metrics").text
        assert 'placement_decisions_total{device="gpu"}' in metrics and "placement_http_request_duration_seconds" in metrics


def _bad_placements(job: dict) -> list[tuple[object, int, str]]:
    """(body, expected status, field named in the answer)."""
    nan_body = json.dumps({"job": {**job, "flops_per_batch": 1.0}}).replace("1.0", "NaN")
    cols = {k: [v] * 20_001 for k, v in job.items()}
    return [
        ({"job": {k: v for k, v in job.items() if k != "batch_size"}}, 422, "job.batch_size"),
        ({"job": {**job, "batch_size": -4}}, 422, "job.batch_size"),
        ({"job": {**job, "param_count": "many"}}, 422, "job.param_count"),
        ({"job": {**job, "batch_size": 6.5}}, 422, "job.batch_size"),
        ({"job": {**job, "batch_size": True}}, 422, "job.batch_size"),
        ({"job": job, "target": {**TARGET.model_dump(mode="json"), "cpu_idle_w": False}}, 422, "target.cpu_idle_w"),
        ({"job": job, "target": {**TARGET.model_dump(mode="json"), "unified_memory": 0}}, 422, "target.unified_memory"),
        ({"job": {**job, "family": "quantum"}}, 422, "job.family"),
        (nan_body, 422, "job.flops_per_batch"),
        ({"job": job, "target": "no-such-box"}, 422, "target"),
        ({"job": job, "target": {"id": "x", "kind": "desktop"}}, 422, "target.cpu_model"),
        ({"job": job, "target": 42}, 422, "target"),
        ({"jobs": []}, 422, "jobs"),
        ({"jobs": [job, {**job, "mode": "fly"}]}, 422, "jobs[1].mode"),
        ({"job": job, "jobs": [job]}, 422, "body"),
        ({"job": job, "max_slowdown": 0.2}, 422, "max_slowdown"),
        ({"job": job, "thresholds": {"speedup_min": -2}}, 422, "thresholds.speedup_min"),
        ({"job": job, "surprise": True}, 422, "surprise"),
        ({"columns": {**{k: [v] for k, v in job.items()}, "batch_size": [1, 2]}}, 422, "columns"),
        ({"columns": cols, "target": "B"}, 413, "columns"),
        ([job], 422, "body"),
        ("{not json", 422, "body"),
        (b"\xff\xfe", 422, "body"),
        (b"x" * (5 * 2**20), 413, "body"),
    ]


def _bad_feedback(d: dict, run: dict, other_run: dict) -> list[tuple[dict, int, str]]:
    """(body, expected status, field named in the answer) for decision ``d``, whose device's run is
    ``run`` (``other_run``: the other device's)."""
    return [
        ({"decision_id": d["decision_id"]}, 422, "outcome"),
        ({"decision_id": "nope", "outcome": run}, 422, "decision_id"),
        ({"decision_id": "f" * 32 + "-0", "outcome": run}, 404, "decision_id"),
        ({"decision_id": d["decision_id"], "outcome": {**run, "time_total_s": -1.0}}, 422, "outcome.time_total_s"),
        ({"decision_id": d["decision_id"], "outcome": {**run, "n_samples": None}}, 422, "outcome"),
        ({"decision_id": d["decision_id"], "outcome": other_run}, 422, "outcome.device"),
        ({"decision_id": d["decision_id"], "outcome": {"device": d["device"], "feasible": False}}, 422, "outcome"),
        ({"decision_id": d["decision_id"], "outcome": {**run, "cpu_cores": 64}}, 422, "outcome.cpu_cores"),
        ({"decision_id": d["decision_id"], "outcome": run, "other_outcome": run}, 422, "body"),
    ]


@pytest.mark.slow
def test_bad_input_is_4xx_naming_the_field(serve_app, example_job, serve_world):
    job = example_job.model_dump()
    with _client(serve_app) as c:
        for body, status, field in _bad_placements(job):
            if isinstance(body, (dict, list)):
                r = c.post("/v1/placements", json=body)
            else:
                r = c.post("/v1/placements", content=body if isinstance(body, bytes) else body.encode(),
                           headers={"content-type": "application/json"})
            assert r.status_code == status, (body if not isinstance(body, bytes) else body[:20], r.text[:300])
            fields = [d["field"] for d in r.json()["detail"]]
            assert field in fields, (field, r.json())
        (d,) = _place(c, {"job": job, "target": "B", "explore": False})["decisions"]
        run = serve_world.outcome(example_job, TARGET, d["device"])
        other = "cpu" if d["device"] == "gpu" else "gpu"
        # feedback: token first, then fields
        assert c.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": run}).status_code == 401
        assert c.get("/v1/policy").status_code == 401
        assert c.post("/v1/policy/rollback", json={}, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}).status_code == 401
    bad_feedback = _bad_feedback(d, run, serve_world.outcome(example_job, TARGET, other))
    with _client(serve_app, auth=True) as c:
        for body, status, field in bad_feedback:
            r = c.post("/v1/feedback", json=body)
            assert r.status_code == status, (body, r.text)
            assert field in [x["field"] for x in r.json()["detail"]], (field, r.json())
        first = _feedback(c, {"decision_id": d["decision_id"], "outcome": run})
        assert first.status_code == 200 and first.headers["idempotent-replayed"] == "false"
        again = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": run})
        assert again.status_code == 200 and again.text == first.text and again.headers["idempotent-replayed"] == "true"
        changed = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": {**run, "time_total_s": 99.0}})
        assert changed.status_code == 409 and changed.json()["detail"][0]["field"] == "decision_id"
        assert c.post("/v1/policy/rollback", json={"version": "no-such-version"}).status_code == 404
        assert c.post("/v1/policy/rollback", json={"version": 3}).status_code == 422


@pytest.mark.slow
def test_a_client_token_reports_feedback_attributed_and_nothing_else(serve_app, example_job, serve_world):
    with _client(serve_app) as c:
        (d,) = _place(c, {"job": example_job.model_dump(), "target": "B", "explore": False})["decisions"]
    run = serve_world.outcome(example_job, TARGET, d["device"])
    with httpx.Client(base_url=serve_app.url, timeout=120,
                      headers={"Authorization": f"Bearer {serve_app.client_token}"}) as c:
        assert _feedback(c, {"decision_id": d["decision_id"], "outcome": run}).status_code == 200
        assert c.get("/v1/policy").status_code == 401  # the policy routes stay the operator's
        assert c.post("/v1/policy/rollback", json={}).status_code == 401
    from placement.serve.storage.store import Store

    store = Store.from_settings(serve_app.settings)
    try:
        assert {fb.decision.decision_id: fb.client for fb in store.recent_feedback(50)}[d["decision_id"]] == "team-e2e"
    finally:
        store.close()


def _hammer(url: str, body: dict, stop: threading.Event, statuses: list[int]) -> None:
    """Keep placing one job (bounded: at most ~20 requests/s) until ``stop``; record every status."""
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.is_set() and len(statuses) < 5000:
            try:
                statuses.append(c.post("/v1/placements", json=body).status_code)
            except httpx.HTTPError:
                statuses.append(-1)
            stop.wait(0.05)


@pytest.mark.slow
def test_drift_feedback_update_serves_a_new_version(serve_app, serve_world):
    jobs = serve_world.jobs(1500)
    speedup = np.array([serve_world.speedup(j, TARGET) for j in jobs])
    marginal = [j for j, s in zip(jobs, speedup, strict=True) if 2.6 < s < 5.5]
    clear_gpu = [j for j, s in zip(jobs, speedup, strict=True) if s > 12]
    clear_cpu = [j for j, s in zip(jobs, speedup, strict=True) if s < 1.2]
    probe = [j.model_dump() for j in marginal[150:230]]
    probe_gpu = [j.model_dump() for j in clear_gpu[75:150]]

    def gpu_share(c: httpx.Client, subset: list[dict]) -> tuple[float, str]:
        out = _place(c, {"jobs": subset, "target": "B", "explore": False})
        return float(np.mean([d["device"] == "gpu" for d in out["decisions"]])), out["policy_version"]

    mix = marginal[:150] + clear_gpu[:75] + clear_cpu[:75]
    mix = [mix[i] for i in np.random.default_rng(2).permutation(len(mix))]
    with _client(serve_app, auth=True) as c:
        before, version = gpu_share(c, probe)
        assert before > 0.8 and version == "serve-test-dnn"
        for slowdown in (1.0, 3.0):  # then drift: every GPU run is 3x slower
            serve_world.gpu_slowdown = slowdown
            for job in mix:
                (d,) = _place(c, {"job": job.model_dump(), "target": "B"})["decisions"]
                r = _feedback(c, {"decision_id": d["decision_id"], "outcome": serve_world.outcome(job, TARGET, d["device"])})
                assert r.status_code == 200, r.text
        counts = c.get("/v1/policy").json()
        base = LEDGER["baseline"]
        assert counts["feedback"]["total"] - base["feedback"] == len(LEDGER["feedback"]) >= 2 * len(mix)
        assert counts["decisions"]["total"] - base["decisions"] == len(LEDGER["decisions"])
        assert counts["decisions"]["explored"] - base["explored"] == sum(
            d["explored"] for d in LEDGER["decisions"].values())

        stop, statuses = threading.Event(), []
        hammer = threading.Thread(target=_hammer, args=(serve_app.url, {"job": probe[0], "target": "B"}, stop, statuses))
        hammer.start()
        try:
            report = c.post("/v1/policy/update").json()
            time.sleep(2 * serve_app.settings.policy_poll_s)
        finally:
            stop.set()
            hammer.join(timeout=60)
        assert report["status"] == "promoted", report
        assert report["candidate_holdout_reward"] > report["serving_holdout_reward"]
        assert statuses and set(statuses) == {200}, "no request failed while the new version was promoted"

        policy = c.get("/v1/policy").json()
        assert policy["version"] == report["candidate_version"]
        assert {v["version"]: v["status"] for v in policy["versions"]}["serve-test-dnn"] == "retired"
        assert policy["learner"]["updates"]["promoted"] == 1
        after, version = gpu_share(c, probe)
        assert version == report["candidate_version"]
        assert after < 0.3, f"marginal jobs on GPU: {before:.2f} before drift, {after:.2f} after the update"
        # jobs far above the threshold stay on the GPU: the candidate trained on the margins the placer
        # forms (shifted by the target's offsets), so it does not count the drift a second time
        assert gpu_share(c, probe_gpu)[0] > 0.9
        assert "placement_learner_updates_total" in c.get("/metrics").text

        # rollback keeps the old version servable, and back again
        rb = c.post("/v1/policy/rollback", json={})
        assert rb.status_code == 200 and rb.json() == {"active_version": "serve-test-dnn",
                                                       "previous_version": report["candidate_version"]}
        assert gpu_share(c, probe)[1] == "serve-test-dnn"
        fwd = c.post("/v1/policy/rollback", json={"version": report["candidate_version"]})
        assert fwd.status_code == 200
        assert gpu_share(c, probe) == (after, report["candidate_version"])
        LEDGER["serving"] = report["candidate_version"]


def test_serve_config_yaml_builds_the_app():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from placement.serve.app import app_builder

    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "serve" / "config.yaml").read_text())
    config = ServeDeploySchema.model_validate(data)
    (application,) = config.applications
    assert application.import_path == "placement.serve.app:app_builder"
    app = app_builder(application.args)
    assert type(app).__name__ == "Application"
    assert {d.name for d in application.deployments} == {"PlacementIngress", "PlacementLearner"}


def test_a_lost_node_is_detected_fast_and_its_replicas_can_move():
    """The GCS's node health checks that decide how soon a stopped node's replicas are replaced are in
    the environment Ray starts with and in the config's header an operator copies; the placer replicas
    are not pinned one per node (a lost node's replica must be placeable on the nodes left)."""
    import yaml

    from placement.serve.app import NODE_HEALTH_CHECK_FAILURES, NODE_HEALTH_CHECK_PERIOD_MS, ray_env
    from placement.serve.cluster import CONFIG_YAML
    from placement.serve.settings import Settings

    env = ray_env(Settings())
    assert env["RAY_health_check_period_ms"] == str(NODE_HEALTH_CHECK_PERIOD_MS)
    assert env["RAY_health_check_failure_threshold"] == str(NODE_HEALTH_CHECK_FAILURES)
    assert NODE_HEALTH_CHECK_PERIOD_MS * NODE_HEALTH_CHECK_FAILURES <= 5000  # leaves a replica's start in 10 s
    text = CONFIG_YAML.read_text()
    for name in ("RAY_health_check_period_ms", "RAY_health_check_failure_threshold"):
        assert f"{name}={env[name]}" in text, f"serve/config.yaml's header does not export {name}={env[name]}"
    for dep in yaml.safe_load(text)["applications"][0]["deployments"]:
        assert "max_replicas_per_node" not in dep


@pytest.mark.slow
def test_typed_client_and_apply(serve_app, serve_world, example_job):
    from placement.lab.knobs import FakeGpuMemory, allowed_cores
    from placement.serve.client import PlacementApiError, PlacementClient, apply

    with PlacementClient(serve_app.url, token=serve_app.token) as client:
        assert client.health()["status"] == "ok"
        d = client.place(example_job, "agx-orin", explore=False)
        LEDGER["decisions"][d.decision_id] = d.model_dump()
        before = allowed_cores()
        pinned = d.model_copy(update={"cpu_cores": 1})
        with apply(pinned, memory=FakeGpuMemory(total_mib=4096)) as applied_decision:
            assert len(allowed_cores()) == 1 and applied_decision.cpu_cores == 1
        assert allowed_cores() == before
        answer = client.feedback(d.decision_id, serve_world.outcome(example_job, get_target("agx-orin"), d.device))
        LEDGER["feedback"][d.decision_id] = ({"decision_id": d.decision_id, "outcome": serve_world.outcome(
            example_job, get_target("agx-orin"), d.device)}, None)
        assert answer.decision_id == d.decision_id and answer.observed_devices == [d.device]
        batch = client.place_batch([example_job] * 3, "B", thresholds={"speedup_min": 1e4})
        assert [x.device for x in batch.decisions or []] == ["cpu"] * 3
        for x in batch.decisions or []:
            LEDGER["decisions"][x.decision_id] = x.model_dump()
        assert client.policy().version == LEDGER.get("serving", "serve-test-dnn")
        with pytest.raises(PlacementApiError) as err:
            client.place(example_job, "no-such-box")
        assert err.value.status == 422 and err.value.detail[0]["field"] == "target"
    with PlacementClient(serve_app.url) as anonymous, pytest.raises(PlacementApiError) as err:
        anonymous.policy()
    assert err.value.status == 401


def _acknowledge_some(serve_app, serve_world) -> None:
    """Make sure the ledger holds a decision with acknowledged feedback and one still waiting for
    feedback (what the restart test checks): the earlier tests of this module leave both; run
    alone (or first), the restart test places and reports its own."""
    jobs = iter(serve_world.jobs(4, seed=11))
    with _client(serve_app, auth=True) as c:
        if not LEDGER["feedback"]:
            job = next(jobs)
            (d,) = _place(c, {"job": job.model_dump(), "target": "B"})["decisions"]
            r = _feedback(c, {"decision_id": d["decision_id"], "outcome": serve_world.outcome(job, TARGET, d["device"])})
            assert r.status_code == 200, r.text
        if set(LEDGER["decisions"]) <= set(LEDGER["feedback"]):
            _place(c, {"job": next(jobs).model_dump(), "target": "B"})


@pytest.mark.slow
def test_restart_keeps_every_acknowledged_decision_and_feedback(serve_app, serve_world):
    _acknowledge_some(serve_app, serve_world)
    assert LEDGER["decisions"] and LEDGER["feedback"]
    with _client(serve_app, auth=True) as c:
        before = c.get("/v1/policy").json()
    serve_app.module.stop()
    # come back with other exploration settings, given as the deployment's user_config
    url = serve_app.module.start(serve_app.settings, user_config={"exploration_rate": 0.05, "explore_band": 0.2})
    serve_app.url = url  # the port that answers (Ray may hand the new replica the next free one)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the app did not come back"
        time.sleep(0.2)
    # an independent reader sees every acknowledged decision and feedback
    store = Store(serve_app.settings.database)
    for did, d in LEDGER["decisions"].items():
        assert store.get_decision(did).device == d["device"]
    stored = {fb.decision.decision_id for fb in store.recent_feedback()}
    assert set(LEDGER["feedback"]) <= stored
    with httpx.Client(base_url=url, timeout=60, headers=serve_app.headers) as c:
        after = c.get("/v1/policy").json()
        assert (after["exploration_rate"], after["explore_band"]) == (0.05, 0.2)  # reconfigure() applied it
        assert after["version"] == LEDGER.get("serving", before["version"])  # the promoted version, not the bundled one
        assert after["decisions"] == before["decisions"] and after["feedback"] == before["feedback"]
        # replays answer exactly as before the restart
        for did, (body, text) in list(LEDGER["feedback"].items())[:20]:
            if text is None:
                continue
            r = c.post("/v1/feedback", json=body)
            assert r.status_code == 200 and r.text == text and r.headers["idempotent-replayed"] == "true", did
        # a decision made before the restart can still get its feedback
        pending = [d for did, d in LEDGER["decisions"].items() if did not in LEDGER["feedback"]]
        assert pending
        d = pending[0]
        job = store.get_decision(d["decision_id"]).job
        r = _feedback(c, {"decision_id": d["decision_id"], "outcome": serve_world.outcome(job, TARGET, d["device"])})
        assert r.status_code == 200, r.text
        assert c.get("/v1/policy").json()["feedback"]["total"] == before["feedback"]["total"] + 1
