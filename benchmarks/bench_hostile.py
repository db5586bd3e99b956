"""Hostile clients and faults against the whole service on Ray Serve, on loopback: the figures of docs/reliability.md.

    PYTHONPATH=$PWD python benchmarks/bench_hostile.py --out results/reliability/bench_hostile.json

Starts the service as ``placement serve`` does, on a private Ray cluster of its own
(:mod:`tests.ray_service`; default settings except the state directory, the ports, the token
and the learner cadence), then measures in one run:

1. **big body**: ``Content-Length`` 100 MiB, the body streamed at once: time to the status line
   (``--big-trials`` times), and the replica's RSS before and after;
2. **slow flood**: ``--slow`` connections sending bodies a byte a second from 250 loopback
   addresses, reopened when refused, for ``--flood-s`` seconds; meanwhile a well-behaved client
   (127.0.0.2) probes ``/healthz`` every 50 ms (new connection each) and places a job every 5th
   probe: latencies, statuses, the replica's RSS;
3. **generated requests**: schemathesis stateless (every operation, positive and negative,
   ``--per-operation`` each) and stateful (``--scenarios`` sequences along the schema's links
   placements -> feedback -> update -> policy / rollback): statuses, 5xx, failed checks;
4. **SIGKILL rounds**: ``--rounds`` times: place 400 jobs, post their feedback from 4 clients,
   SIGKILL every process of the service once ``--kill-after`` are acknowledged, check the
   database (``PRAGMA integrity_check``, every acknowledged answer present byte for byte),
   start the service again on the same database.

Everything binds 127.0.0.1 and stops by itself; the private cluster is killed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from placement.core.catalogue import get_target  # noqa: E402
from placement.core.version import code_version  # noqa: E402
from placement.serve.settings import Settings  # noqa: E402
from tests.conftest import ServeWorld, _free_port_block  # noqa: E402
from tests.hostile_clients import big_body, fuzz_stateful, fuzz_stateless, probe, slow_flood  # noqa: E402
from tests.ray_service import RayService, check_database, ingest_until_killed  # noqa: E402

TOKEN = "bench-hostile-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def _listener_rss(service: RayService, ports: range | list[int]) -> float:
    """The largest RSS in MiB of the service's processes listening on one of ``ports``: the ingress
    replicas on their own (internal) ports. (The service port itself is HAProxy's, which holds
    no request bodies: a body is parsed in a replica.)"""
    wanted = set(ports)
    found = []
    for p in service.processes():
        try:
            if any(c.laddr and c.laddr.port in wanted and c.status == psutil.CONN_LISTEN for c in p.net_connections("tcp")):
                found.append(p.memory_info().rss / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return max(found) if found else float("nan")


def _q(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q)) * 1000 if values else float("nan")


def _settings(state: Path) -> Settings:
    base = _free_port_block(24)
    return Settings(state_dir=state, port=base, ray_proxy_port=base + 20, learn_interval_s=3600, ppo_timesteps=256,
                    policy_poll_s=1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "reliability" / "bench_hostile.json")
    ap.add_argument("--slow", type=int, default=1000)
    ap.add_argument("--flood-s", type=float, default=30.0)
    ap.add_argument("--big-trials", type=int, default=10)
    ap.add_argument("--per-operation", type=int, default=400)
    ap.add_argument("--scenarios", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kill-after", type=int, default=150)
    ap.add_argument("--skip", nargs="*", default=[], choices=["big", "flood", "fuzz", "sigkill"])
    args = ap.parse_args()

    state = Path(tempfile.mkdtemp(prefix="bench_hostile_"))
    out: dict = {"command": " ".join(["python", *sys.argv]), "code_version": code_version(),
                 "host": {"platform": platform.platform(), "cpus": psutil.cpu_count(), "python": platform.python_version()},
                 "settings": "defaults (limits, timeouts, caps) except state_dir, ports, token, learn_interval_s=3600, "
                             "ppo_timesteps=256, policy_poll_s=1"}
    settings = _settings(state / "a")
    service = RayService(settings, TOKEN)
    port = settings.port
    from placement.serve.app import ingress_ports

    replica_ports = ingress_ports(settings)
    try:
        if "big" not in args.skip:
            rss0 = _listener_rss(service, replica_ports)
            trials = [big_body(port, 100 * 2**20) for _ in range(args.big_trials)]
            rss1 = _listener_rss(service, replica_ports)
            times = [t for _, t in trials]
            out["big_body"] = {"bytes": 100 * 2**20, "trials": len(trials), "statuses": sorted({s for s, _ in trials}),
                               "ms_p50": _q(times, 0.5), "ms_max": max(times) * 1000, "replica_rss_mib_before": rss0,
                               "replica_rss_mib_after": rss1}
            print("big body:", out["big_body"], flush=True)
        if "flood" not in args.skip:
            rss0 = _listener_rss(service, replica_ports)
            load0 = os.getloadavg()
            thread, stats, ready = slow_flood(port, args.slow, duration_s=args.flood_s + 15)
            opened = ready.wait(60)
            seen = probe(settings_url(settings), args.flood_s, address="127.0.0.2")
            rss1 = _listener_rss(service, replica_ports)
            load1 = os.getloadavg()
            thread.join(120)
            out["slow_flood"] = {
                "slow_connections": args.slow, "all_opened": opened, "open_min_during_probe": stats.open_min,
                "open_median": float(np.median(stats.open_samples)) if stats.open_samples else None,
                "slow_connection_answers": stats.statuses, "slow_closed_without_answer": stats.closed_without_answer,
                "probe_s": args.flood_s, "healthz_n": len(seen.health_s), "healthz_statuses": seen.health_status,
                "healthz_ms_p50": _q(seen.health_s, 0.5), "healthz_ms_p99": _q(seen.health_s, 0.99),
                "healthz_ms_max": max(seen.health_s) * 1000, "placements_n": len(seen.place_s),
                "placement_statuses": seen.place_status, "placement_ms_p50": _q(seen.place_s, 0.5),
                "placement_ms_p99": _q(seen.place_s, 0.99), "replica_rss_mib_before": rss0, "replica_rss_mib_during": rss1,
                "host_load_avg_1_5_15_before": load0, "host_load_avg_1_5_15_after": load1,
            }
            print("slow flood:", out["slow_flood"], flush=True)
        if "fuzz" not in args.skip:
            t0 = time.monotonic()
            failures: list[str] = []
            stateless = fuzz_stateless(settings_url(settings), HEADERS, per_operation=args.per_operation,
                                       failures=failures)
            ops: dict[str, int] = {}
            stateful = fuzz_stateful(settings_url(settings), HEADERS, scenarios=args.scenarios, steps=8, by_operation=ops)
            total = sum(stateless.values()) + sum(stateful.values())
            out["fuzz"] = {"cases": total, "stateless_statuses": stateless, "stateful_calls": sum(stateful.values()),
                           "stateful_statuses": stateful, "stateful_by_operation": ops,
                           "server_errors_5xx": sum(n for s, n in {**stateless}.items() if s >= 500)
                           + sum(n for s, n in stateful.items() if s >= 500),
                           "failed_checks": len(failures), "failed_check_examples": failures[:10],
                           "seconds": round(time.monotonic() - t0, 1)}
            print("fuzz:", {k: v for k, v in out["fuzz"].items() if k != "stateful_by_operation"}, flush=True)
    finally:
        service.kill()

    if "sigkill" not in args.skip:
        world = ServeWorld(11)
        target = get_target("B")
        rounds = []
        db_state = state / "sigkill"
        for k in range(args.rounds):
            s = _settings(db_state)
            t0 = time.monotonic()
            svc = RayService(s, TOKEN)
            started_s = time.monotonic() - t0
            try:
                leaks = []
                for p in svc.processes()[1:]:
                    try:
                        with open(f"/proc/{p.pid}/environ", "rb") as f:
                            if TOKEN.encode() in f.read():
                                leaks.append(p.name())
                    except OSError:
                        continue
                jobs = world.jobs(400, seed=1000 + k)
                with httpx.Client(base_url=svc.url, timeout=120, headers=HEADERS) as c:
                    r = c.post("/v1/placements", json={"jobs": [j.model_dump(mode="json") for j in jobs], "target": "B"})
                    r.raise_for_status()
                bodies = [{"decision_id": d["decision_id"], "outcome": world.outcome(j, target, d["device"])}
                          for d, j in zip(r.json()["decisions"], jobs, strict=True)]
                acked, cut = ingest_until_killed(svc, bodies, HEADERS, kill_after=args.kill_after)
            finally:
                if svc.proc.poll() is None:
                    svc.kill()
            integrity, stored, lost = check_database(s.database, acked)
            rounds.append({"round": k + 1, "start_s": round(started_s, 1), "acknowledged": len(acked),
                           "stored_total": stored, "requests_cut": cut, "integrity": integrity, "lost": len(lost),
                           "token_in_env_of": leaks})
            print("sigkill round:", rounds[-1], flush=True)
        out["sigkill"] = {"rounds": rounds, "acknowledged_total": sum(r["acknowledged"] for r in rounds),
                          "lost_total": sum(r["lost"] for r in rounds),
                          "integrity_all_ok": all(r["integrity"] == "ok" for r in rounds)}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


def settings_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.port}"


if __name__ == "__main__":
    main()
