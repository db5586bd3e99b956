"""Rewards from bandit feedback: the unchosen device's outcome, estimated, so every job gets a label.

Feedback is *bandit* feedback: a client reports the run on the device the service chose,
not the run it did not make. The joint threshold (paper A) needs both devices' time and
per-sample energy, so for each feedback we form a pair:

1. **Both measured** (``both_measured``): a client that ran the job on both devices sends
   ``other_outcome``; both runs are used as reported (labels exact, energy method as
   reported).
2. **Estimated** otherwise. The performance model (:mod:`placement.model.perfmodel`) predicts the
   unchosen device's time and power; the prediction is corrected by *residuals*
   ``ln(observed / predicted)`` (time per sample, and eq. 2 power where measured) of runs
   actually observed on that device and target, taken from, in order:

   * ``history`` -- up to ``neighbours`` similar jobs (same target, device, family and mode;
     distance in log10 FLOPs/sample, batch size, parameters and input bytes below
     ``max_distance``), median residual;
   * ``calibrated_model`` -- the median residual of the ``group_recent`` most recent runs on
     that target and device (at least ``min_group`` of them);
   * ``model`` -- the bare performance model.

   Estimated rows are ``modelled`` (never ``measured``), with ``infeasible_reason =
   'oom (predicted)'`` where the model predicts the run would not fit.
3. A failed run (OOM, did not run) is a measured infeasibility: by the threshold's
   missing-data rules the other device wins whatever its estimate (``gpu_infeasible`` ->
   CPU, ``cpu_infeasible`` -> GPU).

Residuals follow drift: if the GPU's observed runs become 3x slower than the model
predicts, the residual of GPU runs on that target rises by ln 3 and GPU estimates for
jobs that ran on the CPU rise with it; the learner's recency window
(``Settings.history_window``) lets old outcomes age out.

The pairs are labelled by :func:`placement.core.trace.pair_outcomes` with the serving
thresholds; the reward of either choice is :func:`placement.core.threshold.placement_reward`
(computed by the environment and by :func:`placement.agents.evaluation.evaluate_policy`).
Exploration keeps the residuals of both devices fresh: bounded, and only where the policy
is unsure (:mod:`placement.serve.placer`); each explored decision's propensity is stored with it.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from placement.core.decision import GROW
from placement.core.threshold import Thresholds
from placement.core.trace import cap_to_column, pair_outcomes, validate
from placement.model.perfmodel import PerformanceModel, Prediction
from placement.serve.storage.store import StoredFeedback, job_row, run_row, target_key


@dataclass(frozen=True)
class RewardSettings:
    """How the unchosen device's outcome is estimated (see the module docstring)."""

    neighbours: int = 5
    max_distance: float = 0.5
    min_group: int = 3
    group_recent: int = 200
    max_outlier_factor: float = 100.0
    """A run whose time per sample or power is more than this factor off the performance model is
    implausible: its feedback is excluded (:func:`screen_feedback`)."""
    contradiction_factor: float = 10.0
    """Reports of the same job on the same target and device whose times per sample differ by more
    than this factor contradict each other: all of them are excluded."""
    robust_neighbours: int = 12
    """Robust screens compare a run with up to this many runs before and after it (in arrival order)
    on the same target and device: recent enough to follow drift, many enough to outvote a lying
    minority."""
    robust_k: float = 4.0
    """A run is excluded when its log residual against the model is more than ``robust_k`` robust
    standard deviations (1.4826 MAD, at least ``robust_floor``) from its reference's median."""
    robust_floor: float = 0.15
    min_reference: int = 6
    """Runs a target/device reference needs (3 for a signature reference) before it may exclude."""
    near_batch_factor: float = 2.0
    """Jobs of one architecture signature whose batch sizes are within this factor are near-identical."""
    near_contradiction_factor: float = 3.0
    """Near-identical runs (too few for a robust reference) whose residuals differ by more than this
    factor contradict each other: all of them are excluded."""

    def __post_init__(self) -> None:
        if self.neighbours < 1 or self.min_group < 1 or self.group_recent < 1:
            raise ValueError("neighbours, min_group and group_recent must be >= 1")
        if not (self.max_outlier_factor > 1 and self.contradiction_factor > 1):
            raise ValueError("max_outlier_factor and contradiction_factor must be > 1")
        if self.robust_neighbours < 1 or self.min_reference < 1 or not (self.robust_k > 0 and self.robust_floor > 0):
            raise ValueError("robust_neighbours, min_reference, robust_k and robust_floor must be > 0")
        if not (self.near_batch_factor >= 1 and self.near_contradiction_factor > 1):
            raise ValueError("near_batch_factor must be >= 1 and near_contradiction_factor > 1")
        if not self.max_distance > 0:
            raise ValueError(f"max_distance must be > 0, got {self.max_distance}")


