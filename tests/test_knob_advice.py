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
