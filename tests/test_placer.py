"""The placement library (no Ray): policy decisions, thresholds, max slowdown, bounded exploration,
edge knobs, feedback checks and version swaps, against a DNN trained in the session fixture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from placement.agents.baselines import CpuOnlyPolicy
from placement.agents.policy import Policy
from placement.core.catalogue import get_target
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.threshold import Thresholds
from placement.model.features import build_features
from placement.serve.placer import (
    InputError,
    NotFound,
    Placer,
    PolicyBundle,
    bootstrap_store,
    load_bundle,
)
from placement.serve.schemas import (
    FeedbackRequest,
    PlacementRequest,
    PlacementResponse,
    cap_from_wire,
)
from placement.serve.settings import Settings, SettingsError
from placement.serve.storage.store import FeedbackConflict, Store, target_key


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


def test_the_models_temperature_scales_the_answers_probability_not_its_side(bundle, settings, serve_world,
                                                                           serve_model_dir, tmp_path):
    import shutil
    from dataclasses import replace

    from placement.agents.artifact import ArtifactError, read_metadata, set_temperature
    from placement.agents.temperature import PolicyTemperature, scale

    jobs = [j.model_dump() for j in serve_world.jobs(40)]
    plain = _place(Placer(bundle, settings=settings, store=None), jobs=jobs, target="A", explore=False).decisions
    warm = _place(Placer(replace(bundle, temperature=3.0), settings=settings, store=None), jobs=jobs, target="A",
                  explore=False).decisions
    policy_rows = [(a, b) for a, b in zip(plain, warm, strict=True) if a.decided_by == "policy"]
    assert policy_rows and [a.device for a in plain] == [b.device for b in warm]
    for a, b in policy_rows:
        assert b.gpu_probability == pytest.approx(float(scale(a.gpu_probability, 3.0)[()]), rel=1e-9)
        assert abs(b.gpu_probability - 0.5) <= abs(a.gpu_probability - 0.5)
    # the temperature travels in the model's metadata, read by load_bundle
    model = tmp_path / "m"
    shutil.copytree(serve_model_dir, model)
    fit = PolicyTemperature(value=2.5, rows=10, folds=2, seed=0, log_loss_before=0.6, log_loss_after=0.4,
                            ece_before=0.2, ece_after=0.05)
    set_temperature(model, fit)
    assert load_bundle(model).temperature == 2.5 and read_metadata(model).temperature == fit.to_dict()
    assert load_bundle(serve_model_dir).temperature == 1.0  # none recorded: the network's own P
    set_temperature(model, replace(fit, value=0.0))
    with pytest.raises(ArtifactError, match="temperature"):
        load_bundle(model)


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
    assert d.gpu_probability is None and d.gpu_mem_cap is None and d.gpu_feasible is None
    assert resp.target_id == "cpu-box"


def test_local_target_without_a_gpu(bundle, settings, serve_world):
    from placement.lab.probe import probe_local

    local = probe_local()
    if local.has_gpu:
        pytest.skip("this host has a GPU")
    placer = Placer(bundle, settings=settings, store=None, local_target=local)
    resp = _place(placer, jobs=[j.model_dump() for j in serve_world.jobs(20)], target="local")
    for d in resp.decisions:
        assert (d.device, d.decided_by, d.gpu_probability, d.gpu_mem_cap) == ("cpu", "no_gpu", None, None)
        assert d.predicted_speedup is None and d.gpu_feasible is None


def _margins(d) -> tuple[float, float]:
    return math.log(d.predicted_speedup / 2.0), math.log(1.5 / d.predicted_energy_ratio)


def test_thresholds_are_inputs_of_the_one_path(placer, serve_world):
    jobs = [j.model_dump() for j in serve_world.jobs(200)]
    base = _place(placer, jobs=jobs, target="B", explore=False)
    nudged = _place(placer, jobs=jobs, target="B", thresholds={"speedup_min": 2.01}, explore=False)
    assert {d.decided_by for d in base.decisions + nudged.decisions} <= {"policy", "infeasible"}
    flipped = [(a, b) for a, b in zip(base.decisions, nudged.decisions, strict=True) if a.device != b.device]
    for a, _ in flipped:  # only where the speedup margin is near the moved threshold
        assert a.predicted_speedup is not None and abs(math.log(a.predicted_speedup / 2.0)) < 0.25
    assert len(flipped) <= 0.05 * len(jobs)
    # far thresholds: the same policy follows the margins
    never = _place(placer, jobs=jobs, target="B", thresholds={"speedup_min": 1e5}, explore=False)
    assert {d.device for d in never.decisions} == {"cpu"} and {d.decided_by for d in never.decisions} <= {"policy", "infeasible"}
    assert never.thresholds.speedup_min == 1e5 and never.thresholds.energy_ratio_max == 1.5
    lax = _place(placer, jobs=jobs, target="B", thresholds={"speedup_min": 1e-3, "energy_ratio_max": 1e5}, explore=False)
    for d in lax.decisions:
        assert d.device == ("gpu" if d.gpu_feasible and d.predicted_speedup is not None else "cpu")
    # sweeping T_t across one job's estimated speedup moves its answer once, from GPU to CPU
    job = next(j for j, d in zip(jobs, lax.decisions, strict=True)
               if d.predicted_speedup and d.predicted_speedup > 4 and d.predicted_energy_ratio < 0.3)
    (d0,) = _place(placer, job=job, target="B", explore=False).decisions
    s = d0.predicted_speedup
    answers = [_place(placer, job=job, target="B", thresholds={"speedup_min": s * f}, explore=False).decisions[0].device
               for f in (0.25, 0.5, 2.0, 4.0)]
    assert answers == ["gpu", "gpu", "cpu", "cpu"]


def test_no_gpu_for_an_estimated_oom_unless_seen_running(settings, example_job):
    from placement.agents.baselines import GpuOnlyPolicy

    placer = Placer(PolicyBundle("gpu-only", GpuOnlyPolicy(), Thresholds()), settings=settings, store=None)
    huge = example_job.model_copy(update={"name": "llm-70b", "param_count": 70_000_000_000,
                                          "flops_per_batch": 6 * 70e9 * 2048 * 8, "batch_size": 8})
    (d,) = _place(placer, job=huge.model_dump(), target="B").decisions
    assert (d.device, d.decided_by, d.gpu_feasible) == ("cpu", "infeasible", False)
    assert d.gpu_mem_need_mib > get_target("B").gpu_mem_mib
    ran = {"runs": [{"device": "gpu", "time_per_sample_s": 0.5, "avg_cpu_power_w": 50.0, "cpu_power_method": "modelled",
                     "avg_gpu_power_w": 200.0, "gpu_power_method": "measured"},
                    {"device": "cpu", "time_per_sample_s": 50.0, "avg_cpu_power_w": 100.0, "cpu_power_method": "modelled"}]}
    (seen,) = _place(placer, job=huge.model_dump(), target="B", probes=[ran]).decisions
    assert (seen.device, seen.gpu_feasible, seen.estimate_source) == ("gpu", True, "probe")
    assert seen.predicted_speedup == pytest.approx(100.0, rel=0.05)


def test_a_probe_decides_and_says_so(placer, serve_world):
    target = get_target("B")
    job = serve_world.jobs(50)[3]
    (model_d,) = _place(placer, job=job.model_dump(), target="B", explore=False).decisions
    assert model_d.estimate_source == "model" and model_d.prediction_method == "modelled"
    for speedup in (10.0, 0.5):
        probe = {"runs": [
            {"device": "cpu", "time_per_sample_s": 1e-3 * speedup, "avg_cpu_power_w": 100.0, "cpu_power_method": "measured"},
            {"device": "gpu", "time_per_sample_s": 1e-3, "avg_cpu_power_w": 20.0, "cpu_power_method": "measured",
             "avg_gpu_power_w": 80.0, "gpu_power_method": "measured"}]}
        (d,) = _place(placer, job=job.model_dump(), target="B", explore=False, probes=[probe]).decisions
        assert d.estimate_source == "probe" and d.speedup_source == "probe" and d.prediction_method == "measured"
        assert d.predicted_speedup == pytest.approx(speedup, rel=0.1) and d.energy_method == "measured"
        assert d.speedup_sigma < 0.2
        assert d.device == ("gpu" if speedup > 2 else "cpu")
    assert target.has_gpu


def _probe(speedup: float, devices: tuple[str, ...] = ("cpu", "gpu")) -> dict:
    runs = {"cpu": {"device": "cpu", "time_per_sample_s": 1e-3 * speedup, "avg_cpu_power_w": 100.0,
                    "cpu_power_method": "measured"},
            "gpu": {"device": "gpu", "time_per_sample_s": 1e-3, "avg_cpu_power_w": 20.0, "cpu_power_method": "measured",
                    "avg_gpu_power_w": 80.0, "gpu_power_method": "measured"}}
    return {"runs": [runs[d] for d in devices]}


def test_a_clear_measured_estimate_settles_and_the_policy_keeps_the_rest(settings, serve_world):
    from placement.agents.baselines import GpuOnlyPolicy

    job = serve_world.jobs(50)[3].model_dump()
    for policy, speedup, device in ((CpuOnlyPolicy(), 10.0, "gpu"), (GpuOnlyPolicy(), 0.5, "cpu")):
        placer = Placer(PolicyBundle("fixed", policy, Thresholds()), settings=settings, store=None)
        (d,) = _place(placer, job=job, target="B", explore=False, probes=[_probe(speedup)]).decisions
        assert (d.device, d.decided_by) == (device, "estimate")
        assert d.gpu_probability >= 0.95 if device == "gpu" else d.gpu_probability <= 0.03
        # near the threshold (margin ln(2.2 / 2) < 2 sigma) the same probe leaves the answer to the policy
        (near,) = _place(placer, job=job, target="B", explore=False, probes=[_probe(2.2 if device == "gpu" else 1.8)]
                         ).decisions
        assert near.decided_by == "policy" and near.device != device
        # one device measured and the other modelled is not enough to settle
        (half,) = _place(placer, job=job, target="B", explore=False, probes=[_probe(speedup, ("gpu",))]).decisions
        assert half.decided_by == "policy" and half.device != device
        # a per-request threshold moves the margin the rule reads: T_t above the measured speedup -> CPU
        (strict,) = _place(placer, job=job, target="B", explore=False, probes=[_probe(10.0)],
                           thresholds={"speedup_min": 40.0}).decisions
        assert (strict.device, strict.decided_by) == ("cpu", "estimate")


def test_a_probe_without_its_gpu_energy_window_settles_cpu_on_speed_and_labels_the_energy_modelled(
        settings, serve_world):
    from placement.agents.baselines import GpuOnlyPolicy

    probe = _probe(0.5)
    gpu = probe["runs"][1]
    for k in ("avg_gpu_power_w", "gpu_power_method"):
        gpu.pop(k)
    gpu["energy_skipped"] = "speed_decides_cpu"  # as placement.lab.job_probe reports a skipped window
    placer = Placer(PolicyBundle("gpu-only", GpuOnlyPolicy(), Thresholds()), settings=settings, store=None)
    (d,) = _place(placer, job=serve_world.jobs(50)[3].model_dump(), target="B", explore=False,
                  probes=[{**probe, "phases_s": {"gpu_timed": 0.06, "cpu_timed": 0.07}}]).decisions
    assert (d.device, d.decided_by, d.estimate_source) == ("cpu", "estimate", "probe")
    assert d.predicted_speedup == pytest.approx(0.5, rel=0.1) and d.energy_method == "modelled"


def test_edge_knobs_of_a_whole_batch_in_one_pass_equal_the_per_job_answers(settings, serve_world):
    """The bundled model's knob actions (PPO) and the DNN's knob heads, for many jobs at once, are
    what knobs() answers job by job; the placer's edge answers come from that one pass."""
    from placement.agents.artifact import DEFAULT_MODEL_DIR, load_model
    from placement.model.features import feature_matrix, pair_columns

    loaded = load_model(DEFAULT_MODEL_DIR)
    assert loaded.ppo is not None and loaded.ppo.knobbed and loaded.dnn.net.core_head is not None
    jobs = serve_world.jobs(60)
    for target_id in ("jetson-nano", "orin-nano", "agx-orin", "B"):
        target = get_target(target_id)
        rows = [pair_columns(j, target) for j in jobs]
        x = feature_matrix({k: [r[k][0] for r in rows] for k in rows[0]})
        devices = np.arange(len(jobs)) % 2 if target.has_gpu else np.zeros(len(jobs), dtype=np.int64)
        for policy in (loaded.ppo, loaded.dnn):
            cores, caps = policy.knobs_batch(x, target, devices)
            one_by_one = [policy.knobs(j, target, int(d)) for j, d in zip(jobs, devices, strict=True)]
            assert cores.tolist() == [k[0] for k in one_by_one] and caps == [k[1] for k in one_by_one]
    placer = Placer(PolicyBundle("bundled", loaded.policy, Thresholds()), settings=settings, store=None)
    resp = _place(placer, jobs=[j.model_dump() for j in jobs], target="agx-orin", explore=False)
    for j, d in zip(jobs, resp.decisions, strict=True):
        cores, cap = loaded.policy.knobs(j, get_target("agx-orin"), 1 if d.device == "gpu" else 0)
        assert d.cpu_cores == cores and cap_from_wire(d.gpu_mem_cap) == cap


