"""Reference micro-benchmarks: a fixed set of single-operator runs that calibrate the operator model.

The operator-level performance model (:mod:`placement.model.opmodel`) predicts a job's time as a
sum over its operators of a bounded fraction of each device's roofline. The fractions
(efficiency per operator kind and size), the per-operator dispatch overhead of the CPU,
the per-launch overhead of the GPU and the host->GPU link are fitted from these runs and
from nothing else -- never from the architectures the model predicts.

:data:`BENCHES` is the fixed set: matrix multiply, 2-d and 1-d convolution, depthwise
convolution, embedding lookup, gather/scatter, recurrent layers (LSTM, GRU), element-wise
chains, normalisation (LayerNorm, BatchNorm), pooling, attention
(``scaled_dot_product_attention``), each at a few sizes, plus host->GPU copies. Each
bench is a small module on one input, timed as *infer* (forward under ``inference_mode``)
and *train* (forward, ``sum().backward()``) on the CPU at several thread counts and on
the GPU, with :func:`placement.lab.timing.time_step` (warm-up, synchronised repeats of
>= 10 ms, trimmed mean). Its operators are recorded on ``meta`` by
:func:`placement.model.operators.record_operators`, exactly as a job's are.

Run on a measurement host (resumable journal, deadline)::

    python -m placement.lab.microbench --out data/traces/h200_microbench.json

writes ``<out>.journal.jsonl`` (a header with the host's facts, then one line per run)
and ``<out>`` (header + runs, rewritten after every run).

**GPU memory reference** (``--memory``): every GPU bench of :data:`BENCHES` and the recurrent
layers of :data:`MEMORY_EXTRA` (more sizes: what a recurrent layer's cuDNN workspace grows
with), each step run three times with the caching allocator's history recorded: the step's
allocated peak above the module and its input, the largest single allocation, and the reserved
peak. :mod:`placement.model.knob_advice` fits its recurrent-workspace constant from these runs
alone::

    python -m placement.lab.microbench --memory --out data/traces/h200_microbench_memory.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

MICROBENCH_SCHEMA = "placement.microbench/1"
CPU_THREADS = (1, 4, 16)
MODES = ("infer", "train")


@dataclass(frozen=True)
class Bench:
    """One reference run: a module on one input of ``input_shape`` (batch included)."""

    name: str
    kind: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    input_dtype: str = "float32"
    vocab: int = 0
    train: bool = True
    """Whether a training (backward) run is defined (not for integer-only inputs' copies)."""
    optimizer: bool = False
    """Whether the training step also runs the zoo's optimizer (:func:`placement.lab.workloads.make_optimizer`);
    such a bench runs only as *train*."""

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes this bench runs in."""
        if self.optimizer:
            return ("train",)
        return MODES if self.train else ("infer",)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The input's torch dtype (``float32`` or ``int64``)."""
        return {"float32": torch.float32, "int64": torch.int64}[self.input_dtype]

    def make_input(self, device: str | torch.device = "cpu", seed: int = 0) -> torch.Tensor:
        """A seeded random input of ``input_shape`` on ``device``: token ids below ``vocab`` when
        the bench takes tokens, else standard normal floats."""
        gen = torch.Generator().manual_seed(seed)
        if self.vocab:
            x = torch.randint(0, self.vocab, self.input_shape, generator=gen)
        else:
            x = torch.randn(self.input_shape, generator=gen)
        return x.to(device)


class _Seq(nn.Module):
    """Returns the first output of a module that returns a tuple (LSTM/GRU)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[0]


class _Elementwise(nn.Module):
    """``relu(x * a + b) + x``: a chain of four element-wise kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.ones(()))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * self.a + self.b) + x


class _Attention(nn.Module):
    """Self-attention core on (B, H, T, D): ``scaled_dot_product_attention(x, x, x)``."""

    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x * self.scale
        return nn.functional.scaled_dot_product_attention(q, x, x, is_causal=self.causal)


