"""Durable store of every decision, every feedback and every policy version: embedded SQLite in WAL mode.

One file (``Settings.database``, default ``~/.local/share/placement/placement.db``) holds:

* ``decisions`` -- one row per answered job: the job's features, the target (by content
  key into ``targets``), the answer (device, cores, cap), the policy's GPU probability,
  the performance model's predictions, whether the decision explored and with what
  propensity, the thresholds in force and the policy version;
* ``feedback`` -- at most one row per decision (idempotency: a replay with the same payload
  returns the stored answer, a different payload raises :class:`FeedbackConflict`);
* ``policy_versions`` / ``policy_events`` / ``meta`` -- the version registry (serving,
  retired, rejected), every promotion, rejection and rollback, and the active version.

A decision or feedback is committed before the service answers, so an acknowledged
write survives a restart. WAL with ``synchronous=NORMAL`` (default) survives process
crashes; ``synchronous=FULL`` also survives power loss. Several processes (placer
replicas, the learner) share the file; writers wait up to ``busy_timeout_ms``.

:meth:`Store.export_trace` writes the feedback as a placement trace
(:func:`placement.trace.write_trace`, ``source='feedback'``) for offline training: one row
per observed device run, ``job_id`` = the decision id.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from placement.hardware import HardwareTarget
from placement.job import Job
from placement.threshold import Thresholds
from placement.trace import TraceMeta, file_sha256, target_columns, write_trace
from placement.version import code_version
from serve.schemas import ReportedOutcome

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS targets (
    target_key TEXT PRIMARY KEY,
    target_id TEXT NOT NULL,
    target_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decision_batches (
    batch_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    n INTEGER NOT NULL,
    n_gpu INTEGER NOT NULL,
    n_explored INTEGER NOT NULL,
    target_key TEXT NOT NULL REFERENCES targets(target_key),
    speedup_min REAL NOT NULL,
    energy_ratio_max REAL NOT NULL,
    missing_power TEXT NOT NULL,
    max_slowdown REAL,
    policy_version TEXT NOT NULL,
    columns BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id TEXT NOT NULL UNIQUE,
    batch_id TEXT NOT NULL REFERENCES decision_batches(batch_id),
    received_at REAL NOT NULL,
    payload_sha256 TEXT NOT NULL,
    response_json TEXT NOT NULL,
    device TEXT NOT NULL,
    feasible INTEGER NOT NULL,
    both_measured INTEGER NOT NULL,
    outcome_json TEXT NOT NULL,
    other_json TEXT
);
CREATE TABLE IF NOT EXISTS policy_versions (
    version TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    path TEXT NOT NULL,
    parent TEXT,
    status TEXT NOT NULL CHECK (status IN ('serving', 'retired', 'rejected')),
    thresholds_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decision_signatures (
    decision_id TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    job_json TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evidence (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    signature TEXT NOT NULL,
    target_key TEXT NOT NULL,
    at REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('probe', 'feedback')),
    decision_id TEXT,
    job_json TEXT NOT NULL,
    device TEXT NOT NULL CHECK (device IN ('cpu', 'gpu')),
    feasible INTEGER NOT NULL,
    time_per_sample_s REAL,
    power_w REAL,
    power_method TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_by_signature ON evidence (signature, target_key, seq);
CREATE TABLE IF NOT EXISTS policy_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('register', 'promote', 'reject', 'rollback')),
    version TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
"""

NUMERIC_COLUMNS: dict[str, str] = {
    "batch_size": "<i8", "flops_per_batch": "<f8", "param_count": "<i8", "input_elems_per_sample": "<i8",
    "input_bytes_per_sample": "<i8", "dataset_size": "<i8", "gpu": "|b1", "cpu_cores": "<i8", "gpu_mem_cap_mib": "<i8",
    "gpu_probability": "<f8", "predicted_speedup": "<f8", "predicted_energy_ratio": "<f8", "explored": "|b1",
    "propensity": "<f8",
}
"""Numeric columns of a stored decision batch (``dataset_size`` and ``gpu_mem_cap_mib`` use -1 for
none/grow; predictions NaN where there are none)."""
TEXT_COLUMNS = ("name", "family", "mode", "decided_by")
BATCH_COLUMNS = tuple(NUMERIC_COLUMNS) + TEXT_COLUMNS


