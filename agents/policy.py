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

import numpy as np
import numpy.typing as npt

from placement.core.decision import GROW, GpuMemCap, PlacementDecision
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.outcome import CPU, as_device
from placement.model.features import build_features


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

    def decide(self, job: Job, target: HardwareTarget) -> PlacementDecision:
        """The typed decision for one job on one target: the device (CPU when the target has no GPU)
        and its cores and GPU memory cap (:meth:`knobs`)."""
        device = int(self.predict(build_features(job, target))[0]) if target.has_gpu else CPU
        cores, cap = self.knobs(job, target, device)
        return PlacementDecision(device=as_device(device), cpu_cores=cores, gpu_mem_cap=cap)