class _Scatter(nn.Module):
    """Gather ``index_select`` then scatter ``index_add`` over dim 1 (message passing)."""

    def __init__(self, nodes: int, edges: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("src", torch.randint(0, nodes, (edges,), generator=gen), persistent=False)
        self.register_buffer("dst", torch.randint(0, nodes, (edges,), generator=gen), persistent=False)
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        src: torch.Tensor = self.src  # type: ignore[assignment]
        dst: torch.Tensor = self.dst  # type: ignore[assignment]
        m = (x * self.w).index_select(1, src)
        return torch.zeros_like(x).index_add(1, dst, m)


class _Pool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(x * self.w, 2)


def _linear_chain() -> nn.Module:
    """Eight Linear(128, 128) + ReLU layers: sixteen small modules, launch-bound on a GPU."""
    return nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(128, 128), nn.ReLU())])


def _deep_chain() -> nn.Module:
    """Thirty-two Linear(32, 32) + ReLU layers: 64 parameter tensors (what an optimizer step's cost grows with)."""
    return nn.Sequential(*[m for _ in range(32) for m in (nn.Linear(32, 32), nn.ReLU())])


def _conv_chain() -> nn.Module:
    """Four Conv2d(16, 16, 3) + BatchNorm2d + ReLU blocks on small maps."""
    return nn.Sequential(*[m for _ in range(4) for m in (nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())])


def _block_chain() -> nn.Module:
    """Four pre-norm MLP blocks, LayerNorm(128) + Linear(128, 256) + GELU + Linear(256, 128)."""
    return nn.Sequential(*[m for _ in range(4)
                           for m in (nn.LayerNorm(128), nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128))])


