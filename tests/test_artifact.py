"""The versioned model directory: round trip, and refusal of missing, mismatched or tampered artifacts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from placement.agents.actor import ActorPolicy, load_actor, save_actor
from placement.agents.artifact import (
    ACTOR_FILE,
    DEFAULT_MODEL_DIR,
    DNN_FILE,
    METADATA_FILE,
    NORMALISER_FILE,
    ArtifactError,
    ModelMetadata,
    load_model,
    load_served,
    save_model,
)
from placement.agents.dnn import DnnConfig, train_dnn
from placement.agents.evaluation import labelled_set
from placement.agents.ppo import PpoPolicy
from placement.core.threshold import Thresholds
from tests.agents_synthetic import synthetic_pairs

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    data = labelled_set(synthetic_pairs(30, seed=3))
    policy, _ = train_dnn(data.x, data.y, config=DnnConfig(max_epochs=10, seed=0))
    return data, policy


@pytest.fixture
def saved(tmp_path, trained):
    data, policy = trained
    th = Thresholds(2.5, 1.4)
    meta = ModelMetadata(version="test-1", seed=0, thresholds=th.as_dict(), trace_hashes={"t.parquet": "ab" * 32},
                         metrics={"accuracy": 1.0})
    return save_model(tmp_path / "m", dnn=policy, normaliser=policy.normaliser, thresholds=th, metadata=meta)


def test_round_trip(saved, trained):
    data, policy = trained
    loaded = load_model(saved)
    np.testing.assert_array_equal(loaded.policy.gpu_probability(data.x), policy.gpu_probability(data.x))
    assert loaded.policy is loaded.dnn and loaded.ppo is None
    assert loaded.thresholds == Thresholds(2.5, 1.4)
    m = loaded.metadata
    assert m.version == "test-1" and m.trace_hashes == {"t.parquet": "ab" * 32} and m.serving == "dnn"
    assert set(m.files) == {DNN_FILE, NORMALISER_FILE, "thresholds.json"} and m.code_version
    np.testing.assert_array_equal(loaded.normaliser.mean, policy.normaliser.mean)
    # dnn.pt holds only tensors and plain values
    torch.load(saved / DNN_FILE, weights_only=True)


def test_save_replaces_existing_directory(saved, trained):
    _, policy = trained
    meta = load_model(saved).metadata
    again = save_model(saved, dnn=policy, normaliser=policy.normaliser, thresholds=Thresholds(2.5, 1.4),
                       metadata=ModelMetadata(version="test-2", seed=1, thresholds=meta.thresholds, trace_hashes={}))
    assert load_model(again).metadata.version == "test-2"
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]


def test_tampered_file_is_refused(saved):
    with open(saved / DNN_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="dnn.pt was modified"):
        load_model(saved)


def test_missing_file_and_metadata_are_refused(saved, tmp_path):
    (saved / NORMALISER_FILE).unlink()
    with pytest.raises(ArtifactError, match="normaliser.json is missing"):
        load_model(saved)
    (saved / METADATA_FILE).unlink()
    with pytest.raises(ArtifactError, match="metadata.json is missing"):
        load_model(saved)
    with pytest.raises(ArtifactError, match="model directory not found"):
        load_model(tmp_path / "nope")


def test_unlisted_file_is_refused(saved):
    shutil.copy(saved / DNN_FILE, saved / "ppo.zip")
    with pytest.raises(ArtifactError, match="unlisted file"):
        load_model(saved)


def test_feature_schema_mismatch_is_refused(saved):
    meta = json.loads((saved / METADATA_FILE).read_text())
    meta["feature_names"] = meta["feature_names"][:-1]
    (saved / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="feature schema mismatch"):
        load_model(saved)
    meta["feature_names"] = meta["feature_names"] + ["x"]
    meta["feature_schema_version"] = 999
    (saved / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="feature schema mismatch"):
        load_model(saved)


def test_bad_metadata_is_refused(saved):
    (saved / METADATA_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_model(saved)
    (saved / METADATA_FILE).write_text(json.dumps({"version": "x"}))
    with pytest.raises(ArtifactError, match="lacks field"):
        load_model(saved)


def test_thresholds_must_agree(tmp_path, trained):
    _, policy = trained
    meta = ModelMetadata(version="v", seed=0, thresholds=Thresholds().as_dict(), trace_hashes={})
    with pytest.raises(ArtifactError, match="thresholds"):
        save_model(tmp_path / "m", dnn=policy, normaliser=policy.normaliser, thresholds=Thresholds(3.0), metadata=meta)


# --- the offline training pipeline and its CLI -------------------------------------------

def _write_traces(tmp_path):
    from placement.core.trace import TraceMeta, write_trace
    from tests.agents_synthetic import synthetic_trace

    a = write_trace(synthetic_trace(16, seed=7, targets=("A", "D", "jetson-nano")), tmp_path / "a.parquet",
                    TraceMeta(source="simulated", description="test", seed=7))
    b = write_trace(synthetic_trace(8, seed=8, targets=("B",)).assign(job_id=lambda f: "b-" + f["job_id"]),
                    tmp_path / "b.csv", TraceMeta(source="simulated", description="test", seed=8))
    return a, b


@pytest.mark.slow
def test_train_pipeline_dnn_then_ppo(tmp_path):
    from placement.agents.ppo import PpoConfig
    from placement.agents.training import TrainSettings, train_from_traces
    from placement.core.trace import file_sha256

    a, b = _write_traces(tmp_path)
    settings = TrainSettings(seed=3, dnn=DnnConfig(max_epochs=8), ppo_timesteps=64, cv_column="family", cv_folds=2,
                             ppo=PpoConfig.warm(n_steps=64, batch_size=32, value_warmup_steps=64, value_warmup_epochs=2),
                             threads=1)
    result = train_from_traces([a, b], tmp_path / "model", settings)
    loaded = load_model(result.path)
    assert isinstance(loaded.policy, PpoPolicy) and loaded.policy.knobbed
    meta = loaded.metadata
    assert meta.trace_hashes == {str(a): file_sha256(a), str(b): file_sha256(b)}
    assert meta.seed == 3 and meta.thresholds == Thresholds().as_dict() and meta.knob_levels
    assert meta.metrics["cv"]["held_out"] == "family" and len(meta.metrics["cv"]["table5"]) == 6
    assert meta.metrics["ppo"]["timesteps"] == 64 and meta.metrics["knob_labels"]["core_labelled"] > 0
    assert loaded.dnn.net.core_head is not None
    # same seed, same traces: the same DNN
    again = train_from_traces([a, b], tmp_path / "model2", settings)
    data = labelled_set(synthetic_pairs(5, seed=9))
    np.testing.assert_array_equal(load_model(again.path).dnn.gpu_logit(data.x), loaded.dnn.gpu_logit(data.x))

    # what serving loads: the actor's numpy file, answers bit for bit those of the torch-loaded policy
    assert ACTOR_FILE in meta.files
    served = load_served(result.path)
    assert isinstance(served.policy, ActorPolicy) and not isinstance(served.policy, PpoPolicy)
    assert served.policy.knobbed and served.thresholds == loaded.thresholds and served.metadata == meta
    x = np.concatenate([data.x, labelled_set(synthetic_pairs(20, seed=4)).x])
    np.testing.assert_array_equal(served.policy.gpu_logit(x), loaded.policy.gpu_logit(x))
    np.testing.assert_array_equal(served.policy.env_action(x), loaded.policy.env_action(x))
    # the actor file is in the manifest: changed, it is refused like any other file
    mlp, knobbed = load_actor(result.path / ACTOR_FILE)
    save_actor(result.path / ACTOR_FILE, replace(mlp, head_b=mlp.head_b + 1.0), knobbed)
    with pytest.raises(ArtifactError, match="actor.npz was modified"):
        load_served(result.path)


def test_served_dnn_and_older_artifacts_load_through_load_model(saved, trained):
    # a DNN-serving artifact (no actor file), and a PPO artifact written before actor.npz existed:
    # load_served falls back to load_model (torch) and serves the same policy
    data, policy = trained
    served = load_served(saved)
    np.testing.assert_array_equal(served.policy.gpu_probability(data.x), policy.gpu_probability(data.x))
    default = load_served(DEFAULT_MODEL_DIR)
    assert isinstance(default.policy, ActorPolicy)
    old = saved.parent / "old-ppo"
    shutil.copytree(DEFAULT_MODEL_DIR, old)
    meta = json.loads((old / METADATA_FILE).read_text())
    del meta["files"][ACTOR_FILE]
    (old / ACTOR_FILE).unlink()
    (old / METADATA_FILE).write_text(json.dumps(meta))
    fallback = load_served(old)
    assert isinstance(fallback.policy, PpoPolicy)
    np.testing.assert_array_equal(fallback.policy.gpu_logit(data.x), default.policy.gpu_logit(data.x))


def test_a_damaged_actor_file_is_refused_with_its_name(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"not a zip")
    with pytest.raises((ValueError, OSError)):
        load_actor(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", format=np.array(1), w0=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="not an actor file"):
        load_actor(tmp_path / "b.npz")


def test_serving_loads_the_bundled_model_without_torch():
    # an ingress replica's imports and model load, in a fresh interpreter: torch (about 2 s of a
    # replica's start-up) and stable-baselines3 stay out
    code = ("import sys; from pathlib import Path; import placement.serve.app; "
            "from placement.serve.placer import load_bundle; b = load_bundle(Path('models/default')); "
            "print(type(b.policy).__name__, 'torch' in sys.modules, 'stable_baselines3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["ActorPolicy", "False", "False"], out.stderr


@pytest.mark.slow
def test_cli_train_and_evaluate(tmp_path):
    from typer.testing import CliRunner

    from placement.cli import app

    a, b = _write_traces(tmp_path)
    runner = CliRunner()
    out = tmp_path / "cli-model"
    res = runner.invoke(app, ["train", "--traces", str(a), str(b), "--out", str(out), "--ppo-steps", "0",
                              "--folds", "2", "--cv", "target_id", "--quiet", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "held-out target_id" in res.output and "rule_based" in res.output
    assert load_model(out).metadata.serving == "dnn"
    res = runner.invoke(app, ["evaluate", "--traces", str(a), "--model", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [r["policy"] for r in rows] == ["oracle", "cpu_only", "gpu_only", "random", "rule_based", "dnn"]
    res = runner.invoke(app, ["evaluate", "--traces", str(a), "--model", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "model directory not found" in res.output
    res = runner.invoke(app, ["train", "--out", str(out)])
    assert res.exit_code == 2 and "give at least one trace" in res.output
    res = runner.invoke(app, ["train", "--traces", str(a), "--out", str(out), "--preset", "fast"])
    assert res.exit_code == 2 and "--preset" in res.output