def test_max_slowdown_overrides_a_cpu_policy(settings, serve_world):
    placer = Placer(PolicyBundle("cpu-only", CpuOnlyPolicy(), Thresholds()), settings=settings, store=None)
    jobs = [j.model_dump() for j in serve_world.jobs(150)]
    resp = _place(placer, jobs=jobs, target="B", max_slowdown=3.0)
    forced = [d for d in resp.decisions if d.decided_by == "max_slowdown"]
    assert forced, "some jobs are predicted > 3x faster on the GPU"
    for d in resp.decisions:
        fast_gpu = d.predicted_speedup is not None and d.predicted_speedup > 3.0
        assert d.device == ("gpu" if fast_gpu else "cpu")


def _straddles(d, z: float = 1.0) -> bool:
    if d.predicted_speedup is None or d.predicted_energy_ratio is None:
        return False
    m_t, m_e = _margins(d)
    lo = min(m_t - z * d.speedup_sigma, m_e - z * d.energy_ratio_sigma)
    hi = min(m_t + z * d.speedup_sigma, m_e + z * d.energy_ratio_sigma)
    return lo < 0 < hi


def test_exploration_is_bounded_recorded_and_only_where_the_estimate_straddles(bundle, tmp_path, serve_world):
    settings = Settings(state_dir=tmp_path, exploration_rate=0.2, seed=7)
    placer = Placer(bundle, settings=settings, store=Store(settings.database))
    jobs = [j.model_dump() for j in serve_world.jobs(1500)]
    resp = _place(placer, jobs=jobs, target="B")
    greedy = _place(placer, jobs=jobs, target="B", explore=False)
    explored = np.array([d.explored for d in resp.decisions])
    eligible = np.array([_straddles(g) and g.decided_by == "policy" and (g.device == "gpu" or g.gpu_feasible)
                         for g in greedy.decisions])
    assert eligible.sum() > 100
    assert not explored[~eligible].any()
    assert 0.15 < explored[eligible].mean() < 0.25  # rate 0.2
    for d, g in zip(resp.decisions, greedy.decisions, strict=True):
        assert (d.device != g.device) == d.explored
        assert d.decided_by == ("exploration" if d.explored else g.decided_by)
        assert not (d.explored and d.device == "gpu" and not d.gpu_feasible)  # never into an estimated OOM
    stored = placer.store.get_decision(resp.decisions[int(np.argmax(explored))].decision_id)
    assert stored.explored and stored.propensity == pytest.approx(0.2)
    kept = placer.store.get_decision(resp.decisions[int(np.argmax(eligible & ~explored))].decision_id)
    assert not kept.explored and kept.propensity == pytest.approx(0.8)
    outside = placer.store.get_decision(resp.decisions[int(np.argmax(~eligible))].decision_id)
    assert outside.propensity == 1.0
    # a probe that puts the margin far from the threshold leaves nothing to explore
    job = jobs[int(np.argmax(eligible))]
    far = {"runs": [{"device": "cpu", "time_per_sample_s": 1.0, "avg_cpu_power_w": 100.0, "cpu_power_method": "measured"},
                    {"device": "gpu", "time_per_sample_s": 1e-3, "avg_cpu_power_w": 20.0, "cpu_power_method": "measured",
                     "avg_gpu_power_w": 80.0, "gpu_power_method": "measured"}]}
    assert not any(d.explored for d in _place(placer, jobs=[job] * 200, target="B", probes=[far] * 200).decisions)
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


