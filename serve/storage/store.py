"""Durable store of every decision, every feedback and every policy version (SQLAlchemy 2 Core).

Two engines, one schema (:data:`METADATA`, migrated by Alembic from ``serve/storage/migrations``):

* **embedded SQLite** (default): one file (``Settings.database``, default
  ``~/.local/share/placement/placement.db``) in WAL mode, ``synchronous=NORMAL`` (survives
  process crashes) or ``FULL`` (also power loss; ``PLACEMENT_DB_SYNCHRONOUS``). Several
  processes of one machine (placer replicas, the learner) share the file; writers take the
  write lock at ``BEGIN IMMEDIATE`` and wait up to ``busy_timeout_ms``.
* **PostgreSQL** for clusters (``PLACEMENT_DB_URL=postgresql+psycopg://user@host/db``): every
  node's replicas share one server. Commits are durable as the server's ``synchronous_commit``
  says (on by default). Version changes (register/promote/rollback) serialise on a
  transaction-scoped advisory lock; idempotent feedback is one ``INSERT .. ON CONFLICT DO
  NOTHING`` on the unique ``decision_id``, so concurrent replicas never store two answers.

Tables:

* ``decision_batches`` -- one row per answered request (its jobs' features, the target by
  content key into ``targets``, the answers, the policy's GPU probability, the performance
  model's predictions, exploration and propensity, the thresholds in force and the policy
  version), the columns packed by :func:`encode_columns`;
* ``feedback`` -- at most one row per decision (idempotency: a replay with the same payload
  returns the stored answer, a different payload raises :class:`FeedbackConflict`);
* ``policy_versions`` / ``policy_events`` / ``meta`` -- the version registry (serving,
  retired, rejected), every promotion, rejection and rollback, and the active version.

A decision or feedback is committed before the service answers, so an acknowledged write
survives a restart (and, on PostgreSQL, the loss of the node that wrote it).

The schema is created and upgraded on open (``alembic upgrade head`` under a lock: a file
lock's worth of ``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL), so an
installed service migrates its own database; :func:`migrate` does it explicitly. A database
written before the migrations existed (schema 1, no ``alembic_version``) is adopted as it is.

:meth:`Store.export_trace` writes the feedback as a placement trace
(:func:`placement.core.trace.write_trace`, ``source='feedback'``) for offline training: one row
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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from placement.core.decision import GROW, GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.threshold import Thresholds
from placement.core.trace import (
    JOB_COLUMN_NAMES,
    TraceMeta,
    cap_to_column,
    file_sha256,
    job_columns,
    row_job,
    target_columns,
    write_trace,
)
from placement.core.version import code_version
from placement.serve.schemas import ReportedOutcome

SCHEMA_HEAD = "0003"
"""The newest Alembic revision under ``serve/storage/migrations/versions`` (tests check they agree)."""
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_VERSION_LOCK_KEY = 0x706C6163  # pg_advisory_xact_lock key of version changes ("plac")
_MIGRATE_LOCK_KEY = 0x706C6D67  # pg_advisory_xact_lock key of schema migrations

# --------------------------------------------------------------------------------------
# the schema (the migrations create exactly these tables; queries are built from them)
# --------------------------------------------------------------------------------------
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite AUTOINCREMENT needs INTEGER
METADATA = sa.MetaData()
meta_t = sa.Table("meta", METADATA, sa.Column("key", sa.Text, primary_key=True),
                  sa.Column("value", sa.Text, nullable=False))
targets_t = sa.Table(
    "targets", METADATA,
    sa.Column("target_key", sa.Text, primary_key=True),
    sa.Column("target_id", sa.Text, nullable=False),
    sa.Column("target_json", sa.Text, nullable=False),
)
batches_t = sa.Table(
    "decision_batches", METADATA,
    sa.Column("batch_id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("n_gpu", sa.Integer, nullable=False),
    sa.Column("n_explored", sa.Integer, nullable=False),
    sa.Column("target_key", sa.Text, sa.ForeignKey("targets.target_key"), nullable=False),
    sa.Column("speedup_min", sa.Float, nullable=False),
    sa.Column("energy_ratio_max", sa.Float, nullable=False),
    sa.Column("missing_power", sa.Text, nullable=False),
    sa.Column("max_slowdown", sa.Float),
    sa.Column("policy_version", sa.Text, nullable=False),
    sa.Column("columns", sa.LargeBinary, nullable=False),
    sqlite_with_rowid=False,
)
feedback_t = sa.Table(
    "feedback", METADATA,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("decision_id", sa.Text, nullable=False, unique=True),
    sa.Column("batch_id", sa.Text, sa.ForeignKey("decision_batches.batch_id"), nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("payload_sha256", sa.Text, nullable=False),
    sa.Column("response_json", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("feasible", sa.Integer, nullable=False),
    sa.Column("both_measured", sa.Integer, nullable=False),
    sa.Column("outcome_json", sa.Text, nullable=False),
    sa.Column("other_json", sa.Text),
    sa.Column("client", sa.Text),
    sqlite_autoincrement=True,
)
versions_t = sa.Table(
    "policy_versions", METADATA,
    sa.Column("version", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("parent", sa.Text),
    sa.Column("status", sa.Text, sa.CheckConstraint("status IN ('serving', 'retired', 'rejected')"), nullable=False),
    sa.Column("thresholds_json", sa.Text, nullable=False),
    sa.Column("metrics_json", sa.Text, nullable=False),
)
events_t = sa.Table(
    "policy_events", METADATA,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.Text, sa.CheckConstraint("kind IN ('register', 'promote', 'reject', 'rollback')"),
              nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("detail_json", sa.Text, nullable=False),
    sqlite_autoincrement=True,
)
signatures_t = sa.Table(
    "decision_signatures", METADATA,
    sa.Column("decision_id", sa.Text, primary_key=True),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("job_json", sa.Text, nullable=False),
    sqlite_with_rowid=False,
)
evidence_t = sa.Table(
    "evidence", METADATA,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("target_key", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("source", sa.Text, sa.CheckConstraint("source IN ('probe', 'feedback')"), nullable=False),
    sa.Column("decision_id", sa.Text),
    sa.Column("job_json", sa.Text, nullable=False),
    sa.Column("device", sa.Text, sa.CheckConstraint("device IN ('cpu', 'gpu')"), nullable=False),
    sa.Column("feasible", sa.Integer, nullable=False),
    sa.Column("time_per_sample_s", sa.Float),
    sa.Column("power_w", sa.Float),
    sa.Column("power_method", sa.Text, nullable=False),
    sa.Index("evidence_by_signature", "signature", "target_key", "seq"),
    sqlite_autoincrement=True,
)
_EVIDENCE_COLS = (evidence_t.c.signature, evidence_t.c.target_key, evidence_t.c.at, evidence_t.c.source,
                  evidence_t.c.decision_id, evidence_t.c.job_json, evidence_t.c.device, evidence_t.c.feasible,
                  evidence_t.c.time_per_sample_s, evidence_t.c.power_w, evidence_t.c.power_method)
# statements on the request path, built once (building one costs more than running it on SQLite)
_Q_EVIDENCE = (sa.select(*_EVIDENCE_COLS, feedback_t.c.client)  # each run with the client that reported it
               .select_from(evidence_t.outerjoin(feedback_t, sa.and_(evidence_t.c.source == "feedback",
                                                                     feedback_t.c.decision_id == evidence_t.c.decision_id)))
               .where(evidence_t.c.signature == sa.bindparam("sig"), evidence_t.c.target_key == sa.bindparam("tk"))
               .order_by(evidence_t.c.seq.desc()).limit(sa.bindparam("lim", type_=sa.Integer)))
_Q_META = sa.select(meta_t.c.value).where(meta_t.c.key == sa.bindparam("key"))
_Q_TARGET = sa.select(targets_t.c.target_json).where(targets_t.c.target_key == sa.bindparam("key"))
_Q_BATCH = sa.select(
    batches_t.c.created_at, batches_t.c.target_key, batches_t.c.speedup_min, batches_t.c.energy_ratio_max,
    batches_t.c.missing_power, batches_t.c.max_slowdown, batches_t.c.policy_version, batches_t.c.columns,
).where(batches_t.c.batch_id == sa.bindparam("batch_id"))
_INS_BATCH = batches_t.insert()
_BATCH_COLS = tuple(batches_t.c.keys())
_INS_BATCH_QMARK = f"INSERT INTO decision_batches ({', '.join(_BATCH_COLS)}) VALUES ({', '.join('?' * len(_BATCH_COLS))})"
_Q_FEEDBACK = sa.select(feedback_t.c.payload_sha256, feedback_t.c.response_json).where(
    feedback_t.c.decision_id == sa.bindparam("decision_id"))
_VERSION_COLS = (versions_t.c.version, versions_t.c.created_at, versions_t.c.path, versions_t.c.parent,
                 versions_t.c.status, versions_t.c.thresholds_json, versions_t.c.metrics_json)

NUMERIC_COLUMNS: dict[str, str] = {
    "batch_size": "<i8", "flops_per_batch": "<f8", "param_count": "<i8", "input_elems_per_sample": "<i8",
    "input_bytes_per_sample": "<i8", "dataset_size": "<i8", "gpu": "|b1", "cpu_cores": "<i8", "gpu_mem_cap_mib": "<i8",
    "gpu_probability": "<f8", "predicted_speedup": "<f8", "predicted_energy_ratio": "<f8", "explored": "|b1",
    "propensity": "<f8",
}
"""Numeric columns of a stored decision batch (``dataset_size`` and ``gpu_mem_cap_mib`` use
:data:`STORED_NONE` for none/grow; predictions NaN where there are none)."""
TEXT_COLUMNS = ("name", "family", "mode", "decided_by")
BATCH_COLUMNS = tuple(NUMERIC_COLUMNS) + TEXT_COLUMNS
STORED_NONE = -1
"""How a stored batch's integer columns spell "none": no GPU memory cap (GROW) in ``gpu_mem_cap_mib``,
an unknown ``dataset_size``. Caps convert only by :func:`caps_to_stored` and :func:`cap_from_stored`."""


def caps_to_stored(caps: Iterable[GpuMemCap]) -> npt.NDArray[np.int64]:
    """The stored ``gpu_mem_cap_mib`` column of GPU memory caps: MiB, :data:`STORED_NONE` for GROW."""
    caps = caps if isinstance(caps, list) else list(caps)
    if caps.count(GROW) == len(caps):  # off the edge every cap is GROW: no test per value
        return np.full(len(caps), STORED_NONE, dtype=np.int64)
    return np.fromiter((STORED_NONE if c == GROW else int(c) for c in caps), dtype=np.int64, count=len(caps))


def cap_from_stored(value: int) -> GpuMemCap:
    """The GPU memory cap a stored ``gpu_mem_cap_mib`` value holds (negative: GROW)."""
    return GROW if value < 0 else int(value)


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
    """``(batch id, index)`` of a decision id ``f"{batch_id}-{index}"``; :class:`UnknownDecision`
    when malformed."""
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
    """A Unix time (s) as UTC ISO-8601 with milliseconds."""
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
        """The id of decision ``index`` of this batch: ``<batch id>-<index>``."""
        return f"{self.batch_id}-{index}"


@dataclass(frozen=True)
class StoredDecision:
    """One stored placement decision: the job and target, the answer (device, cores, GPU memory
    cap), the policy's P(GPU) and predicted speedup and energy ratio, whether it explored and with
    what propensity, what decided it, the thresholds and slowdown bound it used, and the policy version."""

    decision_id: str
    created_at: float
    job: Job
    target: HardwareTarget
    device: str
    cpu_cores: int
    gpu_mem_cap: GpuMemCap
    gpu_probability: float
    predicted_speedup: float | None
    predicted_energy_ratio: float | None
    explored: bool
    propensity: float
    decided_by: str
    thresholds: Thresholds
    max_slowdown: float | None
    policy_version: str

    @property
    def gpu_mem_cap_mib(self) -> int | None:
        """The cap in MiB, or ``None`` for GROW (as :attr:`PlacementDecision.gpu_mem_cap_mib`)."""
        return cap_to_column(self.gpu_mem_cap)


@dataclass(frozen=True)
class StoredFeedback:
    """One stored feedback: its sequence number and arrival time (Unix s), the decision, the
    reported run and the other device's run if the client sent one."""

    seq: int
    received_at: float
    decision: StoredDecision
    outcome: ReportedOutcome
    other: ReportedOutcome | None
    client: str | None = None
    """The client the feedback is attributed to (its token's name, ``service`` for the service
    token); None when the service ran without tokens or before attribution existed."""


