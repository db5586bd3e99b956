"""Energy meters: one interface, one class per source, each reading labelled with its method.

Every meter measures *windows*, as Zeus does: :meth:`EnergyMeter.begin_window` opens one,
:meth:`EnergyMeter.end_window` closes it and returns an :class:`EnergyReading` with the
window's duration (s), energy (J), average power (W), the **method** (``measured`` by a
counter or sensor, ``modelled`` from a model, ``unknown``) and the source.

==================  =========  ==========================================================
meter               method     source
==================  =========  ==========================================================
:class:`NvmlMeter`  measured   NVML total-energy counter (mJ) read at counter updates;
                               GPUs without it: NVML instant power sampled and integrated
:class:`RaplMeter`  measured   Linux powercap RAPL ``energy_uj`` of the CPU packages,
                               wrap-around handled with ``max_energy_range_uj``
:class:`ModelledCpuMeter`      modelled: linear TDP x utilisation model (below)
:class:`Ina3221Meter` measured Jetson INA3221 power-monitor rails in sysfs, sampled
:class:`NullMeter`  unknown    no hardware: duration only
:class:`ReplayMeter`  as recorded  readings recorded earlier, replayed in order (tests)
==================  =========  ==========================================================

**NVML counter windows.** ``nvmlDeviceGetTotalEnergyConsumption`` is a cumulative counter
that the driver updates in steps (every 100 ms on Hopper). A window is aligned to those
updates: :meth:`NvmlMeter.begin_window` waits for the counter to change and starts the
window at that instant; :meth:`NvmlMeter.window_can_end` (polled by the timing loop
between repeats of the work) reports ``True`` at the first change after
``min_window_s`` (default 2 s), and :meth:`NvmlMeter.end_window` closes the window at that
change. Both edges therefore fall on counter updates while the work runs, and the
energy is the exact counter difference over a window of >= 2 s (one update is <= 5 % of it).

**Modelled CPU power** (used where RAPL is not readable, e.g. the lent cloud VMs)::

    P_cpu = P_idle + (P_tdp - P_idle) * u,   u = (CPU seconds of this process) / (wall s * cores)

with ``P_tdp`` and ``P_idle`` the target's ``cpu_tdp_w`` and ``cpu_idle_w`` and ``cores``
its usable cores; ``u`` is clipped to [0, 1]. This is the linear utilisation model of
Fan, Weber and Barroso (ISCA 2007); it counts the idle floor (as paper A's measured CPU
powers of 28-46 W do) and charges the process for the share of cores it keeps busy. During
a GPU run the same model gives the *host* CPU power of eq. (2) (the launching thread keeps
about one core busy). Readings say ``modelled``.

**INA3221** (Jetson boards): rails appear either as hwmon files (JetPack 5+:
``in<N>_label``, ``in<N>_input`` in mV, ``curr<N>_input`` in mA) or as the older iio
driver's ``rail_name_<N>`` and ``in_power<N>_input`` (mW). The meter samples the chosen
rails every ``interval_s`` in a thread and integrates power over the window (trapezoids).
"""

from __future__ import annotations

import json
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from placement.core.outcome import EnergyMethod


@dataclass(frozen=True)
class EnergyReading:
    """One window's energy. ``energy_j``/``avg_power_w`` are ``None`` when not taken."""

    domain: str  # "cpu" | "gpu" | a rail name
    duration_s: float
    energy_j: float | None
    avg_power_w: float | None
    method: str  # EnergyMethod value
    source: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.method not in {m.value for m in EnergyMethod}:
            raise ValueError(f"EnergyReading.method must be measured, modelled or unknown, got {self.method!r}")
        if (self.energy_j is None) != (self.avg_power_w is None):
            raise ValueError("EnergyReading: give both energy_j and avg_power_w, or neither")
        if self.energy_j is None and self.method != EnergyMethod.UNKNOWN.value:
            raise ValueError("EnergyReading: a reading without energy must have method 'unknown'")

    def to_dict(self) -> dict[str, Any]:
        """The reading as a plain dict (as journals store it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnergyReading:
        """A reading from :meth:`to_dict` output (unknown keys ignored)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class MeterError(RuntimeError):
    """A meter that cannot be used here (no hardware, unreadable files, window misuse)."""


