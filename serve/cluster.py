"""A Ray cluster of several nodes on one machine, started with ``ray start``, running the app from a Serve config.

:class:`LocalCluster` starts a head node and ``n_workers`` worker nodes, each a ``ray start
--block`` process with its own CPU resources, ports and HAProxy files, all on 127.0.0.1, and
deploys ``serve/config.yaml`` (with overrides: ports, database, replicas) through ``serve
deploy``, as an operator would on real machines. Every node runs Ray Serve's HAProxy ingress:
the head's on ``settings.port``, worker ``i``'s on ``settings.port + 40 + i`` (one machine
cannot bind one port twice); each routes to the placer replicas on every node. The nodes must
share a database: give ``settings.db_url`` (PostgreSQL).

It exists to try the cluster setup on one machine and for the two-node test and benchmark;
on real machines, follow the README's "Cluster" section instead. :meth:`LocalCluster.stop`
ends exactly the processes it started (by process id; never ``ray stop``, which would end
every Ray process of the host).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from placement.serve.app import haproxy_state_dir, ray_env
from placement.serve.settings import Settings

CONFIG_YAML = Path(__file__).resolve().parent / "config.yaml"
WORKER_PORT_OFFSET = 40
"""Worker node ``i``'s HAProxy listens on ``settings.port + WORKER_PORT_OFFSET + i``."""


def _free_ports(n: int, avoid: range = range(0)) -> list[int]:
    """``n`` ports free on 127.0.0.1 now, drawn below the kernel's ephemeral range (32768+),
    where outgoing connections would take them between choosing and binding."""
    import random

    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(10_000, 30_000)
        if port in ports or port in avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def answering_replicas(settings: Settings) -> dict[int, dict[str, Any]]:
    """Every placer replica answering ``/healthz`` on its own (internal) port: port -> its answer
    (``node`` says which Ray node it runs on)."""
    import httpx

    from placement.serve.app import ingress_ports

    found = {}
    for port in ingress_ports(settings):
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.HTTPError:
            continue
        if r.status_code == 200:
            found[port] = r.json()
    return found


@dataclass
class Node:
    """One Ray node of a :class:`LocalCluster`: its role (``head``, ``workerN``), process, log file,
    ingress port and environment."""

    role: str
    proc: subprocess.Popen
    log: Path
    ingress_port: int
    env: dict[str, str] = field(repr=False)


