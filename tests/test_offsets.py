"""Target offsets (serve.offsets): a change of the device shows within a few outcomes; a
lying minority does not move them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serve.offsets import MIN_SHIFT, RECENT_OUTCOMES, TARGET_MIN_OUTCOMES, offset_level


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
    assert n == RECENT_OUTCOMES and level == pytest.approx(math.log(3.0), abs=0.2)


@pytest.mark.parametrize("lie", [3.0, 10.0, 1 / 3.0, 1 / 10.0])
def test_a_lying_fifth_does_not_move_the_offset(lie):
    """20 % of outcomes lying consistently (one direction, 3x to 10x) among honest ones."""
    rng = np.random.default_rng(2)
    honest = rng.normal(0.0, 0.25, 400)
    lying = rng.random(400) < 0.2
    values = np.where(lying, honest + math.log(lie), honest)
    for k in range(TARGET_MIN_OUTCOMES, 400):
        level, n = offset_level(list(values[: k + 1]))
        # never taken for a change of the device: the level stays the whole history's median
        assert n == k + 1 and level == pytest.approx(float(np.median(values[: k + 1]))), (k, level, n)
    assert abs(level) < MIN_SHIFT  # and the lying fifth moves the median by less than the marginal band
