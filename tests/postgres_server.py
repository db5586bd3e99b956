"""A throwaway PostgreSQL server for the tests (a test helper, not a test).

:class:`PostgresServer` runs ``initdb`` in a fresh temporary directory and starts
``postgres`` on a free loopback port (trust authentication, role ``placement``); ``stop()``
shuts it down (``pg_ctl stop -m fast``, i.e. this server's own postmaster) and deletes the
directory. PostgreSQL refuses to run as root, so under root (CI on a fresh clone) the
directory is handed to the ``postgres`` user (or ``nobody``) and the server runs through
``runuser -u USER --``.

Binaries: ``PLACEMENT_PG_BINDIR``, else ``pg_config --bindir``, else the newest
``/usr/lib/postgresql/*/bin`` (Debian), else ``initdb`` on ``PATH``. :func:`find_bindir`
returns None where there are none; the store tests then skip their PostgreSQL half naming
what to install.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    candidates: list[Path] = []
    if os.environ.get("PLACEMENT_PG_BINDIR"):
        candidates.append(Path(os.environ["PLACEMENT_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if
                    p.parent.name.isdigit() else 0, reverse=True)
    candidates.extend(debian)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for c in candidates:
        if all((c / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return c
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server on ``127.0.0.1:port`` in a temporary directory, until :meth:`stop`."""

    def __init__(self, bindir: Path, *, start_timeout_s: int = 60) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="placement-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres"
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                user, entry = "nobody", pwd.getpwnam("nobody")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._prefix = ["runuser", "-u", user, "--"]
        self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", "placement", "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-instructions"])
        last = ""
        for _ in range(5):  # a port taken between choosing and binding: try another
            self.port = _free_port()
            opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                    "-c shared_buffers=32MB")
            proc = subprocess.run(
                [*self._prefix, str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                 "-t", str(start_timeout_s), "-o", opts, "start"], capture_output=True, text=True)
            if proc.returncode == 0:
                break
            last = proc.stdout + proc.stderr + (self.log.read_text() if self.log.exists() else "")
        else:
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {last}")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self.admin_url = f"postgresql://placement@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        proc = subprocess.run([*self._prefix, *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stdout}{proc.stderr}")

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://placement@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self._prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                            "stop"], capture_output=True, text=True, timeout=60)
        deadline = time.monotonic() + 10
        while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
