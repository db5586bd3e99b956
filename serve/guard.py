"""The HTTP guard: what a hostile or broken client may not do to the service, enforced before any parsing.

:class:`Guard` is a pure ASGI middleware. Under Ray Serve it wraps the uvicorn server of every
ingress replica (direct ingress) and of Ray's HTTP proxy *outside* Ray's own request
accounting: Ray's ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names :func:`ray_middlewares`
(:func:`placement.serve.app.ray_env` sets it). Without Ray, :func:`placement.serve.app.build_fastapi` adds it to
the FastAPI app. A request passes the guard once (the scope is marked).

For every request:

* ``GET /healthz`` and ``GET /metrics`` go straight to the replica's app, past Ray's
  ``max_ongoing_requests``: they answer while placements are saturated.
* A mutating request (POST, PUT, PATCH, DELETE) from a browser page of another site is
  refused (403 naming ``Origin``): an ``Origin`` that is neither the service's own
  (its ``Host``) nor in ``allowed_origins``, or ``Sec-Fetch-Site: cross-site``.
* A body must be ``application/json`` (415 naming ``Content-Type``): a form or
  ``text/plain`` post, which a page may send cross-site without asking, is refused.
* The body size is refused from ``Content-Length`` (413), and while streaming when chunked. A
  body at most :func:`drain_limit_bytes` long is read and dropped first, so the connection
  stays usable (a proxy in front does not pass ``Connection: close`` on); a larger one is
  refused before a byte of it is read and its connection closed.
* The whole body is read here, before the request takes one of Ray's ongoing-request slots,
  within ``body_timeout_s`` (408 when a client sends it too slowly), with at most
  ``max_body_reads_per_client`` bodies being read at once per client address and
  ``max_body_reads`` in all (429 / 503 with ``Retry-After``): slow senders cannot hold the
  replica's slots.
* Placements may be limited per client address (``placements_per_client_per_s``, a token
  bucket with ``placement_burst``; off by default): 429 with ``Retry-After``.

Request headers must arrive within ``header_timeout_s`` of the connection opening (or of the
previous answer on a kept-alive connection), else the connection is closed: uvicorn has no
such timeout, so :func:`install_header_timeout` adds one to its HTTP protocols in this process.

Client addresses are the TCP peer's: behind a proxy (HAProxy) they are the proxy's, so set
the per-client limits there or raise them here.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

GUARDED = "placement.guarded"
FAST_LANE = frozenset({"/healthz", "/metrics"})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PLACEMENTS = "/v1/placements"


@dataclass(frozen=True)
class GuardLimits:
    """The guard's limits (the service's settings of the same names; see :mod:`placement.serve.settings`)."""

    max_body_bytes: int = 64 * 2**20
    header_timeout_s: float = 10.0
    body_timeout_s: float = 15.0
    max_body_reads_per_client: int = 8
    max_body_reads: int = 4096
    allowed_origins: frozenset[str] = frozenset()
    placements_per_client_per_s: float = 0.0
    placement_burst: int = 20

    @classmethod
    def from_settings(cls, settings: Any, *, behind_proxy: bool = False) -> GuardLimits:
        """The settings' limits. ``behind_proxy``: every connection comes from the proxy (Ray's
        HAProxy adds no X-Forwarded-For), so per-client limits cannot tell clients apart: the
        per-client body cap becomes the total one and the per-client rate limit is off (set
        them in the proxy)."""
        origins = frozenset(o.strip().rstrip("/") for o in str(settings.allowed_origins or "").split(",") if o.strip())
        per_client = settings.max_body_reads if behind_proxy else settings.max_body_reads_per_client
        return cls(max_body_bytes=settings.max_body_bytes, header_timeout_s=settings.header_timeout_s,
                   body_timeout_s=settings.body_timeout_s, max_body_reads_per_client=per_client,
                   max_body_reads=settings.max_body_reads, allowed_origins=origins,
                   placements_per_client_per_s=0.0 if behind_proxy else settings.placements_per_client_per_s,
                   placement_burst=settings.placement_burst)


@dataclass
class _Process:
    """What the replica in this process registered: its limits and its app (for the fast lane)."""

    limits: GuardLimits = field(default_factory=GuardLimits)
    app: ASGIApp | None = None


_PROCESS = _Process()


def configure(limits: GuardLimits, app: ASGIApp | None = None) -> None:
    """Set this process's limits (and the replica's app for ``/healthz`` and ``/metrics``)."""
    _PROCESS.limits = limits
    if app is not None:
        _PROCESS.app = app
    install_header_timeout(limits.header_timeout_s)


def ray_middlewares() -> list[Any]:
    """Ray Serve's HTTP callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=placement.serve.guard.ray_middlewares``):
    the guard around every HTTP server Ray starts (replicas' direct ingress and the proxy)."""
    from starlette.middleware import Middleware

    install_header_timeout(_PROCESS.limits.header_timeout_s)
    return [Middleware(Guard)]


# --------------------------------------------------------------------------------------
# header timeout (uvicorn has none)
# --------------------------------------------------------------------------------------
_HEADER_TIMEOUT = {"s": 10.0, "installed": False}


def install_header_timeout(seconds: float) -> None:
    """Close a connection whose request headers do not arrive within ``seconds`` of it opening
    or of the previous answer on it (a slowloris client). Patches uvicorn's HTTP protocol
    classes in this process, once; later calls only change the time."""
    _HEADER_TIMEOUT["s"] = float(seconds)
    if _HEADER_TIMEOUT["installed"]:
        return
    _HEADER_TIMEOUT["installed"] = True
    classes: list[type] = []
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        classes.append(H11Protocol)
    except ImportError:  # pragma: no cover - h11 ships with uvicorn
        pass
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        classes.append(HttpToolsProtocol)
    except ImportError:  # httptools not installed
        pass
    for cls in classes:
        _patch(cls)


def _arm(protocol: Any) -> None:
    seen = getattr(protocol, "cycle", None)

    def expire() -> None:
        transport = getattr(protocol, "transport", None)
        if transport is None or transport.is_closing():
            return
        if getattr(protocol, "cycle", None) is seen:  # no request headers since the timer was armed
            transport.close()

    protocol.loop.call_later(_HEADER_TIMEOUT["s"], expire)


def _patch(cls: Any) -> None:
    made, complete = cls.connection_made, cls.on_response_complete

    def connection_made(self: Any, transport: Any) -> None:
        made(self, transport)
        _arm(self)

    def on_response_complete(self: Any) -> None:
        complete(self)
        _arm(self)

    cls.connection_made, cls.on_response_complete = connection_made, on_response_complete


# --------------------------------------------------------------------------------------
# the middleware
# --------------------------------------------------------------------------------------
class Refused(Exception):
    """A request the guard refuses before the app sees it: HTTP ``status``, error kind, field and
    message, the ``Retry-After`` delay (s) when there is one, and how to leave the connection usable
    (``drain_bytes``, ``body_read``)."""

    def __init__(self, status: int, error: str, field: str, message: str, retry_after_s: float | None = None,
                 drain_bytes: int = 0, body_read: bool = False) -> None:
        super().__init__(message)
        self.status, self.error, self.field, self.message, self.retry_after_s = status, error, field, message, retry_after_s
        # drain_bytes: a refused body declared this large is read and discarded before the answer;
        # body_read: the request's body was read whole. Either way the connection stays open for the
        # client's next request (see drain_limit_bytes).
        self.drain_bytes, self.body_read = drain_bytes, body_read


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens, self.at = tokens, at


class Guard:
    """The ASGI middleware (see the module docstring). ``limits``: fixed limits (default: this
    process's, as :func:`configure` set them)."""

    def __init__(self, app: ASGIApp, limits: GuardLimits | None = None) -> None:
        self.app = app
        self._fixed = limits
        self._reading: dict[str, int] = {}
        self._reading_total = 0
        self._buckets: dict[str, _Bucket] = {}

    @property
    def limits(self) -> GuardLimits:
        """The limits in force: the fixed ones, else this process's."""
        return self._fixed or _PROCESS.limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI scope: an HTTP request passes the guard's checks (origin, content type,
        body size and read timeout, concurrent body reads, placement rate: see the module docstring)
        before the app, ``GET /healthz`` and ``/metrics`` go to the replica's app directly, and other
        scopes pass straight through."""
        if scope["type"] != "http" or scope.get(GUARDED):
            await self.app(scope, receive, send)
            return
        scope[GUARDED] = True
        method, path = scope["method"], scope["path"]
        fast = _PROCESS.app
        if method == "GET" and path in FAST_LANE and fast is not None and fast is not self.app:
            await fast(scope, receive, send)
            return
        if method not in MUTATING:
            await self.app(scope, receive, send)
            return
        try:
            headers = _headers(scope)
            self._check_origin(headers)
            declared = self._check_size_and_type(headers, path)
            client = _client(scope)
            if path == PLACEMENTS:
                self._rate(client)
            body = await self._read(client, receive, declared)
        except Refused as exc:
            keep_alive = exc.body_read or (exc.drain_bytes > 0 and await self._drain(receive, exc.drain_bytes))
            await _refuse(send, exc, keep_alive=keep_alive)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _drain(self, receive: Receive, declared: int) -> bool:
        """Read and discard a refused body of ``declared`` bytes within ``body_timeout_s``:
        whether it all arrived (then the connection can stay open). Counted in the total cap on
        bodies being read; nothing is kept."""
        if self._reading_total >= self.limits.max_body_reads:
            return False
        self._reading_total += 1
        try:
            return await asyncio.wait_for(_discard(receive, declared), self.limits.body_timeout_s)
        except asyncio.TimeoutError:
            return False
        finally:
            self._reading_total -= 1

    # -- checks --------------------------------------------------------------------------
    def _check_origin(self, headers: dict[str, str]) -> None:
        origin = headers.get("origin")
        if headers.get("sec-fetch-site") == "cross-site" and (origin or "").rstrip("/") not in self.limits.allowed_origins:
            raise Refused(403, "forbidden", "Origin", "a cross-site request from a browser page: this route only takes "
                          "requests from the service's own pages or an origin in PLACEMENT_ALLOWED_ORIGINS")
        if origin is None:
            return
        origin = origin.rstrip("/")
        if origin in self.limits.allowed_origins:
            return
        host = headers.get("host", "")
        if origin.lower() in (f"http://{host}".lower(), f"https://{host}".lower()):
            return
        raise Refused(403, "forbidden", "Origin", f"Origin '{origin[:100]}' is another site than this service "
                      f"('{host[:100]}'): add it to PLACEMENT_ALLOWED_ORIGINS to allow it")

    def _check_size_and_type(self, headers: dict[str, str], path: str) -> int | None:
        declared: int | None = None
        raw = headers.get("content-length")
        if raw is not None:
            try:
                declared = int(raw)
            except ValueError:
                raise Refused(400, "bad_request", "Content-Length", f"'{raw[:40]}' is not a number of bytes") from None
            if declared < 0:
                raise Refused(400, "bad_request", "Content-Length", "must not be negative")
            limit = self.limits.max_body_bytes
            if declared > limit:
                raise Refused(413, "too_large", "body", f"{declared} bytes exceed the limit of {limit} bytes "
                              "(PLACEMENT_MAX_BODY_BYTES): split the batch",
                              drain_bytes=declared if declared <= drain_limit_bytes(limit) else 0)
        has_body = (declared or 0) > 0 or "chunked" in headers.get("transfer-encoding", "").lower()
        content_type = headers.get("content-type", "")
        # placements may also come in the bulk format (Arrow IPC): not a type a web page can send
        # cross-site without a CORS preflight, like JSON
        if has_body and not _is_json(content_type) and not (path == PLACEMENTS and is_arrow(content_type)):
            given = headers.get("content-type")
            raise Refused(415, "unsupported_media_type", "Content-Type",
                          f"the body must be JSON sent as 'Content-Type: application/json' (got "
                          f"{repr(given[:80]) if given else 'none'})"
                          + (f"; placements also take '{ARROW_MEDIA_TYPE}'" if path == PLACEMENTS else ""))
        return declared

    def _rate(self, client: str) -> None:
        rate = self.limits.placements_per_client_per_s
        if rate <= 0:
            return
        burst = float(max(self.limits.placement_burst, 1))
        now = time.monotonic()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) > 100_000:  # forget idle clients rather than grow without bound
                self._buckets = {k: b for k, b in self._buckets.items() if now - b.at < burst / rate}
            bucket = self._buckets[client] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / rate
            raise Refused(429, "rate_limited", "client", f"more than {rate:g} placement requests per second from "
                          f"{client} (PLACEMENT_PLACEMENTS_PER_CLIENT_PER_S): retry in {wait:.1f} s",
                          retry_after_s=wait)
        bucket.tokens -= 1.0

    async def _read(self, client: str, receive: Receive, declared: int | None) -> bytes:
        """The whole body, within the limits; a per-client and a total cap on bodies being read."""
        limits = self.limits
        if self._reading.get(client, 0) >= limits.max_body_reads_per_client:
            raise Refused(429, "too_many_requests", "client", f"{client} is already sending "
                          f"{limits.max_body_reads_per_client} request bodies (PLACEMENT_MAX_BODY_READS_PER_CLIENT): "
                          "finish those first", retry_after_s=1.0)
        if self._reading_total >= limits.max_body_reads:
            raise Refused(503, "busy", "body", f"{limits.max_body_reads} request bodies are being received "
                          "(PLACEMENT_MAX_BODY_READS): retry shortly", retry_after_s=1.0)
        self._reading[client] = self._reading.get(client, 0) + 1
        self._reading_total += 1
        try:
            return await asyncio.wait_for(self._receive_all(receive, limits.max_body_bytes), limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise Refused(408, "request_timeout", "body", f"the body did not arrive within {limits.body_timeout_s:g} s "
                          "(PLACEMENT_BODY_TIMEOUT_S): send it at once") from None
        finally:
            self._reading_total -= 1
            left = self._reading[client] - 1
            if left:
                self._reading[client] = left
            else:
                del self._reading[client]

    @staticmethod
    async def _receive_all(receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "bad_request", "body", "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                # read on (discarding) up to the drain limit, so a body slightly too large still
                # leaves a usable connection
                whole = message.get("more_body", False) is False or await _discard(
                    receive, drain_limit_bytes(limit) - total, at_most=True)
                raise Refused(413, "too_large", "body", f"body exceeds the limit of {limit} bytes "
                              "(PLACEMENT_MAX_BODY_BYTES): split the batch", body_read=whole)
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        out[key.decode("latin-1").lower()] = value.decode("latin-1")
    return out


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"
"""The bulk format's media type (:data:`placement.serve.bulk.MEDIA_TYPE`; the guard imports no pyarrow)."""