class LocalCluster:
    """Head + ``n_workers`` workers on this machine (``cpus_per_node`` logical CPUs each)."""

    def __init__(self, settings: Settings, *, n_workers: int = 1, cpus_per_node: float = 1,
                 root: Path | None = None) -> None:
        if not settings.db_url:
            raise ValueError("nodes share the database: set db_url (PostgreSQL) for a cluster")
        self.settings = settings
        self.n_workers = n_workers
        self.cpus_per_node = cpus_per_node
        self.root = Path(root or tempfile.mkdtemp(prefix="placement-cluster-"))
        self.nodes: list[Node] = []
        self._avoid = range(settings.port, settings.port + 64)  # the service's own ports (serve/app.py ray_env)
        self.gcs_port, self.dashboard_port = _free_ports(2, self._avoid)
        self.address = f"127.0.0.1:{self.gcs_port}"
        # Ray's token authentication: one token for every node and client of this cluster
        self.auth_token = secrets.token_hex(32)
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"

    # -- nodes -------------------------------------------------------------------------------
    def _node_env(self, index: int) -> dict[str, str]:
        env = {**os.environ, **ray_env(self.settings), "RAY_DISABLE_USAGE_STATS": "1",
               "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.auth_token,
               # a raylet registering with the GCS on a loaded machine may need more than Ray's default
               "RAY_raylet_start_wait_time_s": "180",
               "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")) if p)}
        if index > 0:  # a worker: its own HAProxy port, ports and files on the shared machine
            state = Path(f"{haproxy_state_dir(self.settings)}-node{index}")
            stats, metrics = _free_ports(2, self._avoid)
            env.update({
                "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(self.settings.port + WORKER_PORT_OFFSET + index - 1),
                "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
                "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
                "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state / "haproxy.cfg"),
                "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state / "admin.sock"),
                "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state),
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state / "server-state"),
            })
        return env

    def _start_node(self, index: int) -> Node:
        ports = _free_ports(8, self._avoid)
        role = "head" if index == 0 else f"worker{index}"
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--node-ip-address", "127.0.0.1",
               "--num-cpus", str(self.cpus_per_node), "--resources", json.dumps({f"placement_{role}": 1}),
               "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
               "--dashboard-agent-listen-port", str(ports[2]), "--dashboard-agent-grpc-port", str(ports[3]),
               "--runtime-env-agent-port", str(ports[4]), "--metrics-export-port", str(ports[5]),
               "--min-worker-port", "0", "--max-worker-port", "0", "--disable-usage-stats",
               "--object-store-memory", str(200 * 2**20)]
        if index == 0:
            # its own temp dir: `ray start` records the cluster's address in <temp dir>/ray_current_cluster,
            # and a bare ray.init() anywhere on the host (other services, test sessions) would join
            # a cluster recorded in the default /tmp/ray
            cmd += ["--head", "--temp-dir", str(self.root / "ray"), "--port", str(self.gcs_port),
                    "--ray-client-server-port", str(ports[6]),
                    "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(self.dashboard_port)]
        else:
            cmd += ["--address", self.address]
        env = self._node_env(index)
        log = self.root / f"{role}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        port = self.settings.port if index == 0 else self.settings.port + WORKER_PORT_OFFSET + index - 1
        node = Node(role, proc, log, port, env)
        self.nodes.append(node)
        return node

    def _wait_started(self, node: Node, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"ray start ({node.role}) exited: {node.log.read_text()[-3000:]}")
            if "block forever" in node.log.read_text():
                return
            time.sleep(0.3)
        raise TimeoutError(f"ray start ({node.role}) not up in {timeout_s:.0f} s: {node.log.read_text()[-3000:]}")

    def start(self, timeout_s: float = 180.0) -> LocalCluster:
        """Start the head, then each worker, waiting up to ``timeout_s`` (s) for each; on any
        failure stop what started and re-raise. Returns the cluster."""
        try:
            self._wait_started(self._start_node(0), timeout_s)
            for i in range(1, self.n_workers + 1):
                self._wait_started(self._start_node(i), timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    # -- the app -------------------------------------------------------------------------------
    def config(self, *, ingress_replicas: int | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """``serve/config.yaml`` with this cluster's ports, database and state directory (and ``overrides``
        of the application's args). The placer replicas spread over the nodes by Serve's default (SPREAD)
        scheduling, one per node while every node has room; not a hard ``max_replicas_per_node`` = 1,
        which would leave a stopped node's replica unplaceable until the node returns."""
        data = yaml.safe_load(CONFIG_YAML.read_text())
        s = self.settings
        replicas = ingress_replicas or self.n_workers + 1
        data["http_options"] = {"host": "127.0.0.1", "port": s.port}
        (app,) = data["applications"]
        app["args"].update({"port": s.port, "ray_proxy_port": s.ray_proxy_port, "state_dir": str(s.state_dir),
                            "db_path": None, "db_url": s.db_url, "ingress_replicas": replicas,
                            "model_path": None if s.model_path is None else str(s.model_path),
                            **(overrides or {})})
        if s.token_digest:
            app["args"]["token_sha256"] = s.token_digest
        for dep in app["deployments"]:
            if dep["name"] == "PlacementIngress":
                dep["num_replicas"] = replicas
                dep.pop("user_config", None)
                dep["user_config"] = {"exploration_rate": app["args"].get("exploration_rate", s.exploration_rate),
                                      "explore_band": app["args"].get("explore_band", s.explore_band)}
        return data

    def deploy(self, config: dict[str, Any]) -> Path:
        """``serve deploy`` the config through the head's dashboard (as on real machines)."""
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        env = {**self.nodes[0].env}
        proc = subprocess.run([sys.executable, "-m", "ray.serve.scripts", "deploy", str(path), "--address",
                               self.dashboard_url], env=env, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"serve deploy failed: {proc.stdout}{proc.stderr}")
        return path

    @property
    def urls(self) -> list[str]:
        """Every node's stable address (its HAProxy ingress)."""
        return [f"http://127.0.0.1:{n.ingress_port}" for n in self.nodes]

    # -- stop ------------------------------------------------------------------------------------
    def stop(self, node: Node | None = None, *, sig: int = signal.SIGTERM, grace_s: float = 15.0) -> None:
        """End the processes this cluster started (one node, or all, workers first): ``sig`` to the
        node's ``ray start`` process and every process under it, by id; SIGKILL what is left."""
        import psutil

        targets = [node] if node is not None else list(reversed(self.nodes))
        for n in targets:
            try:
                parent = psutil.Process(n.proc.pid)
                procs = [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                procs = []
            for p in reversed(procs):  # children first, the `ray start` process last
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(sig)
            _, alive = psutil.wait_procs(procs, timeout=grace_s)
            for p in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                n.proc.wait(timeout=10)
            if n in self.nodes:
                self.nodes.remove(n)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
