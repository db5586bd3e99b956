"""Calibration: the fit recovers known constants from a synthetic trace; held-out error and report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from placement.calibration import (
    cross_validate,
    fit_params,
    fit_rows,
    free_params,
    measured_time_per_batch_s,
    row_errors,
    summarise,
)
from placement.catalogue import get_target
from placement.perfmodel import PerformanceModel, PerfParams, load_params
from placement.simulate import simulate_trace, write_simulated

TRUE = {
    "families.cnn.gpu_eff": 0.25,
    "families.cnn.cpu_eff": 0.5,
    "families.transformer.parallel_frac": 0.8,
    "model_parallel_frac.gru": 0.4,
    "gpu_launch_overhead_s": 1.0e-5,
    "batch_overhead_s": 5.0e-4,
}


@pytest.fixture(scope="module")
def synthetic() -> tuple[PerfParams, pd.DataFrame]:
    """A trace generated with known constants (not the defaults the fit starts from) + noise."""
    true = PerfParams().with_values(TRUE)
    frame = simulate_trace([get_target("h100-host")], 60, seed=3, model=PerformanceModel(true))
    return true, frame


def test_fit_recovers_known_constants(synthetic):
    true, frame = synthetic
    fit = fit_params(frame, PerfParams())
    assert fit.success
    for path, value in TRUE.items():
        assert path in fit.free
        got = fit.params.get(path)
        if path == "model_parallel_frac.gru":
            # weakly identified (few GRU runs are compute-bound): it must move most of the way
            # from its start (the default) towards the truth
            start = PerfParams().get(path)
            assert abs(got - value) < 0.6 * abs(start - value), f"{path}: fitted {got:.4g}, true {value:.4g}, start {start:.4g}"
            continue
        assert got == pytest.approx(value, rel=0.1), f"{path}: fitted {got:.4g}, true {value:.4g}"
    # the noise model is read off the recorded repeat spread
    assert fit.params.noise_time_sigma == pytest.approx(true.noise_time_sigma, rel=0.3)
    errors = summarise(row_errors(frame, fit.params)).iloc[0]
    assert errors["median_abs_rel_err"] < 0.05
    before = summarise(row_errors(frame, PerfParams())).iloc[0]
    assert before["median_abs_rel_err"] > 3 * errors["median_abs_rel_err"]


def test_held_out_whole_models_never_seen_by_the_fit(synthetic):
    _, frame = synthetic
    err = cross_validate(frame, "model", folds=3, seed=0, max_nfev=60)
    rows = fit_rows(frame)
    assert len(err) == len(rows)  # every row predicted exactly once, held out
    fold_of_model = err.groupby("model")["fold"].nunique()
    assert (fold_of_model == 1).all()  # a model's rows all sit in one fold
    s = summarise(err).iloc[0]
    assert s["median_abs_rel_err"] < 0.10 and s["within_25pct"] > 0.9
    by = summarise(err, ["device", "family"])
    assert {"device", "family", "n", "median_abs_rel_err", "within_25pct"} <= set(by.columns)


def test_free_params_follow_the_trace_contents():
    frame = simulate_trace([get_target("h100-host")], 12, seed=1, model=PerformanceModel(PerfParams()))
    cpu_only_one_core = frame[(frame["device"] == "cpu") & (frame["cpu_cores"] == 16)]
    free = {p.path for p in free_params(fit_rows(cpu_only_one_core), PerfParams())}
    assert not any(p.endswith("gpu_eff") for p in free)
    assert not any(p.endswith("parallel_frac") for p in free), "no core sweep -> Amdahl fractions stay at their prior"
    assert "gpu_launch_overhead_s" not in free and "cpu_op_overhead_s" in free


def test_measured_time_prefers_the_repeat_median():
    frame = pd.DataFrame({"time_total_s": [2.0, 2.0], "n_samples": [10, 10], "batch_size": [5, 5],
                          "time_per_batch_s": [np.nan, 1.1], "time_per_batch_median_s": [np.nan, 0.9]})
    np.testing.assert_allclose(measured_time_per_batch_s(frame), [1.0, 0.9])


def test_too_few_rows_is_a_clear_error():
    frame = simulate_trace([get_target("A")], 1, seed=0, model=PerformanceModel(PerfParams())).head(3)
    with pytest.raises(ValueError, match="at least 10"):
        fit_params(frame)


@pytest.mark.slow
def test_cli_calibrate_writes_params_and_report(tmp_path):
    from placement.cli import app

    true = PerfParams().with_values(TRUE)
    trace = write_simulated(tmp_path / "t.parquet", [get_target("h100-host")], 30, seed=4, model=PerformanceModel(true))
    params_out, report = tmp_path / "params.json", tmp_path / "docs" / "calibration.md"
    result = CliRunner().invoke(app, ["calibrate", str(trace), "--params-out", str(params_out), "--report", str(report),
                                      "--folds", "3"])
    assert result.exit_code == 0, result.output
    assert "held-out" in result.output
    params, provenance = load_params(params_out)
    assert provenance["traces"][str(trace)] and provenance["seed"] == 0 and provenance["code_version"]
    assert set(provenance["held_out"]) == {"random", "model", "architecture"}
    assert params.get("families.cnn.gpu_eff") == pytest.approx(0.25, rel=0.3)
    text = report.read_text()
    assert "whole models" in text and "placement calibrate" in text and "sha256" in text
    for png in ("calibration_scatter.png", "calibration_error_by_group.png", "calibration_core_scaling.png"):
        assert (report.parent / "calibration" / png).stat().st_size > 1000
    json.loads(params_out.read_text())


def test_cli_calibrate_names_a_missing_file(tmp_path):
    from placement.cli import app

    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 2
    assert "not found" in result.output