def test_outcomes_on_a_target_shift_every_estimate_there(placer, serve_world):
    """A GPU that drifted 3x slower (the hardware description unchanged) is seen in the next answers."""
    jobs = serve_world.jobs(60)
    target = get_target("B")
    probe_job = jobs[-1]
    (fresh,) = _place(placer, job=probe_job.model_dump(), target="B", explore=False).decisions
    serve_world.gpu_slowdown = 3.0
    for job in jobs[:40]:
        (d,) = _place(placer, job=job.model_dump(), target="B", explore=False).decisions
        body = {"decision_id": d.decision_id, "outcome": serve_world.outcome(job, target, d.device)}
        placer.feedback(FeedbackRequest.model_validate(body))
    (after,) = _place(placer, job=probe_job.model_dump(), target="B", explore=False).decisions
    assert after.predicted_speedup == pytest.approx(fresh.predicted_speedup / 3.0, rel=0.25)
    (other,) = _place(placer, job=probe_job.model_dump(), target="A", explore=False).decisions
    assert other.estimate_source == "model"  # target A saw no outcome: unchanged


def test_background_offsets_are_paid_by_the_refresh_not_by_placements(settings, bundle, serve_world, monkeypatch):
    """As the service runs (``offsets_inline=False``): placements use the last computed offsets and
    never recompute them; ``refresh_offsets`` (the service's own thread) does, once they are stale."""
    import placement.serve.placer as placer_module

    placer = Placer(bundle, settings=settings, store=Store(settings.database), offsets_inline=False)
    calls = []
    real = placer_module.target_timeline
    monkeypatch.setattr(placer_module, "target_timeline", lambda *a, **k: calls.append(a[2].id) or real(*a, **k))
    jobs = serve_world.jobs(60)
    target = get_target("B")
    probe_job = jobs[-1].model_dump()
    (fresh,) = _place(placer, job=probe_job, target="B", explore=False).decisions
    assert calls == [] and placer.refresh_offsets() == 1 and calls == ["B"]  # first sight of B: computed (none yet)
    serve_world.gpu_slowdown = 3.0
    for job in jobs[:40]:
        (d,) = _place(placer, job=job.model_dump(), target="B", explore=False).decisions
        placer.feedback(FeedbackRequest.model_validate(
            {"decision_id": d.decision_id, "outcome": serve_world.outcome(job, target, d.device)}))
    assert calls == ["B"], "no placement recomputed the offsets"
    (stale,) = _place(placer, job=probe_job, target="B", explore=False).decisions
    assert stale.predicted_speedup == pytest.approx(fresh.predicted_speedup)  # the last computed (none)
    assert placer.refresh_offsets() == 1 and placer.refresh_offsets() == 0  # fresh now: nothing to do
    (after,) = _place(placer, job=probe_job, target="B", explore=False).decisions
    assert after.predicted_speedup == pytest.approx(fresh.predicted_speedup / 3.0, rel=0.25)


