"""The store on both engines (an SQLite file and a real PostgreSQL server started for the session):
decisions and feedback survive reopening, feedback is idempotent and version changes atomic under
concurrent writers, acknowledged rows survive SIGKILL, the schema migrates (Alembic)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy

from placement.core.catalogue import get_target
from placement.core.threshold import Thresholds
from placement.core.trace import read_trace
from placement.serve.schemas import ReportedOutcome
from placement.serve.storage.store import (
    BATCH_COLUMNS,
    METADATA,
    MIGRATIONS_DIR,
    SCHEMA_HEAD,
    DecisionBatch,
    FeedbackConflict,
    Store,
    StoreError,
    UnknownDecision,
    decode_columns,
    encode_columns,
)

ROOT = Path(__file__).resolve().parent.parent


def _batch(example_job, n: int = 3, gpu: bool = True) -> DecisionBatch:
    cols = {
        "batch_size": np.full(n, example_job.batch_size), "flops_per_batch": np.full(n, example_job.flops_per_batch),
        "param_count": np.full(n, example_job.param_count),
        "input_elems_per_sample": np.full(n, example_job.input_elems_per_sample),
        "input_bytes_per_sample": np.full(n, example_job.input_bytes_per_sample), "dataset_size": np.full(n, -1),
        "gpu": np.full(n, gpu), "cpu_cores": np.full(n, 8), "gpu_mem_cap_mib": np.full(n, -1),
        "gpu_probability": np.linspace(0.6, 0.9, n), "predicted_speedup": np.full(n, 9.8),
        "predicted_energy_ratio": np.full(n, np.nan), "explored": np.zeros(n, dtype=bool), "propensity": np.ones(n),
        "name": [f"job{i}" for i in range(n)], "family": ["cnn"] * n, "mode": ["train"] * n, "decided_by": ["policy"] * n,
    }
    import uuid

    return DecisionBatch(uuid.uuid4().hex, 1.0e9, get_target("B"), Thresholds(), None, "v1", cols)


def _gpu_run(example_job) -> ReportedOutcome:
    return ReportedOutcome(device="gpu", n_samples=640, time_total_s=2.0, avg_cpu_power_w=40.0, cpu_power_method="measured",
                           avg_gpu_power_w=20.0, gpu_power_method="measured")


def test_columns_round_trip():
    cols = {name: np.arange(4) for name in BATCH_COLUMNS}
    cols.update({"name": ["a", "é", "c", "d"], "family": ["cnn"] * 4, "mode": ["infer"] * 4, "decided_by": ["policy"] * 4,
                 "gpu": np.array([True, False, True, False]), "predicted_speedup": np.array([1.0, np.nan, 2.0, 3.0])})
    back = decode_columns(encode_columns(cols))
    assert back["name"] == ["a", "é", "c", "d"]
    assert back["gpu"].tolist() == [True, False, True, False]
    assert np.isnan(back["predicted_speedup"][1]) and back["predicted_speedup"][3] == 3.0
    assert back["batch_size"].dtype == np.int64


def test_decisions_and_feedback_survive_reopen(store_location, example_job):
    path = store_location
    store = Store(path)
    batch = _batch(example_job)
    store.insert_decisions(batch)
    did = batch.decision_id(1)
    first, replayed = store.record_feedback(did, "h1", '{"ok": 1}', _gpu_run(example_job), None)
    assert (first, replayed) == ('{"ok": 1}', False)
    store.close()

    reopened = Store(path)
    d = reopened.get_decision(did)
    assert d.job.name == "job1" and d.job.flops_per_batch == example_job.flops_per_batch
    assert d.device == "gpu" and d.cpu_cores == 8 and d.gpu_mem_cap_mib is None
    assert d.target.id == "B" and d.predicted_energy_ratio is None and d.predicted_speedup == pytest.approx(9.8)
    fb = reopened.recent_feedback()
    assert [f.decision.decision_id for f in fb] == [did]
    assert fb[0].outcome.time_total_s == 2.0
    stats = reopened.stats()
    assert stats["decisions"] == {"total": 3, "gpu": 3, "cpu": 0, "explored": 0, "gpu_share": 1.0}
    assert stats["feedback"]["total"] == 1
    if isinstance(path, str):
        return
    # WAL mode on the file itself
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_feedback_idempotent_and_conflicting(store_location, example_job):
    store = Store(store_location)
    batch = _batch(example_job)
    store.insert_decisions(batch)
    did = batch.decision_id(0)
    run = _gpu_run(example_job)
    assert store.record_feedback(did, "same", "answer-1", run, None) == ("answer-1", False)
    # same payload again: the stored answer, flagged as a replay, nothing new stored
    assert store.record_feedback(did, "same", "answer-2", run, None) == ("answer-1", True)
    assert store.feedback_count() == 1
    with pytest.raises(FeedbackConflict):
        store.record_feedback(did, "different", "answer-3", run, None)
    with pytest.raises(UnknownDecision):
        store.record_feedback(batch.decision_id(99), "x", "y", run, None)
    with pytest.raises(UnknownDecision):
        store.get_decision("0" * 32 + "-0")
    with pytest.raises(UnknownDecision):
        store.get_decision("not-an-id")


def _alice_and_unattributed(store_location, example_job) -> tuple[Store, DecisionBatch, ReportedOutcome]:
    """A store with three decisions: the first's feedback from client ``alice``, the second's from no one."""
    store = Store(store_location)
    batch = _batch(example_job)
    store.insert_decisions(batch)
    run = _gpu_run(example_job)
    store.record_feedback(batch.decision_id(0), "a", "answer-a", run, None, "alice")
    store.record_feedback(batch.decision_id(1), "b", "answer-b", run, None)
    return store, batch, run


def test_feedback_keeps_the_client_that_reported_it(store_location, example_job):
    store, batch, run = _alice_and_unattributed(store_location, example_job)
    # a replay from another client keeps the first attribution (feedback is stored once)
    assert store.record_feedback(batch.decision_id(0), "a", "x", run, None, "mallory") == ("answer-a", True)
    assert [fb.client for fb in store.recent_feedback()] == ["alice", None]
    store.close()


def test_evidence_carries_the_client_that_reported_it(store_location, example_job):
    """A feedback run's evidence row says who reported it (read from its feedback row); a probe's says
    no one -- the placer leaves a distrusted client's runs out of the history by this name."""
    from placement.serve.storage.store import EvidenceRow

    store, batch, _ = _alice_and_unattributed(store_location, example_job)
    job_json = example_job.model_dump_json()
    rows = [EvidenceRow("sig", "tk", float(k), source, decision_id, job_json, "gpu", True, 1e-3, 300.0, "measured")
            for k, (source, decision_id) in enumerate((("feedback", batch.decision_id(0)), ("feedback", batch.decision_id(1)),
                                                       ("probe", batch.decision_id(2))))]
    store.add_evidence(rows)
    got = store.evidence(["sig"], "tk")["sig"]
    assert [(ev.source, ev.client) for ev in got] == [("feedback", "alice"), ("feedback", None), ("probe", None)]
    assert [ev.decision_id for ev in got] == [batch.decision_id(k) for k in range(3)]
    store.close()


