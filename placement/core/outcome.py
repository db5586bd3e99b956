"""What happened when a job ran on one device: time, power, energy and how each was known.

Energy follows paper A eq. (2): the host CPU draws power during a GPU run too, so
``E_gpu = (P_cpu + P_gpu) * T_gpu`` and ``E_cpu = P_cpu * T_cpu``. Every power figure
carries its method: ``measured`` (read from a counter such as NVML or RAPL),
``modelled`` (estimated, e.g. from TDP and utilisation) or ``unknown`` (not taken).
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from placement.core.record import Record


class Device(str, Enum):
    """The device a job runs on: ``cpu`` or ``gpu``."""

    # the domain's encoding of a device (records hold its value); CPU / GPU below are its index form
    CPU = "cpu"
    GPU = "gpu"


CPU, GPU = 0, 1
"""A device as an index: a policy's action, the environment's device part, knob-table rows
(0 = CPU, 1 = GPU). Convert with :func:`device_index` and :func:`as_device`."""


def as_device(device: Device | str | int) -> Device:
    """The :class:`Device` of ``device``: a :class:`Device`, ``"cpu"``/``"gpu"``, or an index
    (:data:`CPU` = 0, :data:`GPU` = 1; not a bool). Raises ``ValueError`` naming the device."""
    if isinstance(device, Device):
        return device
    if isinstance(device, str) and device in (Device.CPU.value, Device.GPU.value):
        return Device(device)
    if isinstance(device, (int, np.integer)) and not isinstance(device, bool) and int(device) in (CPU, GPU):
        return Device.GPU if int(device) == GPU else Device.CPU
    raise ValueError(f"device must be 'cpu' or 'gpu' (or 0 = CPU, 1 = GPU), got {device!r}")


def device_index(device: Device | str | int) -> int:
    """The index (:data:`CPU` = 0, :data:`GPU` = 1) of ``device`` (as :func:`as_device` takes it)."""
    return GPU if as_device(device) is Device.GPU else CPU


class EnergyMethod(str, Enum):
    """Where an energy figure came from: ``measured`` (a power meter), ``modelled`` (a power
    model, e.g. TDP x utilisation) or ``unknown`` (no power reading)."""

    MEASURED = "measured"
    MODELLED = "modelled"
    UNKNOWN = "unknown"


def combine_methods(*methods: str) -> str:
    """The method of a sum: unknown if any part is unknown, modelled if any is modelled."""
    if EnergyMethod.UNKNOWN.value in methods:
        return EnergyMethod.UNKNOWN.value
    if EnergyMethod.MODELLED.value in methods:
        return EnergyMethod.MODELLED.value
    return EnergyMethod.MEASURED.value


class DeviceOutcome(Record):
    """The measured (or simulated) outcome of running a job on one device.

    ``time_total_s`` covers ``n_samples`` samples. A job that could not run has
    ``feasible=False`` and an ``infeasible_reason`` (``oom``, ``did_not_run``, ...).
    Powers are averages over the run, in W; ``None`` where not taken.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=True, validate_default=True)

    device: Device
    feasible: bool = True
    infeasible_reason: str | None = Field(None, max_length=200)
    n_samples: int | None = Field(None, ge=1)
    time_total_s: float | None = Field(None, gt=0)
    time_per_batch_s: float | None = Field(None, gt=0)
    avg_cpu_power_w: float | None = Field(None, ge=0)
    avg_gpu_power_w: float | None = Field(None, ge=0)
    cpu_power_method: EnergyMethod = EnergyMethod.UNKNOWN
    gpu_power_method: EnergyMethod = EnergyMethod.UNKNOWN

    @model_validator(mode="after")
    def _consistent(self) -> DeviceOutcome:
        for name in ("time_total_s", "time_per_batch_s", "avg_cpu_power_w", "avg_gpu_power_w"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number or null")
        if self.feasible:
            if self.time_total_s is None or self.n_samples is None:
                raise ValueError("a feasible outcome needs time_total_s and n_samples")
        elif not self.infeasible_reason:
            raise ValueError("an infeasible outcome needs infeasible_reason (e.g. 'oom')")
        if self.avg_cpu_power_w is None and self.cpu_power_method != EnergyMethod.UNKNOWN.value:
            raise ValueError("cpu_power_method must be 'unknown' when avg_cpu_power_w is null")
        if self.avg_gpu_power_w is None and self.gpu_power_method != EnergyMethod.UNKNOWN.value:
            raise ValueError("gpu_power_method must be 'unknown' when avg_gpu_power_w is null")
        return self

    @property
    def time_per_sample_s(self) -> float:
        """Seconds per sample (``time_total_s / n_samples``); NaN for a run that did not complete."""
        if self.time_total_s is None or self.n_samples is None:
            return math.nan
        return self.time_total_s / self.n_samples

    @property
    def power_w(self) -> float:
        """Power counted for this device's run by eq. (2); NaN when a needed part is missing."""
        cpu = self.avg_cpu_power_w
        if self.device == Device.CPU.value:
            return math.nan if cpu is None else cpu
        gpu = self.avg_gpu_power_w
        if cpu is None or gpu is None:
            return math.nan
        return cpu + gpu

    @property
    def energy_j(self) -> float:
        """Energy of the run in J by eq. (2) (:attr:`power_w` x ``time_total_s``); NaN when either
        is missing."""
        if self.time_total_s is None:
            return math.nan
        return self.power_w * self.time_total_s

    @property
    def energy_per_sample_j(self) -> float:
        """Energy per sample in J by eq. (2); NaN when power or time is missing."""
        return self.power_w * self.time_per_sample_s

    @property
    def energy_method(self) -> str:
        """How the energy was obtained: the CPU's power method on the CPU; on the GPU the least
        certain of the CPU's and the GPU's (:func:`combine_methods`)."""
        if self.device == Device.CPU.value:
            return str(self.cpu_power_method)
        return combine_methods(str(self.cpu_power_method), str(self.gpu_power_method))
