"""Where ``DevicePlacement-v0`` gets its jobs: logged traces, or the performance model.

A job source turns a request "``n`` jobs, on these targets, evaluated at these knob
settings" into a :class:`JobBlock`: the jobs' feature-input columns (as
:func:`placement.model.features.feature_matrix` takes them), the size of each job in samples,
and, for every knob setting, the outcome (time and energy per sample, feasibility, how the
energy was obtained). The environment asks once per block of jobs and then only indexes,
which is what makes ``step()`` cheap.

Two sources:

* :class:`TraceJobSource` replays offline logged traces (real or simulated): trace rows
  (one per run, :mod:`placement.core.trace`) or already-paired rows of
  :func:`placement.core.trace.pair_outcomes`, from a file or a DataFrame in memory. Jobs are
  drawn uniformly with replacement among the trace's (job, target) pairs. The default-knob
  outcome of each device is :func:`~placement.core.trace.pair_outcomes`'s reference run; the
  outcome at other knobs is the trace's run at exactly those knobs where one was logged,
  else the *nearest* logged run of that job on that device (distance
  ``|ln cores - ln cores'| + |ln cap - ln cap'|``, ``grow`` counted as twice the GPU's
  memory); ``JobBlock.knobs_exact`` says which. Paired rows carry no knob runs, so every
  knob setting of a device gets that device's default-knob outcome.
* :class:`ModelJobSource` draws jobs from :func:`placement.model.simulate.generate_jobs` and
  targets uniformly from a configured set, and predicts every outcome with
  :class:`placement.model.perfmodel.PerformanceModel` (energy method ``modelled``).

Job size: ``n_samples`` is the job's ``dataset_size`` where known, else
``batch_size * DEFAULT_BATCHES_PER_JOB``. It only matters in contention mode (how long a
job holds the GPU); the joint threshold compares per-sample figures.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from placement.core.catalogue import default_catalogue
from placement.core.hardware import HardwareTarget
from placement.core.outcome import CPU, GPU
from placement.core.trace import (
    COLUMNS,
    PAIR_KEYS,
    _time_per_sample,
    pair_outcomes,
    read_trace,
    row_target,
    target_columns,
    validate,
)
from placement.model.features import ESTIMATE_COLUMNS, FEATURE_INPUT_COLUMNS

DEFAULT_BATCHES_PER_JOB = 100
"""Batches per job when a job's ``dataset_size`` is unknown (sets ``n_samples``)."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

PAIR_COLUMNS = (
    "cpu_time_per_sample_s",
    "gpu_time_per_sample_s",
    "cpu_energy_per_sample_j",
    "gpu_energy_per_sample_j",
    "cpu_feasible",
    "gpu_feasible",
)
"""Outcome columns a paired-rows frame (``pair_outcomes`` output) must have."""


