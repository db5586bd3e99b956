"""The history's aggregation of measured outcomes (:func:`placement.model.estimate.correct`): agreeing
outcomes move an estimate by their weight; a lying minority among them moves it not at all."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from placement.model.estimate import (
    CONSISTENCY_Z,
    SIGMA_HISTORY_OBS,
    SIGMA_MODEL_TIME,
    SIGMA_PROBE,
    Estimate,
    Observation,
    _consistent,
    _posterior,
    correct,
)

MODEL_T = 0.01  # model's CPU time per sample (s) of every observed job here


def _estimate() -> Estimate:
    one = np.ones(1)
    return Estimate(
        cpu_time_per_sample_s=one * MODEL_T, gpu_time_per_sample_s=one * 0.001, cpu_power_w=one * 100.0,
        gpu_power_w=one * 200.0, gpu_host_cpu_power_w=one * 50.0, gpu_mem_need_mib=one * 100.0,
        gpu_mem_mib=one * 80_000.0, cpu_feasible=np.ones(1, bool), gpu_feasible=np.ones(1, bool),
        gpu_ran=np.zeros(1, bool), cpu_time_sigma=one * SIGMA_MODEL_TIME, gpu_time_sigma=one * SIGMA_MODEL_TIME,
        cpu_energy_sigma=one * 0.65, gpu_energy_sigma=one * 0.65, cpu_source=np.array(["model"], dtype=object),
        gpu_source=np.array(["model"], dtype=object), energy_method=np.array(["modelled"], dtype=object))


def _cpu(ratio: float, same_job: bool = False) -> Observation:
    """A CPU run ``ratio`` times the model's time, its power as modelled."""
    return Observation("cpu", True, MODEL_T * ratio, 100.0, "modelled", MODEL_T, 100.0, same_job, "history")


def _offset(obs: list[Observation]) -> float:
    return math.log(float(correct(_estimate(), {0: obs}).cpu_time_per_sample_s[0]) / MODEL_T)


def test_agreeing_outcomes_move_the_estimate_by_their_posterior_weight():
    ratios = [1.5, 1.6, 1.45, 1.55]
    res = [math.log(r) for r in ratios]
    mean, _ = _posterior(res, [SIGMA_HISTORY_OBS] * 4, SIGMA_MODEL_TIME)
    assert _offset([_cpu(r) for r in ratios]) == pytest.approx(mean)
    assert _consistent(res, [SIGMA_HISTORY_OBS] * 4, SIGMA_MODEL_TIME) == [True] * 4


@pytest.mark.parametrize("factor", [3.0, 10.0])
def test_a_run_reported_3_to_10x_off_among_agreeing_runs_moves_nothing(factor):
    honest = [1.5, 1.6, 1.45]
    clean = _offset([_cpu(r) for r in honest])
    for at in range(4):  # wherever the lie arrives
        runs = [_cpu(r) for r in honest]
        runs.insert(at, _cpu(1.5 / factor))  # the CPU reported as much faster
        assert _offset(runs) == pytest.approx(clean)


def test_the_jobs_own_lying_report_is_outvoted_by_its_signatures_agreeing_runs():
    others = [_cpu(2.0), _cpu(2.1), _cpu(1.9)]
    honest = _offset([_cpu(2.0, same_job=True), *others])
    lied = _offset([_cpu(2.0 / 5.0, same_job=True), *others])
    assert honest == pytest.approx(math.log(2.0), abs=0.02)
    assert lied == pytest.approx(_offset(others))


def test_two_disagreeing_runs_are_both_kept_and_an_own_run_dominates():
    # with two runs nothing can outvote either; the job's own run (sigma 0.1) weighs more
    res = [0.0, math.log(5.0)]
    assert _consistent(res, [SIGMA_PROBE, SIGMA_HISTORY_OBS], SIGMA_MODEL_TIME) == [True, True]
    assert _offset([_cpu(1.0, same_job=True), _cpu(5.0)]) < 0.5


def test_honest_spread_across_batch_sizes_is_not_screened():
    # residuals of one signature at several batch sizes vary by about SIGMA_HISTORY_OBS
    rng = np.random.default_rng(0)
    kept = 0
    for _ in range(200):
        res = list(rng.normal(0.4, SIGMA_HISTORY_OBS, 6))
        kept += sum(_consistent(res, [SIGMA_HISTORY_OBS] * 6, SIGMA_MODEL_TIME))
    assert kept / 1200 > 0.98  # about a 3-sd tail left out at most
    assert CONSISTENCY_Z == 3.0



def test_an_outcome_may_carry_its_own_sd():
    # a distant batch size's outcome given a wider sd moves the estimate less than the default sd would
    default = correct(_estimate(), {0: [_cpu(2.0)]})
    wide = correct(_estimate(), {0: [replace(_cpu(2.0), sigma=0.6)]})
    off, _ = _posterior([math.log(2.0)], [0.6], SIGMA_MODEL_TIME)
    assert float(wide.cpu_time_per_sample_s[0]) == pytest.approx(MODEL_T * math.exp(off))
    assert float(wide.cpu_time_per_sample_s[0]) < float(default.cpu_time_per_sample_s[0])
    with pytest.raises(ValueError, match="Observation.sigma"):
        replace(_cpu(2.0), sigma=0.0)