class EnergyMeter(ABC):
    """Begin/end windows of energy for one domain (a GPU, the CPU packages, a rail)."""

    domain: str = "cpu"
    min_window_s: float = 0.0
    """Shortest window the meter measures well (s); the timing loop runs at least this long."""

    def __init__(self) -> None:
        self._open_at: float | None = None
        self._busy: Callable[[], object] | None = None

    def begin_window(self, busy: Callable[[], object] | None = None) -> None:
        """Open a measurement window; :class:`MeterError` when one is already open. ``busy``: one
        step of the measured work, run by a meter whose window opens on a counter update while it
        waits for one (the device stays at its steady state and no wall time idles); other
        meters ignore it."""
        if self._open_at is not None:
            raise MeterError(f"{type(self).__name__}: a window is already open (call end_window first)")
        self._busy = busy
        try:
            self._begin()
        finally:
            self._busy = None
        if self._open_at is None:
            self._open_at = time.perf_counter()

    def window_can_end(self, elapsed_s: float) -> bool:
        """Whether the window may close now (asked between repeats of the measured work)."""
        return elapsed_s >= self.min_window_s

    def end_window(self) -> EnergyReading:
        """Close the open window and return its energy reading; :class:`MeterError` when none is open."""
        if self._open_at is None:
            raise MeterError(f"{type(self).__name__}: no window is open (call begin_window first)")
        try:
            return self._end()
        finally:
            self._open_at = None

    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _end(self) -> EnergyReading: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles (NVML, threads)."""


# --------------------------------------------------------------------------- null / replay


class NullMeter(EnergyMeter):
    """No energy source: windows give their duration and ``method='unknown'``."""

    def __init__(self, domain: str = "cpu") -> None:
        super().__init__()
        self.domain = domain

    def _begin(self) -> None:
        self._open_at = time.perf_counter()

    def _end(self) -> EnergyReading:
        assert self._open_at is not None
        return EnergyReading(self.domain, time.perf_counter() - self._open_at, None, None,
                             EnergyMethod.UNKNOWN.value, "none")


class ReplayMeter(EnergyMeter):
    """Replays recorded readings, one per window, in order (so tests run on any machine).

    The reading's power and method are replayed as recorded; its energy is rescaled to
    this window's real duration (``power x duration``) unless ``keep_energy`` is set.
    """

    def __init__(self, readings: Iterable[EnergyReading], domain: str | None = None,
                 keep_energy: bool = False, cycle: bool = False) -> None:
        super().__init__()
        self._readings = list(readings)
        if not self._readings:
            raise MeterError("ReplayMeter needs at least one recorded reading")
        self.domain = domain or self._readings[0].domain
        self._next = 0
        self._keep = keep_energy
        self._cycle = cycle

    @classmethod
    def from_jsonl(cls, path: Path, domain: str | None = None, **kwargs: Any) -> ReplayMeter:
        """Readings from a JSON-lines file (one :meth:`EnergyReading.to_dict` per line);
        lines with a ``domain`` other than ``domain`` are skipped when it is given."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"replay file not found: {path}")
        readings = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                reading = EnergyReading.from_dict(data)
            except (json.JSONDecodeError, TypeError, ValueError) as exc:
                raise MeterError(f"replay file {path}, line {n}: not a recorded reading ({exc})") from exc
            if domain is None or reading.domain == domain:
                readings.append(reading)
        return cls(readings, domain=domain, **kwargs)

    @property
    def remaining(self) -> int:
        """Readings not replayed yet."""
        return len(self._readings) - self._next

    def _begin(self) -> None:
        if self._next >= len(self._readings):
            if not self._cycle:
                raise MeterError(f"ReplayMeter: all {len(self._readings)} recorded readings used")
            self._next = 0
        self._open_at = time.perf_counter()

    def _end(self) -> EnergyReading:
        assert self._open_at is not None
        duration = time.perf_counter() - self._open_at
        rec = self._readings[self._next]
        self._next += 1
        if rec.avg_power_w is None or self._keep:
            energy, power = rec.energy_j, rec.avg_power_w
            duration = rec.duration_s if self._keep else duration
        else:
            power = rec.avg_power_w
            energy = power * duration
        return EnergyReading(self.domain, duration, energy, power, rec.method, rec.source,
                             detail=f"replayed #{self._next}")


