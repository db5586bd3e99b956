"""Target offsets (placement.serve.learning.offsets): a change of the device shows within a few outcomes; a
lying minority does not move them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from placement.serve.learning.offsets import (
    MIN_SHIFT,
    RECENT_OUTCOMES,
    TARGET_HISTORY,
    TARGET_MIN_OUTCOMES,
    offset_level,
)


def test_stable_device_uses_the_whole_history():
    rng = np.random.default_rng(0)
    values = list(rng.normal(0.1, 0.3, 120))
    level, n = offset_level(values)
    assert n == 120 and level == pytest.approx(float(np.median(values)))


def test_a_3x_slowdown_shows_within_the_recent_window():
    rng = np.random.default_rng(1)
    before = list(rng.normal(0.0, 0.2, 150))
    drifted = list(rng.normal(math.log(3.0), 0.2, 40))
    first = None
    for k in range(1, len(drifted) + 1):
        level, n = offset_level(before + drifted[:k])
        if level > 0.8 * math.log(3.0):
            first = k
            break
    # the whole-history median would need > 150 drifted outcomes; the recent window sees it within its length
    assert first is not None and first <= RECENT_OUTCOMES, first
    level, n = offset_level(before + drifted)
    assert abs(n - len(drifted)) <= 3 and level == pytest.approx(math.log(3.0), abs=0.2)  # since the change


def test_a_change_stays_seen_while_the_history_fills():
    """No hand-off dip: from detection until the drifted outcomes fill the whole history window."""
    rng = np.random.default_rng(3)
    values = list(rng.normal(0.0, 0.2, 200)) + list(rng.normal(math.log(3.0), 0.2, 260))
    levels = [offset_level(values[max(0, k - TARGET_HISTORY):k])[0] for k in range(200 + RECENT_OUTCOMES, len(values), 2)]
    assert min(levels) > 0.8 * math.log(3.0), min(levels)


@pytest.mark.parametrize("spread", [0.25, 0.6])
@pytest.mark.parametrize("lie", [3.0, 10.0, 1 / 3.0, 1 / 10.0])
def test_a_lying_fifth_does_not_move_the_offset(lie, spread):
    """20 % of outcomes lying consistently (one direction, 3x to 10x) among honest ones whose log
    residuals spread by 0.25 or 0.6 (the performance model's error across architectures)."""
    rng = np.random.default_rng(2)
    honest = rng.normal(0.0, spread, 400)
    lying = rng.random(400) < 0.2
    values = np.where(lying, honest + math.log(lie), honest)
    for k in range(TARGET_MIN_OUTCOMES, 400, 3):
        level, n = offset_level(list(values[: k + 1]))
        # never taken for a change of the device: the level stays the whole history's median
        assert n == k + 1 and level == pytest.approx(float(np.median(values[: k + 1]))), (k, level, n)
    if spread <= 0.25:
        assert abs(level) < MIN_SHIFT  # and the lying fifth moves the median by less than the marginal band
