"""The knobs the service sets on edge targets: CPU cores and a GPU memory cap (paper B).

* **CPU cores** -- :func:`cpu_cores` pins every thread of this process to the first ``n``
  usable cores (``sched_setaffinity`` on each thread in ``/proc/self/task``, so thread
  pools that already exist are pinned too) and sets torch's intra-op threads to ``n``.
  ``n`` is clamped to the usable cores (affinity and cgroup quota).
* **GPU memory cap** -- :func:`gpu_memory_cap` sets
  ``torch.cuda.set_per_process_memory_fraction(cap_mib / total_mib)`` for an explicit cap,
  or the fraction 1.0 for ``"grow"`` (no cap: the caching allocator grows on demand, the
  analogue of TensorFlow's ``mem_grow`` in paper B). Cached blocks are released first so
  the cap governs what the job reserves.
* :func:`applied` applies a whole :class:`~placement.core.decision.PlacementDecision` and
  restores the previous state on exit, also when the body raises.

An allocation beyond the cap raises ``torch.OutOfMemoryError``; :func:`is_oom` recognises
it so callers record the run as infeasible (``oom``) instead of crashing.
:class:`FakeGpuMemory` enforces a cap on CPU tensors (by counting live tensor bytes in a
dispatch mode) so the OOM path is tested on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from placement.core.decision import GROW, GpuMemCap, PlacementDecision
from placement.lab.probe import usable_cores


def allowed_cores() -> list[int]:
    """CPU ids this process may run on (its affinity mask), in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def usable_core_count() -> int:
    """Cores usable here (affinity mask capped by any cgroup CPU quota): :func:`placement.lab.probe.usable_cores`."""
    return usable_cores()


def clamp_cores(n: int, available: int | None = None) -> int:
    """``n`` limited to the usable cores; raises for ``n < 1``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"cpu_cores must be a whole number >= 1, got {n!r}")
    return min(n, usable_core_count() if available is None else available)


def _thread_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def set_process_affinity(cores: list[int]) -> None:
    """Pin every thread of this process (not only the caller) to ``cores``."""
    if not cores:
        raise ValueError("set_process_affinity needs at least one core id")
    mask = set(cores)
    for tid in _thread_ids():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, mask)


def _torch() -> Any:
    import torch

    return torch


@contextlib.contextmanager
def cpu_cores(n: int, base_cores: list[int] | None = None) -> Iterator[int]:
    """Run the body on ``n`` cores (clamped): affinity of all threads + torch intra-op threads.

    Yields the number of cores applied; restores the previous affinity and thread count.
    ``base_cores`` are the cores to choose from (default: the current affinity mask).
    """
    torch = _torch()
    if base_cores is None:
        base = allowed_cores()
        effective = clamp_cores(n, min(len(base), usable_core_count()))
    else:
        base = list(base_cores)
        effective = clamp_cores(n, len(base))
    previous_mask = allowed_cores()
    previous_threads = torch.get_num_threads()
    set_process_affinity(base[:effective])
    torch.set_num_threads(effective)
    try:
        yield effective
    finally:
        set_process_affinity(previous_mask)
        torch.set_num_threads(previous_threads)


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error of torch's allocator (CUDA or fake)."""
    torch = _torch()
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class GpuMemory(Protocol):
    """What a GPU memory cap needs from an allocator."""

    def total_mib(self) -> int:
        """The device's total memory, MiB."""

    def get_fraction(self) -> float:
        """The share of total memory the process may allocate (1.0 = no cap)."""

    def set_fraction(self, fraction: float) -> None:
        """Cap the process's allocations at ``fraction`` (0 < fraction <= 1) of total memory."""

    def empty_cache(self) -> None:
        """Return cached, unused blocks to the device, so a new cap starts from live tensors only."""

    def enter(self) -> None:
        """Start enforcing the cap (before the capped run)."""

    def exit(self) -> None:
        """Stop enforcing the cap (after the capped run)."""