class _Copy(nn.Module):
    """Identity on the device: the bench times the host->GPU copy of its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _benches() -> tuple[Bench, ...]:
    b: list[Bench] = [
        Bench("matmul-s", "matmul", lambda: nn.Linear(256, 256), (32, 256)),
        Bench("matmul-m", "matmul", lambda: nn.Linear(1024, 1024), (256, 1024)),
        Bench("matmul-l", "matmul", lambda: nn.Linear(2048, 2048), (1024, 2048)),
        Bench("conv-s", "conv", lambda: nn.Conv2d(3, 64, 3, padding=1), (8, 3, 32, 32)),
        Bench("conv-m", "conv", lambda: nn.Conv2d(64, 64, 3, padding=1), (8, 64, 32, 32)),
        Bench("conv-l", "conv", lambda: nn.Conv2d(128, 128, 3, padding=1), (32, 128, 16, 16)),
        Bench("conv1d-m", "conv", lambda: nn.Conv1d(64, 128, 3, dilation=4), (8, 64, 1000)),
        Bench("dwconv-m", "dwconv", lambda: nn.Conv2d(64, 64, 3, padding=1, groups=64), (8, 64, 32, 32)),
        Bench("dwconv-l", "dwconv", lambda: nn.Conv2d(256, 256, 7, padding=3, groups=256), (32, 256, 16, 16)),
        Bench("embedding-s", "embedding", lambda: nn.Embedding(20_000, 64), (32, 128), "int64", 20_000),
        Bench("embedding-l", "embedding", lambda: nn.Embedding(100_000, 32), (256, 26), "int64", 100_000),
        Bench("scatter-m", "gather", lambda: _Scatter(64, 256), (64, 64, 128)),
        Bench("lstm-s", "recurrent", lambda: _Seq(nn.LSTM(64, 128, batch_first=True)), (4, 32, 64)),
        Bench("gru-m", "recurrent", lambda: _Seq(nn.GRU(64, 128, batch_first=True)), (64, 128, 64)),
        Bench("elementwise-s", "elementwise", _Elementwise, (4096,)),
        Bench("elementwise-m", "elementwise", _Elementwise, (1 << 20,)),
        Bench("elementwise-l", "elementwise", _Elementwise, (1 << 24,)),
        Bench("layernorm-m", "norm", lambda: nn.LayerNorm(256), (4096, 256)),
        Bench("batchnorm-m", "norm", lambda: nn.BatchNorm2d(64), (8, 64, 32, 32)),
        Bench("maxpool-m", "pool", _Pool, (32, 64, 32, 32)),
        Bench("attention-s", "attention", lambda: _Attention(False), (8, 4, 64, 32)),
        Bench("attention-l", "attention", lambda: _Attention(True), (8, 4, 256, 64)),
        Bench("copy-s", "copy", _Copy, (4096,), train=False),
        Bench("copy-l", "copy", _Copy, (1 << 22,), train=False),
    ]
    return tuple(b)


BENCHES: tuple[Bench, ...] = _benches()

EXTRA_BENCHES: tuple[Bench, ...] = (
    Bench("linear-chain", "matmul", _linear_chain, (16, 128)),
    Bench("conv-chain", "conv", _conv_chain, (4, 16, 16, 16)),
    Bench("block-chain", "norm", _block_chain, (8, 16, 128)),
    Bench("sgd-chain", "optimizer", _linear_chain, (16, 128), optimizer=True),
    Bench("linear-deep", "matmul", _deep_chain, (16, 32)),
    Bench("sgd-deep", "optimizer", _deep_chain, (16, 32), optimizer=True),
)
"""Measured with ``--extra``, **not fitted**: chains of small layers stacked the way networks stack
them (Linear+ReLU, Conv+BatchNorm+ReLU, LayerNorm+MLP blocks: what an operator costs among many
rather than alone) and the zoo's SGD step over 16 and 64 parameter tensors. Measured on two later
leases (``data/traces/h200_microbench_lease2.json``/``_lease3.json``) with the whole plan; fitting them
(lease-normalised by the shared benches) did not improve the held-out architectures (docs/calibration.md)."""

MEMORY_EXTRA: tuple[Bench, ...] = (
    Bench("lstm-m", "recurrent", lambda: _Seq(nn.LSTM(64, 128, batch_first=True)), (32, 64, 64)),
    Bench("gru-l", "recurrent", lambda: _Seq(nn.GRU(128, 256, batch_first=True)), (128, 64, 128)),
    Bench("lstm-l", "recurrent", lambda: _Seq(nn.LSTM(32, 256, batch_first=True)), (64, 256, 32)),
    Bench("gru-xl", "recurrent", lambda: _Seq(nn.GRU(64, 512, batch_first=True)), (256, 32, 64)),
)
"""Recurrent layers measured for memory only (not timed: the operator model's timing fit reads
:data:`BENCHES`): other hidden sizes, sequence lengths and batches than ``lstm-s``/``gru-m``."""
MEMORY_SCHEMA = "placement.microbench-memory/1"


def get_bench(name: str) -> Bench:
    """The micro-benchmark named ``name`` (:data:`BENCHES`, then :data:`MEMORY_EXTRA`); ``KeyError``
    naming the known ones otherwise."""
    known = (*BENCHES, *EXTRA_BENCHES, *MEMORY_EXTRA)
    for bench in known:
        if bench.name == name:
            return bench
    raise KeyError(f"unknown bench '{name}'; known: {', '.join(b.name for b in known)}")


@dataclass(frozen=True)
class RunSpec:
    """One run: a bench, a mode, a device (``cpu``/``gpu``) and the CPU threads."""

    bench: str
    mode: str
    device: str
    threads: int

    @property
    def key(self) -> str:
        """The run's journal key: ``bench|mode|device|t<threads>``."""
        return f"{self.bench}|{self.mode}|{self.device}|t{self.threads}"


def plan(threads: Sequence[int] = CPU_THREADS, gpu: bool = True, host_cores: int | None = None,
         benches: Sequence[Bench] | None = None) -> list[RunSpec]:
    """Every bench (default :data:`BENCHES`) x mode on the CPU at each thread count (copies: GPU
    only), then on the GPU."""
    benches = BENCHES if benches is None else benches
    cores = host_cores or os.cpu_count() or 1
    ths = sorted({min(t, cores) for t in threads})
    runs: list[RunSpec] = []
    for b in benches:
        if b.kind != "copy":
            runs += [RunSpec(b.name, m, "cpu", t) for m in b.modes for t in ths]
    if gpu:
        runs += [RunSpec(b.name, m, "gpu", cores) for b in benches for m in b.modes]
    return runs


