"""One knob recommender: cores from the operator model, caps never below the estimated peak."""

from __future__ import annotations

import pytest

from placement.core.catalogue import get_target
from placement.lab.workloads import describe_workload
from placement.model.knob_advice import advise_knobs, operator_peak_mib
from placement.model.operators import zoo_operators
from placement.model.perfmodel import PerformanceModel, recommend_knobs


def _job(name: str, mode: str, batch: int, ops: bool = True):
    job = describe_workload(name, batch, mode)
    return job.model_copy(update={"operators": zoo_operators(name, mode, batch)}) if ops else job


@pytest.mark.parametrize("name,mode,batch", [("gnn_graph", "train", 64), ("dlrm_criteo", "infer", 256), ("mlp_cifar10", "train", 32)])
def test_cap_is_never_below_the_estimated_peak_plus_margin(name, mode, batch):
    target = get_target("h200-host")
    job = _job(name, mode, batch)
    advice = advise_knobs(job, target, "gpu", margin=0.25)
    assert advice.gpu_mem_cap_mib != "grow"
    assert advice.gpu_mem_cap_mib >= advice.peak_mib * 1.25
    assert advice.peak_mib >= operator_peak_mib(job)
    assert advice.basis.startswith("operators")


def test_cores_come_from_the_candidates_and_cpu_gets_no_cap():
    target = get_target("h200-host")
    advice = advise_knobs(_job("convnext_cifar10", "infer", 8), target, "cpu", candidates=(1, 2, 4, 8, 16))
    assert advice.cpu_cores in (1, 2, 4, 8, 16) and advice.gpu_mem_cap_mib == "grow"
    with pytest.raises(ValueError, match="tolerance"):
        advise_knobs(_job("gnn_graph", "infer", 8), target, "cpu", tolerance=1.5)


def test_recommend_knobs_uses_the_one_recommender_for_jobs_with_operators():
    target = get_target("h200-host")
    pm = PerformanceModel()
    job = _job("gnn_graph", "train", 64)
    advice = advise_knobs(job, target, "gpu", pm, tolerance=0.05, margin=pm.params.cap_headroom_frac)
    assert recommend_knobs(pm, job, target, "gpu") == (advice.cpu_cores, advice.gpu_mem_cap_mib)
    plain = _job("gnn_graph", "train", 64, ops=False)
    cores, cap = recommend_knobs(pm, plain, target, "gpu")  # aggregate path unchanged
    assert 1 <= cores <= target.cpu_cores


def test_recurrent_workspace_constants_are_the_fit_of_the_reference_layers():
    """Fitted from data/traces/h200_microbench_memory.json's recurrent reference layers alone."""
    from placement.model import knob_advice as ka

    per_gate, floor_mib = ka.fit_recurrent_workspace()
    assert pytest.approx(per_gate, rel=1e-3) == ka.RECURRENT_WORKSPACE_PER_GATE_BYTE
    assert pytest.approx(floor_mib, rel=1e-3) == ka.RECURRENT_WORKSPACE_FLOOR_MIB


def test_the_fit_reads_only_reference_layers(tmp_path):
    import json
    from pathlib import Path

    from placement.lab.microbench import BENCHES, MEMORY_EXTRA
    from placement.lab.workloads import ZOO
    from placement.model.knob_advice import MEMORY_REFERENCE, fit_recurrent_workspace

    runs = json.loads(Path(MEMORY_REFERENCE).read_text())["runs"]
    names = {b.name for b in (*BENCHES, *MEMORY_EXTRA)}
    assert {r["bench"] for r in runs} <= names and not names & set(ZOO)
    # a file without recurrent inference runs cannot be fitted: nothing else is read
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"runs": [r for r in runs if r["op_kind"] != "recurrent"]}))
    with pytest.raises(ValueError, match="no recurrent inference run"):
        fit_recurrent_workspace(path)


def test_recurrent_inference_bound_covers_the_cudnn_workspace_twice():
    """gru_imdb inference at batch 256: 343 MiB allocated at the peak, a 274 MiB cuDNN workspace,
    640 MiB needed under a cap with default segments (results/cap_check/memory.jsonl)."""
    job = _job("gru_imdb", "infer", 256)
    peak = operator_peak_mib(job)
    assert peak >= 343 + 274
    advice = advise_knobs(job, get_target("h200-host"), "gpu")
    assert advice.gpu_mem_cap_mib >= 640
    # no recurrent layer: no workspace term
    from placement.model.knob_advice import recurrent_workspace_bytes

    assert recurrent_workspace_bytes(_job("mlp_cifar10", "infer", 64).operators) == 0.0
    assert recurrent_workspace_bytes(job.operators) > 0


def test_every_advised_cap_ran_on_the_gpu():
    """The committed cap check (python -m experiments.cap_check --run on the lent H200) ran the
    current plan's caps, and none ran out of memory; the plan is what the advice gives now."""
    import json
    from pathlib import Path

    lines = [json.loads(x) for x in Path("results/cap_check/runs.jsonl").read_text().splitlines()]
    summary = lines[-1]
    runs = {(r["workload"], r["mode"], r["batch_size"]): r for r in lines[:-1]}
    plan = {(j["workload"], j["mode"], j["batch_size"]): j for j in
            json.loads(Path("results/cap_check/plan.json").read_text())["jobs"]}
    assert summary["summary"] and summary["jobs"] == len(plan) == 246 and summary["oom"] == 0
    assert all(runs[k]["cap_mib"] == plan[k]["cap_mib"] and runs[k]["feasible"] for k in plan)
    target = get_target("h200-host")
    for key in [("gru_imdb", "infer", 256), ("lstm_imdb", "infer", 256), ("tcn_speech", "infer", 256),
                ("resnet18_cifar10", "train", 64)]:
        if key in plan:
            assert advise_knobs(_job(key[0], key[1], key[2]), target, "gpu").gpu_mem_cap_mib == plan[key]["cap_mib"]
