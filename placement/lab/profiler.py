"""The profiler: a resumable sweep of real measurements that writes a trace.

A sweep is a list of :class:`RowSpec` -- workload x mode x batch size x device x CPU cores x
GPU memory cap. Rows are grouped by (workload, device) and each group runs in a fresh
Python subprocess (``python -m placement.lab.profiler REQUEST.json``): a fresh CUDA context and
caching allocator per workload, and no CUDA state in the processes that time the CPU.
Within a GPU group every row builds its model *inside* its memory cap (so weights count
against the cap) and frees everything afterwards (``empty_cache``), so no row inherits
another's cached blocks. CPU and GPU groups never run at the same time.

**Per row** (see :mod:`placement.lab.timing` and :mod:`placement.lab.meter`): warm-up, then timed
repeats with device synchronisation; the trimmed mean (fastest and slowest dropped,
paper B), median, IQR and CV are kept. A CPU row runs under :func:`placement.lab.knobs.cpu_cores`
and one energy window covers its timed repeats (RAPL where readable, else the modelled
meter). A GPU row copies each batch from host memory to the GPU inside the step and
keeps repeating until the NVML energy window (>= 2 s, aligned to counter updates) can
close; the host CPU's power over the same window is recorded too (eq. 2). An OOM under a
cap is a row with ``feasible=False, infeasible_reason='oom'``.

**Resumable.** Each finished row is appended to a journal (``<trace>.journal.jsonl``,
one JSON object per line, flushed) whose first line records the machine's fingerprint; the
trace (Parquet, via :func:`placement.core.trace.write_trace`) is rewritten from the journal
after every group. Run the same command again and finished rows are skipped; a journal
from another machine is refused. A deadline (``deadline_s``) stops the sweep cleanly
between rows, leaving a valid trace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from placement.core.decision import GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.core.outcome import EnergyMethod
from placement.core.threshold import Thresholds
from placement.core.trace import (
    CV_LIMIT,
    TraceMeta,
    cap_from_column,
    file_sha256,
    target_columns,
    write_trace,
)
from placement.core.version import code_version

JOURNAL_SCHEMA = 1


class ProfileError(RuntimeError):
    """A sweep that cannot start or resume (bad plan, foreign journal, no GPU for GPU rows)."""


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class RowSpec:
    """One measurement. ``gpu_mem_cap_mib`` is the trace column's cell (None on a GPU row: no cap,
    GROW); :attr:`gpu_mem_cap` the cap itself."""

    workload: str
    mode: str
    batch_size: int
    device: str
    cpu_cores: int
    gpu_mem_cap_mib: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("infer", "train"):
            raise ValueError(f"RowSpec.mode must be infer or train, got {self.mode!r}")
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"RowSpec.device must be cpu or gpu, got {self.device!r}")
        if self.batch_size < 1 or self.cpu_cores < 1:
            raise ValueError(f"RowSpec: batch_size and cpu_cores must be >= 1 ({self.batch_size}, {self.cpu_cores})")
        if self.gpu_mem_cap_mib is not None and (self.device != "gpu" or self.gpu_mem_cap_mib < 1):
            raise ValueError("RowSpec.gpu_mem_cap_mib: a positive MiB cap, on GPU rows only (None = grow)")

    @property
    def job_id(self) -> str:
        """The job's id: ``<workload>-<mode>-b<batch size>``."""
        return f"{self.workload}-{self.mode}-b{self.batch_size}"

    @property
    def gpu_mem_cap(self) -> GpuMemCap:
        """The GPU memory cap the row runs under (MiB, or GROW)."""
        return cap_from_column(self.gpu_mem_cap_mib)

    @property
    def cap_label(self) -> str:
        """The cap in the row's journal key: ``-`` on the CPU, MiB or ``grow`` on the GPU."""
        if self.device == "cpu":
            return "-"
        return str(self.gpu_mem_cap)

    @property
    def key(self) -> str:
        """The row's journal key: ``job_id|device|c<cores>|<cap label>``."""
        return f"{self.job_id}|{self.device}|c{self.cpu_cores}|{self.cap_label}"

    @property
    def group(self) -> tuple[str, str]:
        """The row's run group, (workload, device): the rows of one group run in one worker process."""
        return (self.workload, self.device)

    def to_dict(self) -> dict[str, Any]:
        """The row's fields as a plain dict."""
        return dataclasses.asdict(self)


MAIN_WORKLOADS = ("mlp_cifar10", "alexnet_cifar10", "mobilenet_cifar10", "resnet18_cifar10",
                  "lstm_imdb", "gru_imdb", "transformer_imdb")
IMAGENET_WORKLOADS = ("alexnet_imagenet100", "mobilenet_imagenet100", "resnet18_imagenet100")
CORE_STEPS = (1, 2, 4, 8, 16)
MAIN_CAPS_MIB = (2048, 512, 128)
IMAGENET_CAPS_MIB = (2048, 512)


def _batches(mode: str, sizes: Sequence[int]) -> list[int]:
    """Batch sizes of a mode: a training step at batch 1 is undefined with batch norm, so
    training starts at 2."""
    return [max(b, 2) if mode == "train" else b for b in sizes]