# --------------------------------------------------------------------------- modelled CPU


def _process_cpu_seconds() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return float(t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0))


class ModelledCpuMeter(EnergyMeter):
    """CPU power from the linear TDP x utilisation model (module docstring); ``modelled``."""

    domain = "cpu"

    def __init__(self, tdp_w: float, idle_w: float, cores: int,
                 cpu_seconds: Callable[[], float] = _process_cpu_seconds) -> None:
        super().__init__()
        if not (math.isfinite(tdp_w) and tdp_w > 0):
            raise ValueError(f"tdp_w must be a finite power in W > 0, got {tdp_w}")
        if not (math.isfinite(idle_w) and 0 <= idle_w <= tdp_w):
            raise ValueError(f"idle_w must be in [0, tdp_w={tdp_w}] W, got {idle_w}")
        if cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores}")
        self.tdp_w, self.idle_w, self.cores = float(tdp_w), float(idle_w), int(cores)
        self._cpu_seconds = cpu_seconds
        self._cpu0 = 0.0

    def power_w(self, utilisation: float) -> float:
        """Modelled power (W) at a utilisation in [0, 1] of the target's cores."""
        u = min(1.0, max(0.0, utilisation))
        return self.idle_w + (self.tdp_w - self.idle_w) * u

    def _begin(self) -> None:
        self._cpu0 = self._cpu_seconds()
        self._open_at = time.perf_counter()

    def _end(self) -> EnergyReading:
        assert self._open_at is not None
        duration = time.perf_counter() - self._open_at
        busy = max(0.0, self._cpu_seconds() - self._cpu0)
        util = busy / (duration * self.cores) if duration > 0 else 0.0
        power = self.power_w(util)
        return EnergyReading(
            "cpu", duration, power * duration, power, EnergyMethod.MODELLED.value, "tdp_utilisation_model",
            detail=f"u={min(1.0, util):.4f} of {self.cores} cores; P=idle {self.idle_w:g} W + "
            f"(TDP {self.tdp_w:g} - idle) x u",
        )


# --------------------------------------------------------------------------- RAPL


@dataclass(frozen=True)
class RaplDomain:
    """A RAPL package domain: its name, cumulative energy counter file (µJ) and the counter's
    wrap-around range (µJ)."""

    name: str
    energy_file: Path
    max_range_uj: int


def rapl_domains(root: Path = Path("/sys/class/powercap")) -> list[RaplDomain]:
    """Readable top-level RAPL package domains under ``root`` (empty when none)."""
    found = []
    if not root.is_dir():
        return []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:  # sub-zones (core, uncore, dram) are inside packages
            continue
        try:
            name = (zone / "name").read_text().strip()
            int((zone / "energy_uj").read_text())
            max_range = int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        if name.startswith("package") or name == "psys":
            found.append(RaplDomain(name, zone / "energy_uj", max_range))
    packages = [d for d in found if d.name.startswith("package")]
    return packages or found


