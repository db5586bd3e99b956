"""Shared fixtures. Heavy shared resources (a Ray cluster) are started once per session."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

os.environ.setdefault("PLACEMENT_TEST", "1")

# property tests draw the same cases on every run (no example database carried between runs)
settings.register_profile("placement", derandomize=True, database=None)
settings.load_profile("placement")

RAY_FIXTURES = frozenset({"serve_app"})
"""Fixtures that start Ray: a test using one (directly or through another fixture) is marked ``ray``."""
POSTGRES_FIXTURES = frozenset({"postgres_server"})
"""Fixtures that start PostgreSQL: a test using one, or ``store_location``'s ``postgresql`` case, is marked ``postgres``."""


def pytest_collection_modifyitems(config, items):
    """The markers that follow from a test's fixtures (``make test-fast`` deselects them; pyproject.toml
    declares them). ``slow`` and ``server`` are set in the test files."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & RAY_FIXTURES:
            item.add_marker(pytest.mark.ray)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if used & POSTGRES_FIXTURES or params.get("store_location") == "postgresql":
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def example_job():
    from placement.core.job import Job

    return Job(
        name="resnet18",
        family="cnn",
        mode="train",
        batch_size=64,
        flops_per_batch=3 * 3.64e9 * 64,
        param_count=11_230_000,
        input_elems_per_sample=3 * 224 * 224,
        input_bytes_per_sample=3 * 224 * 224 * 4,
    )


# --- serve: a trained model, a simulated world of job outcomes, one Ray Serve app per session ---


@pytest.fixture(scope="session")
def serve_model_dir(tmp_path_factory):
    """A small placement model trained for the serve tests: the supervised DNN on a simulated
    trace of 300 jobs on catalogue targets A, B (desktop) and agx-orin (edge), seed 0."""
    import torch

    from placement.agents.dnn import DnnConfig
    from placement.agents.training import TrainSettings, train_from_traces
    from placement.core.catalogue import get_target
    from placement.model.simulate import write_simulated

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("serve_model")
    targets = [get_target(t) for t in ("A", "B", "agx-orin")]
    trace = write_simulated(root / "sim.parquet", targets, 300, seed=0, core_grid=(1, 2, 4), cap_fracs=(0.5,))
    settings = TrainSettings(seed=0, cv_folds=0, threads=1, dnn=DnnConfig(max_epochs=80), version="serve-test-dnn")
    return train_from_traces([trace], root / "model", settings).path


class ServeWorld:
    """Outcomes of placed jobs, as a client would measure them: the performance model with
    noise stands in for real runs (energy 'modelled'); ``gpu_slowdown`` scripts drift."""

    def __init__(self, seed: int = 0) -> None:
        import numpy as np

        from placement.model.perfmodel import PerformanceModel

        self.model = PerformanceModel()
        self.rng = np.random.default_rng(seed)
        self.gpu_slowdown = 1.0

    def outcome(self, job, target, device: str, noise: bool = True) -> dict:
        import numpy as np

        from placement.model.perfmodel import model_columns

        pred = self.model.predict_columns(model_columns(job, target), device, np.nan, np.nan, self.rng if noise else None)
        if not pred.feasible[0]:
            return {"device": device, "feasible": False, "infeasible_reason": str(pred.infeasible_reason[0])}
        t = float(pred.time_per_batch_s[0]) * (self.gpu_slowdown if device == "gpu" else 1.0)
        out = {"device": device, "n_samples": job.batch_size, "time_total_s": t,
               "avg_cpu_power_w": float(pred.avg_cpu_power_w[0]), "cpu_power_method": "modelled"}
        if device == "gpu":
            out.update(avg_gpu_power_w=float(pred.avg_gpu_power_w[0]), gpu_power_method="modelled")
        return out

    def speedup(self, job, target) -> float:
        cpu = self.outcome(job, target, "cpu", noise=False)
        gpu = self.outcome(job, target, "gpu", noise=False)
        if "time_total_s" not in cpu or "time_total_s" not in gpu:
            return float("nan")
        return cpu["time_total_s"] / gpu["time_total_s"]

    def jobs(self, n: int, seed: int = 5) -> list:
        import numpy as np

        from placement.core.job import Job
        from placement.model.simulate import generate_jobs

        frame = generate_jobs(n, np.random.default_rng(seed))
        return [
            Job(name=r.model, family=r.family, mode=r.mode, batch_size=r.batch_size, flops_per_batch=r.flops_per_batch,
                param_count=r.param_count, input_elems_per_sample=r.input_elems_per_sample,
                input_bytes_per_sample=r.input_bytes_per_sample)
            for r in frame.itertuples()
        ]


@pytest.fixture
def serve_world():
    return ServeWorld(seed=0)


class ServeApp:
    """The session's Ray Serve app. ``url`` is a direct-ingress replica that answers now: a
    replica Ray replaced (after a redeploy, a kill or a failed health check) may listen on the
    next free port of the range, so a stale URL is rediscovered instead of refused."""

    def __init__(self, *, url: str, proxy_url: str, settings, token: str, headers: dict[str, str], module,
                 client_token: str | None = None) -> None:
        self._url, self.proxy_url, self.settings, self.token, self.headers, self.module = (
            url, proxy_url, settings, token, headers, module)
        self.client_token = client_token

    @property
    def url(self) -> str:
        import httpx

        try:
            if httpx.get(f"{self._url}/healthz", timeout=2).status_code == 200:
                return self._url
        except httpx.HTTPError:
            pass
        found = self.module.wait_for_replicas(self.settings, expected=1, timeout_s=120)
        self._url = f"http://127.0.0.1:{min(found)}"
        return self._url

    @url.setter
    def url(self, value: str) -> None:
        self._url = value


def _free_port_block(size: int) -> int:
    """A base port with ``size`` consecutive free ports on 127.0.0.1 (random start, so parallel runs differ)."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 29_000)
        try:
            socks = []
            for p in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port block on 127.0.0.1")


