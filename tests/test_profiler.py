"""The profiler: sweep plans, rows measured with real timing, OOM as an outcome, the journal,
resuming, subprocess isolation, trace writing -- and the committed measured trace."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from placement.cli import app
from placement.core.hardware import HardwareTarget
from placement.core.trace import CV_LIMIT, pair_outcomes, read_trace
from placement.lab.meter import EnergyReading
from placement.lab.profiler import (
    ProfileError,
    ProfileSettings,
    RowSpec,
    default_plan,
    journal_path,
    pairs_plan,
    profile,
    smoke_plan,
    trace_row,
)

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "data/traces/h200_measured.parquet"


@pytest.fixture
def target() -> HardwareTarget:
    """A 2-core host with a (fake) GPU: GPU rows run on CPU torch under a fake allocator."""
    return HardwareTarget(id="test-host", kind="server", cpu_model="test CPU", cpu_cores=2, cpu_gflops=100.0,
                          cpu_tdp_w=40.0, cpu_idle_w=10.0, ram_gib=8.0, gpu_model="fake GPU", gpu_gflops=1000.0,
                          gpu_mem_gib=1.0, gpu_tdp_w=100.0)


@pytest.fixture
def settings(tmp_path) -> ProfileSettings:
    replay = tmp_path / "gpu_energy.jsonl"
    replay.write_text(json.dumps(EnergyReading("gpu", 2.0, 300.0, 150.0, "measured", "nvml_total_energy").to_dict()) + "\n")
    return ProfileSettings(torch_device="cpu", gpu_memory="fake:1024", gpu_energy=f"replay:{replay}",
                           cpu_energy="modelled", gpu_window_s=0.05, cpu_min_time_s=0.02, cpu_max_time_s=2.0,
                           gpu_max_time_s=2.0, cpu_min_repeat_s=0.002, gpu_min_repeat_s=0.002, retry_noisy=0)


TINY = [
    RowSpec("mlp_cifar10", "infer", 1, "cpu", 2),
    RowSpec("mlp_cifar10", "infer", 1, "cpu", 1),
    RowSpec("mlp_cifar10", "infer", 1, "gpu", 2),
    RowSpec("mlp_cifar10", "infer", 1, "gpu", 2, 1),  # 1 MiB cannot hold the 14 MiB of weights
]


def test_row_spec_validates_and_names_rows():
    r = RowSpec("mlp_cifar10", "train", 256, "gpu", 16, 512)
    assert r.job_id == "mlp_cifar10-train-b256" and r.key == "mlp_cifar10-train-b256|gpu|c16|512"
    assert RowSpec("mlp_cifar10", "train", 256, "gpu", 16).cap_label == "grow"
    assert RowSpec("mlp_cifar10", "train", 256, "cpu", 16).cap_label == "-"
    for bad in ({"mode": "fit"}, {"device": "tpu"}, {"batch_size": 0}, {"cpu_cores": 0},
                {"gpu_mem_cap_mib": 0}, {"device": "cpu", "gpu_mem_cap_mib": 64}):
        args = {"workload": "mlp_cifar10", "mode": "infer", "batch_size": 1, "device": "gpu", "cpu_cores": 1, **bad}
        with pytest.raises(ValueError):
            RowSpec(**args)


def test_pairs_plan_pairs_every_cpu_row_with_a_gpu_row():
    plan = pairs_plan(16)
    assert len({r.key for r in plan}) == len(plan)
    cpu = {(r.workload, r.mode, r.batch_size) for r in plan if r.device == "cpu"}
    gpu = {(r.workload, r.mode, r.batch_size) for r in plan if r.device == "gpu"}
    assert cpu == gpu and len(cpu) == 106
    assert {r.cpu_cores for r in plan} == {16} and all(r.gpu_mem_cap_mib is None for r in plan)
    first = {(r.workload, r.mode, r.batch_size) for r in default_plan(16)}
    assert not cpu & first  # no job of the first sweep measured again
    assert {r.workload for r in pairs_plan(16, gpu=False)} == {r.workload for r in plan}
    assert all(r.device == "cpu" for r in pairs_plan(16, gpu=False))


def test_default_plan_covers_the_issue():
    plan = default_plan(16)
    assert len(plan) >= 300 and len({r.key for r in plan}) == len(plan)
    from placement.lab.workloads import get_workload

    assert len({get_workload(r.workload).model for r in plan}) == 7
    assert {r.mode for r in plan} == {"infer", "train"}
    assert min(r.batch_size for r in plan) == 1 and max(r.batch_size for r in plan) >= 256
    assert {r.cpu_cores for r in plan if r.device == "cpu"} == {1, 2, 4, 8, 16}
    assert len({r.gpu_mem_cap_mib for r in plan if r.device == "gpu"} - {None}) >= 3
    assert any(r.device == "gpu" and r.gpu_mem_cap_mib is None for r in plan)
    assert not any(r.mode == "train" and r.batch_size < 2 for r in plan)  # batch norm needs 2
    small = default_plan(6, gpu=False)
    assert {r.cpu_cores for r in small} == {1, 2, 4, 6} and all(r.device == "cpu" for r in small)
    assert len(smoke_plan(16)) == 6


def test_profile_measures_rows_and_records_oom_as_an_outcome(tmp_path, target, settings):
    out = tmp_path / "t.parquet"
    summary = profile(TINY, out, target, settings, isolate=False, progress=False, description="unit test")
    assert summary.rows_done == summary.rows_new == 4 and not summary.stopped_early and not summary.failures
    trace = read_trace(out)
    keys = [f"{d}{c}{'' if m is None or m != m else int(m)}" for d, c, m in
            zip(trace.frame["device"], trace.frame["cpu_cores"], trace.frame["gpu_mem_cap_mib"].astype("float64"), strict=True)]
    f = trace.frame.set_index(pd.Index(keys))
    assert set(f["source"]) == {"measured"}
    cpu = f.loc["cpu1"]
    assert cpu["feasible"] and cpu["time_per_batch_s"] > 0 and cpu["repeats"] >= 7
    assert cpu["cpu_power_method"] == "modelled" and cpu["gpu_power_method"] == "unknown"
    assert cpu["n_samples"] * cpu["time_per_batch_s"] == pytest.approx(cpu["time_total_s"])  # batch 1
    assert cpu["time_per_batch_median_s"] > 0 and cpu["time_per_batch_iqr_s"] >= 0
    assert bool(cpu["cv_flag"]) == bool(cpu["time_cv"] > CV_LIMIT)
    gpu = f.loc["gpu2"]
    assert gpu["feasible"] and gpu["avg_gpu_power_w"] == 150.0 and gpu["gpu_power_method"] == "measured"
    assert gpu["avg_cpu_power_w"] >= 10.0 and gpu["cpu_power_method"] == "modelled"  # host CPU, eq. (2)
    oom = f.loc["gpu21"]
    assert not oom["feasible"] and oom["infeasible_reason"] == "oom"
    meta = trace.meta
    assert meta.seed == 0 and meta.code_version and meta.description == "unit test"
    assert meta.extra["thresholds"]["speedup_min"] == 2.0 and "journal_sha256" in meta.extra
    assert json.loads(meta.hardware)["target"]["id"] == "test-host"
    assert "slowest dropped" in meta.method
    pairs = pair_outcomes(trace.frame)
    assert len(pairs) == 1 and np.isfinite(pairs.loc[0, "speedup"]) and pairs.loc[0, "energy_method"] == "modelled"
    lines = [json.loads(x) for x in journal_path(out).read_text().splitlines()]
    assert lines[0]["kind"] == "header" and len(lines) == 5
    assert all("repeat_times_s" in r["stats"] for r in lines[1:] if r["feasible"])


def test_profile_resumes_and_refuses_a_foreign_journal(tmp_path, target, settings):
    out = tmp_path / "t.parquet"
    profile(TINY[:1], out, target, settings, isolate=False, progress=False)
    again = profile(TINY[:2], out, target, settings, isolate=False, progress=False)
    assert again.rows_new == 1 and again.rows_done == 2
    assert len(read_trace(out).frame) == 2
    other = target.model_copy(update={"cpu_model": "another CPU"})
    with pytest.raises(ProfileError, match="recorded on"):
        profile(TINY[:2], out, other, settings, isolate=False, progress=False)
    fresh = profile(TINY[:1], out, other, settings, resume=False, isolate=False, progress=False)
    assert fresh.rows_new == 1


def test_profile_stops_at_the_deadline(tmp_path, target, settings):
    summary = profile(TINY, tmp_path / "t.parquet", target, settings, deadline_s=1.0, isolate=False, progress=False)
    assert summary.stopped_early and summary.rows_done < len(TINY)


def test_profile_rejects_bad_plans(tmp_path, target, settings):
    with pytest.raises(ProfileError, match="cores"):
        profile([RowSpec("mlp_cifar10", "infer", 1, "cpu", 64)], tmp_path / "t.parquet", target, settings, progress=False)
    with pytest.raises(ProfileError, match="repeats a row"):
        profile(TINY[:1] * 2, tmp_path / "t.parquet", target, settings, progress=False)
    with pytest.raises(ProfileError, match="parquet"):
        profile(TINY, tmp_path / "t.txt", target, settings, progress=False)
    cpu_only = target.model_copy(update={"gpu_model": None, "gpu_gflops": 0.0, "gpu_mem_gib": 0.0})
    with pytest.raises(ProfileError, match="no GPU"):
        profile(TINY, tmp_path / "t.parquet", cpu_only, ProfileSettings(), progress=False)


@pytest.mark.slow
def test_groups_run_in_isolated_subprocesses(tmp_path, target, settings):
    out = tmp_path / "iso.parquet"
    rows = [TINY[1], TINY[3]]  # one CPU group, one GPU group (an OOM under the fake cap)
    summary = profile(rows, out, target, settings, isolate=True, progress=False)
    assert summary.rows_done == 2 and not summary.failures, summary.failures
    f = read_trace(out).frame.sort_values("device")
    assert list(f["feasible"]) == [True, False] and list(f["infeasible_reason"].fillna("-")) == ["-", "oom"]
    results = [json.loads(x) for x in journal_path(out).read_text().splitlines()[1:]]
    assert all("torch" in r["environment"] for r in results)  # each worker reports its own environment


def test_trace_row_of_an_infeasible_result(target):
    spec = RowSpec("mlp_cifar10", "train", 2, "gpu", 2, 1)
    row = trace_row({"spec": spec.to_dict(), "feasible": False, "infeasible_reason": "oom",
                     "job": {"family": "mlp", "flops_per_batch": 1.0, "param_count": 1,
                             "input_elems_per_sample": 1, "input_bytes_per_sample": 4}}, target)
    assert row["feasible"] is False and row["time_total_s"] is None and row["gpu_power_method"] == "unknown"
    assert row["gpu_mem_cap_mib"] == 1 and row["hw_gpu_model"] == "fake GPU"


@pytest.mark.slow
def test_cli_profile_cpu_only(tmp_path):
    out = tmp_path / "cli.parquet"
    res = CliRunner().invoke(app, ["profile", "--plan", "smoke", "--no-gpu", "--workloads", "mlp_cifar10",
                                   "--out", str(out), "--cpu-energy", "modelled", "--target", "auto"])
    assert res.exit_code == 0, res.output
    assert "complete" in res.output and out.exists()
    res = CliRunner().invoke(app, ["profile", "--plan", "nope", "--out", str(out)])
    assert res.exit_code == 2 and "unknown plan" in res.output


@pytest.mark.skipif(not MEASURED.exists(), reason="measured trace not present")
def test_committed_measured_trace_meets_the_issue():
    trace = read_trace(MEASURED)
    f = trace.frame
    from placement.lab.workloads import get_workload

    assert len(f) >= 300 and set(f["source"]) == {"measured"}
    assert len({get_workload(m).model for m in f["model"]}) == 7
    assert set(f["mode"]) == {"infer", "train"}
    assert f["batch_size"].min() == 1 and f["batch_size"].max() >= 256
    assert set(f.loc[f["device"] == "cpu", "cpu_cores"]) == {1, 2, 4, 8, 16}
    caps = set(f.loc[f["device"] == "gpu", "gpu_mem_cap_mib"].dropna().astype(int))
    assert len(caps) >= 3 and f.loc[f["device"] == "gpu", "gpu_mem_cap_mib"].isna().any()
    ok = f[f["feasible"].astype(bool)]
    assert set(ok["cpu_power_method"]) <= {"measured", "modelled"}
    assert set(ok.loc[ok["device"] == "gpu", "gpu_power_method"]) == {"measured"}
    assert (f["cv_flag"].astype(bool) == (f["time_cv"].astype("float64") > CV_LIMIT).fillna(False)).all()
    assert (f.loc[~f["feasible"].astype(bool), "infeasible_reason"] == "oom").all()
    meta = trace.meta
    assert meta.source == "measured" and meta.seed is not None and "+g" in meta.code_version
    assert "H200" in meta.hardware or "H100" in meta.hardware
    assert meta.extra["thresholds"] and meta.extra["journal_sha256"]
    counts = Counter(pair_outcomes(f)["label_gpu"])
    assert counts[True] > 0 and counts[False] > 0  # the joint threshold splits real jobs both ways


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs an NVIDIA GPU (runs on the measurement host)")
def test_profile_on_a_real_gpu(tmp_path, target):
    """Real CUDA allocator, real NVML counter windows, a real OOM under a 16 MiB cap."""
    import torch

    gpu = target.model_copy(update={"gpu_model": torch.cuda.get_device_name(0)})
    rows = [RowSpec("mlp_cifar10", "train", 32, "gpu", 2), RowSpec("resnet18_cifar10", "train", 64, "gpu", 2, 16)]
    settings = ProfileSettings(gpu_window_s=0.5, cpu_energy="modelled")
    summary = profile(rows, tmp_path / "gpu.parquet", gpu, settings, isolate=True, progress=False)
    assert summary.rows_done == 2 and not summary.failures, summary.failures
    f = read_trace(tmp_path / "gpu.parquet").frame.sort_values("gpu_mem_cap_mib", na_position="first")
    ok, oom = f.iloc[0], f.iloc[1]
    assert ok["feasible"] and ok["gpu_power_method"] == "measured" and ok["avg_gpu_power_w"] > 10
    assert not oom["feasible"] and oom["infeasible_reason"] == "oom"
