"""Paper A's supervised DNN: training recipes, numpy inference, metrics, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from placement.agents.dnn import DnnConfig, DnnPolicy, classification_metrics, train_dnn
from placement.agents.evaluation import labelled_set, random_split
from placement.agents.knobs import KnobLevels
from placement.model.features import N_FEATURES
from tests.agents_synthetic import synthetic_pairs

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def split():
    data = labelled_set(synthetic_pairs(80, seed=2))
    s = random_split(data, 0.25, seed=0)
    return data.subset(s.train), data.subset(s.test)


@pytest.fixture(scope="module")
def trained(split):
    train, _ = split
    return train_dnn(train.x, train.y, config=DnnConfig(max_epochs=120, patience=20, seed=0))


def test_default_recipe_learns_the_threshold(split, trained):
    _, test = split
    policy, history = trained
    assert history.epochs_run <= 120 and 1 <= history.best_epoch <= history.epochs_run
    m = classification_metrics(test.y, policy.gpu_probability(test.x))
    assert m["accuracy"] >= 0.9
    assert m["roc_auc"] > 0.95 and m["average_precision"] > 0.9
    assert 0 <= m["ece"] < 0.2 and 0 <= m["brier"] < 0.1
    assert len(m["calibration"]["mean_predicted"]) == len(m["calibration"]["fraction_positive"])


def test_paper_preset():
    cfg = DnnConfig.paper()
    assert (cfg.optimizer, cfg.lr, cfg.max_epochs, cfg.hidden) == ("sgd", 0.05, 800, (128, 64))
    assert DnnConfig.paper(max_epochs=5).max_epochs == 5


def test_paper_recipe_trains(split):
    train, test = split
    policy, history = train_dnn(train.x, train.y, config=DnnConfig.paper(max_epochs=60, seed=1))
    assert history.train_loss[-1] < history.train_loss[0]
    assert (policy.predict(test.x)[0].astype(bool) == test.y).mean() > 0.8


def test_numpy_path_equals_torch(split, trained):
    _, test = split
    policy, _ = trained
    with torch.no_grad():
        z = policy.net(torch.from_numpy(policy.normaliser.transform(test.x)))[0].numpy()
    np.testing.assert_allclose(policy.gpu_logit(test.x), z, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(policy.predict(test.x)[0], (z > 0).astype(np.int64))
    p = policy.gpu_probability(test.x)
    assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))
    assert policy.predict(test.x[0])[0] == policy.predict(test.x[:1])[0][0]


def test_deterministic_for_a_seed(split):
    train, _ = split
    cfg = DnnConfig(max_epochs=5, seed=7)
    a, _ = train_dnn(train.x, train.y, config=cfg)
    b, _ = train_dnn(train.x, train.y, config=cfg)
    np.testing.assert_array_equal(a.gpu_logit(train.x), b.gpu_logit(train.x))


def test_checkpoint_round_trip_is_weights_only(tmp_path, trained, split):
    policy, _ = trained
    _, test = split
    path = tmp_path / "dnn.pt"
    torch.save(policy.to_checkpoint(), path)
    loaded = DnnPolicy.from_checkpoint(torch.load(path, weights_only=True), policy.normaliser)
    np.testing.assert_array_equal(loaded.gpu_logit(test.x), policy.gpu_logit(test.x))


def test_knob_heads_train_where_labels_exist(split):
    train, _ = split
    levels = KnobLevels()
    rng = np.random.default_rng(0)
    cores = np.where(rng.random(len(train)) < 0.5, -1, (train.x[:, 0] > np.median(train.x[:, 0])).astype(int) * 2)
    caps = np.full(len(train), -1)
    caps[:10] = 1
    policy, _ = train_dnn(train.x, train.y, config=DnnConfig(max_epochs=40, seed=0), core_labels=cores,
                          cap_labels=caps, knob_levels=levels)
    core_logits, cap_logits = policy.knob_logits(train.x)
    assert core_logits.shape == (len(train), 6) and cap_logits.shape == (len(train), 5)
    known = cores >= 0
    assert (np.argmax(core_logits[known], axis=1) == cores[known]).mean() > 0.8


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="x_raw must have shape"):
        train_dnn(np.zeros((4, 3)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="one label per row"):
        train_dnn(np.zeros((4, N_FEATURES)), [0, 1])
    x = np.zeros((4, N_FEATURES))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_dnn(x, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="optimizer"):
        DnnConfig(optimizer="adam2")
    with pytest.raises(ValueError, match="lr"):
        DnnConfig(lr=0)
