"""What a reported figure implies is checked, not only its own range, and the export never fails on a stored row.

Each outcome below is within every field's own bounds, yet implies a per-sample time that
rounds to 0 s, an infinite power, or a speedup that overflows: the request models refuse it
naming the field and the fix (the HTTP route turns that into a 422; the Ray tests send them
over HTTP). A row stored before these checks existed (or damaged) is skipped by
``Store.export_trace`` / ``placement export-feedback``, counted in the trace's metadata and
printed, never fatal.
"""

from __future__ import annotations

import sqlite3

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from placement.core.trace import read_trace
from placement.serve.schemas import FeedbackRequest, ReportedOutcome
from placement.serve.storage.store import Store
from tests.test_store import _batch, _gpu_run

DID = "a" * 32 + "-0"
# (request, the field the answer must name, a word of its message)
IMPLIED = [
    ({"outcome": {"device": "cpu", "n_samples": 64, "time_total_s": 5e-324}}, "outcome.time_total_s", "per sample"),
    ({"outcome": {"device": "gpu", "n_samples": 10**13, "time_total_s": 1e-3}}, "outcome.time_total_s", "below"),
    ({"outcome": {"device": "cpu", "n_samples": 64, "time_total_s": 1e-300, "energy_j": 1e15,
                  "energy_method": "measured"}}, "outcome.time_total_s", "below"),
    ({"outcome": {"device": "cpu", "n_samples": 1, "time_total_s": 1e-3, "energy_j": 1e9,
                  "energy_method": "measured"}}, "outcome.energy_j", "above the bound"),
    ({"outcome": {"device": "cpu", "n_samples": 1, "time_total_s": 1e9},
      "other_outcome": {"device": "gpu", "n_samples": 10**12, "time_total_s": 1e-9}}, "other_outcome.time_total_s",
     "below"),
    ({"outcome": {"device": "gpu", "n_samples": 1, "time_total_s": 1.0, "energy_j": 1e5, "energy_method": "measured"},
      "other_outcome": {"device": "cpu", "n_samples": 1, "time_total_s": 1.0, "energy_j": 1e-310,
                        "energy_method": "measured"}}, "other_outcome", "energy ratio"),
]


@pytest.mark.parametrize(("body", "field", "word"), IMPLIED)
def test_implied_quantities_are_refused_naming_the_field(body, field, word):
    from placement.serve.app import validation_errors

    with pytest.raises(ValidationError) as info:
        FeedbackRequest.model_validate({"decision_id": DID, **body})
    items = validation_errors(info.value)
    assert items[0]["field"] == field, items
    assert word in items[0]["message"], items


def test_ordinary_outcomes_still_pass():
    r = FeedbackRequest.model_validate({
        "decision_id": DID, "outcome": {"device": "gpu", "n_samples": 64, "time_total_s": 0.5, "energy_j": 60.0,
                                        "energy_method": "measured"},
        "other_outcome": {"device": "cpu", "n_samples": 64, "time_total_s": 2.0, "avg_cpu_power_w": 0.0,
                          "cpu_power_method": "modelled"}})
    assert r.other_outcome is not None


def _bad_store(tmp_path, example_job):
    """Two good rows and one stored as an older service would have (it divides to 0 s per sample)."""
    store = Store(tmp_path / "p.db")
    batch = _batch(example_job, n=3)
    store.insert_decisions(batch)
    cpu = ReportedOutcome(device="cpu", n_samples=640, time_total_s=20.0, energy_j=800.0, energy_method="measured")
    store.record_feedback(batch.decision_id(0), "a", "{}", _gpu_run(example_job), cpu)
    store.record_feedback(batch.decision_id(1), "b", "{}", _gpu_run(example_job), None)
    store.record_feedback(batch.decision_id(2), "c", "{}", _gpu_run(example_job), None)
    with sqlite3.connect(tmp_path / "p.db") as conn:  # what the unchecked service stored
        conn.execute("UPDATE feedback SET outcome_json=? WHERE decision_id=?",
                     ('{"device":"gpu","n_samples":64,"time_total_s":5e-324}', batch.decision_id(1)))
    return store, batch


def test_export_skips_and_reports_a_row_that_cannot_be_used(tmp_path, example_job):
    store, batch = _bad_store(tmp_path, example_job)
    path, _ = store.export_trace(tmp_path / "fb.parquet")
    trace = read_trace(path)
    assert len(trace.frame) == 3  # decision 0 (two runs) and decision 2
    assert batch.decision_id(1) not in set(trace.frame["job_id"])
    quarantined = trace.meta.extra["quarantined"]
    assert sum(quarantined.values()) == 1, quarantined
    assert store.last_export_quarantined == quarantined


def test_export_feedback_command_reports_skipped_rows(tmp_path, example_job):
    from placement.cli import app

    store, batch = _bad_store(tmp_path, example_job)
    store.close()
    result = CliRunner().invoke(app, ["export-feedback", str(tmp_path / "fb.csv"), "--db-path", str(tmp_path / "p.db")])
    assert result.exit_code == 0, result.output
    assert "left out 1 quarantined stored feedback rows" in " ".join(result.output.split())
