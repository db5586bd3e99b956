"""HTTP latency and throughput of the placement service: Ray Serve vs a plain FastAPI app (a benchmark, not a test).

Run: ``.venv/bin/python benchmarks/bench_http.py [--model models/default] [--requests 2000] [--batch 10000]``

Both servers serve the *same* app (:func:`placement.serve.app.build_fastapi` around a
:class:`placement.serve.app.PlacementService`: same policy, same performance model, same SQLite
store writes, same settings), each in its own process, measured in the same run:

* **echo**: the floor -- a bare FastAPI app whose route parses the same single-job body into a
  pydantic model and answers a small JSON object (no policy, no store);
* **plain**: uvicorn in a subprocess;
* **ray**: ``placement serve``'s Ray Serve deployment at its stable address (HAProxy ingress in
  front of the direct-ingress replicas; ``--no-haproxy``: a replica's own port);
* **ray-direct**: with HAProxy, one replica's own (internal) port, for reference;
* **ray-proxy**: the same Ray app through Ray Serve's own HTTP proxy (the default Serve path),
  for reference.

Figures (printed; ``--out`` also writes them as JSON with provenance):

1. single decision: one job per request, sequential on one keep-alive connection (a
   minimal ``http.client`` client, so client overhead is small), rounds interleaved between
   servers so machine noise hits all alike; p50 / p99 in ms and requests/s; the ratios
   ray / echo (targets: p50 <= 1.3, p99 <= 2) and ray / plain.
2. batch route end to end: ``--batch`` jobs per request in the columns format (and the rows
   format, and the bulk format: Arrow IPC, :mod:`placement.serve.bulk`), time from sending the
   pre-encoded body to the decoded answer; decisions/s (targets >= 300k JSON columns, >= 1 M bulk).

0. start to first answer: from calling :func:`placement.serve.app.start` (Ray start, deploy, model load)
   to the first 200 answer of a placement at the service's address (target <= 12 s).

3. concurrency: ``--concurrency`` levels (default 1, 8, 32); at each level that many client
   threads, each with its own keep-alive connection, send ``--conc-requests`` single-decision
   requests in all; p50 / p99 and requests/s (all requests over the wall time). With several
   ingress replicas the clients spread over the replicas' direct ports round-robin.

Serve options (one Ray configuration per run; run several to compare, ``make bench`` does):
``--replicas N`` ingress replicas, ``--max-ongoing N`` (``max_ongoing_requests``), and
``--no-throughput-optimized`` (Ray Serve's default request path: no throughput-optimised
mode, no direct ingress, every request through Ray's HTTP proxy actor). ``--variant`` names
the run in the output. ``--decision-writes behind``: both servers answer placements before their
decisions are committed (:mod:`placement.serve.storage.writer`).

Jobs cycle through ``--pool`` distinct synthetic jobs (placement.model.simulate.generate_jobs,
``--seed``) on catalogue target ``--target``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _plain_server(settings_json: str) -> None:
    """Child process: the placement app on uvicorn, no Ray."""
    import uvicorn

    from placement.serve.app import PlacementService, build_fastapi
    from placement.serve.settings import Settings

    settings = Settings.model_validate_json(settings_json)
    app = build_fastapi(PlacementService(settings, replica="plain"))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


class EchoJob(BaseModel):
    """The echo floor's job body: the fields of a single-job placement request (no validation beyond types)."""

    name: str
    family: str
    mode: str
    batch_size: int
    flops_per_batch: float
    param_count: int
    input_elems_per_sample: int
    input_bytes_per_sample: int


class EchoRequest(BaseModel):
    job: EchoJob
    target: str


