"""Knobs: cores (affinity of every thread + intra-op threads) and GPU memory caps, restored on exit."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from placement.core.decision import PlacementDecision
from placement.lab.knobs import (
    FakeGpuMemory,
    TorchCudaMemory,
    applied,
    cap_fraction,
    clamp_cores,
    cpu_cores,
    gpu_memory_cap,
    is_oom,
    usable_core_count,
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_clamp_cores():
    assert clamp_cores(1) == 1
    assert clamp_cores(10_000) == usable_core_count()
    assert clamp_cores(3, available=2) == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="cpu_cores"):
            clamp_cores(bad)  # type: ignore[arg-type]


def test_cpu_cores_pins_every_thread_and_restores():
    mask_before = os.sched_getaffinity(0)
    threads_before = torch.get_num_threads()
    ready, stop = threading.Event(), threading.Event()
    tid: list[int] = []

    def worker() -> None:
        tid.append(threading.get_native_id())
        ready.set()
        stop.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    ready.wait(5)
    try:
        with cpu_cores(1) as n:
            assert n == 1
            assert len(os.sched_getaffinity(0)) == 1
            assert os.sched_getaffinity(tid[0]) == os.sched_getaffinity(0)  # a thread started earlier too
            assert torch.get_num_threads() == 1
        assert os.sched_getaffinity(0) == mask_before
        assert os.sched_getaffinity(tid[0]) == mask_before
        assert torch.get_num_threads() == threads_before
        with cpu_cores(10_000) as n:  # clamped to what is usable
            assert n == usable_core_count()
    finally:
        stop.set()
        t.join()


def test_cpu_cores_restores_after_an_error():
    mask_before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError), cpu_cores(1):
        raise RuntimeError("job failed")
    assert os.sched_getaffinity(0) == mask_before


def test_cap_fraction():
    assert cap_fraction("grow", 1000) == 1.0
    assert cap_fraction(250, 1000) == 0.25
    assert cap_fraction(5000, 1000) == 1.0
    for bad in (0, -5, 1.5, "big", True):
        with pytest.raises(ValueError, match="gpu_mem_cap"):
            cap_fraction(bad, 1000)  # type: ignore[arg-type]


def test_fake_allocator_cap_raises_oom_and_restores():
    mem = FakeGpuMemory(total_mib=16)
    with gpu_memory_cap(4, mem) as fraction:
        assert fraction == 0.25 and mem.get_fraction() == 0.25
        ok = torch.empty(512 * 1024, dtype=torch.float32)  # 2 MiB fits
        with pytest.raises(torch.OutOfMemoryError) as info:
            torch.empty(1024 * 1024, dtype=torch.float32)  # +4 MiB does not
        assert is_oom(info.value)
        del ok
        again = torch.empty(1024 * 1024, dtype=torch.float32)  # freed memory is reusable
        assert again.numel() == 1024 * 1024
    assert mem.get_fraction() == 1.0
    torch.empty(8 * 1024 * 1024)  # no cap outside the block


def test_fake_allocator_sees_training_memory():
    model = torch.nn.Linear(256, 256)
    x = torch.randn(64, 256)
    with pytest.raises(torch.OutOfMemoryError), gpu_memory_cap(1, FakeGpuMemory(total_mib=1024)):
        torch.nn.Linear(1024, 1024)  # 4 MiB of weights under a 1 MiB cap
    with gpu_memory_cap("grow", FakeGpuMemory(total_mib=1024)):
        model(x).sum().backward()
    assert model.weight.grad is not None


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("x"))
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


def test_applied_sets_and_restores_a_decision():
    mem = FakeGpuMemory(total_mib=100)
    mask_before = os.sched_getaffinity(0)
    gpu = PlacementDecision(device="gpu", cpu_cores=1, gpu_mem_cap=50)
    with applied(gpu, mem) as d:
        assert d.cpu_cores == 1 and len(os.sched_getaffinity(0)) == 1
        assert mem.get_fraction() == 0.5
    assert mem.get_fraction() == 1.0 and os.sched_getaffinity(0) == mask_before
    with applied(PlacementDecision(device="cpu", cpu_cores=4096), mem) as d:
        assert d.cpu_cores == usable_core_count() and mem.get_fraction() == 1.0
    with pytest.raises(torch.OutOfMemoryError), applied(gpu, mem):
        torch.empty(60 * 2**20, dtype=torch.uint8)
    assert mem.get_fraction() == 1.0 and os.sched_getaffinity(0) == mask_before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_memory_needs_a_gpu():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        TorchCudaMemory()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_real_cuda_cap_is_an_oom_outcome():
    mem = TorchCudaMemory(0)
    with gpu_memory_cap(64, mem):
        torch.empty(16 * 2**20, dtype=torch.uint8, device="cuda")
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    assert mem.get_fraction() == 1.0
    torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