@dataclass(frozen=True)
class StoredVersion:
    """One stored policy version: its id, creation time (Unix s), model folder, parent, status,
    thresholds and metrics."""

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
    client: str | None = None
    """Who reported it (the feedback's client, read from the feedback row; None for probes and
    unattributed feedback)."""


def target_key(target: HardwareTarget) -> str:
    """Content key of a hardware description (two targets with the same figures share it)."""
    return hashlib.sha256(target.model_dump_json().encode()).hexdigest()[:24]




class StorageUnavailable(StoreError):
    """The database refused or could not take a read or write now (disk full, read-only file,
    server down, lock wait timed out). Nothing of the failed call was stored; ``str()`` is the
    driver's own message (e.g. ``database or disk is full``)."""


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is an SQLAlchemy URL (``postgresql+psycopg://...``) rather than a file."""
    return isinstance(location, str) and "://" in location


def _sqlite_engine(path: Path, synchronous: str, busy_timeout_ms: int) -> Engine:
    engine = sa.create_engine(
        sa.URL.create("sqlite+pysqlite", database=str(path)),
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=4,
    )

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: could not switch SQLite to WAL mode (got {mode}); use a local disk")
            cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # a writer takes the write lock at BEGIN (waiting up to busy_timeout), so it never
        # fails half-way on a lock upgrade; the Store's reads run in autocommit (no BEGIN)
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        write = conn.info.get("placement_write") or options.get("placement_write")
        driver = conn.connection.driver_connection
        if driver is None:  # a closed DBAPI connection: SQLAlchemy raises on first use anyway
            return
        driver.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _redacted(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


class Store:
    """Decisions, feedback and policy versions, shared by placer replicas and the learner.

    ``location``: an SQLite file path (``Path`` or a string without ``://``) or an SQLAlchemy
    URL (``postgresql+psycopg://user:pass@host:5432/db``). ``synchronous`` (``normal``/``full``)
    is SQLite's WAL durability level; on PostgreSQL the server's ``synchronous_commit``
    governs. Thread-safe within a process (one operation at a time per Store)."""

    def __init__(self, location: Path | str, *, synchronous: str = "normal", busy_timeout_ms: int = 30_000) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self._lock = threading.RLock()
        self.path: Path | str
        if is_url(location):
            try:
                url = sa.make_url(str(location))
            except sa_exc.ArgumentError as exc:
                raise StoreError(f"PLACEMENT_DB_URL: not a database URL ({exc}); e.g. "
                                 "postgresql+psycopg://placement@db-host:5432/placement") from exc
            if url.get_backend_name() == "sqlite":
                location = Path(url.database or "")
            else:
                if url.get_backend_name() != "postgresql":
                    raise StoreError(f"PLACEMENT_DB_URL: {_redacted(url)}: only sqlite and postgresql are supported")
                self.path = _redacted(url)
                self.dialect = "postgresql"
                self._engine = sa.create_engine(url, pool_size=2, max_overflow=8, pool_pre_ping=True,
                                                connect_args={"connect_timeout": 10})
        if not is_url(location):
            self.path = Path(location)
            self.dialect = "sqlite"
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
            self._engine = _sqlite_engine(self.path, synchronous, busy_timeout_ms)
        try:
            migrate(self._engine)
        except sa_exc.DBAPIError as exc:
            self._engine.dispose()
            if self.dialect == "sqlite":
                raise StoreError(f"{self.path}: not a usable SQLite database ({exc.orig}); set PLACEMENT_DB_PATH to "
                                 "a new file") from exc
            raise StoreError(f"{self.path}: cannot use the database ({exc.orig}); check PLACEMENT_DB_URL, that the "
                             "server runs and that the user may create tables") from exc
        except StoreError:
            self._engine.dispose()
            raise
        self._conns: dict[str, Connection] = {}
        self._advisory_lock = sa.select(sa.func.pg_advisory_xact_lock(_VERSION_LOCK_KEY))
        self._ins_target = self._insert(targets_t).on_conflict_do_nothing(index_elements=["target_key"])
        self._ins_feedback = self._insert(feedback_t).on_conflict_do_nothing(
            index_elements=["decision_id"]).returning(feedback_t.c.seq)
        self._known_targets: set[str] = set()
        self._target_cache: dict[str, HardwareTarget] = {}
        self._batch_cache: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.last_export_quarantined: dict[str, int] = {}
        """Stored feedback rows the last :meth:`export_trace` left out, counted by reason."""

    # -- plumbing ---------------------------------------------------------------------
    def _connection(self, kind: str = "write") -> Connection:
        """This Store's connection for writes (transactions) or reads (autocommit: each read is
        one statement, no BEGIN/ROLLBACK round trips); operations are serialised by the lock.
        A new one after the old was invalidated (e.g. the PostgreSQL server restarted)."""
        conn = self._conns.get(kind)
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._engine.connect()
            if kind == "read":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conns[kind] = conn
        return conn

    @contextmanager
    def _tx(self, *, versions: bool = False) -> Iterator[Connection]:
        """A write transaction, committed on exit. ``versions``: serialise with every other
        version change (PostgreSQL advisory lock; SQLite's write lock already does)."""
        with self._lock:
            try:
                conn = self._connection()
                if conn.in_transaction():  # a read left open by an error
                    conn.rollback()
                conn.info["placement_write"] = True  # SQLite: BEGIN IMMEDIATE
                try:
                    tx = conn.begin()
                finally:
                    conn.info["placement_write"] = False
                with tx:
                    if versions and self.dialect == "postgresql":
                        conn.execute(self._advisory_lock)
                    yield conn
            except sa_exc.OperationalError as exc:
                # also when COMMIT itself fails (disk full, read-only): the transaction is rolled
                # back and the connection stays usable once space is freed
                raise StorageUnavailable(str(exc.orig)) from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """Reads in one short transaction (a snapshot; never left open, so SQLite's WAL can checkpoint)."""
        with self._lock:
            try:
                conn = self._connection("read")
                try:
                    yield conn
                finally:
                    if conn.in_transaction():
                        conn.rollback()
            except sa_exc.OperationalError as exc:
                raise StorageUnavailable(str(exc.orig)) from exc

    def close(self) -> None:
        """Close every pooled connection and dispose of the engine."""
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decisions ---------------------------------------------------------------------
    def insert_decisions(self, *batches: DecisionBatch) -> None:
        """Commit batches of decisions (one row each, whatever its size) in one transaction: before
        the answer goes out, or behind it (:class:`placement.serve.storage.writer.DecisionWriter`)."""
        rows, new_targets = [], {}
        for batch in batches:
            key = target_key(batch.target)
            cols = batch.columns
            th = batch.thresholds
            rows.append({
                "batch_id": batch.batch_id, "created_at": batch.created_at, "n": len(cols["gpu"]),
                "n_gpu": int(np.count_nonzero(cols["gpu"])), "n_explored": int(np.count_nonzero(cols["explored"])),
                "target_key": key, **th.as_dict(), "max_slowdown": batch.max_slowdown,
                "policy_version": batch.policy_version, "columns": encode_columns(cols),
            })
            if key not in self._known_targets:
                new_targets[key] = batch.target
        if not rows:
            return
        with self._tx() as conn:
            for key, target in new_targets.items():
                conn.execute(self._ins_target, {"target_key": key, "target_id": target.id,
                                                "target_json": target.model_dump_json()})
            if self.dialect == "sqlite":
                # the driver's own execute in the same transaction: SQLAlchemy's statement
                # machinery cost more than the insert itself for a one-job request
                try:
                    driver: Any = conn.connection.driver_connection
                    driver.executemany(_INS_BATCH_QMARK, [[row[c] for c in _BATCH_COLS] for row in rows])
                except sqlite3.OperationalError as exc:
                    raise StorageUnavailable(str(exc)) from exc
            else:
                conn.execute(_INS_BATCH, rows)
        self._known_targets.update(new_targets)

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT (with ``on_conflict_do_nothing`` / ``on_conflict_do_update``)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def _target(self, conn: Connection, key: str) -> HardwareTarget:
        target = self._target_cache.get(key)
        if target is None:
            raw = conn.execute(_Q_TARGET, {"key": key}).scalar_one()
            target = HardwareTarget.model_validate_json(raw)
            self._target_cache[key] = target
        return target

    def _batch(self, conn: Connection, batch_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(batch row, decoded columns)`` or None; recently read batches are cached."""
        hit = self._batch_cache.get(batch_id)
        if hit is not None:
            return hit
        row = conn.execute(_Q_BATCH, {"batch_id": batch_id}).first()
        if row is None:
            return None
        meta = dict(zip(("created_at", "target_key", "speedup_min", "energy_ratio_max", "missing_power", "max_slowdown",
                         "policy_version"), row[:7], strict=True))
        meta["target"] = self._target(conn, meta["target_key"])
        entry = (meta, decode_columns(bytes(row[7])))
        self._batch_cache[batch_id] = entry
        if len(self._batch_cache) > 64:
            self._batch_cache.pop(next(iter(self._batch_cache)))
        return entry

    def _decision(self, conn: Connection, batch_id: str, index: int) -> StoredDecision:
        entry = self._batch(conn, batch_id)
        decision_id = f"{batch_id}-{index}"
        if entry is None:
            raise UnknownDecision(decision_id)
        meta, cols = entry
        if not 0 <= index < len(cols["gpu"]):
            raise UnknownDecision(decision_id)
        i = index
        row = {name: cols["name" if name == "model" else name][i] for name in JOB_COLUMN_NAMES}
        if row["dataset_size"] < 0:  # STORED_NONE: unknown
            row["dataset_size"] = None
        job = row_job(row, validate=False)
        sp = float(cols["predicted_speedup"][i])
        er = float(cols["predicted_energy_ratio"][i])
        return StoredDecision(
            decision_id=decision_id, created_at=meta["created_at"], job=job, target=meta["target"],
            device="gpu" if cols["gpu"][i] else "cpu", cpu_cores=int(cols["cpu_cores"][i]),
            gpu_mem_cap=cap_from_stored(int(cols["gpu_mem_cap_mib"][i])), gpu_probability=float(cols["gpu_probability"][i]),
            predicted_speedup=sp if np.isfinite(sp) else None, predicted_energy_ratio=er if np.isfinite(er) else None,
            explored=bool(cols["explored"][i]), propensity=float(cols["propensity"][i]), decided_by=cols["decided_by"][i],
            thresholds=Thresholds(meta["speedup_min"], meta["energy_ratio_max"], meta["missing_power"]),
            max_slowdown=meta["max_slowdown"], policy_version=meta["policy_version"],
        )

    def get_decision(self, decision_id: str) -> StoredDecision:
        """The stored decision ``decision_id``; :class:`UnknownDecision` when there is none."""
        batch_id, index = split_decision_id(decision_id)
        with self._read() as conn:
            return self._decision(conn, batch_id, index)

    # -- feedback ----------------------------------------------------------------------
    def record_feedback(
        self,
        decision_id: str,
        payload_sha256: str,
        response_json: str,
        outcome: ReportedOutcome,
        other: ReportedOutcome | None,
        client: str | None = None,
    ) -> tuple[str, bool]:
        """Store feedback once. Returns ``(response_json, replayed)``: the stored answer and
        whether this was a replay of the same payload; ``client``: who reported it. Raises :class:`UnknownDecision` or
        :class:`FeedbackConflict` (same decision, different payload). Atomic across replicas:
        one ``INSERT .. ON CONFLICT (decision_id) DO NOTHING``; the loser reads the winner's row."""
        batch_id, index = split_decision_id(decision_id)
        row_in = {
            "decision_id": decision_id, "batch_id": batch_id, "received_at": time.time(),
            "payload_sha256": payload_sha256, "response_json": response_json, "device": str(outcome.device),
            "feasible": int(outcome.feasible), "both_measured": int(other is not None),
            "outcome_json": outcome.model_dump_json(), "other_json": None if other is None else other.model_dump_json(),
            "client": client,
        }
        with self._tx() as conn:
            self._decision(conn, batch_id, index)  # raises UnknownDecision
            if conn.execute(self._ins_feedback, row_in).first() is not None:
                return response_json, False
            row = conn.execute(_Q_FEEDBACK, {"decision_id": decision_id}).one()
        if row[0] == payload_sha256:
            return str(row[1]), True
        raise FeedbackConflict(
            f"decision {decision_id} already has different feedback (recorded first, kept): "
            "feedback is accepted once per decision"
        )

    def feedback_count(self) -> int:
        """Number of stored feedback rows."""
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(feedback_t)).scalar_one())

    def last_feedback_seq(self) -> int:
        """The newest feedback's sequence number (0 when there is none)."""
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.max(feedback_t.c.seq))).scalar_one() or 0)

    def recent_feedback(self, limit: int | None = None, *, after_seq: int = 0,
                        skipped: list[tuple[int, str, str]] | None = None) -> list[StoredFeedback]:
        """Feedback with its decision, oldest first: the ``limit`` most recent with ``seq > after_seq``.

        With ``skipped`` (a list), a row that no longer parses is appended to it as
        ``(seq, decision_id, error)`` instead of raising (:mod:`placement.serve.learning.quarantine`)."""
        f = feedback_t.c
        query = (sa.select(f.seq, f.received_at, f.decision_id, f.outcome_json, f.other_json, f.client)
                 .where(f.seq > after_seq).order_by(f.seq.desc()))
        if limit is not None:
            query = query.limit(int(limit))
        out: list[StoredFeedback] = []
        with self._read() as conn:
            rows = conn.execute(query).all()
            for seq, received_at, decision_id, outcome_json, other_json, client in reversed(rows):
                try:
                    batch_id, index = split_decision_id(decision_id)
                    out.append(
                        StoredFeedback(
                            seq=int(seq),
                            received_at=received_at,
                            outcome=ReportedOutcome.model_validate_json(outcome_json),
                            other=None if other_json is None else ReportedOutcome.model_validate_json(other_json),
                            decision=self._decision(conn, batch_id, index),
                            client=None if client is None else str(client),
                        )
                    )
                except (ValueError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
                    if skipped is None:
                        raise
                    skipped.append((int(seq), str(decision_id), f"{type(exc).__name__}: {exc}"))
        return out

    # -- retention -----------------------------------------------------------------------
    def prune_decisions(self, max_age_s: float, max_rows: int, *, now: float | None = None) -> int:
        """Delete stored decisions that got no feedback: those older than ``max_age_s``, then the
        oldest beyond ``max_rows`` such decisions. A batch with any feedback is kept whole.
        Returns the decisions deleted (also added to the ``retention_deleted_decisions`` meta count)."""
        cutoff = (time.time() if now is None else now) - max_age_s
        b, f = batches_t.c, feedback_t.c
        no_feedback = ~sa.exists(sa.select(f.seq).where(f.batch_id == b.batch_id))
        with self._tx() as conn:
            old = conn.execute(sa.select(b.batch_id, b.n).where(b.created_at < cutoff, no_feedback)).all()
            rest = conn.execute(sa.select(b.batch_id, b.n).where(b.created_at >= cutoff, no_feedback)
                                .order_by(b.created_at.desc())).all()
            kept, over = 0, []
            for batch_id, n in rest:
                kept += int(n)
                if kept > max_rows:
                    over.append((batch_id, int(n)))
            doomed = [str(r[0]) for r in old] + [bid for bid, _ in over]
            deleted = sum(int(r[1]) for r in old) + sum(n for _, n in over)
            for i in range(0, len(doomed), 500):
                conn.execute(sa.delete(batches_t).where(b.batch_id.in_(doomed[i:i + 500])))
        if deleted:
            self.set_meta("retention_deleted_decisions",
                          str(int(self.get_meta("retention_deleted_decisions") or 0) + deleted))
        for batch_id in doomed:
            self._batch_cache.pop(batch_id, None)
        return deleted

    # -- counts --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Decision and feedback counts (all replicas, all time)."""
        b, f, e, m = batches_t.c, feedback_t.c, events_t.c, meta_t.c

        def total(expr: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(expr), 0)

        with self._read() as conn:
            d = conn.execute(sa.select(total(b.n), total(b.n_gpu), total(b.n_explored))).one()
            fb = conn.execute(sa.select(
                sa.func.count(), total(sa.case((f.device == "gpu", 1), else_=0)),
                total(sa.case((f.feasible == 0, 1), else_=0)), total(f.both_measured),
            ).select_from(feedback_t)).one()
            events: dict[str, int] = dict(conn.execute(sa.select(e.kind, sa.func.count()).group_by(e.kind)).all())
            learner = dict(conn.execute(sa.select(m.key, m.value).where(m.key.like("learner_updates_%"))).all())
        n, n_gpu = int(d[0]), int(d[1])
        return {
            "decisions": {"total": n, "gpu": n_gpu, "cpu": n - n_gpu, "explored": int(d[2]),
                          "gpu_share": (n_gpu / n) if n else None},
            "feedback": {"total": int(fb[0]), "gpu": int(fb[1]), "cpu": int(fb[0]) - int(fb[1]), "failures": int(fb[2]),
                         "both_measured": int(fb[3])},
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
        try:
            with self._tx(versions=True) as conn:
                if conn.execute(sa.select(versions_t.c.version).where(versions_t.c.version == version)).first():
                    raise ValueError(f"policy version '{version}' already exists")
                conn.execute(versions_t.insert().values(
                    version=version, created_at=now, path=str(path), parent=parent,
                    status="retired" if activate else status, thresholds_json=json.dumps(thresholds.as_dict()),
                    metrics_json=json.dumps(metrics, default=_json_default)))
                kind = "reject" if status == "rejected" else "register"
                conn.execute(events_t.insert().values(at=now, kind=kind, version=version,
                                                      detail_json=json.dumps(metrics, default=_json_default)))
                if activate:
                    self._activate(conn, version, "promote", {"parent": parent}, now)
        except sa_exc.IntegrityError as exc:  # a concurrent registration of the same version won
            raise ValueError(f"policy version '{version}' already exists") from exc

    def _set_meta(self, conn: Connection, key: str, value: str) -> None:
        stmt = self._insert(meta_t).values(key=key, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value}))

    def _activate(self, conn: Connection, version: str, kind: str, detail: dict[str, Any], now: float) -> None:
        v = versions_t.c
        conn.execute(versions_t.update().where(v.status == "serving").values(status="retired"))
        conn.execute(versions_t.update().where(v.version == version).values(status="serving"))
        self._set_meta(conn, "active_version", version)
        conn.execute(events_t.insert().values(at=now, kind=kind, version=version,
                                              detail_json=json.dumps(detail, default=_json_default)))

    def active_version(self) -> str | None:
        """The version serving now (``None`` before any is registered)."""
        return self.get_meta("active_version")

    def get_version(self, version: str) -> StoredVersion:
        """The stored version ``version``; ``KeyError`` when unknown."""
        with self._read() as conn:
            row = conn.execute(sa.select(*_VERSION_COLS).where(versions_t.c.version == version)).first()
        if row is None:
            raise KeyError(f"unknown policy version '{version}'")
        return _version(tuple(row))

    def versions(self) -> list[StoredVersion]:
        """Every stored version, oldest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(*_VERSION_COLS).order_by(versions_t.c.created_at, versions_t.c.version)).all()
        return [_version(tuple(r)) for r in rows]

    def rollback(self, version: str | None = None) -> tuple[str, str]:
        """Serve ``version`` (or the version promoted before the current one). Returns ``(new, old)``."""
        now = time.time()
        e, v, m = events_t.c, versions_t.c, meta_t.c
        with self._tx(versions=True) as conn:
            current = conn.execute(sa.select(m.value).where(m.key == "active_version")).scalar_one_or_none()
            if current is None:
                raise KeyError("no active policy version to roll back from")
            if version is None:
                history = conn.execute(
                    sa.select(e.version).where(e.kind.in_(("promote", "rollback"))).order_by(e.seq)).scalars().all()
                # walk back past the current version's most recent activation
                candidates = [h for h in reversed(history) if h != current]
                if not candidates:
                    raise KeyError("no earlier served version to roll back to")
                version = candidates[0]
            status = conn.execute(sa.select(v.status).where(v.version == version)).scalar_one_or_none()
            if status is None:
                raise KeyError(f"unknown policy version '{version}'")
            if status == "rejected":
                raise ValueError(f"version '{version}' was rejected by the safety gate and cannot be served")
            if version == current:
                raise ValueError(f"version '{version}' is already serving")
            self._activate(conn, version, "rollback", {"from": current}, now)
        return version, str(current)

    def promote(self, version: str, detail: dict[str, Any]) -> None:
        """Make ``version`` the serving one and log a ``promote`` event with ``detail``;
        ``KeyError`` when unknown."""
        with self._tx(versions=True) as conn:
            if conn.execute(sa.select(versions_t.c.version).where(versions_t.c.version == version)).first() is None:
                raise KeyError(f"unknown policy version '{version}'")
            self._activate(conn, version, "promote", detail, time.time())

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` policy events (promotions, rollbacks, ...), newest first."""
        e = events_t.c
        with self._read() as conn:
            rows = conn.execute(sa.select(e.seq, e.at, e.kind, e.version, e.detail_json)
                                .order_by(e.seq.desc()).limit(limit)).all()
        return [{"seq": int(r[0]), "at": iso(r[1]), "kind": r[2], "version": r[3], "detail": json.loads(r[4])}
                for r in rows]

    def get_meta(self, key: str) -> str | None:
        """The meta value under ``key``, or ``None``."""
        with self._read() as conn:
            value = conn.execute(_Q_META, {"key": key}).scalar_one_or_none()
        return None if value is None else str(value)

    def increment_meta(self, key: str) -> int:
        """Add one to an integer ``meta`` value (0 when absent); atomic across replicas."""
        stmt = self._insert(meta_t).values(key=key, value="1")
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={"value": sa.cast(sa.cast(meta_t.c.value, sa.Integer) + 1, sa.Text)})
        with self._tx() as conn:
            conn.execute(stmt)
            value = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == key)).scalar_one()
        return int(value)

    def set_meta(self, key: str, value: str) -> None:
        """Store ``value`` under meta ``key`` (replacing any)."""
        with self._tx() as conn:
            self._set_meta(conn, key, value)

    # -- per-signature evidence -------------------------------------------------------------
    def record_signatures(self, rows: list[tuple[str, str, str]]) -> None:
        """Remember ``(decision_id, signature, job_json)`` of placed jobs that carried a signature."""
        if not rows:
            return
        stmt = self._insert(signatures_t).on_conflict_do_nothing(index_elements=["decision_id"])
        with self._tx() as conn:
            conn.execute(stmt, [{"decision_id": d, "signature": sig, "job_json": j} for d, sig, j in rows])

    def decision_signature(self, decision_id: str) -> tuple[str, str] | None:
        """``(signature, job_json)`` of a placed job, or None when it carried no signature."""
        s = signatures_t.c
        with self._read() as conn:
            row = conn.execute(sa.select(s.signature, s.job_json).where(s.decision_id == decision_id)).first()
        return None if row is None else (str(row[0]), str(row[1]))

    def add_evidence(self, rows: list[EvidenceRow]) -> None:
        """Store measured outcomes of signatures (probes and feedback)."""
        if not rows:
            return
        with self._tx() as conn:
            conn.execute(evidence_t.insert(), [
                {"signature": r.signature, "target_key": r.target_key, "at": r.at, "source": r.source,
                 "decision_id": r.decision_id, "job_json": r.job_json, "device": r.device, "feasible": int(r.feasible),
                 "time_per_sample_s": r.time_per_sample_s, "power_w": r.power_w, "power_method": r.power_method}
                for r in rows])

    def evidence(self, signatures: list[str], target_key: str, limit: int = 50) -> dict[str, list[EvidenceRow]]:
        """The latest ``limit`` outcomes of each signature on a target, oldest first."""
        out: dict[str, list[EvidenceRow]] = {}
        with self._read() as conn:
            for sig in dict.fromkeys(signatures):
                rows = conn.execute(_Q_EVIDENCE, {"sig": sig, "tk": target_key, "lim": int(limit)}).all()
                if rows:
                    out[sig] = [EvidenceRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9], r[10],
                                            None if r[11] is None else str(r[11]))
                                for r in reversed(rows)]
        return out

    # -- export -------------------------------------------------------------------------
    def feedback_trace_frame(self, limit: int | None = None,
                             quarantined: dict[str, int] | None = None) -> pd.DataFrame:
        """Feedback as trace rows (one per observed device run; ``job_id`` = decision id).
        Rows :mod:`placement.serve.learning.quarantine` keeps out are left out and counted by reason into
        ``quarantined`` (when given)."""
        from placement.serve.learning.quarantine import screen_stored, trace_rows

        skipped: list[tuple[int, str, str]] = []
        screened = screen_stored(self.recent_feedback(limit, skipped=skipped), skipped)
        if quarantined is not None:
            quarantined.update(screened.counts)
        return pd.DataFrame([row for fb in screened.usable for row in trace_rows(fb)])

    def export_trace(self, path: Path, *, seed: int | None = None, thresholds: Thresholds | None = None,
                     limit: int | None = None) -> tuple[Path, str]:
        """Write the feedback as a trace (``source='feedback'``). Returns ``(path, sha256)``."""
        quarantined: dict[str, int] = {}
        frame = self.feedback_trace_frame(limit, quarantined)
        self.last_export_quarantined = quarantined
        if frame.empty:
            if quarantined:
                raise ValueError(f"every feedback row is quarantined ({quarantined}): nothing to export")
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
            extra={"thresholds": (thresholds or Thresholds()).as_dict(), "database": str(self.path),
                   "quarantined": quarantined},
        )
        out = write_trace(frame, Path(path), meta)
        return out, file_sha256(out)

    @classmethod
    def from_settings(cls, settings: Any) -> Store:
        """The store the settings name: ``db_url`` when set (PostgreSQL for clusters), else the
        SQLite file ``settings.database`` with ``db_synchronous``."""
        url = getattr(settings, "db_url", None)
        return cls(url or settings.database, synchronous=settings.db_synchronous)