def _echo_server(port: int) -> None:
    """Child process: the floor -- a bare FastAPI app on uvicorn whose POST /v1/placements parses
    the single-job body into a pydantic model and answers a small JSON object (no policy, no store)."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    async def echo(req: EchoRequest) -> dict:
        return {"name": req.job.name, "target": req.target, "device": "cpu"}

    app.post("/v1/placements")(echo)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Conn:
    """A keep-alive HTTP/1.1 connection with a minimal client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        for attempt in (0, 1):
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # the server closed a keep-alive connection that sat idle past its timeout (uvicorn: 5 s)
                # while the other servers were measured: reconnect once
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        self.conn.close()


def interleaved(conns: dict[str, Conn], bodies: list[bytes], requests: int, rounds: int) -> dict[str, list[float]]:
    """Single placements timed in ``rounds`` interleaved between the connections (so machine noise
    hits every server alike), ``requests`` per connection in all, cycling through ``bodies``; each
    answer parsed as JSON. Seconds per request, by connection name; raises on a non-200 answer."""
    lat: dict[str, list[float]] = {name: [] for name in conns}
    per_round = max(1, requests // rounds)
    k = 0
    for _ in range(rounds):
        for name, c in conns.items():
            for _ in range(per_round):
                body = bodies[k % len(bodies)]
                k += 1
                t0 = time.perf_counter()
                status, payload = c.post("/v1/placements", body)
                json.loads(payload)
                lat[name].append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"{name} answered {status}: {payload[:200]!r}")
    return lat