def test_versions_promote_and_roll_back(store_location, tmp_path):
    store = Store(store_location)
    th = Thresholds()
    store.register_version("v1", tmp_path / "v1", parent=None, status="serving", thresholds=th, metrics={}, activate=True)
    store.register_version("v2", tmp_path / "v2", parent="v1", status="serving", thresholds=th, metrics={}, activate=True)
    store.register_version("v3", tmp_path / "v3", parent="v2", status="rejected", thresholds=th, metrics={"gate": 0})
    assert store.active_version() == "v2"
    assert {v.version: v.status for v in store.versions()} == {"v1": "retired", "v2": "serving", "v3": "rejected"}
    with pytest.raises(ValueError, match="rejected"):
        store.rollback("v3")
    assert store.rollback() == ("v1", "v2")
    assert store.active_version() == "v1"
    assert store.rollback() == ("v2", "v1")  # back again to the one before
    with pytest.raises(KeyError):
        store.rollback("nope")
    with pytest.raises(ValueError, match="already exists"):
        store.register_version("v1", tmp_path, parent=None, status="serving", thresholds=th, metrics={})
    assert store.stats()["events"] == {"register": 2, "promote": 2, "reject": 1, "rollback": 2}


def test_export_trace(store_location, tmp_path, example_job):
    store = Store(store_location)
    batch = _batch(example_job, n=2)
    store.insert_decisions(batch)
    cpu = ReportedOutcome(device="cpu", n_samples=640, time_total_s=20.0, energy_j=800.0, energy_method="measured")
    store.record_feedback(batch.decision_id(0), "a", "{}", _gpu_run(example_job), cpu)
    oom = ReportedOutcome(device="gpu", feasible=False, infeasible_reason="oom")
    store.record_feedback(batch.decision_id(1), "b", "{}", oom, None)
    path, sha = store.export_trace(tmp_path / "fb.parquet", seed=3)
    trace = read_trace(path)
    assert trace.sha256 == sha and trace.meta.source == "feedback" and trace.meta.seed == 3
    assert trace.meta.code_version and trace.meta.extra["thresholds"]["speedup_min"] == 2.0
    frame = trace.frame
    assert len(frame) == 3 and set(frame["source"]) == {"feedback"}
    cpu_row = frame[frame["device"] == "cpu"].iloc[0]
    assert cpu_row["avg_cpu_power_w"] == pytest.approx(40.0)  # 800 J over 20 s
    assert cpu_row["cpu_power_method"] == "measured"
    assert not bool(frame[frame["job_id"] == batch.decision_id(1)]["feasible"].iloc[0])


