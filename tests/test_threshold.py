import math

import numpy as np
import pytest

from placement.core.threshold import (
    MARGIN_CAP,
    MissingPower,
    Reason,
    Thresholds,
    cpu_energy_j,
    gpu_energy_j,
    joint_threshold,
    placement_reward,
)


def label_one(t_cpu, t_gpu, e_cpu, e_gpu, cpu_ok=True, gpu_ok=True, th=None):
    lab = joint_threshold([t_cpu], [t_gpu], [e_cpu], [e_gpu], [cpu_ok], [gpu_ok], th)
    return bool(lab.gpu[0]), str(lab.reason[0]), lab


def test_boundaries_are_inclusive_at_exactly_2_and_1_5():
    assert label_one(2.0, 1.0, 1.0, 1.5)[0] is True
    # a hair below 2x speedup -> CPU; a hair above 1.5x energy -> CPU
    assert label_one(1.999, 1.0, 1.0, 1.0) == (False, Reason.TOO_SLOW.value, label_one(1.999, 1.0, 1.0, 1.0)[2])
    gpu, reason, _ = label_one(2.0, 1.0, 1.0, 1.5001)
    assert (gpu, reason) == (False, Reason.TOO_COSTLY.value)


def test_float_round_off_at_the_boundary_does_not_flip():
    # 0.3 / 0.1 is 2.9999999999999996 in binary floating point
    assert 0.3 / 0.1 < 3.0
    assert label_one(0.3, 0.1, 1.0, 1.0, th=Thresholds(speedup_min=3.0))[0] is True


def test_margin_sign_matches_label_and_binding_constraint():
    _, _, lab = label_one(8.0, 1.0, 1.0, 0.5)
    assert lab.margin[0] == pytest.approx(min(math.log(4.0), math.log(3.0)))
    _, _, lab = label_one(8.0, 1.0, 1.0, 3.0)
    assert lab.margin[0] == pytest.approx(math.log(0.5)) and not lab.gpu[0]


def test_missing_data_rules():
    assert label_one(math.nan, 1.0, math.nan, 1.0, cpu_ok=False)[:2] == (True, "cpu_infeasible")
    assert label_one(1.0, math.nan, 1.0, math.nan, gpu_ok=False)[:2] == (False, "gpu_infeasible")
    assert label_one(1.0, 1.0, 1.0, 1.0, cpu_ok=False, gpu_ok=False)[:2] == (False, "both_infeasible")
    gpu, reason, lab = label_one(10.0, 1.0, 1.0, math.nan)
    assert gpu and lab.energy_unknown[0] and reason == "valid_acceleration"
    gpu, reason, lab = label_one(10.0, 1.0, 1.0, math.nan, th=Thresholds(missing_power=MissingPower.CPU))
    assert not gpu and reason == "no_energy_evidence" and lab.energy_unknown[0]


def test_vectorised_matches_scalar():
    rng = np.random.default_rng(0)
    t_cpu, t_gpu = rng.uniform(0.1, 10, 200), rng.uniform(0.1, 10, 200)
    e_cpu, e_gpu = rng.uniform(0.1, 10, 200), rng.uniform(0.1, 10, 200)
    lab = joint_threshold(t_cpu, t_gpu, e_cpu, e_gpu)
    expected = (t_cpu / t_gpu >= 2.0) & (e_gpu / e_cpu <= 1.5)
    assert np.array_equal(lab.gpu, expected)


def test_thresholds_validate():
    with pytest.raises(ValueError, match="speedup_min"):
        Thresholds(speedup_min=0)
    with pytest.raises(ValueError, match="energy_ratio_max"):
        Thresholds(energy_ratio_max=float("nan"))
    assert Thresholds(3.0, 1.2).as_dict()["speedup_min"] == 3.0


def test_energy_eq2_counts_host_cpu_on_gpu_runs():
    assert cpu_energy_j(40.0, 10.0) == pytest.approx(400.0)
    assert gpu_energy_j(40.0, 100.0, 2.0) == pytest.approx(280.0)


def test_reward_sign_and_magnitude():
    lab = joint_threshold([8.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.5, 1.0])
    r_gpu = placement_reward([True, True], lab)
    r_cpu = placement_reward([False, False], lab)
    assert r_gpu[0] > 0 and r_cpu[0] < 0 and r_gpu[0] == -r_cpu[0]
    assert r_gpu[1] < 0 and r_cpu[1] > 0
    big = joint_threshold([1e6], [1.0], [1.0], [1e-6])
    assert placement_reward([True], big)[0] == pytest.approx(0.5 + MARGIN_CAP)
