"""Operators recorded on meta: they add up to the job's FLOPs, travel with the job, and the
operator model is fitted from the reference micro-benchmarks alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from placement.core.catalogue import get_target
from placement.core.job import Job
from placement.core.operator_summary import OperatorSummary
from placement.lab.workloads import NEW_KIND_MODELS, ZOO, count_flops, describe_workload
from placement.model.operators import record_operators, summarise, zoo_operators

SLOW = {"lstm_imdb", "gru_imdb"}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _params():
    out = []
    for name in ZOO:
        marks = [pytest.mark.slow] if name in SLOW or name.endswith("imagenet100") else []
        out += [pytest.param(name, mode, marks=marks, id=f"{name}-{mode}") for mode in ("infer", "train")]
    return out


@pytest.mark.parametrize("name,mode", _params())
def test_operator_list_matches_the_flop_count(name, mode):
    w = ZOO[name]
    ops = record_operators(w.build, w.dataset.sample_shape, w.dataset.dtype, 2, mode)
    total = sum(o.flops for o in ops)
    assert total == pytest.approx(count_flops(w.build, w.dataset.sample_shape, w.dataset.torch_dtype, 2, mode), rel=1e-9)
    assert all(o.bytes_read >= 0 and o.bytes_written >= 0 for o in ops)
    phases = {o.phase for o in ops}
    assert phases == ({"forward"} if mode == "infer" else {"forward", "backward", "optimizer"})


def test_kinds_follow_the_architecture():
    kinds = {name: {o.kind for o in record_operators(ZOO[name].build, ZOO[name].dataset.sample_shape,
                                                     ZOO[name].dataset.dtype, 2, "train")}
             for name in ("convnext_cifar10", "gpt_tinytext", "dlrm_criteo", "gnn_graph")}
    assert {"dwconv", "norm", "matmul"} <= kinds["convnext_cifar10"]
    assert "attention" in kinds["gpt_tinytext"]
    assert "gather" in kinds["dlrm_criteo"] and "gather" in kinds["gnn_graph"]


@pytest.mark.slow
def test_recurrent_layers_give_one_row_per_time_step():
    w = ZOO["lstm_imdb"]
    ops = record_operators(w.build, w.dataset.sample_shape, w.dataset.dtype, 2, "infer")
    rec_mm = [o for o in ops if o.kind == "recurrent" and "mm" in o.name]
    assert len(rec_mm) >= 128  # one hidden-state product per time step at least


def test_extended_summary_equals_a_direct_recording():
    w = ZOO["gnn_graph"]
    direct = summarise(record_operators(w.build, w.dataset.sample_shape, w.dataset.dtype, 7, "train"),
                       sum(1 for _ in w.build().parameters()))
    assert zoo_operators("gnn_graph", "train", 7).flops == pytest.approx(direct.flops)
    assert zoo_operators("gnn_graph", "train", 7).flops == pytest.approx(describe_workload("gnn_graph", 7, "train").flops_per_batch)


def test_new_architectures_are_in_the_zoo():
    assert len(NEW_KIND_MODELS) >= 8
    assert {ZOO[n].model for n in ZOO} >= set(NEW_KIND_MODELS)


def test_job_carries_operators_and_keeps_the_aggregate_path():
    from placement.model.perfmodel import PerformanceModel

    job = describe_workload("dlrm_criteo", 8, "infer")
    with_ops = job.model_copy(update={"operators": zoo_operators("dlrm_criteo", "infer", 8)})
    again = Job.model_validate_json(with_ops.model_dump_json())
    assert isinstance(again.operators, OperatorSummary) and again.operators.flops == pytest.approx(job.flops_per_batch)
    model = PerformanceModel()
    target = get_target("h200-host")
    assert model.basis(job, target).startswith("aggregate")
    assert model.basis(with_ops, target).startswith("operators")
    agg = model.predict(job, target, "gpu")
    ops = model.predict(with_ops, target, "gpu")
    assert ops.time_per_batch_s != agg.time_per_batch_s
    assert ops.cpu_power_method == "modelled" and ops.gpu_power_method == "modelled"
    assert model.operator_model.time_s(with_ops, target, "gpu")[0] == pytest.approx(ops.time_per_batch_s)


def test_http_job_description_accepts_operators():
    from placement.serve.schemas import PlacementRequest

    job = describe_workload("gnn_graph", 4, "infer").model_copy(update={"operators": zoo_operators("gnn_graph", "infer", 4)})
    body = json.loads(job.model_dump_json())
    req = PlacementRequest.model_validate({"job": body})
    assert req.job is not None and req.job.operators is not None
    bad = dict(body, operators={"bins": [{"kind": "matmul", "size_bin": 3, "count": 0, "flops": 1, "bytes_read": 1,
                                          "bytes_written": 1, "launches": 1}]})
    with pytest.raises(ValueError, match="count"):
        PlacementRequest.model_validate({"job": bad})


@pytest.mark.slow
def test_fit_reads_only_the_micro_benchmarks(monkeypatch, tmp_path):
    """The operator model's only data input is the micro-benchmark file: reading a trace fails here."""
    import placement.core.trace as trace
    import placement.model.opmodel as opmodel

    def refuse(*a, **k):
        raise AssertionError("the operator model's fit must not read a trace")

    monkeypatch.setattr(trace, "read_trace", refuse)
    monkeypatch.setattr(pd, "read_parquet", refuse)
    data = json.loads(Path("data/traces/h200_microbench.json").read_text())
    keep = {"matmul-s", "conv-s", "elementwise-s", "copy-s"}
    data["runs"] = [r for r in data["runs"] if r["bench"] in keep]
    path = tmp_path / "mb.json"
    path.write_text(json.dumps(data))
    seen = []
    real = opmodel.bench_summaries

    def only_kept(benches=None):
        out = real(benches)
        seen.append(sorted(out))
        return {k: v for k, v in out.items() if k[0] in keep}

    monkeypatch.setattr(opmodel, "bench_summaries", only_kept)
    model = opmodel.fit(path)
    assert model.provenance["inputs"] == "the reference micro-benchmarks only"
    assert all(v["runs"] <= 8 for v in model.provenance["fit"].values())
    assert seen and all(name.split("-")[0] in {"matmul", "conv", "conv1d", "dwconv", "embedding", "scatter", "lstm", "gru",
                                               "elementwise", "layernorm", "batchnorm", "maxpool", "attention", "copy"}
                        for name, _ in seen[0])


