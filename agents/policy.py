"""The one policy interface every placement policy implements.

Observations are *raw* feature vectors in :data:`placement.model.features.FEATURE_NAMES` order
(``float32``, shape ``(N_FEATURES,)`` or ``(n, N_FEATURES)``); a policy that needs
normalised inputs holds its own fitted :class:`placement.model.features.Normaliser`. Actions:
``0`` = CPU, ``1`` = GPU.

* :meth:`Policy.predict` is stable-baselines3-shaped: ``(actions, state)``.
* :meth:`Policy.gpu_probability` gives P(GPU is a valid acceleration) per row (policies
  without probabilities return 0.0 or 1.0).
* :meth:`Policy.decide` answers for a typed job and target with a
  :class:`placement.core.decision.PlacementDecision` (knobs included on edge targets).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from placement.core.decision import GROW, GpuMemCap, PlacementDecision
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.outcome import CPU, as_device
from placement.model.features import build_features


def default_knobs(target: HardwareTarget, n: int) -> tuple[npt.NDArray[np.int64], list[GpuMemCap]]:
    """The machine's defaults for ``n`` jobs: all cores, ``"grow"``."""
    return np.full(n, target.cpu_cores, dtype=np.int64), [GROW] * n


def as_batch(obs: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], bool]:
    """``(n, F)`` float32 view of one or many observations, and whether it was one."""
    arr = np.asarray(obs, dtype=np.float32)
    single = arr.ndim == 1
    return (arr[None, :] if single else arr), single


class Policy(ABC):
    """Base class: subclasses implement :meth:`gpu_probability` (and may override the rest)."""

    name: str = "policy"

    @abstractmethod
    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """P(GPU) per row of raw features, shape ``(n,)``."""

    def predict(
        self, obs: npt.ArrayLike, state: object = None, episode_start: object = None, deterministic: bool = True
    ) -> tuple[npt.NDArray[np.int64], None]:
        """SB3-style ``(actions, None)``: 1 (GPU) where P(GPU) >= 0.5, else 0; a scalar for one
        observation. ``state``, ``episode_start`` and ``deterministic`` are accepted for SB3
        compatibility and ignored."""
        batch, single = as_batch(obs)
        p = self.gpu_probability(batch)
        actions = (p >= 0.5).astype(np.int64)
        return (actions[0] if single else actions), None

    def knobs(self, job: Job, target: HardwareTarget, device: int) -> tuple[int, GpuMemCap]:
        """CPU cores and GPU memory cap for a job placed on ``device``: the machine's
        defaults (all cores, ``"grow"``). Edge-aware policies override this."""
        return target.cpu_cores, GROW

    def knobs_batch(self, x: npt.ArrayLike, target: HardwareTarget, devices: npt.ArrayLike,
                    job_at: Callable[[int], Job] | None = None) -> tuple[npt.NDArray[np.int64], list[GpuMemCap]]:
        """:meth:`knobs` of many jobs at once: ``x`` their raw feature rows (:func:`feature_matrix` of
        their model columns: row ``i`` is what :func:`build_features` gives job ``i``), ``devices``
        0/1 per job. Returns ``(cpu_cores, gpu_mem_caps)``. Policies whose knobs come from their
        features answer in one forward pass (the DNN's knob heads, PPO's knob actions); this
        default answers the machine's defaults, or -- for a subclass that overrides only
        :meth:`knobs` -- asks it job by job (``job_at(i)``: the typed job ``i``)."""
        dev = np.asarray(devices, dtype=np.int64).reshape(-1)
        if type(self).knobs is Policy.knobs:
            return default_knobs(target, dev.size)
        if job_at is None:
            raise ValueError(f"{type(self).__name__} overrides knobs() only: knobs_batch needs job_at")
        answers = [self.knobs(job_at(i), target, int(d)) for i, d in enumerate(dev.tolist())]
        return np.array([a[0] for a in answers], dtype=np.int64), [a[1] for a in answers]

    def decide(self, job: Job, target: HardwareTarget) -> PlacementDecision:
        """The typed decision for one job on one target: the device (CPU when the target has no GPU)
        and its cores and GPU memory cap (:meth:`knobs`)."""
        device = int(self.predict(build_features(job, target))[0]) if target.has_gpu else CPU
        cores, cap = self.knobs(job, target, device)
        return PlacementDecision(device=as_device(device), cpu_cores=cores, gpu_mem_cap=cap)