class RaplMeter(EnergyMeter):
    """CPU package energy from RAPL (``measured``), summed over packages, wrap-around handled.

    RAPL counts the whole package, not this process's share of it.
    """

    domain = "cpu"

    def __init__(self, root: Path = Path("/sys/class/powercap")) -> None:
        super().__init__()
        self.domains = rapl_domains(Path(root))
        if not self.domains:
            raise MeterError(f"no readable RAPL package domain under {root} (needs read access to energy_uj)")
        self._start: list[int] = []

    @staticmethod
    def delta_uj(start: int, end: int, max_range_uj: int) -> int:
        """Counter difference in uJ, allowing for one wrap-around at ``max_range_uj``."""
        return end - start if end >= start else end + max_range_uj - start

    def _read(self) -> list[int]:
        try:
            return [int(d.energy_file.read_text()) for d in self.domains]
        except (OSError, ValueError) as exc:
            raise MeterError(f"RAPL read failed: {exc}") from exc

    def _begin(self) -> None:
        self._start = self._read()
        self._open_at = time.perf_counter()

    def _end(self) -> EnergyReading:
        assert self._open_at is not None
        end = self._read()
        duration = time.perf_counter() - self._open_at
        uj = sum(self.delta_uj(s, e, d.max_range_uj) for s, e, d in zip(self._start, end, self.domains, strict=True))
        energy = uj / 1e6
        power = energy / duration if duration > 0 else 0.0
        return EnergyReading("cpu", duration, energy, power, EnergyMethod.MEASURED.value, "rapl",
                             detail="+".join(d.name for d in self.domains))


# --------------------------------------------------------------------------- sampling


class _Sampler:
    """Samples ``read_w()`` every ``interval_s`` in a thread; integrates with trapezoids."""

    def __init__(self, read_w: Callable[[], float], interval_s: float) -> None:
        self._read = read_w
        self._interval = interval_s
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        self._samples = [(time.perf_counter(), self._read())]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._samples.append((time.perf_counter(), self._read()))
            except Exception as exc:  # noqa: BLE001 - reported at stop()
                self._error = exc
                return

    def stop(self) -> tuple[float, float, int]:
        """``(duration_s, energy_j, samples)``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise MeterError(f"power sampling failed: {self._error}")
        self._samples.append((time.perf_counter(), self._read()))
        energy = 0.0
        for (t0, p0), (t1, p1) in zip(self._samples, self._samples[1:], strict=False):
            energy += 0.5 * (p0 + p1) * (t1 - t0)
        return self._samples[-1][0] - self._samples[0][0], energy, len(self._samples)


# --------------------------------------------------------------------------- NVML


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        raise MeterError("nvidia-ml-py (pynvml) is not installed") from exc
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError, OSError: no driver or no libnvidia-ml
        raise MeterError(f"NVML is not available here (no NVIDIA driver?): {exc}") from exc
    return pynvml


class NvmlMeter(EnergyMeter):
    """GPU energy through NVML (``measured``): the total-energy counter, tick-aligned windows
    of at least ``min_window_s``; GPUs without the counter fall back to instant power
    sampled every ``interval_s`` and integrated. ``nvml`` may be injected (tests)."""

    domain = "gpu"

    def __init__(self, index: int = 0, min_window_s: float = 2.0, interval_s: float = 0.02,
                 tick_timeout_s: float = 0.5, nvml: Any = None) -> None:
        super().__init__()
        self._nv = nvml if nvml is not None else _nvml()
        try:
            self._handle = self._nv.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            raise MeterError(f"NVML: no GPU with index {index}: {exc}") from exc
        self.index = index
        self.tick_timeout_s = tick_timeout_s
        self.interval_s = interval_s
        try:
            self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.has_counter = True
        except Exception:  # NVMLError_NotSupported on pre-Volta GPUs
            self.has_counter = False
        self.min_window_s = min_window_s if self.has_counter else 0.0
        self._e0 = 0
        self._pending: tuple[float, int] | None = None
        self._last_seen: int | None = None
        self._sampler: _Sampler | None = None

    def _energy_mj(self) -> int:
        return int(self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def _power_w(self) -> float:
        return float(self._nv.nvmlDeviceGetPowerUsage(self._handle)) / 1000.0

    def _wait_tick(self) -> tuple[float, int]:
        """Poll until the counter changes (running the window's ``busy`` step between polls where
        one was given, else sleeping 0.5 ms); returns (time, value) of the change."""
        start = self._energy_mj()
        deadline = time.perf_counter() + self.tick_timeout_s
        busy = self._busy
        while True:
            value = self._energy_mj()
            now = time.perf_counter()
            if value != start:
                return now, value
            if now > deadline:
                return now, value  # an idle GPU may not tick: take the window as is
            if busy is not None:
                busy()
            else:
                time.sleep(0.0005)

    def _begin(self) -> None:
        self._pending = None
        if self.has_counter:
            self._open_at, self._e0 = self._wait_tick()
            self._last_seen = None
        else:
            self._sampler = _Sampler(self._power_w, self.interval_s)
            self._sampler.start()
            self._open_at = time.perf_counter()

    def window_can_end(self, elapsed_s: float) -> bool:
        """Whether the window may close: with the energy counter, once ``min_window_s`` has passed
        and the counter has updated since (the window then ends at that update); without it (power
        sampling), once ``min_window_s`` has passed."""
        if not self.has_counter:
            return elapsed_s >= self.min_window_s
        if self._pending is not None:
            return True
        if self._open_at is None or time.perf_counter() - self._open_at < self.min_window_s:
            return False
        value = self._energy_mj()
        if self._last_seen is None:  # first look past the minimum: the baseline to watch
            self._last_seen = value
            return False
        if value != self._last_seen:  # an update happened during the last repeat
            self._pending = (time.perf_counter(), value)
            return True
        return False

    def _end(self) -> EnergyReading:
        assert self._open_at is not None
        if not self.has_counter:
            assert self._sampler is not None
            duration, energy, n = self._sampler.stop()
            self._sampler = None
            power = energy / duration if duration > 0 else 0.0
            return EnergyReading("gpu", duration, energy, power, EnergyMethod.MEASURED.value, "nvml_power_samples",
                                 detail=f"{n} samples every {self.interval_s * 1000:g} ms")
        t1, e1 = self._pending if self._pending is not None else self._wait_tick()
        duration = t1 - self._open_at
        energy = (e1 - self._e0) / 1000.0
        power = energy / duration if duration > 0 else 0.0
        return EnergyReading("gpu", duration, energy, power, EnergyMethod.MEASURED.value, "nvml_total_energy",
                             detail=f"counter window aligned to updates, {duration:.3f} s")

    def close(self) -> None:
        """Stop the power sampler if one is running."""
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None


# --------------------------------------------------------------------------- INA3221


@dataclass(frozen=True)
class Ina3221Rail:
    """A power rail of an INA3221 monitor (Jetson boards): a power file in mW (iio layout), or
    voltage (mV) and current (mA) files (hwmon layout)."""

    name: str
    power_file: Path | None = None  # iio: mW
    volt_file: Path | None = None  # hwmon: mV
    curr_file: Path | None = None  # hwmon: mA

    def read_w(self) -> float:
        """The rail's power now, W (from mW, or mV x mA)."""
        if self.power_file is not None:
            return int(self.power_file.read_text()) / 1000.0
        assert self.volt_file is not None and self.curr_file is not None
        return int(self.volt_file.read_text()) * int(self.curr_file.read_text()) / 1e6


