"""Rewards from bandit feedback and the gated learner (library level, no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from placement.core.catalogue import get_target
from placement.core.threshold import Thresholds, joint_threshold
from placement.core.trace import read_trace
from placement.model.perfmodel import model_columns
from placement.serve.learning.learner import Learner
from placement.serve.learning.rewards import form_rewards
from placement.serve.placer import Placer, bootstrap_store, seeded_batch_ids
from placement.serve.schemas import FeedbackRequest, PlacementRequest
from placement.serve.settings import Settings
from placement.serve.storage.store import Store

TARGET = get_target("B")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _service(tmp_path, model_dir, **overrides):
    values = {"exploration_rate": 0.0, "min_holdout": 8, **overrides}
    settings = Settings(state_dir=tmp_path, model_path=Path(model_dir), **values)
    store = Store(settings.database)
    # seeded decision ids: the learner's held-out split hashes them, so every run splits alike
    placer = Placer(bootstrap_store(store, settings), settings=settings, store=store, batch_ids=seeded_batch_ids(settings.seed))
    return settings, store, placer


def _run(placer, world, jobs, *, both=False, explore=False):
    """Place each job, report the chosen device's outcome (and the other's when ``both``)."""
    devices = []
    for job in jobs:
        (d,) = placer.place(PlacementRequest(job=job, target="B", explore=explore)).to_response().decisions
        body = {"decision_id": d.decision_id, "outcome": world.outcome(job, TARGET, d.device)}
        if both:
            body["other_outcome"] = world.outcome(job, TARGET, "cpu" if d.device == "gpu" else "gpu")
        placer.feedback(FeedbackRequest.model_validate(body))
        devices.append(d.device)
    return devices


def test_both_measured_feedback_is_labelled_exactly(tmp_path, serve_model_dir, serve_world):
    _, store, placer = _service(tmp_path, serve_model_dir)
    jobs = serve_world.jobs(30)
    _run(placer, serve_world, jobs, both=True)
    formed = form_rewards(store.recent_feedback(), Thresholds())
    assert formed.sources == {"both_measured": 30}
    assert set(formed.trace["cpu_power_method"]) <= {"modelled", "unknown"}  # as the client reported
    pairs = formed.pairs
    labels = joint_threshold(pairs["cpu_time_per_sample_s"], pairs["gpu_time_per_sample_s"],
                             pairs["cpu_energy_per_sample_j"], pairs["gpu_energy_per_sample_j"],
                             pairs["cpu_feasible"], pairs["gpu_feasible"])
    assert (labels.gpu == pairs["label_gpu"].to_numpy()).all()
    assert len(pairs) == 30 and set(pairs["estimate_source"]) == {"both_measured"}


def test_estimates_follow_observed_gpu_drift(tmp_path, serve_model_dir, serve_world):
    _, store, placer = _service(tmp_path, serve_model_dir)
    serve_world.gpu_slowdown = 3.0
    devices = _run(placer, serve_world, serve_world.jobs(120))
    assert 10 < devices.count("gpu") < 110, "the policy places jobs on both devices"
    formed = form_rewards(store.recent_feedback(), Thresholds())
    assert formed.sources.get("model", 0) == 0
    assert formed.sources.get("history", 0) + formed.sources.get("calibrated_model", 0) == 120
    estimated = formed.trace[(formed.trace["gpu_power_method"] == "modelled") & (formed.trace["device"] == "gpu")]
    cpu_placed = {fb.decision.decision_id for fb in store.recent_feedback() if fb.decision.device == "cpu"}
    estimated = estimated[estimated["job_id"].isin(cpu_placed) & estimated["feasible"].astype(bool)]
    assert len(estimated) >= 5
    ratios = []
    for row in estimated.itertuples():
        job = store.get_decision(row.job_id).job
        pred = serve_world.model.predict_columns(model_columns(job, TARGET), "gpu", np.nan, np.nan)
        ratios.append(row.time_total_s / float(pred.time_per_batch_s[0]))
    assert np.median(ratios) == pytest.approx(3.0, rel=0.15)  # the model's GPU estimate corrected by ~ln 3


def test_a_failed_gpu_run_labels_cpu(tmp_path, serve_model_dir, serve_world, example_job):
    _, store, placer = _service(tmp_path, serve_model_dir)
    (d,) = placer.place(PlacementRequest(job=example_job, target="B", explore=False)).to_response().decisions
    assert d.device == "gpu"
    placer.feedback(FeedbackRequest.model_validate(
        {"decision_id": d.decision_id, "outcome": {"device": "gpu", "feasible": False, "infeasible_reason": "oom"}}
    ))
    (pair,) = form_rewards(store.recent_feedback(), Thresholds()).pairs.itertuples()
    assert (pair.label_gpu, pair.reason) == (False, "gpu_infeasible")


@pytest.mark.slow
def test_gate_rejects_a_worse_candidate(tmp_path, serve_model_dir, serve_world):
    from placement.agents.ppo import PpoConfig, fine_tune, make_env

    def cpu_minded(loaded, env, timesteps, seed):
        """A real PPO candidate trained towards the wrong goal: T_t = 1000 makes every label CPU."""
        wrong = make_env(env.source, thresholds=Thresholds(speedup_min=1000.0))
        return fine_tune(loaded, wrong, timesteps, seed=seed, config=PpoConfig.cold(value_warmup_steps=0, learning_rate=3e-3))

    import shutil

    from placement.agents.artifact import read_metadata, set_temperature
    from placement.agents.temperature import PolicyTemperature

    model = tmp_path / "model"  # the serving model with a temperature: its candidates keep it
    shutil.copytree(serve_model_dir, model)
    set_temperature(model, PolicyTemperature(value=2.5, rows=10, folds=2, seed=0, log_loss_before=0.6,
                                             log_loss_after=0.4, ece_before=0.2, ece_after=0.05))
    settings, store, placer = _service(tmp_path, model, ppo_timesteps=2048)
    _run(placer, serve_world, serve_world.jobs(80), both=True)
    report = Learner(settings, store, trainer=cpu_minded).update()
    assert report.status == "rejected", report.reason
    inherited = read_metadata(store.get_version(report.candidate_version).path).temperature
    assert inherited is not None and inherited["value"] == 2.5 and inherited["inherited_from"] == "serve-test-dnn"
    assert report.candidate_holdout_reward < report.serving_holdout_reward
    assert store.active_version() == "serve-test-dnn" and not placer.refresh()
    version = store.get_version(report.candidate_version)
    assert version.status == "rejected" and version.metrics["gate"]["passed"] is False
    assert (version.path / "ppo.zip").is_file()  # kept for inspection, never served
    trace = read_trace(tmp_path / "traces" / f"{version.version}.parquet")
    assert trace.sha256 == version.metrics["training_trace_sha256"] and trace.meta.seed == settings.seed
    with pytest.raises(ValueError, match="rejected"):
        store.rollback(report.candidate_version)
    # nothing new since: a non-forced update waits for min_feedback_per_update
    assert Learner(settings, store).maybe_update() is None




@pytest.mark.slow
def test_drift_update_is_promoted_and_flips_marginal_jobs(tmp_path, serve_model_dir, serve_world):
    settings, store, placer = _service(tmp_path, serve_model_dir, ppo_timesteps=8192, history_window=300, holdout_fraction=0.4,
                                       exploration_rate=0.1)
    jobs = serve_world.jobs(1500)
    speedup = np.array([serve_world.speedup(j, TARGET) for j in jobs])
    marginal = [j for j, s in zip(jobs, speedup, strict=True) if 2.6 < s < 5.5]
    clear_gpu = [j for j, s in zip(jobs, speedup, strict=True) if s > 12]
    clear_cpu = [j for j, s in zip(jobs, speedup, strict=True) if s < 1.2]

    def gpu_share(subset):
        resp = placer.place(PlacementRequest(jobs=subset, target="B", explore=False)).to_response()
        return np.mean([d.device == "gpu" for d in resp.decisions])

    probe, probe_gpu = marginal[150:230], clear_gpu[75:150]
    assert gpu_share(probe) > 0.8 and gpu_share(probe_gpu) > 0.95
    mix = marginal[:150] + clear_gpu[:75] + clear_cpu[:75]
    mix = [mix[i] for i in np.random.default_rng(2).permutation(len(mix))]
    _run(placer, serve_world, mix, explore=True)
    serve_world.gpu_slowdown = 3.0  # drift: every GPU run is now 3x slower
    _run(placer, serve_world, mix, explore=True)
    report = Learner(settings, store).update()
    assert report.status == "promoted", report.reason
    assert report.candidate_holdout_reward > report.serving_holdout_reward
    assert placer.refresh() and placer.version == report.candidate_version
    assert gpu_share(probe) < 0.3  # after the drift they are no longer 2x faster on the GPU
    # jobs far above the threshold stay on the GPU: the candidate trained and was gated on the margins
    # the placer forms (shifted by the target's offsets, placement.serve.learning.offsets), so it does not count the drift twice
    assert gpu_share(probe_gpu) > 0.9
    assert store.rollback() == ("serve-test-dnn", report.candidate_version)
    # the rollback serves the old policy again; the drift itself stays visible to it through the
    # target-level offsets of the estimate (placement.serve.learning.offsets), so clear GPU jobs stay on the GPU
    assert placer.refresh() and placer.version == "serve-test-dnn"
    assert gpu_share(probe_gpu) > 0.9


def test_first_update_after_eight_events_and_no_tie_versions(tmp_path, serve_model_dir, serve_world):
    settings, store, placer = _service(tmp_path, serve_model_dir, min_holdout=1, holdout_fraction=0.5)
    assert settings.min_feedback_per_update == 8
    _run(placer, serve_world, serve_world.jobs(7), both=True)
    learner = Learner(settings, store, trainer=lambda loaded, env, steps, seed: loaded.policy)
    assert learner.maybe_update() is None  # 7 < 8
    _run(placer, serve_world, serve_world.jobs(9)[7:], both=True)
    report = learner.maybe_update()
    assert report is not None and report.status == "skipped", report
    assert "not a new version" in report.reason and report.gate["answers_changed"] == 0
    assert [v.version for v in store.versions()] == ["serve-test-dnn"]  # a tie registers nothing


def test_label_weights_follow_confidence_and_cap_signatures(tmp_path, serve_model_dir, serve_world, example_job):
    from placement.serve.learning.learner import label_weights
    from placement.serve.learning.rewards import job_signature

    _, store, placer = _service(tmp_path, serve_model_dir)
    same = [example_job.model_copy(update={"batch_size": b, "flops_per_batch": example_job.flops_per_batch / 64 * b})
            for b in (16, 32, 48, 64, 96, 128)]
    assert len({job_signature(j) for j in same}) == 1  # batch size is not part of the architecture
    _run(placer, serve_world, same, both=True)
    _run(placer, serve_world, serve_world.jobs(6), both=False)
    feedback = store.recent_feedback()
    formed = form_rewards(feedback, Thresholds())
    pairs = formed.pairs[formed.pairs["hw_gpu_gflops"] > 0].reset_index(drop=True)
    w, info = label_weights(pairs, {fb.decision.decision_id: fb for fb in feedback}, max_share=0.25)
    sig = np.array([job_signature(store.get_decision(i).job) for i in pairs["job_id"]])
    share = w[sig == job_signature(same[0])].sum() / w.sum()
    assert share <= 0.25 + 1e-9 and info["signatures_capped"] >= 1
    src = pairs["estimate_source"].to_numpy()
    one_sig = {s for s in sig if (sig == s).sum() == 1}
    single = np.array([s in one_sig for s in sig])
    assert (w[(src == "model") & single] <= w[single].max()).all()


def test_recency_counts_the_feedback_used_not_the_rows_left_out(tmp_path, serve_model_dir, serve_world):
    import dataclasses

    from placement.serve.learning.learner import recency_weights

    _, store, placer = _service(tmp_path, serve_model_dir)
    _run(placer, serve_world, serve_world.jobs(6), both=True)
    feedback = store.recent_feedback()
    by_id = {fb.decision.decision_id: fb for fb in feedback}
    w = recency_weights(by_id, half_life=2)
    newest_first = [fb.decision.decision_id for fb in sorted(feedback, key=lambda fb: -fb.seq)]
    assert [w[i] for i in newest_first] == pytest.approx([1.0, 0.5 ** 0.5, 0.5, 0.5 ** 1.5, 0.25, 0.5 ** 2.5])
    # gaps in the sequence (rows quarantined, screened or distrusted in between) change nothing
    spread = {i: dataclasses.replace(fb, seq=fb.seq * 100) for i, fb in by_id.items()}
    assert recency_weights(spread, half_life=2) == w


def test_label_weights_cap_the_share_of_one_client(tmp_path, serve_model_dir, serve_world):
    import dataclasses

    from placement.serve.learning.learner import label_weights

    _, store, placer = _service(tmp_path, serve_model_dir)
    _run(placer, serve_world, serve_world.jobs(24), both=True)
    feedback = store.recent_feedback()
    formed = form_rewards(feedback, Thresholds())
    pairs = formed.pairs[formed.pairs["hw_gpu_gflops"] > 0].reset_index(drop=True)
    names = ["flood"] * 18 + ["a"] * 3 + ["b"] * 3  # one token sent three quarters of the feedback
    by_id = {fb.decision.decision_id: dataclasses.replace(fb, client=names[k]) for k, fb in enumerate(feedback)}
    client = np.array([by_id[i].client for i in pairs["job_id"]])
    plain, _ = label_weights(pairs, by_id, max_share=1.0)
    w, info = label_weights(pairs, by_id, max_share=1.0, max_client_share=0.5)
    assert plain[client == "flood"].sum() / plain.sum() > 0.6
    assert w[client == "flood"].sum() / w.sum() == pytest.approx(0.5)
    assert info["clients"] == 3 and info["clients_capped"] == ["flood"] and info["max_client_share"] == 0.5
    # within a client the weights keep their proportions (confidence, the signature cap)
    flood = client == "flood"
    assert np.allclose(w[flood] / plain[flood], (w[flood] / plain[flood])[0])
    # one client (or none attributed): nothing to cap
    alone = {i: dataclasses.replace(fb, client="flood") for i, fb in by_id.items()}
    w1, info1 = label_weights(pairs, alone, max_share=1.0, max_client_share=0.5)
    assert np.allclose(w1, plain) and info1["clients_capped"] == []


@pytest.mark.slow
def test_rollback_pin_holds_until_released(tmp_path, serve_model_dir, serve_world):
    from placement.agents.ppo import PpoConfig, fine_tune, make_env
    from placement.serve.learning.learner import pin_version, pinned_version, release_pin

    def cpu_minded(loaded, env, timesteps, seed):
        wrong = make_env(env.source, thresholds=Thresholds(speedup_min=1000.0))
        return fine_tune(loaded, wrong, timesteps, seed=seed, config=PpoConfig.cold(value_warmup_steps=0, learning_rate=3e-3))

    settings, store, placer = _service(tmp_path, serve_model_dir, ppo_timesteps=1024)
    _run(placer, serve_world, serve_world.jobs(60), both=True)
    pin_version(store, "serve-test-dnn")
    report = Learner(settings, store, trainer=cpu_minded).update()
    assert report.status == "rejected" and report.gate["confidence"] == settings.pinned_gate_confidence
    assert report.gate["pinned_version"] == "serve-test-dnn"
    assert store.active_version() == "serve-test-dnn" and pinned_version(store) == "serve-test-dnn"
    assert release_pin(store) == "serve-test-dnn" and pinned_version(store) is None


@pytest.mark.slow
def test_a_lying_fifth_of_feedback_is_never_promoted_and_flips_nothing(tmp_path, serve_model_dir, serve_world):
    """20 % of the feedback reports the GPU run 3x to 10x slower (one direction, varied batch sizes):
    the screens hold it back, no update is promoted, and no answer changes."""
    settings, store, placer = _service(tmp_path, serve_model_dir, ppo_timesteps=1024, min_holdout=3)
    jobs = serve_world.jobs(900, seed=41)
    speedup = np.array([serve_world.speedup(j, TARGET) for j in jobs])
    pool = [j for j, s in zip(jobs, speedup, strict=True) if s > 8 or s < 1.2]

    def answers(subset):
        return [d.device for d in placer.place(PlacementRequest(jobs=subset, target="B", explore=False)).to_response().decisions]

    probe = pool[:120]
    before = answers(probe)
    rng = np.random.default_rng(0)
    learner = Learner(settings, store)
    reports, lied = [], 0
    for k, job in enumerate(pool[120:200]):
        (d,) = placer.place(PlacementRequest(job=job, target="B", explore=False)).to_response().decisions
        run = serve_world.outcome(job, TARGET, d.device)
        if k % 5 == 4 and d.device == "gpu" and "time_total_s" in run:
            run = {**run, "time_total_s": run["time_total_s"] * float(rng.uniform(3, 10))}
            lied += 1
        placer.feedback(FeedbackRequest.model_validate({"decision_id": d.decision_id, "outcome": run}))
        report = learner.maybe_update()
        if report is not None:
            reports.append(report)
            placer.refresh()
    assert lied >= 10 and len(reports) == 10
    assert not [r for r in reports if r.status == "promoted"], [r.reason for r in reports]
    screened = sum(sum(r.screened_out.values()) for r in reports[-1:])
    assert screened >= 0.8 * lied, reports[-1].screened_out
    assert store.active_version() == "serve-test-dnn" and answers(probe) == before


def test_forming_rewards_for_some_decisions_gives_their_pairs_of_the_whole_set(tmp_path, serve_model_dir, serve_world):
    # the gate forms its held-out rows only; the others stay evidence, so their pairs are unchanged
    _, store, placer = _service(tmp_path, serve_model_dir)
    _run(placer, serve_world, serve_world.jobs(60))
    feedback = store.recent_feedback()
    whole = form_rewards(feedback, Thresholds()).pairs
    some = [fb.decision.decision_id for fb in feedback[::4]]
    part = form_rewards(feedback, Thresholds(), only=some).pairs
    assert sorted(part["job_id"]) == sorted(some)
    expected = whole.set_index("job_id").loc[part["job_id"]].reset_index()
    pd.testing.assert_frame_equal(part.reset_index(drop=True), expected[part.columns], check_dtype=False)
    with pytest.raises(ValueError, match="only names no decision"):
        form_rewards(feedback, Thresholds(), only=["nope"])


def test_gate_decision_needs_a_positive_gain_and_a_bound_within_the_tolerance():
    from placement.serve.learning.learner import gate_decision

    common = {"serving": 1.0, "confidence": 0.95, "rows": 40, "differs": 5, "upper": 0.2}
    # a tie or a loss is never promoted, whatever the tolerance
    for gain in (0.0, -0.01):
        passed, why = gate_decision(gain=gain, lower=-0.05, tolerance=10.0, **common)
        assert not passed and "<= 0" in why
    # default tolerance 0: the lower bound must reach the serving estimate
    assert gate_decision(gain=0.05, lower=0.001, tolerance=0.0, **common)[0]
    passed, why = gate_decision(gain=0.05, lower=-0.02, tolerance=0.0, **common)
    assert not passed and "below the serving estimate 1.0000" in why
    # a tolerance lets a bound that far below pass, and says so
    passed, why = gate_decision(gain=0.05, lower=-0.02, tolerance=0.03, **common)
    assert passed and "tolerance 0.03" in why and "5 of 40" in why
    assert not gate_decision(gain=0.05, lower=-0.04, tolerance=0.03, **common)[0]