def default_plan(host_cores: int = 16, gpu: bool = True) -> list[RowSpec]:
    """The sweep behind ``data/traces/*_measured.parquet`` (see data/traces/README.md).

    Seven families on CIFAR-10 / IMDB inputs, both modes, batch 1 (inference; 2 for
    training), 32 and 256. CPU: batch 1/2 and 32 over cores {1, 2, 4, 8, 16}, batch 256 over
    {4, 8, 16}. GPU: every batch with no cap ("grow"), and batch 256 under caps of 2048, 512
    and 128 MiB. Then ImageNet-100 (224 px) AlexNet, MobileNet and ResNet-18: CPU at batch
    1/2 and 8 on 4 and 16 cores; GPU at 1/2, 8 and 64, batch 64 also under 2048 and 512 MiB.
    Core counts above ``host_cores`` drop. Groups run in this order, so a sweep cut short
    still holds whole workloads.
    """
    cores = sorted({c for c in CORE_STEPS if c <= host_cores} | {host_cores}, reverse=True)
    full = cores[0]
    rows: list[RowSpec] = []
    for w in MAIN_WORKLOADS:
        for mode in ("infer", "train"):
            small, mid, big = _batches(mode, (1, 32, 256))
            for b in (small, mid):
                rows += [RowSpec(w, mode, b, "cpu", c) for c in cores]
            rows += [RowSpec(w, mode, big, "cpu", c) for c in sorted({full, min(8, full), min(4, full)}, reverse=True)]
        if gpu:
            for mode in ("infer", "train"):
                rows += [RowSpec(w, mode, b, "gpu", full) for b in _batches(mode, (1, 32, 256))]
                rows += [RowSpec(w, mode, 256, "gpu", full, cap) for cap in MAIN_CAPS_MIB]
    for w in IMAGENET_WORKLOADS:
        for mode in ("infer", "train"):
            for b in _batches(mode, (1, 8)):
                rows += [RowSpec(w, mode, b, "cpu", c) for c in sorted({full, min(4, full)}, reverse=True)]
        if gpu:
            for mode in ("infer", "train"):
                rows += [RowSpec(w, mode, b, "gpu", full) for b in _batches(mode, (1, 8, 64))]
                rows += [RowSpec(w, mode, 64, "gpu", full, cap) for cap in IMAGENET_CAPS_MIB]
    return rows


def smoke_plan(host_cores: int = 16, gpu: bool = True) -> list[RowSpec]:
    """A few rows to check a machine end to end (CPU cores, GPU grow, a cap that OOMs)."""
    full = host_cores
    rows = [RowSpec("mlp_cifar10", "infer", 32, "cpu", c) for c in sorted({full, 1}, reverse=True)]
    rows.append(RowSpec("lstm_imdb", "train", 32, "cpu", full))
    if gpu:
        rows += [
            RowSpec("mlp_cifar10", "train", 256, "gpu", full),
            RowSpec("lstm_imdb", "train", 32, "gpu", full),
            RowSpec("resnet18_cifar10", "train", 256, "gpu", full, 16),
        ]
    return rows


PAIR_WORKLOADS_NEW = ("lenet_cifar10", "vgg11_cifar10", "textcnn_imdb", "fasttext_imdb", "mlp_covtype")


def pairs_plan(host_cores: int = 16, gpu: bool = True) -> list[RowSpec]:
    """The second sweep (``data/traces/h200_pairs_measured.parquet``): CPU/GPU pairs for
    placement labels, where the decision is close. Every row pairs a CPU run on all
    ``host_cores`` cores with a GPU run with no cap ("grow"). The seven models of the first
    sweep at the batch sizes it skipped (4, 8, 16, 64); four new architectures (LeNet-5,
    VGG-11, TextCNN, fastText) and the MLP on tabular inputs at batch 1 (2 for training),
    4, 16, 64 and 256. Workloads run in that order, CPU then GPU, so a cut-short sweep holds
    whole workloads."""
    full = host_cores
    rows: list[RowSpec] = []
    groups = [(w, (4, 8, 16, 64)) for w in MAIN_WORKLOADS] + [(w, (1, 4, 16, 64, 256)) for w in PAIR_WORKLOADS_NEW]
    for w, sizes in groups:
        for mode in ("infer", "train"):
            rows += [RowSpec(w, mode, b, "cpu", full) for b in _batches(mode, sizes)]
        if gpu:
            for mode in ("infer", "train"):
                rows += [RowSpec(w, mode, b, "gpu", full) for b in _batches(mode, sizes)]
    return rows


ARCH_WORKLOADS = ("convnext_cifar10", "unet_cifar10", "vit_cifar10", "mixer_cifar10", "autoencoder_cifar10",
                  "gpt_tinytext", "dlrm_criteo", "tcn_speech", "audiocnn_speech", "gnn_graph")
ARCH_CORE_WORKLOADS = ("convnext_cifar10", "gpt_tinytext", "dlrm_criteo", "tcn_speech", "gnn_graph")
ARCH_SETTINGS = {"gpu_window_s": 1.0, "gpu_max_time_s": 8.0}
"""The third sweep's settings over :class:`ProfileSettings`' defaults: a 1-s NVML window
(>= 0.3 s, ten counter updates) instead of 2 s, so 200 rows fit one device call."""


