"""The versioned model directory: round trip, and refusal of missing, mismatched or tampered artifacts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from agents.artifact import (
    DNN_FILE,
    METADATA_FILE,
    NORMALISER_FILE,
    ArtifactError,
    ModelMetadata,
    load_model,
    save_model,
)
from agents.dnn import DnnConfig, train_dnn
from agents.evaluation import labelled_set
from placement.threshold import Thresholds
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
