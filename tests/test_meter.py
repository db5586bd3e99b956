"""Energy meters: one interface; null, replay, modelled CPU, RAPL, INA3221 and NVML (faked)."""

from __future__ import annotations

import json
import time

import pytest

from placement.lab.meter import (
    EnergyReading,
    Ina3221Meter,
    MeterError,
    MeterSet,
    ModelledCpuMeter,
    NullMeter,
    NvmlMeter,
    RaplMeter,
    ReplayMeter,
    cpu_meter,
    gpu_meter,
    ina3221_rails,
    rapl_domains,
)


def test_reading_validates_method_and_pairs():
    with pytest.raises(ValueError, match="method"):
        EnergyReading("cpu", 1.0, 1.0, 1.0, "guessed", "x")
    with pytest.raises(ValueError, match="both"):
        EnergyReading("cpu", 1.0, 1.0, None, "measured", "x")
    with pytest.raises(ValueError, match="unknown"):
        EnergyReading("cpu", 1.0, None, None, "measured", "x")
    r = EnergyReading("gpu", 2.0, 300.0, 150.0, "measured", "nvml_total_energy")
    assert EnergyReading.from_dict(r.to_dict()) == r


def test_null_meter_and_window_misuse():
    m = NullMeter("gpu")
    with pytest.raises(MeterError, match="no window"):
        m.end_window()
    m.begin_window()
    with pytest.raises(MeterError, match="already open"):
        m.begin_window()
    r = m.end_window()
    assert r.method == "unknown" and r.energy_j is None and r.duration_s >= 0 and r.domain == "gpu"


def test_replay_meter_replays_power_and_method_in_order(tmp_path):
    recs = [EnergyReading("gpu", 2.0, 300.0, 150.0, "measured", "nvml_total_energy"),
            EnergyReading("gpu", 2.0, 400.0, 200.0, "measured", "nvml_total_energy")]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r.to_dict()) for r in recs) + "\n"
                    + json.dumps(EnergyReading("cpu", 1.0, 30.0, 30.0, "modelled", "m").to_dict()) + "\n")
    m = ReplayMeter.from_jsonl(path, domain="gpu")
    assert m.remaining == 2
    out = []
    for _ in range(2):
        m.begin_window()
        time.sleep(0.01)
        out.append(m.end_window())
    assert [r.avg_power_w for r in out] == [150.0, 200.0]
    assert all(r.method == "measured" for r in out)
    assert out[0].energy_j == pytest.approx(150.0 * out[0].duration_s)  # rescaled to the real window
    with pytest.raises(MeterError, match="used"):
        m.begin_window()
    kept = ReplayMeter(recs, keep_energy=True, cycle=True)
    for expected in (300.0, 400.0, 300.0):
        kept.begin_window()
        assert kept.end_window().energy_j == expected


def test_replay_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"domain": "gpu"}\n')
    with pytest.raises(MeterError, match="line 1"):
        ReplayMeter.from_jsonl(bad)
    with pytest.raises(FileNotFoundError):
        ReplayMeter.from_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(MeterError):
        ReplayMeter([])


def test_modelled_cpu_meter_is_linear_in_utilisation():
    busy = iter([10.0, 10.0 + 4 * 0.2])  # 4 CPU-seconds per wall second over a ~0.2 s window

    m = ModelledCpuMeter(tdp_w=100.0, idle_w=20.0, cores=16, cpu_seconds=lambda: next(busy))
    assert m.power_w(0.0) == 20.0 and m.power_w(1.0) == 100.0 and m.power_w(7.0) == 100.0
    m.begin_window()
    time.sleep(0.2)
    r = m.end_window()
    util = 0.8 / (r.duration_s * 16)
    assert r.method == "modelled" and r.source == "tdp_utilisation_model"
    assert r.avg_power_w == pytest.approx(20.0 + 80.0 * util)
    assert r.energy_j == pytest.approx(r.avg_power_w * r.duration_s)


@pytest.mark.parametrize("kwargs", [{"tdp_w": 0.0, "idle_w": 0.0, "cores": 1}, {"tdp_w": 10.0, "idle_w": 20.0, "cores": 1},
                                    {"tdp_w": 10.0, "idle_w": 1.0, "cores": 0}])
