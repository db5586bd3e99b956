"""Two Ray nodes on one machine (a head and a worker, each started with ``ray start`` with its own
CPUs) running the app from serve/config.yaml against one PostgreSQL store: placer replicas on
both nodes, the learner on one; query -> feedback -> learner update -> the new version served by
the replicas of both nodes, through both nodes' stable addresses (HAProxy ingress); then the worker
node stopped, its replica replaced on the head, the head's address answering throughout."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from placement.core.catalogue import get_target
from placement.serve.cluster import LocalCluster, answering_replicas
from placement.serve.settings import Settings
from tests.conftest import ServeWorld, _free_port_block

pytestmark = pytest.mark.ray  # a two-node Ray cluster of its own
TARGET = get_target("B")
TOKEN = "cluster-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _wait_healthy(url: str, timeout_s: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = httpx.get(f"{url}/healthz", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer /healthz within {timeout_s:.0f} s")
        time.sleep(0.5)


@pytest.mark.slow
def test_two_nodes_share_the_store_and_serve_the_new_version(postgres_server, serve_model_dir, tmp_path):
    base = _free_port_block(48)
    settings = Settings(
        state_dir=tmp_path / "state", model_path=serve_model_dir, port=base, ray_proxy_port=base + 20, token=TOKEN,
        db_url=postgres_server.new_database(), exploration_rate=0.2, explore_band=0.45,
    )
    # 40 % held out (the default is 25 %): the two replicas' exploration draws depend on how requests
    # are routed, so the logged data differ run to run; with ~72 held-out rows the gate rejected 1 of 6
    # routings in process (and one CI run), with ~110-145 none of 5 (lower ends of the gain's interval
    # +0.022 to +0.053; /tmp scripts replaying this test's traffic through two library placers)
    learner_args = {"learn_interval_s": 3600, "ppo_timesteps": 8192, "history_window": 300, "min_holdout": 8,
                    "min_feedback_per_update": 64, "policy_poll_s": 0.5, "exploration_rate": 0.2,
                    "explore_band": 0.45, "db_synchronous": "normal", "holdout_fraction": 0.4,
                    # this test is of the cluster's path (query, feedback, update, the new version on both nodes),
                    # not of the gate's power (tests/test_learner.py, tests/test_offpolicy.py): a positive
                    # estimated gain whose 90 % lower bound is within 0.05 of the serving estimate promotes.
                    # Without it CI rejected a candidate in session 13 (gain +0.066, interval [-0.006, +0.139]).
                    "gate_tolerance": 0.05}
    world = ServeWorld(seed=0)
    with LocalCluster(settings, n_workers=1, cpus_per_node=1) as cluster:
        # the cluster is recorded in its own temp dir, never where a bare ray.init() elsewhere would join it
        default = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        assert not default.exists() or f":{cluster.gcs_port}" not in default.read_text()
        cluster.deploy(cluster.config(overrides=learner_args))
        head_url, worker_url = cluster.urls
        for url in cluster.urls:
            _wait_healthy(url)
        deadline = time.monotonic() + 240
        while len(replicas := answering_replicas(settings)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        nodes = {h["node"] for h in replicas.values()}
        assert len(replicas) == 2 and len(nodes) == 2, f"placer replicas not on both nodes: {replicas}"

        jobs = world.jobs(1500)
        speedup = np.array([world.speedup(j, TARGET) for j in jobs])
        marginal = [j for j, s in zip(jobs, speedup, strict=True) if 2.6 < s < 5.5]
        clear_gpu = [j for j, s in zip(jobs, speedup, strict=True) if s > 12]
        clear_cpu = [j for j, s in zip(jobs, speedup, strict=True) if s < 1.2]
        probe = [j.model_dump() for j in marginal[150:230]]
        mix = marginal[:150] + clear_gpu[:75] + clear_cpu[:75]
        mix = [mix[i] for i in np.random.default_rng(2).permutation(len(mix))]

        # query and feedback alternate between the two nodes' addresses; both write the one store
        with httpx.Client(timeout=120, headers=AUTH) as c:
            served_by: set[str] = set()
            for slowdown in (1.0, 3.0):  # then drift: every GPU run is 3x slower
                world.gpu_slowdown = slowdown
                for k, job in enumerate(mix):
                    url = (head_url, worker_url)[k % 2]
                    r = c.post(f"{url}/v1/placements", json={"job": job.model_dump(), "target": "B"})
                    assert r.status_code == 200, r.text
                    (d,) = r.json()["decisions"]
                    # both devices reported (the client measured the other one too): the gate's estimate
                    # then rests on measured rewards of both actions, not on which replica explored what,
                    # so the promotion does not depend on how the two nodes' HAProxies routed the requests
                    # (with the chosen device alone CI saw it rejected twice, sessions 5 and 9: gain about
                    # +0.05, its 90 % interval reaching below 0)
                    other = "cpu" if d["device"] == "gpu" else "gpu"
                    fb = c.post(f"{(worker_url, head_url)[k % 2]}/v1/feedback", json={
                        "decision_id": d["decision_id"], "outcome": world.outcome(job, TARGET, d["device"]),
                        "other_outcome": world.outcome(job, TARGET, other)})
                    assert fb.status_code == 200, fb.text
                    if k < 40:
                        served_by.add(c.get(f"{url}/healthz").json()["node"])
            assert served_by == nodes, "each stable address reaches replicas on both nodes"
            policy = c.get(f"{worker_url}/v1/policy").json()
            assert policy["feedback"]["total"] == 2 * len(mix)
            old = policy["version"]

            report = c.post(f"{head_url}/v1/policy/update").json()
            assert report["status"] == "promoted", report
            new = report["candidate_version"]

            # every replica, on both nodes, serves the new version (they poll the shared store)
            deadline = time.monotonic() + 60
            while {h["policy_version"] for h in answering_replicas(settings).values()} != {new}:
                assert time.monotonic() < deadline, answering_replicas(settings)
                time.sleep(0.5)
            for url in cluster.urls:
                out = c.post(f"{url}/v1/placements", json={"jobs": probe, "target": "B", "explore": False}).json()
                assert out["policy_version"] == new != old
                share = float(np.mean([d["device"] == "gpu" for d in out["decisions"]]))
                assert share < 0.3, f"marginal jobs on GPU after the drift update: {share:.2f}"

            # the worker node stopped (SIGKILL: its replica, raylet and HAProxy): the head's stable
            # address keeps answering, and Serve places the lost replica on the head (the replicas are
            # spread by Serve's soft SPREAD, not pinned one per node), which serves the new version.
            # The time this takes is measured by benchmarks/bench_two_nodes.py, not asserted here.
            before = answering_replicas(settings)
            cluster.stop(cluster.nodes[1], sig=signal.SIGKILL, grace_s=0.0)
            assert c.post(f"{head_url}/v1/placements", json={"job": probe[0], "target": "B"}).status_code == 200
            deadline = time.monotonic() + 120
            while True:
                now = answering_replicas(settings)
                fresh = {h["replica"] for h in now.values()} - {h["replica"] for h in before.values()}
                if len(now) >= 2 and fresh:
                    break
                assert time.monotonic() < deadline, f"the stopped node's replica was not replaced: {now}"
                time.sleep(0.5)
            assert len({h["node"] for h in now.values()}) == 1, f"both replicas on the surviving node: {now}"
            assert {h["policy_version"] for h in now.values()} == {new}