def encode_columns(columns: Mapping[str, Any]) -> bytes:
    """Pack a decision batch's columns: a JSON header, then raw little-endian arrays (no pickle)."""
    header: dict[str, Any] = {"numeric": [], "text": {}}
    chunks: list[bytes] = []
    offset = 0
    for name, dtype in NUMERIC_COLUMNS.items():
        raw = np.ascontiguousarray(np.asarray(columns[name], dtype=np.dtype(dtype))).tobytes()
        header["numeric"].append([name, dtype, offset, len(raw)])
        chunks.append(raw)
        offset += len(raw)
    for name in TEXT_COLUMNS:
        header["text"][name] = list(columns[name])
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<I", len(head)) + head + b"".join(chunks)


def decode_columns(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_columns` (numeric columns as read-only numpy views)."""
    (head_len,) = struct.unpack_from("<I", blob, 0)
    header = json.loads(blob[4 : 4 + head_len])
    base = 4 + head_len
    out: dict[str, Any] = {}
    for name, dtype, off, length in header["numeric"]:
        dt = np.dtype(dtype)
        out[name] = np.frombuffer(blob, dtype=dt, count=length // dt.itemsize, offset=base + off)
    out.update(header["text"])
    return out


def split_decision_id(decision_id: str) -> tuple[str, int]:
    batch_id, _, index = decision_id.partition("-")
    if len(batch_id) != 32 or not index.isdigit():
        raise UnknownDecision(decision_id)
    return batch_id, int(index)


class StoreError(RuntimeError):
    """The database cannot be used (wrong schema, unreadable file)."""


class UnknownDecision(KeyError):
    """No decision with this id."""


class FeedbackConflict(ValueError):
    """A second, different feedback for a decision that already has one."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class DecisionBatch:
    """One placement request's answers: ``columns`` holds :data:`BATCH_COLUMNS`, each of length ``n``;
    decision ``i`` has id ``f"{batch_id}-{i}"``."""

    batch_id: str
    created_at: float
    target: HardwareTarget
    thresholds: Thresholds
    max_slowdown: float | None
    policy_version: str
    columns: Mapping[str, Any]

    def decision_id(self, index: int) -> str:
        return f"{self.batch_id}-{index}"


@dataclass(frozen=True)
class StoredDecision:
    decision_id: str
    created_at: float
    job: Job
    target: HardwareTarget
    device: str
    cpu_cores: int
    gpu_mem_cap_mib: int | None
    gpu_probability: float
    predicted_speedup: float | None
    predicted_energy_ratio: float | None
    explored: bool
    propensity: float
    decided_by: str
    thresholds: Thresholds
    max_slowdown: float | None
    policy_version: str


@dataclass(frozen=True)
class StoredFeedback:
    seq: int
    received_at: float
    decision: StoredDecision
    outcome: ReportedOutcome
    other: ReportedOutcome | None


@dataclass(frozen=True)
class StoredVersion:
    version: str
    created_at: float
    path: Path
    parent: str | None
    status: str
    thresholds: dict[str, Any]
    metrics: dict[str, Any]


@dataclass(frozen=True)
class EvidenceRow:
    """One measured run of a signature's job on a target (``source`` probe or feedback).
    ``power_w`` is eq. (2)'s (CPU on CPU runs, GPU + host CPU on GPU runs); None when unknown."""

    signature: str
    target_key: str
    at: float
    source: str
    decision_id: str | None
    job_json: str
    device: str
    feasible: bool
    time_per_sample_s: float | None
    power_w: float | None
    power_method: str


def target_key(target: HardwareTarget) -> str:
    """Content key of a hardware description (two targets with the same figures share it)."""
    return hashlib.sha256(target.model_dump_json().encode()).hexdigest()[:24]


class Store:
    """SQLite (WAL) store shared by placer replicas and the learner. Thread-safe within a process."""

    def __init__(self, path: Path, *, synchronous: str = "normal", busy_timeout_ms: int = 30_000) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create its directory ({exc}); set PLACEMENT_DB_PATH to a "
                             "writable location") from exc
        # SQLite needs to write the file and, in WAL mode, its -wal and -shm files beside it
        for where in (self.path.parent, self.path):
            if where.exists() and not os.access(where, os.W_OK):
                raise StoreError(f"{self.path}: {where} is read-only (file permissions or a read-only disk): "
                                 "make it writable or set PLACEMENT_DB_PATH to a writable file")
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_ms / 1000)
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not switch SQLite to WAL mode (got {mode}); use a local disk")
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._tx():
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        self._conn.execute(stmt)
                row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self._conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: database schema {row[0]} is not {SCHEMA_VERSION}: export it with an older "
                        "version and start from a new PLACEMENT_DB_PATH"
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable SQLite database ({exc}); set PLACEMENT_DB_PATH to a new file") from exc
        self._known_targets: set[str] = set()
        self._target_cache: dict[str, HardwareTarget] = {}
        self._batch_cache: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _tx(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # also when COMMIT itself fails (disk full, read-only): a transaction left open
                # would refuse every later write on this connection, even after space is freed
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decisions ---------------------------------------------------------------------
    def insert_decisions(self, batch: DecisionBatch) -> None:
        """Commit a batch of decisions (one row, whatever its size) before the answer goes out."""
        key = target_key(batch.target)
        cols = batch.columns
        n = len(cols["gpu"])
        n_gpu = int(np.count_nonzero(cols["gpu"]))
        n_explored = int(np.count_nonzero(cols["explored"]))
        blob = encode_columns(cols)
        th = batch.thresholds
        with self._tx() as conn:
            if key not in self._known_targets:
                conn.execute(
                    "INSERT OR IGNORE INTO targets VALUES (?, ?, ?)", (key, batch.target.id, batch.target.model_dump_json())
                )
            conn.execute(
                "INSERT INTO decision_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (batch.batch_id, batch.created_at, n, n_gpu, n_explored, key, th.speedup_min, th.energy_ratio_max,
                 th.missing_power.value, batch.max_slowdown, batch.policy_version, blob),
            )
        self._known_targets.add(key)

    def _target(self, key: str) -> HardwareTarget:
        target = self._target_cache.get(key)
        if target is None:
            row = self._conn.execute("SELECT target_json FROM targets WHERE target_key=?", (key,)).fetchone()
            target = HardwareTarget.model_validate_json(row[0])
            self._target_cache[key] = target
        return target

    def _batch(self, batch_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(batch row, decoded columns)`` or None; recently read batches are cached."""
        hit = self._batch_cache.get(batch_id)
        if hit is not None:
            return hit
        row = self._conn.execute(
            "SELECT created_at, target_key, speedup_min, energy_ratio_max, missing_power, max_slowdown, policy_version, "
            "columns FROM decision_batches WHERE batch_id=?", (batch_id,)
        ).fetchone()
        if row is None:
            return None
        meta = dict(zip(("created_at", "target_key", "speedup_min", "energy_ratio_max", "missing_power", "max_slowdown",
                         "policy_version"), row[:7], strict=True))
        entry = (meta, decode_columns(row[7]))
        self._batch_cache[batch_id] = entry
        if len(self._batch_cache) > 64:
            self._batch_cache.pop(next(iter(self._batch_cache)))
        return entry

    def _decision(self, batch_id: str, index: int) -> StoredDecision:
        entry = self._batch(batch_id)
        decision_id = f"{batch_id}-{index}"
        if entry is None:
            raise UnknownDecision(decision_id)
        meta, cols = entry
        if not 0 <= index < len(cols["gpu"]):
            raise UnknownDecision(decision_id)
        i = index
        dataset = int(cols["dataset_size"][i])
        job = Job.model_construct(
            name=cols["name"][i], family=cols["family"][i], mode=cols["mode"][i], batch_size=int(cols["batch_size"][i]),
            flops_per_batch=float(cols["flops_per_batch"][i]), param_count=int(cols["param_count"][i]),
            input_elems_per_sample=int(cols["input_elems_per_sample"][i]),
            input_bytes_per_sample=int(cols["input_bytes_per_sample"][i]), dataset_size=dataset if dataset > 0 else None,
        )
        cap = int(cols["gpu_mem_cap_mib"][i])
        sp, er = float(cols["predicted_speedup"][i]), float(cols["predicted_energy_ratio"][i])
        return StoredDecision(
            decision_id=decision_id, created_at=meta["created_at"], job=job, target=self._target(meta["target_key"]),
            device="gpu" if cols["gpu"][i] else "cpu", cpu_cores=int(cols["cpu_cores"][i]),
            gpu_mem_cap_mib=cap if cap > 0 else None, gpu_probability=float(cols["gpu_probability"][i]),
            predicted_speedup=sp if np.isfinite(sp) else None, predicted_energy_ratio=er if np.isfinite(er) else None,
            explored=bool(cols["explored"][i]), propensity=float(cols["propensity"][i]), decided_by=cols["decided_by"][i],
            thresholds=Thresholds(meta["speedup_min"], meta["energy_ratio_max"], meta["missing_power"]),
            max_slowdown=meta["max_slowdown"], policy_version=meta["policy_version"],
        )

    def get_decision(self, decision_id: str) -> StoredDecision:
        batch_id, index = split_decision_id(decision_id)
        with self._lock:
            return self._decision(batch_id, index)

    # -- feedback ----------------------------------------------------------------------
    def record_feedback(
        self,
        decision_id: str,
        payload_sha256: str,
        response_json: str,
        outcome: ReportedOutcome,
        other: ReportedOutcome | None,
    ) -> tuple[str, bool]:
        """Store feedback once. Returns ``(response_json, replayed)``: the stored answer and
        whether this was a replay of the same payload. Raises :class:`UnknownDecision` or
        :class:`FeedbackConflict` (same decision, different payload)."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT payload_sha256, response_json FROM feedback WHERE decision_id=?", (decision_id,)
            ).fetchone()
            if row is not None:
                if row[0] == payload_sha256:
                    return row[1], True
                raise FeedbackConflict(
                    f"decision {decision_id} already has different feedback (recorded first, kept): "
                    "feedback is accepted once per decision"
                )
            batch_id, index = split_decision_id(decision_id)
            self._decision(batch_id, index)  # raises UnknownDecision
            conn.execute(
                "INSERT INTO feedback (decision_id, batch_id, received_at, payload_sha256, response_json, device, "
                "feasible, both_measured, outcome_json, other_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    decision_id, batch_id, time.time(), payload_sha256, response_json, str(outcome.device),
                    int(outcome.feasible),
                    int(other is not None), outcome.model_dump_json(), None if other is None else other.model_dump_json(),
                ),
            )
        return response_json, False

    def feedback_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def last_feedback_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT MAX(seq) FROM feedback").fetchone()
            return int(row[0] or 0)

    def recent_feedback(self, limit: int | None = None, *, after_seq: int = 0) -> list[StoredFeedback]:
        """Feedback with its decision, oldest first: the ``limit`` most recent with ``seq > after_seq``."""
        sql = "SELECT seq, received_at, decision_id, outcome_json, other_json FROM feedback WHERE seq > ? ORDER BY seq DESC"
        params: tuple[Any, ...] = (after_seq,)
        if limit is not None:
            sql += " LIMIT ?"
            params = (after_seq, int(limit))
        out: list[StoredFeedback] = []
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
            for seq, received_at, decision_id, outcome_json, other_json in reversed(rows):
                batch_id, index = split_decision_id(decision_id)
                out.append(
                    StoredFeedback(
                        seq=seq,
                        received_at=received_at,
                        outcome=ReportedOutcome.model_validate_json(outcome_json),
                        other=None if other_json is None else ReportedOutcome.model_validate_json(other_json),
                        decision=self._decision(batch_id, index),
                    )
                )
        return out

    # -- counts --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Decision and feedback counts (all replicas, all time)."""
        with self._lock:
            d = self._conn.execute(
                "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(n_gpu), 0), COALESCE(SUM(n_explored), 0) FROM decision_batches"
            ).fetchone()
            f = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(device='gpu'), 0), COALESCE(SUM(feasible=0), 0), "
                "COALESCE(SUM(both_measured), 0) FROM feedback"
            ).fetchone()
            events = dict(self._conn.execute("SELECT kind, COUNT(*) FROM policy_events GROUP BY kind").fetchall())
            learner = dict(self._conn.execute("SELECT key, value FROM meta WHERE key LIKE 'learner_updates_%'").fetchall())
        total = int(d[0])
        return {
            "decisions": {"total": total, "gpu": int(d[1]), "cpu": total - int(d[1]), "explored": int(d[2]),
                          "gpu_share": (int(d[1]) / total) if total else None},
            "feedback": {"total": int(f[0]), "gpu": int(f[1]), "cpu": int(f[0]) - int(f[1]), "failures": int(f[2]),
                         "both_measured": int(f[3])},
            "events": {k: int(events.get(k, 0)) for k in ("register", "promote", "reject", "rollback")},
            "learner": {k: int(learner.get(f"learner_updates_{k}", 0)) for k in ("promoted", "rejected", "skipped")},
        }

    # -- policy versions -------------------------------------------------------------------
    def register_version(
        self, version: str, path: Path, *, parent: str | None, status: str, thresholds: Thresholds,
        metrics: dict[str, Any], activate: bool = False,
    ) -> None:
        """Add a version (``status`` serving/retired/rejected); ``activate`` makes it the served one."""
        now = time.time()
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM policy_versions WHERE version=?", (version,)).fetchone() is not None:
                raise ValueError(f"policy version '{version}' already exists")
            conn.execute(
                "INSERT INTO policy_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (version, now, str(path), parent, "retired" if activate else status,
                 json.dumps(thresholds.as_dict()), json.dumps(metrics, default=_json_default)),
            )
            kind = "reject" if status == "rejected" else "register"
            conn.execute("INSERT INTO policy_events (at, kind, version, detail_json) VALUES (?, ?, ?, ?)",
                         (now, kind, version, json.dumps(metrics, default=_json_default)))
            if activate:
                self._activate(conn, version, "promote", {"parent": parent}, now)

    def _activate(self, conn: sqlite3.Connection, version: str, kind: str, detail: dict[str, Any], now: float) -> None:
        conn.execute("UPDATE policy_versions SET status='retired' WHERE status='serving'")
        conn.execute("UPDATE policy_versions SET status='serving' WHERE version=?", (version,))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('active_version', ?)", (version,))
        conn.execute("INSERT INTO policy_events (at, kind, version, detail_json) VALUES (?, ?, ?, ?)",
                     (now, kind, version, json.dumps(detail, default=_json_default)))

    def active_version(self) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key='active_version'").fetchone()
            return None if row is None else str(row[0])

    def get_version(self, version: str) -> StoredVersion:
        with self._lock:
            row = self._conn.execute("SELECT * FROM policy_versions WHERE version=?", (version,)).fetchone()
        if row is None:
            raise KeyError(f"unknown policy version '{version}'")
        return _version(row)

    def versions(self) -> list[StoredVersion]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM policy_versions ORDER BY created_at, version").fetchall()
        return [_version(r) for r in rows]

    def rollback(self, version: str | None = None) -> tuple[str, str]:
        """Serve ``version`` (or the version promoted before the current one). Returns ``(new, old)``."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='active_version'").fetchone()
            if row is None:
                raise KeyError("no active policy version to roll back from")
            current = str(row[0])
            if version is None:
                history = [r[0] for r in conn.execute(
                    "SELECT version FROM policy_events WHERE kind IN ('promote', 'rollback') ORDER BY seq"
                ).fetchall()]
                # walk back past the current version's most recent activation
                candidates = [v for v in reversed(history) if v != current]
                if not candidates:
                    raise KeyError("no earlier served version to roll back to")
                version = candidates[0]
            target = conn.execute("SELECT status FROM policy_versions WHERE version=?", (version,)).fetchone()
            if target is None:
                raise KeyError(f"unknown policy version '{version}'")
            if target[0] == "rejected":
                raise ValueError(f"version '{version}' was rejected by the safety gate and cannot be served")
            if version == current:
                raise ValueError(f"version '{version}' is already serving")
            self._activate(conn, version, "rollback", {"from": current}, now)
        return version, current

    def promote(self, version: str, detail: dict[str, Any]) -> None:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM policy_versions WHERE version=?", (version,)).fetchone() is None:
                raise KeyError(f"unknown policy version '{version}'")
            self._activate(conn, version, "promote", detail, time.time())

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, at, kind, version, detail_json FROM policy_events ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{"seq": r[0], "at": iso(r[1]), "kind": r[2], "version": r[3], "detail": json.loads(r[4])} for r in rows]

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def increment_meta(self, key: str) -> int:
        with self._tx() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            value = (int(row[0]) if row else 0) + 1
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))
        return value

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- per-signature evidence -------------------------------------------------------------
    def record_signatures(self, rows: list[tuple[str, str, str]]) -> None:
        """Remember ``(decision_id, signature, job_json)`` of placed jobs that carried a signature."""
        if not rows:
            return
        with self._tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO decision_signatures VALUES (?, ?, ?)", rows)

    def decision_signature(self, decision_id: str) -> tuple[str, str] | None:
        """``(signature, job_json)`` of a placed job, or None when it carried no signature."""
        with self._lock:
            row = self._conn.execute("SELECT signature, job_json FROM decision_signatures WHERE decision_id=?",
                                     (decision_id,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def add_evidence(self, rows: list[EvidenceRow]) -> None:
        """Store measured outcomes of signatures (probes and feedback)."""
        if not rows:
            return
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO evidence (signature, target_key, at, source, decision_id, job_json, device, feasible, "
                "time_per_sample_s, power_w, power_method) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.signature, r.target_key, r.at, r.source, r.decision_id, r.job_json, r.device, int(r.feasible),
                  r.time_per_sample_s, r.power_w, r.power_method) for r in rows],
            )

    def evidence(self, signatures: list[str], target_key: str, limit: int = 50) -> dict[str, list[EvidenceRow]]:
        """The latest ``limit`` outcomes of each signature on a target, oldest first."""
        out: dict[str, list[EvidenceRow]] = {}
        with self._lock:
            for sig in dict.fromkeys(signatures):
                rows = self._conn.execute(
                    "SELECT signature, target_key, at, source, decision_id, job_json, device, feasible, "
                    "time_per_sample_s, power_w, power_method FROM evidence WHERE signature=? AND target_key=? "
                    "ORDER BY seq DESC LIMIT ?", (sig, target_key, int(limit))).fetchall()
                if rows:
                    out[sig] = [EvidenceRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9], r[10])
                                for r in reversed(rows)]
        return out

    # -- export -------------------------------------------------------------------------
    def feedback_trace_frame(self, limit: int | None = None) -> pd.DataFrame:
        """Feedback as trace rows (one per observed device run; ``job_id`` = decision id)."""
        rows: list[dict[str, Any]] = []
        for fb in self.recent_feedback(limit):
            rows.append(run_row(fb.decision, fb.outcome))
            if fb.other is not None:
                rows.append(run_row(fb.decision, fb.other))
        return pd.DataFrame(rows)

    def export_trace(self, path: Path, *, seed: int | None = None, thresholds: Thresholds | None = None,
                     limit: int | None = None) -> tuple[Path, str]:
        """Write the feedback as a trace (``source='feedback'``). Returns ``(path, sha256)``."""
        frame = self.feedback_trace_frame(limit)
        if frame.empty:
            raise ValueError("no feedback recorded yet: nothing to export")
        targets = sorted(set(frame["target_id"].astype(str)))
        meta = TraceMeta(
            source="feedback",
            description=f"Placement service feedback from {self.path} ({len(frame)} device runs).",
            seed=seed,
            code_version=code_version(),
            hardware="targets: " + ", ".join(targets),
            method="outcomes reported by clients through POST /v1/feedback; power methods per row as reported "
            "(GPU runs reported as total energy_j carry eq. 2's total in avg_cpu_power_w and 0 in avg_gpu_power_w)",
            extra={"thresholds": (thresholds or Thresholds()).as_dict(), "database": str(self.path)},
        )
        out = write_trace(frame, Path(path), meta)
        return out, file_sha256(out)


def job_row(decision: StoredDecision) -> dict[str, Any]:
    """The job and ``hw_*`` trace columns of a decision (``job_id`` = decision id)."""
    job = decision.job
    return {
        "source": "feedback", "job_id": decision.decision_id, "model": job.name, "family": job.family,
        "mode": job.mode, "batch_size": job.batch_size, "flops_per_batch": job.flops_per_batch,
        "param_count": job.param_count, "input_elems_per_sample": job.input_elems_per_sample,
        "input_bytes_per_sample": job.input_bytes_per_sample, "dataset_size": job.dataset_size,
        **target_columns(decision.target),
    }


def run_row(decision: StoredDecision, run: ReportedOutcome) -> dict[str, Any]:
    """One trace row for a reported run of a decided job (knobs: as reported, else the
    decision's for the chosen device, else the target's defaults)."""
    o = run.device_outcome()
    chosen = run.device == decision.device
    cap = run.gpu_mem_cap_mib or (decision.gpu_mem_cap_mib if chosen and run.device == "gpu" else None)
    return {
        **job_row(decision),
        "device": run.device,
        "cpu_cores": run.cpu_cores or (decision.cpu_cores if chosen else decision.target.cpu_cores),
        "gpu_mem_cap_mib": cap,
        "feasible": o.feasible, "infeasible_reason": o.infeasible_reason, "n_samples": o.n_samples,
        "time_total_s": o.time_total_s, "avg_cpu_power_w": o.avg_cpu_power_w, "avg_gpu_power_w": o.avg_gpu_power_w,
        "cpu_power_method": o.cpu_power_method, "gpu_power_method": o.gpu_power_method,
    }


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _version(row: tuple) -> StoredVersion:
    return StoredVersion(
        version=row[0], created_at=row[1], path=Path(row[2]), parent=row[3], status=row[4],
        thresholds=json.loads(row[5]), metrics=json.loads(row[6]),
    )