def _wait(port: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            c = Conn(port)
            status, _ = c.get("/healthz")
            c.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


def _first_answer(port: int, body: bytes, timeout_s: float) -> float:
    """``time.perf_counter()`` when ``port`` first answered a placement with 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            c = Conn(port)
            c.conn.timeout = 5
            status, _ = c.post("/v1/placements", body)
            c.close()
            if status == 200:
                return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no placement answered on 127.0.0.1:{port} within {timeout_s:.0f} s")


def _replica_ports(base: int, n: int, timeout_s: float = 180) -> list[int]:
    """The direct-ingress ports of ``n`` replicas (consecutive from ``base`` on a fresh cluster)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = []
        for port in range(base, base + n + 16):
            try:
                c = Conn(port)
                c.conn.timeout = 2
                status, _ = c.get("/healthz")
                c.close()
                if status == 200:
                    found.append(port)
            except OSError:
                pass
        if len(found) >= n:
            return found[:n]
        time.sleep(0.5)
    raise RuntimeError(f"{n} replicas did not answer from port {base}")


def _concurrent(ports: list[int], bodies: list[bytes], clients: int, total: int) -> dict[str, Any]:
    """``clients`` threads (each one keep-alive connection, replica ports round-robin) send ``total``
    single-decision requests; latency percentiles and requests/s over the wall time."""
    import threading

    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per = max(1, total // clients)

    def client(k: int) -> None:
        c = Conn(ports[k % len(ports)])
        mine = []
        for i in range(per):
            t0 = time.perf_counter()
            try:
                status, payload = c.post("/v1/placements", bodies[(k * per + i) % len(bodies)])
                json.loads(payload)
            except OSError:
                status = -1
                c.close()
                c = Conn(ports[k % len(ports)])
            if status == 200:
                mine.append(time.perf_counter() - t0)
            else:
                with lock:
                    errors[0] += 1
        c.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"p50_ms": _pct(lat, 0.5) * 1e3, "p99_ms": _pct(lat, 0.99) * 1e3, "requests_per_s": len(lat) / wall,
            "errors": errors[0], "n": per * clients}


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: bundled models/default)")
    parser.add_argument("--requests", type=int, default=2000, help="single-decision requests per server")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds for the single-decision test")
    parser.add_argument("--batch", type=int, default=10_000, help="jobs per batch request")
    parser.add_argument("--batches", type=int, default=10, help="batch requests per server and format")
    parser.add_argument("--pool", type=int, default=1000, help="distinct jobs to cycle through")
    parser.add_argument("--target", default="B")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=18700, help="base port (plain, ray direct, ray proxy = +0, +10, +30)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--concurrency", default="1,8,32", help="client concurrency levels (comma separated)")
    parser.add_argument("--conc-requests", type=int, default=960, help="requests per server and concurrency level")
    parser.add_argument("--replicas", type=int, default=1, help="Ray ingress replicas")
    parser.add_argument("--max-ongoing", type=int, default=64, help="max_ongoing_requests of the ingress")
    parser.add_argument("--no-throughput-optimized", action="store_true",
                        help="Ray Serve's default path: no throughput-optimised mode, no direct ingress")
    parser.add_argument("--variant", default=None, help="name of this Serve configuration in the output")
    parser.add_argument("--decision-writes", choices=("commit", "behind"), default="commit",
                        help="decisions committed before the answer (default) or written behind it, in both servers")
    parser.add_argument("--no-haproxy", action="store_true",
                        help="no HAProxy ingress: clients go to the replicas' own ports (the pre-HAProxy setup)")
    parser.add_argument("--plain-server", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--echo-server", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server is not None:
        _plain_server(args.plain_server)
        return
    if args.echo_server is not None:
        _echo_server(args.echo_server)
        return

    import numpy as np

    from placement.agents.artifact import DEFAULT_MODEL_DIR, load_model
    from placement.core.version import code_version
    from placement.lab.probe import probe_local
    from placement.model.simulate import generate_jobs
    from placement.serve import app as serve_app
    from placement.serve import bulk
    from placement.serve.settings import Settings

    model = args.model or DEFAULT_MODEL_DIR
    version = load_model(model).metadata.version
    frame = generate_jobs(args.pool, np.random.default_rng(args.seed))
    jobs = [
        {"name": r.model, "family": r.family, "mode": r.mode, "batch_size": int(r.batch_size),
         "flops_per_batch": float(r.flops_per_batch), "param_count": int(r.param_count),
         "input_elems_per_sample": int(r.input_elems_per_sample), "input_bytes_per_sample": int(r.input_bytes_per_sample)}
        for r in frame.itertuples()
    ]
    singles = [json.dumps({"job": j, "target": args.target}).encode() for j in jobs]
    batch_jobs = [jobs[i % len(jobs)] for i in range(args.batch)]
    rows_body = json.dumps({"jobs": batch_jobs, "target": args.target}).encode()
    cols_body = json.dumps({"columns": {k: [j[k] for j in batch_jobs] for k in batch_jobs[0]},
                            "target": args.target}).encode()
    bulk_body = bulk.encode_request({k: [j[k] for j in batch_jobs] for k in batch_jobs[0]}, target=args.target)

    tmp = Path(tempfile.mkdtemp(prefix="bench_http."))
    common = {"model_path": str(model), "max_batch_jobs": max(args.batch, 1000), "max_body_bytes": 256 * 2**20,
              "learner_enabled": False, "policy_poll_s": 60.0, "seed": args.seed, "decision_writes": args.decision_writes}
    plain_settings = Settings.model_validate({**common, "state_dir": str(tmp / "plain"), "port": args.port,
                                              "ray_proxy_port": args.port + 1})
    ray_settings = Settings.model_validate({**common, "state_dir": str(tmp / "ray"), "port": args.port + 10,
                                            "ray_proxy_port": args.port + 30, "ingress_replicas": args.replicas,
                                            "max_ongoing_requests": args.max_ongoing,
                                            "haproxy": not (args.no_haproxy or args.no_throughput_optimized)})
    echo_port = args.port + 2
    direct = not args.no_throughput_optimized
    variant = args.variant or (f"{'throughput-optimised+direct' if direct else 'default proxy path'}, "
                               f"{args.replicas} replica(s), max_ongoing_requests {args.max_ongoing}, "
                               f"decisions {'written behind the answer' if args.decision_writes == 'behind' else 'committed'}")
    if not direct:
        base_env = serve_app.ray_env
        serve_app.ray_env = lambda s: {**base_env(s), "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0",  # type: ignore[assignment]
                                       "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    env = dict(os.environ)
    plain = subprocess.Popen([sys.executable, __file__, "--plain-server", plain_settings.model_dump_json()], env=env)
    echo = subprocess.Popen([sys.executable, __file__, "--echo-server", str(echo_port)], env=env)
    stable = direct and serve_app.uses_haproxy(ray_settings)
    try:
        # start to first answer: `placement serve`'s path (Ray start, deploy, model load) until the
        # service's address answers a placement
        t_start = time.perf_counter()
        serve_app.start(ray_settings, num_cpus=2, wait_s=None)
        first_port = ray_settings.port if direct else ray_settings.ray_proxy_port
        start_to_first_answer_s = _first_answer(first_port, singles[0], timeout_s=300) - t_start
        if direct:
            serve_app.wait_for_replicas(ray_settings, timeout_s=180)
        _wait(plain_settings.port)
        _wait(echo_port)
        _wait(ray_settings.ray_proxy_port)
        servers = {"echo": [echo_port], "plain": [plain_settings.port], "ray-proxy": [ray_settings.ray_proxy_port]}
        if stable:
            servers["ray"] = [ray_settings.port]  # the stable address: HAProxy in front of the replicas
            servers["ray-direct"] = sorted(serve_app.live_replicas(ray_settings))[: args.replicas]
        elif direct:
            _wait(ray_settings.port)
            servers["ray"] = _replica_ports(ray_settings.port, args.replicas)
        else:
            servers["ray"] = [ray_settings.ray_proxy_port]  # the proxy is Ray's only HTTP path here
        conns = {name: Conn(ports[0]) for name, ports in servers.items()}

        # warm-up
        for name, c in conns.items():
            for body in singles[:200]:
                status, payload = c.post("/v1/placements", body)
                if status != 200:
                    raise RuntimeError(f"{name} answered {status} during warm-up: {payload[:300]!r}")
            if name != "echo":
                c.post("/v1/placements", cols_body)
                c.post("/v1/placements", bulk_body, bulk.MEDIA_TYPE)

        # 1. single decision, interleaved rounds
        lat = interleaved(conns, singles, args.requests, args.rounds)
        single = {
            name: {"p50_ms": _pct(v, 0.50) * 1e3, "p99_ms": _pct(v, 0.99) * 1e3, "mean_ms": statistics.fmean(v) * 1e3,
                   "requests_per_s": len(v) / sum(v), "n": len(v)}
            for name, v in lat.items()
        }

        # 2. batch route end to end (interleaved)
        batch: dict[str, dict[str, Any]] = {}
        for fmt, body in (("columns", cols_body), ("rows", rows_body), ("bulk", bulk_body)):
            times: dict[str, list[float]] = {name: [] for name in ("plain", "ray")}  # (echo has no batch route)
            media = bulk.MEDIA_TYPE if fmt == "bulk" else "application/json"
            for _ in range(args.batches):
                for name in times:
                    t0 = time.perf_counter()
                    status, payload = conns[name].post("/v1/placements", body, media)
                    if status != 200:
                        raise RuntimeError(f"{name} answered {status}: {payload[:200]!r}")
                    if fmt == "bulk":  # decoded into Arrow columns, as a bulk client reads it
                        n = bulk.decode_response(payload)[1].num_rows
                    else:
                        answer = json.loads(payload)
                        n = len(answer["columns"]["decision_id"]) if fmt == "columns" else len(answer["decisions"])
                    times[name].append(time.perf_counter() - t0)
                    if n != args.batch:
                        raise RuntimeError(f"{name} answered {n} decisions for {args.batch} jobs")
            for name, t in times.items():
                batch[f"{name}/{fmt}"] = {
                    "decisions_per_s": args.batch * len(t) / sum(t),
                    "best_decisions_per_s": args.batch / min(t),
                    "median_request_s": statistics.median(t),
                    "request_mb": len(body) / 1e6,
                }
        for c in conns.values():
            c.close()

        # 3. concurrency levels (interleaved by server at each level)
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
        conc: dict[str, dict[str, Any]] = {}
        for level in levels:
            for name, ports in servers.items():
                conc[f"{name}/c{level}"] = _concurrent(ports, singles, level, args.conc_requests)
    finally:
        for child in (plain, echo):
            child.terminate()
            child.wait(timeout=30)
        try:
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
        except Exception as exc:  # report, the figures are already taken
            print(f"(Ray shutdown: {exc})", file=sys.stderr)

    ratio = single["ray"]["p50_ms"] / single["plain"]["p50_ms"]
    floor_p50 = single["ray"]["p50_ms"] / single["echo"]["p50_ms"]
    floor_p99 = single["ray"]["p99_ms"] / single["echo"]["p99_ms"]
    host = probe_local()
    print(f"\nplacement HTTP benchmark -- {host.cpu_model}, {host.cpu_cores} usable cores, Python "
          f"{platform.python_version()}, code {code_version()}, model {version}, target {args.target}")
    print(f"single decision ({args.requests} requests per server, {args.rounds} interleaved rounds, 1 keep-alive connection):")
    print(f"  {'server':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'req/s':>8}")
    for name, s in single.items():
        print(f"  {name:<10} {s['p50_ms']:8.3f} {s['p99_ms']:8.3f} {s['mean_ms']:8.3f} {s['requests_per_s']:8.0f}")
    print(f"  ratio ray/plain p50 = {ratio:.2f}; Ray's proxy path / plain = "
          f"{single['ray-proxy']['p50_ms'] / single['plain']['p50_ms']:.2f}")
    print(f"  ray ({'stable address, HAProxy' if stable else 'replica port' if direct else 'proxy'}) / bare echo "
          f"floor: p50 {floor_p50:.2f} (target <= 1.3), p99 {floor_p99:.2f} (target <= 2)")
    print(f"start to first answer: {start_to_first_answer_s:.1f} s (target <= 12 s)")
    print(f"batch route end to end ({args.batch} jobs per request, {args.batches} requests per server and format):")
    print(f"  {'server/format':<16} {'decisions/s':>12} {'best/s':>10} {'median s':>9} {'body MB':>8}")
    for name, b in batch.items():
        print(f"  {name:<16} {b['decisions_per_s']:12.0f} {b['best_decisions_per_s']:10.0f} {b['median_request_s']:9.3f} "
              f"{b['request_mb']:8.2f}")
    print("  targets: >= 300000 decisions/s (JSON columns), >= 1000000 decisions/s (bulk: Arrow IPC)")
    print(f"concurrency ({args.conc_requests} single-decision requests per server and level; one keep-alive "
          "connection per client thread):")
    print(f"  {'server/clients':<16} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}")
    for name, cr in conc.items():
        print(f"  {name:<16} {cr['p50_ms']:8.2f} {cr['p99_ms']:8.2f} {cr['requests_per_s']:8.0f} {cr['errors']:>7}")
    print(f"  Serve configuration: {variant}; ray ports {servers['ray']}; load average {os.getloadavg()[0]:.1f}")
    if args.out is not None:
        record = {
            "benchmark": "bench_http", "code_version": code_version(), "model_version": version, "seed": args.seed,
            "thresholds": {"speedup_min": plain_settings.speedup_min, "energy_ratio_max": plain_settings.energy_ratio_max},
            "hardware": host.model_dump(mode="json"), "args": {k: str(v) for k, v in vars(args).items()},
            "single": single, "ratio_ray_plain_p50": ratio, "ratio_ray_echo_p50": floor_p50,
            "ratio_ray_echo_p99": floor_p99, "start_to_first_answer_s": start_to_first_answer_s, "stable": stable, "batch": batch, "concurrency": conc, "variant": variant,
            "load_average": os.getloadavg(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
