"""The timing protocol (paper B): trimmed mean, median, IQR, CV; repeats, warm-up, sync."""

from __future__ import annotations

import math

import pytest

from placement.lab.timing import TimingSettings, time_step, trimmed_stats


def test_trimmed_stats_drops_fastest_and_slowest_and_keeps_spread():
    s = trimmed_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.trimmed_mean_s == pytest.approx(3.0)  # (2 + 3 + 4) / 3
    assert s.kept == 3 and s.repeats == 5
    assert s.median_s == 3.0
    assert s.iqr_s == pytest.approx(4.0 - 2.0)  # numpy-style quartiles of 1,2,3,4,100
    assert s.cv == pytest.approx(math.sqrt(2 / 3) / 3.0)  # population std of 2,3,4 over their mean
    assert (s.min_s, s.max_s) == (1.0, 100.0)


def test_trimmed_stats_small_samples_and_steps_per_repeat():
    assert trimmed_stats([2.0, 4.0]).trimmed_mean_s == 3.0  # fewer than 3: nothing dropped
    one = trimmed_stats([0.5], steps_per_repeat=10)
    assert one.cv == 0.0 and one.steps_kept == 10 and one.time_total_s == pytest.approx(5.0)


@pytest.mark.parametrize("times", [[], [1.0, -1.0, 2.0], [1.0, float("nan"), 2.0], [float("inf")]])
def test_trimmed_stats_rejects_bad_times(times):
    with pytest.raises(ValueError):
        trimmed_stats(times)


@pytest.mark.parametrize(
    "kwargs",
    [{"min_repeats": 2}, {"floor_repeats": 2}, {"floor_repeats": 9, "min_repeats": 7}, {"max_repeats": 3},
     {"min_time_s": -1.0}, {"max_time_s": float("nan")}, {"warmup_steps": -1}],
)
def test_settings_validate(kwargs):
    with pytest.raises(ValueError):
        TimingSettings(**kwargs)


class FakeClock:
    """A clock that only moves when the measured step runs (deterministic timing)."""

    def __init__(self, step_s: float) -> None:
        self.now = 0.0
        self.step_s = step_s
        self.steps = 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.step_s
        self.steps += 1


def test_time_step_batches_fast_steps_and_syncs_every_repeat():
    clock = FakeClock(0.001)
    syncs = []
    opened = []
    settings = TimingSettings(warmup_steps=2, warmup_min_s=0.0, min_repeats=7, min_repeat_s=0.01, min_time_s=0.0)
    stats = time_step(clock.step, settings, sync=lambda: syncs.append(clock.now),
                      on_window_start=lambda: opened.append(clock.steps), clock=clock)
    assert stats.steps_per_repeat == 10  # 10 ms per repeat of 1 ms steps
    assert stats.trimmed_mean_s == pytest.approx(0.001)
    assert stats.cv == pytest.approx(0.0, abs=1e-9)
    assert stats.repeats == 7 and stats.warmup_steps == 2
    assert opened == [2]  # the energy window opens once, after warm-up
    assert len(syncs) >= 2 * stats.repeats  # before and after each repeat
    assert stats.extra["first_step_s"] == pytest.approx(0.001)


def test_time_step_waits_for_the_meter_window():
    clock = FakeClock(0.05)
    asked = []

    def can_end(elapsed: float) -> bool:
        asked.append(elapsed)
        return elapsed >= 1.0

    settings = TimingSettings(warmup_steps=1, warmup_min_s=0.0, min_repeats=3, floor_repeats=3, min_time_s=0.0)
    stats = time_step(clock.step, settings, window_can_end=can_end, clock=clock)
    assert stats.repeats == 20  # 20 x 50 ms before the meter agrees
    assert asked[-1] >= 1.0 and all(a < 1.0 for a in asked[:-1])


def test_slow_step_stops_at_floor_repeats_after_max_time():
    clock = FakeClock(1.0)
    settings = TimingSettings(warmup_steps=2, warmup_min_s=0.0, min_repeats=7, floor_repeats=5, max_time_s=3.0)
    stats = time_step(clock.step, settings, clock=clock)
    assert stats.repeats == 5
    assert stats.warmup_steps == 1  # a 1 s step stops warming up past max_time/4
    assert stats.kept == 3


def test_time_step_on_a_real_function():
    total = []
    stats = time_step(lambda: total.append(sum(range(2000))), TimingSettings(min_time_s=0.02, max_time_s=2.0))
    assert stats.trimmed_mean_s > 0 and stats.repeats >= 7 and len(total) >= stats.repeats
