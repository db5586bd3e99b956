"""The timing protocol: warm-up, device synchronisation, repeats, trimmed mean (paper B).

Paper B times each configuration by repeated runs, drops the fastest and the slowest run
and averages the rest. :func:`trimmed_stats` does exactly that and also keeps the median,
the inter-quartile range and the coefficient of variation (CV, population standard
deviation over mean) of the kept repeats; the trace flags rows whose CV exceeds 5 %
(:data:`placement.core.trace.CV_LIMIT`).

:func:`time_step` runs the protocol on a callable: warm-up steps, then repeats of ``k``
steps each, ``k`` chosen from the warm-up so that one repeat lasts at least
``min_repeat_s`` (a microsecond-scale step is timed over many steps, as ``timeit`` does,
so timer and launch jitter do not dominate). The device is synchronised before the clock
is read at both ends of every repeat (``torch.cuda.synchronize`` on a GPU). Repeats go on
until at least ``min_repeats`` ran and ``min_time_s`` passed, and also until
``window_can_end`` (an energy meter's "a counter tick has passed") says yes; a slow step
stops at ``floor_repeats`` once ``max_time_s`` has passed. All times are wall-clock seconds from :func:`time.perf_counter`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TimingStats:
    """Per-step statistics of one timed configuration (seconds per step = per batch).

    ``repeat_times_s`` are the raw repeats (each ``steps_per_repeat`` steps, divided by
    it); ``kept`` of them survive trimming. ``time_total_s`` is the summed wall time of
    the kept repeats, covering ``kept * steps_per_repeat`` steps.
    """

    repeat_times_s: tuple[float, ...]
    steps_per_repeat: int
    trimmed_mean_s: float
    median_s: float
    iqr_s: float
    cv: float
    kept: int
    min_s: float
    max_s: float
    warmup_steps: int = 0
    elapsed_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    """``first_step_s``: the first warm-up step (cold: allocation, kernel selection)."""

    @property
    def repeats(self) -> int:
        """Number of timed repeats (before trimming)."""
        return len(self.repeat_times_s)

    @property
    def steps_kept(self) -> int:
        """Steps covered by the kept repeats."""
        return self.kept * self.steps_per_repeat

    @property
    def time_total_s(self) -> float:
        """Wall time of the kept repeats, s: trimmed mean per step x steps kept."""
        return self.trimmed_mean_s * self.steps_kept


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def trimmed_stats(times_s: Sequence[float], steps_per_repeat: int = 1, warmup_steps: int = 0,
                  elapsed_s: float = 0.0) -> TimingStats:
    """Paper B's protocol on per-step times: drop the fastest and the slowest, average the rest.

    With fewer than 3 repeats nothing is dropped. Median and IQR are over all repeats;
    the CV is over the kept repeats (0 for a single repeat).
    """
    values = [float(t) for t in times_s]
    if not values:
        raise ValueError("trimmed_stats needs at least one timed repeat")
    if any(not math.isfinite(t) or t < 0 for t in values):
        raise ValueError(f"repeat times must be finite and >= 0 seconds, got {values}")
    if steps_per_repeat < 1:
        raise ValueError(f"steps_per_repeat must be >= 1, got {steps_per_repeat}")
    ordered = sorted(values)
    kept = ordered[1:-1] if len(ordered) >= 3 else ordered
    mean = statistics.fmean(kept)
    cv = statistics.pstdev(kept) / mean if len(kept) > 1 and mean > 0 else 0.0
    return TimingStats(
        repeat_times_s=tuple(values),
        steps_per_repeat=steps_per_repeat,
        trimmed_mean_s=mean,
        median_s=statistics.median(ordered),
        iqr_s=_quantile(ordered, 0.75) - _quantile(ordered, 0.25),
        cv=cv,
        kept=len(kept),
        min_s=ordered[0],
        max_s=ordered[-1],
        warmup_steps=warmup_steps,
        elapsed_s=elapsed_s,
    )


def _no_sync() -> None:
    return None


@dataclass(frozen=True)
class TimingSettings:
    """Knobs of the protocol (seconds). Defaults suit a CPU row; GPU rows with an energy
    counter raise ``min_time_s`` to the meter's minimum window (2 s for NVML)."""

    warmup_steps: int = 2
    warmup_min_s: float = 0.05
    min_repeats: int = 7
    floor_repeats: int = 5
    max_repeats: int = 500
    min_repeat_s: float = 0.01
    min_time_s: float = 0.2
    max_time_s: float = 30.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.min_repeats < 3:
            raise ValueError(f"min_repeats must be >= 3 (the protocol drops two), got {self.min_repeats}")
        if not 3 <= self.floor_repeats <= self.min_repeats:
            raise ValueError(f"floor_repeats must be in [3, min_repeats={self.min_repeats}], got {self.floor_repeats}")
        if self.max_repeats < self.min_repeats:
            raise ValueError(f"max_repeats ({self.max_repeats}) must be >= min_repeats ({self.min_repeats})")
        for name in ("warmup_min_s", "min_repeat_s", "min_time_s", "max_time_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")


def time_step(
    step: Callable[[], object],
    settings: TimingSettings | None = None,
    sync: Callable[[], object] = _no_sync,
    window_can_end: Callable[[float], bool] | None = None,
    on_window_start: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TimingStats:
    """Time ``step`` by the protocol (see the module docstring); returns per-step statistics.

    ``on_window_start`` is called once, after warm-up and before the first timed repeat
    (an energy meter opens its window there); ``window_can_end(elapsed_s)`` is asked after
    each repeat once the other stopping rules allow stopping.
    """
    s = settings or TimingSettings()
    started = clock()
    # warm-up: at least warmup_steps, and at least warmup_min_s of work
    warm = 0
    sync()
    t0 = clock()
    last_step_s = 0.0
    first_step_s = math.nan
    while warm < s.warmup_steps or (clock() - t0 < s.warmup_min_s and warm < 1000):
        a = clock()
        step()
        sync()
        last_step_s = clock() - a
        if warm == 0:
            first_step_s = last_step_s
        warm += 1
        if warm >= 1 and clock() - started > s.max_time_s / 4:
            break
    per_step = last_step_s if warm else 0.0
    k = 1 if per_step <= 0 or per_step >= s.min_repeat_s else max(1, math.ceil(s.min_repeat_s / per_step))
    if on_window_start is not None:
        on_window_start()
    times: list[float] = []
    window_start = clock()
    while True:
        sync()
        a = clock()
        for _ in range(k):
            step()
        sync()
        times.append((clock() - a) / k)
        elapsed = clock() - window_start
        enough = len(times) >= s.min_repeats and elapsed >= s.min_time_s
        if len(times) >= s.max_repeats or (len(times) >= s.floor_repeats and clock() - started >= s.max_time_s):
            if window_can_end is None or window_can_end(elapsed):
                break
            if elapsed > s.max_time_s + 10.0:  # a meter that never ticks: give up waiting
                break
            continue
        if enough and (window_can_end is None or window_can_end(elapsed)):
            break
    stats = trimmed_stats(times, steps_per_repeat=k, warmup_steps=warm, elapsed_s=clock() - started)
    if warm:
        stats.extra["first_step_s"] = first_step_s
    return stats
