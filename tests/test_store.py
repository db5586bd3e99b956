"""The SQLite store: decisions and feedback survive reopening, feedback is idempotent, versions roll back."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from placement.catalogue import get_target
from placement.threshold import Thresholds
from placement.trace import read_trace
from serve.schemas import ReportedOutcome
from serve.store import (
    BATCH_COLUMNS,
    DecisionBatch,
    FeedbackConflict,
    Store,
    StoreError,
    UnknownDecision,
    decode_columns,
    encode_columns,
)


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


def test_decisions_and_feedback_survive_reopen(tmp_path, example_job):
    path = tmp_path / "p.db"
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
    # WAL mode on the file itself
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_feedback_idempotent_and_conflicting(tmp_path, example_job):
    store = Store(tmp_path / "p.db")
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


def test_versions_promote_and_roll_back(tmp_path):
    store = Store(tmp_path / "p.db")
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


def test_export_trace(tmp_path, example_job):
    store = Store(tmp_path / "p.db")
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
