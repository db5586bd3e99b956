"""Hostile clients for the reliability tests and ``benchmarks/bench_hostile.py`` (loopback only, bounded in time).

* :func:`slow_flood`: ``n`` connections that each send a request's headers and then its body
  a byte at a time (slow bodies), spread over loopback source addresses (127.0.1.x: every
  address of 127/8 is the local host, each a separate client to the service); a refused or
  closed connection is opened again at once, so ``n`` stay open all along;
* :func:`probe`: a well-behaved client meanwhile: ``GET /healthz`` every ``interval_s`` and a
  placement every few probes, from its own address; every latency and status recorded;
* :func:`big_body`: ``Content-Length`` of ``size`` bytes, then the body streamed as fast as the
  socket takes it: the time to the answer's status line, and the status.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

JOB = {"name": "probe", "family": "cnn", "mode": "train", "batch_size": 64, "flops_per_batch": 1e12,
       "param_count": 10**7, "input_elems_per_sample": 150528, "input_bytes_per_sample": 602112}


@dataclass
class FloodStats:
    opened: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    closed_without_answer: int = 0
    open_now: int = 0
    open_min: int = 10**9
    open_samples: list[int] = field(default_factory=list)


def flood_address(i: int) -> str:
    """Source address of slow connection ``i``: 127.0.1.1 .. 127.0.1.250 (never 127.0.0.x)."""
    return f"127.0.1.{1 + i % 250}"


async def _slow_connection(port: int, address: str, path: str, stop: asyncio.Event, stats: FloodStats) -> None:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000000\r\n\r\n{").encode()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        except OSError:
            await asyncio.sleep(0.2)
            continue
        stats.opened += 1
        stats.open_now += 1
        try:
            writer.write(head)
            await writer.drain()
            while not stop.is_set():
                try:
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                except asyncio.TimeoutError:
                    writer.write(b" ")  # one more byte of the body
                    await writer.drain()
                    continue
                if line.startswith(b"HTTP/"):
                    code = int(line.split()[1])
                    stats.statuses[code] = stats.statuses.get(code, 0) + 1
                else:
                    stats.closed_without_answer += 1
                break
        except (OSError, ConnectionError):
            stats.closed_without_answer += 1
        finally:
            stats.open_now -= 1
            writer.close()


async def _flood(port: int, n: int, duration_s: float, path: str, stats: FloodStats, ready: threading.Event) -> None:
    stop = asyncio.Event()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(_slow_connection(port, flood_address(i), path, stop, stats)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    deadline = time.monotonic() + duration_s
    while stats.open_now < n * 0.95 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    ready.set()
    while time.monotonic() < deadline:
        stats.open_samples.append(stats.open_now)
        stats.open_min = min(stats.open_min, stats.open_now)
        await asyncio.sleep(0.25)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


def slow_flood(port: int, n: int, duration_s: float, *, path: str = "/v1/placements") -> tuple[threading.Thread, FloodStats,
                                                                                              threading.Event]:
    """Start the flood in a thread; returns ``(thread, stats, ready)`` (``ready``: the ``n`` are open)."""
    stats = FloodStats()
    ready = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(_flood(port, n, duration_s, path, stats, ready)), daemon=True)
    thread.start()
    return thread, stats, ready


@dataclass
class ProbeStats:
    health_s: list[float] = field(default_factory=list)
    health_status: dict[int, int] = field(default_factory=dict)
    place_s: list[float] = field(default_factory=list)
    place_status: dict[int, int] = field(default_factory=dict)


def probe(url: str, duration_s: float, *, interval_s: float = 0.05, place_every: int = 5,
          address: str = "127.0.0.1", timeout_s: float = 10.0) -> ProbeStats:
    """A well-behaved client for ``duration_s``: /healthz every ``interval_s``, a placement every
    ``place_every`` probes (new connection each time, as a fresh client would)."""
    out = ProbeStats()
    transport = httpx.HTTPTransport(local_address=address)
    deadline = time.monotonic() + duration_s
    i = 0
    with httpx.Client(base_url=url, timeout=timeout_s, transport=transport, headers={"connection": "close"}) as c:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                code = c.get("/healthz").status_code
            except httpx.HTTPError:
                code = -1
            out.health_s.append(time.perf_counter() - t0)
            out.health_status[code] = out.health_status.get(code, 0) + 1
            if i % place_every == 0:
                t0 = time.perf_counter()
                try:
                    code = c.post("/v1/placements", json={"job": JOB, "target": "B"}).status_code
                except httpx.HTTPError:
                    code = -1
                out.place_s.append(time.perf_counter() - t0)
                out.place_status[code] = out.place_status.get(code, 0) + 1
            i += 1
            time.sleep(interval_s)
    return out


def big_body(port: int, size: int, *, path: str = "/v1/placements", timeout_s: float = 30.0) -> tuple[int, float]:
    """``(status, seconds from the first header byte to the status line)`` for a ``size``-byte body
    declared in ``Content-Length`` and streamed without waiting (refused bodies are cut short)."""
    sk = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    got = bytearray()
    done = threading.Event()

    def read() -> None:
        try:
            while b"\r\n" not in got:
                chunk = sk.recv(4096)
                if not chunk:
                    break
                got.extend(chunk)
        except OSError:
            pass
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    t0 = time.perf_counter()
    sk.sendall(head)
    reader.start()
    chunk = b" " * 2**20
    sent = 0
    try:
        while sent < size and not done.is_set():
            sk.sendall(chunk[: min(len(chunk), size - sent)])
            sent += min(len(chunk), size - sent)
    except OSError:  # the server answered and closed: the rest is refused
        pass
    done.wait(timeout_s)
    elapsed = time.perf_counter() - t0
    sk.close()
    line = bytes(got).split(b"\r\n", 1)[0]
    return (int(line.split()[1]) if line.startswith(b"HTTP/") else 0), elapsed


def fuzz_stateful(url: str, headers: dict[str, str], *, scenarios: int, steps: int = 8, seed: int = 0,
                  by_operation: dict[str, int] | None = None) -> dict[int, int]:
    """schemathesis in stateful mode against ``url``: ``scenarios`` sequences of up to ``steps``
    calls along the schema's links (placements -> feedback -> update -> policy / rollback).
    Every answer must be no 5xx, a documented status and content type, and fit its response
    schema. Returns the count of each status (and fills ``by_operation``: ``"POST /v1/feedback 200"`` -> count)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase
    from hypothesis import settings as hsettings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    statuses: dict[int, int] = {}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    base = schema.as_state_machine()

    class Machine(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": dict(headers), "timeout": 120}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if by_operation is not None:
                key = f"{case.operation.label} {response.status_code}"
                by_operation[key] = by_operation.get(key, 0) + 1
            case.validate_response(response, checks=checks, headers=dict(headers))

    import hypothesis

    hypothesis.seed(seed)(Machine.TestCase.runTest)  # the same sequences every run
    Machine.run(settings=hsettings(max_examples=scenarios, stateful_step_count=steps, deadline=None, database=None,
                                   suppress_health_check=list(HealthCheck), derandomize=False,
                                   phases=[Phase.generate]))
    return statuses


def fuzz_stateless(url: str, headers: dict[str, str], *, per_operation: int, seed: int = 0,
                   failures: list[str] | None = None) -> dict[int, int]:
    """schemathesis, stateless: for every operation of the schema, ``per_operation`` positive and
    (where it has inputs) ``per_operation`` negative cases, seeded. Statuses counted; a failed
    conformance check is recorded in ``failures`` (not raised), a 5xx counted like any status."""
    import requests
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    statuses: dict[int, int] = {}
    session = requests.Session()
    base_checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not list(op.body) and not list(op.iter_parameters()):
                continue
            checks = base_checks + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
            key = f"{op.method.upper()} {op.path} {mode.value} {seed}"
            _run_cases(op.as_strategy(generation_mode=mode), per_operation, key, checks, headers, session, statuses,
                       failures)
    session.close()
    return statuses


def _run_cases(strategy: Any, budget: int, key: str, checks: list, headers: dict[str, str], session: Any,
               statuses: dict[int, int], failures: list[str] | None) -> None:
    import hashlib

    from hypothesis import HealthCheck, Phase, given
    from hypothesis import seed as hseed
    from hypothesis import settings as hsettings

    @hseed(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16))
    @hsettings(max_examples=budget, derandomize=False, deadline=None, database=None,
               phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(headers=headers, session=session, timeout=120)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except Exception as exc:  # recorded, and the run goes on
            if failures is not None:
                failures.append(f"{key}: {response.status_code}: {str(exc).splitlines()[0][:200]}")

    run()