def archs_plan(host_cores: int = 16, gpu: bool = True) -> list[RowSpec]:
    """The third sweep (``data/traces/h200_archs_measured.parquet``): ten architectures of
    kinds the zoo lacked (ConvNeXt, U-Net, ViT, MLP-Mixer, dense autoencoder, GPT decoder,
    DLRM, TCN, 1-d audio CNN, message-passing GNN) as CPU (all cores) / GPU ("grow") pairs
    at batch 1 (2 for training), 8, 64 and 256, both modes; then five of them (ConvNeXt,
    GPT, DLRM, TCN, GNN) at batch 8 on {1, 2, 4, 8} cores, for core-count advice. Pairs
    first, workload by workload (CPU then GPU), so a cut-short sweep holds whole pairs."""
    full = host_cores
    rows: list[RowSpec] = []
    for w in ARCH_WORKLOADS:
        for mode in ("infer", "train"):
            rows += [RowSpec(w, mode, b, "cpu", full) for b in _batches(mode, (1, 8, 64, 256))]
        if gpu:
            for mode in ("infer", "train"):
                rows += [RowSpec(w, mode, b, "gpu", full) for b in _batches(mode, (1, 8, 64, 256))]
    for w in ARCH_CORE_WORKLOADS:
        for mode in ("infer", "train"):
            rows += [RowSpec(w, mode, 8, "cpu", c) for c in sorted({c for c in CORE_STEPS if c < full}, reverse=True)]
    return rows


PLAN_SETTINGS: dict[str, dict[str, Any]] = {"archs": ARCH_SETTINGS}
"""Per-plan overrides of :class:`ProfileSettings` (the plan's trace was measured with them)."""

PLANS: dict[str, Callable[[int, bool], list[RowSpec]]] = {
    "default": default_plan, "smoke": smoke_plan, "pairs": pairs_plan, "archs": archs_plan}


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ProfileSettings:
    """How rows are measured (seconds); recorded in the trace metadata."""

    seed: int = 0
    cpu_warmup_steps: int = 2
    cpu_min_repeats: int = 7
    cpu_min_time_s: float = 0.2
    cpu_max_time_s: float = 8.0
    gpu_warmup_steps: int = 3
    gpu_min_repeats: int = 7
    gpu_window_s: float = 2.0
    gpu_max_time_s: float = 20.0
    cpu_min_repeat_s: float = 0.02
    gpu_min_repeat_s: float = 0.05
    """GPU repeats are longer: a repeat of many launch-bound steps averages out host jitter."""
    retry_noisy: int = 1
    """Re-measure a row whose CV exceeds the trace's limit (5 %) this many times; keep the steadiest."""
    torch_device: str = "cuda"
    """Where GPU rows run. Only tests change it (to ``cpu``, with a fake allocator and replayed energy)."""
    gpu_memory: str = "cuda"
    """``cuda`` (the caching allocator) or ``fake:<MiB>`` (tests: :class:`placement.lab.knobs.FakeGpuMemory`)."""
    gpu_energy: str = "nvml"
    """``nvml``, ``null``, or ``replay:<path>`` (tests)."""
    cpu_energy: str = "auto"
    """``auto`` (RAPL, else INA3221, else modelled), ``modelled``, ``null`` or ``replay:<path>``."""

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (journal header)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- worker side


def _make_gpu_meter(settings: ProfileSettings) -> Any:
    from placement.lab import meter
    spec = settings.gpu_energy
    if spec.startswith("replay:"):
        return meter.ReplayMeter.from_jsonl(Path(spec[7:]), domain="gpu", cycle=True)
    if spec == "null":
        return meter.NullMeter("gpu")
    if spec == "nvml":
        return meter.NvmlMeter(0, min_window_s=settings.gpu_window_s)
    raise ProfileError(f"gpu_energy must be nvml, null or replay:<path>, got {spec!r}")


def _make_cpu_meter(settings: ProfileSettings, target: dict[str, Any]) -> Any:
    from placement.lab import meter
    spec = settings.cpu_energy
    tdp, idle, cores = float(target["cpu_tdp_w"]), float(target["cpu_idle_w"]), int(target["cpu_cores"])
    if spec.startswith("replay:"):
        return meter.ReplayMeter.from_jsonl(Path(spec[7:]), domain="cpu", cycle=True)
    if spec == "null":
        return meter.NullMeter("cpu")
    if spec == "modelled":
        return meter.ModelledCpuMeter(tdp, idle, cores)
    if spec == "auto":
        return meter.cpu_meter(tdp, idle, cores)
    raise ProfileError(f"cpu_energy must be auto, modelled, null or replay:<path>, got {spec!r}")


def _make_gpu_memory(settings: ProfileSettings) -> Any:
    from placement.lab import knobs
    if settings.gpu_memory.startswith("fake:"):
        return knobs.FakeGpuMemory(int(settings.gpu_memory[5:]))
    if settings.gpu_memory == "cuda":
        return knobs.TorchCudaMemory(0)
    raise ProfileError(f"gpu_memory must be cuda or fake:<MiB>, got {settings.gpu_memory!r}")