class TorchCudaMemory:
    """The CUDA caching allocator of one device, through torch."""

    def __init__(self, device_index: int = 0) -> None:
        torch = _torch()
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available: a GPU memory cap needs an NVIDIA GPU (or FakeGpuMemory in tests)")
        self.index = device_index
        self._fraction = 1.0

    def total_mib(self) -> int:
        """The CUDA device's total memory, MiB."""
        return int(_torch().cuda.get_device_properties(self.index).total_memory // 2**20)

    def get_fraction(self) -> float:
        """The per-process memory fraction in force (torch's, where it can report it; else the last
        one set)."""
        cuda = _torch().cuda
        getter = getattr(cuda, "get_per_process_memory_fraction", None)
        if getter is not None:
            return float(getter(self.index))
        return self._fraction

    def set_fraction(self, fraction: float) -> None:
        """``torch.cuda.set_per_process_memory_fraction`` on this device."""
        _torch().cuda.set_per_process_memory_fraction(fraction, self.index)
        self._fraction = fraction

    def empty_cache(self) -> None:
        """``torch.cuda.empty_cache``: free the caching allocator's unused blocks."""
        _torch().cuda.empty_cache()

    def enter(self) -> None:
        """Nothing to do: the CUDA allocator enforces the fraction itself."""
        return None

    def exit(self) -> None:
        """Nothing to do: the CUDA allocator enforces the fraction itself."""
        return None


class FakeGpuMemory:
    """A fake allocator limit for tests without a GPU.

    While a cap is applied (between :meth:`enter` and :meth:`exit`) every tensor that
    torch creates is counted by its storage bytes while it lives; going past
    ``total_mib x fraction`` raises ``torch.OutOfMemoryError``, as the CUDA caching
    allocator does under ``set_per_process_memory_fraction``.
    """

    def __init__(self, total_mib: int = 1024) -> None:
        if total_mib < 1:
            raise ValueError(f"total_mib must be >= 1, got {total_mib}")
        self._total = int(total_mib)
        self._fraction = 1.0
        self.live_bytes = 0
        self.peak_bytes = 0
        self._mode: Any = None
        self._seen: set[int] = set()

    def total_mib(self) -> int:
        """The fake device's memory, MiB."""
        return self._total

    def get_fraction(self) -> float:
        """The fraction set (1.0 until one is)."""
        return self._fraction

    def set_fraction(self, fraction: float) -> None:
        """Set the cap's fraction of :meth:`total_mib`; ``ValueError`` outside (0, 1]."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self._fraction = fraction

    def empty_cache(self) -> None:
        """Nothing to do: the fake allocator caches nothing."""
        return None

    @property
    def limit_bytes(self) -> int:
        """The cap in bytes: ``total_mib x fraction``."""
        return int(self._total * 2**20 * self._fraction)

    def _track(self, out: Any) -> None:
        torch = _torch()
        for t in out if isinstance(out, (list, tuple)) else (out,):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in self._seen or storage.nbytes() == 0:
                continue
            nbytes = storage.nbytes()
            if self.live_bytes + nbytes > self.limit_bytes:
                raise torch.OutOfMemoryError(
                    f"fake allocator: tried to allocate {nbytes / 2**20:.2f} MiB with "
                    f"{self.live_bytes / 2**20:.2f} MiB live of a {self.limit_bytes / 2**20:.2f} MiB cap "
                    "(out of memory)"
                )
            self._seen.add(key)
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            weakref.finalize(t, self._release, key, nbytes)

    def _release(self, key: int, nbytes: int) -> None:
        if key in self._seen:
            self._seen.discard(key)
            self.live_bytes -= nbytes

    def enter(self) -> None:
        """Start counting every tensor torch creates (a dispatch mode) against :attr:`limit_bytes`."""
        from torch.utils._python_dispatch import TorchDispatchMode

        fake = self

        class _Counting(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                fake._track(out)
                return out

        self._mode = _Counting()
        self._mode.__enter__()

    def exit(self) -> None:
        """Stop counting (leave the dispatch mode); a no-op when not entered."""
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None


def cap_fraction(cap: GpuMemCap, total_mib: int) -> float:
    """The allocator fraction for a cap in MiB (or 1.0 for ``"grow"``); raises if the cap is
    not a positive number of MiB."""
    if cap == GROW:
        return 1.0
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"gpu_mem_cap must be a positive whole number of MiB or 'grow', got {cap!r}")
    return min(1.0, cap / total_mib)


@contextlib.contextmanager
def gpu_memory_cap(cap: GpuMemCap, memory: GpuMemory | None = None) -> Iterator[float]:
    """Run the body under a GPU memory cap (MiB) or ``"grow"``; yields the fraction applied.

    Restores the previous fraction on exit. ``memory`` defaults to the CUDA allocator of
    device 0; tests pass :class:`FakeGpuMemory`.
    """
    mem = memory if memory is not None else TorchCudaMemory()
    fraction = cap_fraction(cap, mem.total_mib())
    previous = mem.get_fraction()
    mem.empty_cache()
    mem.set_fraction(fraction)
    mem.enter()
    try:
        yield fraction
    finally:
        mem.exit()
        mem.empty_cache()
        mem.set_fraction(previous)


@contextlib.contextmanager
def applied(decision: PlacementDecision, memory: GpuMemory | None = None) -> Iterator[PlacementDecision]:
    """Apply a decision's knobs (cores always; the GPU cap when the device is the GPU) and
    restore the previous state on exit. Yields the decision as applied (cores clamped)."""
    with cpu_cores(decision.cpu_cores) as cores:
        effective = decision.model_copy(update={"cpu_cores": cores})
        if decision.device == "gpu":
            with gpu_memory_cap(decision.gpu_mem_cap, memory):
                yield effective
        else:
            yield effective