def test_a_summary_at_a_freed_summarys_address_gets_its_own_prediction():
    """The operator model remembers each summary's bins; a new summary allocated where a freed one
    lived (same ``id``) must not be given the freed one's (the calibration report's figures once
    changed from run to run through this)."""
    from placement.model.opmodel import bundled_operator_model

    model = bundled_operator_model()
    assert model is not None
    target = get_target("h200-host")
    small = describe_workload("lenet_cifar10", 8, "infer")
    small = small.model_copy(update={"operators": zoo_operators("lenet_cifar10", "infer", 8)})
    big = describe_workload("vgg11_cifar10", 256, "train")
    big = big.model_copy(update={"operators": zoo_operators("vgg11_cifar10", "train", 256)})
    truth = model.time_s(big, target, "gpu")[0]
    model._summary_bins(small.operators)
    # what id reuse looks like: the big job's summary sits where the cache remembers another one
    model._cache[id(big.operators)] = model._cache.pop(id(small.operators))
    assert model.time_s(big, target, "gpu")[0] == pytest.approx(truth)
    assert model.time_s(small, target, "gpu")[0] != pytest.approx(truth)


def test_bundled_fit_says_where_it_came_from():
    from placement.model.opmodel import bundled_operator_model

    model = bundled_operator_model()
    assert model is not None
    assert model.provenance["microbench"] == "h200_microbench.json"
    assert model.provenance["inputs"] == "the reference micro-benchmarks only"


def test_leave_one_architecture_out_never_sees_the_held_out_architecture():
    from placement.model.opcalibration import leave_one_architecture_out

    rng = np.random.default_rng(0)
    rows = []
    for arch in ("a", "b", "c"):
        for i in range(6):
            rows.append({"arch": arch, "device": "cpu" if i % 2 else "gpu", "mode": "infer",
                         "pred_time_s": 1.0, "time_per_batch_s": float(rng.uniform(0.5, 2.0))})
    df = pd.DataFrame(rows)
    base = leave_one_architecture_out(df)
    changed = df.copy()
    changed.loc[changed.arch == "a", "time_per_batch_s"] *= 100.0  # the held-out architecture's own measurements
    after = leave_one_architecture_out(changed)
    held = df.arch == "a"
    np.testing.assert_allclose(base.loc[held, "loao_pred_time_s"], after.loc[held, "loao_pred_time_s"])
    assert not np.allclose(base.loc[~held, "loao_pred_time_s"], after.loc[~held, "loao_pred_time_s"])