def test_modelled_cpu_meter_validates(kwargs):
    with pytest.raises(ValueError):
        ModelledCpuMeter(**kwargs)


def _powercap(root, energy_uj: int, max_uj: int = 1000):
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    sub = root / "intel-rapl:0:0"  # a core sub-zone: not summed
    sub.mkdir(exist_ok=True)
    (sub / "name").write_text("core\n")
    (sub / "energy_uj").write_text("5\n")
    (sub / "max_energy_range_uj").write_text("1000\n")
    return zone / "energy_uj"


def test_rapl_meter_measures_and_handles_wrap_around(tmp_path):
    counter = _powercap(tmp_path, 900)
    assert [d.name for d in rapl_domains(tmp_path)] == ["package-0"]
    m = RaplMeter(tmp_path)
    m.begin_window()
    counter.write_text("100\n")  # wrapped: 900 -> 1000 -> 100 = 200 uJ
    r = m.end_window()
    assert r.method == "measured" and r.source == "rapl"
    assert r.energy_j == pytest.approx(200e-6)
    assert RaplMeter.delta_uj(10, 30, 1000) == 20 and RaplMeter.delta_uj(990, 5, 1000) == 15


def test_cpu_meter_prefers_rapl_then_falls_back_to_the_model(tmp_path):
    _powercap(tmp_path / "pc", 0)
    assert isinstance(cpu_meter(100, 20, 16, powercap_root=tmp_path / "pc", sys_root=tmp_path / "none"), RaplMeter)
    fallback = cpu_meter(100, 20, 16, powercap_root=tmp_path / "empty", sys_root=tmp_path / "none")
    assert isinstance(fallback, ModelledCpuMeter)
    with pytest.raises(MeterError, match="RAPL"):
        RaplMeter(tmp_path / "empty")


def _hwmon(root, volts_mv=5000, amps_ma=1000):
    dev = root / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    dev.mkdir(parents=True)
    (dev / "name").write_text("ina3221\n")
    (dev / "in1_label").write_text("VDD_CPU_GPU_CV\n")
    (dev / "in1_input").write_text(f"{volts_mv}\n")
    (dev / "curr1_input").write_text(f"{amps_ma}\n")
    (dev / "in2_label").write_text("VDD_SOC\n")
    (dev / "in2_input").write_text("5000\n")
    (dev / "curr2_input").write_text("200\n")


def test_ina3221_hwmon_and_iio_layouts(tmp_path):
    _hwmon(tmp_path / "orin")
    rails = {r.name: r for r in ina3221_rails(tmp_path / "orin")}
    assert set(rails) == {"VDD_CPU_GPU_CV", "VDD_SOC"}
    assert rails["VDD_CPU_GPU_CV"].read_w() == pytest.approx(5.0)  # 5 V x 1 A
    nano = tmp_path / "nano/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    nano.mkdir(parents=True)
    (nano / "rail_name_0").write_text("POM_5V_CPU\n")
    (nano / "in_power0_input").write_text("1500\n")  # mW
    nano_rails = ina3221_rails(tmp_path / "nano")
    assert [(r.name, r.read_w()) for r in nano_rails] == [("POM_5V_CPU", 1.5)]


def test_ina3221_meter_integrates_the_chosen_rails(tmp_path):
    _hwmon(tmp_path)
    m = Ina3221Meter("cpu", rails=["VDD_CPU_GPU_CV"], sys_root=tmp_path, interval_s=0.005)
    m.begin_window()
    time.sleep(0.1)
    r = m.end_window()
    assert r.method == "measured" and r.source == "ina3221"
    assert r.avg_power_w == pytest.approx(5.0)
    assert r.energy_j == pytest.approx(5.0 * r.duration_s)
    with pytest.raises(MeterError, match="not found"):
        Ina3221Meter(rails=["NOPE"], sys_root=tmp_path)
    with pytest.raises(MeterError, match="INA3221"):
        Ina3221Meter(sys_root=tmp_path / "none")