@dataclass(frozen=True)
class KnobTable:
    """Knob settings to evaluate, ``S`` per target, row ``t`` for ``target_ids[t]``.

    ``device`` is 0 = CPU, 1 = GPU; ``cpu_cores`` the cores the job may use;
    ``gpu_mem_cap_mib`` the GPU memory cap in MiB, NaN = ``grow`` (no cap; also used for
    CPU settings, where a cap means nothing). All arrays have shape ``(T, S)``.
    """

    target_ids: tuple[str, ...]
    device: IntArray
    cpu_cores: IntArray
    gpu_mem_cap_mib: FloatArray

    def __post_init__(self) -> None:
        shape = (len(self.target_ids), self.device.shape[-1] if self.device.ndim == 2 else -1)
        for name in ("device", "cpu_cores", "gpu_mem_cap_mib"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"KnobTable.{name} must have shape {shape} (targets, settings)")

    @property
    def n_settings(self) -> int:
        """Knob settings per target (``S``)."""
        return int(self.device.shape[1])

    def key(self) -> str:
        """A content hash, so sources can cache work per knob table."""
        digest = hashlib.sha256("|".join(self.target_ids).encode())
        for arr in (self.device, self.cpu_cores, self.gpu_mem_cap_mib):
            digest.update(np.ascontiguousarray(arr).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class JobBlock:
    """``n`` jobs with their outcome at each of ``S`` knob settings.

    ``target_index`` indexes ``KnobTable.target_ids`` (and the targets passed to
    :meth:`JobSource.sample`). Per-setting arrays have shape ``(n, S)``: time in seconds per
    sample, energy in joules per sample by paper A eq. (2) (NaN where a power reading is
    missing), the energy's method (``measured``/``modelled``/``unknown``), feasibility and
    the reason when infeasible (``None`` otherwise), and whether the outcome is for exactly
    these knobs (``False``: borrowed from the nearest logged knob setting of a trace).
    """

    job_id: ObjArray
    target_index: IntArray
    columns: dict[str, npt.NDArray[Any]]
    n_samples: FloatArray
    time_per_sample_s: FloatArray
    energy_per_sample_j: FloatArray
    energy_method: ObjArray
    feasible: BoolArray
    infeasible_reason: ObjArray
    knobs_exact: BoolArray

    def __len__(self) -> int:
        return int(self.job_id.shape[0])


class JobSource(ABC):
    """Produces :class:`JobBlock` s for the environment."""

    kind: str = "source"

    @property
    @abstractmethod
    def targets(self) -> tuple[HardwareTarget, ...]:
        """Every target this source can produce jobs for."""

    @abstractmethod
    def sample(
        self, n: int, rng: np.random.Generator, targets: Sequence[HardwareTarget], knobs: KnobTable
    ) -> JobBlock:
        """``n`` jobs on ``targets`` (each job's target drawn by the source), evaluated at
        ``knobs`` (rows aligned with ``targets``). Uses only ``rng`` for randomness."""

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """What the jobs come from: kind, trace hash or model version, seeds."""


def _frame_sha256(frame: pd.DataFrame) -> str:
    """Content hash of an in-memory frame (row order and values; stands in for a file hash)."""
    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).to_numpy()
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(hashed.tobytes())
    return digest.hexdigest()