def _step(bench: Bench, mode: str, device: torch.device) -> Callable[[], None]:
    torch.manual_seed(0)
    model = bench.build().to(device)
    on_host = bench.kind == "copy"
    x = bench.make_input("cpu" if on_host else device)
    if mode == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode():
                model(x.to(device) if on_host else x)

        return infer
    model.train()
    xs = x.float().requires_grad_(True) if not bench.vocab else x
    opt = None
    if bench.optimizer:
        from placement.lab.workloads import make_optimizer

        opt = make_optimizer(model)

    def train() -> None:
        model.zero_grad(set_to_none=True)
        if xs.is_floating_point():
            xs.grad = None
        model(xs).float().sum().backward()
        if opt is not None:
            opt.step()

    return train


def measure(run: RunSpec, quick: bool = False) -> dict[str, Any]:
    """Time one run in this process (the caller sets threads/affinity for CPU runs)."""
    from placement.lab.timing import TimingSettings, time_step

    bench = get_bench(run.bench)
    on_gpu = run.device == "gpu"
    device = torch.device("cuda" if on_gpu else "cpu")
    sync: Callable[[], object] = torch.cuda.synchronize if on_gpu else (lambda: None)
    settings = TimingSettings(warmup_steps=1 if quick else 3, min_repeats=3 if quick else 5, floor_repeats=3,
                              min_repeat_s=0.002 if quick else 0.01, min_time_s=0.0 if quick else 0.05,
                              max_time_s=0.2 if quick else 1.5)
    step = _step(bench, run.mode, device)
    stats = time_step(step, settings, sync=sync)
    return {"kind": "run", "key": run.key, "bench": run.bench, "op_kind": bench.kind, "mode": run.mode,
            "device": run.device, "threads": run.threads, "time_s": stats.trimmed_mean_s, "median_s": stats.median_s,
            "cv": stats.cv, "repeats": stats.repeats, "steps_per_repeat": stats.steps_per_repeat,
            "first_step_s": stats.extra.get("first_step_s")}


def measure_memory(bench: Bench, mode: str, steps: int = 3) -> dict[str, Any]:
    """The GPU memory of ``steps`` steps of ``bench`` (module docstring): MiB above the module and
    its input, the largest single allocation of the steps, the reserved peak."""
    mib = float(2**20)
    cuda = torch.cuda
    cuda.empty_cache()
    step = _step(bench, mode, torch.device("cuda"))
    cuda.synchronize()
    base = cuda.memory_allocated()
    cuda.reset_peak_memory_stats()
    cuda.memory._record_memory_history(max_entries=100_000)
    try:
        for _ in range(steps):
            step()
        cuda.synchronize()
        snap = cuda.memory._snapshot()
    finally:
        cuda.memory._record_memory_history(enabled=None)
    sizes = [int(e.get("size", 0)) for dev in snap.get("device_traces", []) for e in dev if e.get("action") == "alloc"]
    rec = {"kind": "memory", "key": f"{bench.name}|{mode}|gpu", "bench": bench.name, "op_kind": bench.kind,
           "mode": mode, "input_shape": list(bench.input_shape), "module_and_input_mib": base / mib,
           "step_peak_mib": (cuda.max_memory_allocated() - base) / mib,
           "largest_allocation_mib": max(sizes, default=0) / mib, "reserved_peak_mib": cuda.max_memory_reserved() / mib}
    del step
    cuda.empty_cache()
    return rec


