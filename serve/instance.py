"""One running ``placement serve`` instance: its record in the state directory, and how to stop it alone.

``placement serve`` writes ``<state dir>/serve.json`` once the service answers: the serving
process id, the URL, the Ray session folder and the process ids of the local Ray it started
(GCS, raylet, ...). ``placement stop`` reads it and stops **this instance only**: SIGINT to
the serving process (as Ctrl-C: it deletes the Serve app and shuts its Ray down),
then, if any recorded Ray process outlives it (the serving process was SIGKILLed), SIGTERM and
SIGKILL to those process ids -- never ``ray stop``, which kills every Ray process on the
host, other instances' and other users' included. Two instances side by side need their own
``PLACEMENT_STATE_DIR``, ``PLACEMENT_PORT`` and ``PLACEMENT_RAY_PROXY_PORT`` (README).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RECORD_NAME = "serve.json"


@dataclass(frozen=True)
class Instance:
    """What ``placement stop`` needs to find one instance's processes."""

    pid: int
    url: str
    started_at: float
    ray_session_dir: str = ""
    ray_pids: list[int] = field(default_factory=list)

    def write(self, state_dir: Path) -> Path:
        """Write the record into ``state_dir`` atomically (temporary file, then rename); returns its path."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / RECORD_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, state_dir: Path) -> Instance | None:
        """The record in ``state_dir``, or ``None`` when there is none; ``ValueError`` when the file
        is not a valid record."""
        path = state_dir / RECORD_NAME
        try:
            data = json.loads(path.read_text())
            return cls(pid=int(data["pid"]), url=str(data["url"]), started_at=float(data["started_at"]),
                       ray_session_dir=str(data.get("ray_session_dir", "")),
                       ray_pids=[int(p) for p in data.get("ray_pids", [])])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a placement instance record ({exc}); remove it") from exc


def local_ray_pids() -> tuple[str, list[int]]:
    """The Ray session folder and the process ids of the local Ray this process started (empty when
    it joined an existing cluster: those processes are not ours to stop)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    is_head = getattr(node, "is_head", None)
    if node is None or not (is_head() if callable(is_head) else is_head):
        return "", []
    pids = [proc.pid for _, proc in node.live_processes()]
    return str(node.get_session_dir_path()), sorted(int(p) for p in pids)


def clear(state_dir: Path, pid: int) -> None:
    """Remove the record if it is still this process's (a newer instance may have replaced it)."""
    try:
        found = Instance.read(state_dir)
    except ValueError:
        return
    if found is not None and found.pid == pid:
        (state_dir / RECORD_NAME).unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` is running (exists and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _is_ray_process(pid: int, session_dir: str) -> bool:
    """Guard against a recycled process id: the process must still be one of Ray's (its command line
    names ray, and the session when we know it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if "ray" not in cmdline:
        return False
    return not session_dir or Path(session_dir).name in cmdline or "gcs_server" in cmdline or "raylet" in cmdline


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if alive(p)]
    return left


def stop(state_dir: Path, *, timeout_s: float = 60.0) -> str:
    """Stop the instance recorded in ``state_dir``; returns what was done. Raises ``LookupError``
    when no instance is recorded there."""
    inst = Instance.read(state_dir)
    if inst is None:
        raise LookupError(f"no running instance recorded in {state_dir / RECORD_NAME} (start one with "
                          "`placement serve`; another state directory: --state-dir or PLACEMENT_STATE_DIR)")
    done = []
    if alive(inst.pid):
        os.kill(inst.pid, signal.SIGINT)  # as Ctrl-C (Ray's own SIGTERM handler would abort the drain)
        if _wait_gone([inst.pid], timeout_s):
            os.kill(inst.pid, signal.SIGKILL)
            done.append(f"serving process {inst.pid} did not stop in {timeout_s:.0f} s: killed")
        else:
            done.append(f"stopped serving process {inst.pid}")
    else:
        done.append(f"serving process {inst.pid} had already exited")
    ours = [p for p in inst.ray_pids if alive(p) and _is_ray_process(p, inst.ray_session_dir)]
    left = _wait_gone(ours, 10.0)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        left = _wait_gone(left, 10.0)
    if ours:
        done.append(f"stopped {len(ours)} leftover Ray process(es) of this instance")
    (state_dir / RECORD_NAME).unlink(missing_ok=True)
    return "; ".join(done)
