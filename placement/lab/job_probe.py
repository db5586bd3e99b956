"""The job probe: a short measured run of the real job on each local device.

:func:`probe_job` runs a job -- a zoo workload, a ``package.module:Factory`` or a built
module with an example batch -- on the CPU and, where CUDA is present, the GPU:

1. **warm-up**: steps until at least ``warmup_steps`` ran and ``warmup_min_s`` passed (a
   new shape's first CPU step carries one-time setup: 69 ms was seen against a 0.7 ms step,
   and on the lent H200 a tiny job's second CPU step was still up to 23x the long run's step;
   nothing is decided from a warm-up but the early exit below); a step of at least
   ``long_step_s`` ends the warm-up at once (its setup is a small part of it);
2. **timed repeats** (a small copy of the long measurements' protocol, :mod:`placement.lab.timing`):
   repeats of ``k`` steps, ``k`` chosen from the fastest warm-up step after the cold one so
   that a repeat lasts at least ``min_repeat_s``, synchronised at both ends (``torch.cuda.synchronize`` on the GPU),
   until at least ``min_repeats`` ran over at least ``min_window_s`` -- or one long step's
   repeats passed ``long_window_s`` -- and the time per step is their **median** (a slow
   repeat left over from the warm-up does not move it);
3. **order**: the GPU side first (it is cheap): build, warm-up, short timed repeats; the model
   stays on the device while the CPU side runs (its cold step, the early exit of step 7, its
   warm-up and repeats); then, unless skipped (below), the GPU's **energy window**: timed repeats
   inside the NVML total-energy counter window of at least ``gpu_energy_window_s`` (default 0.3 s:
   the counter ticks every 100 ms), read as ``measured``, whose median becomes the GPU time (the
   time and the energy describe the same steps at steady clocks); a GPU without the counter is
   sampled for power over the same window (``measured``, source ``nvml_power_samples``);
4. **energy window skipped where it cannot change the answer** (``energy='auto'``, the default;
   ``'always'`` never skips, :func:`energy_skip_reason`): when the CPU step's upper bound is
   already below ``speedup_min`` x the GPU step by ``early_exit_margin``, the speed half answers
   CPU whatever the energy. The run then reports no GPU power (``energy_skipped`` says why) and
   the service's estimate keeps the model's power, labelled ``modelled``. The window costs
   0.3-0.5 s, more than the rest of a small job's probe. (A bound on the other side -- a speedup
   so large that the GPU at its board power limit would still pass ``T_e`` -- would skip 80 of the
   210 zoo jobs' windows on the H200, but the service's estimate then has only the model's power
   and its wide sigma, and its served answers settled fewer of those jobs: clear-job agreement
   97.7 -> 96.6 % in the grounding evaluation. Not used.);
5. **host CPU power**: RAPL where readable (``measured``), else the linear utilisation model of
   :class:`placement.lab.meter.ModelledCpuMeter` (``modelled``), on CPU runs and as the host's
   share of GPU runs;
6. **GPU memory peak** (``torch.cuda.max_memory_allocated``), and ``feasible=False`` with
   ``infeasible_reason='oom'`` when the GPU runs out of memory;
7. **early exit** of the CPU side: its cold warm-up step is an upper bound of its step time and
   at most ``setup_allowance_s`` (default 0.1 s; 69 ms of one-time setup was seen) above it.
   When that step is already below ``T_t`` x the GPU step by a wide margin (``early_exit_margin``,
   default 1.25), or above it by that margin after taking the allowance off and is itself at
   least ``slow_exit_min_s`` (default 1 s) long, the speed half of the joint threshold has
   decided, the CPU's timed window is skipped, the warm-up is reported as the CPU time
   (``time_is_upper_bound``, power over the warm-up) and the result says ``early_exit`` -- slow
   CPU steps dominate a probe's cost, and this skips the second one;
8. all within ``budget_s`` (default 5 s): a device whose warm-up step alone would break
   the budget is reported with the steps it ran; the CPU side runs under the core count
   asked for (affinity and torch threads, :func:`placement.lab.knobs.cpu_cores`) and the GPU
   side under the memory cap asked for. ``phases_s`` says where the wall time went.

The result (:class:`ProbeResult`) is what ``placement probe`` prints and what a placement
request carries per job (``probes``): the service decides on it (source ``probe``) and
keeps it as evidence of the job's signature.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints

from placement.core.decision import GROW
from placement.core.job import Job
from placement.core.outcome import EnergyMethod
from placement.core.record import Record


class ProbeRun(Record):
    """One device's side of a probe. Powers in W over the timed window; time per sample in s."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    device: Literal["cpu", "gpu"] = Field(description="The device this side of the probe ran on.")
    feasible: bool = Field(default=True, description="False when the job could not run there (e.g. out of memory).")
    infeasible_reason: str | None = Field(default=None, max_length=200, description="Why it could not run (e.g. 'oom').")
    time_per_sample_s: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False,
                                            description="Timed window / (steps x batch size), s per sample.")
    avg_cpu_power_w: float | None = Field(default=None, ge=0, le=1e5, allow_inf_nan=False,
                                          description="CPU (CPU run) or host CPU (GPU run) power.")
    cpu_power_method: EnergyMethod = Field(default=EnergyMethod.UNKNOWN, description="How the CPU power was obtained.")
    avg_gpu_power_w: float | None = Field(default=None, ge=0, le=1e5, allow_inf_nan=False,
                                          description="GPU board power over the energy window, W.")
    gpu_power_method: EnergyMethod = Field(default=EnergyMethod.UNKNOWN, description="How the GPU power was obtained.")
    gpu_power_source: str | None = Field(default=None, max_length=100, description="nvml_total_energy or nvml_power_samples.")
    energy_window_s: float | None = Field(default=None, ge=0, le=1e4, allow_inf_nan=False,
                                          description="Length of the GPU energy window, s (>= 0.3 s on the NVML counter).")
    gpu_mem_peak_mib: float | None = Field(default=None, ge=0, le=1e8, allow_inf_nan=False,
                                           description="Peak GPU memory allocated, MiB.")
    warmup_s: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False, description="First (cold) step, s.")
    warmup_steps: int = Field(default=0, ge=0, le=10**9, description="Warm-up steps before the timed repeats (the cold one included).")
    timed_steps: int = Field(default=0, ge=0, le=10**9, description="Steps in the timed repeats.")
    timed_repeats: int = Field(default=0, ge=0, le=10**9, description="Timed repeats; the time per step is their median.")
    energy_skipped: Literal["speed_decides_cpu"] | None = Field(
        default=None, description="Why the GPU energy window was skipped (it could not change the answer): the "
                                  "speed half answers CPU. No GPU power is then reported.")
    time_is_upper_bound: bool = Field(default=False, description="Early exit: the time is the cold warm-up step (an upper bound).")
    timed_window_s: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False,
                                         description="Wall time of the timed repeats, s.")
    cpu_cores: int | None = Field(default=None, ge=1, le=4096, description="Cores the probe ran on.")
    gpu_mem_cap_mib: int | None = Field(default=None, ge=1, le=10**8, description="GPU memory cap it ran under, MiB (none: no cap).")

    @property
    def power_w(self) -> float | None:
        """Power counted by paper A eq. (2): CPU on CPU runs, GPU + host CPU on GPU runs."""
        if self.avg_cpu_power_w is None:
            return None
        if self.device == "gpu":
            return None if self.avg_gpu_power_w is None else self.avg_cpu_power_w + self.avg_gpu_power_w
        return self.avg_cpu_power_w

    @property
    def power_method(self) -> str:
        """How the run's power was obtained: ``measured`` only when every part counted by eq. (2)
        was, ``unknown`` when any part is, else ``modelled``."""
        methods = {str(self.cpu_power_method)} | ({str(self.gpu_power_method)} if self.device == "gpu" else set())
        if methods == {EnergyMethod.MEASURED.value}:
            return EnergyMethod.MEASURED.value
        return EnergyMethod.UNKNOWN.value if EnergyMethod.UNKNOWN.value in methods else EnergyMethod.MODELLED.value