def _n_samples(dataset_size: npt.ArrayLike, batch_size: npt.ArrayLike) -> FloatArray:
    size = pd.to_numeric(pd.Series(np.asarray(dataset_size, dtype=object)), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    batch = np.asarray(batch_size, dtype=np.float64)
    return np.where(np.isfinite(size) & (size >= 1), size, batch * DEFAULT_BATCHES_PER_JOB)


def _float(frame: pd.DataFrame, name: str) -> FloatArray:
    return np.asarray(pd.to_numeric(frame[name], errors="coerce").astype("float64"), dtype=np.float64)


def _bool(frame: pd.DataFrame, name: str) -> BoolArray:
    return np.asarray(frame[name].astype("boolean").fillna(False), dtype=bool)


class TraceJobSource(JobSource):
    """Jobs replayed from a trace: trace rows or ``pair_outcomes`` rows, a file or a frame.

    Args:
        data: a trace file path (``.parquet``/``.csv``, read with
            :func:`placement.core.trace.read_trace`), a DataFrame of trace rows (has a
            ``device`` column; validated with :func:`placement.core.trace.validate`), or a
            DataFrame of paired rows (has ``cpu_time_per_sample_s`` etc., as
            :func:`placement.core.trace.pair_outcomes` returns them).
        targets: optional targets by id to use instead of those rebuilt from the rows'
            ``hw_*`` columns.
        name: a label for provenance when ``data`` is a frame.
    """

    kind = "trace"

    def __init__(
        self,
        data: pd.DataFrame | str | Path,
        *,
        targets: Mapping[str, HardwareTarget] | None = None,
        name: str = "frame",
    ) -> None:
        self._provenance: dict[str, Any] = {"kind": self.kind}
        runs: pd.DataFrame | None
        if isinstance(data, (str, Path)):
            trace = read_trace(Path(data))
            runs = trace.frame
            self._provenance.update(
                path=str(trace.path), trace_sha256=trace.sha256, trace_meta=dict(trace.meta.__dict__), rows="runs"
            )
        elif isinstance(data, pd.DataFrame):
            if data.empty:
                raise ValueError("trace frame is empty: give at least one (job, target) with a CPU run")
            if "device" in data.columns:
                runs = validate(data, source=name)
                self._provenance.update(name=name, frame_sha256=_frame_sha256(runs), rows="runs")
            else:
                runs = None
                self._provenance.update(name=name, frame_sha256=_frame_sha256(data), rows="pairs")
        else:
            raise TypeError(
                f"trace source data must be a path or a pandas DataFrame, got {type(data).__name__}"
            )
        pairs = pair_outcomes(runs) if runs is not None else self._check_pairs(data)  # type: ignore[arg-type]
        if pairs.empty:
            raise ValueError(
                "trace has no (job, target) pair with both a CPU run and, on a GPU target, a GPU run: "
                "nothing can be labelled"
            )
        self._pairs = pairs.reset_index(drop=True)
        self._targets = self._build_targets(self._pairs, targets or {})
        self._runs = runs
        self._provenance["n_pairs"] = len(self._pairs)
        self._provenance["targets"] = [t.id for t in self._targets]
        self._cache: dict[str, dict[str, Any]] = {}

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def _check_pairs(frame: pd.DataFrame) -> pd.DataFrame:
        needed = list(PAIR_KEYS) + [c for c in FEATURE_INPUT_COLUMNS if c != "cpu_cores"] + list(PAIR_COLUMNS)
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(
                "paired trace frame is missing column(s) "
                + ", ".join(missing)
                + ": pass trace rows (with a 'device' column) or the output of placement.core.trace.pair_outcomes"
            )
        pairs = frame.copy()
        for name in COLUMNS:
            if name.name.startswith("hw_") and name.name not in pairs.columns:
                pairs[name.name] = name.default
        for dev in ("cpu", "gpu"):
            ok = _bool(pairs, f"{dev}_feasible")
            t = _float(pairs, f"{dev}_time_per_sample_s")
            bad = ok & ~(np.isfinite(t) & (t > 0))
            if bad.any():
                row = int(np.flatnonzero(bad)[0]) + 1
                raise ValueError(
                    f"paired trace row {row}, column '{dev}_time_per_sample_s': a feasible run needs a "
                    f"finite time > 0 s, got {t[row - 1]!r} (or set {dev}_feasible to false)"
                )
            e = _float(pairs, f"{dev}_energy_per_sample_j")
            neg = np.isfinite(e) & (e < 0)
            if neg.any():
                row = int(np.flatnonzero(neg)[0]) + 1
                raise ValueError(
                    f"paired trace row {row}, column '{dev}_energy_per_sample_j': energy must be >= 0 J "
                    "or empty (unknown)"
                )
        return pairs

    @staticmethod
    def _build_targets(
        pairs: pd.DataFrame, given: Mapping[str, HardwareTarget]
    ) -> tuple[HardwareTarget, ...]:
        out = []
        for target_id, index in pairs.groupby("target_id", sort=True).groups.items():
            tid = str(target_id)
            out.append(given[tid] if tid in given else row_target(pairs.loc[index[0]]))
        return tuple(out)

    # -- JobSource ------------------------------------------------------------------------
    @property
    def targets(self) -> tuple[HardwareTarget, ...]:
        """The targets of the trace's pairs, by id (a given target replaces the one rebuilt from the rows)."""
        return self._targets

    @property
    def pairs(self) -> pd.DataFrame:
        """The labelled (job, target) rows jobs are drawn from (default thresholds)."""
        return self._pairs

    def provenance(self) -> dict[str, Any]:
        """Kind, the trace file and SHA-256 (or the frame's name and hash), row kind, pair count and
        target ids (a copy)."""
        return dict(self._provenance)

    def _table(self, targets: Sequence[HardwareTarget], knobs: KnobTable) -> dict[str, Any]:
        """Outcomes of every pair on ``targets`` at every setting, computed once per table."""
        key = knobs.key()
        if key in self._cache:
            return self._cache[key]
        ids = [t.id for t in targets]
        pairs = self._pairs
        pair_target = pairs["target_id"].astype(str).to_numpy()
        rows = np.flatnonzero(np.isin(pair_target, ids))
        if rows.size == 0:
            raise ValueError(f"trace has no jobs on target(s) {', '.join(ids)}")
        sub = pairs.iloc[rows].reset_index(drop=True)
        tindex = np.asarray([ids.index(t) for t in sub["target_id"].astype(str)], dtype=np.int64)
        n, s = len(sub), knobs.n_settings
        dev = knobs.device[tindex]
        cores = knobs.cpu_cores[tindex].astype(np.float64)
        cap = knobs.gpu_mem_cap_mib[tindex]

        # default-knob outcome per device (pair_outcomes' reference runs)
        default: dict[int, tuple[FloatArray, FloatArray, BoolArray, ObjArray]] = {}
        for d, name in ((CPU, "cpu"), (GPU, "gpu")):
            method_col = f"{name}_energy_method"
            methods = (
                sub[method_col].astype(object).where(sub[method_col].notna(), "unknown").to_numpy()
                if method_col in sub.columns
                else np.full(n, "unknown", dtype=object)
            )
            default[d] = (
                _float(sub, f"{name}_time_per_sample_s"),
                _float(sub, f"{name}_energy_per_sample_j"),
                _bool(sub, f"{name}_feasible"),
                methods,
            )
        time = np.empty((n, s))
        energy = np.empty((n, s))
        feasible = np.empty((n, s), dtype=bool)
        method = np.empty((n, s), dtype=object)
        reason = np.full((n, s), None, dtype=object)
        for d in (CPU, GPU):
            t, e, f, m = default[d]
            mask = dev == d
            time[mask] = np.broadcast_to(t[:, None], (n, s))[mask]
            energy[mask] = np.broadcast_to(e[:, None], (n, s))[mask]
            feasible[mask] = np.broadcast_to(f[:, None], (n, s))[mask]
            method[mask] = np.broadcast_to(m[:, None], (n, s))[mask]
        reason[~feasible] = "not_run"
        has_gpu = np.asarray([targets[i].has_gpu for i in tindex])
        reason[(dev == GPU) & ~has_gpu[:, None]] = "no_gpu"

        # which settings are exactly the default knobs (all cores, grow)
        total_cores = np.asarray([targets[i].cpu_cores for i in tindex], dtype=np.float64)[:, None]
        is_default = (cores == total_cores) & np.isnan(cap)
        measured = is_default.copy()
        if self._runs is not None:
            self._overlay_runs(sub, tindex, targets, dev, cores, cap, time, energy, feasible, method, reason, measured)

        table = {
            "rows": rows,
            "sub": sub,
            "tindex": tindex,
            "time": time,
            "energy": energy,
            "feasible": feasible,
            "method": method,
            "reason": reason,
            "measured": measured,
            "columns": _feature_columns(sub, total_cores[:, 0]),
            "job_id": sub["job_id"].astype(str).to_numpy(dtype=object),
            "n_samples": _n_samples(
                sub["dataset_size"] if "dataset_size" in sub.columns else np.full(n, np.nan), sub["batch_size"]
            ),
            "by_target": [np.flatnonzero(tindex == i) for i in range(len(targets))],
        }
        self._cache[key] = table
        return table

    def _overlay_runs(
        self,
        sub: pd.DataFrame,
        tindex: IntArray,
        targets: Sequence[HardwareTarget],
        dev: IntArray,
        cores: FloatArray,
        cap: FloatArray,
        time: FloatArray,
        energy: FloatArray,
        feasible: BoolArray,
        method: ObjArray,
        reason: ObjArray,
        measured: BoolArray,
    ) -> None:
        """Where the trace logged runs at other knobs (edge targets), use the nearest one."""
        runs = self._runs
        if runs is None:
            return
        key_of = {(j, t): i for i, (j, t) in enumerate(zip(sub["job_id"].astype(str), sub["target_id"].astype(str), strict=True))}
        rjob = runs["job_id"].astype(str).to_numpy()
        rtarget = runs["target_id"].astype(str).to_numpy()
        rdev = np.where(runs["device"].astype(str).to_numpy() == "gpu", GPU, CPU)
        rcores = _float(runs, "cpu_cores")
        rcap = _float(runs, "gpu_mem_cap_mib")
        rtime = _time_per_sample(runs)
        p_cpu = _float(runs, "avg_cpu_power_w")
        p_gpu = _float(runs, "avg_gpu_power_w")
        renergy = np.where(rdev == GPU, p_cpu + p_gpu, p_cpu) * rtime
        cpu_m = runs["cpu_power_method"].astype(str).to_numpy()
        gpu_m = runs["gpu_power_method"].astype(str).to_numpy()
        rmethod = np.where(
            rdev == CPU,
            cpu_m,
            np.where((cpu_m == "unknown") | (gpu_m == "unknown"), "unknown",
                     np.where((cpu_m == "modelled") | (gpu_m == "modelled"), "modelled", "measured")),
        )
        rfeasible = _bool(runs, "feasible")
        rreason = runs["infeasible_reason"].astype(object).where(runs["infeasible_reason"].notna(), None).to_numpy()
        group_of: dict[tuple[str, str, str], np.ndarray] = pd.Series(range(len(runs))).groupby([rjob, rtarget, rdev]).indices  # type: ignore[assignment]
        for (job, target, d), idx in group_of.items():
            i = key_of.get((job, target))
            if i is None:
                continue
            mask = dev[i] == d
            if not mask.any():
                continue
            tgt = targets[int(tindex[i])]
            grow_mib = 2.0 * max(tgt.gpu_mem_mib, 1)
            q_cores = cores[i, mask]
            q_cap = np.where(np.isnan(cap[i, mask]), grow_mib, cap[i, mask])
            r_cores = np.maximum(rcores[idx], 1.0)
            r_cap = np.where(np.isnan(rcap[idx]), grow_mib, rcap[idx])
            dist = np.abs(np.log(q_cores[:, None]) - np.log(r_cores[None, :]))
            if d == GPU:
                dist = dist + np.abs(np.log(q_cap[:, None]) - np.log(r_cap[None, :]))
            best = np.argmin(dist, axis=1)
            exact = dist[np.arange(best.size), best] == 0.0
            pick = idx[best]
            cols = np.flatnonzero(mask)
            # default-knob settings keep pair_outcomes' reference run (it labels the job)
            keep_default = measured[i, cols]
            cols, pick, exact = cols[~keep_default], pick[~keep_default], exact[~keep_default]
            time[i, cols] = rtime[pick]
            energy[i, cols] = renergy[pick]
            feasible[i, cols] = rfeasible[pick]
            method[i, cols] = rmethod[pick]
            reason[i, cols] = np.where(rfeasible[pick], None, rreason[pick])
            measured[i, cols] = exact

    def sample(
        self, n: int, rng: np.random.Generator, targets: Sequence[HardwareTarget], knobs: KnobTable
    ) -> JobBlock:
        """``n`` (job, target) pairs drawn uniformly with replacement from the trace's pairs on
        ``targets``, with their outcomes at ``knobs``."""
        table = self._table(targets, knobs)
        pick = rng.integers(0, len(table["tindex"]), size=n)
        return JobBlock(
            job_id=table["job_id"][pick],
            target_index=table["tindex"][pick],
            columns={k: v[pick] for k, v in table["columns"].items()},
            n_samples=table["n_samples"][pick],
            time_per_sample_s=table["time"][pick],
            energy_per_sample_j=table["energy"][pick],
            energy_method=table["method"][pick],
            feasible=table["feasible"][pick],
            infeasible_reason=table["reason"][pick],
            knobs_exact=table["measured"][pick],
        )


def _feature_columns(frame: pd.DataFrame, cores: FloatArray) -> dict[str, npt.NDArray[Any]]:
    """The :data:`placement.model.features.FEATURE_INPUT_COLUMNS` of ``frame`` as numpy arrays,
    with ``cpu_cores`` set to ``cores`` (default knobs: all the target's cores).

    A frame that carries :data:`placement.model.features.ESTIMATE_COLUMNS` (the learner's feedback
    trace: margins as the service formed them, shifted by the target's offsets) passes them on,
    so the features are the ones the service decides on; :func:`placement.model.features.feature_matrix`
    forms them from the performance model for rows where they are missing (NaN)."""
    out: dict[str, npt.NDArray[Any]] = {}
    for name in FEATURE_INPUT_COLUMNS:
        if name == "cpu_cores":
            out[name] = np.asarray(cores, dtype=np.float64)
        elif name in ("family", "mode", "hw_kind"):
            out[name] = frame[name].astype(str).to_numpy(dtype=object)
        elif name == "hw_unified_memory":
            out[name] = _bool(frame, name)
        else:
            out[name] = _float(frame, name)
    if all(c in frame.columns for c in ESTIMATE_COLUMNS):
        out.update({c: _float(frame, c) for c in ESTIMATE_COLUMNS})
    return out



class ModelJobSource(JobSource):
    """Jobs from the job generator, outcomes predicted by the performance model.

    Args:
        targets: the configured target set (default: every catalogue target); each job's
            target is drawn uniformly from the targets the environment asks for.
        noise: pass the environment's generator to ``predict_columns`` so predictions carry
            the model's run-to-run noise (seeded); ``False`` = noiseless predictions.
    """

    kind = "model"

    def __init__(self, targets: Sequence[HardwareTarget] | None = None, *, noise: bool = True) -> None:
        try:
            from placement.model.perfmodel import PerformanceModel
            from placement.model.simulate import generate_jobs
        except ImportError as exc:  # pragma: no cover - only before the model exists
            raise ImportError(
                "the model job source needs placement.model.perfmodel and placement.model.simulate "
                f"({exc}); pass a trace instead (source=<trace path | DataFrame | 'paper'>)"
            ) from exc
        self._model = PerformanceModel()
        self._generate = generate_jobs
        chosen = tuple(targets) if targets is not None else tuple(default_catalogue().values())
        if not chosen:
            raise ValueError("ModelJobSource needs at least one target")
        self._targets = chosen
        self.noise = bool(noise)

    @property
    def targets(self) -> tuple[HardwareTarget, ...]:
        """The configured target set."""
        return self._targets

    def provenance(self) -> dict[str, Any]:
        """The generator, performance-model version, noise setting and target ids."""
        from placement.model import perfmodel
        version = getattr(perfmodel, "MODEL_VERSION", None) or getattr(self._model, "version", "")
        return {
            "kind": self.kind,
            "model": "placement.model.perfmodel.PerformanceModel",
            "model_version": str(version),
            "generator": "placement.model.simulate.generate_jobs",
            "noise": self.noise,
            "targets": [t.id for t in self._targets],
        }

    def sample(
        self, n: int, rng: np.random.Generator, targets: Sequence[HardwareTarget], knobs: KnobTable
    ) -> JobBlock:
        """``n`` generated jobs, each on a target drawn uniformly from ``targets``, with outcomes at
        ``knobs`` predicted by the performance model (noisy from ``rng`` when ``noise``)."""
        jobs = self._generate(n, rng).reset_index(drop=True)
        if len(jobs) != n:
            raise RuntimeError(f"generate_jobs returned {len(jobs)} rows, asked for {n}")
        tindex = rng.integers(0, len(targets), size=n).astype(np.int64)
        frame = jobs.copy()
        for name, values in _target_frame(targets).items():
            frame[name] = values[tindex]
        total_cores = np.asarray([t.cpu_cores for t in targets], dtype=np.float64)[tindex]
        columns = _feature_columns(frame, total_cores)
        batch = columns["batch_size"]
        s = knobs.n_settings
        time = np.full((n, s), np.nan)
        energy = np.full((n, s), np.nan)
        feasible = np.zeros((n, s), dtype=bool)
        reason = np.full((n, s), None, dtype=object)
        raw = {c: frame[c].to_numpy() for c in frame.columns}
        for t, target in enumerate(targets):
            jobs_t = np.flatnonzero(tindex == t)
            if jobs_t.size == 0:
                continue
            # evaluate each distinct (device, cores, cap) of this target once per job (np.unique cannot
            # group NaN rows: no cap is -1 in these keys only, NaN again for the model below)
            combos = np.stack(
                [knobs.device[t], knobs.cpu_cores[t], np.nan_to_num(knobs.gpu_mem_cap_mib[t], nan=-1.0)], axis=1
            ).astype(np.float64)
            uniq, inverse = np.unique(combos, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            u_dev = uniq[:, 0].astype(np.int64)
            runnable = np.flatnonzero((u_dev == CPU) | target.has_gpu)
            m, u = jobs_t.size, runnable.size
            out_t = np.full((m, uniq.shape[0]), np.nan)
            out_e = np.full((m, uniq.shape[0]), np.nan)
            out_f = np.zeros((m, uniq.shape[0]), dtype=bool)
            out_r = np.full((m, uniq.shape[0]), "no_gpu", dtype=object)
            if u:
                rows = np.repeat(jobs_t, u)
                dev = np.tile(u_dev[runnable], m)
                cap = np.tile(uniq[runnable, 2], m)
                pred = self._model.predict_columns(
                    {c: v[rows] for c, v in raw.items()},
                    device=np.where(dev == GPU, "gpu", "cpu"),
                    cpu_cores=np.tile(uniq[runnable, 1], m).astype(np.int64),
                    gpu_mem_cap_mib=np.where(cap < 0, np.nan, cap),
                    rng=rng if self.noise else None,
                )
                ok = np.asarray(pred.feasible, dtype=bool)
                per_sample = np.asarray(pred.time_per_batch_s, dtype=np.float64) / batch[rows]
                p_cpu = np.asarray(pred.avg_cpu_power_w, dtype=np.float64)
                p_gpu = np.asarray(pred.avg_gpu_power_w, dtype=np.float64)
                e = np.where(dev == GPU, p_cpu + p_gpu, p_cpu) * per_sample  # paper A eq. (2)
                why = np.asarray(pred.infeasible_reason, dtype=object)
                out_t[:, runnable] = np.where(ok, per_sample, np.nan).reshape(m, u)
                out_e[:, runnable] = np.where(ok, e, np.nan).reshape(m, u)
                out_f[:, runnable] = ok.reshape(m, u)
                out_r[:, runnable] = np.where(ok, np.asarray(None, dtype=object), why).reshape(m, u)
            time[jobs_t] = out_t[:, inverse]
            energy[jobs_t] = out_e[:, inverse]
            feasible[jobs_t] = out_f[:, inverse]
            reason[jobs_t] = out_r[:, inverse]
        if "job_id" in jobs.columns:
            job_id = jobs["job_id"].astype(str).to_numpy(dtype=object)
        else:
            job_id = np.asarray([f"generated-{i}" for i in range(n)], dtype=object)
        return JobBlock(
            job_id=job_id,
            target_index=tindex,
            columns=columns,
            n_samples=_n_samples(jobs["dataset_size"] if "dataset_size" in jobs.columns else np.full(n, np.nan), batch),
            time_per_sample_s=time,
            energy_per_sample_j=energy,
            energy_method=np.where(np.isfinite(energy), "modelled", "unknown").astype(object),
            feasible=feasible,
            infeasible_reason=reason,
            knobs_exact=np.ones((n, s), dtype=bool),
        )


def _target_frame(targets: Sequence[HardwareTarget]) -> dict[str, npt.NDArray[np.object_]]:
    """``target_id`` and ``hw_*`` columns of each target, one row per target."""
    cols = [target_columns(t) for t in targets]
    return {name: np.asarray([c[name] for c in cols], dtype=object) for name in cols[0]}