def test_loao_within_a_lease_scales_from_that_leases_other_architectures_only():
    from placement.model.opcalibration import leave_one_architecture_out

    rows = [{"arch": arch, "trace": trace, "device": "gpu", "mode": "infer", "pred_time_s": 1.0,
             "time_per_batch_s": speed}
            for trace, speed in (("fast.parquet", 1.0), ("slow.parquet", 2.0)) for arch in ("a", "b", "c")]
    rows.append({"arch": "a", "trace": "slow.parquet", "device": "gpu", "mode": "train", "pred_time_s": 1.0,
                 "time_per_batch_s": 5.0})
    df = pd.DataFrame(rows)
    lease = leave_one_architecture_out(df, per_lease=True)
    infer = lease[lease["mode"] == "infer"]
    np.testing.assert_allclose(infer["loao_pred_time_s"], infer["time_per_batch_s"])  # each lease's level, exactly
    pooled = leave_one_architecture_out(df)
    assert not np.allclose(pooled[pooled["mode"] == "infer"]["loao_err"], 0.0)
    # a (device, mode, lease) with no other architecture keeps the zero-shot prediction
    assert float(lease[lease["mode"] == "train"]["loao_pred_time_s"].iloc[0]) == 1.0


def test_archs_plan_and_micro_benchmark_plan_are_the_committed_sweeps():
    from placement.core.trace import read_trace
    from placement.lab.microbench import plan
    from placement.lab.profiler import archs_plan

    rows = archs_plan(16)
    assert len(rows) == 200 and len({r.key for r in rows}) == 200
    assert read_trace(Path("data/traces/h200_archs_measured.parquet")).frame.shape[0] == 200
    assert len(plan((1, 4, 16), gpu=True, host_cores=16)) == len(json.loads(Path("data/traces/h200_microbench.json").read_text())["runs"])


def test_micro_benchmark_runs_and_resumes(tmp_path):
    from placement.lab.microbench import RunSpec, run_plan

    runs = [RunSpec("elementwise-s", "infer", "cpu", 1), RunSpec("matmul-s", "train", "cpu", 1)]
    out = tmp_path / "mb.json"
    first = run_plan(runs[:1], out, quick=True)
    again = run_plan(runs, out, quick=True)
    assert len(first["runs"]) == 1 and len(again["runs"]) == 2
    assert again["runs"][0] == first["runs"][0]  # resumed, not re-measured
    assert all(r["time_s"] > 0 for r in again["runs"])


def test_cli_describe_records_operators(tmp_path):
    from typer.testing import CliRunner

    from placement.cli import app

    rows_path = tmp_path / "ops.json"
    res = CliRunner().invoke(app, ["describe", "gnn_graph", "-b", "4", "-m", "train", "--operator-rows", str(rows_path)])
    assert res.exit_code == 0, res.output
    job = json.loads(res.stdout)
    assert job["operators"]["bins"] and sum(b["flops"] for b in job["operators"]["bins"]) == pytest.approx(job["flops_per_batch"])
    rows = json.loads(rows_path.read_text())
    assert sum(r["flops"] for r in rows) == pytest.approx(job["flops_per_batch"]) and {"kind", "shapes", "phase"} <= set(rows[0])
    res = CliRunner().invoke(app, ["describe", "gnn_graph", "--no-operators"])
    assert res.exit_code == 0 and json.loads(res.stdout)["operators"] is None


