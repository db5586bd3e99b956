"""Decisions written behind the answer (``decision_writes = "behind"``, :mod:`placement.serve.storage.writer`):
everything answered is stored, in group commits; a feedback finds its decision whether this replica
or another one still holds it; a store that refuses writes turns new placements into 503s and loses
nothing queued; closing the service writes what is queued. On both engines where a store is involved."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from placement.core.catalogue import get_target
from placement.serve.placer import Placer, bootstrap_store
from placement.serve.schemas import FeedbackRequest, PlacementRequest
from placement.serve.settings import Settings
from placement.serve.storage.store import StorageUnavailable, Store
from tests.plain_server import plain_app

TARGET = get_target("B")
TOKEN = "writer-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _settings(tmp_path, model_dir, location=None, **extra) -> Settings:
    db = {"db_url": location} if isinstance(location, str) else {"db_path": location or tmp_path / "placement.db"}
    return Settings(state_dir=tmp_path / "state", model_path=model_dir, token=TOKEN, exploration_rate=0.0,
                    learn_interval_s=3600, policy_poll_s=60.0, decision_writes="behind", **db, **extra)


def _placer(settings: Settings) -> Placer:
    store = Store.from_settings(settings)
    return Placer(bootstrap_store(store, settings), settings=settings, store=store)


@pytest.mark.parametrize("store_location", ["sqlite", "postgresql"], indirect=True)
def test_every_answered_decision_is_stored_and_takes_feedback_at_once(tmp_path, serve_model_dir, serve_world,
                                                                      store_location):
    placer = _placer(_settings(tmp_path, serve_model_dir, store_location))
    try:
        jobs = serve_world.jobs(60, seed=3)
        answers = [placer.place(PlacementRequest(job=j, target="B")) for j in jobs[:40]]
        answers.append(placer.place(PlacementRequest(jobs=jobs[40:], target="B")))
        # the feedback for the newest answer, at once: the writer commits it first
        last = answers[-1]
        did = last.decision_ids[-1]
        device = "gpu" if last.gpu[-1] else "cpu"
        answer, replayed = placer.feedback(FeedbackRequest.model_validate(
            {"decision_id": did, "outcome": serve_world.outcome(jobs[-1], TARGET, device)}))
        assert not replayed and did in answer
        assert placer.writer is not None and placer.writer.flush(10.0)
        assert placer.store.stats()["decisions"]["total"] == 60
        assert placer.writer.pending_jobs == 0 and 1 <= placer.writer.written_batches <= 41
        for r in answers:
            for i, did in enumerate(r.decision_ids):
                assert placer.store.get_decision(did).device == ("gpu" if r.gpu[i] else "cpu")
    finally:
        placer.close()
        placer.store.close()


def test_a_refusing_store_answers_503_keeps_the_queue_and_recovers(tmp_path, serve_model_dir, serve_world,
                                                                   monkeypatch):
    placer = _placer(_settings(tmp_path, serve_model_dir))
    store, writer = placer.store, placer.writer
    assert writer is not None
    real = store.insert_decisions
    refuse = threading.Event()
    refuse.set()

    def insert(*batches):
        if refuse.is_set():
            raise StorageUnavailable("database or disk is full")
        real(*batches)

    monkeypatch.setattr(store, "insert_decisions", insert)
    monkeypatch.setattr(writer, "_retry_s", 0.05)
    jobs = serve_world.jobs(5, seed=4)
    try:
        first = placer.place(PlacementRequest(job=jobs[0], target="B"))  # queued before the refusal is known
        deadline = time.monotonic() + 10
        while writer.error is None:
            assert time.monotonic() < deadline, "the writer never tried"
            time.sleep(0.01)
        with pytest.raises(StorageUnavailable, match="not being stored"):
            placer.place(PlacementRequest(job=jobs[1], target="B"))
        assert writer.pending_jobs == 1 and writer.holds(first.batch_id)
        refuse.clear()  # space freed
        assert writer.flush(10.0) and writer.error is None
        store.get_decision(first.decision_ids[0])
        placer.place(PlacementRequest(job=jobs[2], target="B"))
        assert writer.flush(10.0) and store.stats()["decisions"]["total"] == 2
    finally:
        placer.close()
        store.close()


def test_past_the_queue_limit_placements_answer_503(tmp_path, serve_model_dir, serve_world, monkeypatch):
    placer = _placer(_settings(tmp_path, serve_model_dir, max_pending_decisions=10))
    store, writer = placer.store, placer.writer
    assert writer is not None
    real = store.insert_decisions
    gate = threading.Event()

    def slow(*batches):
        gate.wait(10)
        real(*batches)

    monkeypatch.setattr(store, "insert_decisions", slow)
    jobs = serve_world.jobs(30, seed=5)
    try:
        placer.place(PlacementRequest(jobs=jobs[:10], target="B"))
        with pytest.raises(StorageUnavailable, match="limit 10"):
            placer.place(PlacementRequest(job=jobs[10], target="B"))
        gate.set()
        assert writer.flush(10.0)
        placer.place(PlacementRequest(jobs=jobs[10:20], target="B"))
        assert writer.flush(10.0) and store.stats()["decisions"]["total"] == 20
    finally:
        gate.set()
        placer.close()
        store.close()


def test_feedback_through_another_replica_waits_for_the_write(tmp_path, serve_model_dir, serve_world, monkeypatch):
    """Two replicas on one database: A answers, its write is held back; the feedback reaches B,
    which waits (``decision_wait_s``) for A's writer instead of refusing the decision as unknown."""
    settings = _settings(tmp_path, serve_model_dir, decision_wait_s=2.0)
    app_a, service_a = plain_app(settings, replica="a")
    app_b, service_b = plain_app(settings, replica="b")
    writer_a = service_a.placer.writer
    assert writer_a is not None
    real = service_a.store.insert_decisions
    gate = threading.Event()

    def held(*batches):
        gate.wait(10)
        real(*batches)

    monkeypatch.setattr(service_a.store, "insert_decisions", held)
    job = serve_world.jobs(1, seed=6)[0]
    try:
        with TestClient(app_a) as a, TestClient(app_b) as b:
            r = a.post("/v1/placements", json={"job": job.model_dump(), "target": "B"})
            assert r.status_code == 200, r.text
            (d,) = r.json()["decisions"]
            body = {"decision_id": d["decision_id"], "outcome": serve_world.outcome(job, TARGET, d["device"])}
            threading.Timer(0.3, gate.set).start()
            t0 = time.monotonic()
            fb = b.post("/v1/feedback", json=body, headers=AUTH)
            assert fb.status_code == 200, fb.text
            assert time.monotonic() - t0 >= 0.25  # it waited for A's write
            # an id no replica answered is still refused, after the wait
            unknown = {**body, "decision_id": "0" * 32 + "-0"}
            assert b.post("/v1/feedback", json=unknown, headers=AUTH).status_code == 404
    finally:
        gate.set()
        service_a.close()
        service_b.close()


def test_closing_the_service_writes_what_is_queued(tmp_path, serve_model_dir, serve_world, monkeypatch):
    settings = _settings(tmp_path, serve_model_dir)
    app, service = plain_app(settings, replica="closing")
    real = service.store.insert_decisions

    def slow(*batches):
        time.sleep(0.2)
        real(*batches)

    monkeypatch.setattr(service.store, "insert_decisions", slow)
    jobs = serve_world.jobs(20, seed=7)
    with TestClient(app) as c:
        for j in jobs:
            assert c.post("/v1/placements", json={"job": j.model_dump(), "target": "B"}).status_code == 200
    service.close()
    assert service.placer.writer is not None and service.placer.writer.pending_jobs == 0
    with Store.from_settings(settings) as store:
        assert store.stats()["decisions"]["total"] == 20