@pytest.fixture(scope="session")
def serve_app(tmp_path_factory, serve_model_dir):
    """One real Ray Serve instance of the placement app for the whole session (loopback only).

    Yields a namespace: ``url`` (direct ingress), ``proxy_url`` (Ray's HTTP proxy), ``settings``,
    ``token`` and ``headers`` (bearer auth), ``client_token`` (client ``team-e2e`` of its
    ``client_tokens_file``). Learner updates run on demand (POST /v1/policy/update)."""
    from placement.serve import app as serve_app_module
    from placement.serve.settings import Settings

    base = _free_port_block(24)
    token = "e2e-test-token-0123456789"
    client_token = "e2e-client-token-0123456789"
    state = tmp_path_factory.mktemp("serve_state")
    clients = state / "client_tokens"
    clients.write_text(f"team-e2e {client_token}\n")
    clients.chmod(0o600)
    settings = Settings(
        state_dir=state, model_path=serve_model_dir, port=base, client_tokens_file=clients,
        ray_proxy_port=base + 20, token=token, exploration_rate=0.2, explore_band=0.45, learn_interval_s=3600,
        ppo_timesteps=8192, history_window=300, min_holdout=8, policy_poll_s=0.5, max_body_bytes=4 * 2**20,
        max_batch_jobs=20_000,
        # 40 % held out (default 25 %): with ~72 held-out rows the gate rejected the drift test's candidate
        # in 3 of 7 runs (gain +0.05..+0.06, interval's lower end just below 0); as in tests/test_cluster.py
        holdout_fraction=0.4,
    )
    saved_env = dict(os.environ)
    url = serve_app_module.start(settings, num_cpus=2, wait_s=180)
    yield ServeApp(url=url, proxy_url=f"http://127.0.0.1:{settings.ray_proxy_port}", settings=settings,
                   token=token, headers={"Authorization": f"Bearer {token}"}, module=serve_app_module,
                   client_token=client_token)
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    os.environ.clear()
    os.environ.update(saved_env)


# --- the store on both engines: embedded SQLite and a real PostgreSQL server (one per session) ---


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (tests/postgres_server.py); skipped, naming
    what to install, only where no PostgreSQL server binaries exist."""
    from tests.postgres_server import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres): install PostgreSQL (Debian/Ubuntu: "
                    "apt-get install postgresql; macOS: brew install postgresql) or set PLACEMENT_PG_BINDIR")
    server = PostgresServer(bindir)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path):
    """Where a test's store lives: an SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return tmp_path / "placement.db"
    return request.getfixturevalue("postgres_server").new_database()