class FakeNvml:
    """NVML with a total-energy counter that steps every ``tick_s`` by ``power_w * tick_s``."""

    class NVMLError(Exception):
        pass

    def __init__(self, power_w: float = 200.0, tick_s: float = 0.02, counter: bool = True) -> None:
        self.power_w, self.tick_s, self.counter = power_w, tick_s, counter
        self.t0 = time.perf_counter()

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        if index != 0:
            raise self.NVMLError("invalid index")
        return "gpu0"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if not self.counter:
            raise self.NVMLError("not supported")
        ticks = int((time.perf_counter() - self.t0) / self.tick_s)
        return 1_000_000 + int(ticks * self.power_w * self.tick_s * 1000)  # mJ

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        return int(self.power_w * 1000)  # mW


def test_nvml_meter_windows_align_to_counter_updates():
    nv = FakeNvml(power_w=200.0, tick_s=0.02)
    m = NvmlMeter(0, min_window_s=0.1, nvml=nv)
    assert m.has_counter and m.min_window_s == 0.1
    m.begin_window()
    assert not m.window_can_end(0.0)
    waited = 0
    while not m.window_can_end(0.0):  # the timing loop asks between repeats
        time.sleep(0.003)
        waited += 1
    r = m.end_window()
    assert r.method == "measured" and r.source == "nvml_total_energy"
    assert r.duration_s >= 0.1
    assert r.avg_power_w == pytest.approx(200.0, rel=0.25)  # whole ticks over a tick-aligned window
    with pytest.raises(MeterError, match="index"):
        NvmlMeter(3, nvml=nv)


def test_nvml_meter_runs_the_work_while_it_waits_for_the_first_update():
    nv = FakeNvml(power_w=200.0, tick_s=0.02)
    m = NvmlMeter(0, min_window_s=0.05, nvml=nv)
    steps: list[float] = []

    def step() -> None:
        steps.append(time.perf_counter())
        time.sleep(0.002)

    m.begin_window(busy=step)  # the fake counter updates every 20 ms: a few steps run first
    opened = time.perf_counter()
    assert steps and all(t <= opened for t in steps)
    n = len(steps)
    while not m.window_can_end(time.perf_counter() - opened):
        step()
    r = m.end_window()
    assert len(steps) > n and r.duration_s >= 0.05 and r.avg_power_w == pytest.approx(200.0, rel=0.35)
    m.begin_window()  # no work: the wait sleeps, as before
    assert len(steps) > n
    m.end_window()


def test_nvml_meter_falls_back_to_instant_power():
    m = NvmlMeter(0, nvml=FakeNvml(power_w=80.0, counter=False), interval_s=0.005)
    assert not m.has_counter and m.min_window_s == 0.0
    m.begin_window()
    time.sleep(0.05)
    r = m.end_window()
    assert r.source == "nvml_power_samples" and r.method == "measured"
    assert r.avg_power_w == pytest.approx(80.0)


def test_gpu_meter_without_a_driver_is_null(monkeypatch):
    import placement.lab.meter as meter

    def no_driver():
        raise MeterError("NVML is not available here")

    monkeypatch.setattr(meter, "_nvml", no_driver)
    assert isinstance(gpu_meter(), NullMeter)


def test_meter_set_opens_and_closes_together():
    gpu = ReplayMeter([EnergyReading("gpu", 1.0, 100.0, 100.0, "measured", "nvml_total_energy")])
    cpu = ModelledCpuMeter(100.0, 20.0, 4, cpu_seconds=lambda: 0.0)
    both = MeterSet([gpu, cpu])
    both.begin_window()
    assert both.window_can_end(0.0)
    out = both.end_window()
    assert out["gpu"].avg_power_w == 100.0 and out["cpu"].avg_power_w == 20.0
    assert out["cpu"].method == "modelled"


def test_real_nvml_counter_where_present():
    try:
        m = NvmlMeter(0, min_window_s=0.3)
    except MeterError:
        pytest.skip("no NVIDIA driver here")
    m.begin_window()
    while not m.window_can_end(0.0):
        time.sleep(0.01)
    r = m.end_window()
    assert r.method == "measured" and r.duration_s >= 0.3 and r.avg_power_w > 0
