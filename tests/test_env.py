"""Contracts of ``placement/DevicePlacement-v0`` (envs/)."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import placement.envs as envs
from placement.core.catalogue import get_target
from placement.core.decision import GROW, PlacementDecision
from placement.core.threshold import Thresholds
from placement.core.trace import TraceMeta, pair_outcomes, target_columns, validate, write_trace
from placement.envs.device_placement import (
    CAP_GRID,
    CORE_GRID,
    DEFAULT_CAP_LEVEL,
    DEFAULT_CORE_LEVEL,
    ENV_ID,
    N_CAP_LEVELS,
    N_CORE_LEVELS,
    DevicePlacementEnv,
    cap_levels,
    core_levels,
    decode_action,
    encode_decision,
)
from placement.envs.job_source import TraceJobSource
from placement.model.features import N_FEATURES, feature_matrix

# ------------------------------------------------------------------------------------------
# A small synthetic trace: simulated test data (source "simulated"), built from catalogue
# targets. Desktop jobs: CPU and GPU at default knobs. Edge jobs: CPU at every core count of
# the grid, GPU at every (cores, cap) of the grid and "grow"; the GPU is out of memory below
# the job's working set, and over-allocating slows it (paper B).
# ------------------------------------------------------------------------------------------
JOBS = [
    # job_id, family, batch, flops/batch, params, speedup at full cores, working set MiB
    ("big_cnn", "cnn", 64, 3e12, 11_000_000, 12.0, 900),
    ("small_mlp", "mlp", 32, 2e8, 50_000, 1.3, 60),
    ("mid_rnn", "rnn", 16, 4e10, 2_000_000, 2.6, 300),
    ("huge_tf", "transformer", 8, 5e13, 120_000_000, 30.0, 3000),
]


def _row(job, target, device, cores, cap, feasible, t_per_sample, p_cpu, p_gpu):
    job_id, family, batch, flops, params, _, _ = job
    row = {
        "source": "simulated",
        "job_id": job_id,
        "model": job_id,
        "family": family,
        "mode": "train",
        "batch_size": batch,
        "flops_per_batch": flops,
        "param_count": params,
        "input_elems_per_sample": 3 * 32 * 32,
        "input_bytes_per_sample": 3 * 32 * 32 * 4,
        "dataset_size": 1000,
        **target_columns(target),
        "device": device,
        "cpu_cores": cores,
        "gpu_mem_cap_mib": cap,
        "feasible": feasible,
        "infeasible_reason": None if feasible else "oom",
        "n_samples": 1000 if feasible else None,
        "time_total_s": t_per_sample * 1000 if feasible else None,
        "avg_cpu_power_w": p_cpu if feasible else None,
        "avg_gpu_power_w": p_gpu if (feasible and device == "gpu") else None,
        "cpu_power_method": "measured" if feasible else "unknown",
        "gpu_power_method": "measured" if (feasible and device == "gpu") else "unknown",
    }
    return row


def synthetic_runs(target_ids=("A", "D", "jetson-nano", "agx-orin")) -> pd.DataFrame:
    rows = []
    for tid in target_ids:
        target = get_target(tid)
        for job in JOBS:
            speedup, ws_mib = job[5], job[6]
            t_cpu_full = 0.01 * (1 + JOBS.index(job))
            if not target.is_edge:
                rows.append(_row(job, target, "cpu", target.cpu_cores, None, True, t_cpu_full, 40.0, None))
                rows.append(
                    _row(job, target, "gpu", target.cpu_cores, None, True, t_cpu_full / speedup, 35.0, 60.0)
                )
                continue
            for cores in sorted({min(c, target.cpu_cores) for c in CORE_GRID}):
                t = t_cpu_full * (target.cpu_cores / cores) ** 0.7
                rows.append(_row(job, target, "cpu", cores, None, True, t, 2.0 + 1.5 * cores, None))
                caps = [c for c in cap_levels(target)]
                for cap in caps:
                    mib = None if cap == GROW else int(cap)
                    oom = mib is not None and mib < ws_mib
                    over = 0.0 if mib is None else max(0.0, math.log2(mib / ws_mib))
                    t_gpu = t_cpu_full / speedup * (1 + 0.3 / cores) * (1 + 0.05 * over)
                    rows.append(_row(job, target, "gpu", cores, mib, not oom, t_gpu, 2.0 + 1.0 * cores, 8.0))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return synthetic_runs()


@pytest.fixture(scope="module")
def desktop_runs() -> pd.DataFrame:
    return synthetic_runs(("A", "D"))


def _rollout(env, seed, steps, action_seed=0):
    rng = np.random.default_rng(action_seed)
    env.action_space.seed(action_seed)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps):
        action = env.action_space.sample() if rng.random() < 0.5 else env.unwrapped.oracle_action()
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(obs)
    return out


def _same(a, b) -> bool:
    return gym.utils.env_checker.data_equivalence(a, b, exact=True)


# ------------------------------------------------------------------------------------------
def test_registered_in_one_namespaced_id():
    assert ENV_ID == "placement/DevicePlacement-v0"
    assert ENV_ID in gym.registry
    env = gym.make(ENV_ID, source="paper")
    assert isinstance(env.unwrapped, DevicePlacementEnv)
    assert env.spec is not None and env.spec.id == ENV_ID
    assert envs.decode_action is decode_action


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"fixture": "desktop_runs"}, id="discrete"),
        pytest.param({"fixture": "runs"}, id="edge-multidiscrete"),
        pytest.param({"fixture": "runs", "contention": True, "jobs_per_episode": 16}, id="contention"),
    ],
)
def test_check_env_gymnasium_and_sb3(kwargs, request):
    frame = request.getfixturevalue(kwargs.pop("fixture"))
    env = gym.make(ENV_ID, source=frame, block_size=64, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # any checker warning fails the test
        gym_check_env(env.unwrapped)
        sb3_check_env(DevicePlacementEnv(source=frame, block_size=64, **kwargs), warn=True)
    expected = gym.spaces.MultiDiscrete([2, N_CORE_LEVELS, N_CAP_LEVELS]) if frame is not None and (
        frame["hw_kind"] == "edge"
    ).any() else gym.spaces.Discrete(2)
    assert env.action_space == expected
    assert env.observation_space.shape == (N_FEATURES + (4 if kwargs.get("contention") else 0),)


@pytest.mark.parametrize("contention", [False, True])
def test_check_env_model_source(contention):
    kwargs = {"source": "model", "block_size": 32, "jobs_per_episode": 8, "contention": contention}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        gym_check_env(gym.make(ENV_ID, **kwargs).unwrapped)
        sb3_check_env(DevicePlacementEnv(**kwargs))
    env = DevicePlacementEnv(**kwargs)
    assert env.action_space == gym.spaces.MultiDiscrete([2, N_CORE_LEVELS, N_CAP_LEVELS])
    obs, _ = env.reset(seed=3)
    _, _, _, _, info = env.step(env.oracle_action())
    assert info["energy_method"] in ("modelled", "unknown")
    assert info["regret"] == pytest.approx(0.0)
    assert env.provenance()["source"]["kind"] == "model"


def test_model_source_labels_follow_threshold():
    env = DevicePlacementEnv(source="model", targets=["D", "jetson-nano"], block_size=128, jobs_per_episode=128)
    env.reset(seed=5)
    labels = []
    for _ in range(128):
        rewards = env.action_rewards()
        label = env.current_label()
        oracle = np.asarray(env.oracle_action())
        assert rewards.max() == pytest.approx(rewards[env._block.oracle[env._ptr]])
        assert bool(oracle.reshape(-1)[0]) == label["label_gpu"] or not env._block.feasible[env._ptr].any()
        labels.append(label["label_gpu"])
        env.step(oracle)
    assert 0 < sum(labels) < len(labels), "the model source should produce both CPU and GPU jobs"


@pytest.mark.parametrize("contention", [False, True])
def test_same_seed_same_rollout_different_seed_differs(runs, contention):
    kwargs = {"source": runs, "block_size": 16, "jobs_per_episode": 24, "contention": contention}
    a = _rollout(DevicePlacementEnv(**kwargs), seed=7, steps=60)
    b = _rollout(DevicePlacementEnv(**kwargs), seed=7, steps=60)
    c = _rollout(DevicePlacementEnv(**kwargs), seed=8, steps=60)
    assert len(a) == len(b)
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))
    assert not all(_same(x, y) for x, y in zip(a, c, strict=False))


def test_reward_sign_matches_labels(desktop_runs):
    env = DevicePlacementEnv(source=desktop_runs, block_size=64, jobs_per_episode=64)
    env.reset(seed=0)
    seen = set()
    for _ in range(64):
        label = env.current_label()
        rewards = env.action_rewards()
        assert (rewards[1] > 0) == label["label_gpu"]
        assert (rewards[0] > 0) == (not label["label_gpu"])
        assert abs(rewards[0]) == pytest.approx(0.5 + min(abs(label["margin"]), 2.0))
        seen.add(label["label_gpu"])
        _, reward, _, _, info = env.step(1)
        assert reward == pytest.approx(rewards[1])
        assert info["correct"] == info["label_gpu"]
        assert info["regret"] == pytest.approx(info["oracle_reward"] - reward) and info["regret"] >= 0
    assert seen == {True, False}


def test_observation_is_raw_feature_vector(desktop_runs):
    env = DevicePlacementEnv(source=desktop_runs, block_size=8)
    obs, _ = env.reset(seed=1)
    block = env._block
    expected = feature_matrix({k: v[:1] for k, v in env.source.sample(1, np.random.default_rng(0), env.targets, env._knob_table).columns.items()})
    assert obs.dtype == np.float32 and obs.shape == (N_FEATURES,)
    assert expected.shape == (1, N_FEATURES)
    np.testing.assert_array_equal(obs, block.features[0])
    job = env.source.pairs[(env.source.pairs["job_id"] == block.job_id[0]) & (env.source.pairs["target_id"] == block.target_id[0])]
    cols = {c: job[c].to_numpy() for c in job.columns if c.startswith("hw_") or c in (
        "family", "mode", "batch_size", "flops_per_batch", "param_count", "input_elems_per_sample", "input_bytes_per_sample")}
    cols["cpu_cores"] = job["hw_cpu_cores"].to_numpy()
    np.testing.assert_allclose(obs, feature_matrix(cols)[0])
    obs2, *_ = env.step(0)
    assert obs2 is not obs and not np.shares_memory(obs2, block.features)


def test_paper_trace_labels_and_thresholds():
    env = DevicePlacementEnv(source="paper", block_size=200, jobs_per_episode=200)
    env.reset(seed=0)
    labels: dict[str, tuple[bool, str]] = {}
    for _ in range(50):
        job = env._block.job_id[env._ptr]
        label = env.current_label()
        labels[job] = (label["label_gpu"], label["reason"])
        env.step(env.oracle_action())
    assert labels["bert_imdb"] == (True, "valid_acceleration")
    assert labels["mobilenet_imagenet100"] == (False, "too_slow")  # 1.79x < T_t = 2
    assert labels["resnet18_imagenet100"] == (True, "valid_acceleration")
    assert labels["TimeSformer_k400"] == (True, "cpu_infeasible")
    assert labels["xgb_iris"][0] is True  # speed-only rule when GPU power is unknown
    # a lower T_t makes mobilenet (1.79x faster) a valid acceleration (paper A sensitivity)
    env = DevicePlacementEnv(source="paper", thresholds={"speedup_min": 1.5}, block_size=200)
    env.reset(seed=0)
    for _ in range(50):
        if env._block.job_id[env._ptr] == "mobilenet_imagenet100":
            assert env.current_label()["label_gpu"] is True
        env.step(0)


def test_pair_rows_frame_and_file_give_same_rewards(desktop_runs, tmp_path):
    pairs = pair_outcomes(validate(desktop_runs))
    path = write_trace(desktop_runs, tmp_path / "t.parquet", TraceMeta(source="simulated", seed=0))
    from_runs = DevicePlacementEnv(source=desktop_runs, block_size=32)
    from_pairs = DevicePlacementEnv(source=pairs, block_size=32)
    from_file = DevicePlacementEnv(source=str(path), block_size=32)
    for env in (from_runs, from_pairs, from_file):
        env.reset(seed=11)
    np.testing.assert_allclose(from_runs._block.rewards, from_pairs._block.rewards)
    np.testing.assert_allclose(from_runs._block.rewards, from_file._block.rewards)
    assert from_file.provenance()["source"]["trace_sha256"]
    assert from_pairs.provenance()["source"]["rows"] == "pairs"


def test_decode_and_encode_actions():
    nano, desktop, no_gpu = get_target("jetson-nano"), get_target("D"), get_target("A").model_copy(
        update={"id": "cpu-only", "gpu_model": None, "gpu_gflops": 0.0, "gpu_mem_gib": 0.0, "gpu_tdp_w": 0.0}
    )
    assert core_levels(nano) == (1, 2, 4, 4, 4, 4)
    assert cap_levels(nano)[-1] == GROW and cap_levels(nano)[0] == 1024
    assert decode_action(1, desktop) == PlacementDecision(device="gpu", cpu_cores=desktop.cpu_cores)
    assert decode_action(np.int64(0), desktop) == PlacementDecision(device="cpu", cpu_cores=desktop.cpu_cores)
    # knob parts are ignored on a desktop; the cap on a CPU placement
    assert decode_action([1, 0, 0], desktop) == PlacementDecision(device="gpu", cpu_cores=16, gpu_mem_cap="grow")
    assert decode_action([0, 1, 0], nano) == PlacementDecision(device="cpu", cpu_cores=2, gpu_mem_cap="grow")
    assert decode_action([1, 2, 1], nano) == PlacementDecision(device="gpu", cpu_cores=4, gpu_mem_cap=2048)
    assert decode_action(1, no_gpu).device == "gpu"  # faithful; the env penalises it
    for d in range(2):
        for c in range(N_CORE_LEVELS):
            for m in range(N_CAP_LEVELS):
                decision = decode_action([d, c, m], nano)
                back = encode_decision(decision, nano, knobs=True)
                assert decode_action(back, nano) == decision
    assert encode_decision(PlacementDecision(device="gpu", cpu_cores=3), desktop, knobs=False) == 1
    assert list(encode_decision(PlacementDecision(device="cpu", cpu_cores=3), desktop, knobs=True)) == [
        0, DEFAULT_CORE_LEVEL, DEFAULT_CAP_LEVEL]
    assert len(CORE_GRID) == N_CORE_LEVELS and CAP_GRID[-1] == GROW
    for bad in (2, -1, 0.5, [1, 9, 0], [1, 0, 0, 0], "gpu"):
        with pytest.raises(ValueError, match="action"):
            decode_action(bad, nano)


def test_env_rejects_bad_actions(runs, desktop_runs):
    edge = DevicePlacementEnv(source=runs, block_size=8)
    edge.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[device, core_level, cap_level\]"):
        edge.step(1)
    with pytest.raises(ValueError, match="cap_level"):
        edge.step(np.array([1, 0, 7]))
    flat = DevicePlacementEnv(source=desktop_runs, block_size=8)
    with pytest.raises(RuntimeError, match="reset"):
        flat.step(0)
    flat.reset(seed=0)
    with pytest.raises(ValueError, match="0 \\(CPU\\) or 1 \\(GPU\\)"):
        flat.step(2)


def test_edge_knob_term_oom_and_oracle(runs):
    env = DevicePlacementEnv(source=runs, targets=["jetson-nano"], block_size=64, jobs_per_episode=64)
    env.reset(seed=2)
    checked = 0
    for _ in range(64):
        rewards = env.action_rewards().reshape(2, N_CORE_LEVELS, N_CAP_LEVELS)
        label = env.current_label()
        oracle = env.oracle_action()
        device = int(oracle[0])
        assert device == int(label["label_gpu"])
        best = rewards[device].max()
        assert rewards[tuple(oracle)] == pytest.approx(best)
        assert best == pytest.approx(0.5 + min(abs(label["margin"]), 2.0))  # knob term 0 at best knobs
        # fewer cores is slower on the CPU: a knob penalty, bounded by knob_cap
        assert rewards[0, 0, DEFAULT_CAP_LEVEL] < rewards[0, 2, DEFAULT_CAP_LEVEL]
        assert rewards.min() >= -(0.5 + 2.0 + 2.0) - 1e-9
        job = env._block.job_id[env._ptr]
        _, reward, _, _, info = env.step(np.array([1, 2, 0]))  # GPU, 4 cores, cap 1024 MiB
        if job == "huge_tf":  # 3000 MiB working set: OOM under a 1024 MiB cap
            assert info["feasible"] is False and info["infeasible_reason"] == "oom"
            assert reward == pytest.approx(-(0.5 + 2.0 + 2.0))
            checked += 1
        else:
            assert info["feasible"] is True and info["gpu_mem_cap_mib"] == 1024 and info["cpu_cores"] == 4
            assert info["knobs_exact"] is True and info["energy_method"] == "measured"
    assert checked > 0


def test_trace_knobs_nearest_when_not_logged():
    # drop the 2-core runs: the 2-core level borrows the nearest logged run (1 core; tie -> first)
    frame = synthetic_runs(("jetson-nano",))
    frame = frame[frame["cpu_cores"] != 2].reset_index(drop=True)
    env = DevicePlacementEnv(source=frame, block_size=8)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0, 1, 4]))
    assert info["cpu_cores"] == 2 and info["knobs_exact"] is False and info["feasible"] is True
    _, _, _, _, info = env.step(np.array([0, 2, 4]))
    assert info["knobs_exact"] is True


def test_contention_queue_wait_and_reward(runs):
    env = DevicePlacementEnv(
        source=runs, targets=["D"], contention=True, jobs_per_episode=40, arrival_rate_per_s=50.0
    )
    obs, info = env.reset(seed=4)
    assert info["arrival_rate_per_s"] == 50.0
    assert obs[N_FEATURES] == 0.0 and obs[N_FEATURES + 1] == 0.0  # idle GPU
    assert obs[N_FEATURES + 3] == pytest.approx(math.log10(1 / 50.0))
    waits, queue, flipped = [], [], 0
    for _ in range(40):
        idle_label = env._block.label_gpu[env._ptr]
        label = env.current_label()
        if idle_label and not label["label_gpu"]:
            flipped += 1  # valid on an idle GPU, not after the wait
        obs, reward, terminated, truncated, info = env.step(1)  # everything to the GPU
        waits.append(info["wait_s"])
        queue.append(obs[N_FEATURES + 1])
        assert info["time_s"] == pytest.approx(info["time_per_sample_s"] * 1000 + info["wait_s"])
        assert not terminated
    assert truncated
    assert max(waits) > 0 and max(queue) > 1
    assert flipped > 0
    # CPU placements never wait, and the wait is in the observation
    env.reset(seed=4)
    for _ in range(10):
        env.step(1)
    obs, *_ = env.step(0)
    assert obs[N_FEATURES] > 0
    _, _, _, _, info = env.step(0)
    assert info["wait_s"] == 0.0
    with pytest.raises(ValueError, match="target_id"):
        env.reset(options={"target_id": "nope"})


def test_contention_rate_calibrated_from_load(runs):
    env = DevicePlacementEnv(source=runs, targets=["A"], contention=True, jobs_per_episode=32, gpu_load=0.5)
    _, info = env.reset(seed=0)
    k = env.n_actions
    block = env._block
    mean_gpu_s = float(np.mean(block.time_per_sample_s[:, k + 1] * block.n_samples))
    assert info["arrival_rate_per_s"] == pytest.approx(0.5 / mean_gpu_s)


def test_bad_arguments_name_the_field(desktop_runs):
    cases = [
        ({"jobs_per_episode": 0}, "jobs_per_episode"),
        ({"block_size": 1.5}, "block_size"),
        ({"arrival_rate_per_s": -1.0}, "arrival_rate_per_s"),
        ({"gpu_load": float("nan")}, "gpu_load"),
        ({"knob_cap": 0}, "knob_cap"),
        ({"correct_bonus": -1}, "correct_bonus"),
        ({"thresholds": {"speedup_min": 0}}, "speedup_min"),
        ({"thresholds": {"T_t": 2}}, "thresholds"),
        ({"targets": ["jetson-nano"]}, "targets"),
        ({"render_mode": 3}, "render_mode"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ValueError, match=field):
            DevicePlacementEnv(source=desktop_runs, **kwargs)
    with pytest.raises(TypeError, match="source"):
        DevicePlacementEnv(source=42)
    with pytest.raises(ValueError, match="cpu_time_per_sample_s"):
        DevicePlacementEnv(source=pair_outcomes(validate(desktop_runs)).drop(columns=["cpu_time_per_sample_s"]))
    bad = desktop_runs.copy()
    bad.loc[0, "batch_size"] = -3
    with pytest.raises(ValueError, match="batch_size"):
        DevicePlacementEnv(source=bad)
    with pytest.raises(ValueError, match="target_id"):
        env = DevicePlacementEnv(source=desktop_runs)
        env.reset(options={"target_id": "A"})


def test_provenance_and_render(desktop_runs):
    env = DevicePlacementEnv(source=desktop_runs, thresholds=Thresholds(speedup_min=2.5), render_mode="ansi")
    env.reset(seed=9)
    env.step(1)
    prov = env.provenance()
    assert prov["seed"] == 9 and prov["thresholds"]["speedup_min"] == 2.5
    assert prov["source"]["frame_sha256"] and prov["code_version"]
    assert {t["id"] for t in prov["targets"]} == {"A", "D"}
    assert "label=" in env.render()
    assert isinstance(env.source, TraceJobSource)
