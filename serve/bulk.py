"""The bulk format: a batch of jobs and its answers as Arrow IPC streams, beside JSON.

``POST /v1/placements`` with ``Content-Type: application/vnd.apache.arrow.stream`` takes one
Arrow IPC stream whose columns are the fields of :class:`placement.core.job.Job` (the JSON
``columns`` format's names: ``family``, ``mode``, ``batch_size``, ``flops_per_batch``,
``param_count``, ``input_elems_per_sample``, ``input_bytes_per_sample``; optional ``name``,
``dataset_size``, ``signature``) and whose schema metadata key ``placement.request`` holds the
rest of the request as JSON (``target``, ``thresholds``, ``max_slowdown``, ``explore``; every key
optional, as in JSON). The answer is an Arrow IPC stream of the decisions (the JSON
``columns`` answer's names; ``gpu_mem_cap_mib`` null where no cap applies: ``grow``, or a target
without a GPU) with the answer's head (``target_id``, ``policy_version``, ``thresholds``) as JSON
under the schema metadata key ``placement.response``.

Why: the JSON columns format spends most of a large request parsing and printing numbers;
Arrow columns arrive as typed arrays, so the checks below run once per column (vectorised),
not once per value. They are the :class:`~placement.core.job.Job` field constraints, read from
``Job.model_fields``, so the two formats accept the same jobs; a refused column answers 422
naming ``columns.<field>`` and the first bad row. Job ``operators`` and per-job ``probes``
are JSON-only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import annotated_types
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from placement.core.job import FAMILIES, MODES, Job
from placement.model.estimate import Estimate
from placement.serve.guard import ARROW_MEDIA_TYPE, is_arrow
from placement.serve.placer import InputError
from placement.serve.schemas import PlacementRequest

MEDIA_TYPE = ARROW_MEDIA_TYPE
"""The bulk format's content type (request and answer)."""
REQUEST_KEY = b"placement.request"
"""Schema metadata key of the request's non-column fields (JSON)."""
RESPONSE_KEY = b"placement.response"
"""Schema metadata key of the answer's head (JSON)."""


is_bulk = is_arrow
"""Whether a request's ``Content-Type`` is the bulk format's."""

_REQUIRED = ("family", "mode", "batch_size", "flops_per_batch", "param_count", "input_elems_per_sample",
             "input_bytes_per_sample")
_OPTIONAL = ("name", "dataset_size", "signature")
_HEAD_FIELDS = ("target", "thresholds", "max_slowdown", "explore")


def _head_model() -> type[BaseModel]:
    """The request's non-column fields, each exactly as :class:`PlacementRequest` defines it."""
    fields = {name: (PlacementRequest.model_fields[name].annotation, PlacementRequest.model_fields[name])
              for name in _HEAD_FIELDS}
    return create_model(  # type: ignore[call-overload, no-any-return]
        "BulkRequestHead", __config__=ConfigDict(extra="forbid", frozen=True), **fields)


BulkRequestHead = _head_model()


@dataclass(frozen=True)
class BulkRequest:
    """A decoded bulk request: the request (without jobs) and the job columns as arrays."""

    request: PlacementRequest
    columns: dict[str, Any]
    """``name``/``family``/``mode`` as lists of str, the numeric fields as float64 arrays
    (``dataset_size`` NaN where unknown), ``signature`` a list (None where not sent) or None."""
    n: int


