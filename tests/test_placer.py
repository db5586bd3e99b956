"""The placement library (no Ray): policy decisions, thresholds, max slowdown, bounded exploration,
edge knobs, feedback checks and version swaps, against a DNN trained in the session fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from agents.baselines import CpuOnlyPolicy
from agents.policy import Policy
from placement.catalogue import get_target
from placement.features import build_features
from placement.hardware import HardwareTarget
from placement.job import Job
from placement.threshold import Thresholds
from serve.placer import InputError, NotFound, Placer, PolicyBundle, bootstrap_store, load_bundle
from serve.schemas import FeedbackRequest, PlacementRequest, PlacementResponse
from serve.settings import Settings, SettingsError
from serve.store import FeedbackConflict, Store


class Tempered(Policy):
    """The trained DNN with its logits divided by ``temperature`` (less sure: p nearer 0.5)."""

    def __init__(self, inner: Policy, temperature: float) -> None:
        self.inner, self.temperature = inner, temperature

    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        p = np.clip(self.inner.gpu_probability(obs), 1e-9, 1 - 1e-9)
        return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / self.temperature))


class EdgeKnobs(Policy):
    """The trained DNN's device, with 4 cores and a 2048 MiB cap on edge GPU placements."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner

    def gpu_probability(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return self.inner.gpu_probability(obs)

    def knobs(self, job: Job, target: HardwareTarget, device: int) -> tuple[int, int | str]:
        if not target.is_edge:
            return super().knobs(job, target, device)
        return min(4, target.cpu_cores), (2048 if device == 1 else "grow")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(state_dir=tmp_path, exploration_rate=0.0)


@pytest.fixture
def bundle(serve_model_dir) -> PolicyBundle:
    return load_bundle(serve_model_dir)


@pytest.fixture
def placer(bundle, settings) -> Placer:
    return Placer(bundle, settings=settings, store=Store(settings.database))


def _place(placer: Placer, **body) -> PlacementResponse:
    return placer.place(PlacementRequest.model_validate(body)).to_response()


def test_single_job_follows_the_policy(placer, bundle, example_job):
    resp = _place(placer, job=example_job.model_dump(), target="B")
    (d,) = resp.decisions
    p = float(bundle.policy.gpu_probability(build_features(example_job, get_target("B")))[0])
    assert d.gpu_probability == pytest.approx(p)
    assert d.device == ("gpu" if p >= 0.5 else "cpu") and d.decided_by == "policy" and not d.explored
    assert d.cpu_cores == 8 and d.gpu_mem_cap == "grow"  # desktop: defaults
    assert d.predicted_speedup is not None and d.predicted_speedup > 1 and d.prediction_method == "modelled"
    assert resp.policy_version == d.policy_version == "serve-test-dnn"
    stored = placer.store.get_decision(d.decision_id)
    assert stored.device == d.device and stored.job == example_job and stored.target == get_target("B")
    assert stored.gpu_probability == pytest.approx(p)


def test_rows_and_columns_formats_agree(placer, serve_world):
    jobs = serve_world.jobs(200)
    rows = _place(placer, jobs=[j.model_dump() for j in jobs], target="A", explore=False)
    cols = {k: [getattr(j, k) for j in jobs] for k in Job.model_fields}
    col = _place(placer, columns=cols, target="A", explore=False)
    assert rows.columns is None and col.decisions is None and col.columns is not None
    assert [d.device for d in rows.decisions] == col.columns.device
    assert [d.gpu_probability for d in rows.decisions] == pytest.approx(col.columns.gpu_probability)
    assert len(set(col.columns.decision_id) | {d.decision_id for d in rows.decisions}) == 400
    # the fast JSON path and the typed response are the same document
    result = placer.place(PlacementRequest.model_validate({"columns": cols, "target": "A", "explore": False}))
    assert PlacementResponse.model_validate_json(result.to_json()) == result.to_response()
    assert placer.store.stats()["decisions"]["total"] == 600


def test_target_without_gpu_is_cpu(placer, example_job):
    cpu_box = get_target("A").model_copy(update={"id": "cpu-box", "gpu_model": None, "gpu_gflops": 0.0,
                                                 "gpu_mem_gib": 0.0, "gpu_tdp_w": 0.0})
    resp = _place(placer, job=example_job.model_dump(), target=cpu_box.model_dump())
    (d,) = resp.decisions
    assert (d.device, d.decided_by, d.predicted_speedup) == ("cpu", "no_gpu", None)
    assert resp.target_id == "cpu-box"


def test_request_thresholds_decide_by_predictions(placer, serve_world):
    jobs = [j.model_dump() for j in serve_world.jobs(100)]
    never = _place(placer, jobs=jobs, target="B", thresholds={"speedup_min": 1e5})
    assert {d.device for d in never.decisions} == {"cpu"}
    assert {d.decided_by for d in never.decisions} == {"thresholds"}
    assert never.thresholds.speedup_min == 1e5 and never.thresholds.energy_ratio_max == 1.5
    lax = _place(placer, jobs=jobs, target="B", thresholds={"speedup_min": 1e-3, "energy_ratio_max": 1e5})
    for d in lax.decisions:
        assert d.device == ("gpu" if d.predicted_speedup is not None else "cpu")


def test_max_slowdown_overrides_a_cpu_policy(settings, serve_world):
    placer = Placer(PolicyBundle("cpu-only", CpuOnlyPolicy(), Thresholds()), settings=settings, store=None)
    jobs = [j.model_dump() for j in serve_world.jobs(150)]
    resp = _place(placer, jobs=jobs, target="B", max_slowdown=3.0)
    forced = [d for d in resp.decisions if d.decided_by == "max_slowdown"]
    assert forced, "some jobs are predicted > 3x faster on the GPU"
    for d in resp.decisions:
        fast_gpu = d.predicted_speedup is not None and d.predicted_speedup > 3.0
        assert d.device == ("gpu" if fast_gpu else "cpu")


def test_exploration_is_bounded_recorded_and_only_when_unsure(bundle, tmp_path, serve_world):
    settings = Settings(state_dir=tmp_path, exploration_rate=0.2, explore_band=0.45, seed=7)
    unsure = PolicyBundle("tempered", Tempered(bundle.policy, 50.0), bundle.thresholds)
    placer = Placer(unsure, settings=settings, store=Store(settings.database))
    jobs = [j.model_dump() for j in serve_world.jobs(1500)]
    resp = _place(placer, jobs=jobs, target="B")
    p = np.array([d.gpu_probability for d in resp.decisions])
    explored = np.array([d.explored for d in resp.decisions])
    eligible = np.abs(p - 0.5) < 0.45
    assert eligible.mean() > 0.5
    assert not explored[~eligible].any()
    assert 0.15 < explored[eligible].mean() < 0.25  # rate 0.2, ~1000 draws
    for d in resp.decisions:
        greedy = "gpu" if d.gpu_probability >= 0.5 else "cpu"
        assert (d.device != greedy) == d.explored
        assert d.decided_by == ("exploration" if d.explored else "policy")
    stored = placer.store.get_decision(resp.decisions[int(np.argmax(explored))].decision_id)
    assert stored.explored and stored.propensity == pytest.approx(0.2)
    # a sure policy never explores; nor does a request that opts out
    narrow = Placer(bundle, settings=Settings(state_dir=tmp_path, exploration_rate=0.2, explore_band=0.01), store=None)
    assert all(abs(d.gpu_probability - 0.5) < 0.01 for d in _place(narrow, jobs=jobs, target="B").decisions if d.explored)
    sure = Placer(PolicyBundle("cpu", CpuOnlyPolicy(), Thresholds()), settings=settings, store=None)
    assert not any(d.explored for d in _place(sure, jobs=jobs, target="B").decisions)
    assert not any(d.explored for d in _place(placer, jobs=jobs, target="B", explore=False).decisions)
    # and the rate is bounded
    with pytest.raises(SettingsError, match="PLACEMENT_EXPLORATION_RATE.*less than or equal to 0.2"):
        Settings.from_env({"PLACEMENT_EXPLORATION_RATE": "0.5"})
    with pytest.raises(SettingsError):
        placer.set_exploration(rate=0.9)


def test_edge_targets_answer_the_policys_knobs(bundle, settings, example_job):
    placer = Placer(PolicyBundle("edge", EdgeKnobs(bundle.policy), bundle.thresholds), settings=settings, store=None)
    (d,) = _place(placer, job=example_job.model_dump(), target="agx-orin", explore=False).decisions
    assert d.cpu_cores == 4
    assert d.gpu_mem_cap == (2048 if d.device == "gpu" else "grow")
    (server,) = _place(placer, job=example_job.model_dump(), target="B").decisions
    assert (server.cpu_cores, server.gpu_mem_cap) == (8, "grow")


def test_bad_requests_name_the_field(placer, settings, example_job):
    with pytest.raises(InputError) as err:
        _place(placer, job=example_job.model_dump(), target="no-such-box")
    assert err.value.field == "target" and "agx-orin" in err.value.message
    small = Placer(placer.bundle, settings=Settings(state_dir=settings.state_dir, max_batch_jobs=2), store=None)
    with pytest.raises(InputError) as err:
        _place(small, jobs=[example_job.model_dump()] * 3, target="B")
    assert (err.value.field, err.value.status) == ("jobs", 413)


def test_feedback_checked_stored_once(placer, example_job, serve_world):
    (d,) = _place(placer, job=example_job.model_dump(), target="B", explore=False).decisions
    target = get_target("B")
    run = serve_world.outcome(example_job, target, d.device)
    other_device = "cpu" if d.device == "gpu" else "gpu"
    wrong = FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": serve_world.outcome(example_job, target, other_device)})
    with pytest.raises(InputError) as err:
        placer.feedback(wrong)
    assert err.value.field == "outcome.device"
    with pytest.raises(NotFound):
        placer.feedback(FeedbackRequest.model_validate({"decision_id": "f" * 32 + "-0", "outcome": run}))
    both = FeedbackRequest.model_validate(
        {"decision_id": d.decision_id, "outcome": run, "other_outcome": serve_world.outcome(example_job, target, other_device)}
    )
    first, replayed = placer.feedback(both)
    assert not replayed
    answer = json.loads(first)
    assert answer["status"] == "recorded" and answer["observed_devices"] == [d.device, other_device]
    assert answer["measured_speedup"] > 1 and answer["energy_method"] == "modelled"
    again, replayed = placer.feedback(both)
    assert replayed and again == first
    with pytest.raises(FeedbackConflict):
        placer.feedback(FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": run}))


def test_bootstrap_and_refresh_pick_the_active_version(tmp_path, serve_model_dir, example_job):
    settings = Settings(state_dir=tmp_path, model_path=Path(serve_model_dir))
    store = Store(settings.database)
    first = bootstrap_store(store, settings)
    assert first.version == "serve-test-dnn" and store.active_version() == "serve-test-dnn"
    placer = Placer(first, settings=settings, store=store)
    assert not placer.refresh()
    # a second version (the same files under another name) becomes active: replicas pick it up
    store.register_version("v2", Path(serve_model_dir), parent="serve-test-dnn", status="serving",
                           thresholds=first.thresholds, metrics={}, activate=True)
    assert placer.refresh() and placer.version == "v2"
    assert _place(placer, job=example_job.model_dump(), target="B").policy_version == "v2"
    # a restart serves what is active, not the configured model
    assert bootstrap_store(Store(settings.database), settings).version == "v2"
    # a new model given explicitly is adopted
    import shutil

    newer = tmp_path / "newer"
    shutil.copytree(serve_model_dir, newer)
    meta = json.loads((newer / "metadata.json").read_text())
    (newer / "metadata.json").write_text(json.dumps({**meta, "version": "newer-model"}))
    explicit = Settings(state_dir=tmp_path, model_path=newer)
    assert bootstrap_store(Store(settings.database), explicit).version == "newer-model"
    assert store.active_version() == "newer-model"


def test_settings_bind_loopback_unless_a_token_is_set(tmp_path):
    with pytest.raises(SettingsError, match="PLACEMENT_TOKEN"):
        Settings.from_env({"PLACEMENT_HOST": "0.0.0.0", "PLACEMENT_STATE_DIR": str(tmp_path)})
    open_host = Settings.from_env({"PLACEMENT_HOST": "0.0.0.0", "PLACEMENT_TOKEN": "a-long-enough-secret"})
    replicas = open_host.for_replicas()
    assert replicas["token"] is None and len(replicas["token_sha256"]) == 64  # the secret stays in the launcher
    assert Settings.model_validate(replicas).token_digest == open_host.token_digest
    assert Settings.from_env({"PLACEMENT_PORT": "9000"}).port == 9000
    with pytest.raises(SettingsError, match="PLACEMENT_PORT"):
        Settings.from_env({"PLACEMENT_PORT": "eighty"})
