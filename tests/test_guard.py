"""The HTTP guard (placement.serve.guard) and the token, retention and derived-input checks on the plain app, over real HTTP.

Fast and loopback-only: one plain service process (:mod:`tests.plain_server`, the app every
Ray replica serves) with short timeouts. The same checks run through Ray Serve in
``tests/test_reliability_ray.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

import httpx
import pytest

from placement.serve.settings import Settings, SettingsError
from placement.serve.storage.store import Store
from tests.plain_server import PlainServer, free_port
from tests.test_store import _batch

JOB = {"name": "x", "family": "cnn", "mode": "train", "batch_size": 64, "flops_per_batch": 1e12, "param_count": 10**7,
       "input_elems_per_sample": 150528, "input_bytes_per_sample": 602112}


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve_model_dir):
    settings = Settings(state_dir=tmp_path_factory.mktemp("guard_state"), model_path=serve_model_dir, port=free_port(),
                        learner_enabled=False, policy_poll_s=60.0, header_timeout_s=1.0, body_timeout_s=1.5,
                        max_body_reads_per_client=3, allowed_origins="https://ok.example",
                        placements_per_client_per_s=0.5, placement_burst=2, max_body_bytes=2**20)
    with PlainServer(settings) as s:
        yield s


def _client_from(server, address: str, timeout: float = 30) -> httpx.Client:
    """A client whose connections come from ``address`` (all of 127/8 is loopback): another client to the guard."""
    return httpx.Client(base_url=server.url, timeout=timeout, transport=httpx.HTTPTransport(local_address=address))


def _raw(port: int, head: bytes) -> socket.socket:
    sk = socket.create_connection(("127.0.0.1", port), timeout=10)
    sk.sendall(head)
    return sk


def _status(sk: socket.socket) -> int:
    line = sk.recv(4096).split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line else 0


@pytest.mark.server
def test_content_type_and_origin(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/feedback", content=b'{"decision_id": "x"}', headers={"content-type": "text/plain"})
        assert r.status_code == 415 and r.json()["detail"][0]["field"] == "Content-Type", r.text
        r = c.post("/v1/policy/rollback", content=b"version=x", headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415
        for origin in ("https://evil.example", "null", "http://127.0.0.1:1"):
            r = c.post("/v1/policy/update", headers={"origin": origin})
            assert r.status_code == 403 and r.json()["detail"][0]["field"] == "Origin", (origin, r.text)
        r = c.post("/v1/policy/update", headers={"sec-fetch-site": "cross-site"})
        assert r.status_code == 403
        assert c.post("/v1/policy/update", headers={"origin": server.url}).status_code == 200  # its own pages
        assert c.post("/v1/policy/update", headers={"origin": "https://ok.example/"}).status_code == 200
        assert c.post("/v1/policy/update").status_code == 200  # no Origin: not a browser
        assert c.get("/v1/policy", headers={"origin": "https://evil.example"}).status_code == 200  # reads stay open


@pytest.mark.server
def test_body_size_refused_before_reading(server):
    port = int(server.url.rsplit(":", 1)[1])
    sk = _raw(port, b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 104857600\r\n\r\n")
    assert _status(sk) == 413  # answered with no byte of the body sent
    sk.close()

    def chunks():
        for _ in range(8):
            yield b" " * 2**18

    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/feedback", content=chunks(), headers={"content-type": "application/json"})  # chunked
        assert r.status_code == 413 and r.json()["detail"][0]["field"] == "body"


@pytest.mark.server
def test_a_body_slightly_too_large_leaves_the_connection_usable(server):
    """Up to drain_limit_bytes the refused body is read and dropped, so the answer keeps the
    connection open (a proxy in front does not pass ``Connection: close`` on); a far larger one
    is refused unread and the connection closed."""
    from placement.serve.guard import drain_limit_bytes

    limit = server.settings.max_body_bytes
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/v1/placements", content=b" " * (limit + 1), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "connection" not in r.headers, r.headers

        def chunks():
            for _ in range(3):
                yield b" " * (limit // 2 + 1)

        r = c.post("/v1/placements", content=chunks(), headers={"content-type": "application/json"})  # chunked
        assert r.status_code == 413 and "connection" not in r.headers, r.headers
        assert c.post("/v1/placements", json={"job": JOB, "target": "B", "explore": False}).status_code == 200
    port = int(server.url.rsplit(":", 1)[1])
    sk = _raw(port, b"POST /v1/placements HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % (drain_limit_bytes(limit) + 1))
    head = sk.recv(4096).lower()
    assert head.startswith(b"http/1.1 413") and b"connection: close" in head, head
    sk.close()


@pytest.mark.server
def test_slow_body_times_out_and_slow_senders_are_capped_per_client(server):
    port = int(server.url.rsplit(":", 1)[1])
    head = b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    slow = [_raw(port, head) for _ in range(3)]
    time.sleep(0.2)
    extra = _raw(port, head)
    assert _status(extra) == 429  # a 4th body at once from this address
    with httpx.Client(base_url=server.url, timeout=5) as c:
        assert c.get("/healthz").status_code == 200
        # another address (all of 127/8 is loopback) is not held up by this one's slow bodies
        other = _client_from(server, "127.0.0.2", timeout=5)
        assert other.post("/v1/policy/update", json=None).status_code == 200
        other.close()
    t0 = time.monotonic()
    assert [_status(sk) for sk in slow] == [408, 408, 408]
    assert time.monotonic() - t0 < 3.0
    for sk in (*slow, extra):
        sk.close()


@pytest.mark.server
def test_headers_must_arrive_in_time(server):
    port = int(server.url.rsplit(":", 1)[1])
    sk = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    t0 = time.monotonic()
    assert sk.recv(100) == b""  # closed by the server
    assert 0.5 < time.monotonic() - t0 < 5.0


@pytest.mark.server
def test_placement_rate_limit_per_client(server):
    with _client_from(server, "127.0.0.3") as c:
        codes = [c.post("/v1/placements", json={"job": JOB, "target": "B"}).status_code for _ in range(4)]
        assert codes[:2] == [200, 200] and 429 in codes[2:], codes
        r = c.post("/v1/placements", json={"job": JOB, "target": "B"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    with _client_from(server, "127.0.0.4") as c:
        assert c.post("/v1/placements", json={"job": JOB, "target": "B"}).status_code == 200  # another client


@pytest.mark.server
def test_implied_quantities_answer_422_over_http(server):
    with _client_from(server, "127.0.0.5") as c:
        (d,) = c.post("/v1/placements", json={"job": JOB, "target": "B"}).json()["decisions"]
        other = "cpu" if d["device"] == "gpu" else "gpu"
        for body, field in (
            ({"outcome": {"device": d["device"], "n_samples": 64, "time_total_s": 5e-324}}, "outcome.time_total_s"),
            ({"outcome": {"device": d["device"], "n_samples": 64, "time_total_s": 1e-300, "energy_j": 1e15,
                          "energy_method": "measured"}}, "outcome.time_total_s"),
            ({"outcome": {"device": d["device"], "n_samples": 64, "time_total_s": 1.0},
              "other_outcome": {"device": other, "n_samples": 64, "time_total_s": 5e-324}}, "other_outcome.time_total_s"),
        ):
            r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], **body})
            assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.text
        ok = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": {
            "device": d["device"], "n_samples": 64, "time_total_s": 1.0}})
        assert ok.status_code == 200, ok.text


def test_token_file_must_be_private(tmp_path):
    path = tmp_path / "token"
    path.write_text("file-token-0123456789abcdef\n")
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        Settings.from_env({}, token_file=path, state_dir=tmp_path)
    path.chmod(0o600)
    s = Settings.from_env({"PLACEMENT_TOKEN_FILE": str(path)}, state_dir=tmp_path, host="0.0.0.0")
    import hashlib

    assert s.token_digest == hashlib.sha256(b"file-token-0123456789abcdef").hexdigest()
    replica = s.for_replicas()
    assert replica["token"] is None and replica["token_sha256"] is None and replica["token_file"] == str(path)
    assert "file-token" not in json.dumps(s.public())
    short = tmp_path / "short"
    short.write_text("tiny")
    os.chmod(short, 0o600)
    with pytest.raises(SettingsError, match="16 characters"):
        Settings.from_env({}, token_file=short, state_dir=tmp_path)


def test_retention_deletes_old_and_surplus_decisions_without_feedback(tmp_path, example_job):
    from placement.serve.schemas import ReportedOutcome

    store = Store(tmp_path / "p.db")
    batches = [dataclasses.replace(_batch(example_job, n=1000), created_at=1000.0 + i) for i in range(4)]
    for b in batches:
        store.insert_decisions(b)
    store.record_feedback(batches[0].decision_id(5), "x", "{}", ReportedOutcome(device="gpu", n_samples=1,
                                                                                 time_total_s=1.0), None)
    assert store.prune_decisions(max_age_s=10.0, max_rows=10**6, now=1012.5) == 2000  # batches 1 and 2; 0 has feedback
    assert store.stats()["decisions"]["total"] == 2000
    assert store.prune_decisions(max_age_s=1e9, max_rows=999, now=1012.5) == 1000  # batch 3: over the row cap
    assert store.get_decision(batches[0].decision_id(5)).decision_id == batches[0].decision_id(5)
    assert store.get_meta("retention_deleted_decisions") == "3000"
    with pytest.raises(KeyError):
        store.get_decision(batches[3].decision_id(0))