def read_request(raw: bytes, max_jobs: int) -> BulkRequest:
    """Decode and check a bulk request; :class:`~placement.serve.placer.InputError` naming the field otherwise (422; 413 beyond ``max_jobs``)."""
    try:
        table = pa.ipc.open_stream(raw).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError("body", f"not an Arrow IPC stream ({exc}); send one record batch stream "
                        f"with Content-Type: {MEDIA_TYPE}") from None
    n = table.num_rows
    if n == 0:
        raise InputError("columns", "the stream holds no jobs")
    if n > max_jobs:
        raise InputError("columns", f"{n} jobs exceed the limit of {max_jobs} per request: split the batch", status=413)
    unknown = sorted(set(table.column_names) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        extra = " (operators are JSON-only)" if "operators" in unknown else ""
        raise InputError(f"columns.{unknown[0]}", f"not a job field of the bulk format{extra}; known: "
                        f"{', '.join(_REQUIRED + _OPTIONAL)}")
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise InputError(f"columns.{missing[0]}", "required column missing")
    head = _head(table.schema.metadata or {})
    cols: dict[str, Any] = {
        "family": _words(table, "family", FAMILIES),
        "mode": _words(table, "mode", MODES),
        "name": _names(table, n),
    }
    for name in ("batch_size", "flops_per_batch", "param_count", "input_elems_per_sample", "input_bytes_per_sample",
                 "dataset_size"):
        cols[name] = _numbers(table, name, n)
    cols["signature"] = _signatures(table)
    request = PlacementRequest.model_construct(job=None, jobs=None, columns=None, probes=None,
                                               **{k: getattr(head, k) for k in _HEAD_FIELDS})
    return BulkRequest(request, cols, n)


def _head(metadata: dict[bytes, bytes]) -> Any:
    raw = metadata.get(REQUEST_KEY, b"{}")
    try:
        return BulkRequestHead.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(where or "placement.request", f"{first['msg']} (in the schema metadata "
                        f"'{REQUEST_KEY.decode()}')") from None


def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    col = table.column(name)
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def _first(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def _words(table: pa.Table, name: str, allowed: tuple[str, ...]) -> list[str]:
    col = _column(table, name)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_dictionary(col.type)):
        raise InputError(f"columns.{name}", f"must be a string column, got {col.type}")
    values = col.to_pylist()
    ok = pc.is_in(col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col,
                  value_set=pa.array(allowed)).fill_null(False).to_numpy(zero_copy_only=False)
    if not ok.all():
        i = _first(~ok)
        raise InputError(f"columns.{name}", f"row {i}: {values[i]!r} is not one of {', '.join(allowed)}")
    return values  # type: ignore[no-any-return]


def _names(table: pa.Table, n: int) -> list[str]:
    if "name" not in table.column_names:
        return ["job"] * n
    col = _column(table, "name")
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise InputError("columns.name", f"must be a string column, got {col.type}")
    info = Job.model_fields["name"]
    lo, hi = _bounds(info.metadata, "min_length", "max_length")
    lengths = pc.utf8_length(col).fill_null(-1).to_numpy(zero_copy_only=False)
    bad = (lengths < lo) | (lengths > hi)
    if bad.any():
        i = _first(bad)
        raise InputError("columns.name", f"row {i}: a name of {lo}..{hi:g} characters (no nulls)")
    return col.to_pylist()  # type: ignore[no-any-return]


def _bounds(metadata: list[Any], low_attr: str, high_attr: str) -> tuple[float, float]:
    lo, hi = -math.inf, math.inf
    for m in metadata:
        if getattr(m, low_attr, None) is not None:
            lo = float(getattr(m, low_attr))
        if getattr(m, high_attr, None) is not None:
            hi = float(getattr(m, high_attr))
    return lo, hi


def _numbers(table: pa.Table, name: str, n: int) -> npt.NDArray[np.float64]:
    """A numeric Job field as float64 (NaN = null, allowed only for ``dataset_size``), checked
    against the field's type (integers for int fields) and bounds."""
    info = Job.model_fields[name]
    if name not in table.column_names:
        return np.full(n, np.nan)  # only dataset_size is optional
    col = _column(table, name)
    if pa.types.is_null(col.type) and not info.is_required():  # a column of nulls only: unknown everywhere
        return np.full(n, np.nan)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise InputError(f"columns.{name}", f"must be an integer or floating-point column, got {col.type}")
    values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if null.any() and info.is_required():
        raise InputError(f"columns.{name}", f"row {_first(null)}: null; every job needs a {name}")
    known = ~null
    if not np.isfinite(values[known]).all():
        raise InputError(f"columns.{name}", f"row {_first(known & ~np.isfinite(values))}: must be a finite number")
    integer = info.annotation is int or info.annotation == (int | None)
    if integer and pa.types.is_floating(col.type):
        frac = known & (values != np.floor(values))
        if frac.any():
            raise InputError(f"columns.{name}", f"row {_first(frac)}: {values[_first(frac)]!r} is not a whole number")
    for m in info.metadata:
        for attr, op, word in (("ge", np.less, ">="), ("gt", np.less_equal, ">"), ("le", np.greater, "<="),
                               ("lt", np.greater_equal, "<")):
            bound = getattr(m, attr, None) if isinstance(m, annotated_types.BaseMetadata) else None
            if bound is None:
                continue
            bad = known & op(values, float(bound))
            if bad.any():
                i = _first(bad)
                raise InputError(f"columns.{name}", f"row {i}: {values[i]:g} must be {word} {bound:g}")
    return np.where(known, values, np.nan)


def _signatures(table: pa.Table) -> list[str | None] | None:
    if "signature" not in table.column_names:
        return None
    col = _column(table, "signature")
    if pa.types.is_null(col.type):  # no job sent one
        return None
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise InputError("columns.signature", f"must be a string column, got {col.type}")
    pattern = next(m.pattern for m in Job.model_fields["signature"].metadata if getattr(m, "pattern", None))
    ok = pc.match_substring_regex(col, pattern).to_numpy(zero_copy_only=False)
    null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    bad = ~null & ~np.asarray(np.where(null, True, ok), dtype=bool)
    if bad.any():
        raise InputError("columns.signature", f"row {_first(bad)}: must match {pattern}")
    values = col.to_pylist()
    return values if any(values) else None


# --------------------------------------------------------------------------- the answer


def write_response(result: Any) -> bytes:
    """The answers of a :class:`placement.serve.placer.PlacementResult` as an Arrow IPC stream."""
    n = result.n
    has_gpu = result.target.has_gpu
    no_gpu = pa.nulls(n, pa.float64()) if not has_gpu else None
    caps = result.gpu_mem_cap_mib  # the store's form: -1 = grow
    ids = pc.binary_join_element_wise(pa.scalar(result.batch_id + "-"),
                                      pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string()), "")
    arrays: dict[str, pa.Array] = {
        "decision_id": ids,
        "job_name": pa.array(result.jobs.text["name"], pa.string()),
        "device": pa.DictionaryArray.from_arrays(pa.array(result.gpu.astype(np.int8)), pa.array(["cpu", "gpu"])),
        "cpu_cores": pa.array(result.cpu_cores, pa.int64()),
        "gpu_mem_cap_mib": pa.array(caps, pa.int64(), mask=(caps < 0) | (not has_gpu)),
        "gpu_probability": no_gpu if no_gpu is not None else pa.array(result.gpu_probability, pa.float64()),
        "predicted_speedup": _finite_or_null(result.predicted_speedup),
        "predicted_energy_ratio": _finite_or_null(result.predicted_energy_ratio),
        "explored": pa.array(result.explored, pa.bool_()),
        "decided_by": pa.array(result.decided_by, pa.string()).dictionary_encode(),
    }
    est: Estimate | None = result.estimate
    if est is not None:
        arrays["estimate_source"] = pa.array(est.source, pa.string()).dictionary_encode()
        arrays["gpu_feasible"] = pa.array(est.gpu_usable, pa.bool_()) if has_gpu else pa.nulls(n, pa.bool_())
        arrays["gpu_mem_need_mib"] = _finite_or_null(est.gpu_mem_need_mib) if has_gpu else no_gpu
    head = {"target_id": result.target.id, "policy_version": result.policy_version,
            "thresholds": result.thresholds.as_dict()}
    table = pa.table(arrays).replace_schema_metadata({RESPONSE_KEY: json.dumps(head).encode()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


def _finite_or_null(values: npt.NDArray[np.float64]) -> pa.Array:
    arr = np.asarray(values, dtype=np.float64)
    return pa.array(arr, pa.float64(), mask=~np.isfinite(arr))


# --------------------------------------------------------------------------- clients


def encode_request(columns: dict[str, Any], **head: Any) -> bytes:
    """A bulk request body from job columns (lists or arrays) and the request's other fields
    (``target``, ``thresholds``, ``max_slowdown``, ``explore``): what a client sends."""
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    table = table.replace_schema_metadata({REQUEST_KEY: json.dumps(head).encode()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


def decode_response(raw: bytes) -> tuple[dict[str, Any], pa.Table]:
    """``(head, decisions table)`` of a bulk answer."""
    table = pa.ipc.open_stream(raw).read_all()
    return json.loads((table.schema.metadata or {})[RESPONSE_KEY]), table

