"""Per-architecture evidence end to end, against the session's running Ray Serve app.

An architecture absent from every trace (:class:`tests.archs.GatedMlp`, sent with its
structural signature) is answered from the performance model; one outcome is fed back;
the next answers for its other batch sizes use that evidence at once (``estimate_source``
says ``history``; no retraining) and agree with the truth outside the +-25 % margin band.

The truth is the world of the serve tests (the performance model without noise) with this
architecture's CPU 6x faster than modelled -- an architecture the model gets wrong.
"""

from __future__ import annotations

import math

import httpx
import pytest

from placement.core.catalogue import get_target
from placement.core.job import Job
from placement.lab.signature import signature_of_factory
from placement.lab.workloads import describe_model
from placement.serve.storage.store import Store, target_key
from tests.archs import GatedMlp

TARGET = get_target("B").model_copy(update={"id": "evidence-box"})
"""B's figures under its own id: a target no other test places on (its outcomes shift estimates there)."""
CPU_FACTOR = 1.0 / 6.0
BAND = math.log(1.25)


def _jobs(signature: str) -> list[Job]:
    jobs = []
    for mode in ("infer", "train"):
        for b in (16, 64, 256, 1024, 4096):
            d = describe_model(GatedMlp, (256,), "float32", b, mode)
            jobs.append(Job(name="gated-mlp", family="mlp", mode=mode, batch_size=b, flops_per_batch=d.flops_per_batch,
                            param_count=d.param_count, input_elems_per_sample=d.input_elems_per_sample,
                            input_bytes_per_sample=d.input_bytes_per_sample, signature=signature))
    return jobs


def _truth(world, job: Job, device: str) -> dict:
    run = world.outcome(job, TARGET, device, noise=False)
    if device == "cpu" and run.get("time_total_s"):
        run["time_total_s"] *= CPU_FACTOR
    return run


def _label(world, job: Job) -> tuple[bool, float]:
    """(GPU by the joint threshold, joint margin) of the true outcomes at T_t = 2, T_e = 1.5."""
    cpu, gpu = _truth(world, job, "cpu"), _truth(world, job, "gpu")
    s = cpu["time_total_s"] / gpu["time_total_s"]
    e_cpu = cpu["avg_cpu_power_w"] * cpu["time_total_s"]
    e_gpu = (gpu["avg_cpu_power_w"] + gpu["avg_gpu_power_w"]) * gpu["time_total_s"]
    margin = min(math.log(s / 2.0), math.log(1.5 / (e_gpu / e_cpu)))
    return margin > 0, margin


def _place(c: httpx.Client, jobs: list[Job]) -> list[dict]:
    r = c.post("/v1/placements", json={"jobs": [j.model_dump() for j in jobs], "target": TARGET.model_dump(mode="json"),
                                       "explore": False})
    assert r.status_code == 200, r.text
    return r.json()["decisions"]


@pytest.mark.slow
def test_one_outcome_of_an_unseen_architecture_corrects_its_other_jobs(serve_app, serve_world):
    sig = signature_of_factory(GatedMlp, (256,), "float32")
    assert sig == signature_of_factory(GatedMlp, (256,), "float32")  # stable
    assert sig != signature_of_factory(lambda: GatedMlp(hidden=512), (256,), "float32")
    jobs = _jobs(sig)
    truth = [_label(serve_world, j) for j in jobs]
    with httpx.Client(base_url=serve_app.url, timeout=120, headers=serve_app.headers) as c:
        before = _place(c, jobs)
        assert {d["estimate_source"] for d in before} == {"model"}
        # one outcome: the job at infer / 256 ran on the device it was given, and the other device was timed too
        k = 2
        d = before[k]
        other = "cpu" if d["device"] == "gpu" else "gpu"
        r = c.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": _truth(serve_world, jobs[k], d["device"]),
                                        "other_outcome": _truth(serve_world, jobs[k], other)})
        assert r.status_code == 200, r.text
        after = _place(c, jobs)
    stored = Store(serve_app.settings.database).evidence([sig], target_key(TARGET))
    assert len(stored[sig]) == 2 and {e.source for e in stored[sig]} == {"feedback"}
    same_mode = [i for i, j in enumerate(jobs) if j.mode == "infer" and i != k]
    other_mode = [i for i, j in enumerate(jobs) if j.mode == "train"]
    for i in same_mode:
        assert after[i]["estimate_source"] == "history" and after[i]["speedup_source"] == "history"
        true_s = _truth(serve_world, jobs[i], "cpu")["time_total_s"] / _truth(serve_world, jobs[i], "gpu")["time_total_s"]
        # the model was off by 6x; the evidence brings the estimate within 1.5x
        assert abs(math.log(after[i]["predicted_speedup"] / true_s)) < math.log(1.5)
        assert abs(math.log(before[i]["predicted_speedup"] / true_s)) > math.log(4.0)
    for i in other_mode:  # evidence is per mode: training jobs keep the model's estimate
        assert after[i]["estimate_source"] == "model"
    clear = [i for i in same_mode if abs(truth[i][1]) > BAND]
    assert len(clear) >= 3
    assert all((after[i]["device"] == "gpu") == truth[i][0] for i in clear), [
        (jobs[i].batch_size, after[i]["device"], truth[i]) for i in clear]
    assert any(before[i]["device"] != after[i]["device"] for i in clear)  # the evidence changed answers