# --------------------------------------------------------------------------------------
# migrations
# --------------------------------------------------------------------------------------
def _revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def migrate(target: Engine | str | Path) -> str:
    """Bring the database to :data:`SCHEMA_HEAD` (Alembic ``upgrade head``); returns the revision.

    Safe when several replicas open the database at once: the upgrade runs in one transaction
    holding SQLite's write lock or a PostgreSQL advisory lock, and re-checks the revision
    inside it. A database newer than this code raises :class:`StoreError`."""
    if not isinstance(target, Engine):
        Store(target).close()  # opening migrates
        return SCHEMA_HEAD
    engine = target
    with engine.connect() as conn:
        if _revision(conn) == SCHEMA_HEAD:
            return SCHEMA_HEAD
    with engine.connect() as conn:
        conn.execution_options(placement_write=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATE_LOCK_KEY)))
            current = _revision(conn)
            if current == SCHEMA_HEAD:
                return SCHEMA_HEAD
            from alembic import command
            from alembic.config import Config
            from alembic.script import ScriptDirectory

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            if current is not None:
                try:
                    ScriptDirectory.from_config(cfg).get_revision(current)
                except Exception as exc:
                    raise StoreError(f"database schema revision {current} is newer than this code's ({SCHEMA_HEAD}): "
                                     "upgrade placement, or start from a new database") from exc
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return SCHEMA_HEAD
def job_row(decision: StoredDecision) -> dict[str, Any]:
    """The job and ``hw_*`` trace columns of a decision (``job_id`` = decision id)."""
    return {"source": "feedback", "job_id": decision.decision_id, **job_columns(decision.job),
            **target_columns(decision.target)}


def run_row(decision: StoredDecision, run: ReportedOutcome) -> dict[str, Any]:
    """One trace row for a reported run of a decided job (knobs: as reported, else the
    decision's for the chosen device, else the target's defaults)."""
    o = run.device_outcome()
    chosen = run.device == decision.device
    cap = run.gpu_mem_cap_mib or (cap_to_column(decision.gpu_mem_cap) if chosen and run.device == "gpu" else None)
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
        version=row[0], created_at=float(row[1]), path=Path(row[2]), parent=row[3], status=row[4],
        thresholds=json.loads(row[5]), metrics=json.loads(row[6]),
    )