class ProbeResult(Record):
    """A probe of one job on this host's devices (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: Job | None = Field(default=None, description="The job probed (with its signature).")
    host: str | None = Field(default=None, max_length=200, description="Host / target id the probe ran on.")
    runs: list[ProbeRun] = Field(min_length=1, max_length=2, description="One run per device probed.")
    early_exit: bool = Field(default=False, description="The CPU timed window was skipped: its warm-up step already decided the speed half.")
    wall_s: float | None = Field(default=None, ge=0, le=1e6, allow_inf_nan=False, description="Probe cost, s.")
    budget_s: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False, description="The probe's time budget, s.")
    phases_s: dict[Annotated[str, StringConstraints(max_length=32)],
                   Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]] | None = Field(
        default=None, max_length=16,
        description="Where wall_s went, s: gpu_setup, gpu_warmup, gpu_timed, cpu_setup, cpu_warmup, cpu_timed, "
                    "gpu_energy, teardown.")

    def run(self, device: str) -> ProbeRun | None:
        """The run on ``device`` (``cpu``/``gpu``), or ``None`` when that device was not probed."""
        return next((r for r in self.runs if r.device == device), None)


# --------------------------------------------------------------------------- runner


def _run(**fields: Any) -> ProbeRun:
    return ProbeRun.model_validate(fields)


def _now() -> float:
    return time.perf_counter()


@dataclass(frozen=True)
class ProbeTiming:
    """How a probe times each device (seconds; see the module docstring, steps 1-2).

    A small copy of the long measurements' protocol (:class:`placement.lab.profiler.ProfileSettings`:
    2 CPU / 3 GPU warm-up steps over >= 50 ms, repeats of >= 20 / 50 ms, a trimmed mean of >= 7),
    cut to what a probe can spend: fewer, shorter repeats and their median."""

    warmup_steps: int = 2
    gpu_warmup_steps: int = 3
    warmup_min_s: float = 0.05
    min_repeat_s: float = 0.01
    gpu_min_repeat_s: float = 0.01
    min_repeats: int = 5
    min_window_s: float = 0.05
    long_step_s: float = 0.25
    long_window_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("warmup_steps", "gpu_warmup_steps", "min_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProbeTiming.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_min_s", "min_repeat_s", "gpu_min_repeat_s", "min_window_s", "long_step_s",
                     "long_window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ProbeTiming.{name} must be a finite number of seconds >= 0, got {value}")


@dataclass(frozen=True)
class _Timed:
    step_s: float  # median repeat, s per step
    steps: int
    repeats: int
    window_s: float


def _warm_up(step: Callable[[], object], sync: Callable[[], object], *, done_steps: int, done_s: float,
             last_s: float, min_steps: int, timing: ProbeTiming, deadline: float) -> tuple[int, float]:
    """Warm-up steps after ``done_steps`` already ran (``done_s`` long, the last ``last_s``) until
    ``min_steps`` and ``warmup_min_s`` -- or a step of ``long_step_s`` or the deadline; returns
    (steps in all, the fastest step after the first one, s: what sizes the timed repeats)."""
    steps, elapsed = done_steps, done_s
    fastest = math.inf
    while ((steps < min_steps or elapsed < timing.warmup_min_s) and last_s < timing.long_step_s
           and _now() + last_s < deadline):
        t0 = _now()
        step()
        sync()
        last_s = _now() - t0
        elapsed += last_s
        steps += 1
        fastest = min(fastest, last_s)
    return steps, (last_s if math.isinf(fastest) else fastest)


def _timed_repeats(step: Callable[[], object], sync: Callable[[], object], *, per_step_s: float, min_repeat_s: float,
                   timing: ProbeTiming, deadline: float, min_window_s: float | None = None,
                   can_end: Callable[[float], bool] | None = None, hard_deadline: float | None = None) -> _Timed:
    """Synchronised repeats of ``k`` steps (see the module docstring, step 2); the median repeat per step.

    Without ``can_end``: until ``min_repeats`` over ``min_window_s``, or ``long_window_s`` passed,
    or the deadline. With it (an energy window): also until ``can_end(elapsed)``, given up at
    ``hard_deadline``."""
    window_min = timing.min_window_s if min_window_s is None else min_window_s
    k = 1 if per_step_s <= 0 or per_step_s >= min_repeat_s else max(1, math.ceil(min_repeat_s / per_step_s))
    times: list[float] = []
    sync()
    t0 = _now()
    while True:
        a = _now()
        for _ in range(k):
            step()
        sync()
        b = _now()
        times.append((b - a) / k)
        elapsed = b - t0
        ready = ((len(times) >= timing.min_repeats and elapsed >= window_min)
                 or (can_end is None and (elapsed >= timing.long_window_s or b >= deadline)))
        if ready and (can_end is None or can_end(elapsed)):
            break
        if can_end is not None and b >= (hard_deadline if hard_deadline is not None else deadline):
            break
    return _Timed(step_s=statistics.median(times), steps=k * len(times), repeats=len(times), window_s=elapsed)


EnergyMode = Literal["auto", "always"]


@dataclass(frozen=True)
class _CpuSide:
    run: ProbeRun
    early_exit: bool


def energy_skip_reason(*, cpu_step_high_s: float, gpu_step_s: float, speedup_min: float,
                       margin: float) -> str | None:
    """``speed_decides_cpu`` when even the CPU step's upper bound is faster than ``speedup_min`` x
    the GPU step by ``margin`` -- the speed half of the joint threshold answers CPU, so the GPU
    energy window cannot change the answer; else None (the window runs)."""
    if not (gpu_step_s > 0 and math.isfinite(gpu_step_s)):
        return None
    if cpu_step_high_s < speedup_min * gpu_step_s / margin:
        return "speed_decides_cpu"
    return None


class _Phases:
    """Where a probe's wall time goes (:attr:`ProbeResult.phases_s`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._at = _now()

    def mark(self, name: str) -> None:
        now = _now()
        self.seconds[name] = self.seconds.get(name, 0.0) + (now - self._at)
        self._at = now


