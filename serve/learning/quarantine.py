"""Quarantine: stored feedback that cannot be used is kept, counted by reason, and never trained on.

A feedback row the service accepted may still be unusable once its derived quantities are
computed: ``time_total_s = 1e-300`` with ``energy_j = 1e15`` is accepted field by field, but
its average power (``energy_j / time_total_s``) is infinite and its time per sample is below
anything a machine can do. One such row used to make every learner update and every
``placement export-feedback`` fail until it left the history window. The learner and the
export therefore split stored feedback into *usable* rows and *quarantined* rows:

* the row stays in the database (nothing is deleted or rewritten);
* it is counted under a reason (:data:`REASONS`) shown on ``GET /v1/policy`` and written into
  an exported trace's metadata;
* it is never part of a training set, a held-out set, the evidence of another job's estimate,
  or an exported trace.

Checks, per reported run (the chosen device's and, when sent, the other device's):

``unreadable``            the stored JSON no longer parses as a :class:`~placement.serve.schemas.ReportedOutcome`
``underivable``           the trace-row form cannot be built (e.g. ``energy_j / time_total_s`` is not finite)
``time_per_sample_out_of_range``  time per sample not finite or outside [``MIN_TIME_PER_SAMPLE_S``, ``MAX_TIME_PER_SAMPLE_S``]
``power_out_of_range``    eq. (2) power not finite or above ``MAX_POWER_W`` (or negative)
``invalid_trace_row``     the row fails :func:`placement.core.trace.validate` for another reason

The edge validation of derived quantities (``serve/schemas.py``) refuses most such input with
a 4xx; this is the store-side defence for rows already accepted (older versions, direct
writes, a bound that changes).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from placement.core.trace import TraceValidationError, validate

if TYPE_CHECKING:
    from placement.serve.storage.store import StoredFeedback

MIN_TIME_PER_SAMPLE_S = 1e-10
"""0.1 ns per sample: faster than any job this service places (a 10 GHz core's single cycle)."""
MAX_TIME_PER_SAMPLE_S = 1e7
"""About 116 days per sample."""
MAX_POWER_W = 1e5
"""100 kW: above any single host (the edge validation's bound for reported powers)."""

REASONS = ("unreadable", "underivable", "time_per_sample_out_of_range", "power_out_of_range",
           "invalid_trace_row")


@dataclass(frozen=True)
class Quarantined:
    """A stored feedback row kept out of learning: its sequence number, decision id and reason."""

    seq: int
    decision_id: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Screened:
    """``usable`` feedback and the ``quarantined`` rows; ``counts`` by reason."""

    usable: list[StoredFeedback]
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Quarantined rows per reason."""
        return dict(Counter(q.reason for q in self.quarantined))


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(float(x))


def run_reason(row: dict[str, Any]) -> str | None:
    """The quarantine reason of one trace row (:func:`placement.serve.storage.store.run_row`), or None when usable."""
    if not row.get("feasible"):
        return None
    t, n = row.get("time_total_s"), row.get("n_samples")
    if t is None or n is None or not (_finite(t) and _finite(n)) or n <= 0:
        return "time_per_sample_out_of_range"
    tps = float(t) / float(n)
    if not (MIN_TIME_PER_SAMPLE_S <= tps <= MAX_TIME_PER_SAMPLE_S):
        return "time_per_sample_out_of_range"
    cpu_w = row.get("avg_cpu_power_w")
    gpu_w = row.get("avg_gpu_power_w")
    for w in (cpu_w, gpu_w if row.get("device") == "gpu" else None):
        if w is None:
            continue
        if not _finite(w) or w < 0 or w > MAX_POWER_W:
            return "power_out_of_range"
    return None


def trace_rows(fb: StoredFeedback) -> list[dict[str, Any]]:
    """The trace rows of a feedback (chosen run, then the other device's when reported)."""
    from placement.serve.storage.store import run_row

    return [run_row(fb.decision, run) for run in (fb.outcome, fb.other) if run is not None]


def feedback_reason(fb: StoredFeedback) -> tuple[str | None, str]:
    """``(reason, detail)`` of one feedback; reason None when every run is usable."""
    try:
        rows = trace_rows(fb)
    except Exception as exc:  # a derived quantity that cannot be represented (pydantic, overflow)
        return "underivable", f"{type(exc).__name__}: {str(exc)[:200]}"
    for row in rows:
        reason = run_reason(row)
        if reason is not None:
            return reason, f"{row['device']} run"
    return None, ""


def screen_stored(feedback: Sequence[StoredFeedback], unreadable: Sequence[tuple[int, str, str]] = ()) -> Screened:
    """Split feedback into usable and quarantined rows (see the module docstring).

    ``unreadable``: ``(seq, decision_id, error)`` of rows the store could not parse
    (:meth:`placement.serve.storage.store.Store.recent_feedback` with ``skipped``). A last net validates the
    usable rows as one trace; only when that fails are rows validated one by one."""
    out: list[Quarantined] = [Quarantined(seq, did, "unreadable", err[:200]) for seq, did, err in unreadable]
    usable: list[StoredFeedback] = []
    rows: list[dict[str, Any]] = []
    owner: list[int] = []
    for fb in feedback:
        reason, detail = feedback_reason(fb)
        if reason is not None:
            out.append(Quarantined(fb.seq, fb.decision.decision_id, reason, detail))
            continue
        for row in trace_rows(fb):
            rows.append(row)
            owner.append(len(usable))
        usable.append(fb)
    if rows:
        try:
            validate(pd.DataFrame(rows), source="feedback")
        except TraceValidationError:
            bad: dict[int, str] = {}
            for row, k in zip(rows, owner, strict=True):
                try:
                    validate(pd.DataFrame([row]), source="feedback")
                except TraceValidationError as exc:
                    bad.setdefault(k, str(exc)[:200])
            for k, detail in bad.items():
                fb = usable[k]
                out.append(Quarantined(fb.seq, fb.decision.decision_id, "invalid_trace_row", detail))
            usable = [fb for k, fb in enumerate(usable) if k not in bad]
    out.sort(key=lambda q: q.seq)
    return Screened(usable, out)