def _stats_dict(stats: Any) -> dict[str, Any]:
    return {
        "trimmed_mean_s": stats.trimmed_mean_s,
        "median_s": stats.median_s,
        "iqr_s": stats.iqr_s,
        "cv": stats.cv,
        "repeats": stats.repeats,
        "kept": stats.kept,
        "steps_per_repeat": stats.steps_per_repeat,
        "warmup_steps": stats.warmup_steps,
        "elapsed_s": stats.elapsed_s,
        "repeat_times_s": list(stats.repeat_times_s),
        **stats.extra,
    }


class _Worker:
    """Measures the rows of one group inside this process."""

    def __init__(self, settings: ProfileSettings, target: dict[str, Any],
                 jobs: dict[str, dict[str, Any]] | None = None) -> None:
        import torch

        self.torch = torch
        self.settings = settings
        self.target = target
        self._jobs = dict(jobs or {})
        self._gpu_meter: Any = None
        self._cpu_meter: Any = None
        self._memory: Any = None

    def describe(self, spec: RowSpec) -> dict[str, Any]:
        if spec.job_id not in self._jobs:
            self._jobs.update(describe_rows([spec], parallel=False))
        return self._jobs[spec.job_id]

    def environment(self) -> dict[str, Any]:
        """Software and device facts of this worker (torch, CUDA, cuDNN, TF32 flags)."""
        torch = self.torch
        env: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        if self.settings.torch_device.startswith("cuda") and torch.cuda.is_available():
            env.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(0),
                       cudnn=torch.backends.cudnn.version(),
                       matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                       cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                       cudnn_benchmark=torch.backends.cudnn.benchmark)
        return env

    def _cpu(self) -> Any:
        if self._cpu_meter is None:
            self._cpu_meter = _make_cpu_meter(self.settings, self.target)
        return self._cpu_meter

    def measure(self, spec: RowSpec) -> dict[str, Any]:
        result: dict[str, Any] = {"kind": "row", "key": spec.key, "spec": spec.to_dict(), "started_unix_s": time.time()}
        result["job"] = self.describe(spec)
        result["environment"] = self.environment()
        best: dict[str, Any] | None = None
        attempts = 0
        while attempts < 1 + max(0, self.settings.retry_noisy):
            attempts += 1
            one = self._measure_gpu(spec) if spec.device == "gpu" else self._measure_cpu(spec)
            if not one["feasible"]:
                best = one
                break
            if best is None or one["stats"]["cv"] < best["stats"]["cv"]:
                best = one
            if best["stats"]["cv"] <= CV_LIMIT:
                break
        assert best is not None
        result.update(best)
        result["attempts"] = attempts
        return result

    def _seeded_batch(self, spec: RowSpec) -> tuple[Any, Any]:
        """The row's input batch on the host, drawn from the settings' seed."""
        from placement.lab.workloads import get_workload, make_batch

        gen = self.torch.Generator().manual_seed(self.settings.seed)
        return make_batch(get_workload(spec.workload).dataset, spec.batch_size, "cpu", gen)

    def _measure_cpu(self, spec: RowSpec) -> dict[str, Any]:
        from placement.lab.knobs import cpu_cores
        from placement.lab.timing import TimingSettings, time_step
        from placement.lab.workloads import get_workload, make_step

        torch = self.torch
        s = self.settings
        torch.manual_seed(s.seed)
        w = get_workload(spec.workload)
        x, y = self._seeded_batch(spec)
        meter = self._cpu()
        model: Any = None
        step: Any = None
        with cpu_cores(spec.cpu_cores) as applied:
            model = w.build()
            step = make_step(model, spec.mode)
            timing = TimingSettings(warmup_steps=s.cpu_warmup_steps, min_repeats=s.cpu_min_repeats,
                                    min_repeat_s=s.cpu_min_repeat_s, min_time_s=s.cpu_min_time_s,
                                    max_time_s=s.cpu_max_time_s)
            stats = time_step(lambda: step(x, y), timing, on_window_start=meter.begin_window,
                              window_can_end=meter.window_can_end)
            reading = meter.end_window()
        model = step = None
        gc.collect()
        return {"feasible": True, "infeasible_reason": None, "cores_applied": applied,
                "stats": _stats_dict(stats), "readings": {"cpu": reading.to_dict()}}

    def _measure_gpu(self, spec: RowSpec) -> dict[str, Any]:
        from placement.lab.knobs import gpu_memory_cap, is_oom
        from placement.lab.meter import MeterSet
        from placement.lab.timing import TimingSettings, time_step
        from placement.lab.workloads import get_workload, make_step

        torch = self.torch
        s = self.settings
        on_cuda = s.torch_device.startswith("cuda")
        if on_cuda and not torch.cuda.is_available():
            raise ProfileError("GPU rows need CUDA (torch.cuda.is_available() is False)")
        if self._memory is None:
            self._memory = _make_gpu_memory(s)
            self._gpu_meter = _make_gpu_meter(s)
        dev = torch.device(s.torch_device)
        sync: Callable[[], object] = torch.cuda.synchronize if on_cuda else (lambda: None)
        torch.manual_seed(s.seed)
        w = get_workload(spec.workload)
        x_host, y_host = self._seeded_batch(spec)
        meters = MeterSet([self._gpu_meter, self._cpu()])
        cap = spec.gpu_mem_cap
        out: dict[str, Any] = {"cores_applied": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1}
        model: Any = None
        step: Any = None
        window_open = False
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            with gpu_memory_cap(cap, self._memory) as fraction:
                out["cap_fraction"] = fraction
                model = w.build().to(dev)
                step = make_step(model, spec.mode)

                def run() -> None:
                    assert step is not None
                    step(x_host.to(dev), y_host.to(dev))

                timing = TimingSettings(warmup_steps=s.gpu_warmup_steps, min_repeats=s.gpu_min_repeats,
                                        min_repeat_s=s.gpu_min_repeat_s, min_time_s=s.gpu_window_s,
                                        max_time_s=s.gpu_max_time_s)

                def open_window() -> None:
                    nonlocal window_open
                    meters.begin_window()
                    window_open = True

                stats = time_step(run, timing, sync=sync, on_window_start=open_window,
                                  window_can_end=meters.window_can_end)
                readings = meters.end_window()
                window_open = False
            out.update(feasible=True, infeasible_reason=None, stats=_stats_dict(stats),
                       readings={k: r.to_dict() for k, r in readings.items()})
        except Exception as exc:
            if window_open:
                with contextlib.suppress(Exception):
                    meters.end_window()
            if not is_oom(exc):
                raise
            out.update(feasible=False, infeasible_reason="oom", error=str(exc).splitlines()[0][:300])
        finally:
            model = step = None
            gc.collect()
            if on_cuda:
                out["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
                torch.cuda.empty_cache()
            elif hasattr(self._memory, "peak_bytes"):
                out["peak_reserved_mib"] = self._memory.peak_bytes / 2**20
        return out

    def close(self) -> None:
        for m in (self._gpu_meter, self._cpu_meter):
            if m is not None:
                m.close()


def _count_task(task: tuple[str, str, int]) -> tuple[tuple[str, str, int], Any]:
    from placement.lab.workloads import zoo_count

    return task, zoo_count(*task)


def describe_rows(rows: Iterable[RowSpec], parallel: bool = True) -> dict[str, dict[str, Any]]:
    """Job columns (family, FLOPs per batch, parameters, input size) of every row's job, by
    ``job_id``. FLOPs are counted on ``meta`` at two batch sizes per (workload, mode) and
    extended exactly (:func:`placement.lab.workloads.describe_workload`); ``parallel`` spreads
    the counts over processes (they take seconds for recurrent models)."""
    from placement.lab.workloads import COUNT_BATCHES, describe_workload

    specs = {r.job_id: r for r in rows}
    tasks = sorted({(r.workload, r.mode, b) for r in specs.values() for b in COUNT_BATCHES})
    counts: dict[tuple[str, str, int], Any] = {}
    workers = min(8, len(tasks), max(1, (os.cpu_count() or 1) // 2))
    if parallel and workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            counts.update(pool.map(_count_task, tasks))
    else:
        counts.update(_count_task(t) for t in tasks)
    out: dict[str, dict[str, Any]] = {}
    b0, b1 = COUNT_BATCHES
    for job_id, r in specs.items():
        job = describe_workload(r.workload, r.batch_size, r.mode,
                                counts=(counts[(r.workload, r.mode, b0)], counts[(r.workload, r.mode, b1)]))
        out[job_id] = {
            "family": str(job.family),
            "flops_per_batch": job.flops_per_batch,
            "param_count": job.param_count,
            "input_elems_per_sample": job.input_elems_per_sample,
            "input_bytes_per_sample": job.input_bytes_per_sample,
        }
    return out


def run_rows(rows: Sequence[RowSpec], settings: ProfileSettings, target: dict[str, Any],
             emit: Callable[[dict[str, Any]], None], deadline_unix_s: float | None = None,
             est_row_s: float = 4.0, jobs: dict[str, dict[str, Any]] | None = None) -> int:
    """Measure ``rows`` in this process, passing each result to ``emit``; stops before a row
    that would start within ``est_row_s`` of the deadline. ``jobs`` are the rows' job
    columns from :func:`describe_rows` (computed here when missing). Returns the rows measured."""
    worker = _Worker(settings, target, jobs)
    done = 0
    try:
        for spec in rows:
            if deadline_unix_s is not None and time.time() + est_row_s > deadline_unix_s:
                break
            emit(worker.measure(spec))
            done += 1
    finally:
        worker.close()
    return done


def _worker_main(argv: Sequence[str]) -> int:
    """Subprocess entry: ``python -m placement.lab.profiler REQUEST.json`` appends results to the
    request's ``results`` file, one JSON line per row."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -m placement.lab.profiler REQUEST.json\n")
        return 2
    request = json.loads(Path(argv[0]).read_text())
    rows = [RowSpec(**r) for r in request["rows"]]
    settings = ProfileSettings(**request["settings"])
    out = Path(request["results"])
    with open(out, "a", encoding="utf-8") as fh:

        def emit(result: dict[str, Any]) -> None:
            fh.write(json.dumps(result) + "\n")
            fh.flush()

        run_rows(rows, settings, request["target"], emit, request.get("deadline_unix_s"), jobs=request.get("jobs"))
    return 0


# --------------------------------------------------------------------------- parent side


def _code_version() -> str:
    """:func:`placement.core.version.code_version`, or ``PLACEMENT_CODE_VERSION`` where the checkout
    has no git metadata (a copy of the tree sent to a measurement machine)."""
    found = code_version()
    return os.environ.get("PLACEMENT_CODE_VERSION", "") if "+g" not in found and os.environ.get("PLACEMENT_CODE_VERSION") else found


def machine_fingerprint(target: HardwareTarget) -> dict[str, Any]:
    """What must match for a journal to be resumed here."""
    return {"target_id": target.id, "cpu_model": target.cpu_model, "cpu_cores": target.cpu_cores,
            "gpu_model": target.gpu_model}


def journal_path(trace_path: Path) -> Path:
    """The journal file of a sweep writing ``trace_path``: the trace's path plus ``.journal.jsonl``."""
    return Path(str(trace_path) + ".journal.jsonl")


@dataclass
class Journal:
    """The append-only record of a sweep: a header line, then one line per finished row."""

    path: Path
    header: dict[str, Any]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, header: dict[str, Any], resume: bool) -> Journal:
        """The journal at ``path``: with ``resume`` and an existing file, its finished rows (refused
        when it was recorded on another machine, by ``header["fingerprint"]``); otherwise a new file
        holding ``header``."""
        path = Path(path)
        if path.exists() and resume:
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if not lines or lines[0].get("kind") != "header":
                raise ProfileError(f"journal {path} has no header line: move it away to start afresh")
            old = lines[0]
            if old.get("fingerprint") != header["fingerprint"]:
                raise ProfileError(
                    f"journal {path} was recorded on {old.get('fingerprint')}, this machine is "
                    f"{header['fingerprint']}: write to another path (or remove the journal) to start afresh"
                )
            journal = cls(path, old)
            for rec in lines[1:]:
                if rec.get("kind") == "row":
                    journal.rows[rec["key"]] = rec
            return journal
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(header) + "\n")
        return cls(path, header)

    def append(self, record: dict[str, Any]) -> None:
        """Append a finished row and flush it to disk (fsync), so an interrupted sweep resumes after it."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows[record["key"]] = record


def _reading(result: dict[str, Any], domain: str) -> tuple[float | None, str]:
    rec = (result.get("readings") or {}).get(domain)
    if not rec or rec.get("avg_power_w") is None:
        return None, EnergyMethod.UNKNOWN.value
    return float(rec["avg_power_w"]), str(rec["method"])


def trace_row(result: dict[str, Any], target: HardwareTarget) -> dict[str, Any]:
    """A journal result as a trace row (columns of :data:`placement.core.trace.COLUMNS`)."""
    spec = RowSpec(**result["spec"])
    job = result["job"]
    row: dict[str, Any] = {
        "source": "measured",
        "job_id": spec.job_id,
        "model": spec.workload,
        "family": job["family"],
        "mode": spec.mode,
        "batch_size": spec.batch_size,
        "flops_per_batch": job["flops_per_batch"],
        "param_count": job["param_count"],
        "input_elems_per_sample": job["input_elems_per_sample"],
        "input_bytes_per_sample": job["input_bytes_per_sample"],
        "dataset_size": None,
        **target_columns(target),
        "device": spec.device,
        "cpu_cores": int(min(result.get("cores_applied") or spec.cpu_cores, target.cpu_cores)),
        "gpu_mem_cap_mib": spec.gpu_mem_cap_mib,
        "feasible": bool(result["feasible"]),
        "infeasible_reason": result.get("infeasible_reason"),
    }
    if result["feasible"]:
        st = result["stats"]
        steps = int(st["kept"]) * int(st["steps_per_repeat"])
        cpu_w, cpu_m = _reading(result, "cpu")
        gpu_w, gpu_m = _reading(result, "gpu") if spec.device == "gpu" else (None, EnergyMethod.UNKNOWN.value)
        row.update(
            n_samples=steps * spec.batch_size,
            time_total_s=float(st["trimmed_mean_s"]) * steps,
            time_per_batch_s=float(st["trimmed_mean_s"]),
            time_per_batch_median_s=float(st["median_s"]),
            time_per_batch_iqr_s=float(st["iqr_s"]),
            time_cv=float(st["cv"]),
            repeats=int(st["repeats"]),
            avg_cpu_power_w=cpu_w, cpu_power_method=cpu_m,
            avg_gpu_power_w=gpu_w, gpu_power_method=gpu_m,
        )
    else:
        row.update(n_samples=None, time_total_s=None, time_per_batch_s=None, time_per_batch_median_s=None,
                   time_per_batch_iqr_s=None, time_cv=None, repeats=None,
                   avg_cpu_power_w=None, cpu_power_method="unknown", avg_gpu_power_w=None, gpu_power_method="unknown")
    return row


METHOD_TEXT = (
    "paper B timing protocol: warm-up, device sync, timed repeats (each >= 10 ms of steps), fastest and "
    "slowest dropped, rest averaged (time_per_batch_s); median, IQR and CV of repeats kept; rows with "
    "CV > 5% re-measured once, then flagged (cv_flag). CPU rows: all threads pinned (sched_setaffinity) "
    "to the first n cores and torch intra-op threads = n. GPU rows: batch copied host->GPU inside each "
    "step; cap = torch.cuda.set_per_process_memory_fraction(cap/total), model built under the cap, "
    "'grow' = no cap; OOM -> feasible=False, infeasible_reason='oom'. GPU power: NVML total-energy "
    "counter over >= 2 s windows aligned to counter updates (measured). CPU power: RAPL when readable, "
    "else modelled P = idle + (TDP - idle) x process utilisation of the target's cores (modelled); during "
    "GPU rows the same meter gives the host CPU power of eq. (2). One subprocess per (workload, device)."
)


def _environment() -> dict[str, Any]:
    """Host facts for the journal header. CUDA is never initialised in this (parent)
    process; each worker result records its own torch/CUDA/cuDNN facts."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        info["nvidia_driver"] = pynvml.nvmlSystemGetDriverVersion()
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        info["gpus"] = names
        pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver here
        pass
    return info


@dataclass
class ProfileSummary:
    """The outcome of a sweep: where the trace and journal were written, rows planned, done
    (including earlier runs' journal rows) and new in this run, whether it stopped before finishing
    (deadline or failures), and the failures' messages."""

    trace_path: Path
    journal_path: Path
    rows_planned: int
    rows_done: int
    rows_new: int
    stopped_early: bool
    failures: list[str]


def _run_group_subprocess(rows: Sequence[RowSpec], settings: ProfileSettings, target: HardwareTarget,
                          deadline_unix_s: float | None, on_result: Callable[[dict[str, Any]], None],
                          jobs: dict[str, dict[str, Any]]) -> str | None:
    """Run one group in a fresh interpreter; streams results; returns an error text or None."""
    with tempfile.TemporaryDirectory(prefix="placement-profile-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "results.jsonl"
        res.touch()
        req.write_text(json.dumps({
            "rows": [r.to_dict() for r in rows], "settings": settings.to_dict(),
            "target": target.model_dump(mode="json"), "results": str(res), "deadline_unix_s": deadline_unix_s,
            "jobs": {r.job_id: jobs[r.job_id] for r in rows if r.job_id in jobs},
        }))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        root = str(Path(__file__).resolve().parents[2])  # the checkout holding placement/
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen([sys.executable, "-m", "placement.lab.profiler", str(req)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = 0
        hard = None if deadline_unix_s is None else deadline_unix_s + 30.0

        def drain() -> None:
            nonlocal seen
            lines = res.read_text().splitlines()
            complete = lines if res.read_text().endswith("\n") else lines[:-1]
            for line in complete[seen:]:
                on_result(json.loads(line))
            seen = len(complete)

        while proc.poll() is None:
            drain()
            if hard is not None and time.time() > hard:
                proc.kill()
                proc.wait()
                drain()
                return f"group {rows[0].group}: killed at the deadline"
            time.sleep(0.2)
        drain()
        output = proc.stdout.read() if proc.stdout else ""
        if proc.returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-6:])
            return f"group {rows[0].group}: worker exited with {proc.returncode}: {tail}"
        return None


def profile(
    plan: Sequence[RowSpec],
    out_path: Path,
    target: HardwareTarget,
    settings: ProfileSettings | None = None,
    resume: bool = True,
    deadline_s: float | None = None,
    isolate: bool = True,
    progress: bool = True,
    description: str = "",
) -> ProfileSummary:
    """Run the sweep ``plan`` on ``target`` (this machine) and write the trace to ``out_path``.

    ``deadline_s`` (seconds from now) stops the sweep between rows; ``isolate=False`` runs
    groups in this process (tests). Already-journalled rows are skipped when ``resume``.
    """
    settings = settings or ProfileSettings()
    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ProfileError(f"trace path '{out_path}': use a .parquet or .csv file name")
    too_many = [r.key for r in plan if r.cpu_cores > target.cpu_cores]
    if too_many:
        raise ProfileError(f"rows ask for more cores than target {target.id} has ({target.cpu_cores}): {too_many[:3]}")
    if any(r.device == "gpu" for r in plan) and not target.has_gpu and settings.torch_device.startswith("cuda"):
        raise ProfileError(f"the plan has GPU rows but target {target.id} has no GPU: use a CPU-only plan (--no-gpu)")
    keys = [r.key for r in plan]
    if len(set(keys)) != len(keys):
        raise ProfileError("the plan repeats a row (same workload, mode, batch, device, cores, cap)")
    deadline = None if deadline_s is None else time.time() + deadline_s
    header = {
        "kind": "header", "schema": JOURNAL_SCHEMA, "fingerprint": machine_fingerprint(target),
        "target": target.model_dump(mode="json"), "settings": settings.to_dict(), "code_version": _code_version(),
        "environment": _environment(), "started_unix_s": time.time(),
    }
    journal = Journal.open(journal_path(out_path), header, resume)
    todo = [r for r in plan if r.key not in journal.rows]
    groups: dict[tuple[str, str], list[RowSpec]] = {}
    for r in todo:
        groups.setdefault(r.group, []).append(r)
    jobs = describe_rows(todo, parallel=isolate) if todo else {}
    failures: list[str] = []
    new = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), initial=len(plan) - len(todo), unit="row", desc="profile", dynamic_ncols=True)

    row_code_version = _code_version()

    def on_result(result: dict[str, Any]) -> None:
        nonlocal new
        result["code_version"] = row_code_version  # a resumed sweep may run newer code
        journal.append(result)
        new += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(result["key"][:48])

    stopped = False
    try:
        for rows in groups.values():
            if deadline is not None and time.time() + 5.0 > deadline:
                stopped = True
                break
            if isolate:
                err = _run_group_subprocess(rows, settings, target, deadline, on_result, jobs)
                if err:
                    failures.append(err)
            else:
                run_rows(rows, settings, target.model_dump(mode="json"), on_result, deadline, jobs=jobs)
            _write(journal, out_path, target, settings, description, failures)
    finally:
        if bar is not None:
            bar.close()
    _write(journal, out_path, target, settings, description, failures)
    done = sum(1 for r in plan if r.key in journal.rows)
    return ProfileSummary(out_path, journal.path, len(plan), done, new, stopped or done < len(plan), failures)