def test_bad_database_file(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="PLACEMENT_DB_PATH"):
        Store(bad)


def test_unreachable_server_is_a_clear_error():
    from tests.plain_server import free_port

    url = f"postgresql+psycopg://placement@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreError, match="PLACEMENT_DB_URL"):
        Store(url)
    with pytest.raises(StoreError, match="only sqlite and postgresql"):
        Store("mysql://x@127.0.0.1/db")


# --------------------------------------------------------------------------------------
# concurrent replicas: one Store (one connection pool) per thread, as separate replicas have
# --------------------------------------------------------------------------------------
def _hammer(n_workers: int, work) -> list:
    """Run ``work(worker_index)`` on ``n_workers`` threads released at once; their results (or exceptions)."""
    barrier = threading.Barrier(n_workers)
    results: list = [None] * n_workers

    def run(k: int) -> None:
        barrier.wait()
        try:
            results[k] = work(k)
        except Exception as exc:  # reported to the test
            results[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_concurrent_feedback_is_stored_once(store_location, example_job):
    """Six replicas race to record feedback for the same 40 decisions (three with one payload,
    three with another): each decision ends with exactly one row; every caller either wrote it,
    got its replay, or was told of the conflict, and the stored answer is the writer's."""
    first = Store(store_location)
    batch = _batch(example_job, n=40)
    first.insert_decisions(batch)
    run = _gpu_run(example_job)
    stores = [Store(store_location) for _ in range(6)]

    def work(k: int) -> list:
        payload = "even" if k % 2 == 0 else "odd"
        out = []
        for i in range(40):
            try:
                out.append(stores[k].record_feedback(batch.decision_id(i), payload, f"answer-{payload}", run, None))
            except FeedbackConflict:
                out.append("conflict")
        return out

    results = _hammer(6, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert first.feedback_count() == 40
    for i in range(40):
        outcomes = [r[i] for r in results]
        written = [o for o in outcomes if o != "conflict" and o[1] is False]
        assert len(written) == 1, outcomes  # exactly one writer per decision
        winner = written[0][0]
        for o in outcomes:  # the others: a replay of the winner's answer, or a conflict
            assert o == "conflict" or o[0] == winner
        assert sum(o == "conflict" for o in outcomes) == 3
    for s in (first, *stores):
        s.close()


def test_concurrent_promotions_leave_one_serving_version(store_location, tmp_path):
    """Four replicas register-and-activate, promote, roll back and count at once: afterwards
    exactly one version is 'serving' and it is the active one; no count is lost."""
    th = Thresholds()
    setup = Store(store_location)
    setup.register_version("v0", tmp_path, parent=None, status="serving", thresholds=th, metrics={}, activate=True)
    stores = [Store(store_location) for _ in range(4)]

    def work(k: int) -> int:
        s = stores[k]
        for j in range(6):
            s.register_version(f"w{k}-{j}", tmp_path, parent="v0", status="serving", thresholds=th, metrics={},
                               activate=True)
            s.increment_meta("learner_updates_promoted")
            if j % 3 == 2:
                s.promote("v0", {"reason": "test"})
        return 0

    assert _hammer(4, work) == [0, 0, 0, 0]
    serving = [v.version for v in setup.versions() if v.status == "serving"]
    assert serving == [setup.active_version()]
    assert setup.stats()["learner"]["promoted"] == 24
    assert setup.stats()["events"]["register"] == 1 + 24
    # the same version registered twice at once: one wins, the other is told
    results = _hammer(4, lambda k: stores[k].register_version("same", tmp_path, parent=None, status="retired",
                                                              thresholds=th, metrics={}))
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, ValueError) and "already exists" in str(r) for r in results if r is not None)
    for s in (setup, *stores):
        s.close()


# --------------------------------------------------------------------------------------
# SIGKILL of a writing process: every acknowledged row is there afterwards
# --------------------------------------------------------------------------------------
_WRITER = """
import sys
from placement.serve.schemas import ReportedOutcome
from placement.serve.storage.store import Store
store = Store(sys.argv[1])
run = ReportedOutcome(device="cpu", n_samples=64, time_total_s=1.0, energy_j=50.0, energy_method="measured")
for did in sys.argv[2].split(","):
    store.record_feedback(did, "h-" + did, "answer-" + did, run, None)
    print(did, flush=True)  # acknowledged only after the commit returned
"""


