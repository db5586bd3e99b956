"""The job probe (placement.lab.job_probe): its CPU side here, its GPU side where CUDA is (the lent H200)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from placement.cli import app
from placement.lab import job_probe
from placement.lab.job_probe import (
    ProbeResult,
    ProbeRun,
    ProbeTiming,
    _timed_repeats,
    _warm_up,
    energy_skip_reason,
    probe_factory,
    probe_workload,
)
from placement.lab.meter import EnergyReading, NullMeter, ReplayMeter
from placement.lab.signature import workload_signature


def test_cpu_side_times_repeats_after_warmup_with_labelled_power():
    result = probe_workload("mlp_covtype", 256, "infer", devices=("cpu",), budget_s=3.0, cpu_cores=1,
                            cpu_tdp_w=60.0, cpu_idle_w=10.0)
    (run,) = result.runs
    tm = ProbeTiming()
    assert run.device == "cpu" and run.feasible and run.cpu_cores == 1
    assert run.warmup_s is not None and run.warmup_s > 0 and run.warmup_steps >= tm.warmup_steps
    # repeats over a window of tens of ms, never the warm-up; the time is their median, inside the window's range
    assert run.timed_repeats >= tm.min_repeats and run.timed_steps >= run.timed_repeats
    assert run.timed_window_s >= tm.min_window_s
    per_step = run.time_per_sample_s * 256
    assert 0 < per_step <= run.timed_window_s
    assert run.cpu_power_method in ("measured", "modelled") and run.avg_cpu_power_w > 0
    assert not run.time_is_upper_bound and not result.early_exit
    assert result.wall_s < 3.0 + 2.0
    assert result.job is not None and result.job.signature == workload_signature("mlp_covtype")
    assert ProbeResult.model_validate_json(result.model_dump_json()) == result


class _Clock:
    """A step whose duration is scripted: step i takes ``durations[i]`` s (the last repeats)."""

    def __init__(self, durations: list[float]) -> None:
        self.t = 0.0
        self.i = 0
        self.durations = durations

    def now(self) -> float:
        return self.t

    def step(self) -> None:
        self.t += self.durations[min(self.i, len(self.durations) - 1)]
        self.i += 1


def test_a_slow_step_left_over_from_warm_up_does_not_move_the_median(monkeypatch):
    # the lent H200 saw a tiny job's second CPU step at 23x its steady step: the warm-up runs
    # >= 2 steps over >= 50 ms, and the timed repeats' median ignores one slow repeat
    clock = _Clock([0.008, 0.030] + [0.002] * 6 + [0.002] * 5 + [0.040] + [0.002] * 1000)
    clock.i = 1  # the cold step (8 ms) already ran
    monkeypatch.setattr(job_probe, "_now", clock.now)
    tm = ProbeTiming()
    steps, fastest = _warm_up(clock.step, lambda: None, done_steps=1, done_s=0.008, last_s=0.008, min_steps=2,
                              timing=tm, deadline=1e9)
    assert steps == 8 and sum(clock.durations[:steps]) >= tm.warmup_min_s and fastest == pytest.approx(0.002)
    timed = _timed_repeats(clock.step, lambda: None, per_step_s=fastest, min_repeat_s=tm.min_repeat_s, timing=tm,
                           deadline=1e9)
    assert timed.step_s == pytest.approx(0.002)  # the repeat holding the 40 ms step is not the median
    assert timed.repeats >= tm.min_repeats and timed.window_s >= tm.min_window_s
    assert timed.steps == timed.repeats * 5  # k = ceil(10 ms / 2 ms) steps a repeat


def test_a_long_step_is_timed_once_after_one_warm_up(monkeypatch):
    clock = _Clock([0.6])
    monkeypatch.setattr(job_probe, "_now", clock.now)
    tm = ProbeTiming()
    steps, last = _warm_up(clock.step, lambda: None, done_steps=1, done_s=0.6, last_s=0.6, min_steps=2,
                           timing=tm, deadline=1e9)
    assert steps == 1  # a step of >= long_step_s ends the warm-up: its setup is a small part of it
    timed = _timed_repeats(clock.step, lambda: None, per_step_s=last, min_repeat_s=tm.min_repeat_s,
                           timing=tm, deadline=1e9)
    assert timed.repeats == 1 and timed.step_s == pytest.approx(0.6)  # past long_window_s after one repeat


def test_an_energy_window_holds_the_repeats_until_the_meter_can_end(monkeypatch):
    clock = _Clock([0.001])
    monkeypatch.setattr(job_probe, "_now", clock.now)
    asked: list[float] = []

    def can_end(elapsed: float) -> bool:
        asked.append(elapsed)
        return elapsed >= 0.4  # the counter's tick after the 0.3 s minimum

    timed = _timed_repeats(clock.step, lambda: None, per_step_s=0.001, min_repeat_s=0.02, timing=ProbeTiming(),
                           deadline=0.0, min_window_s=0.3, can_end=can_end, hard_deadline=10.0)
    assert timed.window_s >= 0.4 and asked and min(asked) >= 0.3 and timed.step_s == pytest.approx(0.001)


@pytest.mark.parametrize("field,value", [("min_repeats", 0), ("warmup_min_s", float("nan")), ("long_step_s", -1.0)])
def test_probe_timing_refuses_bad_settings(field, value):
    with pytest.raises(ValueError, match=field):
        ProbeTiming(**{field: value})


def test_a_module_path_is_probed_with_its_signature():
    result = probe_factory("tests.archs:GatedMlp", "mlp", [256], "float32", 32, "train", devices=("cpu",),
                           budget_s=2.0, cpu_tdp_w=60.0, cpu_idle_w=10.0)
    assert result.job is not None and result.job.mode == "train" and len(result.job.signature or "") == 32
    assert result.runs[0].time_per_sample_s > 0


def _gpu_meter() -> ReplayMeter:
    reading = EnergyReading("gpu", 0.4, 48.0, 120.0, "measured", "nvml_total_energy")
    return ReplayMeter([reading], cycle=True)


# The GPU side's code runs here on the CPU device (gpu_torch_device="cpu") with a replayed meter:
# the same steps as on the H200, only the device and the meter differ.
_HERE = {"gpu_torch_device": "cpu", "cpu_tdp_w": 60.0, "cpu_idle_w": 10.0, "budget_s": 3.0, "cpu_cores": 1}


def test_early_exit_when_the_cpu_warmup_already_decides():
    # T_t so high that the CPU's cold step (an upper bound) is far below T_t x the "GPU" step
    result = probe_workload("mlp_covtype", 16, "infer", speedup_min=1e5, gpu_meter=_gpu_meter(), **_HERE)
    cpu, gpu = result.run("cpu"), result.run("gpu")
    assert result.early_exit and cpu is not None and cpu.time_is_upper_bound and cpu.timed_steps == 0
    assert gpu is not None and gpu.feasible and gpu.timed_repeats >= ProbeTiming().min_repeats
    # the speed half answers CPU: no energy window, no GPU power
    assert gpu.energy_skipped == "speed_decides_cpu" and gpu.avg_gpu_power_w is None and gpu.energy_window_s is None
    assert gpu.gpu_power_method == "unknown" and "gpu_energy" not in (result.phases_s or {})
    assert result.runs[0].device == "gpu"


def test_the_energy_window_times_the_gpu_steps_when_it_can_change_the_answer():
    # T_t tiny: the CPU's cold step never decides, so both devices are timed in full
    result = probe_workload("mlp_covtype", 64, "infer", energy="always", speedup_min=1e-2, gpu_meter=_gpu_meter(),
                            **_HERE)
    gpu = result.run("gpu")
    assert gpu is not None and gpu.energy_skipped is None
    assert gpu.avg_gpu_power_w == pytest.approx(120.0) and gpu.gpu_power_method == "measured"
    assert gpu.energy_window_s is not None and gpu.timed_window_s >= 0.3  # the window's repeats give the time
    phases = result.phases_s or {}
    assert {"gpu_setup", "gpu_warmup", "gpu_timed", "cpu_setup", "cpu_warmup", "cpu_timed", "gpu_energy",
            "teardown"} <= set(phases)
    assert phases["gpu_energy"] >= 0.3 and sum(phases.values()) == pytest.approx(result.wall_s, rel=0.05, abs=0.02)
    assert ProbeResult.model_validate_json(result.model_dump_json()) == result


def test_the_energy_window_runs_where_the_speed_half_passes():
    # T_t tiny: the speed half passes, so the energy half decides and the window runs ("auto")
    result = probe_workload("mlp_covtype", 64, "infer", speedup_min=1e-2, gpu_meter=_gpu_meter(), **_HERE)
    gpu = result.run("gpu")
    assert gpu is not None and gpu.energy_skipped is None and gpu.avg_gpu_power_w == pytest.approx(120.0)


@pytest.mark.parametrize("high,gpu,expected", [
    (1.5, 1.0, "speed_decides_cpu"),  # 1.5 < 2 / 1.25
    (1.7, 1.0, None),                 # inside the margin
    (50.0, 1.0, None),                # the speed half passes: the energy half decides
    (0.1, float("nan"), None),        # no GPU time
    (0.1, 0.0, None),
])
def test_energy_skip_reason(high, gpu, expected):
    assert energy_skip_reason(cpu_step_high_s=high, gpu_step_s=gpu, speedup_min=2.0, margin=1.25) == expected


def test_probe_refuses_an_unknown_energy_mode():
    with pytest.raises(ValueError, match="energy"):
        probe_workload("mlp_covtype", 16, "infer", energy="sometimes", **_HERE)  # type: ignore[arg-type]


def test_cli_probe_keeps_the_host_probe_and_probes_a_job():
    runner = CliRunner()
    host = runner.invoke(app, ["probe"])
    assert host.exit_code == 0 and json.loads(host.stdout)["id"] == "local"
    assert json.loads(runner.invoke(app, ["probe", "--host"]).stdout)["id"] == "local"
    out = runner.invoke(app, ["probe", "mlp_covtype", "-b", "64", "--budget-s", "2", "--cores", "1"])
    assert out.exit_code == 0, out.output
    result = ProbeResult.model_validate_json(out.stdout)
    assert result.run("cpu") is not None and result.job is not None and result.job.batch_size == 64
    described = json.loads(runner.invoke(app, ["describe", "mlp_covtype"]).stdout)
    assert described["signature"] == workload_signature("mlp_covtype")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU side needs CUDA (runs on the lent H200)")
def test_gpu_side_reads_the_energy_counter_over_a_window_and_the_memory_peak():
    result = probe_workload("resnet18_cifar10", 64, "train", budget_s=5.0, energy="always")
    gpu = result.run("gpu")
    assert gpu is not None and gpu.feasible and gpu.timed_repeats >= ProbeTiming().min_repeats
    assert gpu.timed_window_s >= 0.3  # the timed repeats are the energy window's steps
    assert gpu.energy_window_s >= 0.3 and gpu.gpu_power_method == "measured" and gpu.avg_gpu_power_w > 0
    assert gpu.gpu_power_source in ("nvml_total_energy", "nvml_power_samples")
    assert gpu.gpu_mem_peak_mib > 0
    auto = probe_workload("resnet18_cifar10", 64, "train", budget_s=5.0).run("gpu")
    assert auto is not None and auto.feasible and auto.energy_skipped is None  # fast on the GPU: the window runs
    assert auto.avg_gpu_power_w > 0
    oom = probe_workload("resnet18_cifar10", 256, "train", budget_s=5.0, gpu_mem_cap_mib=64, devices=("gpu",))
    assert oom.run("gpu") is not None and not oom.run("gpu").feasible and oom.run("gpu").infeasible_reason == "oom"


def test_a_factory_that_cannot_build_under_the_device_context_is_built_on_the_host():
    calls: list[object] = []

    def build() -> torch.nn.Module:  # the first call fails as the zoo's GNN did under the CUDA device context
        calls.append(torch.get_default_device())
        if len(calls) == 1:
            raise RuntimeError("Expected a 'cuda' device type for generator but found 'cpu'")
        return torch.nn.Linear(4, 2)

    side = job_probe._GpuSide(build, (torch.randn(3, 4), torch.randint(0, 2, (3,))), "infer", ProbeTiming(), None,
                              None, lambda cores: NullMeter(), 0.3, "cpu", job_probe._Phases())
    assert isinstance(side._build_on_device(), torch.nn.Linear) and len(calls) == 2


def test_probe_cost_reads_the_journal_with_and_without_phases(tmp_path):
    from placement.agents.grounding import probe_cost

    def line(wall: float, skipped: str | None, energy_s: float | None) -> str:
        phases = {"gpu_timed": 0.06, "cpu_timed": wall - 0.06 - (energy_s or 0.0)}
        if energy_s is not None:
            phases["gpu_energy"] = energy_s
        gpu = ProbeRun(device="gpu", time_per_sample_s=1e-3, energy_skipped=skipped)
        return ProbeResult(runs=[gpu], wall_s=wall, phases_s=phases, early_exit=skipped is not None).model_dump_json()

    journal = tmp_path / "p.journal.jsonl"
    journal.write_text("\n".join([line(0.8, None, 0.5), line(0.3, "speed_decides_cpu", None), line(0.9, None, 0.45)]))
    cost = probe_cost(journal)
    assert (cost["jobs"], cost["early_exits"], cost["energy_windows_skipped"]) == (3, 1, 1)
    assert cost["median_s"] == pytest.approx(0.8) and cost["median_without_energy_window_s"] == pytest.approx(0.3)
    assert cost["energy_window_median_s"] == pytest.approx(0.475)
    old = tmp_path / "old.journal.jsonl"  # journals from before phases_s: the cost figures only
    old.write_text(ProbeResult(runs=[ProbeRun(device="cpu")], wall_s=0.7).model_dump_json() + "\n")
    assert probe_cost(old) == {"jobs": 1, "median_s": 0.7, "p90_s": pytest.approx(0.7), "max_s": 0.7, "early_exits": 0}