def probe_job(
    build: Callable[[], Any],
    example: tuple[Any, Any],
    mode: str,
    *,
    job: Job | None = None,
    host: str | None = None,
    devices: tuple[str, ...] = ("cpu", "gpu"),
    budget_s: float = 5.0,
    timing: ProbeTiming | None = None,
    gpu_energy_window_s: float = 0.3,
    energy: EnergyMode = "auto",
    cpu_cores: int | None = None,
    gpu_mem_cap_mib: int | None = None,
    speedup_min: float = 2.0,
    early_exit_margin: float = 1.25,
    setup_allowance_s: float = 0.1,
    slow_exit_min_s: float = 1.0,
    cpu_tdp_w: float | None = None,
    cpu_idle_w: float | None = None,
    gpu_meter: Any = None,
    cpu_meter_factory: Callable[[], Any] | None = None,
    gpu_torch_device: str = "cuda",
) -> ProbeResult:
    """Probe a job (see the module docstring). ``build()`` makes the module; ``example`` is one
    batch ``(inputs, labels)`` on the host; ``mode`` ``infer``/``train``. ``energy``: ``auto``
    skips the GPU energy window where it cannot change the answer at ``speedup_min``
    (:func:`energy_skip_reason`), ``always`` never skips it. ``gpu_meter``,
    ``cpu_meter_factory`` and ``gpu_torch_device`` may be injected (tests run the GPU side's
    code on ``cpu`` with a replayed meter); by default NVML and RAPL-or-modelled on ``cuda``."""
    import torch

    from placement.lab.meter import cpu_meter
    from placement.lab.probe import probe_local

    if energy not in ("auto", "always"):
        raise ValueError(f"energy must be 'auto' or 'always', got {energy!r}")
    started = _now()
    deadline = started + budget_s
    phases = _Phases()
    tm = timing or ProbeTiming()
    batch = int(example[0].shape[0])
    host_t = None
    if cpu_tdp_w is None or cpu_idle_w is None:
        host_t = probe_local()
    tdp = cpu_tdp_w if cpu_tdp_w is not None else host_t.cpu_tdp_w  # type: ignore[union-attr]
    idle = cpu_idle_w if cpu_idle_w is not None else host_t.cpu_idle_w  # type: ignore[union-attr]

    def make_cpu_meter(cores: int) -> Any:
        return cpu_meter_factory() if cpu_meter_factory is not None else cpu_meter(tdp, idle, cores)

    runs: list[ProbeRun] = []
    cpu: _CpuSide | None = None
    gpu: _GpuSide | None = None
    try:
        if "gpu" in devices and (gpu_torch_device != "cuda" or torch.cuda.is_available()):
            gpu = _GpuSide(build, example, mode, tm, gpu_mem_cap_mib, gpu_meter, make_cpu_meter, gpu_energy_window_s,
                           gpu_torch_device, phases)
            gpu.start(deadline)
        gpu_step_s = gpu.step_s if gpu is not None else math.nan
        if "cpu" in devices:
            cpu = _probe_cpu(build, example, mode, batch, cpu_cores, gpu_step_s, tm, deadline, make_cpu_meter,
                             speedup_min=speedup_min, early_exit_margin=early_exit_margin,
                             setup_allowance_s=setup_allowance_s, slow_exit_min_s=slow_exit_min_s, phases=phases)
        if gpu is not None:
            skipped = None
            if gpu.feasible and energy == "auto" and cpu is not None:
                # the CPU's time per step: the timed median, or the early exit's cold step (an upper bound)
                cpu_step_s = float(cpu.run.time_per_sample_s or math.nan) * batch
                skipped = energy_skip_reason(cpu_step_high_s=cpu_step_s, gpu_step_s=gpu_step_s,
                                             speedup_min=speedup_min, margin=early_exit_margin)
            if gpu.feasible and skipped is None:
                gpu.energy_window(deadline)
            runs.append(gpu.result(batch, skipped))
    finally:
        if gpu is not None:
            gpu.close()
    phases.mark("teardown")
    if cpu is not None:
        runs.append(cpu.run)
    return ProbeResult(job=job, host=host, runs=runs, early_exit=cpu is not None and cpu.early_exit,
                       wall_s=_now() - started, budget_s=budget_s, phases_s=phases.seconds)


