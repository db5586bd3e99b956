"""Probe the local machine into a :class:`~placement.core.hardware.HardwareTarget`.

Usable cores honour CPU affinity and a cgroup v2/v1 CPU quota. GPUs are read through
nvidia-ml-py; on a machine with no NVIDIA driver ``nvmlInit`` raises and the probe
returns a CPU-only target -- never a crash. Throughput figures of unknown parts are
estimates (a CPU's FLOP/cycle from its SIMD flags, a GPU's peak from its SM count and
clock), and the target's ``source`` says so.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import psutil

from placement.core.hardware import HardwareTarget

# FP32 FLOPs per clock per SM (CUDA cores per SM x 2 for FMA) by compute capability major.
_FLOPS_PER_SM_CLOCK = {7: 128, 8: 256, 9: 256, 10: 256, 12: 256}


@dataclass(frozen=True)
class GpuInfo:
    """The local GPU as the catalogue describes a target's: name, memory (GiB), TDP (W), peak
    GFLOP/s and memory bandwidth (GB/s)."""

    name: str
    mem_gib: float
    tdp_w: float
    gflops: float
    mem_bw_gbs: float


def usable_cores(proc_root: Path = Path("/")) -> int:
    """Cores this process may use: affinity, then any cgroup CPU quota, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(proc_root)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota/period``), or None."""
    v2 = root / "sys/fs/cgroup/cpu.max"
    try:
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        q1 = root / "sys/fs/cgroup/cpu/cpu.cfs_quota_us"
        p1 = root / "sys/fs/cgroup/cpu/cpu.cfs_period_us"
        if q1.exists() and p1.exists():
            quota_us = int(q1.read_text())
            return None if quota_us <= 0 else quota_us / int(p1.read_text())
    except (OSError, ValueError):
        return None
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _flops_per_cycle() -> int:
    """FP32 FLOPs per core per cycle from SIMD flags: AVX-512 64, AVX2+FMA 32, else 16."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 16
    if " avx512f" in flags:
        return 64
    if " avx2" in flags and " fma" in flags:
        return 32
    return 16


def probe_gpus() -> list[GpuInfo]:
    """GPUs seen through NVML; an empty list when there is no driver or library."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml.NVMLError and OSError when libnvidia-ml is absent
        return []
    gpus: list[GpuInfo] = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            mem_gib = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            try:
                tdp_w = pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle) / 1000.0
            except pynvml.NVMLError:
                tdp_w = 300.0
            try:
                major, _ = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                sms = pynvml.nvmlDeviceGetNumGpuCores(handle) // (_FLOPS_PER_SM_CLOCK.get(major, 256) // 2)
                clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
                gflops = sms * _FLOPS_PER_SM_CLOCK.get(major, 256) * clock_mhz / 1000.0
            except (pynvml.NVMLError, AttributeError):
                gflops = 10000.0
            try:
                bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
                mem_clock = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
                bw = bus_bits / 8 * mem_clock * 2 / 1000.0
            except (pynvml.NVMLError, AttributeError):
                bw = 500.0
            gpus.append(GpuInfo(name, mem_gib, tdp_w, gflops, bw))
    except pynvml.NVMLError:
        return gpus
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return gpus


def probe_local(target_id: str = "local") -> HardwareTarget:
    """This machine as a target. With no NVIDIA driver: a CPU-only target."""
    cores = usable_cores()
    fpc = _flops_per_cycle()
    freq = psutil.cpu_freq()
    ghz = (freq.max or freq.current) / 1000.0 if freq and (freq.max or freq.current) else 2.5
    ram_gib = psutil.virtual_memory().total / 2**30
    gpus = probe_gpus()
    common: dict[str, object] = {
        "id": target_id,
        "cpu_model": _cpu_model(),
        "cpu_cores": cores,
        "cpu_gflops": round(cores * fpc * ghz, 1),
        "cpu_tdp_w": round(max(10.0, 6.0 * cores), 1),
        "ram_gib": round(ram_gib, 2),
        "cpu_idle_w": round(max(2.0, 1.5 * cores), 1),
    }
    source = (
        f"probed on {platform.node()}: {cores} usable cores, {fpc} FP32 FLOP/cycle from SIMD flags "
        f"at {ghz:.2f} GHz; CPU TDP estimated as 6 W/core"
    )
    if not gpus:
        return HardwareTarget.model_validate({**common, "kind": "desktop", "source": source + "; no NVIDIA GPU"})
    gpu = gpus[0]
    return HardwareTarget.model_validate(
        {
            **common,
            "kind": "server",
            "gpu_model": gpu.name,
            "gpu_gflops": round(gpu.gflops, 1),
            "gpu_mem_gib": round(gpu.mem_gib, 2),
            "gpu_tdp_w": gpu.tdp_w,
            "gpu_mem_bw_gbs": round(gpu.mem_bw_gbs, 1),
            "gpu_idle_w": round(0.1 * gpu.tdp_w, 1),
            "host_link_gbs": 32.0,
            "source": source + f"; GPU 0 of {len(gpus)} from NVML (peak from SM count x clock)",
        }
    )