@dataclass(frozen=True)
class FormedRewards:
    """``trace``: validated trace rows (observed and estimated); ``pairs``: one labelled row per
    feedback (:func:`placement.core.trace.pair_outcomes` columns plus ``estimate_source`` and
    ``feedback_seq``); ``sources``: feedback counted per estimate source."""

    trace: pd.DataFrame
    pairs: pd.DataFrame
    sources: dict[str, int] = field(default_factory=dict)


_SIMILARITY = ("flops_per_batch", "batch_size", "param_count", "input_bytes_per_sample")


def _sim_vector(frame: pd.DataFrame) -> npt.NDArray[np.float64]:
    cols = []
    for name in _SIMILARITY:
        v = frame[name].astype("float64").to_numpy()
        if name == "flops_per_batch":
            v = v / frame["batch_size"].astype("float64").to_numpy()
        cols.append(np.log10(np.maximum(v, 1.0)))
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0))


def _per_sample(frame: pd.DataFrame, pred_time_per_batch: npt.NDArray[np.float64], pred_power: npt.NDArray[np.float64],
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Observed and predicted time per sample and eq. (2) power of trace rows."""
    t = frame["time_total_s"].astype("float64").to_numpy() / frame["n_samples"].astype("float64").to_numpy()
    cpu_w = frame["avg_cpu_power_w"].astype("float64").to_numpy()
    gpu_w = frame["avg_gpu_power_w"].astype("float64").to_numpy()
    is_gpu = frame["device"].astype(str).to_numpy() == "gpu"
    power = np.where(is_gpu, cpu_w + gpu_w, cpu_w)
    pred_t = pred_time_per_batch / frame["batch_size"].astype("float64").to_numpy()
    return t, power, pred_t, pred_power


def screen_feedback(
    feedback: Sequence[StoredFeedback], perf_model: PerformanceModel | None = None,
    settings: RewardSettings | None = None, distrusted: set[str] | None = None,
) -> tuple[list[StoredFeedback], dict[str, int]]:
    """Poisoned-feedback defence: ``(kept, excluded counts)``. Excluded are feedback with an
    *outlier* run (time per sample or eq. 2 power more than ``max_outlier_factor`` off the
    performance model: drift of a few times passes, a run 10^4 times too slow does not) and
    *contradictory* feedback (the same job on the same target and device reported with times
    per sample more than ``contradiction_factor`` apart: every report of that job is dropped,
    since which one is true cannot be told), every feedback of a client whose runs sit
    consistently off the other clients' (:mod:`placement.serve.learning.clients`, reason
    ``excluded_client_bias``; their decision ids are added to ``distrusted`` when given), then the
    robust screens of :func:`_robust_screens` (reasons ``excluded_robust_signature``,
    ``excluded_robust_target``, ``excluded_contradictory_near``). Failed runs are not screened
    one by one (a distrusted client's are left out with the rest of its feedback)."""
    rs = settings or RewardSettings()
    model = perf_model or PerformanceModel()
    rows: list[dict[str, Any]] = []
    owner: list[int] = []
    for k, fb in enumerate(feedback):
        for run in (fb.outcome, fb.other):
            if run is not None and run.feasible:
                rows.append(run_row(fb.decision, run))
                owner.append(k)
    outlier: set[int] = set()
    contradictory: set[int] = set()
    if rows:
        frame = pd.DataFrame(rows)
        pred = model.predict_columns(frame, frame["device"].to_numpy(dtype=object),
                                     frame["cpu_cores"].astype("float64").to_numpy(),
                                     frame["gpu_mem_cap_mib"].astype("float64").to_numpy())
        t, power, pred_t, pred_p = _per_sample(frame, pred.time_per_batch_s, pred.power_w)
        limit = float(np.log(rs.max_outlier_factor))
        with np.errstate(divide="ignore", invalid="ignore"):
            res_t = np.abs(np.log(t / pred_t))
            res_p = np.abs(np.log(power / pred_p))
        far = (res_t > limit) | (np.isfinite(res_p) & (res_p > limit))
        outlier = {owner[i] for i in np.flatnonzero(far)}
        # per run, once for every screen: its target's key and its architecture signature
        keys: dict[int, str] = {}
        row_key: list[str] = []
        for k in owner:
            target = feedback[k].decision.target
            if id(target) not in keys:
                keys[id(target)] = target_key(target)
            row_key.append(keys[id(target)])
        row_sig = [job_signature(feedback[k].decision.job) for k in owner]
        groups: dict[tuple[str, str, str], list[tuple[int, float]]] = defaultdict(list)
        for i, k in enumerate(owner):
            fb = feedback[k]
            key = (row_key[i], fb.decision.job.model_dump_json(exclude={"name", "dataset_size"}),
                   str(frame["device"].iat[i]))
            groups[key].append((k, float(t[i])))
        for items in groups.values():
            times = [x for _, x in items if np.isfinite(x) and x > 0]
            if len(times) >= 2 and max(times) / min(times) > rs.contradiction_factor:
                contradictory.update(k for k, _ in items)
        with np.errstate(divide="ignore", invalid="ignore"):
            signed_t, signed_p = np.log(t / pred_t), np.log(power / pred_p)
        biased = _client_screen(feedback, frame, owner, row_key, row_sig, signed_t)
        trusted = [k not in biased for k in owner]  # a distrusted client is no reference
        mask = np.array(trusted, dtype=bool)

        def trusted_only(xs: list[Any]) -> list[Any]:
            return [x for x, ok in zip(xs, trusted, strict=True) if ok]

        robust = _robust_screens(frame[mask].reset_index(drop=True), trusted_only(owner), trusted_only(row_key),
                                 trusted_only(row_sig), signed_t[mask], signed_p[mask], rs)
    else:
        biased, robust = set(), {}
    contradictory -= outlier
    if distrusted is not None:  # all of a distrusted client's feedback, whatever else excluded some of it
        distrusted.update(feedback[k].decision.decision_id for k in biased)
    biased -= outlier | contradictory
    kept_out = outlier | contradictory | biased
    excluded = {"excluded_outlier": len(outlier), "excluded_contradictory": len(contradictory),
                "excluded_client_bias": len(biased)}
    for reason, flagged in robust.items():
        flagged = flagged - kept_out
        excluded[reason] = len(flagged)
        kept_out |= flagged
    kept = [fb for k, fb in enumerate(feedback) if k not in kept_out]
    return kept, {k: v for k, v in excluded.items() if v}


def _client_screen(feedback: Sequence[StoredFeedback], frame: pd.DataFrame, owner: list[int], row_key: list[str],
                   row_sig: list[str], res_t: npt.NDArray[np.float64]) -> set[int]:
    """Feedback indices of the clients :func:`placement.serve.learning.clients.client_biases`
    distrusts (runs grouped by target, signature, mode and device; time residuals against the model)."""
    from placement.serve.learning.clients import client_biases, distrusted_clients

    if len({fb.client for fb in feedback}) < 2:
        return set()
    devices = frame["device"].astype(str).tolist()
    groups = [(row_key[i], row_sig[i], feedback[k].decision.job.mode, devices[i]) for i, k in enumerate(owner)]
    bad = distrusted_clients(client_biases([feedback[k].client for k in owner], groups, devices, res_t))
    return {k for k, fb in enumerate(feedback) if fb.client in bad} if bad else set()


def job_signature(job: Any) -> str:
    """The architecture signature of a job: its ``signature`` field when the job carries one,
    else the model family and the structure fields (mode, parameters, input size, FLOPs per
    sample to 1 %) -- the batch size left out, so one architecture at several batch sizes
    shares a signature."""
    sig = getattr(job, "signature", None)
    if sig:
        return str(sig)
    per_sample = float(job.flops_per_batch) / max(int(job.batch_size), 1)
    return (f"{job.family}/{job.mode}/p{int(job.param_count)}/i{int(job.input_elems_per_sample)}"
            f"/f{np.round(np.log10(max(per_sample, 1.0)), 2):g}")


def _robust_flags(ref: list[float], x: float, rs: RewardSettings) -> bool:
    """Whether ``x`` is more than ``robust_k`` robust SDs from the median of the finite ``ref``
    (plain Python on these few values: numpy's median costs more per call)."""
    med = statistics.median(ref)
    scale = max(1.4826 * statistics.median([abs(r - med) for r in ref]), rs.robust_floor)
    return bool(abs(x - med) > rs.robust_k * scale)


def _stands_out(res_t: npt.NDArray[np.float64], res_p: npt.NDArray[np.float64], past: list[int], future: list[int],
                i: int, rs: RewardSettings, min_ref: int) -> bool:
    """Whether run ``i`` stands out from the runs before it *and* from the runs after it (a side
    with fewer than ``min_ref`` runs does not vouch for it). A change of regime (drift) agrees with
    what follows it, a lying minority with neither side. When neither side has ``min_ref`` runs but
    both together do (a small group: an architecture's first round of runs, a lie in its middle),
    the run is compared with all of them: too few runs a side to tell drift from a lie, enough to
    outvote one."""

    def verdict(side: list[int]) -> bool | None:
        ref_t = [x for x in res_t[side].tolist() if math.isfinite(x)]
        if len(ref_t) < min_ref:
            return None
        out = _robust_flags(ref_t, float(res_t[i]), rs)
        ref_p = [x for x in res_p[side].tolist() if math.isfinite(x)]
        if not out and math.isfinite(res_p[i]) and len(ref_p) >= min_ref:
            out = _robust_flags(ref_p, float(res_p[i]), rs)
        return out

    known = [v for v in (verdict(past), verdict(future)) if v is not None]
    if not known:
        pooled = verdict(past + future)
        return bool(pooled)
    return all(known)


def robust_outliers(res_t: npt.ArrayLike, res_p: npt.ArrayLike, rs: RewardSettings | None = None,
                    min_ref: int = 3) -> npt.NDArray[np.bool_]:
    """Which runs of one group (e.g. one signature's runs on one target and device), given in
    arrival order by their log residuals against the performance model (time per sample, eq. 2
    power; NaN where unknown), stand out from the up to ``robust_neighbours`` runs before them
    *and* those after them (:func:`_stands_out`; a side of fewer than ``min_ref`` runs does not
    vouch): the learner's signature screen, for a caller that holds one group's runs (the placer's
    per-architecture history, :meth:`placement.serve.placer.Placer.estimate`)."""
    rs = rs or RewardSettings()
    t = np.asarray(res_t, dtype=np.float64).reshape(-1)
    p = np.asarray(res_p, dtype=np.float64).reshape(-1)
    n, h = t.shape[0], rs.robust_neighbours
    out = np.zeros(n, dtype=bool)
    if n <= min_ref:  # no run has min_ref others
        return out
    for i in range(n):
        if math.isfinite(t[i]):
            out[i] = _stands_out(t, p, list(range(max(0, i - h), i)), list(range(i + 1, min(n, i + 1 + h))), i, rs,
                                 min_ref)
    return out


def _robust_screens(frame: pd.DataFrame, owner: list[int], row_key: list[str], sig: list[str],
                    res_t: npt.NDArray[np.float64], res_p: npt.NDArray[np.float64], rs: RewardSettings,
                    ) -> dict[str, set[int]]:
    """Poison screens on log residuals against the performance model (time per sample and eq. 2
    power), per target and device, in arrival order. A run is compared (median/MAD,
    :func:`_stands_out`) with up to ``robust_neighbours`` runs before it and after it: first
    with runs of the same architecture signature (>= 3 a side), then with all runs on that
    target and device (>= ``min_reference`` a side). Near-identical runs (same signature,
    batch sizes within ``near_batch_factor``) too few for a signature reference are checked
    against each other (``near_contradiction_factor``). A consistent lie by a minority stands
    out on both sides; drift agrees with the runs after it, and the newest drifted runs pass
    once ``min_reference`` more runs confirm them. ``row_key`` / ``sig``: each run's target key and
    architecture signature. Returns feedback indices by reason."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    devices = frame["device"].astype(str).tolist()
    for i in range(len(owner)):
        groups[(row_key[i], devices[i])].append(i)
    batch = frame["batch_size"].astype("float64").to_numpy()
    flags: dict[str, set[int]] = {"excluded_robust_signature": set(), "excluded_robust_target": set(),
                                  "excluded_contradictory_near": set()}
    h = rs.robust_neighbours
    limit = float(np.log(rs.near_contradiction_factor))
    for rows in groups.values():
        by_sig: dict[str, list[int]] = defaultdict(list)
        sig_pos: dict[int, int] = {}
        for i in rows:
            sig_pos[i] = len(by_sig[sig[i]])
            by_sig[sig[i]].append(i)
        for pos, i in enumerate(rows):
            if not np.isfinite(res_t[i]):
                continue
            past, future = rows[max(0, pos - h): pos], rows[pos + 1: pos + 1 + h]
            same, sp = by_sig[sig[i]], sig_pos[i]
            s_past, s_future = same[max(0, sp - h): sp], same[sp + 1: sp + 1 + h]
            reason = None
            if len(s_past) + len(s_future) >= 3:
                if _stands_out(res_t, res_p, s_past, s_future, i, rs, 3):
                    reason = "excluded_robust_signature"
            else:
                twins = [j for j in s_past + s_future
                         if max(batch[i], batch[j]) / max(min(batch[i], batch[j]), 1) <= rs.near_batch_factor]
                if any(np.isfinite(res_t[j]) and abs(res_t[i] - res_t[j]) > limit for j in twins):
                    reason = "excluded_contradictory_near"
            if reason is None and _stands_out(res_t, res_p, past, future, i, rs, rs.min_reference):
                reason = "excluded_robust_target"
            if reason is not None:
                flags[reason].add(owner[i])
    return flags


def _median(values: npt.NDArray[np.float64]) -> float:
    """``np.median`` of a short 1-d array without its per-call overhead (~0.1 ms; called per row)."""
    v = np.sort(values)
    n = v.shape[0]
    return float(v[n // 2]) if n % 2 else float(0.5 * (v[n // 2 - 1] + v[n // 2]))


def _observed_runs(feedback: Sequence[StoredFeedback]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The reported runs as trace rows (each feedback's run, then the other device's run where
    the client sent one), with their target key (``_target_key``) and arrival order
    (``_order``); and each decision id's feedback sequence number."""
    observed_rows: list[dict[str, Any]] = []
    seq_of: dict[str, int] = {}
    for fb in feedback:
        seq_of[fb.decision.decision_id] = fb.seq
        observed_rows.append(run_row(fb.decision, fb.outcome))
        if fb.other is not None:
            observed_rows.append(run_row(fb.decision, fb.other))
    observed = pd.DataFrame(observed_rows)
    observed["_target_key"] = [target_key(fb.decision.target) for fb in feedback for _ in range(1 + (fb.other is not None))]
    observed["_order"] = np.arange(len(observed))
    return observed, seq_of


@dataclass
class _Residuals:
    """Log residuals ``ln(observed / predicted)`` of the observed feasible runs, by row of
    those runs: time per sample (``t``) and eq. 2 power (``p``; NaN where not measured); their
    similarity vectors (``sim``, :data:`_SIMILARITY` in log10); and the runs with a finite time
    residual, in arrival order, by (target key, device) (``groups``) and by (target key,
    device, family, mode) (``fine``)."""

    t: npt.NDArray[np.float64]
    p: npt.NDArray[np.float64]
    sim: npt.NDArray[np.float64]
    groups: dict[tuple[str, str], list[int]]
    fine: dict[tuple[str, str, str, str], list[int]]


def _residuals(observed: pd.DataFrame, model: PerformanceModel) -> _Residuals:
    """The residuals of the feasible runs among ``observed`` (:func:`_observed_runs`) against
    ``model``."""
    ok = observed["feasible"].to_numpy(dtype=bool)
    obs_ok = observed[ok].reset_index(drop=True)
    if len(obs_ok):
        caps = obs_ok["gpu_mem_cap_mib"].astype("float64").to_numpy()
        pred = model.predict_columns(obs_ok, obs_ok["device"].to_numpy(dtype=object),
                                     obs_ok["cpu_cores"].astype("float64").to_numpy(), caps)
        t, power, pred_t, pred_p = _per_sample(obs_ok, pred.time_per_batch_s, pred.power_w)
        with np.errstate(divide="ignore", invalid="ignore"):
            res_t = np.log(t / pred_t)
            res_p = np.log(power / pred_p)
    else:
        res_t = res_p = np.zeros(0)
    sim = _sim_vector(obs_ok) if len(obs_ok) else np.zeros((0, len(_SIMILARITY)))
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    fine: dict[tuple[str, str, str, str], list[int]] = defaultdict(list)
    if len(obs_ok):
        for i, (tk, dev, fam, mode) in enumerate(zip(obs_ok["_target_key"], obs_ok["device"], obs_ok["family"],
                                                     obs_ok["mode"], strict=True)):
            if np.isfinite(res_t[i]):
                groups[(tk, str(dev))].append(i)
                fine[(tk, str(dev), str(fam), str(mode))].append(i)
    return _Residuals(res_t, res_p, sim, groups, fine)


def _borrowed_residuals(res: _Residuals, key: str, device: str, job: Any, qsim: npt.NDArray[np.float64],
                        rs: RewardSettings) -> tuple[float, float, str]:
    """The time and power residual corrections (log units) for an estimate of ``job`` on
    ``device`` of target ``key`` (``qsim``: the job's similarity vector), and their source:
    the median of the nearest similar runs (``history``), else of the recent runs on that
    target and device (``calibrated_model``), else none (``model``, corrections 0)."""
    rt, rp, source = 0.0, 0.0, "model"
    cand = res.fine.get((key, device, str(job.family), str(job.mode)), [])
    cand = cand[-rs.group_recent:]
    picked: list[int] = []
    if cand:
        dist = np.linalg.norm(res.sim[cand] - qsim, axis=1)
        order = np.argsort(dist, kind="stable")[: rs.neighbours]
        picked = [cand[j] for j in order if dist[j] <= rs.max_distance]
    if picked:
        source = "history"
    else:
        group = res.groups.get((key, device), [])[-rs.group_recent:]
        if len(group) >= rs.min_group:
            picked = group
            source = "calibrated_model"
    if picked:
        rt = _median(res.t[picked])
        finite_p = res.p[picked][np.isfinite(res.p[picked])]
        rp = _median(finite_p) if len(finite_p) else 0.0
    return rt, rp, source


def _estimated_row(base_row: dict[str, Any], fb: StoredFeedback, device: str, pred: Prediction, i: int,
                   pred_tps: float, rt: float, rp: float) -> dict[str, Any]:
    """The trace row of the unchosen ``device``'s run of ``fb``, from row ``i`` of the model's
    prediction ``pred`` (``pred_tps``: its time per sample, s) corrected by the residuals
    ``rt`` (time) and ``rp`` (power), both in log units; a predicted OOM is an infeasible run."""
    row = dict(base_row)
    row.update({"device": device, "cpu_cores": fb.decision.target.cpu_cores, "gpu_mem_cap_mib": cap_to_column(GROW)})
    if not bool(pred.feasible[i]):
        row.update({"feasible": False, "infeasible_reason": f"{pred.infeasible_reason[i]} (predicted)",
                    "n_samples": None, "time_total_s": None, "avg_cpu_power_w": None, "avg_gpu_power_w": None,
                    "cpu_power_method": "unknown", "gpu_power_method": "unknown"})
    else:
        scale_p = float(np.exp(rp))
        gpu_w = float(pred.avg_gpu_power_w[i]) * scale_p if device == "gpu" else None
        row.update({
            "feasible": True, "infeasible_reason": None, "n_samples": int(fb.decision.job.batch_size),
            "time_total_s": float(pred_tps * np.exp(rt)) * fb.decision.job.batch_size,
            "avg_cpu_power_w": float(pred.avg_cpu_power_w[i]) * scale_p, "avg_gpu_power_w": gpu_w,
            "cpu_power_method": "modelled", "gpu_power_method": "modelled" if device == "gpu" else "unknown",
        })
    return row


def _estimate_unchosen(needed: Sequence[StoredFeedback], model: PerformanceModel, res: _Residuals,
                       rs: RewardSettings) -> tuple[list[dict[str, Any]], list[str]]:
    """Trace rows estimating the unchosen device's run of each of ``needed`` (in order), and
    the estimate source of each."""
    base = pd.DataFrame([job_row(fb.decision) for fb in needed])
    dev = np.array(["cpu" if fb.decision.device == "gpu" else "gpu" for fb in needed], dtype=object)
    cores = base["hw_cpu_cores"].astype("float64").to_numpy()
    pred = model.predict_columns(base, dev, cores, np.full(len(base), np.nan))
    pred_tps = pred.time_per_batch_s / base["batch_size"].astype("float64").to_numpy()
    keys = [target_key(fb.decision.target) for fb in needed]
    qsim = _sim_vector(base)
    base_rows = cast(list[dict[str, Any]], base.to_dict("records"))  # once: base.iloc[i] cost ~1 ms a row
    rows: list[dict[str, Any]] = []
    sources: list[str] = []
    for i, fb in enumerate(needed):
        d = str(dev[i])
        rt, rp, source = _borrowed_residuals(res, keys[i], d, fb.decision.job, qsim[i], rs)
        sources.append(source)
        rows.append(_estimated_row(base_rows[i], fb, d, pred, i, pred_tps[i], rt, rp))
    return rows, sources


def form_rewards(
    feedback: Sequence[StoredFeedback],
    thresholds: Thresholds,
    perf_model: PerformanceModel | None = None,
    settings: RewardSettings | None = None,
    only: Collection[str] | None = None,
) -> FormedRewards:
    """One labelled pair per feedback (see the module docstring). Raises ``ValueError`` when
    ``feedback`` is empty.

    ``only``: decision ids to form pairs for (the others still serve as evidence); the pairs are
    those the whole set would give for these ids, at a fraction of the cost (the learner's gate
    needs its held-out rows only)."""
    if not feedback:
        raise ValueError("no feedback to form rewards from")
    keep = None if only is None else set(only)
    wanted = list(feedback) if keep is None else [fb for fb in feedback if fb.decision.decision_id in keep]
    if not wanted:
        raise ValueError("only names no decision of the feedback: nothing to form rewards for")
    rs = settings or RewardSettings()
    model = perf_model or PerformanceModel()
    observed, seq_of = _observed_runs(feedback)
    res = _residuals(observed, model)

    # counterfactual rows to estimate
    needed: list[StoredFeedback] = [
        fb for fb in wanted
        if fb.other is None and (fb.decision.device == "gpu" or fb.decision.target.has_gpu)
    ]
    sources: dict[str, int] = defaultdict(int)
    for fb in wanted:
        if fb.other is not None:
            sources["both_measured"] += 1
        elif not (fb.decision.device == "gpu" or fb.decision.target.has_gpu):
            sources["not_needed"] += 1
    source_of: dict[str, str] = {fb.decision.decision_id: "both_measured" for fb in wanted if fb.other is not None}
    estimated_rows: list[dict[str, Any]] = []
    if needed:
        estimated_rows, estimated_sources = _estimate_unchosen(needed, model, res, rs)
        for fb, source in zip(needed, estimated_sources, strict=True):
            sources[source] += 1
            source_of[fb.decision.decision_id] = source

    kept = observed if keep is None else observed[observed["job_id"].astype(str).isin(keep)]
    kept = kept.drop(columns=["_target_key", "_order"])
    frame = pd.concat([kept, pd.DataFrame(estimated_rows)], ignore_index=True) if estimated_rows else kept
    trace = validate(frame, source="feedback rewards")
    pairs = pair_outcomes(trace, thresholds)
    pairs["estimate_source"] = [source_of.get(str(j), "not_needed") for j in pairs["job_id"]]
    pairs["feedback_seq"] = [seq_of.get(str(j), -1) for j in pairs["job_id"]]
    return FormedRewards(trace, pairs, dict(sources))
