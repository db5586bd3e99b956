"""Why three advised GPU memory caps ran out of memory: the allocator under a cap, examined.

``experiments.cap_check`` ran every advised cap of the knob evaluation on the lent H200: 243 of 246
jobs ran, three did not (``gru_imdb``, ``lstm_imdb`` and ``tcn_speech`` inference at batch 256), and
needed caps far above their uncapped *allocated* peak (``gru_imdb``: ran at 640 MiB, not at 512,
with an allocated peak of 343 MiB). This script tells the step's own need from the caching
allocator's: for each job, in a fresh process per configuration,

* uncapped, with the allocator's history recorded: allocated and reserved peaks and the largest
  single allocations with the Python line that asked for them;
* under caps from ``--caps`` (MiB) upward: ran or out of memory, and the out-of-memory message
  (the request's size, what was allocated and what was reserved but free at that moment);

once with PyTorch's default allocator settings and once with ``expandable_segments:True``
(segments that grow in place instead of new ones beside partly used ones).

Run (on the lent H200): ``OUT=... python -m experiments.cap_memory`` (writes ``$OUT/cap_memory.jsonl``);
the committed run is ``results/cap_check/memory.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = float(2**20)


@dataclass
class Args:
    out: Path = Path(os.environ.get("OUT", ".")) / "cap_memory.jsonl"
    jobs: tuple[tuple[str, str, int], ...] = (("gru_imdb", "infer", 256), ("lstm_imdb", "infer", 256),
                                               ("tcn_speech", "infer", 256), ("gru_imdb", "infer", 64))
    caps_mib: tuple[int, ...] = field(default_factory=lambda: tuple(range(256, 1025, 64)))
    allocators: tuple[str, ...] = ("", "expandable_segments:True")
    steps: int = 5
    seed: int = 0


def one(workload: str, mode: str, batch: int, cap_mib: int | None, steps: int, seed: int) -> dict[str, Any]:
    """One configuration in this process (the allocator setting comes from the environment)."""
    import torch

    from placement.lab.workloads import get_workload, make_batch, make_step

    torch.manual_seed(seed)
    torch.cuda.init()
    total = torch.cuda.get_device_properties(0).total_memory
    rec: dict[str, Any] = {"workload": workload, "mode": mode, "batch_size": batch, "cap_mib": cap_mib,
                           "allocator": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), "torch": torch.__version__}
    if cap_mib is not None:
        torch.cuda.set_per_process_memory_fraction(cap_mib * MIB / total, 0)
    else:
        torch.cuda.memory._record_memory_history(max_entries=200_000, stacks="python")
    w = get_workload(workload)
    try:
        model = w.build().to("cuda")
        x, y = make_batch(w.dataset, batch, "cuda", torch.Generator().manual_seed(seed))
        step = make_step(model, mode)
        for _ in range(steps):
            step(x, y)
        torch.cuda.synchronize()
        rec["ran"] = True
    except torch.OutOfMemoryError as exc:
        rec["ran"] = False
        rec["oom_message"] = str(exc).split(" See documentation")[0][:600]
    stats = torch.cuda.memory_stats()
    rec.update(allocated_peak_mib=stats.get("allocated_bytes.all.peak", 0) / MIB,
               reserved_peak_mib=stats.get("reserved_bytes.all.peak", 0) / MIB,
               segments_peak=stats.get("segment.all.peak", 0), num_alloc_retries=stats.get("num_alloc_retries", 0))
    if cap_mib is None:
        snap = torch.cuda.memory._snapshot()
        allocs = [e for dev in snap.get("device_traces", []) for e in dev if e.get("action") == "alloc"]
        allocs.sort(key=lambda e: -int(e.get("size", 0)))
        top = []
        for e in allocs[:6]:
            frames = [f"{f.get('filename', '').split('/')[-1]}:{f.get('line')}:{f.get('name')}"
                      for f in e.get("frames", []) if "placement" in f.get("filename", "") or "torch/nn" in f.get("filename", "")]
            top.append({"size_mib": int(e["size"]) / MIB, "frames": frames[:4]})
        rec["largest_allocations"] = top
        torch.cuda.memory._record_memory_history(enabled=None)
    return rec


def main(args: Args) -> list[dict[str, Any]]:
    """Every job, allocator and cap, each in a fresh interpreter; one JSON line each."""
    recs: list[dict[str, Any]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as fh:
        for workload, mode, batch in args.jobs:
            for alloc in args.allocators:
                env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": alloc} if alloc else {
                    k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
                for cap in (None, *args.caps_mib):
                    started = time.perf_counter()
                    code = ("import json,sys; from experiments.cap_memory import one; "
                            f"print(json.dumps(one({workload!r}, {mode!r}, {batch}, {cap!r}, {args.steps}, {args.seed})))")
                    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                          timeout=300)
                    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
                    rec = json.loads(line) if line.startswith("{") else {
                        "workload": workload, "mode": mode, "batch_size": batch, "cap_mib": cap, "allocator": alloc,
                        "error": proc.stderr[-600:]}
                    rec["wall_s"] = round(time.perf_counter() - started, 2)
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                    recs.append(rec)
                    print(f"{workload} {mode} b{batch} alloc={alloc or 'default'} cap={cap}: ran={rec.get('ran')} "
                          f"alloc_peak={rec.get('allocated_peak_mib', 0):.0f} reserved_peak={rec.get('reserved_peak_mib', 0):.0f}"
                          + (f" | {rec['oom_message'][:160]}" if rec.get("oom_message") else ""), flush=True)
                    if cap is not None and rec.get("ran"):
                        break  # the smallest cap of the list that runs
    return recs


def parse(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Args.out)
    p.add_argument("--caps", default=",".join(str(c) for c in Args().caps_mib), help="caps to try, MiB, ascending")
    a = p.parse_args(argv)
    return Args(out=a.out, caps_mib=tuple(int(c) for c in a.caps.split(",")))


if __name__ == "__main__":
    main(parse())