def _write(journal: Journal, out_path: Path, target: HardwareTarget, settings: ProfileSettings,
           description: str, failures: list[str]) -> None:
    if not journal.rows:
        return
    frame = pd.DataFrame([trace_row(r, target) for r in journal.rows.values()])
    header = journal.header
    env = header.get("environment", {})
    meta = TraceMeta(
        source="measured",
        description=description or f"profiler sweep on {target.id}",
        seed=settings.seed,
        code_version=str(header.get("code_version", _code_version())),
        hardware=json.dumps({"target": header.get("target"), "environment": env}, sort_keys=True),
        method=METHOD_TEXT,
        extra={
            "settings": header.get("settings"),
            "thresholds": Thresholds().as_dict(),
            "journal": journal.path.name,
            "journal_sha256": file_sha256(journal.path),
            "failures": failures,
            "cv_limit": CV_LIMIT,
        },
    )
    write_trace(frame, out_path, meta)


# --------------------------------------------------------------------------- target


def resolve_target(target_id: str = "auto") -> HardwareTarget:
    """This machine as a target. ``auto``: probe it; an H100/H200 host takes its catalogue
    entry (``h100-host``/``h200-host``) with the probed CPU model, cores and RAM. Any other
    id: that catalogue entry as is."""
    from placement.core.catalogue import get_target
    from placement.lab.probe import probe_local

    if target_id != "auto":
        return get_target(target_id)
    probed = probe_local("local")
    gpu = (probed.gpu_model or "").upper()
    for tag, entry in (("H100", "h100-host"), ("H200", "h200-host")):
        if tag in gpu:
            base = get_target(entry)
            return base.model_copy(update={
                "cpu_model": probed.cpu_model, "cpu_cores": probed.cpu_cores, "ram_gib": probed.ram_gib,
                "gpu_model": probed.gpu_model, "gpu_mem_gib": probed.gpu_mem_gib,
                "source": base.source + f" | probed here: {probed.cpu_model}, {probed.cpu_cores} cores, "
                f"{probed.ram_gib:g} GiB, {probed.gpu_model} {probed.gpu_mem_gib:g} GiB",
            })
    return probed


