"""The client screen (:mod:`placement.serve.learning.clients`): a client whose runs sit consistently
off the other clients' runs of the same architectures is distrusted -- by the learner's screens and
by the history the placer decides on; honest clients and a drifted device are not."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from placement.core.catalogue import get_target
from placement.core.job import Job
from placement.serve.learning.clients import (
    CLIENT_BIAS_MAX,
    CLIENT_MIN_ROWS,
    client_biases,
    distrusted_clients,
)
from placement.serve.learning.rewards import screen_feedback
from placement.serve.placer import Placer, bootstrap_store
from placement.serve.schemas import FeedbackRequest, PlacementRequest
from placement.serve.settings import Settings
from placement.serve.storage.store import Store


def _runs(rng, groups: int, per_group: dict[str | None, int], offset: dict[str | None, float], spread: float = 0.25):
    """Residuals of ``groups`` architectures (each its own level), ``per_group[c]`` runs of each by client ``c``,
    shifted by ``offset[c]`` (a lie: log of the factor)."""
    clients, keys, devices, res = [], [], [], []
    for g in range(groups):
        level = rng.normal(0, 0.6)  # the model's error for this architecture
        for c, n in per_group.items():
            for _ in range(n):
                clients.append(c)
                keys.append(("t", f"arch{g}", "infer", "gpu"))
                devices.append("gpu")
                res.append(level + rng.normal(0, spread) + offset.get(c, 0.0))
    return clients, keys, devices, np.asarray(res)


def test_a_client_lying_consistently_is_distrusted_and_honest_ones_are_not():
    rng = np.random.default_rng(0)
    for factor in (3.0, 10.0):
        args = _runs(rng, 12, {"honest": 4, "other": 2, "liar": 1}, {"liar": math.log(factor)})
        biases = {b.client: b for b in client_biases(*args)}
        assert distrusted_clients(biases.values()) == {"liar"}
        assert biases["liar"].bias == pytest.approx(math.log(factor), abs=0.3)
        assert abs(biases["honest"].bias) < CLIENT_BIAS_MAX / 2 and abs(biases["other"].bias) < CLIENT_BIAS_MAX / 2


def test_honest_clients_are_never_distrusted():
    rng = np.random.default_rng(1)
    flagged = 0
    for _ in range(200):
        args = _runs(rng, 8, {"a": 3, "b": 1, "c": 1}, {})
        flagged += bool(distrusted_clients(client_biases(*args)))
    assert flagged == 0


def test_too_few_runs_or_nobody_to_compare_with_distrusts_no_one():
    rng = np.random.default_rng(2)
    few = _runs(rng, CLIENT_MIN_ROWS - 1, {"honest": 3, "liar": 1}, {"liar": math.log(5.0)})
    assert distrusted_clients(client_biases(*few)) == set()
    alone = _runs(rng, 10, {"liar": 2}, {"liar": math.log(5.0)})
    assert client_biases(*alone) == []  # no other client ran these architectures


def test_of_two_clients_that_disagree_the_outnumbered_one_is_distrusted():
    rng = np.random.default_rng(3)
    args = _runs(rng, 10, {"big": 3, "small": 1}, {"small": -math.log(6.0)})
    biases = {b.client: b for b in client_biases(*args)}
    # two votes meet halfway: each client shows half the disagreement, the one with fewer runs goes
    assert biases["big"].bias == pytest.approx(math.log(6.0) / 2, abs=0.2)
    assert biases["small"].bias == pytest.approx(-math.log(6.0) / 2, abs=0.2)
    assert distrusted_clients(biases.values()) == {"small"}


def test_a_client_flooding_the_groups_does_not_become_their_reference():
    rng = np.random.default_rng(5)
    args = _runs(rng, 10, {"a": 1, "b": 1, "flood": 6}, {"flood": math.log(4.0)})
    biases = {b.client: b for b in client_biases(*args)}
    assert distrusted_clients(biases.values()) == {"flood"}  # one client, one vote
    assert abs(biases["a"].bias) < CLIENT_BIAS_MAX and abs(biases["b"].bias) < CLIENT_BIAS_MAX


def test_a_drifted_device_moves_every_client_and_distrusts_no_one():
    rng = np.random.default_rng(4)
    args = _runs(rng, 10, {"a": 3, "b": 1}, {"a": math.log(3.0), "b": math.log(3.0)})
    assert distrusted_clients(client_biases(*args)) == set()


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="one entry per run"):
        client_biases(["a"], [("g",)], ["gpu", "cpu"], [0.0])


def test_a_lying_client_is_left_out_of_the_learner_and_of_the_placers_history(tmp_path, serve_model_dir, serve_world):
    # one architecture at eight batch sizes: two honest clients report four jobs each, a third
    # client reports all eight with every GPU run 5x slower -- the majority of the architecture's GPU
    # runs, which no per-run screen can outvote. Outvoted as a client (two others, one vote each),
    # its feedback leaves the learner's training and the placer's history: the answers are those of
    # a service that never heard from it
    target = get_target("B")
    _, jobs = _gated_mlp_jobs()
    first = [(j, "a") for j in jobs[:3]] + [(j, "b") for j in jobs[3:6]]
    last = [(jobs[6], "a"), (jobs[7], "b")]  # 16 reports in all: the answers see fresh screens (every 8 rows)

    def play(tmp: Path, reports: list[tuple[Job, str]], liar_factor: float) -> tuple[Placer, Store]:
        placer = _play(tmp, reports, liar_factor, serve_model_dir, serve_world)
        assert placer.store is not None
        return placer, placer.store

    def answers(placer: Placer) -> list[tuple[str, float]]:
        return _answers(placer, jobs)

    lying, lying_store = play(tmp_path / "lying", first + [(j, "liar") for j in jobs] + last, 5.0)
    honest, honest_store = play(tmp_path / "honest", first + [(j, "liar") for j in jobs] + last, 1.0)
    without, _ = play(tmp_path / "without", first + last, 1.0)
    feedback = lying_store.recent_feedback()
    distrusted: set[str] = set()
    kept, excluded = screen_feedback(feedback, distrusted=distrusted)
    liar_ids = {fb.decision.decision_id for fb in feedback if fb.client == "liar"}
    assert excluded.get("excluded_client_bias") == len(jobs) and distrusted == liar_ids, excluded
    assert {fb.client for fb in kept} == {"a", "b"}, (excluded, [fb.client for fb in kept])
    assert screen_feedback(honest_store.recent_feedback())[1].get("excluded_client_bias") is None
    unattributed = [dataclasses.replace(fb, client=None) for fb in feedback]  # no tokens: nothing to compare
    assert screen_feedback(unattributed)[1].get("excluded_client_bias") is None
    assert lying._target_timeline(target).distrusted == liar_ids
    assert honest._target_timeline(target).distrusted == frozenset()
    assert answers(lying) == answers(without)


def test_a_distrusted_clients_older_runs_beyond_the_window_stay_out_of_the_history(tmp_path, serve_model_dir, serve_world,
                                                                                     monkeypatch):
    # the client screen judges the recent feedback (4 x TARGET_HISTORY rows); a liar it distrusts there
    # may have lied before that window too. Those older runs are still in the signature's history:
    # while the window distrusts the client, none of its runs may count, old or new -- the answers
    # equal those of the same service without the old lies
    import placement.serve.learning.offsets as offsets

    monkeypatch.setattr(offsets, "TARGET_HISTORY", 4)  # a 16-row window
    target = get_target("B")
    sig, jobs = _gated_mlp_jobs()
    old_lies = [(j, "liar") for j in jobs + jobs[:4]]  # the majority of the history's runs: no per-run screen outvotes them
    recent = [(j, "a") for j in jobs[:4]] + [(j, "b") for j in jobs[4:]] + [(j, "liar") for j in jobs] \
        + [(jobs[6], "a"), (jobs[7], "b")]

    def play(tmp: Path, reports: list[tuple[Job, str]]) -> Placer:
        placer = _play(tmp, reports, 5.0, serve_model_dir, serve_world)
        placer._offsets.clear()  # the answers below see screens of the last 16 rows, in both plays
        return placer

    def answers(placer: Placer) -> list[tuple[str, float]]:
        return _answers(placer, jobs)

    with_old = play(tmp_path / "old", old_lies + recent)
    without_old = play(tmp_path / "recent", recent)
    timeline = with_old._target_timeline(target)
    assert timeline.distrusted_clients == {"liar"}
    old_ids = {fb.decision.decision_id for fb in with_old.store.recent_feedback() if fb.client == "liar"} - timeline.distrusted
    assert len(old_ids) == 12  # the old lies are outside the window: no decision-id screen knows them
    from placement.serve.storage.store import target_key

    (rows,) = with_old.store.evidence([sig], target_key(target)).values()  # each run carries its reporter
    assert {ev.client for ev in rows} == {"a", "b", "liar"}
    assert sum(ev.client == "liar" for ev in rows) > 2 * 8  # more than its recent runs: older lies are in the history
    assert answers(with_old) == answers(without_old)
    # the history leaves out a distrusted client's runs by its name, not only by the window's decision ids
    ids_only = _history_rows(with_old, jobs, target, by_client=False)
    served = _history_rows(with_old, jobs, target)
    assert sum(map(len, served.values())) < sum(map(len, ids_only.values()))
    assert sum(map(len, served.values())) == sum(map(len, _history_rows(with_old, jobs, target, by_ids=False).values()))


def _history_rows(placer: Placer, jobs: list[Job], target, by_ids: bool = True, by_client: bool = True) -> dict[int, list]:
    """The observations the placer's history adds for ``jobs`` on ``target`` (no probes), leaving out
    distrusted feedback by the window's decision ids and/or by client name."""
    from placement.model.estimate import model_estimate
    from placement.serve.placer import JobBatch

    batch = JobBatch.from_jobs(jobs)
    timeline = placer._target_timeline(target)
    est = model_estimate(placer.perf_model, batch.model_columns(target))
    rows: dict[int, list] = {}
    Placer._history(placer, batch, target, est, rows, timeline.now, timeline.distrusted if by_ids else frozenset(),
                    timeline.distrusted_clients if by_client else frozenset())
    return rows


