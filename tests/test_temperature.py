"""Temperature scaling of P(GPU) (:mod:`placement.agents.temperature`) and the grounding
evaluation's inner fit, which must never read the held-out architecture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from placement.agents import grounding
from placement.agents.temperature import fit_temperature, log_loss, logit, scale


def test_scale_keeps_the_answer_and_moves_confidence_toward_one_half():
    p = np.array([0.01, 0.2, 0.5, 0.7, 0.999])
    assert np.array_equal(scale(p, 1.0), p)
    hot = scale(p, 3.0)
    assert np.array_equal(hot >= 0.5, p >= 0.5)
    assert np.all(np.abs(hot - 0.5) <= np.abs(p - 0.5) + 1e-12)
    assert np.all(np.abs(scale(p, 0.5) - 0.5) >= np.abs(p - 0.5) - 1e-12)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            scale(p, bad)


def test_fit_recovers_the_temperature_of_overconfident_predictions():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 4.0, 20_000)
    y = rng.random(z.size) < 1.0 / (1.0 + np.exp(-z / 3.0))  # the truth is 3x less sure than z says
    p = 1.0 / (1.0 + np.exp(-z))
    t = fit_temperature(p, y)
    assert t == pytest.approx(3.0, rel=0.08)
    assert log_loss(y, scale(p, t)) < log_loss(y, p)
    calibrated = 1.0 / (1.0 + np.exp(-z / 3.0))
    assert fit_temperature(calibrated, y) == pytest.approx(1.0, rel=0.08)
    assert np.allclose(logit(calibrated), z / 3.0, atol=1e-6)


def test_fit_refuses_what_it_cannot_use():
    with pytest.raises(ValueError, match="labels"):
        fit_temperature([0.2, 0.8], [True])
    with pytest.raises(ValueError, match="labels"):
        fit_temperature([], [])
    with pytest.raises(ValueError, match="finite"):
        fit_temperature([0.2, float("nan")], [True, False])


class _Data:
    """What inner_selection reads of a labelled set (without probes): ``pairs['arch']`` and ``subset(rows).y``."""

    def __init__(self, archs: list[str]) -> None:
        self.pairs = pd.DataFrame({"arch": archs})
        self.y = np.arange(len(archs)) % 2 == 0

    def subset(self, rows):
        out = _Data(list(self.pairs["arch"].iloc[rows]))
        out.y = self.y[rows]
        return out


def test_inner_selection_never_reads_the_held_out_architecture(monkeypatch):
    archs = [a for a in "abcdefg" for _ in range(6)]
    data = _Data(archs)
    is_meas = np.ones(len(archs), dtype=bool)
    trained, predicted = [], []

    def fake_train(d, rows, s):
        trained.append(set(np.asarray(archs)[rows]))
        return object()

    def fake_raw(dnn, d, rows, arch, th):
        predicted.append((len(trained) - 1, set(np.asarray(archs)[rows])))  # by the last DNN trained
        return np.full(len(rows), 0.9), np.ones(len(rows), dtype=bool)

    monkeypatch.setattr(grounding, "_train", fake_train)
    monkeypatch.setattr(grounding, "zero_shot_probability", fake_raw)
    sel = grounding.inner_selection(data, is_meas, "c", sorted(set(archs)), grounding.GroundingSettings(inner_folds=3))
    t, n = sel.temperature, sel.temperature_rows
    assert len(trained) == 3 and all("c" not in seen for seen in trained)
    assert all("c" not in seen for _, seen in predicted)
    assert set().union(*(seen for _, seen in predicted)) == set("abdefg") and n == 36  # each other one once
    for k, seen in predicted:  # predicted by a DNN that did not train on it
        assert not trained[k] & seen
    assert 0.25 <= t <= 20.0
    assert sel.settle_z == grounding.SETTLE_Z and sel.z_clear_jobs == 0  # no probes: nothing to choose from

    trained.clear()
    predicted.clear()
    served = grounding.inner_selection(data, is_meas, None, sorted(set(archs)), grounding.GroundingSettings(inner_folds=3))
    assert set().union(*(seen for _, seen in predicted)) == set("abcdefg") and served.temperature_rows == 42
    for k, seen in predicted:
        assert not trained[k] & seen


def test_the_served_settling_width_is_the_committed_selection():
    """SETTLE_Z is what the grouped selection over every architecture chose in the committed evaluation."""
    import json
    from pathlib import Path

    r = json.loads((Path(__file__).resolve().parent.parent / "docs" / "evaluation_grounding.json").read_text())
    assert r["served_selection"]["settle_z"] == grounding.SETTLE_Z == r["settle_z"]
    assert all(s["inner_z_clear_jobs"] > 0 for s in r["per_split"])


def test_policy_temperature_refits_the_recipe_without_each_group(tmp_path, monkeypatch):
    # a tiny recipe (DNN of a few epochs, no PPO) on two shipped measured traces: every measured
    # architecture is predicted by a refit that did not train on it
    from pathlib import Path

    from placement.agents import artifact, training
    from placement.agents.dnn import DnnConfig
    from placement.agents.evaluation import model_architecture
    from placement.agents.temperature import T_MAX, T_MIN, PolicyTemperature, fit_policy_temperature
    from placement.agents.training import TrainSettings

    root = Path(__file__).resolve().parents[1]
    traces = [root / "data/traces/h200_measured.parquet", root / "data/traces/h200_pairs_measured.parquet"]
    trained_on: dict[str, set[str]] = {}  # refit directory -> architectures in its training rows
    predicted: list[tuple[str, set[str]]] = []  # (architecture predicted, what that refit trained on)
    real_train, real_load, real_predict = (training.train_from_frame, artifact.load_served,
                                           grounding.zero_shot_probability)

    def train(frame, hashes, out_dir, settings):
        trained_on[str(out_dir)] = set(model_architecture(frame["model"]).tolist())
        return real_train(frame, hashes, out_dir, settings)

    def load(path):
        served = real_load(path)
        served.policy.trained_on = trained_on[str(path)]
        return served

    def predict(policy, data, rows, arch, th):
        predicted.append((arch, policy.trained_on))
        return real_predict(policy, data, rows, arch, th)

    monkeypatch.setattr(training, "train_from_frame", train)
    monkeypatch.setattr(artifact, "load_served", load)
    monkeypatch.setattr(grounding, "zero_shot_probability", predict)
    settings = TrainSettings(seed=0, dnn=DnnConfig(max_epochs=3, patience=3, refit=False), ppo_timesteps=0, cv_folds=0,
                             threads=1, augment_copies=0)
    fit = fit_policy_temperature(traces, settings, folds=2, work_dir=tmp_path)
    assert T_MIN <= fit.value <= T_MAX and fit.rows > 100 and fit.folds == 2
    assert fit.log_loss_after <= fit.log_loss_before + 1e-9
    everything = set().union(*trained_on.values())
    assert len(trained_on) == 2 and {a for a, _ in predicted} == everything
    assert all(a not in seen for a, seen in predicted)
    assert PolicyTemperature.from_dict(fit.to_dict()) == fit
    assert not any(tmp_path.iterdir())  # the refits' model directories are gone
    with pytest.raises(ValueError, match="folds"):
        fit_policy_temperature(traces, settings, folds=1)
