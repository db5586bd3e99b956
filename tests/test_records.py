import math

import pytest
from pydantic import ValidationError

from placement.core.decision import GROW, PlacementDecision
from placement.core.job import Job
from placement.core.outcome import DeviceOutcome


def test_job_rejects_bad_fields_by_name():
    base = dict(family="cnn", mode="infer", batch_size=1, flops_per_batch=1e9, param_count=10,
                input_elems_per_sample=3, input_bytes_per_sample=12)
    Job(**base)
    for field, value in [("batch_size", 0), ("flops_per_batch", math.nan), ("family", "quantum"),
                         ("mode", "serve"), ("param_count", -1)]:
        with pytest.raises(ValidationError, match=field):
            Job(**{**base, field: value})


def test_outcome_energy_eq2_and_methods():
    cpu = DeviceOutcome(device="cpu", n_samples=100, time_total_s=10.0, avg_cpu_power_w=40.0,
                        cpu_power_method="modelled")
    gpu = DeviceOutcome(device="gpu", n_samples=100, time_total_s=1.0, avg_cpu_power_w=40.0,
                        avg_gpu_power_w=200.0, cpu_power_method="modelled", gpu_power_method="measured")
    assert cpu.energy_j == pytest.approx(400.0) and gpu.energy_j == pytest.approx(240.0)
    assert gpu.energy_per_sample_j == pytest.approx(2.4)
    assert cpu.energy_method == "modelled" and gpu.energy_method == "modelled"
    missing = DeviceOutcome(device="gpu", n_samples=1, time_total_s=1.0)
    assert math.isnan(missing.energy_j) and missing.energy_method == "unknown"


def test_outcome_consistency_rules():
    with pytest.raises(ValidationError, match="infeasible_reason"):
        DeviceOutcome(device="gpu", feasible=False)
    DeviceOutcome(device="gpu", feasible=False, infeasible_reason="oom")
    with pytest.raises(ValidationError, match="time_total_s"):
        DeviceOutcome(device="cpu")
    with pytest.raises(ValidationError, match="cpu_power_method"):
        DeviceOutcome(device="cpu", n_samples=1, time_total_s=1.0, cpu_power_method="measured")


def test_decision_cap():
    assert PlacementDecision(device="gpu", cpu_cores=4).gpu_mem_cap == GROW
    assert PlacementDecision(device="gpu", cpu_cores=4, gpu_mem_cap=2048).gpu_mem_cap_mib == 2048
    with pytest.raises(ValidationError, match="gpu_mem_cap"):
        PlacementDecision(device="gpu", cpu_cores=4, gpu_mem_cap=0)
    with pytest.raises(ValidationError):
        PlacementDecision(device="tpu", cpu_cores=1)


def test_true_and_false_are_not_numbers():
    """JSON booleans are refused by every numeric field (pydantic's lax mode would read 1 and 0);
    boolean fields still take them."""
    import json

    from placement.core.catalogue import get_target
    from placement.core.hardware import HardwareTarget
    from placement.serve.schemas import PlacementRequest

    job = dict(family="cnn", mode="infer", batch_size=1, flops_per_batch=1e9, param_count=10,
               input_elems_per_sample=3, input_bytes_per_sample=12)
    for field in ("batch_size", "flops_per_batch", "param_count", "dataset_size"):
        with pytest.raises(ValidationError, match=f"{field}\n.*not true/false"):
            Job.model_validate_json(json.dumps({**job, field: True}))
    target = get_target("B").model_dump()
    assert HardwareTarget.model_validate_json(json.dumps({**target, "unified_memory": True})).unified_memory
    for field in ("cpu_idle_w", "gpu_gflops", "cpu_cores"):
        with pytest.raises(ValidationError, match=field):
            HardwareTarget.model_validate_json(json.dumps({**target, field: False}))
    with pytest.raises(ValidationError, match="time_total_s"):
        DeviceOutcome.model_validate({"device": "cpu", "n_samples": 1, "time_total_s": True})
    with pytest.raises(ValidationError, match="gpu_mem_cap"):
        PlacementDecision.model_validate({"device": "gpu", "cpu_cores": 1, "gpu_mem_cap": True})
    with pytest.raises(ValidationError, match=r"columns.batch_size.1"):
        PlacementRequest.model_validate_json(json.dumps({"columns": {**{k: [v, v] for k, v in job.items()},
                                                                     "batch_size": [1, True]}}))
    with pytest.raises(ValidationError, match="max_slowdown"):
        PlacementRequest.model_validate_json(json.dumps({"job": job, "max_slowdown": True}))
    for field in ("batch_size", "flops_per_batch"):  # nor are strings (lax mode would read "4" as 4)
        with pytest.raises(ValidationError, match=f"{field}\n.*not a string"):
            Job.model_validate_json(json.dumps({**job, field: "4"}))
    with pytest.raises(ValidationError, match=r"columns.param_count.0"):
        PlacementRequest.model_validate_json(json.dumps({"columns": {**{k: [v, v] for k, v in job.items()},
                                                                     "param_count": ["10", 10]}}))
    assert PlacementRequest.model_validate_json(json.dumps({"job": job, "explore": False})).explore is False


