"""Off-policy estimators (:mod:`placement.agents.offpolicy`): interval coverage on synthetic logged data with a
known true value (after Vowpal Wabbit's estimator tests), and the paired difference the gate uses."""

from __future__ import annotations

import numpy as np
import pytest

from placement.agents.offpolicy import doubly_robust, dr_terms, one_hot, paired_difference, snips


def _world(rng, n):
    """Contexts in 4 clusters; mean reward per (cluster, action); epsilon-greedy logging (eps 0.3)."""
    means = np.array([[0.2, 0.8], [0.7, 0.3], [0.5, 0.6], [0.9, 0.1]])
    x = rng.integers(0, 4, n)
    greedy = np.array([0, 0, 1, 1])[x]  # a logging policy right on half the clusters
    eps = 0.3
    explore = rng.random(n) < eps
    action = np.where(explore, rng.integers(0, 2, n), greedy)
    propensity = np.where(action == greedy, 1 - eps / 2, eps / 2)
    reward = rng.normal(means[x, action], 0.3)
    return x, action, propensity, reward, means


@pytest.mark.parametrize("method", ["snips", "doubly_robust"])
def test_interval_coverage(method):
    target_of = np.array([1, 0, 1, 0])  # the best action per cluster
    covered, reps, conf = 0, 400, 0.9
    for seed in range(reps):
        rng = np.random.default_rng(seed)
        x, action, propensity, reward, means = _world(rng, 300)
        target = one_hot(target_of[x])
        truth = means[np.arange(4), target_of].mean()  # clusters are equally likely
        if method == "snips":
            est = snips(reward, action, propensity, target, confidence=conf)
        else:
            biased = means[x] + 0.2  # a reward model off by 0.2 everywhere: DR still unbiased
            est = doubly_robust(reward, action, propensity, target, biased, confidence=conf)
        covered += est.lower <= truth <= est.upper
    coverage = covered / reps
    assert 0.85 <= coverage <= 0.95, coverage


def test_paired_difference_cancels_shared_answers():
    rng = np.random.default_rng(0)
    x, action, propensity, reward, means = _world(rng, 200)
    rhat = means[x]
    serving = one_hot(np.array([0, 0, 1, 1])[x])
    same = paired_difference(dr_terms(reward, action, propensity, serving, rhat),
                             dr_terms(reward, action, propensity, serving, rhat))
    assert same.value == 0 and same.lower == 0 and same.upper == 0  # a tie is exactly 0, never > 0
    better = one_hot(np.array([1, 0, 1, 0])[x])
    diff = paired_difference(dr_terms(reward, action, propensity, better, rhat),
                             dr_terms(reward, action, propensity, serving, rhat))
    assert diff.lower > 0  # better on clusters 0 and 3 by 0.6 and 0.8


def test_bad_input_raises():
    with pytest.raises(ValueError, match="propensities"):
        snips([1.0], [0], [0.0], one_hot([0]))
    with pytest.raises(ValueError, match="0 \\(CPU\\) or 1"):
        snips([1.0], [2], [1.0], one_hot([0]))
    assert np.isnan(snips([1.0], [0], [1.0], one_hot([1])).value)  # the target never takes the logged action


def test_row_weights():
    from placement.agents.offpolicy import mean_interval

    x = np.random.default_rng(1).normal(0.3, 1.0, 50)
    plain = mean_interval(x)
    equal = mean_interval(x, row_weights=np.full(50, 2.0))
    assert equal.value == pytest.approx(plain.value) and equal.lower == pytest.approx(plain.lower)
    recent = mean_interval(x, row_weights=0.5 ** (np.arange(50)[::-1] / 10))
    assert recent.effective_n < 50 and recent.upper - recent.lower > plain.upper - plain.lower
    with pytest.raises(ValueError, match="row_weights"):
        mean_interval(x, row_weights=np.zeros(50))
