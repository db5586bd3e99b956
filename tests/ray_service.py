"""The whole placement service on its own Ray cluster, in its own process tree (a test helper, not a test).

``python -m tests.ray_service SETTINGS_JSON`` starts a private local Ray cluster
(``RAY_ADDRESS=local``: never the session's, never anyone else's) and deploys the app as
``placement serve`` does (:func:`placement.serve.app.start`), with ``PLACEMENT_TOKEN`` taken from its
environment the way an operator sets it. :class:`RayService` starts one and waits until it
answers; :meth:`RayService.kill` SIGKILLs every process of it at once (driver, GCS, raylet,
Serve controller, proxy, replicas, learner): the whole service dies with no shutdown code,
as in a power cut of the service (the machine's disk survives).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def _serve(settings_json: str) -> None:
    from placement.serve import app
    from placement.serve.settings import Settings

    settings = Settings.model_validate({**json.loads(settings_json), "token": os.environ.get("PLACEMENT_TOKEN")})
    app.start(settings, num_cpus=2, wait_s=300)  # RAY_ADDRESS=local: a new private cluster
    print("ready", flush=True)
    while True:
        time.sleep(3600)


class RayService:
    """One private Ray cluster serving the app on ``127.0.0.1:settings.port``; ``token`` reaches
    it only as ``PLACEMENT_TOKEN`` in the launching process's environment."""

    def __init__(self, settings: Any, token: str | None, *, start_timeout_s: float = 300.0) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env["RAY_ADDRESS"] = "local"  # never join the session's (or anyone's) cluster
        if token:
            env["PLACEMENT_TOKEN"] = token
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by kill())
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.ray_service", settings.model_dump_json(exclude={"token"})],
                                     cwd=ROOT, env=env, start_new_session=True, stdout=self._log,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray service exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"ray service on {self.url} did not answer within {start_timeout_s} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def processes(self) -> list[psutil.Process]:
        """Every live process of this service (the launcher and all its descendants)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> int:
        """SIGKILL every process of the service at once; returns how many were killed."""
        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in its session
        self.proc.wait(timeout=30)
        self._log.close()
        return len(procs)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.ray_service SETTINGS_JSON")
    _serve(sys.argv[1])


def ingest_until_killed(service: RayService, bodies: list[dict], headers: dict[str, str], *, kill_after: int,
                        threads: int = 4, timeout_s: float = 120.0) -> tuple[dict[str, str], int]:
    """Post feedback from ``threads`` clients; SIGKILL the whole service once ``kill_after`` are
    acknowledged. Returns ``(acknowledged decision id -> answer text, requests cut by the kill)``."""
    import threading

    acked: dict[str, str] = {}
    cut: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def ingest(part: list[dict]) -> None:
        with httpx.Client(base_url=service.url, timeout=30, headers=headers) as client:
            for body in part:
                if stop.is_set():
                    return
                try:
                    resp = client.post("/v1/feedback", json=body)
                except httpx.HTTPError as exc:  # the kill: no answer, so not acknowledged
                    with lock:
                        cut.append(type(exc).__name__)
                    return
                if resp.status_code == 200:
                    with lock:
                        acked[body["decision_id"]] = resp.text

    workers = [threading.Thread(target=ingest, args=(bodies[k::threads],)) for k in range(threads)]
    for t in workers:
        t.start()
    deadline = time.monotonic() + timeout_s
    while len(acked) < kill_after and time.monotonic() < deadline:
        time.sleep(0.005)
    service.kill()
    stop.set()
    for t in workers:
        t.join(timeout=60)
    return acked, len(cut)


def check_database(path: Path, acked: dict[str, str]) -> tuple[str, int, list[str]]:
    """``(PRAGMA integrity_check, feedback rows stored, acknowledged ids missing or changed)``,
    read by an independent SQLite connection."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = dict(conn.execute("SELECT decision_id, response_json FROM feedback").fetchall())
    lost = [d for d, text in acked.items() if rows.get(d) != text]
    return integrity, len(rows), lost
