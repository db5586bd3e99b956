"""``placement/DevicePlacement-v0``: place ML jobs on CPU or GPU (and set edge knobs).

The action encoding (:data:`CORE_GRID`, :data:`CAP_GRID`, :func:`decode_action`,
:func:`encode_decision`) lives here beside the environment so that every policy, the
service and the evaluation decode actions the same way.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import pandas as pd
from gymnasium import spaces

from placement.core.catalogue import default_catalogue
from placement.core.decision import GROW, GpuMemCap, PlacementDecision
from placement.core.hardware import HardwareTarget
from placement.core.outcome import CPU, GPU, as_device, device_index
from placement.core.threshold import (
    MARGIN_CAP,
    Labels,
    Thresholds,
    joint_threshold,
    placement_reward,
)
from placement.core.trace import cap_from_column, cap_to_column
from placement.core.version import code_version
from placement.envs.job_source import (
    JobBlock,
    JobSource,
    KnobTable,
    ModelJobSource,
    TraceJobSource,
)
from placement.model.features import FEATURE_NAMES, N_FEATURES, feature_matrix

ENV_ID = "placement/DevicePlacement-v0"

CORE_GRID: tuple[int, ...] = (1, 2, 4, 6, 8, 12)
"""Core counts of the core levels, clipped to the target's cores (paper B: 4, 6 and 12-core
Jetsons; gains flatten from about 4 cores)."""

CAP_GRID: tuple[float | str, ...] = (0.25, 0.5, 0.75, 1.0, GROW)
"""GPU memory cap levels: fractions of the target's GPU memory (``floor(f * gpu_mem_mib)``
MiB), and ``"grow"`` (no cap; paper B's ``mem_grow``) as the last level."""

N_CORE_LEVELS = len(CORE_GRID)
N_CAP_LEVELS = len(CAP_GRID)
DEFAULT_CORE_LEVEL = N_CORE_LEVELS - 1
DEFAULT_CAP_LEVEL = N_CAP_LEVELS - 1
N_KNOB_ACTIONS = 2 * N_CORE_LEVELS * N_CAP_LEVELS

KNOB_CAP = 2.0
"""Largest knob penalty (natural-log units: e**2 = 7.4x worse than the best knobs)."""

FEATURE_BOUND = 64.0
"""Feature entries of the observation are clipped to +-FEATURE_BOUND (the Box bounds);
real features stay within about -12..25."""

CONTENTION_EXTRAS: tuple[str, ...] = (
    "log10_gpu_wait_s",
    "gpu_queue_len",
    "log10_job_samples",
    "log10_mean_interarrival_s",
)
CONTENTION_LOW = np.array([0.0, 0.0, 0.0, -9.0], dtype=np.float32)
CONTENTION_HIGH_FIXED = np.array([16.0, np.nan, 16.0, 12.0], dtype=np.float32)  # queue bound = jobs/episode


# --------------------------------------------------------------------------------------
# Action encoding
# --------------------------------------------------------------------------------------
def core_levels(target: HardwareTarget) -> tuple[int, ...]:
    """Core count of each core level on ``target`` (``CORE_GRID`` clipped to its cores)."""
    return tuple(max(1, min(c, target.cpu_cores)) for c in CORE_GRID)


def cap_levels(target: HardwareTarget) -> tuple[GpuMemCap, ...]:
    """GPU memory cap of each cap level on ``target``, MiB or ``"grow"`` (``"grow"`` for
    every level on a target without a GPU)."""
    if not target.has_gpu:
        return tuple(GROW for _ in CAP_GRID)
    return tuple(GROW if f == GROW else max(1, int(float(f) * target.gpu_mem_mib)) for f in CAP_GRID)


def targets_use_knobs(targets: Sequence[HardwareTarget]) -> bool:
    """Whether the action space carries knob levels: any target is edge."""
    return any(t.is_edge for t in targets)


def action_space_for(targets: Sequence[HardwareTarget]) -> spaces.Space[Any]:
    """``MultiDiscrete([2, N_CORE_LEVELS, N_CAP_LEVELS])`` if any target is edge, else ``Discrete(2)``."""
    if targets_use_knobs(targets):
        return spaces.MultiDiscrete([2, N_CORE_LEVELS, N_CAP_LEVELS])
    return spaces.Discrete(2)


def _parse_action(action: Any) -> tuple[int, int, int]:
    """``(device, core_level, cap_level)``; a scalar action means default knob levels."""
    arr = np.asarray(action)
    if arr.dtype.kind not in "iub" and not (arr.dtype.kind == "f" and np.all(np.isfinite(arr))):
        raise ValueError(f"action must be integers: 0/1 or [device, core_level, cap_level], got {action!r}")
    if arr.ndim == 0 or arr.size == 1:
        value = arr.reshape(-1)[0]
        if not float(value).is_integer() or int(value) not in (CPU, GPU):
            raise ValueError(f"action must be 0 (CPU) or 1 (GPU), got {action!r}")
        return int(value), DEFAULT_CORE_LEVEL, DEFAULT_CAP_LEVEL
    if arr.shape != (3,):
        raise ValueError(
            f"action must be 0/1 or [device, core_level, cap_level] (shape (3,)), got shape {arr.shape}"
        )
    parts = arr.tolist()
    limits = (2, N_CORE_LEVELS, N_CAP_LEVELS)
    names = ("device", "core_level", "cap_level")
    for name, value, limit in zip(names, parts, limits, strict=True):
        if not float(value).is_integer() or not 0 <= int(value) < limit:
            raise ValueError(f"action {name} must be an integer in 0..{limit - 1}, got {value!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def decode_action(action: Any, target: HardwareTarget) -> PlacementDecision:
    """The :class:`~placement.core.decision.PlacementDecision` an action stands for on ``target``.

    ``action``: ``0``/``1`` (``Discrete(2)``: CPU/GPU at default knobs) or
    ``[device, core_level, cap_level]`` (``MultiDiscrete``). On server and desktop targets
    the knob levels are ignored (all cores, ``"grow"``); on edge targets the core level
    indexes :func:`core_levels` and the cap level :func:`cap_levels`. A CPU placement
    carries no cap (``"grow"``). A GPU action on a target without a GPU decodes to
    ``device="gpu"`` faithfully (the environment penalises it as infeasible).
    """
    device, core_level, cap_level = _parse_action(action)
    if not target.is_edge:
        core_level, cap_level = DEFAULT_CORE_LEVEL, DEFAULT_CAP_LEVEL
    cores = target.cpu_cores if core_level == DEFAULT_CORE_LEVEL and not target.is_edge else core_levels(target)[core_level]
    cap = cap_levels(target)[cap_level] if device == GPU else GROW
    return PlacementDecision(device=as_device(device), cpu_cores=cores, gpu_mem_cap=cap)


def encode_decision(decision: PlacementDecision, target: HardwareTarget, *, knobs: bool) -> int | npt.NDArray[np.int64]:
    """The action for ``decision`` on ``target``: an ``int`` when ``knobs`` is false
    (``Discrete(2)``), else ``[device, core_level, cap_level]`` with the nearest levels
    (cores: closest count, ties to more; cap: closest MiB in log scale, ``"grow"`` exact).
    Inverse of :func:`decode_action` on the grid."""
    device = device_index(decision.device)
    if not knobs:
        return device
    if not target.is_edge:
        return np.array([device, DEFAULT_CORE_LEVEL, DEFAULT_CAP_LEVEL], dtype=np.int64)
    counts = core_levels(target)
    core_level = min(range(N_CORE_LEVELS), key=lambda i: (abs(counts[i] - decision.cpu_cores), -counts[i], i))
    cap_level = DEFAULT_CAP_LEVEL
    mib = decision.gpu_mem_cap_mib
    if device == GPU and mib is not None and target.has_gpu:
        caps = cap_levels(target)
        explicit = [i for i, c in enumerate(caps) if c != GROW]
        cap_level = min(explicit, key=lambda i: abs(math.log(float(caps[i])) - math.log(mib)))
    return np.array([device, core_level, cap_level], dtype=np.int64)


def knob_table(targets: Sequence[HardwareTarget], knobs: bool) -> KnobTable:
    """Settings the sources evaluate per target: the ``K`` actions (flat index
    ``device * N_CORE_LEVELS * N_CAP_LEVELS + core_level * N_CAP_LEVELS + cap_level``, or
    ``device`` when ``knobs`` is false) followed by the two default-knob settings (CPU,
    GPU) that label the job."""
    rows_dev, rows_cores, rows_cap = [], [], []
    for target in targets:
        dev, cores, cap = [], [], []
        actions: list[Any] = (
            [(d, c, m) for d in (CPU, GPU) for c in range(N_CORE_LEVELS) for m in range(N_CAP_LEVELS)]
            if knobs
            else [CPU, GPU]
        )
        for action in [*actions, CPU, GPU]:
            decision = decode_action(action, target)
            dev.append(device_index(decision.device))
            cores.append(decision.cpu_cores)
            cap.append(cap_to_column(decision.gpu_mem_cap))  # None: NaN in the float table
        rows_dev.append(dev)
        rows_cores.append(cores)
        rows_cap.append(cap)
    return KnobTable(
        target_ids=tuple(t.id for t in targets),
        device=np.asarray(rows_dev, dtype=np.int64),
        cpu_cores=np.asarray(rows_cores, dtype=np.int64),
        gpu_mem_cap_mib=np.asarray(rows_cap, dtype=np.float64),
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Label(NamedTuple):
    """One job's joint-threshold label (:func:`placement.core.threshold.joint_threshold`)."""

    gpu: bool
    margin: float
    reason: str
    energy_unknown: bool


@dataclass(frozen=True, slots=True)
class _Block:
    """A drawn block of ``n`` jobs with everything a step reads, computed at once
    (:meth:`DevicePlacementEnv._prepare`).

    The outcome arrays (time in s per sample, energy in J per sample, feasibility, energy
    method, infeasible reason, exact knobs) have shape ``(n, K + 2)``: the ``K`` actions (flat
    index, see :func:`knob_table`), then the default-knob CPU and GPU settings that label the
    job, at :attr:`cpu_ref` and :attr:`gpu_ref`. Rewards, knob terms and overrides have shape
    ``(n, K)``. The labels are also kept as lists (cheap to index one job at a time).
    """

    n: int
    n_actions: int
    features: npt.NDArray[np.float32]
    target_index: npt.NDArray[np.int64]
    target_id: list[str]
    job_id: list[str]
    n_samples: npt.NDArray[np.float64]
    time_per_sample_s: npt.NDArray[np.float64]
    energy_per_sample_j: npt.NDArray[np.float64]
    feasible: npt.NDArray[np.bool_]
    energy_method: npt.NDArray[np.object_]
    infeasible_reason: npt.NDArray[np.object_]
    knobs_exact: npt.NDArray[np.bool_]
    labels: Labels
    label_gpu: list[bool]
    margin: list[float]
    label_reason: list[str]
    energy_unknown: list[bool]
    rewards: npt.NDArray[np.float64]
    knob_term: npt.NDArray[np.float64]
    override: npt.NDArray[np.bool_]
    penalty: npt.NDArray[np.float64]
    edge: npt.NDArray[np.bool_]
    oracle: list[int]
    oracle_reward: list[float]

    @property
    def cpu_ref(self) -> int:
        """Column of the default-knob CPU setting in the outcome arrays."""
        return self.n_actions

    @property
    def gpu_ref(self) -> int:
        """Column of the default-knob GPU setting in the outcome arrays."""
        return self.n_actions + 1

    def label(self, i: int) -> _Label:
        """Job ``i``'s label on an idle GPU."""
        return _Label(self.label_gpu[i], self.margin[i], self.label_reason[i], self.energy_unknown[i])


# --------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------
class DevicePlacementEnv(gym.Env[npt.NDArray[np.float32], Any]):
    r"""Place one ML job per step on CPU or GPU (and, on edge targets, cores and GPU memory cap).

    ## Description

    Each step is one ML job to place on its hardware target: CPU or GPU, and on edge
    targets (Jetson Nano / Orin Nano / AGX Orin) also how many CPU cores and which GPU
    memory cap (paper B). The reward is paper A's joint threshold: the GPU is a *valid
    acceleration* only when it is >= ``T_t`` (2.0) times faster than the CPU and costs
    <= ``T_e`` (1.5) times the CPU's per-sample energy, host CPU power counted during GPU
    runs (:mod:`placement.core.threshold`). Jobs come from a logged trace or from the
    performance model with a job generator; targets are drawn from a configured set so
    one policy learns across hardware. In *contention mode* jobs arrive over time and
    queue for one GPU, so earlier placements change later ones.

    ## Action Space

    * No edge target configured: ``Discrete(2)`` -- ``0`` = CPU, ``1`` = GPU, default knobs
      (all cores, no GPU memory cap).
    * Any edge target configured: ``MultiDiscrete([2, 6, 5])`` = ``[device, core_level,
      cap_level]``:

      | part       | values | meaning                                                         |
      |------------|--------|-----------------------------------------------------------------|
      | device     | 0, 1   | CPU, GPU                                                        |
      | core_level | 0..5   | cores ``min(CORE_GRID[i], target cores)``, ``CORE_GRID = (1, 2, 4, 6, 8, 12)`` |
      | cap_level  | 0..4   | GPU memory cap ``floor(f * GPU MiB)`` for ``f`` in ``(0.25, 0.5, 0.75, 1.0)``, 4 = ``"grow"`` |

      The knob parts are ignored on server/desktop targets (default knobs) and the cap on
      CPU placements. :func:`decode_action` turns an action into a
      :class:`~placement.core.decision.PlacementDecision`; :func:`encode_decision` inverts it.

    ## Observation Space

    ``Box(float32)``: the *raw* feature vector of :func:`placement.model.features.feature_matrix`
    for the job on its target at default knobs (``FEATURE_NAMES`` order; policies read
    ``obs[:N_FEATURES]``), then, in contention mode only, 4 extras. Entries are clipped
    to the bounds (reached only by absurd inputs).

    | Index | Name                          | Unit                                   | Min  | Max  |
    |-------|-------------------------------|----------------------------------------|------|------|
    | 0     | log10_cpu_gflops              | log10 GFLOP/s                          | -64  | 64   |
    | 1     | log10_gpu_gflops              | log10 GFLOP/s (0 without GPU)          | -64  | 64   |
    | 2     | log10_gpu_mem_gib             | log10 GiB (-2 without GPU)             | -64  | 64   |
    | 3     | log10_ram_gib                 | log10 GiB                              | -64  | 64   |
    | 4     | log10_cpu_tdp_w               | log10 W                                | -64  | 64   |
    | 5     | log10_gpu_tdp_w               | log10 W (0 without GPU)                | -64  | 64   |
    | 6     | log10_flops_per_batch         | log10 FLOP                             | -64  | 64   |
    | 7     | log10_batch_size              | log10 samples                          | -64  | 64   |
    | 8     | log10_param_count             | log10 parameters                       | -64  | 64   |
    | 9     | log10_input_elems_per_sample  | log10 elements                         | -64  | 64   |
    | 10    | log10_input_bytes_per_sample  | log10 bytes                            | -64  | 64   |
    | 11    | log10_flops_per_sample        | log10 FLOP                             | -64  | 64   |
    | 12    | log10_cpu_time_est_s          | log10 s per batch (FLOPs / peak)       | -64  | 64   |
    | 13    | log10_gpu_time_est_s          | log10 s per batch (3 without GPU)      | -64  | 64   |
    | 14    | log10_est_speedup             | log10 ratio (-3 without GPU)           | -64  | 64   |
    | 15    | log10_transfer_time_est_s     | log10 s per batch over the host link   | -64  | 64   |
    | 16    | log10_gpu_working_set_frac    | log10 (working set / GPU memory)       | -64  | 64   |
    | 17    | cpu_cores_frac                | fraction of the target's cores (1)     | -64  | 64   |
    | 18    | log10_cpu_cores               | log10 cores                            | -64  | 64   |
    | 19-22 | has_gpu, is_edge, unified_memory, mode_train | 0/1                     | -64  | 64   |
    | 23-29 | family_mlp ... family_other   | one-hot 0/1 (``placement.core.job.FAMILIES``)| -64  | 64   |
    | 30    | log10_gpu_wait_s *            | log10(1 + s) the GPU is busy on arrival| 0    | 16   |
    | 31    | gpu_queue_len *               | jobs running or waiting on the GPU     | 0    | ``jobs_per_episode`` |
    | 32    | log10_job_samples *           | log10 samples in the job               | 0    | 16   |
    | 33    | log10_mean_interarrival_s *   | log10 s, ``1 / arrival rate``          | -9   | 12   |

    ``*`` contention mode only (shape ``(34,)``; otherwise ``(30,)``). ``N_FEATURES`` and
    ``FEATURE_NAMES`` are authoritative; ``env.unwrapped.observation_names`` lists all.

    ## Rewards

    Dimensionless. Labels come from :func:`placement.core.threshold.joint_threshold` on the
    job's CPU and GPU outcome at default knobs, with the ``thresholds`` argument; the
    device part is :func:`placement.core.threshold.placement_reward`:
    ``+(correct_bonus + min(|margin|, margin_cap))`` when the device matches the label and
    the negative when not, ``margin`` being the binding ratio's log slack (how much time
    or energy was won or lost). On edge targets (knob actions) a knob term is added:
    ``-knob_weight * min(s - s_best, knob_cap)`` with ``s = ln(time per sample) +
    knob_energy_weight * ln(energy per sample)`` at the chosen knobs (the log
    energy-delay product for weight 1; time alone where the device's energy is unknown)
    and ``s_best`` its minimum over the chosen device's feasible knob settings. An
    infeasible choice (GPU out of memory under the cap, GPU on a target without one, a job
    that cannot run on the CPU) gets the capped penalty ``-(correct_bonus + margin_cap
    [+ knob_weight * knob_cap on edge])`` -- unless no setting of the job is feasible, when
    the label's reward stands. Rewards lie in ``[-(correct_bonus + margin_cap + knob_weight
    * knob_cap), correct_bonus + margin_cap]``; the Oracle (``oracle_action()``) earns the
    maximum for every job.

    *Contention:* the joint threshold is judged on time *including the GPU queue wait*
    (GPU time per sample + wait / samples; waiting draws no energy), so a GPU that is a
    valid acceleration when idle can stop being one when busy. The knob term ignores the
    wait.

    ``info`` after each step: ``job_id``, ``target_id``, the decision (``device``,
    ``cpu_cores``, ``gpu_mem_cap_mib`` -- ``None`` = grow), ``feasible``,
    ``infeasible_reason``, ``wait_s``, ``time_s`` (job total incl. wait) and
    ``time_per_sample_s``, ``energy_j`` and ``energy_per_sample_j`` (``None`` when
    unknown) with ``energy_method`` (``measured``/``modelled``/``unknown``),
    ``knobs_exact`` (outcome logged/predicted at exactly these knobs, not borrowed from the
    nearest logged setting), the label (``label_gpu``, ``margin``, ``reason``,
    ``energy_unknown``), ``correct`` (device matches the label), ``oracle_action``,
    ``oracle_reward`` and ``regret`` (``oracle_reward - reward``).

    ## Starting State

    Plain mode: jobs are drawn in blocks of ``block_size`` (each job's target uniformly
    from the configured set); episodes consume the block in order and a new block is
    drawn when it runs out. ``reset(seed=...)`` discards the block. Contention mode: each
    ``reset`` draws one target and ``jobs_per_episode`` jobs for it, Poisson arrivals
    (rate ``arrival_rate_per_s``) and an idle GPU.

    ## Episode End

    Truncation after ``jobs_per_episode`` jobs. There is no termination. The final
    observation of a contention episode repeats the last job's features with the queue
    state after its placement.

    ## Arguments

    ```python
    >>> import gymnasium as gym, envs
    >>> env = gym.make("placement/DevicePlacement-v0", source="paper")
    >>> obs, info = env.reset(seed=0)
    ```

    | Parameter            | Type                          | Default   | Description |
    |----------------------|-------------------------------|-----------|-------------|
    | `source`             | JobSource, DataFrame, path, `"model"`, `"paper"` | `"model"` | Where jobs come from: a trace file or DataFrame (trace rows or `pair_outcomes` rows), the performance model + job generator, or paper A's Table 2. |
    | `targets`            | ids or HardwareTargets        | source's  | The configured target set (catalogue ids for the model source; must appear in a trace). |
    | `thresholds`         | Thresholds or dict            | T_t=2, T_e=1.5 | Joint-threshold parameters. |
    | `contention`         | bool                          | False     | Poisson arrivals and one FIFO GPU queue. |
    | `arrival_rate_per_s` | float or None                 | None      | Jobs per second; None = `gpu_load` / mean default-knob GPU job time of the episode's jobs. |
    | `gpu_load`           | float                         | 1.0       | Offered GPU load if every job went to the GPU (used when the rate is None). |
    | `jobs_per_episode`   | int                           | 128       | Episode length (truncation). |
    | `block_size`         | int                           | 1024      | Jobs drawn per block in plain mode. |
    | `correct_bonus`      | float                         | 0.5       | See Rewards. |
    | `margin_cap`         | float                         | 2.0       | See Rewards. |
    | `knob_weight`        | float                         | 1.0       | Weight of the knob term (edge). |
    | `knob_energy_weight` | float                         | 1.0       | Energy exponent in the knob score. |
    | `knob_cap`           | float                         | 2.0       | Largest knob penalty before weighting. |
    | `render_mode`        | None or `"ansi"`              | None      | `"ansi"` renders the last placement as text; other names render nothing. |

    ``reset(options={"target_id": ...})`` fixes the episode's target (contention mode).
    Reproducibility: :meth:`provenance` records seed, thresholds, trace hash, hardware and
    code version.

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        source: JobSource | pd.DataFrame | str | Path | None = None,
        targets: Sequence[str | HardwareTarget] | None = None,
        thresholds: Thresholds | Mapping[str, Any] | None = None,
        *,
        contention: bool = False,
        arrival_rate_per_s: float | None = None,
        gpu_load: float = 1.0,
        jobs_per_episode: int = 128,
        block_size: int = 1024,
        correct_bonus: float = 0.5,
        margin_cap: float = MARGIN_CAP,
        knob_weight: float = 1.0,
        knob_energy_weight: float = 1.0,
        knob_cap: float = KNOB_CAP,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.thresholds = _thresholds(thresholds)
        self.contention = bool(contention)
        self.jobs_per_episode = _positive_int("jobs_per_episode", jobs_per_episode)
        self.block_size = _positive_int("block_size", block_size)
        self.arrival_rate_per_s = None if arrival_rate_per_s is None else _positive(
            "arrival_rate_per_s", arrival_rate_per_s, "jobs per second", upper=1e9
        )
        self.gpu_load = _positive("gpu_load", gpu_load, "offered GPU load, e.g. 0.8", upper=1e6)
        self.correct_bonus = _non_negative("correct_bonus", correct_bonus)
        self.margin_cap = _positive("margin_cap", margin_cap, "natural-log units, e.g. 2.0")
        self.knob_weight = _non_negative("knob_weight", knob_weight)
        self.knob_energy_weight = _non_negative("knob_energy_weight", knob_energy_weight)
        self.knob_cap = _positive("knob_cap", knob_cap, "natural-log units, e.g. 2.0")
        if render_mode is not None and not isinstance(render_mode, str):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        # other mode names (SB3's make_vec_env passes "rgb_array") are accepted and render nothing
        self.render_mode = render_mode

        self.source = _resolve_source(source, targets)
        self.targets: tuple[HardwareTarget, ...] = _resolve_targets(self.source, targets)
        self.knobs = targets_use_knobs(self.targets)
        self.action_space = action_space_for(self.targets)
        self.n_actions = N_KNOB_ACTIONS if self.knobs else 2
        self._knob_table = knob_table(self.targets, self.knobs)
        self._target_tables = [
            KnobTable(
                target_ids=(t.id,),
                device=self._knob_table.device[i : i + 1],
                cpu_cores=self._knob_table.cpu_cores[i : i + 1],
                gpu_mem_cap_mib=self._knob_table.gpu_mem_cap_mib[i : i + 1],
            )
            for i, t in enumerate(self.targets)
        ]
        k = self.n_actions
        self._action_device = self._knob_table.device[0, :k].copy()
        self._action_is_gpu = self._action_device == GPU
        # per target, per action: decoded knobs for info (python lists: cheap to index)
        self._action_cores = self._knob_table.cpu_cores[:, :k].tolist()
        self._action_cap = [[cap_to_column(cap_from_column(c)) for c in row] for row in self._knob_table.gpu_mem_cap_mib[:, :k]]
        self._action_device_name = [as_device(d).value for d in self._action_device.tolist()]

        self.observation_names: tuple[str, ...] = FEATURE_NAMES + (CONTENTION_EXTRAS if self.contention else ())
        low = np.full(N_FEATURES, -FEATURE_BOUND, dtype=np.float32)
        high = np.full(N_FEATURES, FEATURE_BOUND, dtype=np.float32)
        if self.contention:
            extra_high = CONTENTION_HIGH_FIXED.copy()
            extra_high[1] = float(self.jobs_per_episode)
            low = np.concatenate([low, CONTENTION_LOW])
            high = np.concatenate([high, extra_high])
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self._obs_low, self._obs_high = low, high

        # reward-function sanity (raises on bad magnitudes)
        placement_reward(np.zeros(1, dtype=bool), _one_label(), correct_bonus=self.correct_bonus, margin_cap=self.margin_cap)

        self._seed: int | None = None
        self._block: _Block | None = None
        self._ptr = 0
        self._t = 0
        self._episode_open = False
        self._last: dict[str, Any] | None = None
        # contention state
        self._arrival_s: npt.NDArray[np.float64] = np.zeros(0)
        self._gpu_free_s = 0.0
        self._gpu_ends: deque[float] = deque()
        self._wait_s = 0.0
        self._cur_rewards: npt.NDArray[np.float64] = np.zeros(k)
        self._cur_label = _Label(False, 0.0, "", False)
        self._episode_rate = 0.0

    # ----------------------------------------------------------------------------------
    # blocks
    # ----------------------------------------------------------------------------------
    def _draw_block(self, n: int, target_index: int | None) -> None:
        if target_index is None:
            block = self.source.sample(n, self.np_random, self.targets, self._knob_table)
            tindex = block.target_index
        else:
            block = self.source.sample(n, self.np_random, [self.targets[target_index]], self._target_tables[target_index])
            tindex = np.full(len(block), target_index, dtype=np.int64)
        self._block = self._prepare(block, tindex)
        self._ptr = 0

    def _prepare(self, block: JobBlock, tindex: npt.NDArray[np.int64]) -> _Block:
        """Features, labels and the reward of every action for every job, vectorised."""
        n, k = len(block), self.n_actions
        cpu, gpu = k, k + 1  # the default-knob settings after the K actions (_Block.cpu_ref, gpu_ref)
        features = np.clip(feature_matrix(block.columns), -FEATURE_BOUND, FEATURE_BOUND).astype(np.float32)
        time, energy, feasible = block.time_per_sample_s, block.energy_per_sample_j, block.feasible
        labels = joint_threshold(
            time[:, cpu], time[:, gpu], energy[:, cpu], energy[:, gpu], feasible[:, cpu], feasible[:, gpu], self.thresholds
        )
        edge = np.asarray([t.is_edge for t in self.targets], dtype=bool)[tindex] & self.knobs
        knob_term = self._knob_term(time[:, :k], energy[:, :k], feasible[:, :k], edge)
        any_feasible = np.asarray(np.asarray(feasible[:, :k]).any(axis=1), dtype=bool)
        override = ~feasible[:, :k] & any_feasible[:, None]
        penalty = -(self.correct_bonus + self.margin_cap + np.where(edge, self.knob_weight * self.knob_cap, 0.0))
        rewards = self._device_rewards(labels) + knob_term
        rewards = np.where(override, penalty[:, None], rewards)
        oracle = self._oracle_index(rewards, edge)
        return _Block(
            n=n,
            n_actions=k,
            features=features,
            target_index=tindex,
            target_id=[self.targets[i].id for i in tindex.tolist()],
            job_id=[str(j) for j in block.job_id.tolist()],
            n_samples=block.n_samples,
            time_per_sample_s=time,
            energy_per_sample_j=energy,
            feasible=feasible,
            energy_method=block.energy_method,
            infeasible_reason=block.infeasible_reason,
            knobs_exact=block.knobs_exact,
            labels=labels,
            label_gpu=labels.gpu.tolist(),
            margin=labels.margin.tolist(),
            label_reason=labels.reason.tolist(),
            energy_unknown=labels.energy_unknown.tolist(),
            rewards=rewards,
            knob_term=knob_term,
            override=override,
            penalty=penalty,
            edge=edge,
            oracle=oracle.tolist(),
            oracle_reward=rewards[np.arange(n), oracle].tolist(),
        )

    def _oracle_index(self, rewards: npt.NDArray[np.float64], edge: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
        """Flat index of the best action per row. Ties (knob levels that change nothing)
        go to the default levels: all knob levels on non-edge targets, the cap on CPU."""
        oracle = np.argmax(rewards, axis=-1)
        if not self.knobs:
            return oracle
        device, rest = np.divmod(oracle, N_CORE_LEVELS * N_CAP_LEVELS)
        core, cap = np.divmod(rest, N_CAP_LEVELS)
        core = np.where(edge, core, DEFAULT_CORE_LEVEL)
        cap = np.where(edge & (device == GPU), cap, DEFAULT_CAP_LEVEL)
        return (device * N_CORE_LEVELS + core) * N_CAP_LEVELS + cap

    def _device_rewards(self, labels: Labels) -> npt.NDArray[np.float64]:
        """placement_reward of every action's device, shape ``(n, K)``."""
        chose = self._action_is_gpu[:, None]  # (K, 1) against labels (n,) -> (K, n)
        return np.asarray(
            placement_reward(chose, labels, correct_bonus=self.correct_bonus, margin_cap=self.margin_cap)
        ).T

    def _knob_term(
        self,
        time: npt.NDArray[np.float64],
        energy: npt.NDArray[np.float64],
        feasible: npt.NDArray[np.bool_],
        edge: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.float64]:
        """``-knob_weight * min(s - s_best, knob_cap)`` per action on edge rows, 0 elsewhere."""
        n, k = time.shape
        out = np.zeros((n, k))
        if not self.knobs or not edge.any():
            return out
        per_device = k // 2
        shape = (n, 2, per_device)
        t, e, f = time.reshape(shape), energy.reshape(shape), feasible.reshape(shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_t = np.log(t)
            log_e = np.log(e)
            energy_known = np.all(np.isfinite(log_e) | ~f, axis=2, keepdims=True)
            score = log_t + np.where(energy_known, self.knob_energy_weight * np.nan_to_num(log_e), 0.0)
            score = np.where(f & np.isfinite(score), score, np.inf)
            best = score.min(axis=2, keepdims=True)
            excess = np.nan_to_num(score - best, nan=self.knob_cap, posinf=self.knob_cap)
        term = -self.knob_weight * np.minimum(excess, self.knob_cap)
        return np.where(edge[:, None], term.reshape(n, k), 0.0)

    # ----------------------------------------------------------------------------------
    # gymnasium API
    # ----------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Start an episode: ``(observation, info)`` of its first job (``info``: job and target ids;
        in contention mode also the episode's arrival rate, jobs/s). A ``seed`` reseeds the job draws.
        ``options``: ``target_id`` (contention mode only) fixes the episode's target."""
        super().reset(seed=seed)
        if seed is not None:
            self._seed = int(seed)
            self._block = None
        options = options or {}
        unknown = set(options) - {"target_id"}
        if unknown:
            raise ValueError(f"reset options: unknown key(s) {', '.join(sorted(unknown))} (known: target_id)")
        self._t = 0
        self._episode_open = True
        self._last = None
        if self.contention:
            tidx = self._target_option(options.get("target_id"))
            self._draw_block(self.jobs_per_episode, tidx)
            self._start_queue()
        else:
            if options.get("target_id") is not None:
                raise ValueError("reset option target_id is for contention mode; pass targets=[...] instead")
            if self._block is None or self._ptr >= self._block.n:
                self._draw_block(self.block_size, None)
        obs = self._observe()
        block = self._blk()
        info: dict[str, Any] = {"job_id": block.job_id[self._ptr], "target_id": block.target_id[self._ptr]}
        if self.contention:
            info["arrival_rate_per_s"] = self._episode_rate
        return obs, info

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        """Place the current job by ``action`` (device, or device, core level and cap level on
        knobbed environments): ``(next observation, reward, False, truncated, info)``, truncated after
        ``jobs_per_episode`` jobs; ``info`` has the label, measured time (s) and energy (J), the Oracle's
        action and reward, and the regret."""
        if not self._episode_open:
            raise RuntimeError("call reset() before step() (and after an episode is truncated)")
        k = self._action_index(action)
        block = self._blk()
        i = self._ptr
        if self.contention:
            reward = float(self._cur_rewards[k])
            wait = self._wait_s
            label_gpu, margin, reason, unknown = self._cur_label
            oracle_k = self._contention_oracle(i)
            oracle_reward = float(self._cur_rewards[oracle_k])
        else:
            reward = float(block.rewards[i, k])
            wait = 0.0
            label_gpu, margin, reason, unknown = block.label(i)
            oracle_k = block.oracle[i]
            oracle_reward = block.oracle_reward[i]
        t = block.target_index[i]
        feasible = bool(block.feasible[i, k])
        is_gpu = bool(self._action_device[k] == GPU)
        samples = float(block.n_samples[i])
        per_sample = float(block.time_per_sample_s[i, k]) if feasible else math.nan
        e_per_sample = float(block.energy_per_sample_j[i, k]) if feasible else math.nan
        run_s = per_sample * samples
        if is_gpu and feasible:
            wait_s = wait
            if self.contention:
                self._enqueue_gpu(i, run_s)
        else:
            wait_s = 0.0
        info = {
            "job_id": block.job_id[i],
            "target_id": block.target_id[i],
            "device": self._action_device_name[k],
            "cpu_cores": self._action_cores[t][k],
            "gpu_mem_cap_mib": self._action_cap[t][k] if is_gpu else None,
            "feasible": feasible,
            "infeasible_reason": None if feasible else (block.infeasible_reason[i, k] or "infeasible"),
            "wait_s": wait_s,
            "time_s": _finite_or_none(run_s + wait_s),
            "time_per_sample_s": _finite_or_none(per_sample),
            "energy_j": _finite_or_none(e_per_sample * samples),
            "energy_per_sample_j": _finite_or_none(e_per_sample),
            "energy_method": str(block.energy_method[i, k]) if feasible and math.isfinite(e_per_sample) else "unknown",
            "knobs_exact": bool(block.knobs_exact[i, k]),
            "label_gpu": label_gpu,
            "margin": margin,
            "reason": reason,
            "energy_unknown": unknown,
            "correct": is_gpu == label_gpu,
            "oracle_action": self._action_of(oracle_k),
            "oracle_reward": oracle_reward,
            "regret": oracle_reward - reward,
        }
        self._last = info
        self._t += 1
        self._ptr += 1
        truncated = self._t >= self.jobs_per_episode
        if truncated:
            self._episode_open = False
        if self.contention:
            self._ptr = min(self._ptr, block.n - 1)
        elif self._ptr >= block.n:
            self._draw_block(self.block_size, None)
        obs = self._observe()
        return obs, reward, False, truncated, info

    def render(self) -> str | None:  # type: ignore[override]
        """With ``render_mode='ansi'``, one line describing the last placement and its outcome;
        ``None`` otherwise."""
        if self.render_mode != "ansi":
            return None
        if self._last is None:
            return "no placement yet"
        x = self._last
        return (
            f"{x['job_id']} on {x['target_id']}: {x['device']} cores={x['cpu_cores']} cap={x['gpu_mem_cap_mib'] or 'grow'}"
            f" label={'gpu' if x['label_gpu'] else 'cpu'} ({x['reason']}) time_s={x['time_s']} energy_j={x['energy_j']}"
            f" [{x['energy_method']}] regret={x['regret']:.3f}"
        )

    # ----------------------------------------------------------------------------------
    # observation, actions, contention queue
    # ----------------------------------------------------------------------------------
    def _observe(self) -> npt.NDArray[np.float32]:
        block = self._blk()
        i = self._ptr
        if not self.contention:
            return block.features[i].copy()
        arrival = float(self._arrival_s[i])
        ends = self._gpu_ends
        while ends and ends[0] <= arrival:
            ends.popleft()
        self._wait_s = max(0.0, self._gpu_free_s - arrival)
        samples = float(block.n_samples[i])
        extras = np.array(
            [math.log10(1.0 + self._wait_s), len(ends), math.log10(samples), math.log10(1.0 / self._episode_rate)],
            dtype=np.float32,
        )
        self._contention_rewards(i)
        obs = np.concatenate([block.features[i], extras])
        return np.clip(obs, self._obs_low, self._obs_high)

    def _contention_rewards(self, i: int) -> None:
        """Rewards of every action for job ``i`` given the current GPU wait."""
        block = self._blk()
        feasible = block.feasible
        cpu, gpu = block.cpu_ref, block.gpu_ref
        if self._wait_s <= 0.0 or not feasible[i, gpu]:
            self._cur_rewards = block.rewards[i]
            self._cur_label = block.label(i)
            return
        time, energy = block.time_per_sample_s, block.energy_per_sample_j
        waited_gpu_s = time[i, gpu] + self._wait_s / float(block.n_samples[i])
        labels = joint_threshold(
            time[i, cpu : cpu + 1], np.array([waited_gpu_s]), energy[i, cpu : cpu + 1], energy[i, gpu : gpu + 1],
            feasible[i, cpu : cpu + 1], feasible[i, gpu : gpu + 1], self.thresholds,
        )
        rewards = self._device_rewards(labels)[0] + block.knob_term[i]
        self._cur_rewards = np.where(block.override[i], block.penalty[i], rewards)
        self._cur_label = _Label(bool(labels.gpu[0]), float(labels.margin[0]), str(labels.reason[0]),
                                 bool(labels.energy_unknown[0]))

    def _contention_oracle(self, i: int) -> int:
        block = self._blk()
        return int(self._oracle_index(self._cur_rewards[None, :], block.edge[i : i + 1])[0])

    def _start_queue(self) -> None:
        block = self._blk()
        if self.arrival_rate_per_s is not None:
            rate = self.arrival_rate_per_s
        else:
            gpu_ok = block.feasible[:, block.gpu_ref]
            run_s = (block.time_per_sample_s[:, block.gpu_ref] * block.n_samples)[gpu_ok]
            if run_s.size == 0:  # no GPU job: calibrate on CPU time instead
                run_s = block.time_per_sample_s[:, block.cpu_ref] * block.n_samples
            mean_s = float(np.nanmean(run_s)) if np.isfinite(run_s).any() else 1.0
            rate = self.gpu_load / max(mean_s, 1e-9)
        self._episode_rate = float(min(max(rate, 1e-12), 1e9))
        gaps = self.np_random.exponential(1.0 / self._episode_rate, size=block.n)
        self._arrival_s = np.cumsum(gaps)
        self._gpu_free_s = 0.0
        self._gpu_ends = deque()
        self._wait_s = 0.0

    def _enqueue_gpu(self, i: int, run_s: float) -> None:
        start = float(self._arrival_s[i]) + self._wait_s
        self._gpu_free_s = start + run_s
        self._gpu_ends.append(self._gpu_free_s)

    def _target_option(self, target_id: Any) -> int:
        if target_id is None:
            return int(self.np_random.integers(len(self.targets)))
        ids = [t.id for t in self.targets]
        if target_id not in ids:
            raise ValueError(f"reset option target_id '{target_id}' is not a configured target ({', '.join(ids)})")
        return ids.index(target_id)

    def _action_index(self, action: Any) -> int:
        if self.knobs:
            if np.shape(action) != (3,):
                raise ValueError(
                    "this environment has edge targets: the action is [device, core_level, cap_level] "
                    f"(MultiDiscrete([2, {N_CORE_LEVELS}, {N_CAP_LEVELS}])), got {action!r}"
                )
            device, core_level, cap_level = _parse_action(action)
            return (device * N_CORE_LEVELS + core_level) * N_CAP_LEVELS + cap_level
        try:
            value = int(action)
        except (TypeError, ValueError):
            raise ValueError(f"action must be 0 (CPU) or 1 (GPU), got {action!r}") from None
        if value != action or value not in (CPU, GPU):
            raise ValueError(f"action must be 0 (CPU) or 1 (GPU), got {action!r}")
        return value

    def _action_of(self, k: int) -> int | npt.NDArray[np.int64]:
        if not self.knobs:
            return int(k)
        device, rest = divmod(int(k), N_CORE_LEVELS * N_CAP_LEVELS)
        core_level, cap_level = divmod(rest, N_CAP_LEVELS)
        return np.array([device, core_level, cap_level], dtype=np.int64)

    # ----------------------------------------------------------------------------------
    # public helpers for evaluation and training
    # ----------------------------------------------------------------------------------
    @property
    def current_target(self) -> HardwareTarget:
        """The target of the job the last observation describes."""
        block = self._blk()
        return self.targets[int(block.target_index[self._ptr])]

    def oracle_action(self) -> int | npt.NDArray[np.int64]:
        """The best action for the job at hand (label device, best knobs; wait-aware in
        contention mode)."""
        if self.contention:
            return self._action_of(self._contention_oracle(self._ptr))
        return self._action_of(self._blk().oracle[self._ptr])

    def action_rewards(self) -> npt.NDArray[np.float64]:
        """Reward of every action (flat index, see :func:`knob_table`) for the job at hand."""
        if self.contention:
            return np.array(self._cur_rewards, dtype=np.float64)
        block = self._blk()
        return np.array(block.rewards[self._ptr], dtype=np.float64)

    def current_label(self) -> dict[str, Any]:
        """The joint-threshold label of the job at hand: ``label_gpu``, ``margin``, ``reason``."""
        gpu, margin, reason, unknown = self._cur_label if self.contention else self._blk().label(self._ptr)
        return {"label_gpu": gpu, "margin": margin, "reason": reason, "energy_unknown": unknown}

    def decode(self, action: Any) -> PlacementDecision:
        """:func:`decode_action` on the current job's target."""
        return decode_action(action, self.current_target)

    def provenance(self) -> dict[str, Any]:
        """Seed, thresholds, job source (trace hash), hardware and code version."""
        return {
            "env_id": ENV_ID,
            "seed": self._seed,
            "thresholds": self.thresholds.as_dict(),
            "source": self.source.provenance(),
            "targets": [t.model_dump(mode="json") for t in self.targets],
            "contention": self.contention,
            "arrival_rate_per_s": self.arrival_rate_per_s,
            "gpu_load": self.gpu_load,
            "jobs_per_episode": self.jobs_per_episode,
            "block_size": self.block_size,
            "reward": {
                "correct_bonus": self.correct_bonus,
                "margin_cap": self.margin_cap,
                "knob_weight": self.knob_weight,
                "knob_energy_weight": self.knob_energy_weight,
                "knob_cap": self.knob_cap,
            },
            "action_encoding": {
                "knobs": self.knobs,
                "core_grid": list(CORE_GRID),
                "cap_grid": [str(c) if c == GROW else c for c in CAP_GRID],
            },
            "observation_names": list(self.observation_names),
            "code_version": code_version(),
        }

    def _blk(self) -> _Block:
        if self._block is None:
            raise RuntimeError("call reset() first: no jobs drawn yet")
        return self._block


# --------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------
def _one_label() -> Labels:
    return joint_threshold(1.0, 0.1, 1.0, 0.1)


def _positive(name: str, value: Any, hint: str, upper: float = math.inf) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0 ({hint}), got {value!r}") from None
    if not (math.isfinite(out) and 0 < out <= upper):
        raise ValueError(f"{name} must be a finite number > 0 ({hint}), got {value!r}")
    return out


def _non_negative(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not (math.isfinite(out) and out >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return out


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _thresholds(value: Thresholds | Mapping[str, Any] | None) -> Thresholds:
    if value is None:
        return Thresholds()
    if isinstance(value, Thresholds):
        return value
    if isinstance(value, Mapping):
        try:
            return Thresholds(**value)
        except TypeError as exc:
            raise ValueError(
                f"thresholds: {exc}; known keys: speedup_min (T_t), energy_ratio_max (T_e), missing_power"
            ) from None
    raise TypeError(f"thresholds must be a placement.core.threshold.Thresholds or a dict, got {type(value).__name__}")


def _resolve_source(source: Any, targets: Sequence[str | HardwareTarget] | None) -> JobSource:
    if isinstance(source, JobSource):
        return source
    if isinstance(source, pd.DataFrame):
        return TraceJobSource(source)
    if source is None or source == "model":
        chosen = None if targets is None else [_catalogue_target(t) for t in targets]
        return ModelJobSource(chosen)
    if source == "paper":
        from placement.core.paper import paper_table2_frame

        return TraceJobSource(paper_table2_frame(), name="paper_table2")
    if isinstance(source, (str, Path)):
        return TraceJobSource(Path(source))
    raise TypeError(
        "source must be a JobSource, a DataFrame of trace rows or pair_outcomes rows, a trace path, "
        f"'model' or 'paper'; got {type(source).__name__}"
    )


def _catalogue_target(target: str | HardwareTarget) -> HardwareTarget:
    if isinstance(target, HardwareTarget):
        return target
    catalogue = default_catalogue()
    if target not in catalogue:
        raise ValueError(f"targets: unknown target '{target}'; known: {', '.join(sorted(catalogue))}")
    return catalogue[target]


def _resolve_targets(source: JobSource, targets: Sequence[str | HardwareTarget] | None) -> tuple[HardwareTarget, ...]:
    available = {t.id: t for t in source.targets}
    if targets is None:
        chosen = tuple(source.targets)
    else:
        if isinstance(targets, (str, HardwareTarget)):
            targets = [targets]
        picked = []
        for target in targets:
            tid = target.id if isinstance(target, HardwareTarget) else str(target)
            if tid not in available:
                raise ValueError(
                    f"targets: '{tid}' has no jobs in this source; available: {', '.join(sorted(available))}"
                )
            picked.append(available[tid])
        chosen = tuple(dict.fromkeys(picked))
    if not chosen:
        raise ValueError("targets: at least one target is needed")
    return chosen
