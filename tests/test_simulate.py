"""Synthetic jobs and simulated traces: valid, reproducible, realistic mix, non-trivial labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from placement.core.catalogue import default_catalogue, get_target
from placement.core.job import FAMILIES, Job
from placement.core.trace import pair_outcomes, read_trace, validate
from placement.model.perfmodel import PerformanceModel, PerfParams
from placement.model.simulate import JOB_FRAME_COLUMNS, generate_jobs, simulate_trace

COMMITTED = Path(__file__).resolve().parent.parent / "data" / "traces" / "simulated.parquet"


@pytest.fixture(scope="module")
def small_trace() -> pd.DataFrame:
    return simulate_trace(list(default_catalogue().values()), 40, seed=5, model=PerformanceModel(PerfParams()))


def test_generate_jobs_is_deterministic_and_realistic():
    a = generate_jobs(600, np.random.default_rng(11))
    b = generate_jobs(600, np.random.default_rng(11))
    pd.testing.assert_frame_equal(a, b)
    assert tuple(a.columns) == JOB_FRAME_COLUMNS
    assert set(a["family"]) == set(FAMILIES)
    assert set(a["mode"]) == {"train", "infer"}
    assert a["batch_size"].min() == 1 and a["batch_size"].max() == 1024
    names = a["model"].str.split("-").str[0]
    for arch in ("mlp", "alexnet", "mobilenet", "resnet18", "lstm", "gru", "transformer"):
        assert (names == arch).any(), arch
    assert {"cifar10", "imagenet100", "imdb"} <= set(a["model"].str.rsplit("_", n=1).str[1])
    # every row is a valid Job
    for rec in a.head(50).to_dict(orient="records"):
        Job(name=rec["model"], **{k: rec[k] for k in ("family", "mode", "batch_size", "flops_per_batch", "param_count",
                                                     "input_elems_per_sample", "input_bytes_per_sample", "dataset_size")})
    # wide spread: four orders of magnitude of FLOPs per batch between the 5th and 95th percentile
    q = np.log10(a["flops_per_batch"].quantile([0.05, 0.95]).to_numpy())
    assert q[1] - q[0] > 4


def test_generate_jobs_rejects_bad_n():
    with pytest.raises(ValueError, match="n must be"):
        generate_jobs(-1, np.random.default_rng(0))


def test_simulated_trace_is_valid_and_labelled_simulated(small_trace):
    typed = validate(small_trace)
    assert len(typed) == len(small_trace)
    assert set(small_trace["source"]) == {"simulated"}
    assert set(small_trace["target_id"]) == set(default_catalogue())
    feasible = small_trace["feasible"].to_numpy(dtype=bool)
    assert set(small_trace.loc[feasible, "cpu_power_method"]) == {"modelled"}
    gpu_ok = feasible & (small_trace["device"] == "gpu").to_numpy()
    assert set(small_trace.loc[gpu_ok, "gpu_power_method"]) == {"modelled"}
    assert set(small_trace.loc[~feasible, "infeasible_reason"]) <= {"oom"}
    assert (small_trace["repeats"] == 5).all()


def test_knob_grid_per_target(small_trace):
    nano = small_trace[small_trace["target_id"] == "jetson-nano"]
    one_job = nano[nano["job_id"] == nano["job_id"].iloc[0]]
    assert sorted(one_job.loc[one_job["device"] == "cpu", "cpu_cores"].tolist()) == [1, 2, 4]
    caps = one_job.loc[one_job["device"] == "gpu", "gpu_mem_cap_mib"]
    assert caps.isna().sum() == 1 and sorted(caps.dropna().tolist()) == [1024, 2048, 3072]


def test_simulation_is_reproducible_from_the_seed():
    targets = [get_target("orin-nano"), get_target("A")]
    model = PerformanceModel(PerfParams())
    a = simulate_trace(targets, 10, seed=9, model=model)
    b = simulate_trace(targets, 10, seed=9, model=model)
    pd.testing.assert_frame_equal(a, b)
    c = simulate_trace(targets, 10, seed=10, model=model)
    assert not a["time_total_s"].equals(c["time_total_s"])


def test_labels_are_not_trivial_on_any_target(small_trace):
    pairs = pair_outcomes(small_trace)
    share = pairs.groupby("target_id")["label_gpu"].mean()
    assert set(share.index) == set(default_catalogue())
    assert ((share > 0.15) & (share < 0.9)).all(), share.to_dict()


@pytest.mark.skipif(not COMMITTED.exists(), reason="data/traces/simulated.parquet not generated yet")
def test_committed_simulated_trace():
    trace = read_trace(COMMITTED)
    assert COMMITTED.stat().st_size < 2 * 2**20
    assert trace.meta.source == "simulated" and trace.meta.seed is not None and trace.meta.code_version
    assert set(trace.frame["target_id"]) == set(default_catalogue())
    assert len(trace.frame) >= 2000
    extra = trace.meta.extra
    # regenerating from the recorded seed and parameters gives the same rows
    model = PerformanceModel(PerfParams.from_dict(extra["perf_params"]))
    targets = [get_target(t) for t in trace.meta.hardware.split(", ")]
    again = simulate_trace(targets, extra["n_jobs"], trace.meta.seed, extra["core_grid"], extra["cap_fracs"], model)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), trace.frame.reset_index(drop=True), check_dtype=False)