def _probe_cpu(build: Callable[[], Any], example: tuple[Any, Any], mode: str, batch: int, cores: int | None,
               gpu_step_s: float, tm: ProbeTiming, deadline: float, make_cpu_meter: Callable[[int], Any], *,
               speedup_min: float, early_exit_margin: float, setup_allowance_s: float, slow_exit_min_s: float,
               phases: _Phases) -> _CpuSide:
    """The CPU side (module docstring, steps 1, 2, 5 and 7) under ``cores`` (None: all usable)."""
    from placement.lab.knobs import cpu_cores as applied_cores
    from placement.lab.probe import usable_cores
    from placement.lab.workloads import make_step

    x, y = example
    with applied_cores(cores if cores is not None else usable_cores()) as used:
        model = build()
        step = make_step(model, mode)
        meter = make_cpu_meter(used)
        phases.mark("cpu_setup")
        meter.begin_window()
        t0 = _now()
        step(x, y)  # warm-up: one-time setup included, so an upper bound of a step
        warm = _now() - t0
        warm_reading = meter.end_window()
        gpu_bound = gpu_step_s * speedup_min  # the CPU step at which the speed half flips
        fast = warm * early_exit_margin < gpu_bound
        # slow side only for a step that is slow in itself: a cold step of a tiny job can carry
        # well over setup_allowance_s of one-time setup (the H200 sweep saw tiny jobs 40x off)
        slow = warm >= slow_exit_min_s and (warm - setup_allowance_s) > early_exit_margin * gpu_bound
        if fast or slow or _now() + warm > deadline:
            # the warm-up alone decides the speed half (or the budget is spent): it is the
            # measurement -- an upper bound of a step, at most setup_allowance_s too long
            phases.mark("cpu_warmup")
            run = _run(device="cpu", time_per_sample_s=warm / batch, time_is_upper_bound=True,
                       avg_cpu_power_w=warm_reading.avg_power_w,
                       cpu_power_method=warm_reading.method if warm_reading.avg_power_w is not None else "unknown",
                       energy_window_s=warm_reading.duration_s, warmup_s=warm, warmup_steps=1, timed_steps=0,
                       cpu_cores=used)
            return _CpuSide(run, fast or slow)
        warm_steps, step_s = _warm_up(lambda: step(x, y), lambda: None, done_steps=1, done_s=warm,
                                      last_s=warm, min_steps=tm.warmup_steps, timing=tm, deadline=deadline)
        phases.mark("cpu_warmup")
        meter = make_cpu_meter(used)
        meter.begin_window()
        timed = _timed_repeats(lambda: step(x, y), lambda: None, per_step_s=step_s,
                               min_repeat_s=tm.min_repeat_s, timing=tm, deadline=deadline)
        reading = meter.end_window()
        phases.mark("cpu_timed")
        run = _run(device="cpu", time_per_sample_s=timed.step_s / batch, avg_cpu_power_w=reading.avg_power_w,
                   cpu_power_method=reading.method if reading.avg_power_w is not None else "unknown",
                   warmup_s=warm, warmup_steps=warm_steps, timed_steps=timed.steps, timed_repeats=timed.repeats,
                   timed_window_s=timed.window_s, cpu_cores=used, energy_window_s=reading.duration_s)
        # the model is freed by reference counting on return (a full gc.collect() cost ~0.2 s a probe)
        return _CpuSide(run, False)


