"""Bearer-token auth over real HTTP on loopback: with ``PLACEMENT_TOKEN`` set, every feedback and
policy route refuses a missing, wrong or malformed token with 401 naming ``Authorization`` (and
``WWW-Authenticate: Bearer``) and changes nothing; the right token is accepted; placements,
health, targets and metrics stay open. A client token (``client_tokens_file``) opens feedback only,
and the feedback is stored attributed to its client. (The e2e tests check a few of these on Ray; this covers
every protected route and every kind of bad credential on the same app without Ray.)"""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from placement.serve.settings import Settings, SettingsError, read_client_tokens
from placement.serve.storage.store import Store
from tests.plain_server import PlainServer, free_port

pytestmark = pytest.mark.server
TOKEN = "auth-test-token-0123456789abcdef"
CLIENT_TOKEN = "team-a-token-0123456789abcdef"
PROTECTED = [("POST", "/v1/feedback", {"decision_id": "f" * 32 + "-0", "outcome": {"device": "cpu", "n_samples": 1,
                                                                                  "time_total_s": 1.0}}),
             ("GET", "/v1/policy", None),
             ("POST", "/v1/policy/rollback", {}),
             ("POST", "/v1/policy/update", None)]
BAD = {
    "missing": {},
    "wrong": {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    "prefix of the token": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token without scheme": {"Authorization": TOKEN},
    "basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "empty bearer": {"Authorization": "Bearer"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_model_dir):
    state = tmp_path_factory.mktemp("auth_state")
    clients = state / "clients"
    clients.write_text(f"# feedback tokens\nteam-a {CLIENT_TOKEN}\n")
    clients.chmod(0o600)
    settings = Settings(state_dir=state, model_path=serve_model_dir, port=free_port(), token=TOKEN,
                        client_tokens_file=clients, learner_enabled=False, policy_poll_s=60.0, ppo_timesteps=64)
    with PlainServer(settings) as s:
        yield s


@pytest.mark.slow
def test_protected_routes_refuse_bad_tokens_and_accept_the_right_one(server, example_job):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        (d,) = c.post("/v1/placements", json={"job": example_job.model_dump(mode="json"), "target": "B"}).json()["decisions"]
        feedback = {"decision_id": d["decision_id"], "outcome": {"device": d["device"], "n_samples": 64,
                                                                 "time_total_s": 2.0}}
        for method, path, body in PROTECTED:
            for why, headers in BAD.items():
                r = c.request(method, path, json=feedback if path == "/v1/feedback" else body, headers=headers)
                assert r.status_code == 401, (path, why, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                assert r.json()["error"] == "unauthorized" and r.json()["detail"][0]["field"] == "Authorization"
        good = {"Authorization": f"Bearer {TOKEN}"}
        policy = c.get("/v1/policy", headers=good).json()
        assert policy["feedback"]["total"] == 0  # nothing was recorded by the refused feedback
        assert c.post("/v1/feedback", json=feedback, headers=good).status_code == 200
        assert c.get("/v1/policy", headers={"Authorization": f"bearer  {TOKEN}"}).status_code == 200  # case, spaces
        assert c.post("/v1/policy/update", headers=good).json()["status"] == "skipped"
        assert c.post("/v1/policy/rollback", json={}, headers=good).status_code == 409  # nothing earlier to serve
        # open routes need no token
        for path in ("/healthz", "/v1/targets", "/metrics", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        assert c.get("/v1/policy", headers=good).json()["feedback"]["total"] == 1


@pytest.mark.slow
def test_without_a_token_configured_the_routes_are_open_on_loopback(tmp_path, serve_model_dir, example_job):
    settings = Settings(state_dir=tmp_path, model_path=serve_model_dir, port=free_port(), learner_enabled=False,
                        policy_poll_s=60.0)
    with PlainServer(settings) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        assert c.get("/v1/policy").status_code == 200
        (d,) = c.post("/v1/placements", json={"job": example_job.model_dump(mode="json"), "target": "B"}).json()["decisions"]
        r = c.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                         "outcome": {"device": d["device"], "n_samples": 64, "time_total_s": 2.0}})
        assert r.status_code == 200, r.text
    with pytest.raises(ValueError, match="PLACEMENT_TOKEN"):  # a routable address demands a token
        Settings(host="0.0.0.0", state_dir=tmp_path)


@pytest.mark.slow
def test_a_client_token_opens_feedback_only_and_attributes_it(server, example_job):
    client = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        (d,) = c.post("/v1/placements", json={"job": example_job.model_dump(mode="json"), "target": "B"}).json()["decisions"]
        r = c.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                         "outcome": {"device": d["device"], "n_samples": 64, "time_total_s": 2.0}},
                   headers=client)
        assert r.status_code == 200, r.text
        for method, path, body in PROTECTED[1:]:  # the policy routes stay the service's
            assert c.request(method, path, json=body, headers=client).status_code == 401, path
    store = Store(server.settings.database)
    assert {fb.decision.decision_id: fb.client for fb in store.recent_feedback()}[d["decision_id"]] == "team-a"
    store.close()


def _clients_file(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "clients"
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("text, message", [
    ("team-a\n", "line 1: expected '<client name> <token>'"),
    ("team-a short\n", "line 1: the token of 'team-a' must have at least 16 characters"),
    ("bad/name 0123456789abcdef0\n", "line 1: client name must be"),
    ("service 0123456789abcdef0\n", "line 1: client name must be"),
    ("a 0123456789abcdef0\n# comment\na 0123456789abcdef1\n", "line 3: client 'a' or its token appears twice"),
    ("a 0123456789abcdef0\nb 0123456789abcdef0\n", "line 2: client 'b' or its token appears twice"),
])
def test_a_bad_client_tokens_file_names_the_line_and_never_the_token(tmp_path, text, message):
    with pytest.raises(SettingsError, match=message) as err:
        read_client_tokens(_clients_file(tmp_path, text))
    assert "0123456789abcdef" not in str(err.value)


def test_client_tokens_need_a_private_file_and_the_service_token(tmp_path):
    with pytest.raises(SettingsError, match="chmod 600"):
        read_client_tokens(_clients_file(tmp_path, f"team-a {CLIENT_TOKEN}\n", 0o644))
    path = _clients_file(tmp_path, f"team-a {CLIENT_TOKEN}\n")
    assert read_client_tokens(path) == {hashlib.sha256(CLIENT_TOKEN.encode()).hexdigest(): "team-a"}
    with pytest.raises(ValueError, match="needs the service's own token"):
        Settings(state_dir=tmp_path, client_tokens_file=path)
    with pytest.raises(ValueError, match="equals the service token"):
        Settings(state_dir=tmp_path, client_tokens_file=path, token=CLIENT_TOKEN)
    assert Settings(state_dir=tmp_path, client_tokens_file=path, token=TOKEN).public()["client_tokens_file"] == str(path)
