"""Traces: logged jobs and their measured (or simulated) outcomes, one row per run.

A trace row is one job run on one device of one target with one knob setting (CPU cores,
GPU memory cap). Rows carry the job's features and the target's figures (``hw_*``
columns) so a trace is self-contained: a policy can be trained from a trace of hardware
it has never seen. Parquet is the primary format, CSV the secondary; both carry a
metadata record (schema version, source, hardware description, seed, code version).

:func:`validate` rejects bad rows naming the row number (1-based, as in a spreadsheet
without its header), the column and the reason; :func:`write_trace` validates first and
writes atomically (temp file + rename), so a failed write never leaves half a file.
:func:`pair_outcomes` turns runs into one labelled row per (job, target) with the joint
threshold of :mod:`placement.core.threshold`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from placement.core.decision import GROW, GpuMemCap
from placement.core.hardware import TARGET_KINDS, HardwareTarget
from placement.core.job import FAMILIES, MODES, Job
from placement.core.threshold import Thresholds, joint_threshold

TRACE_SCHEMA_VERSION = 1
META_KEY = b"placement.trace"  # the Parquet metadata key (a stored name: unchanged by the move to placement.core)
CSV_META_PREFIX = "# placement-trace: "
SOURCES = ("paper", "measured", "simulated", "feedback", "probe")
POWER_METHODS = ("measured", "modelled", "unknown")
CV_LIMIT = 0.05
"""Rows whose repeat coefficient of variation exceeds this are flagged (``cv_flag``)."""


@dataclass(frozen=True)
class Column:
    """One column of the trace schema: name, kind (``str``, ``int``, ``float`` or ``bool``),
    whether the column must be present (``required``) and may hold missing values (``nullable``),
    the lower bound (exclusive with ``exclusive_min``), allowed values (``choices``), and the value
    an absent optional column gets (``default``)."""

    name: str
    kind: str  # "str" | "int" | "float" | "bool"
    required: bool = True
    nullable: bool = False
    minimum: float | None = None
    exclusive_min: bool = False
    choices: tuple[str, ...] | None = None
    default: Any = None


_HW = "hw_"
COLUMNS: tuple[Column, ...] = (
    Column("source", "str", choices=SOURCES),
    Column("job_id", "str"),
    Column("model", "str", required=False, default="job"),
    Column("family", "str", choices=FAMILIES),
    Column("mode", "str", choices=MODES),
    Column("batch_size", "int", minimum=1),
    Column("flops_per_batch", "float", minimum=0),
    Column("param_count", "int", minimum=0),
    Column("input_elems_per_sample", "int", minimum=1),
    Column("input_bytes_per_sample", "int", minimum=1),
    Column("dataset_size", "int", required=False, nullable=True, minimum=1),
    Column("target_id", "str"),
    Column("hw_kind", "str", choices=TARGET_KINDS),
    Column("hw_cpu_model", "str", required=False, default="unknown"),
    Column("hw_cpu_cores", "int", minimum=1),
    Column("hw_cpu_gflops", "float", minimum=0, exclusive_min=True),
    Column("hw_cpu_tdp_w", "float", minimum=0, exclusive_min=True),
    Column("hw_ram_gib", "float", minimum=0, exclusive_min=True),
    Column("hw_cpu_mem_bw_gbs", "float", required=False, minimum=0, exclusive_min=True, default=50.0),
    Column("hw_cpu_idle_w", "float", required=False, minimum=0, default=0.0),
    Column("hw_gpu_model", "str", required=False, nullable=True),
    Column("hw_gpu_gflops", "float", minimum=0),
    Column("hw_gpu_mem_gib", "float", minimum=0),
    Column("hw_gpu_tdp_w", "float", minimum=0),
    Column("hw_gpu_mem_bw_gbs", "float", required=False, minimum=0, default=0.0),
    Column("hw_gpu_idle_w", "float", required=False, minimum=0, default=0.0),
    Column("hw_host_link_gbs", "float", required=False, minimum=0, default=0.0),
    Column("hw_unified_memory", "bool", required=False, default=False),
    Column("device", "str", choices=("cpu", "gpu")),
    Column("cpu_cores", "int", minimum=1),
    Column("gpu_mem_cap_mib", "int", required=False, nullable=True, minimum=1),
    Column("feasible", "bool"),
    Column("infeasible_reason", "str", required=False, nullable=True),
    Column("n_samples", "int", nullable=True, minimum=1),
    Column("time_total_s", "float", nullable=True, minimum=0, exclusive_min=True),
    Column("time_per_batch_s", "float", required=False, nullable=True, minimum=0, exclusive_min=True),
    Column("time_per_batch_median_s", "float", required=False, nullable=True, minimum=0, exclusive_min=True),
    Column("time_per_batch_iqr_s", "float", required=False, nullable=True, minimum=0),
    Column("time_cv", "float", required=False, nullable=True, minimum=0),
    Column("repeats", "int", required=False, nullable=True, minimum=1),
    Column("avg_cpu_power_w", "float", nullable=True, minimum=0),
    Column("avg_gpu_power_w", "float", nullable=True, minimum=0),
    Column("cpu_power_method", "str", choices=POWER_METHODS),
    Column("gpu_power_method", "str", choices=POWER_METHODS),
    Column("cv_flag", "bool", required=False, default=False),
    # the estimate a service decided on (placement.model.features.ESTIMATE_COLUMNS), where the trace
    # records it (the learner's feedback traces); absent: features form it from the model
    Column("est_margin_speedup", "float", required=False, nullable=True),
    Column("est_margin_energy", "float", required=False, nullable=True),
    Column("est_margin_sigma", "float", required=False, nullable=True, minimum=0),
    Column("est_gpu_feasible", "float", required=False, nullable=True, minimum=0),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
_HW_COLUMNS: tuple[tuple[str, str], ...] = tuple((n, n[len(_HW):]) for n in COLUMN_NAMES if n.startswith(_HW))
"""The ``hw_*`` columns and the :class:`~placement.core.hardware.HardwareTarget` field each holds."""
_JOB_COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "name"), ("family", "family"), ("mode", "mode"), ("batch_size", "batch_size"),
    ("flops_per_batch", "flops_per_batch"), ("param_count", "param_count"),
    ("input_elems_per_sample", "input_elems_per_sample"), ("input_bytes_per_sample", "input_bytes_per_sample"),
    ("dataset_size", "dataset_size"),
)
"""The job columns of a trace and the :class:`~placement.core.job.Job` field each holds (``model``
holds the job's ``name``)."""
JOB_COLUMN_NAMES: tuple[str, ...] = tuple(n for n, _ in _JOB_COLUMNS)
"""The columns of a trace that describe the job (:func:`job_columns`, :func:`row_job`)."""
_BY_NAME = {c.name: c for c in COLUMNS}
_PANDAS_DTYPE = {"str": "string", "int": "Int64", "float": "Float64", "bool": "boolean"}
MAX_ERRORS = 20


class TraceValidationError(ValueError):
    """Bad trace rows: ``errors`` lists ``(row, column, reason)`` (row 0 = the file itself)."""

    def __init__(self, errors: list[tuple[int, str, str]], source: str = "trace") -> None:
        self.errors = errors
        lines = [f"row {r}, column '{c}': {why}" if r else f"column '{c}': {why}" for r, c, why in errors]
        more = "" if len(errors) < MAX_ERRORS else f"\n  (first {MAX_ERRORS} errors shown)"
        super().__init__(f"{source} rejected:\n  " + "\n  ".join(lines) + more)


@dataclass
class TraceMeta:
    """Provenance written into every trace file."""

    source: str
    description: str = ""
    schema_version: int = TRACE_SCHEMA_VERSION
    seed: int | None = None
    code_version: str = ""
    hardware: str = ""
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The metadata as a JSON object with sorted keys (as stored in Parquet metadata or a CSV's
        first line)."""
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TraceMeta:
        """Metadata from :meth:`to_json` output (unknown keys ignored, absent ones at their defaults)."""
        data = json.loads(text)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class Trace:
    """A validated trace: its schema-typed rows, provenance, and the file it was read from with its
    SHA-256 (when read from one)."""

    frame: pd.DataFrame
    meta: TraceMeta
    path: Path | None = None
    sha256: str = ""


def target_columns(target: HardwareTarget) -> dict[str, Any]:
    """The ``target_id`` and ``hw_*`` columns of a target."""
    cols: dict[str, Any] = {"target_id": target.id}
    for name, attr in _HW_COLUMNS:
        cols[name] = getattr(target, attr)
    return cols


def row_target(row: pd.Series | dict) -> HardwareTarget:
    """Rebuild the target a trace row ran on."""
    data = {name[len(_HW) :]: row[name] for name in COLUMN_NAMES if name.startswith(_HW) and name in row}
    data = {k: (None if _isnull(v) else (v.item() if hasattr(v, "item") else v)) for k, v in data.items()}
    return HardwareTarget(id=str(row["target_id"]), source="trace", **{k: v for k, v in data.items() if v is not None or k == "gpu_model"})


def job_columns(job: Job) -> dict[str, Any]:
    """The job columns (:data:`JOB_COLUMN_NAMES`) of a job; ``model`` is its name."""
    return {name: getattr(job, attr) for name, attr in _JOB_COLUMNS}


_CELL_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def row_job(row: pd.Series | Mapping[str, Any], *, validate: bool = True, **fields: Any) -> Job:
    """Rebuild the job of a trace row from its job columns (:data:`JOB_COLUMN_NAMES`; a missing
    or null cell leaves the field at its default). Each cell is converted to its column's Python
    type, so numpy scalars and float64 columns give the same job. ``fields`` adds or overrides
    :class:`~placement.core.job.Job` fields (``operators``, ``signature``). ``validate=False``
    skips the record's checks, for rows that came from valid jobs (the service's own columns)."""
    data: dict[str, Any] = {}
    for name, attr in _JOB_COLUMNS:
        if name in row and not _isnull(value := row[name]):
            data[attr] = _CELL_TYPES[_BY_NAME[name].kind](value)
    data.update(fields)
    return Job.model_validate(data) if validate else Job.model_construct(**data)


def cap_to_column(cap: GpuMemCap) -> int | None:
    """The trace's ``gpu_mem_cap_mib`` cell for a GPU memory cap: MiB, or null (``None``) for
    :data:`~placement.core.decision.GROW` -- which a float column or array reads as NaN. With
    :func:`cap_from_column`, the one conversion between the domain's cap and the column form
    (trace files, knob tables, the performance model's cap arrays, the environment's ``info``)."""
    return None if cap == GROW else int(cap)


def cap_from_column(value: Any) -> GpuMemCap:
    """The GPU memory cap a ``gpu_mem_cap_mib`` cell holds: MiB, or GROW for null (``None``, NaN,
    ``pd.NA``)."""
    return GROW if value is None or _isnull(value) else int(value)


def _isnull(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _all_text(raw: pd.Series) -> bool:
    """Every value text or missing (strings, ``None``, ``NaN``, ``pd.NA``)."""
    if pd.api.types.is_string_dtype(raw.dtype) and raw.dtype != object:
        return True
    return raw.dtype == object and pd.api.types.infer_dtype(raw, skipna=True) in ("string", "empty")


def _to_bool(v: Any) -> Any:
    """One cell as ``True``/``False``/``pd.NA``; raises ``TypeError`` on anything else."""
    if v is None or _isnull(v):
        return pd.NA
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
        return v.strip().lower() in ("true", "1")
    raise TypeError(v)


def _coerce_text(raw: pd.Series, name: str, errors: list[tuple[int, str, str]]) -> pd.Series:
    """A mixed column as ``string``; non-text values are stringified and reported (except in
    the identifier columns, where numbers are legitimate names)."""
    conv = raw.astype("object").where(~raw.isna(), None)
    bad_mask = conv.map(lambda v: v is not None and not isinstance(v, str))
    conv = conv.map(lambda v: v if v is None or isinstance(v, str) else str(v))
    if bad_mask.any() and name not in ("job_id", "target_id", "model"):
        for i in np.flatnonzero(bad_mask.to_numpy())[:MAX_ERRORS]:
            errors.append((int(i) + 1, name, f"expected text, got {raw.iloc[i]!r}"))
    return conv.astype("string")


def _coerce_bool(raw: pd.Series, name: str, errors: list[tuple[int, str, str]]) -> Any:
    """A column as nullable ``boolean``; cells that are not true/false/1/0 become errors and NA."""
    values = []
    for i, v in enumerate(raw.tolist()):
        try:
            values.append(_to_bool(v))
        except TypeError:
            values.append(pd.NA)
            errors.append((i + 1, name, f"expected true/false, got {v!r}"))
    return pd.array(values, dtype="boolean")


def _coerce_number(raw: pd.Series, col: Column, errors: list[tuple[int, str, str]]) -> pd.Series:
    """A column as ``Float64`` or (``col.kind == "int"``) ``Int64``; non-numbers, fractions and
    integers beyond 2**62 become errors and NA."""
    numeric = pd.to_numeric(raw, errors="coerce")
    bad = numeric.isna() & ~raw.isna()
    for i in np.flatnonzero(bad.to_numpy())[:MAX_ERRORS]:
        errors.append((int(i) + 1, col.name, f"expected a number, got {raw.iloc[i]!r}"))
    if col.kind != "int":
        return numeric.astype("Float64")
    numeric = numeric.astype("float64")
    frac = numeric.notna() & np.isfinite(numeric.astype("float64")) & (numeric % 1 != 0)
    for i in np.flatnonzero(frac.to_numpy())[:MAX_ERRORS]:
        errors.append((int(i) + 1, col.name, f"expected a whole number, got {raw.iloc[i]!r}"))
    huge = numeric.notna() & ~(numeric.abs() < 2**62)
    for i in np.flatnonzero(huge.to_numpy())[:MAX_ERRORS]:
        errors.append((int(i) + 1, col.name, f"expected a finite whole number, got {raw.iloc[i]!r}"))
    numeric = numeric.where(~frac & ~huge)
    return numeric.round().astype("Int64")


def _coerce_column(raw: pd.Series, col: Column, errors: list[tuple[int, str, str]]) -> Any:
    """One column converted to its schema dtype (conversion problems appended to ``errors``)."""
    if col.kind == "str" and _all_text(raw):  # the common case, without the per-value checks
        return raw.astype("string")
    if col.kind == "float" and pd.api.types.is_float_dtype(raw.dtype) and not isinstance(
            raw.dtype, pd.api.types.CategoricalDtype):
        return raw.astype("Float64")  # already numbers: nothing to convert or report
    if col.kind == "str":
        return _coerce_text(raw, col.name, errors)
    if col.kind == "bool":
        return _coerce_bool(raw, col.name, errors)
    return _coerce_number(raw, col, errors)


def _coerce(frame: pd.DataFrame, errors: list[tuple[int, str, str]]) -> pd.DataFrame:
    """Columns to schema dtypes; values that cannot convert become errors."""
    out = pd.DataFrame(index=frame.index)
    for col in COLUMNS:
        if col.name not in frame.columns:
            if col.required:
                errors.append((0, col.name, "missing column (required)"))
                continue
            series = pd.Series([col.default] * len(frame), index=frame.index, dtype="object")
        else:
            series = frame[col.name]
        try:
            out[col.name] = _coerce_column(series, col, errors)
        except (TypeError, ValueError) as exc:
            errors.append((0, col.name, f"cannot convert column: {exc}"))
    return out


def _column_errors(s: pd.Series, raw: pd.DataFrame, col: Column) -> list[tuple[int, str, str]]:
    """Row errors of one typed column: non-finite floats (from the ``raw`` cells), missing
    required values, values below the minimum and values outside the choices."""
    errors: list[tuple[int, str, str]] = []
    rows = np.arange(1, len(s) + 1)
    if col.kind == "float" and col.name in raw.columns:
        as_float = pd.to_numeric(raw[col.name], errors="coerce").astype("float64")
        nonfinite = np.isinf(as_float.to_numpy()) | (np.isnan(as_float.to_numpy()) & _raw_is_nan(raw[col.name]))
        for r in rows[nonfinite][:MAX_ERRORS]:
            errors.append((int(r), col.name, "NaN or infinite value: give a finite number or leave empty" + ("" if col.nullable else " (required)")))
    isna = s.isna().to_numpy()
    if not col.nullable:
        already = {e[0] for e in errors}
        for r in rows[isna][:MAX_ERRORS]:
            if int(r) not in already:
                errors.append((int(r), col.name, "missing value (required)"))
    if col.minimum is not None and col.kind in ("int", "float"):
        v = s.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = (v <= col.minimum) if col.exclusive_min else (v < col.minimum)
        op = ">" if col.exclusive_min else ">="
        for r in rows[bad & np.isfinite(v)][:MAX_ERRORS]:
            errors.append((int(r), col.name, f"must be {op} {col.minimum:g}, got {v[r - 1]:g}"))
    if col.choices is not None:
        bad = ~s.isna().to_numpy() & ~s.isin(col.choices).to_numpy(dtype=bool, na_value=False)
        for r in rows[bad][:MAX_ERRORS]:
            errors.append((int(r), col.name, f"'{s.iloc[r - 1]}' is not one of {', '.join(col.choices)}"))
    return errors


def _cross_column_errors(frame: pd.DataFrame, feasible: pd.Series) -> list[tuple[int, str, str]]:
    """Row errors of the rules that tie columns together (feasible runs need a sample count and
    a time, infeasible ones a reason; power methods match the power columns; GPU runs need a
    GPU; no more cores than the target has)."""
    errors: list[tuple[int, str, str]] = []
    f = feasible.fillna(False).to_numpy(dtype=bool)
    for name in ("n_samples", "time_total_s"):
        miss = f & frame[name].isna().to_numpy()
        for r in np.flatnonzero(miss)[:MAX_ERRORS]:
            errors.append((int(r) + 1, name, "a feasible run needs this value"))
    reason_missing = ~f & frame["infeasible_reason"].isna().to_numpy()
    for r in np.flatnonzero(reason_missing)[:MAX_ERRORS]:
        errors.append((int(r) + 1, "infeasible_reason", "an infeasible run needs a reason (e.g. 'oom')"))
    for power, method in (("avg_cpu_power_w", "cpu_power_method"), ("avg_gpu_power_w", "gpu_power_method")):
        inconsistent = frame[power].isna().to_numpy() & (frame[method] != "unknown").to_numpy(dtype=bool, na_value=False)
        for r in np.flatnonzero(inconsistent)[:MAX_ERRORS]:
            errors.append((int(r) + 1, method, f"must be 'unknown' when {power} is empty"))
    gpu_rows = (frame["device"] == "gpu").to_numpy(dtype=bool, na_value=False)
    no_gpu = (frame["hw_gpu_gflops"].fillna(0) <= 0).to_numpy(dtype=bool)
    for r in np.flatnonzero(gpu_rows & no_gpu & f)[:MAX_ERRORS]:
        errors.append((int(r) + 1, "device", "a feasible GPU run on a target with hw_gpu_gflops = 0"))
    over = (frame["cpu_cores"] > frame["hw_cpu_cores"]).to_numpy(dtype=bool, na_value=False)
    for r in np.flatnonzero(over)[:MAX_ERRORS]:
        errors.append((int(r) + 1, "cpu_cores", "more cores than the target has (hw_cpu_cores)"))
    return errors


def _row_errors(frame: pd.DataFrame, raw: pd.DataFrame, cross: bool = True) -> list[tuple[int, str, str]]:
    """Row-level errors of the typed ``frame`` (``raw``: the frame as given), at most
    ``MAX_ERRORS``; the cross-column rules run only when every column is clean and ``cross``
    (False once a column is missing or could not be typed: they read every column)."""
    errors: list[tuple[int, str, str]] = []
    for col in COLUMNS:
        if col.name not in frame.columns:
            continue
        errors.extend(_column_errors(frame[col.name], raw, col))
        if len(errors) >= MAX_ERRORS:
            return errors[:MAX_ERRORS]
    feasible = frame.get("feasible")
    if feasible is not None and cross and not errors:
        errors.extend(_cross_column_errors(frame, feasible))
    return errors[:MAX_ERRORS]


def _raw_is_nan(raw: pd.Series) -> np.ndarray:
    """True where a text cell spelled NaN explicitly. In numeric columns NaN is how pandas
    and Parquet spell a missing value, so there it counts as empty (and is rejected as
    missing where the column is required)."""
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        return raw.map(lambda v: isinstance(v, str) and v.strip().lower() == "nan").to_numpy(dtype=bool)
    return np.zeros(len(raw), dtype=bool)


def validate(frame: pd.DataFrame, source: str = "trace") -> pd.DataFrame:
    """A schema-typed copy of ``frame``, or :class:`TraceValidationError` naming bad rows."""
    errors: list[tuple[int, str, str]] = []
    raw = frame.reset_index(drop=True)
    unknown = [c for c in raw.columns if c not in _BY_NAME]
    if unknown:
        errors.append((0, unknown[0], f"unknown column (known: see placement.core.trace.COLUMN_NAMES); {len(unknown)} unknown"))
    typed = _coerce(raw, errors)
    if not errors:
        errors.extend(_row_errors(typed, raw))
    else:  # a missing or untyped column: its rows' own errors, never the rules that read every column
        errors.extend(_row_errors(typed, raw, cross=False)[: MAX_ERRORS - len(errors)])
    if errors:
        raise TraceValidationError(errors[:MAX_ERRORS], source)
    # flag noisy rows
    cv = typed["time_cv"].astype("Float64")
    typed["cv_flag"] = (typed["cv_flag"].fillna(False) | (cv > CV_LIMIT).fillna(False)).astype("boolean")
    return typed[list(COLUMN_NAMES)]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _format(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"trace path '{path}': use a .parquet or .csv file name")


def write_trace(frame: pd.DataFrame, path: Path, meta: TraceMeta) -> Path:
    """Validate and write atomically as Parquet or CSV (by suffix). Returns the path."""
    if meta.source not in SOURCES:
        raise ValueError(f"TraceMeta.source must be one of {', '.join(SOURCES)}, got '{meta.source}'")
    typed = validate(frame, source=str(path))
    fmt = _format(path)
    if fmt == "parquet":
        table = pa.Table.from_pandas(typed, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: meta.to_json().encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        _atomic_write(path, buffer.getvalue())
    else:
        text = CSV_META_PREFIX + meta.to_json() + "\n" + typed.to_csv(index=False)
        _atomic_write(path, text.encode())
    return Path(path)


def read_trace(path: Path) -> Trace:
    """Read and validate a trace (Parquet or CSV). Raises naming the bad rows."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trace file not found: {path}")
    fmt = _format(path)
    meta = TraceMeta(source="measured")
    if fmt == "parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TraceValidationError([(0, "file", f"not a readable Parquet file: {exc}")], str(path)) from exc
        raw_meta = (table.schema.metadata or {}).get(META_KEY)
        frame = table.to_pandas()
    else:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
            raw_meta = first[len(CSV_META_PREFIX) :].encode() if first.startswith(CSV_META_PREFIX) else None
            if raw_meta is None:
                fh.seek(0)
            frame = pd.read_csv(fh, dtype=str, keep_default_na=False, na_values=[""])
    if raw_meta is None:
        raise TraceValidationError([(0, "metadata", "no placement trace metadata (write traces with write_trace)")], str(path))
    try:
        meta = TraceMeta.from_json(raw_meta.decode())
    except (json.JSONDecodeError, TypeError) as exc:
        raise TraceValidationError([(0, "metadata", f"unreadable: {exc}")], str(path)) from exc
    if meta.schema_version != TRACE_SCHEMA_VERSION:
        raise TraceValidationError(
            [(0, "metadata", f"schema_version {meta.schema_version} is not {TRACE_SCHEMA_VERSION}: re-export the trace")],
            str(path),
        )
    typed = validate(frame, source=str(path))
    return Trace(typed, meta, path, file_sha256(path))