def run_memory(out: Path) -> dict[str, Any]:
    """:func:`measure_memory` for every GPU bench and mode (module docstring), written to ``out``."""
    runs = [measure_memory(b, m) for b in (*BENCHES, *MEMORY_EXTRA) if b.kind != "copy"
            for m in b.modes]
    header = {"kind": "header", "schema": MEMORY_SCHEMA, "environment": _environment(), "started_unix_s": time.time(),
              "code_version": os.environ.get("PLACEMENT_CODE_VERSION", "")}
    payload = {"schema": MEMORY_SCHEMA, "header": header, "runs": runs}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(payload, indent=1) + "\n")
    return payload


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "torch": torch.__version__, "cpu_count": os.cpu_count()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu_model"] = line.split(":", 1)[1].strip()
                break
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32, cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    return env


def _write(out: Path, header: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    payload = {"schema": MICROBENCH_SCHEMA, "header": header, "runs": list(runs.values())}
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(out)


def run_plan(runs: Sequence[RunSpec], out: Path, deadline_s: float | None = None, quick: bool = False,
             host_cores: int | None = None) -> dict[str, Any]:
    """Measure ``runs`` (skipping those already in ``<out>.journal.jsonl``); returns the payload."""
    from placement.lab.knobs import cpu_cores

    out = Path(out)
    journal = Path(str(out) + ".journal.jsonl")
    done: dict[str, dict[str, Any]] = {}
    if journal.exists():
        lines = [json.loads(x) for x in journal.read_text().splitlines() if x.strip()]
        header = lines[0]
        done = {r["key"]: r for r in lines[1:] if r.get("kind") == "run"}
    else:
        header = {"kind": "header", "schema": MICROBENCH_SCHEMA, "environment": _environment(), "quick": quick,
                  "started_unix_s": time.time(), "code_version": os.environ.get("PLACEMENT_CODE_VERSION", "")}
        out.parent.mkdir(parents=True, exist_ok=True)
        journal.write_text(json.dumps(header) + "\n")
    stop = None if deadline_s is None else time.time() + deadline_s
    for run in runs:
        if run.key in done:
            continue
        if stop is not None and time.time() > stop:
            break
        if run.device == "cpu":
            with cpu_cores(run.threads):
                rec = measure(run, quick)
        else:
            rec = measure(run, quick)
        with open(journal, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        done[run.key] = rec
        _write(out, header, done)
    _write(out, header, done)
    return {"schema": MICROBENCH_SCHEMA, "header": header, "runs": list(done.values())}


def load(path: Path) -> dict[str, Any]:
    """A micro-benchmark file (see module docstring)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("schema") != MICROBENCH_SCHEMA:
        raise ValueError(f"{path}: not a '{MICROBENCH_SCHEMA}' file")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (``python -m placement.lab.microbench``): run the micro-benchmark plan on this
    host (CPU thread counts, and the GPU when there is one) into ``--out``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m placement.lab.microbench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", default=",".join(map(str, CPU_THREADS)))
    parser.add_argument("--no-gpu", action="store_true")
    parser.add_argument("--deadline-s", type=float, default=None)
    parser.add_argument("--quick", action="store_true", help="short timings (tests)")
    parser.add_argument("--only", default="", help="comma-separated bench names (tests)")
    parser.add_argument("--memory", action="store_true", help="the GPU memory reference instead of timings")
    parser.add_argument("--extra", action="store_true", help="also the chains and optimizer steps of EXTRA_BENCHES (not fitted)")
    args = parser.parse_args(argv)
    if args.memory:
        if not torch.cuda.is_available():
            parser.error("--memory needs a CUDA GPU")
        payload = run_memory(args.out)
        sys.stdout.write(f"microbench memory: {len(payload['runs'])} runs in {args.out}\n")
        return 0
    threads = [int(t) for t in args.threads.split(",") if t]
    gpu = not args.no_gpu and torch.cuda.is_available()
    runs = plan(threads, gpu, benches=(*BENCHES, *EXTRA_BENCHES) if args.extra else None)
    if args.only:
        names = set(args.only.split(","))
        runs = [r for r in runs if r.bench in names]
    payload = run_plan(runs, args.out, args.deadline_s, args.quick)
    sys.stdout.write(f"microbench: {len(payload['runs'])} of {len(runs)} runs in {args.out}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover - a measurement host's entry point
    raise SystemExit(main())
