"""Smoke test per study: each experiment script runs end to end with its ``--smoke`` budget (no Ray),
in this process, into a temporary directory; we check the CSV it writes, its plot, its markdown
section and its provenance. The figures themselves come from ``placement experiment NAME``."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"


def run_study(name: str, out: Path, *extra: str) -> Path:
    argv = sys.argv
    sys.argv = [str(EXPERIMENTS / f"{name}.py"), "--smoke", "--no-ray", "--out", str(out), *extra]
    try:
        runpy.run_path(str(EXPERIMENTS / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert (out / "section.md").read_text().startswith("## Study")
    prov = json.loads((out / "provenance.json").read_text())
    for key in ("seed", "thresholds", "trace_hashes", "code_version", "hardware"):
        assert key in prov, f"{name}: provenance lacks {key}"
    assert list(out.glob("*.png")), f"{name}: no plot written"
    return out


@pytest.fixture(autouse=True)
def _cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the scripts read data/traces/ relative to the repository


@pytest.mark.slow
def test_table5(tmp_path: Path) -> None:
    out = run_study("table5", tmp_path)
    table = pd.read_csv(out / "table5.csv")
    assert set(table.dataset) >= {"simulated", "paper_table2"}
    allrows = table[(table.dataset == "simulated") & (table.target == "all")].set_index("policy")
    assert {"oracle", "cpu_only", "gpu_only", "random", "rule_based", "dnn", "ppo_warm"} <= set(allrows.index)
    assert allrows.loc["oracle", "accuracy"] == 1.0
    assert allrows.loc["cpu_only", "throughput_vs_cpu_only"] == pytest.approx(1.0)
    assert allrows.loc["gpu_only", "energy_efficiency_vs_gpu_only"] == pytest.approx(1.0)
    assert allrows.loc["gpu_only", "gpu_usage_reduction_pct"] == 0.0
    assert set(table[table.dataset == "simulated"].target) == {"all", "A", "orin-nano"}
    assert (table[table.dataset == "simulated"].energy_method == "modelled").all()
    paper = table[table.dataset == "paper_table2"]
    assert (paper.n == 5).all() and (paper.energy_method == "measured").all()
    jobs = pd.read_csv(out / "table5_paper_jobs.csv")
    assert dict(zip(jobs.job_id, jobs.oracle, strict=True))["mobilenet_imagenet100"] == "cpu"


def test_gpu_share(tmp_path: Path) -> None:
    table = pd.read_csv(run_study("gpu_share", tmp_path) / "gpu_share.csv")
    assert list(table[table.sweep == "catalogue"].target) == ["A", "D", "jetson-nano"]
    assert list(table[table.sweep == "gpu_scale"].gpu_scale) == [0.5, 2.0]
    assert table.oracle_gpu_share.between(0, 1).all() and (table.n == 24).all()
    assert table[table.sweep == "catalogue"].dnn_loto_gpu_share.notna().all()
    shares = table[["oracle_gpu_share", "too_slow_share", "too_costly_share", "gpu_infeasible_share"]].sum(axis=1)
    assert (shares <= 1 + 1e-9).all()


@pytest.mark.slow
def test_threshold_sensitivity(tmp_path: Path) -> None:
    table = pd.read_csv(run_study("threshold_sensitivity", tmp_path) / "threshold_sensitivity.csv")
    assert len(table) == 6  # 3 T_t x 2 T_e
    at = table[table.energy_ratio_max == 1.5].sort_values("speedup_min")
    assert np.all(np.diff(at.gpu_share.to_numpy()) <= 1e-12)  # a higher T_t never adds GPU jobs
    paper = table[(table.speedup_min == 2.0) & (table.energy_ratio_max == 1.5)].iloc[0]
    assert paper.agreement_with_paper_point == 1.0
    assert table.pareto.any()
    assert table[table.energy_ratio_max == 1.5].dnn_accuracy.notna().all()


def test_feature_importance(tmp_path: Path) -> None:
    from placement.model.features import FEATURE_NAMES

    table = pd.read_csv(run_study("feature_importance", tmp_path) / "feature_importance.csv")
    assert set(table[table.level == "feature"].name) == set(FEATURE_NAMES)
    assert len(table[table.level == "paper_input"]) == 10
    assert table["rank"].min() == 1


def test_dnn_curves(tmp_path: Path) -> None:
    out = run_study("dnn_curves", tmp_path)
    metrics = pd.read_csv(out / "dnn_metrics.csv")
    assert set(zip(metrics.recipe, metrics.setting, strict=True)) == {
        (r, s) for r in ("default", "paper") for s in ("out_of_fold", "out_of_fold_random", "in_sample")}
    assert metrics.roc_auc.between(0, 1).all() and metrics.ece.between(0, 1).all()
    curves = pd.read_csv(out / "dnn_curves.csv")
    assert set(curves.curve) == {"pr", "roc", "calibration"} and set(curves.protocol) == {"arch", "random"}
    assert json.loads((out / "provenance.json").read_text())["inference"]["per_decision_ms"] > 0


@pytest.mark.slow
def test_ppo_warm_vs_cold(tmp_path: Path) -> None:
    out = run_study("ppo_warm_vs_cold", tmp_path)
    summary = pd.read_csv(out / "steps_to_oracle.csv")
    assert set(summary.kind) == {"warm", "cold"}
    assert set(summary.set) == {"training groups", "held-out groups"}
    warm = summary[summary.kind == "warm"]
    # the warm start decides exactly as the DNN it was copied from
    assert np.allclose(warm.start_reward_ratio, warm.dnn_reward_ratio)
    curves = pd.read_csv(out / "learning_curves.csv")
    assert curves.groupby(["kind", "set"]).steps.count().min() >= 2
    assert (curves.groupby(["kind", "set"]).steps.min() == 0).all()  # scored as initialised, before any step
    hit = warm.dropna(subset=["steps_to_95pct_after_warmup"])
    assert (hit.steps_to_95pct_after_warmup >= hit.steps_to_95pct).all()


@pytest.mark.slow
def test_online_drift(tmp_path: Path) -> None:
    out = run_study("online_drift", tmp_path)
    events = pd.read_csv(out / "online_drift_events.csv")
    assert set(events.scenario) == {"gpu_slowdown", "new_target"}
    assert len(events) == 2 * 48
    assert (events.groupby("scenario").drifted.sum() == 24).all()
    assert events.learner_update.notna().sum() >= 2  # the learner updated on feedback
    slow = events[events.scenario == "gpu_slowdown"]
    assert set(slow.target) == {"A"}
    new = events[events.scenario == "new_target"]
    assert "h100-host" in set(new[new.drifted].target) and "h100-host" not in set(new[~new.drifted].target)
    summary = pd.read_csv(out / "online_drift_summary.csv")
    assert set(summary.policy) == {"online", "static_dnn"}


@pytest.mark.slow
def test_contention(tmp_path: Path) -> None:
    table = pd.read_csv(run_study("contention", tmp_path) / "contention.csv")
    assert set(table.gpu_load) == {0.3, 3.0}
    assert {"ppo_contention", "dnn", "oracle_without_queue", "oracle_with_queue"} <= set(table.policy)
    t = table.set_index(["gpu_load", "policy"])
    assert t.loc[(3.0, "cpu_only"), "mean_wait_s"] == 0.0  # nothing queues for the GPU
    assert t.loc[(3.0, "gpu_only"), "mean_wait_s"] > t.loc[(0.3, "gpu_only"), "mean_wait_s"]
    assert t.loc[(3.0, "oracle_with_queue"), "accuracy"] == 1.0


@pytest.mark.slow
def test_edge_knobs(tmp_path: Path) -> None:
    out = run_study("edge_knobs", tmp_path)
    cores = pd.read_csv(out / "edge_knobs_cores.csv")
    sim = cores[cores.source == "simulated"]
    assert set(sim.target) == {"jetson-nano", "agx-orin"}
    assert sim[sim.target == "jetson-nano"].cpu_cores.max() == 4
    assert sim[sim.target == "agx-orin"].cpu_cores.max() == 12
    rec = pd.read_csv(out / "edge_knobs_recommend.csv")
    assert set(rec.device) == {"cpu", "gpu"}
    assert (rec.recommended_cores <= rec.default_cores).all()
    assert (rec[rec.device == "cpu"].recommended_cap == "grow").all()
    caps = pd.read_csv(out / "edge_knobs_caps.csv")
    assert "grow" in set(caps.gpu_mem_cap_mib.astype(str))


def test_cli_experiment_report_and_unknown(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from placement.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["experiment", "no_such_study"])
    assert bad.exit_code == 2 and "unknown experiment" in bad.output
    (tmp_path / "gpu_share").mkdir()
    (tmp_path / "gpu_share" / "section.md").write_text("## Study 2 — GPU share\n\nbody\n")
    (tmp_path / "gpu_share" / "provenance.json").write_text(json.dumps(
        {"seed": 3, "code_version": "v", "trace_hashes": {"t.parquet": "a" * 64}, "args": {"full": False}}))
    ok = runner.invoke(app, ["experiment", "report", "--out", str(tmp_path)])  # the folder holding the studies
    assert ok.exit_code == 0, ok.output
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Study 2 — GPU share" in report and "**not run**" in report and "aaaaaaaaaaaa" in report


def test_study_defaults_name_shipped_traces() -> None:
    import re

    named = {m for p in EXPERIMENTS.glob("*.py") for m in re.findall(r'"(data/traces/[^"]+)"', p.read_text())}
    assert named, "no study names a trace?"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"study defaults name traces that are not shipped: {missing}"


def test_experiment_writes_a_run_folder_not_tracked_results(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from placement.cli import app

    runner = CliRunner()
    helped = runner.invoke(app, ["experiment", "--help"], terminal_width=300)
    assert helped.exit_code == 0
    for study in ("table5", "edge_knobs", "edge_study", "online_drift"):
        assert study in helped.output
    tracked = (ROOT / "results" / "REPORT.md").read_bytes()
    result = runner.invoke(app, ["experiment", "report", "--out", str(tmp_path / "run")], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "not run" in (tmp_path / "run" / "REPORT.md").read_text()
    assert (ROOT / "results" / "REPORT.md").read_bytes() == tracked


def test_probe_recheck_separates_probe_error_from_lease_variation() -> None:
    from experiments.probe_recheck import Args, compare, first_lease_jobs, main, pairs
    from placement.core.threshold import Thresholds

    args = Args()
    same = first_lease_jobs(args.recheck.with_name(args.recheck.name + ".journal.jsonl"), args.lease_gap_s)
    assert len(same) == 57  # the sweep was resumed on a second lease after 123 of its 212 rows
    th = Thresholds()
    recheck, probe = pairs(args.recheck, th), pairs(args.probe, th)
    on_lease = compare(recheck, probe, args.band, same)
    assert on_lease["jobs"] == 57 and 0.9 < float(on_lease["agreement_clear"]) <= 1.0  # type: ignore[arg-type]
    # a clear job disagrees exactly when the two margins differ in sign
    for item in on_lease["wrong"]:  # type: ignore[attr-defined]
        first, second = item.split("(")[1].rstrip(")").split(" vs ")
        assert (float(first) > 0) != (float(second) > 0)
    assert compare(recheck, recheck, args.band)["agreement_clear"] == 1.0
    text = main(args)
    assert text.count("\n| ") == 10 and "probe (same lease)" in text  # header + 9 comparisons


def test_mlp_step_check_times_both_protocols(tmp_path: Path) -> None:
    from experiments.mlp_step_check import Args, main

    (rec,) = main(Args(out=tmp_path / "c.jsonl", batches=(2,), flush=(True,), cores=1))
    # flushing subnormals is process-wide: left on, it breaks every later test that draws subnormal floats
    assert torch.tensor([1e-40], dtype=torch.float32).item() != 0.0
    assert rec["long_steps"] >= 7 and float(rec["long_trimmed_mean_s"]) > 0 and float(rec["probe_step_s"]) > 0
    assert len(rec["first_steps_s"]) >= 7 and rec["subnormal_params"] == 0  # type: ignore[arg-type]
    assert json.loads((tmp_path / "c.jsonl").read_text()) == rec
    committed = [json.loads(line) for line in (ROOT / "data/traces/h200_mlp_step_check.jsonl").read_text().splitlines()]
    assert {(r["flush_denormal"], r["batch"]) for r in committed} == {(f, b) for f in (False, True) for b in (2, 4, 8, 16, 32)}


@pytest.mark.slow
def test_unseen_rounds_feedback_through_http_moves_the_estimates(tmp_path: Path) -> None:
    # one group of unseen architectures, one round: the zero-shot answers rest on the model; after
    # chosen-device feedback through the HTTP service every answer rests on the architecture's history
    from experiments.unseen_rounds import SMOKE, Args, main

    summary = main(Args(out=str(tmp_path), smoke=True, poison_share=0.2, **SMOKE))  # type: ignore[arg-type]
    (fold,) = summary["per_fold"]
    (lied,) = summary["poisoned"]
    assert lied["held_out"] == fold["held_out"] and lied["poison_share"] == 0.2
    # before any feedback the two runs answer alike; the flips are counted per round
    first_flips = [f for f in summary["flips"] if f["round"] == 0]
    assert first_flips and all(f["flipped"] == 0 for f in first_flips)
    assert [f["round"] for f in summary["pooled_flips"]] == [0, 1]
    # the third play withholds the reports that lie in the poisoned one (the same draws): what the
    # lies did beyond taking those reports away
    (withheld,) = summary["silent"]
    assert withheld["held_out"] == fold["held_out"]
    assert withheld["rounds"][1]["lied"] == lied["rounds"][1]["lied"]  # withheld there, lied here
    assert [f["round"] for f in summary["pooled_flips_vs_silent"]] == [0, 1]
    first, after = fold["rounds"]
    assert first["round"] == 0 and after["round"] == 1 and first["jobs"] == after["jobs"] > 0
    assert set(first["estimate_source"]) == {"model"} and set(after["estimate_source"]) == {"history"}
    assert 0 < first["clear_jobs"] <= first["jobs"] and 0 <= after["right_clear"] <= after["clear_jobs"]
    assert after["updates"], "the learner ran after the round's feedback"
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["groups"][0] == fold["held_out"] and prov["trace_hashes"] and prov["seed"] == 0
    assert json.loads((tmp_path / "rounds.json").read_text())["pooled"][1]["round"] == 1


def test_cap_check_runs_a_plan_and_the_committed_runs_match_it(tmp_path: Path) -> None:
    from experiments.cap_check import Args, run_plan
    from placement.model.opcalibration import cap_runs

    plan = {"code_version": "test", "target": "h200-host", "advice": "test",
            "jobs": [{"workload": "lenet_cifar10", "mode": "infer", "batch_size": 2, "cap_mib": 256,
                      "estimated_peak_mib": 70.0, "reserved_peak_mib": 20.0},
                     {"workload": "lenet_cifar10", "mode": "train", "batch_size": 2, "cap_mib": None,
                      "estimated_peak_mib": 9e5, "reserved_peak_mib": 20.0}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    path = run_plan(Args(run=True, out=tmp_path, devices=("cpu",), budget_s=1.0))  # no cap applies on the CPU
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[-1]["summary"] and lines[-1]["jobs"] == 1 and lines[-1]["ran"] == 1 and lines[-1]["oom"] == 0
    assert cap_runs(path)[("lenet_cifar10", "infer", 2)]["feasible"] is True  # the 'grow' job is not run
    # the committed H200 run is of the committed plan, job for job and cap for cap
    committed = cap_runs()
    planned = json.loads((ROOT / "results/cap_check/plan.json").read_text())["jobs"]
    assert {(j["workload"], j["mode"], j["batch_size"]): j["cap_mib"] for j in planned if j["cap_mib"]} == {
        k: r["cap_mib"] for k, r in committed.items()}
    assert sum(r["feasible"] is False for r in committed.values()) == 0  # results/cap_check/README.md


def test_train_step_split_times_each_phase(tmp_path: Path) -> None:
    from experiments.train_step_split import Args, main

    payload = main(Args(out=tmp_path / "s.json", device="cpu", jobs=(("mlp_covtype", 2),)))
    (row,) = payload["rows"]  # type: ignore[misc]
    assert row["model"] == "mlp_covtype" and row["params"] == 6.0
    assert all(float(row[k]) > 0 for k in ("infer_s", "forward_s", "backward_s", "step_s"))
    assert json.loads((tmp_path / "s.json").read_text())["rows"] == [row]
    for lease in ("h200_lease2", "h200_lease3"):  # the committed runs on the lent H200
        rows = json.loads((ROOT / f"results/train_step_split/{lease}.json").read_text())["rows"]
        assert {r["device"] for r in rows} == {"cuda"} and len(rows) == len(Args().jobs)


def test_opmodel_variants_lease_and_host_ratios_come_from_the_committed_files() -> None:
    from experiments.opmodel_variants import Args, host_ratio, lease_ratios
    from placement.model.opcalibration import load_variants

    args = Args()
    ratios = lease_ratios(args.fit_file, args.leases)
    assert set(ratios) == {"h200_microbench_lease2.json", "h200_microbench_lease3.json"}
    assert all(set(r) == {"cpu1", "cpu4", "cpu16", "gpu"} for r in ratios.values())
    committed = load_variants()
    assert committed is not None
    for name, r in ratios.items():
        assert committed["lease_ratio"][name] == pytest.approx(r)
    assert committed["h100_over_h200"] == pytest.approx(host_ratio())
    assert set(committed["variants"]) == {"bundled", "grouped", "chains", "all leases"}
    assert set(committed["h100_few_shot"]) == {"4", "10", "20"}
    assert sum(b["rows"] for b in committed["gpu_by_busy_share"]) == 246


def test_history_distance_scores_both_weightings_on_the_same_jobs(tmp_path: Path) -> None:
    from experiments.history_distance import TRACES, Args, main

    out = main(Args(traces=tuple(ROOT / p for p in TRACES), out=tmp_path / "h.json"))
    right = out["threshold_on_estimate_right"]
    assert out["clear_scored_jobs"] > 100 and set(right) == {"constant", "distance", "zero_shot"}
    assert all(0 < v <= out["clear_scored_jobs"] for v in right.values())
    # the fitted growth with distance is positive on both devices (the semivariogram rises)
    assert all(k > 0 for _, k in out["fit_all_architectures"].values())
    committed = json.loads((ROOT / "results/history_distance.json").read_text())
    assert committed["threshold_on_estimate_right"] == right


def test_served_temperature_scores_the_bundled_model_on_architectures_it_never_trained_on(tmp_path: Path) -> None:
    from experiments.served_temperature import Args, main

    out = main(Args(model=ROOT / "models/default", trace=ROOT / "data/traces/h200_archs_measured.parquet",
                    out=tmp_path / "t.json"))
    before, after = out["without_temperature"], out["with_temperature"]
    assert out["temperature"] > 1 and out["jobs"] == 80
    assert after["agreement"] == before["agreement"]  # the answers never change
    assert after["log_loss"] < before["log_loss"] and after["ece"] < before["ece"]
    committed = json.loads((ROOT / "results/served_temperature.json").read_text())
    assert committed["with_temperature"] == after and committed["without_temperature"] == before
    with pytest.raises(ValueError, match="training traces"):
        main(Args(model=ROOT / "models/default", trace=ROOT / "data/traces/h200_measured.parquet", out=tmp_path / "x"))