def test_sigkill_loses_no_acknowledged_feedback(store_location, example_job):
    store = Store(store_location)
    batch = _batch(example_job, n=2000)
    store.insert_decisions(batch)
    ids = [batch.decision_id(i) for i in range(2000)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(store_location), ",".join(ids)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    acked: list[str] = []
    assert proc.stdout is not None
    while len(acked) < 100:
        line = proc.stdout.readline()
        assert line, "the writer ended early"
        acked.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    acked.extend(line.strip() for line in proc.stdout.read().splitlines() if line.strip())
    assert 100 <= len(acked) < 2000
    reopened = Store(store_location)
    stored = {fb.decision.decision_id for fb in reopened.recent_feedback()}
    missing = [d for d in acked if d not in stored]
    assert not missing, f"{len(missing)} acknowledged feedback rows lost"
    for did in acked[:20]:  # the stored answer is the acknowledged one
        assert reopened.record_feedback(did, "h-" + did, "other", _gpu_run(example_job), None) == ("answer-" + did, True)
    print(f"\n{store.dialect}: SIGKILL after {len(acked)} acknowledged feedback, {len(stored)} stored, 0 lost")
    store.close()
    reopened.close()


# --------------------------------------------------------------------------------------
# schema migrations (Alembic, shipped in serve/storage/migrations)
# --------------------------------------------------------------------------------------
def test_schema_head_matches_the_migration_scripts():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_heads() == [SCHEMA_HEAD]


def test_tables_match_the_migrations(store_location):
    """The tables the migrations create are the ones the queries are built from (Alembic's autogenerate diff is empty)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store(store_location)
    with store._engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), METADATA)
    assert diff == [], diff
    store.close()


_LEGACY_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE targets (target_key TEXT PRIMARY KEY, target_id TEXT NOT NULL, target_json TEXT NOT NULL);
CREATE TABLE decision_batches (batch_id TEXT PRIMARY KEY, created_at REAL NOT NULL, n INTEGER NOT NULL,
    n_gpu INTEGER NOT NULL, n_explored INTEGER NOT NULL, target_key TEXT NOT NULL REFERENCES targets(target_key),
    speedup_min REAL NOT NULL, energy_ratio_max REAL NOT NULL, missing_power TEXT NOT NULL, max_slowdown REAL,
    policy_version TEXT NOT NULL, columns BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT NOT NULL UNIQUE,
    batch_id TEXT NOT NULL REFERENCES decision_batches(batch_id), received_at REAL NOT NULL,
    payload_sha256 TEXT NOT NULL, response_json TEXT NOT NULL, device TEXT NOT NULL, feasible INTEGER NOT NULL,
    both_measured INTEGER NOT NULL, outcome_json TEXT NOT NULL, other_json TEXT);
CREATE TABLE policy_versions (version TEXT PRIMARY KEY, created_at REAL NOT NULL, path TEXT NOT NULL, parent TEXT,
    status TEXT NOT NULL CHECK (status IN ('serving', 'retired', 'rejected')), thresholds_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL);
CREATE TABLE policy_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('register', 'promote', 'reject', 'rollback')), version TEXT NOT NULL,
    detail_json TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1'), ('active_version', 'old-v');
INSERT INTO policy_versions VALUES ('old-v', 1.0, '/models/old', NULL, 'serving', '{}', '{}');
"""


def test_database_from_before_alembic_is_adopted(tmp_path):
    """A file the pre-Alembic store wrote (schema 1, no alembic_version) opens unchanged and is stamped."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_LEGACY_SCHEMA)
    store = Store(path)
    assert store.active_version() == "old-v" and store.get_version("old-v").path.as_posix() == "/models/old"
    assert "client" in {c["name"] for c in sqlalchemy.inspect(store._engine).get_columns("feedback")}  # 0003 ran
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == SCHEMA_HEAD


def test_database_newer_than_the_code_is_refused(store_location):
    Store(store_location).close()
    engine = sqlalchemy.create_engine(store_location if isinstance(store_location, str)
                                      else f"sqlite:///{store_location}")
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this code"):
        Store(store_location)


def test_settings_pick_the_engine(tmp_path, monkeypatch):
    from placement.serve.settings import Settings

    s = Settings(state_dir=tmp_path)
    store = Store.from_settings(s)
    assert store.dialect == "sqlite" and store.path == tmp_path / "placement.db"
    store.close()
    with pytest.raises(StoreError, match="PLACEMENT_DB_URL"):
        Store.from_settings(Settings(state_dir=tmp_path, db_url="postgresql+psycopg://u@127.0.0.1:1/x"))
