"""PPO warm-started from the DNN: exact weight copy, value warm-up, tiny-budget training, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from placement.agents.artifact import ArtifactError, ModelMetadata, load_model, save_model
from placement.agents.dnn import DnnConfig, train_dnn
from placement.agents.evaluation import labelled_set
from placement.agents.knobs import KnobLevels
from placement.agents.ppo import (
    CurvePoint,
    PpoConfig,
    PpoPolicy,
    collect_eval_jobs,
    env_actions,
    fine_tune,
    knob_labels,
    load_ppo_policy,
    make_env,
    make_ppo,
    model_actions,
    steps_to_fraction,
    train_curve,
    train_warm_ppo,
    warm_start,
)
from placement.core.catalogue import get_target
from placement.core.threshold import Thresholds
from placement.core.trace import pair_outcomes, validate
from placement.envs.device_placement import CORE_GRID, cap_levels
from tests.agents_synthetic import synthetic_trace

torch.set_num_threads(1)
TINY = PpoConfig.warm(n_steps=64, batch_size=32, n_epochs=2, value_warmup_steps=64, value_warmup_epochs=5)


@pytest.fixture(scope="module")
def desktop():
    runs = validate(synthetic_trace(40, seed=5, targets=("A", "D", "h100-host")))
    data = labelled_set(pair_outcomes(runs))
    dnn, _ = train_dnn(data.x, data.y, config=DnnConfig(max_epochs=40, seed=0))
    return runs, data, dnn


@pytest.fixture(scope="module")
def edge():
    runs = validate(synthetic_trace(24, seed=6, targets=("A", "jetson-nano", "orin-nano")))
    data = labelled_set(pair_outcomes(runs))
    cores, caps = knob_labels(make_env(runs, targets=["jetson-nano", "orin-nano"]), data.x, 3000, seed=0)
    dnn, _ = train_dnn(data.x, data.y, config=DnnConfig(max_epochs=40, seed=0), core_labels=cores,
                       cap_labels=caps, knob_levels=KnobLevels())
    return runs, data, dnn, cores


def test_warm_policy_reproduces_dnn_decisions_exactly(desktop):
    runs, data, dnn = desktop
    env = make_env(runs)
    model, warm = warm_start(dnn, env, TINY, seed=0)
    jobs = collect_eval_jobs(make_env(runs), 300, seed=1)
    policy = PpoPolicy(model)
    for obs in (data.x, jobs.obs):
        expected = dnn.predict(obs)[0]
        np.testing.assert_array_equal(policy.predict(obs)[0], expected)  # numpy path
        np.testing.assert_array_equal(model_actions(model, obs), expected)  # SB3's torch path
    # softmax([0, z]) == sigmoid(z): the same probabilities
    np.testing.assert_allclose(policy.gpu_probability(data.x), dnn.gpu_probability(data.x), rtol=1e-5, atol=1e-6)
    assert warm["steps"] == 64 and warm["value_mse_after"] < warm["value_mse_before"]
    assert jobs.reward_ratio(policy.env_action(jobs.obs)) == pytest.approx(jobs.reward_ratio(dnn.predict(jobs.obs)[0]))


def test_edge_warm_start_copies_knob_heads(edge):
    runs, data, dnn, cores = edge
    known = np.isfinite(cores).all(axis=1)
    assert known.sum() >= 1 and cores.shape[1] == len(CORE_GRID)
    np.testing.assert_allclose(cores[known].sum(axis=1), 1.0, rtol=1e-5)
    # levels clipped to the same core count on a 4-core Jetson Nano share the target
    nano = (data.pairs["target_id"] == "jetson-nano").to_numpy() & known
    np.testing.assert_allclose(cores[nano][:, 2], cores[nano][:, 5], rtol=1e-5)
    env = make_env(runs)
    assert env.knobs
    model, _ = warm_start(dnn, env, TINY, seed=0)
    policy = PpoPolicy(model)
    actions = policy.env_action(data.x)
    np.testing.assert_array_equal(actions, env_actions(dnn, data.x, True))
    np.testing.assert_array_equal(model_actions(model, data.x), actions)
    # decide() on an edge target answers grid knobs
    nano = get_target("jetson-nano")
    row = data.pairs.index[data.pairs["target_id"] == "jetson-nano"][0]
    from placement.core.job import Job

    p = data.pairs.loc[row]
    job = Job(family=p["family"], mode=p["mode"], batch_size=int(p["batch_size"]), flops_per_batch=float(p["flops_per_batch"]),
              param_count=int(p["param_count"]), input_elems_per_sample=int(p["input_elems_per_sample"]),
              input_bytes_per_sample=int(p["input_bytes_per_sample"]))
    decision = policy.decide(job, nano)
    assert decision.cpu_cores in {min(c, nano.cpu_cores) for c in CORE_GRID}
    assert decision.device == "cpu" or decision.gpu_mem_cap in cap_levels(nano)
    assert dnn.decide(job, nano) == decision
    # every edge row that the environment showed gets a knob label (rows are matched without the
    # estimate columns, whose energy margin depends on the cores the environment shows the job at)
    edge_rows = (data.pairs["hw_kind"] == "edge").to_numpy()
    print(f"knob labels: {known.sum()} of {edge_rows.sum()} edge rows")
    assert known.sum() >= 0.9 * edge_rows.sum(), (known.sum(), edge_rows.sum())


def test_tiny_budget_warm_and_cold_training(desktop):
    runs, _, dnn = desktop
    env = make_env(runs)
    run = train_warm_ppo(dnn, env, timesteps=64, config=TINY, seed=0, eval_jobs=128)
    assert run.metrics["timesteps"] == 64 and len(run.metrics["curve"]) >= 2
    assert run.metrics["reward_ratio_start"] == pytest.approx(run.metrics["dnn_reward_ratio"])
    assert -1.0 <= run.metrics["reward_ratio_end"] <= 1.0 + 1e-9
    cold = make_ppo(make_env(runs), dnn.normaliser, PpoConfig.cold(n_steps=64, batch_size=32), seed=0)
    points = train_curve(cold, collect_eval_jobs(make_env(runs), 128, seed=2), 64, every=32)
    assert [p.steps for p in points][0] == 0 and points[-1].steps == 64
    assert steps_to_fraction([CurvePoint(0, 0.5), CurvePoint(10, 0.96), CurvePoint(20, 0.99)], 0.95) == 10
    assert steps_to_fraction([CurvePoint(0, 0.5)], 0.95) is None


def test_fine_tune_continues_or_rewarms(tmp_path, desktop, edge):
    runs, _, dnn = desktop
    run = train_warm_ppo(dnn, make_env(runs), timesteps=64, config=TINY, seed=0, eval_jobs=64)
    th = Thresholds()
    meta = ModelMetadata(version="t", seed=0, thresholds=th.as_dict(), trace_hashes={})
    path = save_model(tmp_path / "m", dnn=dnn, ppo=run.policy, normaliser=dnn.normaliser, thresholds=th, metadata=meta)
    loaded = load_model(path)
    assert isinstance(loaded.policy, PpoPolicy) and loaded.metadata.serving == "ppo"
    np.testing.assert_array_equal(loaded.policy.predict(runs_x := labelled_set(pair_outcomes(runs)).x)[0],
                                  run.policy.predict(runs_x)[0])
    # PPO.load unpickles: a changed ppo.zip is refused before it is opened
    zip_bytes = (path / "ppo.zip").read_bytes()
    (path / "ppo.zip").write_bytes(zip_bytes[:-1] + bytes([zip_bytes[-1] ^ 1]))
    with pytest.raises(ArtifactError, match="ppo.zip was modified"):
        load_model(path)
    (path / "ppo.zip").write_bytes(zip_bytes)
    tuned = fine_tune(loaded, make_env(runs), total_timesteps=64, seed=1, config=TINY)
    assert isinstance(tuned, PpoPolicy) and tuned.model.num_timesteps >= 64
    # another action space (edge targets online): a fresh agent warm-started from the DNN
    edge_runs = edge[0]
    other = fine_tune(loaded, make_env(edge_runs), total_timesteps=64, seed=1, config=TINY)
    assert other.knobbed and other.env_action(runs_x[:3]).shape == (3, 3)


def test_a_saved_policy_decides_from_its_weights_and_loads_the_agent_only_when_asked(tmp_path, desktop, edge):
    """Serving reads the actor from ppo.zip's weights (no SB3 agent: its optimizer costs seconds of
    imports per replica); the agent loads on first use of ``.model``, and only from the file that was read."""
    for runs in (desktop[0], edge[0]):
        dnn = desktop[2] if runs is desktop[0] else edge[2]
        run = train_warm_ppo(dnn, make_env(runs), timesteps=64, config=TINY, seed=0, eval_jobs=64)
        zip_path = tmp_path / f"ppo-{len(runs)}.zip"
        run.policy.save(zip_path)
        lazy = load_ppo_policy(zip_path)
        assert lazy._model is None and lazy.knobbed == run.policy.knobbed
        x = labelled_set(pair_outcomes(runs)).x
        np.testing.assert_array_equal(lazy.mlp.logits(x), run.policy.mlp.logits(x))
        np.testing.assert_array_equal(lazy.env_action(x), run.policy.env_action(x))
        assert lazy.model.num_timesteps == run.policy.model.num_timesteps  # loaded now
    changed = load_ppo_policy(zip_path)
    data = zip_path.read_bytes()
    zip_path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ValueError, match="changed since its policy was loaded"):
        _ = changed.model
    with pytest.raises(ValueError, match="needs the SB3 model"):
        PpoPolicy(None)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="clip_range"):
        PpoConfig(clip_range=1.5)
    with pytest.raises(ValueError, match="gamma"):
        PpoConfig(gamma=2.0)
    with pytest.raises(ValueError, match="target_kl"):
        PpoConfig(target_kl=0.0)
