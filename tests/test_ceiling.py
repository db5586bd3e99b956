"""Accuracy ceiling: the margin-shift identity it rests on, the analytic curve, and the measured counterparts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from placement.agents.ceiling import (
    NORMAL_MAD,
    accuracy_curve,
    expected_accuracy,
    margin_prediction,
    margin_regression,
    median_relative_time_error_pct,
    reproducibility,
    sigma_for_accuracy,
)
from placement.agents.evaluation import grouped_kfold, labelled_set, random_split
from placement.core.threshold import Thresholds, joint_threshold
from placement.core.trace import pair_outcomes, validate
from tests.agents_synthetic import synthetic_pairs, synthetic_trace


def test_a_log_time_error_shifts_the_margin_by_exactly_that_error():
    """The premise: GPU time x exp(-eps) (powers fixed) -> margin + eps, whichever threshold binds."""
    rng = np.random.default_rng(0)
    n = 200
    t_cpu, t_gpu = 10 ** rng.uniform(-4, -1, n), 10 ** rng.uniform(-4, -1, n)
    p_cpu, p_gpu = rng.uniform(20, 100, n), rng.uniform(50, 400, n)
    eps = rng.normal(0, 0.3, n)
    th = Thresholds()
    true = joint_threshold(t_cpu, t_gpu, p_cpu * t_cpu, (p_cpu + p_gpu) * t_gpu, thresholds=th)
    t_hat = t_gpu * np.exp(-eps)
    pred = joint_threshold(t_cpu, t_hat, p_cpu * t_cpu, (p_cpu + p_gpu) * t_hat, thresholds=th)
    np.testing.assert_allclose(pred.margin, true.margin + eps, atol=1e-9)


def test_expected_accuracy_is_the_oracle_at_zero_and_a_coin_at_infinity():
    m = np.array([-1.0, -0.1, 0.05, 0.3, 2.0])
    assert expected_accuracy(m, 0.0) == 1.0
    assert expected_accuracy(m, 1e9) == pytest.approx(0.5, abs=1e-6)
    # one job: Phi(|m| / sigma)
    assert expected_accuracy([0.2], 0.2) == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))))


def test_expected_accuracy_matches_sampling():
    rng = np.random.default_rng(1)
    m = rng.normal(0.5, 1.0, 400)
    draws = rng.normal(0, 0.3, (2000, m.size))
    sampled = np.mean((m + draws > 0) == (m > 0))
    assert expected_accuracy(m, 0.3) == pytest.approx(sampled, abs=0.005)


def test_curve_is_non_increasing_and_sigma_for_accuracy_inverts_it():
    m = np.random.default_rng(2).normal(0.3, 0.8, 300)
    curve = accuracy_curve(m, [0.0, 0.05, 0.1, 0.2, 0.5, 1.0])
    accs = [p.expected_accuracy for p in curve]
    assert accs == sorted(accs, reverse=True)
    assert curve[2].median_relative_time_error_pct == pytest.approx(100 * (math.exp(0.1 * NORMAL_MAD) - 1))
    s = sigma_for_accuracy(m, 0.9)
    assert expected_accuracy(m, s) == pytest.approx(0.9, abs=1e-4)
    assert expected_accuracy(m, s * 1.05) < 0.9


@pytest.mark.parametrize("call, field", [
    (lambda: expected_accuracy([0.1], -0.1), "sigma"),
    (lambda: expected_accuracy([0.1], float("nan")), "sigma"),
    (lambda: expected_accuracy([], 0.1), "margin"),
    (lambda: expected_accuracy([float("nan")], 0.1), "margin"),
    (lambda: sigma_for_accuracy([0.1], 1.0), "accuracy"),
    (lambda: sigma_for_accuracy([0.1], 0.4), "accuracy"),
    (lambda: median_relative_time_error_pct(-1), "sigma"),
])
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_margin_regression_is_out_of_fold_and_scored_on_held_out_rows():
    data = labelled_set(synthetic_pairs(40, seed=3))
    split = random_split(data, 0.25, seed=0)
    pred = margin_regression(data, [split], seed=0)
    assert np.isnan(pred[split.train]).all() and np.isfinite(pred[split.test]).all()
    assert np.array_equal(pred, margin_regression(data, [split], seed=0), equal_nan=True)  # deterministic
    folds = grouped_kfold(data, "arch", 3, seed=0)
    report = margin_prediction(data, folds, "families", seed=0)
    m = data.pairs["margin"].to_numpy()
    full = margin_regression(data, folds, seed=0)
    assert report.n == len(data)
    assert report.median_abs_error == pytest.approx(float(np.median(np.abs(full - m))))
    assert report.sigma_equivalent == pytest.approx(report.median_abs_error / NORMAL_MAD)
    assert report.accuracy == pytest.approx(float(np.mean((full > 0) == data.y)))


def test_reproducibility_of_identical_runs_and_of_a_flipped_job():
    trace = validate(synthetic_trace(12, seed=5, targets=("A",)))
    first = pair_outcomes(trace)
    same = reproducibility(first, first)
    assert (same.n, same.label_agreement, same.sigma_measurement, same.flipped) == (len(first), 1.0, 0.0, ())
    # second run: one job's GPU twice as slow as it sits, enough to move it across the threshold
    slower = trace.copy()
    job = first.loc[first["margin"].abs().idxmin(), "job_id"]
    rows = (slower["job_id"] == job) & (slower["device"] == "gpu")
    factor = float(np.exp(2 * abs(first.set_index("job_id").at[job, "margin"]) + 0.1))
    if first.set_index("job_id").at[job, "label_gpu"]:
        slower.loc[rows, "time_total_s"] *= factor
    else:
        slower.loc[rows, "time_total_s"] /= factor
    second = pair_outcomes(validate(slower))
    rep = reproducibility(first, second)
    assert rep.flipped == (f"{job}@A",)
    assert rep.label_agreement == pytest.approx(1 - 1 / len(first))
    across = reproducibility(first, second.assign(target_id="B"), on=("job_id",))
    assert across.flipped == (job,) and across.n == len(first)
    with pytest.raises(ValueError, match="on must name"):
        reproducibility(first, second, on=("model",))
    with pytest.raises(ValueError, match="share no"):
        reproducibility(first, second.assign(job_id="other"))
    with pytest.raises(ValueError, match="margin"):
        reproducibility(first.drop(columns="margin"), second)


def test_ceiling_module_reads_the_paired_frame_columns():
    frame = pd.DataFrame({"job_id": ["a"], "target_id": ["A"], "margin": [0.1], "label_gpu": [True]})
    assert reproducibility(frame, frame).label_agreement == 1.0


@pytest.mark.slow
def test_report_section_states_the_needed_and_the_achieved_error():
    from pathlib import Path

    from experiments.evaluation_report import accuracy_ceiling

    pairs = synthetic_pairs(30, seed=6)
    data = labelled_set(pairs)
    out = accuracy_ceiling(data, 0, {Path("rerun.parquet"): (Path("orig.parquet"), pairs, pairs)})
    need = out["json"]["sigma_needed"]["0.97"]
    assert expected_accuracy(data.pairs["margin"], need) == pytest.approx(0.97, abs=1e-4)
    text = "\n".join(out["md"])
    assert f"97 % needs sigma <= {need:.3f}" in text
    assert "agrees on 100.0 %" in text and "0 flipped" in text
    fams = out["json"]["margin_prediction"][0]
    assert fams["n"] == len(data) and fams["sigma_equivalent"] > 0


def test_shipped_rerun_repeats_the_pairs_sweep():
    """data/traces/h200_pairs_rerun.parquet: the same jobs measured again (README figures)."""
    from pathlib import Path

    from placement.core.trace import read_trace

    traces = Path(__file__).resolve().parent.parent / "data" / "traces"
    first, rerun = read_trace(traces / "h200_pairs_measured.parquet"), read_trace(traces / "h200_pairs_rerun.parquet")
    assert rerun.meta.source == "measured" and rerun.meta.seed == 1
    assert rerun.meta.code_version.startswith("0.1.0+g")
    rep = reproducibility(pair_outcomes(first.frame), pair_outcomes(rerun.frame))
    assert rep.n == 106 and len(rep.flipped) == 2 and rep.label_agreement == pytest.approx(104 / 106)


def test_report_scores_a_held_out_measured_host():
    from pathlib import Path

    from experiments.evaluation_report import held_out_host
    from placement.agents.dnn import DnnConfig

    pooled_runs = validate(synthetic_trace(24, seed=7, targets=("A",)))
    host_runs = validate(synthetic_trace(24, seed=7, targets=("B",)))
    pooled_runs["time_cv"], host_runs["time_cv"] = 0.01, 0.1
    meas = labelled_set(pair_outcomes(pooled_runs))
    md, out = held_out_host(meas, pooled_runs, Path("host.parquet"), host_runs, "a test host", 0,
                            {"dnn": DnnConfig(max_epochs=20, patience=5)}, Thresholds())
    text = "\n".join(md)
    assert "Not pooled: a test host" in text and "10.0 % on its GPU rows" in text and "(pooled sweeps: 1.0 %" in text
    agree = out["label_agreement_with_pooled"]
    assert agree["n"] == 24 and len(agree["flipped"]) == round(24 * (1 - agree["label_agreement"]))
    assert {r["policy"] for r in out["table"]} >= {"oracle", "dnn", "rule_based"}


def test_shipped_h100_host_is_measured_and_kept_out_of_every_pool():
    """data/traces/h100_pairs_measured.parquet: a held-out host for the report, in neither the
    Makefile's calibration/model traces nor the report's pooled set (one list, two places)."""
    import re
    from pathlib import Path

    from experiments.evaluation_report import NOT_POOLED
    from placement.core.trace import read_trace

    root = Path(__file__).resolve().parent.parent
    host = read_trace(root / "data" / "traces" / "h100_pairs_measured.parquet")
    assert host.meta.source == "measured" and set(host.frame["target_id"]) == {"h100-host"}
    assert len(pair_outcomes(host.frame)) == 106
    make = (root / "Makefile").read_text()
    listed = re.search(r"^NOT_POOLED = (.*)$", make, re.M)
    assert listed is not None
    assert sorted(Path(p).name for p in listed.group(1).split()) == sorted(NOT_POOLED)
