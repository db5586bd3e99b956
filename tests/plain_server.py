"""The placement HTTP app without Ray, in its own process, on loopback (a test helper, not a test).

The app is exactly the one every Ray ingress replica serves (:func:`placement.serve.app.build_fastapi`
around a :class:`placement.serve.app.PlacementService`, same store, same placer), with an in-process
:class:`placement.serve.learning.learner.Learner` behind ``POST /v1/policy/update``. Tests use it where they
need to kill or confine *the whole service process* (SIGKILL, a full or read-only disk in a
private mount namespace) or to fuzz it with thousands of requests, without starting a
second Ray cluster (the session has one, ``serve_app`` in conftest).

Run as ``python -m tests.plain_server SETTINGS_JSON`` (the settings as JSON; the process
serves until killed). :class:`PlainServer` starts one and waits until ``/healthz`` answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plain_app(settings: Any, *, replica: str | None = None) -> tuple[Any, Any]:
    """``(app, service)``: the FastAPI app every Ray ingress replica serves, around a
    :class:`placement.serve.app.PlacementService` with an in-process learner behind
    ``POST /v1/policy/update``. The plain server process serves it with uvicorn; the in-process
    HTTP tests (``tests/test_http_app.py``) call it through FastAPI's ``TestClient``. The caller
    ends the service's background threads with ``service.close()``."""
    from placement.serve.app import PlacementService, build_fastapi
    from placement.serve.learning.learner import Learner
    from placement.serve.storage.store import Store

    learner = Learner(settings, Store.from_settings(settings))

    async def update() -> dict[str, Any]:
        return (await asyncio.to_thread(learner.update)).model_dump(mode="json")

    service = PlacementService(settings, learner=update, replica=replica or f"plain-{os.getpid()}")
    return build_fastapi(service), service


def _serve(settings_json: str) -> None:
    import uvicorn

    from placement.serve.settings import Settings

    settings = Settings.model_validate_json(settings_json)
    app, _ = plain_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


class PlainServer:
    """One plain service process on ``127.0.0.1:settings.port``.

    ``wrap``: a shell prefix run before the server (e.g. mounting a small tmpfs in a private
    mount namespace); the whole command then runs under ``unshare_args`` (a list, e.g.
    ``["unshare", "-Urm"]``) so mounts vanish with the process. ``stop()`` ends it (SIGTERM),
    ``kill()`` sends SIGKILL to the whole process group."""

    def __init__(self, settings: Any, *, wrap: str = "", unshare_args: list[str] | None = None,
                 start_timeout_s: float = 120.0) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.port}"
        cmd = [sys.executable, "-m", "tests.plain_server", settings.model_dump_json()]
        if wrap or unshare_args:
            script = (wrap + "\n" if wrap else "") + "exec " + shlex.join(cmd)
            cmd = [*(unshare_args or []), "sh", "-ec", script]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=self._log,
                                     stderr=subprocess.STDOUT, text=True)
        self.wait_healthy(start_timeout_s)

    def output(self) -> str:
        """What the process printed so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"plain server exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"plain server on {self.url} did not answer within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the server's process group (no shutdown code runs)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def __enter__(self) -> PlainServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def user_namespaces_work() -> bool:
    """Whether ``unshare -Urm`` can mount a tmpfs here (rootless mount namespaces)."""
    try:
        out = subprocess.run(["unshare", "-Urm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d "
                              "&& echo ok"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "ok"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.plain_server SETTINGS_JSON")
    json.loads(sys.argv[1])  # fail early on a bad argument
    _serve(sys.argv[1])
