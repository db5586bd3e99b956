"""Start to first answer, step by step (a benchmark, not a test).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_startup.py [--replicas 2] [--port 24400]``

The steps of :func:`placement.serve.app.start` timed from this process's start: imports, Ray's
import, ``ray.init`` (a local Ray of this run's own), ``serve.start`` (controller and the HAProxy
ingress), ``serve.run`` (the ingress replicas and the learner, until Serve reports them running),
then the first 200 answer of a placement at the stable address and at each replica's own port.
Issue 16's target: start to first answer <= 12 s on a 2-core machine. Stops its own Ray at the end.

``--floor``: the same steps with the same Ray settings (HAProxy, direct ingress, as many ingress
replicas, a second deployment in the learner's place) but deployments that do nothing: a FastAPI
ingress whose one route parses the same JSON body into a pydantic model and answers it, no
``placement`` import in the replicas. What Ray Serve itself costs to start on this host.

``--kill N``: after the first answers, SIGKILL one ingress replica's process N times (each after
the previous replacement answered) and time, from the kill, the first 200 answer of a new replica on
its own port (a process that did not listen before): how long Serve takes to bring the service back
to full capacity after losing a replica, with no load on the host. With ``--floor`` the same for the
bare echo replicas, so the service's own share of a replacement shows in one run.
"""


import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from placement.serve.settings import Settings

T0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _mark(what: str) -> float:
    at = time.perf_counter() - T0
    print(f"{at:7.2f} s  {what}", flush=True)
    return at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="ingress replicas")
    parser.add_argument("--port", type=int, default=24400, help="the stable address (Ray's proxy: port + 20)")
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument("--floor", action="store_true", help="deploy a bare echo app instead of the service")
    parser.add_argument("--kill", type=int, default=0, help="replica kills after the start (timed replacements)")
    args = parser.parse_args()

    from placement.core.version import code_version
    from placement.serve import app as serve_app
    from placement.serve.settings import Settings

    _mark("imports (placement.serve.app)")
    settings = Settings.model_validate({"state_dir": tempfile.mkdtemp(prefix="bench_startup."), "port": args.port,
                                        "ray_proxy_port": args.port + 20, "ingress_replicas": args.replicas})
    os.environ.update(serve_app.ray_env(settings))
    os.environ.pop("PLACEMENT_TOKEN", None)
    import httpx
    import ray
    from ray import serve

    _mark("import ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    _mark("ray.init")
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        _mark("serve.start (controller, HAProxy)")
        if args.floor:
            serve.run(_floor_app(settings), name="floor", route_prefix="/", blocking=False)
            _mark(f"serve.run returned (floor: {args.replicas} echo replicas, one idle deployment)")
        else:
            serve.run(serve_app.build_app(settings), name=serve_app.APP_NAME, route_prefix="/", blocking=False)
            _mark(f"serve.run returned ({args.replicas} ingress replicas, the learner)")
        body = {"job": {"name": "x", "family": "cnn", "mode": "train", "batch_size": 8, "flops_per_batch": 1e9,
                        "param_count": 10, "input_elems_per_sample": 3, "input_bytes_per_sample": 12}, "target": "B"}
        ports = {"the stable address": settings.port,
                 **{f"replica port {p}": p for p in serve_app.ingress_ports(settings)}}
        answered: set[str] = set()
        last: dict[str, str] = {}
        deadline = time.monotonic() + args.timeout_s
        while len(answered) < 1 + args.replicas and time.monotonic() < deadline:
            for name, port in ports.items():
                if name in answered:
                    continue
                try:
                    r = httpx.post(f"http://127.0.0.1:{port}/v1/placements", json=body, timeout=1.0)
                    last[name] = f"HTTP {r.status_code}: {r.text[:200]}"
                    if r.status_code == 200:
                        answered.add(name)
                        _mark(f"first answer on {name}")
                except httpx.HTTPError as e:
                    last[name] = type(e).__name__
            time.sleep(0.05)
        if len(answered) < 1 + args.replicas:
            _mark(f"gave up; last outcome of the first ports: {dict(list(last.items())[:4])}")
        replacements = [_replace_one(serve_app.ingress_ports(settings), body, args.timeout_s) for _ in range(args.kill)]
        if replacements:
            print("replacement answering after " + ", ".join(f"{t:.2f}" for t in replacements) + " s (kill to first "
                  "200 on a new replica's own port)", flush=True)
        what = "floor (bare echo app)" if args.floor else "the service"
        print(f"{what}; code {code_version()}, load average {os.getloadavg()[0]:.1f}; "
              "target: start to first answer <= 12 s")
    finally:
        serve.shutdown()
        ray.shutdown()


def _listener(port: int) -> int | None:
    """The pid listening on ``port`` on this host, if any."""
    import psutil

    for c in psutil.net_connections(kind="tcp"):
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid is not None:
            return int(c.pid)
    return None


def _replace_one(ports: range, body: dict[str, Any], timeout_s: float) -> float:
    """SIGKILL the replica on the first listening port of ``ports``; seconds until a new process answers.
    Watched cheaply (a TCP connect per port, one request where a port accepts), so that the watcher
    does not take the CPU the replacement needs."""
    import signal

    import httpx

    from placement.serve.app import accepts_connections

    before = {p: pid for p in ports if (pid := _listener(p)) is not None}
    victim_port = min(before)
    survivors = set(before) - {victim_port}
    os.kill(before[victim_port], signal.SIGKILL)
    killed = time.perf_counter()
    with httpx.Client(timeout=1.0) as client:
        while time.perf_counter() - killed < timeout_s:
            for p in ports:
                if p in survivors or not accepts_connections(p):
                    continue
                try:
                    if client.post(f"http://127.0.0.1:{p}/v1/placements", json=body).status_code == 200:
                        took = time.perf_counter() - killed
                        _mark(f"replica on port {victim_port} (pid {before[victim_port]}) replaced: port {p} "
                              f"answered {took:.2f} s after the kill")
                        return took
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
    return float("inf")


def _floor_app(settings: "Settings") -> Any:  # no postponed annotations here: Serve re-reads the route's in the replica
    """Two deployments shaped like the service's (``settings``' replicas and CPUs) that do nothing."""
    from fastapi import FastAPI
    from ray import serve

    from benchmarks.bench_http import EchoRequest

    api = FastAPI()

    @serve.deployment
    class Idle:
        def ping(self) -> str:
            return "ok"

    @serve.deployment
    @serve.ingress(api)
    class Echo:
        def __init__(self, idle: object) -> None:
            self.idle = idle

        @api.post("/v1/placements")
        def place(self, body: EchoRequest) -> dict[str, str]:
            return {"target": body.target, "device": "cpu"}

    idle = Idle.options(ray_actor_options={"num_cpus": settings.learner_num_cpus}).bind()  # type: ignore[attr-defined]
    return Echo.options(num_replicas=settings.ingress_replicas,  # type: ignore[attr-defined]
                        ray_actor_options={"num_cpus": settings.ingress_num_cpus}).bind(idle)


if __name__ == "__main__":
    main()