class _GpuSide:
    """The GPU side (module docstring, steps 1-6): :meth:`start` builds, warms up and times
    short synchronised repeats; the model stays on the device while the CPU side runs, then
    :meth:`energy_window` (unless skipped) times repeats inside the energy window, whose median
    becomes the GPU time; :meth:`close` frees the device."""

    def __init__(self, build: Callable[[], Any], example: tuple[Any, Any], mode: str, tm: ProbeTiming,
                 cap_mib: int | None, meter: Any, make_cpu_meter: Callable[[int], Any], window_s: float,
                 torch_device: str, phases: _Phases) -> None:
        import torch

        self._torch = torch
        self._build, self._example, self._mode, self._tm = build, example, mode, tm
        self._cap, self._meter, self._make_cpu_meter, self._window_s = cap_mib, meter, make_cpu_meter, window_s
        self._dev = torch.device(torch_device)
        self._cuda = self._dev.type == "cuda"
        self._sync: Callable[[], object] = torch.cuda.synchronize if self._cuda else (lambda: None)
        self._phases = phases
        self._stack = contextlib.ExitStack()
        self._model: Any = None
        self._step: Any = None
        self._oom = False
        self.feasible = True
        self._warm = math.nan
        self._warm_steps = 0
        self._short: _Timed | None = None
        self._window: _Timed | None = None
        self._host_short: Any = None
        self._host: Any = None
        self._gpu: Any = None

    def _run_step(self) -> None:
        x_host, y_host = self._example
        self._step(x_host.to(self._dev, non_blocking=True), y_host.to(self._dev, non_blocking=True))

    def _build_on_device(self) -> Any:
        """The module with its parameters initialised on the device (no host init and copy: 0.2 s of
        AlexNet's probe on the H200); a factory that cannot build there (e.g. it draws from a host
        random generator: the zoo's GNN) is built on the host."""
        from placement.lab.knobs import is_oom

        try:
            with self._dev:
                return self._build()
        except Exception as exc:
            if is_oom(exc):
                raise
            return self._build()

    def _synced_step(self) -> None:
        self._run_step()
        self._sync()

    def _failed(self, exc: BaseException) -> None:
        from placement.lab.knobs import is_oom

        if not is_oom(exc):
            raise exc
        self._oom = True
        self.feasible = False
        self._model = self._step = None

    def start(self, deadline: float) -> None:
        from placement.lab.knobs import TorchCudaMemory, gpu_memory_cap
        from placement.lab.meter import MeterError, NullMeter, NvmlMeter
        from placement.lab.workloads import make_step

        if self._meter is None:
            try:
                self._meter = NvmlMeter(0, min_window_s=self._window_s) if self._cuda else NullMeter("gpu")
            except MeterError:
                self._meter = NullMeter("gpu")
        if self._cuda:
            self._torch.cuda.reset_peak_memory_stats()
        try:
            if self._cuda:  # None: no cap
                self._stack.enter_context(gpu_memory_cap(GROW if self._cap is None else self._cap, TorchCudaMemory(0)))
            self._model = self._build_on_device().to(self._dev)  # .to: whatever the factory put on the host
            self._step = make_step(self._model, self._mode)
            self._phases.mark("gpu_setup")
            self._sync()
            t0 = _now()
            self._run_step()
            self._sync()
            self._warm = _now() - t0
            self._warm_steps, step_s = _warm_up(self._run_step, self._sync, done_steps=1, done_s=self._warm,
                                                last_s=self._warm, min_steps=self._tm.gpu_warmup_steps, timing=self._tm,
                                                deadline=deadline)
            self._phases.mark("gpu_warmup")
            host = self._make_cpu_meter(1)
            host.begin_window()
            self._short = _timed_repeats(self._run_step, self._sync, per_step_s=step_s,
                                         min_repeat_s=self._tm.gpu_min_repeat_s, timing=self._tm, deadline=deadline)
            self._host_short = host.end_window()
            self._phases.mark("gpu_timed")
        except Exception as exc:
            self._failed(exc)
            self._phases.mark("gpu_setup")

    @property
    def step_s(self) -> float:
        """The GPU's time per step so far (NaN when it did not run)."""
        timed = self._window or self._short
        return timed.step_s if (self.feasible and timed is not None) else math.nan

    def energy_window(self, deadline: float) -> None:
        """Synchronised repeats inside the energy window (>= ``window_s`` of counter ticks)."""
        if not self.feasible or self._short is None:
            return
        meter = self._meter
        host = self._make_cpu_meter(1)
        opened = False
        try:
            meter.begin_window(busy=self._synced_step)  # steps, not idle polling, until the counter's update
            opened = True
            host.begin_window()
            self._window = _timed_repeats(
                self._run_step, self._sync, per_step_s=self._short.step_s, min_repeat_s=self._tm.gpu_min_repeat_s,
                timing=self._tm, deadline=deadline, min_window_s=max(self._window_s, self._tm.min_window_s),
                can_end=lambda e: meter.window_can_end(e) and host.window_can_end(e),
                hard_deadline=deadline + self._window_s + 1.0)
            self._host = host.end_window()
            opened = False
            self._gpu = meter.end_window()
        except Exception as exc:
            if opened:
                with contextlib.suppress(Exception):
                    meter.end_window()
            self._window = None
            self._failed(exc)
        self._phases.mark("gpu_energy")

    def result(self, batch: int, skipped: str | None) -> ProbeRun:
        peak = self._torch.cuda.max_memory_allocated() / 2**20 if self._cuda else None
        if not self.feasible:
            return _run(device="gpu", feasible=False, infeasible_reason="oom", gpu_mem_peak_mib=peak,
                        gpu_mem_cap_mib=self._cap)
        timed = self._window or self._short
        host = self._host or self._host_short
        gpu = self._gpu
        if timed is None or host is None:  # start() times the short repeats of every feasible run
            raise RuntimeError("the GPU side was not started before its result was asked for")
        gpu_w = None if gpu is None else gpu.avg_power_w
        return _run(device="gpu", time_per_sample_s=timed.step_s / batch, avg_cpu_power_w=host.avg_power_w,
                    cpu_power_method=host.method if host.avg_power_w is not None else "unknown",
                    avg_gpu_power_w=gpu_w, gpu_power_method=gpu.method if gpu_w is not None else "unknown",
                    gpu_power_source=None if gpu is None else gpu.source,
                    energy_window_s=None if gpu is None else gpu.duration_s, energy_skipped=skipped,
                    gpu_mem_peak_mib=peak, warmup_s=self._warm, warmup_steps=self._warm_steps,
                    timed_steps=timed.steps, timed_repeats=timed.repeats, timed_window_s=timed.window_s,
                    gpu_mem_cap_mib=self._cap)

    def close(self) -> None:
        self._model = self._step = None
        self._stack.close()
        if self._oom:  # a failed step's frames may hold GPU tensors in cycles; else reference counting frees them
            gc.collect()
        if self._cuda:
            with contextlib.suppress(Exception):
                self._torch.cuda.empty_cache()