def is_arrow(content_type: str) -> bool:
    """Whether ``content_type`` is the bulk format's media type."""
    return content_type.split(";", 1)[0].strip().lower() == ARROW_MEDIA_TYPE


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then the client's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def drain_limit_bytes(max_body_bytes: int) -> int:
    """The largest too-large body (declared by ``Content-Length``) that the guard still reads and
    discards before its 413: twice the limit, at most 16 MiB over it. A server that answers before
    reading the body must close the connection, and a proxy in front (HAProxy) does not pass the
    ``Connection: close`` on: the client then reuses a connection the proxy closes ("server
    disconnected without sending a response"), or loses the answer itself to the reset. A client
    slightly over the limit keeps a working connection; a far larger body is refused at once and
    its connection closed."""
    return max_body_bytes + min(max_body_bytes, 16 * 2**20)


async def _discard(receive: Receive, expected: int, *, at_most: bool = False) -> bool:
    """Read and drop the rest of a body: whether it ended having ``expected`` bytes (``at_most``:
    no more than ``expected``)."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        total += len(message.get("body", b""))
        if total > expected:
            return False
        if not message.get("more_body", False):
            return total <= expected if at_most else total == expected


async def _refuse(send: Send, exc: Refused, *, keep_alive: bool = False) -> None:
    """The refusal's JSON answer; the connection is closed after it unless the request's body was
    read whole (``keep_alive``)."""
    body = json.dumps({"error": exc.error, "detail": [{"field": exc.field, "message": exc.message}]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if not keep_alive:
        headers.append((b"connection", b"close"))
    if exc.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after_s))).encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