@pytest.mark.slow
def test_zero_shot_answers_and_targets_are_computed_not_written_by_hand():
    from placement.core.trace import pair_outcomes, read_trace
    from placement.model.opcalibration import (
        leave_one_architecture_out,
        targets_text,
        zero_shot_answers,
    )

    path = "data/traces/h200_pairs_measured.parquet"
    answers = zero_shot_answers([path])
    pairs = pair_outcomes(read_trace(Path(path)).frame)
    assert answers["pairs"] == len(pairs) and 0 < answers["clear"] <= answers["pairs"]
    assert answers["clear"] == int((pairs["margin"].abs() > np.log(1.25)).sum())
    assert 0.5 < answers["agreement_clear"] <= 1.0 and answers["median_abs_log_speedup_error"] > 0
    rows = [{"arch": a, "device": d, "mode": "infer", "pred_time_s": 1.0, "agg_pred_time_s": 1.0,
             "time_per_batch_s": t, "err": 1.0 / t - 1.0, "agg_err": 0.5}
            for a, t in (("x", 1.05), ("y", 1.0)) for d in ("cpu", "gpu")]
    df = leave_one_architecture_out(pd.DataFrame(rows))
    knobs = {"jobs": 4.0, "median_slowdown": 0.02, "over_10pct": 1.0, "caps_checked": 3.0,
             "caps_below_measured_peak": 0.0}
    text = targets_text(df, None, knobs, answers, ["x"])
    assert f"{100 * answers['agreement_clear']:.1f} %" in text and "better on 1 on CPU and 1 on GPU" in text
    assert "<= 15 % on CPU and GPU -- **met**" in text and "slowdown <= 5 % -- **met** (2.0 %" in text
    assert "no cap below the measured peak -- **met**" in text and "not yet run under the caps" in text
    # once the caps were run under the advice (experiments/cap_check.py), the measurement decides
    measured = {**knobs, "caps_below_measured_peak": 2.0, "caps_ran_under_cap": 3.0, "caps_oom_under_cap": 0.0,
                "caps_not_run": 0.0}
    assert "runs out of memory -- **met** (measured: 0 of 3" in targets_text(df, None, measured, answers, ["x"])
    oom = {**measured, "caps_ran_under_cap": 2.0, "caps_oom_under_cap": 1.0}
    assert "runs out of memory -- **not met** (measured: 1 of 3" in targets_text(df, None, oom, answers, ["x"])
    stale = {**measured, "caps_not_run": 1.0}
    assert "runs out of memory -- **not met**" in targets_text(df, None, stale, answers, ["x"])


def test_an_opmodel_1_parameter_set_still_loads_with_its_three_host_costs():
    """opmodel/1 kept one host cost for every kind but recurrent and attention; such a file loads
    with that cost on each of those kinds (and no training-step term)."""
    from placement.model.opmodel import FIT_KINDS, OperatorModel

    data = json.loads(Path("placement/data/op_params.json").read_text())
    for dev in data["devices"].values():
        dev["overhead_s"] = {"op": 3e-5, "recurrent": 2e-7, "attention": 4e-7}
        dev.pop("train_step_s")
    model = OperatorModel.from_dict(data)
    gpu = model.devices["gpu"]
    assert set(gpu.overhead_s) == set(FIT_KINDS)
    assert gpu.overhead_s["conv"] == gpu.overhead_s["matmul"] == 3e-5
    assert gpu.overhead_s["recurrent"] == 2e-7 and gpu.overhead_s["attention"] == 4e-7
    assert gpu.train_step_s == 0.0


def test_host_costs_are_per_kind_and_training_pays_its_step_term():
    """opmodel/2: a convolution's host cost is its own, not an element-wise launch's, and a
    training step pays ``train_step_s`` once on top of its operators."""
    from dataclasses import replace

    from placement.model.opmodel import bundled_operator_model

    model = bundled_operator_model()
    assert model is not None
    gpu = model.devices["gpu"]
    assert gpu.overhead_s["conv"] != gpu.overhead_s["elementwise"]
    assert gpu.train_step_s > 0
    target = get_target("h200-host")
    job = describe_workload("lenet_cifar10", 4, "train")
    job = job.model_copy(update={"operators": zoo_operators("lenet_cifar10", "train", 4)})
    with_step = model.time_s(job, target, "gpu")[0]
    model.devices["gpu"] = replace(gpu, train_step_s=0.0)
    try:
        assert with_step - model.time_s(job, target, "gpu")[0] == pytest.approx(gpu.train_step_s)
    finally:
        model.devices["gpu"] = gpu