def probe_workload(name: str, batch_size: int, mode: str, *, seed: int = 0, **kwargs: Any) -> ProbeResult:
    """Probe a zoo workload at a batch size and mode (the job carries its signature)."""
    import torch

    from placement.lab.signature import workload_signature
    from placement.lab.workloads import describe_workload, get_workload, make_batch

    w = get_workload(name)
    job = describe_workload(name, batch_size, mode).model_copy(update={"signature": workload_signature(name)})
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    example = make_batch(w.dataset, batch_size, "cpu", gen)
    return probe_job(w.build, example, mode, job=job, **kwargs)


def probe_factory(path: str, family: str, input_shape: list[int], input_dtype: str, batch_size: int, mode: str, *,
                  seed: int = 0, **kwargs: Any) -> ProbeResult:
    """Probe ``package.module:Factory`` on a random batch of ``input_shape`` per sample (the job
    is described by FLOPs on ``meta`` and carries its signature)."""
    from placement.lab.signature import signature_of_factory
    from placement.lab.workloads import describe_spec, load_model_factory

    factory = load_model_factory(path)
    job = describe_spec({"model": path, "family": family, "input_shape": list(input_shape), "input_dtype": input_dtype,
                         "batch_size": batch_size, "mode": mode})
    job = job.model_copy(update={"signature": signature_of_factory(factory, input_shape, input_dtype)})
    return probe_job(factory, example_batch(input_shape, input_dtype, batch_size, seed), mode, job=job, **kwargs)


def example_batch(input_shape: list[int], input_dtype: str, batch_size: int, seed: int = 0,
                  n_classes: int = 10) -> tuple[Any, Any]:
    """A random batch ``(inputs, labels)`` on the host: floats ~ N(0, 1), integers in [0, 100)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, input_dtype)
    shape = (batch_size, *input_shape)
    x = (torch.randn(shape, generator=gen).to(dtype) if dtype.is_floating_point
         else torch.randint(0, 100, shape, generator=gen, dtype=dtype))
    y = torch.randint(0, n_classes, (batch_size,), generator=gen)
    return x, y