_INA_GLOBS = (
    "bus/i2c/drivers/ina3221*/*/hwmon/hwmon*",
    "bus/i2c/drivers/ina3221*/*/iio:device*",
    "class/hwmon/hwmon*",
)


def ina3221_rails(sys_root: Path = Path("/sys")) -> list[Ina3221Rail]:
    """INA3221 rails found under ``sys_root`` (hwmon or iio layout); empty when none."""
    rails: dict[str, Ina3221Rail] = {}
    for pattern in _INA_GLOBS:
        for dev in sorted(Path(sys_root).glob(pattern)):
            name_file = dev / "name"
            if pattern.startswith("class/hwmon") and not (
                name_file.exists() and name_file.read_text().strip().startswith("ina3221")
            ):
                continue
            for label in sorted(dev.glob("in*_label")):
                n = label.name[2:-6]
                volt, curr = dev / f"in{n}_input", dev / f"curr{n}_input"
                if volt.exists() and curr.exists():
                    name = label.read_text().strip()
                    rails.setdefault(name, Ina3221Rail(name, volt_file=volt, curr_file=curr))
            for rail in sorted(dev.glob("rail_name_*")):
                n = rail.name.rsplit("_", 1)[1]
                power = dev / f"in_power{n}_input"
                if power.exists():
                    name = rail.read_text().strip()
                    rails.setdefault(name, Ina3221Rail(name, power_file=power))
    return list(rails.values())