def test_extra_benches_are_measured_on_request_and_never_fitted():
    """The chains and SGD steps of EXTRA_BENCHES run with ``--extra`` only (the SGD steps as *train*
    only) and the operator model's fit reads BENCHES alone by default."""
    import placement.lab.microbench as mb
    from placement.model.opmodel import bench_summaries

    default = mb.plan((1,), gpu=True, host_cores=16)
    extra = mb.plan((1,), gpu=True, host_cores=16, benches=(*mb.BENCHES, *mb.EXTRA_BENCHES))
    names = {b.name for b in mb.EXTRA_BENCHES}
    assert not names & {r.bench for r in default}
    assert {r.bench for r in extra} - {r.bench for r in default} == names
    assert {r.mode for r in extra if r.bench == "sgd-chain"} == {"train"}
    assert not names & {k[0] for k in bench_summaries()}
    # the committed later leases hold the whole plan with the extra benches
    lease3 = json.loads(Path("data/traces/h200_microbench_lease3.json").read_text())["runs"]
    assert {r["key"] for r in lease3} == {r.key for r in mb.plan((1, 4, 16), gpu=True, host_cores=16,
                                                                  benches=(*mb.BENCHES, *mb.EXTRA_BENCHES))}


def test_an_optimizer_bench_records_the_optimizer_step():
    import placement.lab.microbench as mb
    from placement.model.opmodel import bench_summaries

    sgd = mb.get_bench("sgd-chain")
    s = bench_summaries([sgd, mb.get_bench("linear-chain")])
    opt = [b for b in s[("sgd-chain", "train")].bins if b.kind == "optimizer"]
    assert opt and sum(b.count for b in opt) == 3 * 16  # weight decay, momentum, update per parameter tensor
    assert not [b for b in s[("linear-chain", "train")].bins if b.kind == "optimizer"]
    step = mb._step(sgd, "train", torch.device("cpu"))
    step()  # runs forward, backward and the SGD step


def test_limits_text_reports_lease_ratios_and_variants():
    from placement.model.opcalibration import limits_text

    fit = {"gpu": {"median_abs_err": 0.16}, "cpu16": {"median_abs_err": 0.27}, "cpu1": {"median_abs_err": 0.21}}
    row = {"bench_fit_median_pct": 19.6, "cpu_zero_shot_pct": 43.0, "cpu_loao_pct": 38.7, "cpu_h100_pct": 40.6,
           "gpu_zero_shot_pct": 30.8, "gpu_loao_pct": 25.2, "gpu_h100_pct": 43.8}
    variants = {"lease_ratio": {"h200_microbench_lease2.json": {"cpu1": 1.24, "gpu": 1.51}},
                "h100_over_h200": {"cpu": 1.77, "gpu": 1.5}, "variants": {"bundled": row}}
    text = "\n".join(limits_text(fit, variants))
    assert "cpu1 21 %, cpu16 27 %, gpu 16 %" in text
    assert "lease2: cpu1 1.24x, gpu 1.51x" in text and "1.77x (CPU) and 1.50x (GPU)" in text
    assert "| bundled | 19.6 | 43.0 | 38.7 | 40.6 | 30.8 | 25.2 | 43.8 |" in text
    assert "lease" not in "\n".join(limits_text(fit, None))
    variants["h100_few_shot"] = {"10": {"cpu": 33.1, "gpu": 31.5}}
    variants["gpu_by_busy_share"] = [{"busy_from": 0.0, "busy_to": 0.1, "rows": 138.0, "loao_pct": 28.2},
                                     {"busy_from": 0.6, "busy_to": 1.0, "rows": 30.0, "loao_pct": 27.6}]
    text = "\n".join(limits_text(fit, variants))
    assert "10 rows: CPU 33.1 %, GPU 31.5 %" in text
    assert "138 of 168 rows with the GPU busy 0-10 % of the step (LOAO 28.2 %)" in text


def test_committed_variants_match_the_bundled_model():
    """results/opmodel_variants.json's *bundled* row scores today's bundled fit (rerun
    ``python -m experiments.opmodel_variants`` after refitting)."""
    from placement.model.opcalibration import load_variants
    from placement.model.opmodel import bundled_operator_model

    variants = load_variants()
    assert variants is not None
    model = bundled_operator_model()
    assert model is not None
    fit = model.provenance["fit"]
    expect = float(np.median([v["median_abs_err"] for v in fit.values()])) * 100
    assert variants["variants"]["bundled"]["bench_fit_median_pct"] == pytest.approx(expect)
    assert set(variants["lease_ratio"]) == {"h200_microbench_lease2.json", "h200_microbench_lease3.json"}
