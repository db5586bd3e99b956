"""Evaluation harness: Table 5 metrics, regret against the Oracle, generalisation splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from placement.agents.baselines import CpuOnlyPolicy, GpuOnlyPolicy, RuleBasedPolicy
from placement.agents.evaluation import (
    compare,
    covered_rows,
    evaluate_choices,
    evaluate_frame,
    group_split,
    grouped_kfold,
    labelled_set,
    leave_one_group_out,
    load_labelled,
    out_of_fold,
    random_split,
)
from placement.core.trace import pair_outcomes, read_trace
from tests.agents_synthetic import synthetic_pairs

PAPER = Path(__file__).resolve().parent.parent / "data" / "traces" / "paper_table2.csv"


@pytest.fixture(scope="module")
def data():
    return labelled_set(synthetic_pairs(30, seed=4))


def test_oracle_and_constant_policies_by_definition(data):
    table = compare({"cpu_only": CpuOnlyPolicy(), "gpu_only": GpuOnlyPolicy()}, data).set_index("policy")
    assert table.loc["oracle", "accuracy"] == 1.0
    assert table.loc["oracle", "time_regret_pct"] == pytest.approx(0.0)
    assert table.loc["oracle", "energy_regret_pct"] == pytest.approx(0.0)
    assert table.loc["oracle", "reward_ratio"] == pytest.approx(1.0)
    assert table.loc["cpu_only", "throughput_vs_cpu_only"] == pytest.approx(1.0)
    assert table.loc["gpu_only", "energy_efficiency_vs_gpu_only"] == pytest.approx(1.0)
    assert table.loc["cpu_only", "gpu_usage_reduction_pct"] == 100.0
    assert table.loc["gpu_only", "gpu_usage_reduction_pct"] == 0.0
    assert table.loc["cpu_only", "accuracy"] == pytest.approx(1 - data.y.mean())
    assert set(table["energy_method"]) == {"modelled"}


def test_metrics_by_hand_on_paper_table2():
    pairs = pair_outcomes(read_trace(PAPER).frame)
    data = labelled_set(pairs)
    by_job = dict(zip(pairs["job_id"], range(len(pairs)), strict=True))
    # GPU-only vs CPU-only over the four jobs that ran on both devices (TimeSformer cannot run on the CPU)
    r = evaluate_choices(np.ones(len(data), dtype=bool), data, "gpu_only")
    both = pairs["cpu_feasible"] & pairs["gpu_feasible"]
    speedups = pairs.loc[both, "speedup"].to_numpy()
    assert r.throughput_vs_cpu_only == pytest.approx(np.exp(np.log(speedups).mean()))
    assert r.n_time_rows == 4 and r.n_energy_rows == 3  # xgb_iris has no GPU power reading
    assert r.energy_method == "measured"
    # CPU-only picks the CPU for TimeSformer, which did not run
    r_cpu = evaluate_choices(np.zeros(len(data), dtype=bool), data, "cpu_only")
    assert r_cpu.infeasible_choices == 1
    # the only wrong GPU choice is mobilenet (1.79x < T_t): time regret is its 1/1.79 speed-up, energy regret its ratio
    mob = by_job["mobilenet_imagenet100"]
    assert not data.y[mob]
    t_ratio = pairs.loc[mob, "gpu_time_per_sample_s"] / pairs.loc[mob, "cpu_time_per_sample_s"]
    assert r.time_regret_pct == pytest.approx(100 * (t_ratio ** (1 / 4) - 1))
    assert r.energy_regret_pct == pytest.approx(100 * (pairs.loc[mob, "energy_ratio"] ** (1 / 3) - 1))


def test_evaluate_frame_and_load_labelled(data):
    r = evaluate_frame(CpuOnlyPolicy(), data.pairs)
    assert r.policy == "cpu_only" and r.n == len(data)
    loaded, hashes = load_labelled([PAPER])
    assert len(loaded) == 5 and list(hashes.values())[0] == read_trace(PAPER).sha256
    with pytest.raises(ValueError, match="pair_outcomes"):
        labelled_set(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="choices for"):
        evaluate_choices([True], data)


def test_group_splits_hold_out_whole_groups(data):
    s = group_split(data, "family", ["cnn"])
    assert set(data.pairs.loc[s.test, "family"]) == {"cnn"}
    assert "cnn" not in set(data.pairs.loc[s.train, "family"])
    assert len(s.train) + len(s.test) == len(data)
    folds = leave_one_group_out(data, "target_id")
    assert len(folds) == data.pairs["target_id"].nunique()
    assert covered_rows(len(data), folds).all()
    k = grouped_kfold(data, "model", n_splits=3, seed=0)
    assert covered_rows(len(data), k).all()
    assert sum(len(f.test) for f in k) == len(data)
    r = random_split(data, 0.2, seed=0)
    assert len(set(r.train) & set(r.test)) == 0 and len(r.test) == round(0.2 * len(data))
    with pytest.raises(ValueError, match="not in the data"):
        group_split(data, "family", ["nonesuch"])
    with pytest.raises(ValueError, match="unknown group column"):
        group_split(data, "colour", ["red"])


def test_out_of_fold_fits_on_train_rows_only(data):
    folds = leave_one_group_out(data, "family")
    seen = []

    def fit(train):
        seen.append(set(train.pairs["family"]))
        return {"rule": RuleBasedPolicy.fit(train.x, train.y)}

    choices = out_of_fold(data, folds, fit)
    assert all(fold.held_out[0] not in fams for fold, fams in zip(folds, seen, strict=True))
    r = evaluate_choices(choices["rule"], data, "rule")
    assert 0.5 < r.accuracy <= 1.0