class Ina3221Meter(EnergyMeter):
    """Jetson INA3221 rails (``measured``), sampled and integrated over the window.

    ``rails`` picks rails by name (e.g. ``("VDD_CPU_GPU_CV",)`` on Orin, ``("POM_5V_CPU",)``
    on Nano); by default all rails found are summed.
    """

    def __init__(self, domain: str = "cpu", rails: Sequence[str] | None = None,
                 sys_root: Path = Path("/sys"), interval_s: float = 0.02) -> None:
        super().__init__()
        found = ina3221_rails(Path(sys_root))
        if not found:
            raise MeterError(f"no INA3221 power rails under {sys_root} (not a Jetson, or no read access)")
        if rails is not None:
            by_name = {r.name: r for r in found}
            missing = [r for r in rails if r not in by_name]
            if missing:
                raise MeterError(f"INA3221 rail(s) {', '.join(missing)} not found; present: {', '.join(by_name)}")
            found = [by_name[r] for r in rails]
        self.domain = domain
        self.rails = found
        self.interval_s = interval_s
        self._sampler: _Sampler | None = None

    def read_w(self) -> float:
        """The summed power of every rail now, W; :class:`MeterError` when a rail cannot be read."""
        try:
            return sum(r.read_w() for r in self.rails)
        except (OSError, ValueError) as exc:
            raise MeterError(f"INA3221 read failed: {exc}") from exc

    def _begin(self) -> None:
        self._sampler = _Sampler(self.read_w, self.interval_s)
        self._sampler.start()
        self._open_at = time.perf_counter()

    def _end(self) -> EnergyReading:
        assert self._sampler is not None
        duration, energy, n = self._sampler.stop()
        self._sampler = None
        power = energy / duration if duration > 0 else 0.0
        return EnergyReading(self.domain, duration, energy, power, EnergyMethod.MEASURED.value, "ina3221",
                             detail="+".join(r.name for r in self.rails) + f", {n} samples")


# --------------------------------------------------------------------------- choice


def cpu_meter(tdp_w: float, idle_w: float, cores: int, powercap_root: Path = Path("/sys/class/powercap"),
              sys_root: Path = Path("/sys")) -> EnergyMeter:
    """The best CPU meter here: RAPL if readable, else INA3221 rails (Jetson), else the model."""
    try:
        return RaplMeter(powercap_root)
    except MeterError:
        pass
    try:
        return Ina3221Meter("cpu", sys_root=sys_root)
    except MeterError:
        pass
    return ModelledCpuMeter(tdp_w, idle_w, cores)


def gpu_meter(index: int = 0, min_window_s: float = 2.0) -> EnergyMeter:
    """NVML for GPU ``index`` where a driver is present, else a :class:`NullMeter`."""
    try:
        return NvmlMeter(index, min_window_s=min_window_s)
    except MeterError:
        return NullMeter("gpu")


class MeterSet:
    """Several meters opened and closed together (a GPU row: GPU + host CPU).

    The window may end when every meter agrees; readings come back by domain.
    """

    def __init__(self, meters: Sequence[EnergyMeter]) -> None:
        self.meters = list(meters)

    @property
    def min_window_s(self) -> float:
        """The longest of the meters' shortest good windows, s."""
        return max((m.min_window_s for m in self.meters), default=0.0)

    def begin_window(self) -> None:
        """Open a window on every meter, in order."""
        for m in self.meters:
            m.begin_window()

    def window_can_end(self, elapsed_s: float) -> bool:
        """Whether every meter's window may close."""
        return all(m.window_can_end(elapsed_s) for m in self.meters)

    def end_window(self) -> dict[str, EnergyReading]:
        """Close every meter's window (last opened first) and return the readings by domain."""
        return {m.domain: m.end_window() for m in reversed(self.meters)}

    def close(self) -> None:
        """Close every meter."""
        for m in self.meters:
            m.close()