def read_traces(paths: Iterable[Path]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Concatenate several traces; returns the frame and ``{path: sha256}``."""
    frames, hashes = [], {}
    for p in paths:
        t = read_trace(Path(p))
        frames.append(t.frame)
        hashes[str(p)] = t.sha256
    if not frames:
        raise ValueError("no trace paths given")
    return pd.concat(frames, ignore_index=True), hashes


def _time_per_sample(frame: pd.DataFrame) -> np.ndarray:
    total = frame["time_total_s"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    n = frame["n_samples"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    per_batch = frame["time_per_batch_s"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    batch = frame["batch_size"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isfinite(total / n), total / n, per_batch / batch)


PAIR_KEYS = ("job_id", "target_id")


def _reference_rows(frame: pd.DataFrame, device: str) -> pd.DataFrame:
    """Per (job, target), the run at default knobs: all cores; on GPU, no cap ('grow') or the largest cap."""
    rows = frame[frame["device"] == device].copy()
    if rows.empty:
        return rows
    rows["_cores_rank"] = rows["cpu_cores"].astype("float64")
    cap = rows["gpu_mem_cap_mib"].astype("Float64").to_numpy(dtype="float64", na_value=np.inf)
    rows["_cap_rank"] = cap
    rows = rows.sort_values(["_cap_rank", "_cores_rank"], kind="stable")
    return rows.groupby(list(PAIR_KEYS), sort=False).tail(1).drop(columns=["_cores_rank", "_cap_rank"])


def pair_outcomes(frame: pd.DataFrame, thresholds: Thresholds | None = None) -> pd.DataFrame:
    """One labelled row per (job, target): CPU vs GPU at default knobs, by the joint threshold.

    Columns: the job and ``hw_*`` columns, ``cpu_/gpu_time_per_sample_s``,
    ``cpu_/gpu_energy_per_sample_j`` (eq. 2), ``energy_method``, ``cpu_/gpu_feasible``,
    ``speedup``, ``energy_ratio``, ``margin``, ``label_gpu``, ``reason``,
    ``energy_unknown``, ``cv_flag``. A target without a GPU counts its GPU as infeasible
    (reason ``gpu_infeasible``); a (job, target) with a GPU but no GPU run, or no CPU run,
    is left out -- it cannot be labelled.
    """
    th = thresholds or Thresholds()
    cpu = _reference_rows(frame, "cpu")
    gpu = _reference_rows(frame, "gpu")
    job_cols = [c for c in COLUMN_NAMES if c == "source" or c in JOB_COLUMN_NAMES or c.startswith(_HW)]
    base = cpu[list(PAIR_KEYS) + job_cols].copy()
    no_gpu_target = base["hw_gpu_gflops"].astype("float64") <= 0

    def side(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
        out = rows[list(PAIR_KEYS)].copy()
        t = _time_per_sample(rows)
        p_cpu = rows["avg_cpu_power_w"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        p_gpu = rows["avg_gpu_power_w"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
        power = p_cpu if prefix == "cpu" else p_cpu + p_gpu
        out[f"{prefix}_time_per_sample_s"] = t
        out[f"{prefix}_energy_per_sample_j"] = power * t
        out[f"{prefix}_feasible"] = rows["feasible"].to_numpy(dtype=bool, na_value=False)
        out[f"{prefix}_cv_flag"] = rows["cv_flag"].to_numpy(dtype=bool, na_value=False)
        methods = rows["cpu_power_method"].astype(str).to_numpy()
        if prefix == "gpu":
            gm = rows["gpu_power_method"].astype(str).to_numpy()
            methods = np.where((methods == "unknown") | (gm == "unknown"), "unknown",
                               np.where((methods == "modelled") | (gm == "modelled"), "modelled", "measured"))
        out[f"{prefix}_energy_method"] = methods
        return out

    merged = base.merge(side(cpu, "cpu"), on=list(PAIR_KEYS), how="left")
    merged = merged.merge(side(gpu, "gpu"), on=list(PAIR_KEYS), how="left")
    missing_gpu = merged["gpu_feasible"].isna()
    keep = ~missing_gpu | no_gpu_target.to_numpy()
    merged = merged[keep.to_numpy() if hasattr(keep, "to_numpy") else keep].reset_index(drop=True)
    gpu_feasible = merged["gpu_feasible"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    cpu_feasible = merged["cpu_feasible"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    labels = joint_threshold(
        merged["cpu_time_per_sample_s"].to_numpy(dtype="float64"),
        merged["gpu_time_per_sample_s"].astype("float64").to_numpy(),
        merged["cpu_energy_per_sample_j"].to_numpy(dtype="float64"),
        merged["gpu_energy_per_sample_j"].astype("float64").to_numpy(),
        cpu_feasible,
        gpu_feasible,
        th,
    )
    merged["cpu_feasible"] = cpu_feasible
    merged["gpu_feasible"] = gpu_feasible
    merged["speedup"] = labels.speedup
    merged["energy_ratio"] = labels.energy_ratio
    merged["margin"] = labels.margin
    merged["label_gpu"] = labels.gpu
    merged["reason"] = labels.reason
    merged["energy_unknown"] = labels.energy_unknown
    merged["cv_flag"] = merged["cpu_cv_flag"].fillna(False).astype(bool) | merged["gpu_cv_flag"].fillna(False).astype(bool)
    merged["energy_method"] = np.where(
        merged["gpu_energy_method"].isna(), merged["cpu_energy_method"], merged["gpu_energy_method"]
    )
    return merged.drop(columns=["cpu_cv_flag", "gpu_cv_flag"])