def _gated_mlp_jobs() -> tuple[str, list[Job]]:
    """One architecture (tests.archs.GatedMlp, inference) at eight batch sizes, signed: its signature and jobs."""
    from placement.lab.signature import signature_of_factory
    from placement.lab.workloads import describe_model
    from tests.archs import GatedMlp

    sig = signature_of_factory(GatedMlp, (256,), "float32")
    jobs = []
    for b in (16, 32, 64, 128, 256, 512, 1024, 2048):
        d = describe_model(GatedMlp, (256,), "float32", b, "infer")
        jobs.append(Job(name="gated-mlp", family="mlp", mode="infer", batch_size=b, flops_per_batch=d.flops_per_batch,
                        param_count=d.param_count, input_elems_per_sample=d.input_elems_per_sample,
                        input_bytes_per_sample=d.input_bytes_per_sample, signature=sig))
    return sig, jobs


def _play(tmp: Path, reports: list[tuple[Job, str]], liar_factor: float, serve_model_dir, serve_world) -> Placer:
    """A fresh service on target B that places each job and takes both devices' runs as its client's
    feedback; the client ``liar`` reports every GPU run ``liar_factor`` times slower."""
    target = get_target("B")
    settings = Settings(state_dir=tmp, model_path=Path(serve_model_dir), exploration_rate=0.0)
    store = Store(settings.database)
    placer = Placer(bootstrap_store(store, settings), settings=settings, store=store)
    for job, client in reports:
        (d,) = placer.place(PlacementRequest(job=job, target="B", explore=False)).to_response().decisions
        runs = {dev: serve_world.outcome(job, target, dev, noise=False) for dev in ("cpu", "gpu")}
        if client == "liar":
            runs["gpu"]["time_total_s"] *= liar_factor
        other = "cpu" if d.device == "gpu" else "gpu"
        placer.feedback(FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": runs[d.device],
                                                        "other_outcome": runs[other]}), client=client)
    return placer


def _answers(placer: Placer, jobs: list[Job]) -> list[tuple[str, float]]:
    """The device and predicted speedup of every job on target B, not recorded."""
    res = placer.place(PlacementRequest(jobs=jobs, target="B", explore=False), record=False).to_response()
    return [(d.device, round(d.predicted_speedup, 6)) for d in res.decisions]