def plan_by_name(name: str, host_cores: int, gpu: bool, workloads: Iterable[str] | None = None) -> list[RowSpec]:
    """The rows of sweep plan ``name`` (:data:`PLANS`) for a host with ``host_cores`` cores (GPU
    rows only when ``gpu``), restricted to ``workloads`` when given; ``ProfileError`` on an unknown
    plan or workload."""
    if name not in PLANS:
        raise ProfileError(f"unknown plan '{name}'; known: {', '.join(PLANS)}")
    rows = PLANS[name](host_cores, gpu)
    if workloads:
        wanted = set(workloads)
        from placement.lab.workloads import ZOO

        unknown = wanted - set(ZOO)
        if unknown:
            raise ProfileError(f"unknown workload(s) {', '.join(sorted(unknown))}; known: {', '.join(ZOO)}")
        rows = [r for r in rows if r.workload in wanted]
    return rows


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess tests
    raise SystemExit(_worker_main(sys.argv[1:]))


__all__ = [
    "RowSpec", "ProfileSettings", "ProfileSummary", "ProfileError", "Journal", "default_plan", "smoke_plan", "pairs_plan",
    "archs_plan",
    "profile", "run_rows", "trace_row", "resolve_target", "plan_by_name", "journal_path", "machine_fingerprint",
]
