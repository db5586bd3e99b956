"""The job probe (placement.job_probe): its CPU side here, its GPU side where CUDA is (the lent H200)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from placement import job_probe
from placement.cli import app
from placement.job_probe import ProbeResult, ProbeRun, probe_factory, probe_workload
from placement.signature import workload_signature


def test_cpu_side_times_a_window_after_warmup_with_labelled_power():
    result = probe_workload("mlp_covtype", 256, "infer", devices=("cpu",), budget_s=3.0, cpu_cores=1,
                            cpu_tdp_w=60.0, cpu_idle_w=10.0)
    (run,) = result.runs
    assert run.device == "cpu" and run.feasible and run.cpu_cores == 1
    assert run.warmup_s is not None and run.warmup_s > 0
    assert run.timed_steps >= 1 and run.timed_window_s >= 0.02  # a window of tens of ms, never the warm-up
    assert run.time_per_sample_s == pytest.approx(run.timed_window_s / run.timed_steps / 256)
    assert run.cpu_power_method in ("measured", "modelled") and run.avg_cpu_power_w > 0
    assert not run.time_is_upper_bound and not result.early_exit
    assert result.wall_s < 3.0 + 2.0
    assert result.job is not None and result.job.signature == workload_signature("mlp_covtype")
    assert ProbeResult.model_validate_json(result.model_dump_json()) == result


def test_a_module_path_is_probed_with_its_signature():
    result = probe_factory("tests.archs:GatedMlp", "mlp", [256], "float32", 32, "train", devices=("cpu",),
                           budget_s=2.0, cpu_tdp_w=60.0, cpu_idle_w=10.0)
    assert result.job is not None and result.job.mode == "train" and len(result.job.signature or "") == 32
    assert result.runs[0].time_per_sample_s > 0


def test_early_exit_when_the_cpu_warmup_already_decides(monkeypatch):
    slow_gpu = ProbeRun(device="gpu", time_per_sample_s=1.0, avg_cpu_power_w=20.0, cpu_power_method="modelled",
                        avg_gpu_power_w=100.0, gpu_power_method="measured")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(job_probe, "_probe_gpu", lambda *a, **k: slow_gpu)
    result = probe_workload("mlp_covtype", 16, "infer", budget_s=3.0, cpu_tdp_w=60.0, cpu_idle_w=10.0)
    cpu = result.run("cpu")
    assert result.early_exit and cpu is not None and cpu.time_is_upper_bound and cpu.timed_steps == 0
    assert result.run("gpu") == slow_gpu


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
    result = probe_workload("resnet18_cifar10", 64, "train", budget_s=5.0)
    gpu = result.run("gpu")
    assert gpu is not None and gpu.feasible and gpu.timed_steps >= 1 and gpu.timed_window_s >= 0.02
    assert gpu.energy_window_s >= 0.3 and gpu.gpu_power_method == "measured" and gpu.avg_gpu_power_w > 0
    assert gpu.gpu_power_source in ("nvml_total_energy", "nvml_power_samples")
    assert gpu.gpu_mem_peak_mib > 0
    oom = probe_workload("resnet18_cifar10", 256, "train", budget_s=5.0, gpu_mem_cap_mib=64, devices=("gpu",))
    assert oom.run("gpu") is not None and not oom.run("gpu").feasible and oom.run("gpu").infeasible_reason == "oom"