def test_robust_outliers_flag_a_lying_minority_not_a_change_of_regime():
    from placement.serve.learning.rewards import robust_outliers

    rng = np.random.default_rng(3)
    honest = list(rng.normal(0.0, 0.05, 12))
    lies = honest[:4] + [math.log(5.0)] + honest[4:8] + [math.log(8.0)] + honest[8:]
    flags = robust_outliers(lies, [math.nan] * len(lies))
    assert flags.tolist() == [i in (4, 9) for i in range(len(lies))]
    # a change of regime (the last 8 runs 3x slower, agreeing with each other) is not screened away:
    # at most a run at either edge of the change, judged by a window the other regime dominates
    drift = honest[:8] + [math.log(3.0) + x for x in rng.normal(0.0, 0.05, 8)]
    flags = robust_outliers(drift, [math.nan] * len(drift))
    assert flags[8:].sum() <= 1 and flags[:8].sum() <= 1 and not flags[8:13].any()
    assert not robust_outliers([0.0, 2.0, 0.1], [math.nan] * 3).any()  # too few to outvote anyone


def test_a_lie_about_one_run_of_an_architecture_does_not_move_its_answers(tmp_path, serve_model_dir, serve_world):
    # an architecture's history (five jobs, both devices measured) answers its jobs; one more report
    # of one job with the GPU 5x slower than it ran is outvoted by the architecture's other runs
    from placement.lab.signature import signature_of_factory
    from placement.lab.workloads import describe_model
    from tests.archs import GatedMlp

    sig = signature_of_factory(GatedMlp, (256,), "float32")
    jobs = []
    for b in (16, 64, 256, 1024, 4096):
        d = describe_model(GatedMlp, (256,), "float32", b, "infer")
        jobs.append(Job(name="gated-mlp", family="mlp", mode="infer", batch_size=b, flops_per_batch=d.flops_per_batch,
                        param_count=d.param_count, input_elems_per_sample=d.input_elems_per_sample,
                        input_bytes_per_sample=d.input_bytes_per_sample, signature=sig))
    target = get_target("B")
    settings = Settings(state_dir=tmp_path, model_path=Path(serve_model_dir), exploration_rate=0.0)
    store = Store(settings.database)
    placer = Placer(bootstrap_store(store, settings), settings=settings, store=store)

    def report(job: Job, gpu_factor: float = 1.0) -> None:
        (d,) = placer.place(PlacementRequest(job=job, target="B", explore=False)).to_response().decisions
        runs = {dev: serve_world.outcome(job, target, dev, noise=False) for dev in ("cpu", "gpu")}
        runs["gpu"]["time_total_s"] *= gpu_factor
        other = "cpu" if d.device == "gpu" else "gpu"
        placer.feedback(FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": runs[d.device],
                                                        "other_outcome": runs[other]}))

    def answers() -> list[tuple[str, str, float]]:
        res = placer.place(PlacementRequest(jobs=jobs, target="B", explore=False), record=False).to_response()
        return [(d.device, d.estimate_source, d.predicted_speedup) for d in res.decisions]

    for job in jobs:
        report(job)
    before = answers()
    assert {src for _, src, _ in before} == {"history"}
    report(jobs[2], gpu_factor=5.0)
    assert len(store.evidence([sig], target_key(target))[sig]) == 2 * len(jobs) + 2  # stored, not trusted
    assert answers() == before