def test_numbers_and_words_are_not_true_or_false():
    """Boolean fields take only true/false (a numpy bool too): pydantic's lax mode would read
    0/1 and "yes"/"off" as booleans, so "unified_memory": 0 passed for false."""
    import json

    import numpy as np

    from placement.core.catalogue import get_target
    from placement.core.hardware import HardwareTarget
    from placement.serve.schemas import PlacementRequest, ReportedOutcome

    target = get_target("B").model_dump()
    for value in (0, 1, 0.0, "yes", "false", [], {}):
        with pytest.raises(ValidationError, match="unified_memory\n.*must be true or false"):
            HardwareTarget.model_validate_json(json.dumps({**target, "unified_memory": value}))
    assert HardwareTarget.model_validate({**target, "unified_memory": np.bool_(True)}).unified_memory is True
    job = dict(family="cnn", mode="infer", batch_size=1, flops_per_batch=1e9, param_count=10,
               input_elems_per_sample=3, input_bytes_per_sample=12)
    with pytest.raises(ValidationError, match="explore"):
        PlacementRequest.model_validate_json(json.dumps({"job": job, "explore": 1}))
    with pytest.raises(ValidationError, match="feasible"):
        DeviceOutcome.model_validate({"device": "cpu", "n_samples": 1, "time_total_s": 1.0, "feasible": "no"})
    outcome = {"device": "cpu", "n_samples": 1, "time_total_s": 1.0}
    assert ReportedOutcome.model_validate({**outcome, "feasible": True}).feasible is True
    with pytest.raises(ValidationError, match="feasible"):
        ReportedOutcome.model_validate({**outcome, "feasible": 0})


def test_job_columns_accept_and_refuse_exactly_what_jobs_do():
    """The columns format checks a column of plain numbers at once and anything else value by value:
    every value must still be accepted or refused (and located) as the same field of one Job."""
    import json

    import numpy as np
    from pydantic import ValidationError

    from placement.serve.schemas import JobColumns

    rng = np.random.default_rng(7)
    base = dict(family="cnn", mode="infer", batch_size=4, flops_per_batch=1e9, param_count=10,
                input_elems_per_sample=3, input_bytes_per_sample=12, dataset_size=100)
    odd = [0, -1, 2.0, 2.5, True, False, "4", None, 1e30, 10**14, 3, 1.0e9]
    for _ in range(300):
        field = str(rng.choice(["batch_size", "flops_per_batch", "param_count", "dataset_size", "input_elems_per_sample"]))
        values = [base[field]] * 4
        for i in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
            values[int(i)] = odd[int(rng.integers(len(odd)))]
        cols = {k: [v] * 4 for k, v in base.items()}
        cols[field] = values
        row_errors = []
        for i, v in enumerate(values):
            try:
                Job.model_validate_json(json.dumps({**base, field: v}))
            except ValidationError:
                row_errors.append(i)
        try:
            JobColumns.model_validate_json(json.dumps(cols))
            assert not row_errors, (field, values)
        except ValidationError as exc:
            locs = sorted({int(e["loc"][1]) for e in exc.errors() if len(e["loc"]) > 1 and e["loc"][0] == field})
            assert locs == row_errors, (field, values, exc.errors())
