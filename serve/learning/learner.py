"""The online learner: feedback -> quarantine and poison screens -> labels -> supervised step +
anchored PPO -> off-policy gate -> promotion (or rejection).

One update (:meth:`Learner.update`), run once ``min_feedback_per_update`` (default 8) new
feedback rows arrived, or on demand (``POST /v1/policy/update``):

1. **Window**: the ``history_window`` most recent feedback rows (older outcomes age out, so
   the policy follows drift).
2. **Quarantine** (:mod:`placement.serve.learning.quarantine`): rows whose derived quantities cannot be used are
   kept in the store, counted by reason (``GET /v1/policy``), never trained on.
3. **Poison screens** (:func:`placement.serve.learning.rewards.screen_feedback`): robust residual screens per
   target and device and per architecture signature, contradiction checks across
   near-identical jobs; excluded rows are counted by reason.
4. **Labels** (:func:`placement.serve.learning.rewards.form_rewards`): one labelled pair per feedback (the
   unchosen device measured, or estimated from the architecture's evidence and the model).
5. **Split**: a deterministic share ``holdout_fraction`` of the pairs (by a hash of the
   decision id) is held out for the gate; the rest trains.
6. **Candidate** (:func:`placement.agents.ppo.anchored_update`): a supervised step on the PPO actor on
   the formed labels, each weighted by its confidence (:data:`LABEL_CONFIDENCE`; no
   architecture signature carries more than ``max_signature_share`` of the weight, no client --
   the token its feedback carried -- more than ``max_client_share``), then PPO
   on ``DevicePlacement-v0`` replaying the training rows, anchored (KL) to the supervised
   result. A candidate that answers as the serving policy on every evaluation row is not a
   new version (no tie promotions). Labels and held-out rows are weighted by recency
   (``recency_half_life``) so that after a drift the new regime outweighs the old.
7. **Off-policy gate** (:meth:`Learner._gate`, :mod:`placement.agents.offpolicy`): doubly robust
   estimates of both policies' reward on the held-out feedback with the logged propensities;
   promoted only when the candidate's lower bound (serving estimate + the lower end of the
   paired difference's ``gate_confidence`` interval) is not below the serving estimate (less
   ``gate_tolerance``, default 0) and the estimated gain is positive (:func:`gate_decision`). While an operator's rollback pins the serving version
   (``POST /v1/policy/rollback``; released by ``POST /v1/policy/release``) the interval is
   taken at ``pinned_gate_confidence``; a candidate that beats it there releases the pin.
8. **Versions**: every trained candidate that changes an answer is saved
   (:func:`placement.agents.artifact.save_model`) under ``<state_dir>/policies/<version>`` with its
   seed, thresholds, training-trace hash, code version, gate figures and label weights, and
   registered as ``serving`` (promoted) or ``rejected``; its training rows are written as a
   trace beside it. Placer replicas poll the store and load a newly active version. The
   last :data:`RECENT_UPDATES` reports are kept for ``GET /v1/policy``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from placement.core.threshold import Thresholds
from placement.core.trace import TraceMeta, file_sha256, write_trace
from placement.core.version import code_version
from placement.model.features import ESTIMATE_COLUMNS
from placement.model.perfmodel import PerformanceModel
from placement.serve.learning.quarantine import Screened, screen_stored
from placement.serve.learning.rewards import (
    FormedRewards,
    RewardSettings,
    form_rewards,
    job_signature,
    screen_feedback,
)
from placement.serve.schemas import LearnerReport
from placement.serve.settings import Settings
from placement.serve.storage.store import Store, StoredFeedback

log = logging.getLogger(__name__)

LAST_SEQ_KEY = "learner_last_feedback_seq"
LAST_REPORT_KEY = "learner_last_report"
QUARANTINE_KEY = "learner_quarantine"
"""Store-wide counts of quarantined feedback by reason (:mod:`placement.serve.learning.quarantine`)."""


PIN_KEY = "policy_pinned_version"
"""The version an operator's rollback pinned (``POST /v1/policy/rollback``); cleared by
``POST /v1/policy/release`` or by a candidate that beats it at ``pinned_gate_confidence``."""
UPDATES_KEY = "learner_recent_updates"
RECENT_UPDATES = 20

LABEL_CONFIDENCE: dict[str, float] = {
    "both_measured": 1.0, "measured_infeasible": 1.0, "not_needed": 1.0,
    "history": 0.6, "calibrated_model": 0.4, "model": 0.2,
}
"""Weight of a formed label in the supervised step, by how it was formed: both devices measured
(or a measured failure, which decides the label) > one measured + the architecture's evidence
(``history``) > one measured + the target's calibration > the bare performance model."""


def pin_version(store: Store, version: str) -> None:
    """Pin ``version`` (an operator's rollback): until :func:`release_pin`, or a candidate that
    beats it at ``pinned_gate_confidence``, the learner's gate compares candidates with it."""
    store.set_meta(PIN_KEY, version)


def pinned_version(store: Store) -> str | None:
    """The pinned version, or ``None`` when nothing is pinned."""
    value = store.get_meta(PIN_KEY)
    return value or None


def release_pin(store: Store) -> str | None:
    """Release the operator's pin; returns the version that was pinned (None if none was)."""
    was = pinned_version(store)
    store.set_meta(PIN_KEY, "")
    return was


def learner_fields(store: Store) -> dict[str, Any]:
    """The learner's figures for ``GET /v1/policy``: quarantined feedback by reason (store-wide),
    the pinned version, and the most recent updates (events used, screened out by reason, the
    gate's estimates and bounds, and why it promoted or not)."""
    raw = store.get_meta(QUARANTINE_KEY)
    quarantine = json.loads(raw) if raw else {"counts": {}, "last_seq": 0, "recent": []}
    recent = store.get_meta(UPDATES_KEY)
    return {"quarantine": quarantine, "pinned_version": pinned_version(store),
            "recent_updates": json.loads(recent) if recent else []}


def recency_weights(by_id: dict[str, StoredFeedback], half_life: int) -> dict[str, float]:
    """Per decision id: ``0.5 ** (k / half_life)`` for the ``k``-th newest of ``by_id`` (the feedback
    the update uses) -- the newest counts fully, one ``half_life`` of feedback older half (training
    labels and the gate's held-out rows alike), so after a drift the new regime outweighs the old
    within the window. Counted over the feedback used, not the sequence numbers: rows left out
    (quarantined, screened, a distrusted client's) age no one, so a client sending many reports
    the screens leave out cannot make the others' count less."""
    order = sorted(by_id.items(), key=lambda kv: kv[1].seq, reverse=True)
    return {i: float(0.5 ** (k / half_life)) for k, (i, _) in enumerate(order)}


def _cap_shares(w: np.ndarray, group: np.ndarray, max_share: float) -> set[Any]:
    """Scale ``w`` in place so that no ``group`` carries more than ``max_share`` of the total (or
    ``1 / n_groups`` when there are fewer groups than ``1 / max_share``); returns the groups capped.
    Water-filling: the heaviest groups are scaled down until none exceeds the share."""
    groups = sorted(set(group.tolist()), key=str)
    share = max(max_share, 1.0 / max(len(groups), 1))
    capped: set[Any] = set()
    for _ in range(100):
        total = float(w.sum())
        over = [g for g in groups if float(w[group == g].sum()) > share * total * (1 + 1e-9)]
        if not over:
            break
        rest = float(sum(w[group == g].sum() for g in groups if g not in over))
        # each over-share group gets exactly `share` of the new total: m = share * (rest + k m)
        k = len(over)
        target = share * rest / (1 - share * k) if share * k < 1 else None
        for g in over:
            rows = group == g
            mass = float(w[rows].sum())
            w[rows] *= (target / mass) if target is not None else (share * total / mass)
            capped.add(g)
    return capped


def label_weights(pairs: pd.DataFrame, by_id: dict[str, StoredFeedback], max_share: float,
                  max_client_share: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Per training row: :data:`LABEL_CONFIDENCE` of its source, then capped so no signature carries
    more than ``max_share`` of the total weight (or ``1 / n_signatures`` when there are fewer
    signatures than ``1 / max_share``), then so no client (:attr:`StoredFeedback.client`; the
    unattributed rows one group) carries more than ``max_client_share`` (likewise at least
    ``1 / n_clients``: with one client nothing is capped). The client cap comes last: one token
    flooding an update is held to its share whatever architectures it reports on. With a single
    large client and a small one, capping the large one raises the small one's share -- the cap
    bounds a flood, it does not outvote a minority (the screens do)."""
    ids = pairs["job_id"].astype(str).tolist()
    source = pairs["estimate_source"].astype(str).tolist()
    w = np.empty(len(ids))
    for k, (i, src) in enumerate(zip(ids, source, strict=True)):
        fb = by_id[i]
        if not fb.outcome.feasible:
            src = "measured_infeasible"
        w[k] = LABEL_CONFIDENCE.get(src, 0.2)
    sig = np.array([job_signature(by_id[i].decision.job) for i in ids], dtype=object)
    capped = _cap_shares(w, sig, max_share)
    client = np.array([by_id[i].client or "" for i in ids], dtype=object)
    clients_capped = _cap_shares(w, client, max_client_share)
    return w, {"mean_confidence": float(w.mean()) if len(w) else 0.0, "signatures": len(set(sig.tolist())),
               "signatures_capped": len(capped), "max_signature_share": max_share,
               "clients": len(set(client.tolist())), "clients_capped": sorted(c or "(unattributed)" for c in clients_capped),
               "max_client_share": max_client_share}


def with_margins(frame: pd.DataFrame, margins_by_id: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """``frame`` (rows keyed by ``job_id``, the decision id) with the estimate columns of
    :meth:`Learner.decision_margins`, which :func:`placement.model.features.feature_matrix` then reads
    instead of the performance model's unshifted margins."""
    out = frame.copy()
    ids = out["job_id"].astype(str)
    for c in ESTIMATE_COLUMNS:
        out[c] = ids.map(lambda i, c=c: margins_by_id[i][c] if i in margins_by_id else np.nan).astype("float64")
    return out


def holdout_mask(decision_ids: pd.Series | list[str], fraction: float, seed: int) -> np.ndarray:
    """Deterministic held-out rows: ``sha256(seed:decision_id)`` below ``fraction`` of the range."""
    out = np.empty(len(decision_ids), dtype=bool)
    limit = int(fraction * 2**32)
    for i, did in enumerate(decision_ids):
        digest = hashlib.sha256(f"{seed}:{did}".encode()).digest()
        out[i] = int.from_bytes(digest[:4], "big") < limit
    return out


Trainer = Callable[[Any, Any, int, int], Any]
"""``(loaded model, env, timesteps, seed) -> PpoPolicy``: how a candidate is trained."""



def gate_decision(*, gain: float, lower: float, upper: float, serving: float, tolerance: float, confidence: float,
                  rows: int, differs: int) -> tuple[bool, str]:
    """The gate's verdict from the paired difference's estimate ``gain`` and interval ``[lower, upper]``
    (candidate - serving) and the serving estimate: promoted when the estimated gain is positive and
    the candidate's lower bound ``serving + lower`` is not below ``serving - tolerance``
    (``Settings.gate_tolerance``; 0 -- the default -- asks the bound to reach the serving estimate
    itself). Returns ``(passed, why)``."""
    bound = serving + lower
    if gain <= 0:
        return False, f"rejected: estimated gain {gain:+.4f} <= 0 on {rows} held-out rows ({differs} answered differently)"
    floor = serving - tolerance
    tol = f" - tolerance {tolerance:g}" if tolerance else ""
    interval = f"{100 * confidence:g} % interval [{lower:+.4f}, {upper:+.4f}]"
    if not bound >= floor:
        return False, (f"rejected: candidate's lower bound {bound:.4f} (gain {gain:+.4f}, {interval}) is below the "
                       f"serving estimate {serving:.4f}{tol}")
    return True, (f"promoted: candidate's lower bound {bound:.4f} >= serving estimate {serving:.4f}{tol} (gain "
                  f"{gain:+.4f}, {interval}, {differs} of {rows} held-out answers changed)")

class Learner:
    """Turns feedback into PPO updates behind a safety gate; one instance per service."""

    def __init__(self, settings: Settings, store: Store, perf_model: PerformanceModel | None = None,
                 reward_settings: RewardSettings | None = None, trainer: Trainer | None = None) -> None:
        self.settings = settings
        self.store = store
        self.perf_model = perf_model or PerformanceModel()
        self.reward_settings = reward_settings or RewardSettings()
        self.trainer = trainer
        """None: :func:`placement.agents.ppo.anchored_update` (supervised step, then anchored PPO)."""
        self._lock = threading.Lock()

    def pending_feedback(self) -> int:
        """Feedback rows received since the last update."""
        last = int(self.store.get_meta(LAST_SEQ_KEY) or 0)
        return max(0, self.store.last_feedback_seq() - last)

    def maybe_update(self) -> LearnerReport | None:
        """Update when at least ``min_feedback_per_update`` new feedback rows arrived."""
        if self.pending_feedback() < self.settings.min_feedback_per_update:
            return None
        return self.update()

    def update(self) -> LearnerReport:
        """One learner update (see the module docstring). Thread-safe: one at a time."""
        with self._lock:
            start = time.perf_counter()
            report = self._update()
            report = report.model_copy(update={"duration_s": time.perf_counter() - start})
            self.store.set_meta(LAST_REPORT_KEY, report.model_dump_json())
            raw = self.store.get_meta(UPDATES_KEY)
            recent = (json.loads(raw) if raw else []) + [
                {"at": time.time(), **report.model_dump(mode="json", exclude={"reward_sources"})}]
            self.store.set_meta(UPDATES_KEY, json.dumps(recent[-RECENT_UPDATES:]))
            self.store.increment_meta(f"learner_updates_{report.status}")
            log.info("learner update: %s (%s)", report.status, report.reason)
            return report

    def _update(self) -> LearnerReport:
        from placement.agents.artifact import ModelMetadata, load_model, save_model
        from placement.agents.evaluation import evaluate_policy, labelled_set
        from placement.agents.ppo import AnchorConfig, PpoConfig, anchored_update, make_env

        s = self.settings
        serving_version = self.store.active_version()
        if serving_version is None:
            raise RuntimeError("no serving policy version registered in the store")
        pinned = pinned_version(self.store)
        if pinned is not None and pinned != serving_version:
            pinned = None  # the pin belonged to a version no longer served
        last_seq = self.store.last_feedback_seq()
        skipped: list[tuple[int, str, str]] = []
        stored_rows = self.store.recent_feedback(s.history_window, skipped=skipped)
        quarantine = screen_stored(stored_rows, skipped)
        self._count_quarantine(quarantine)
        feedback = quarantine.usable
        if not feedback:
            why = "no feedback yet" if not quarantine.quarantined else "every feedback in the window is quarantined"
            self.store.set_meta(LAST_SEQ_KEY, str(last_seq))
            return LearnerReport(status="skipped", reason=why, serving_version=serving_version,
                                 quarantined=quarantine.counts)
        stored = self.store.get_version(serving_version)
        loaded = load_model(stored.path)
        thresholds = loaded.thresholds
        feedback, excluded = screen_feedback(feedback, self.perf_model, self.reward_settings)
        if not feedback:
            self.store.set_meta(LAST_SEQ_KEY, str(last_seq))
            return LearnerReport(status="skipped", reason=f"every feedback in the window was excluded as untrustworthy "
                                 f"({excluded}): no candidate trained", serving_version=serving_version,
                                 reward_sources=excluded, quarantined=quarantine.counts, screened_out=excluded)
        formed = form_rewards(feedback, thresholds, self.perf_model, self.reward_settings)
        formed = replace(formed, sources={**formed.sources, **excluded})
        by_id = {fb.decision.decision_id: fb for fb in feedback}
        # features as the placer forms them: margins of the estimate shifted by each target's offsets (as they
        # stood for the world each outcome measured)
        margins_by_id = self.decision_margins(by_id, thresholds)
        formed = replace(formed, pairs=with_margins(formed.pairs, margins_by_id),
                         trace=with_margins(formed.trace, margins_by_id))
        pairs = formed.pairs[formed.pairs["hw_gpu_gflops"].astype("float64") > 0].reset_index(drop=True)
        held = holdout_mask(pairs["job_id"].astype(str).tolist(), s.holdout_fraction, s.seed)
        base = LearnerReport(
            status="skipped", reason="", serving_version=serving_version, feedback_used=len(feedback),
            train_rows=int((~held).sum()), holdout_rows=int(held.sum()), reward_sources=formed.sources,
            quarantined=quarantine.counts, screened_out=excluded,
        )
        self.store.set_meta(LAST_SEQ_KEY, str(last_seq))
        if held.sum() < s.min_holdout or (~held).sum() < 1:
            return base.model_copy(update={"reason": f"too little feedback on GPU targets for a gated update "
                                           f"({int((~held).sum())} train, {int(held.sum())} held out; the gate needs "
                                           f"{s.min_holdout} held out)"})
        train_pairs = pairs[~held].reset_index(drop=True)
        train_ids = set(train_pairs["job_id"].astype(str))
        train_trace = formed.trace[formed.trace["job_id"].astype(str).isin(train_ids)].reset_index(drop=True)
        train_set = labelled_set(train_pairs)
        holdout = labelled_set(pairs[held].reset_index(drop=True))
        recency = recency_weights(by_id, s.recency_half_life)
        weights, weight_info = label_weights(train_set.pairs, by_id, s.max_signature_share, s.max_client_share)
        weights = weights * np.array([recency[i] for i in train_set.pairs["job_id"].astype(str)])

        import torch

        torch.set_num_threads(s.torch_threads)
        serving_score = evaluate_policy(loaded.policy, holdout, "serving")  # before training touches the agent
        serving_all = np.concatenate([np.asarray(loaded.policy.predict(d.x)[0]).reshape(-1) for d in (train_set, holdout)])
        env = make_env(train_trace, thresholds=thresholds)
        train_metrics: dict[str, Any] = {}
        if self.trainer is not None:
            candidate = self.trainer(loaded, env, s.ppo_timesteps, s.seed)
        else:
            candidate, train_metrics = anchored_update(loaded, env, train_set.x, train_set.y, weights,
                                                       s.ppo_timesteps, seed=s.seed, anchor=AnchorConfig())
        candidate_all = np.concatenate([np.asarray(candidate.predict(d.x)[0]).reshape(-1) for d in (train_set, holdout)])
        changed = int((candidate_all != serving_all).sum())
        changed_train = int((candidate_all[: len(train_set)] != serving_all[: len(train_set)]).sum())
        if changed == 0:
            return base.model_copy(update={
                "reason": f"the candidate answers as the serving policy on all {len(serving_all)} evaluation rows: "
                          "not a new version",
                "gate": {"answers_changed": 0, "evaluation_rows": len(serving_all), "passed": False,
                         "decision": "tie: no new version"},
            })
        candidate_score = evaluate_policy(candidate, holdout, "candidate")
        confidence = s.pinned_gate_confidence if pinned else s.gate_confidence
        gate = self._gate(feedback, holdout, loaded.policy, candidate, thresholds, confidence, recency)
        gate.update({
            "answers_changed": changed, "answers_changed_train": changed_train, "evaluation_rows": len(serving_all),
            "pinned_version": pinned, "serving_holdout_reward_formed": serving_score.mean_reward,
            "candidate_holdout_reward_formed": candidate_score.mean_reward,
        })
        passed = bool(gate["passed"])
        version = self._next_version()
        trace_path, trace_sha = self._write_training_trace(version, train_trace, formed, thresholds.as_dict())
        metrics: dict[str, Any] = {
            "parent": serving_version,
            "gate": gate,
            "feedback_used": len(feedback),
            "feedback_last_seq": last_seq,
            "train_rows": base.train_rows,
            "holdout_rows": base.holdout_rows,
            "reward_sources": formed.sources,
            "screened_out": excluded,
            "quarantined": quarantine.counts,
            "label_weights": weight_info,
            "training": train_metrics,
            "ppo_timesteps": s.ppo_timesteps,
            "targets": sorted(set(pairs["target_id"].astype(str))),
            "training_trace": {"path": str(trace_path), "sha256": trace_sha},
        }
        meta = ModelMetadata(
            version=version, seed=s.seed, thresholds=thresholds.as_dict(), trace_hashes={str(trace_path): trace_sha},
            code_version=code_version(), metrics=metrics, ppo_config=PpoConfig.warm().to_dict(),
            # a fine-tune of the serving policy keeps its temperature (refitting one needs grouped refits
            # of the whole recipe: `placement temperature`)
            temperature=({**loaded.metadata.temperature, "inherited_from": serving_version}
                         if loaded.metadata.temperature is not None else None),
        )
        out = save_model(s.policies_dir / version, dnn=loaded.dnn, ppo=candidate, normaliser=loaded.normaliser,
                         thresholds=thresholds, metadata=replace(meta))
        report = base.model_copy(update={
            "candidate_version": version,
            "serving_holdout_reward": serving_score.mean_reward,
            "candidate_holdout_reward": candidate_score.mean_reward,
            "serving_holdout_accuracy": serving_score.accuracy,
            "candidate_holdout_accuracy": candidate_score.accuracy,
            "gate": gate,
        })
        summary = {"gate": gate, "feedback_used": len(feedback), "reward_sources": formed.sources,
                   "screened_out": excluded, "training_trace_sha256": trace_sha}
        if passed:
            self.store.register_version(version, out, parent=serving_version, status="serving", thresholds=thresholds,
                                        metrics=summary, activate=True)
            if pinned:
                release_pin(self.store)
            return report.model_copy(update={"status": "promoted", "reason": gate["decision"]})
        self.store.register_version(version, out, parent=serving_version, status="rejected", thresholds=thresholds,
                                    metrics=summary)
        return report.model_copy(update={"status": "rejected", "reason": gate["decision"]})

    def decision_margins(self, by_id: Mapping[str, StoredFeedback], thresholds: Thresholds) -> dict[str, dict[str, float]]:
        """The estimate columns (:data:`placement.model.features.ESTIMATE_COLUMNS`) of each decision's
        job as the placer forms them, at default knobs: the performance model's estimate shifted
        by the target's offsets (:mod:`placement.serve.learning.offsets`) as they stood for the world that outcome
        measured (before or after a change of the device), margins at ``thresholds``."""
        from placement.model.estimate import margin_columns, margins, model_estimate
        from placement.serve.learning.offsets import shift, target_timeline
        from placement.serve.placer import JobBatch
        from placement.serve.storage.store import target_key

        groups: dict[str, list[str]] = {}
        targets: dict[str, Any] = {}
        for decision_id, fb in by_id.items():
            key = target_key(fb.decision.target)
            groups.setdefault(key, []).append(decision_id)
            targets[key] = fb.decision.target
        out: dict[str, dict[str, float]] = {}
        for key, ids in groups.items():
            target = targets[key]
            timeline = target_timeline(self.store, self.perf_model, target)
            # each outcome with the offsets of the world it measured: a row from before a change of
            # the device keeps the old level (its label is of the old device)
            by_offsets: dict[tuple[tuple[str, float], ...], list[str]] = {}
            for i in ids:
                by_offsets.setdefault(tuple(sorted(timeline.at(by_id[i].seq).items())), []).append(i)
            for offsets, sub in by_offsets.items():
                cols = JobBatch.from_jobs([by_id[i].decision.job for i in sub]).model_columns(target)
                est = shift(model_estimate(self.perf_model, cols), dict(offsets))
                m = margin_columns(margins(est, thresholds.speedup_min, thresholds.energy_ratio_max), est)
                for k, i in enumerate(sub):
                    out[i] = {c: float(np.asarray(m[c])[k]) for c in ESTIMATE_COLUMNS}
        return out

    def _gate(self, feedback: list[StoredFeedback], holdout: Any, serving: Any, candidate: Any,
              thresholds: Any, confidence: float, recency: dict[str, float]) -> dict[str, Any]:
        """The off-policy gate: doubly robust estimates of both policies' mean reward on the held-out
        feedback (:mod:`placement.agents.offpolicy`), with the logged propensities.

        Reward model ``rhat(x, a)``: the reward of ``a`` on the pair whose unchosen device is
        *estimated* (model + evidence), as it would be had the client sent only the chosen run.
        Observed reward ``r``: the reward of the logged action on the pair as reported (both
        devices where the client measured both). The candidate's bound is the serving estimate
        plus the lower end of the paired difference's interval; promotion needs the candidate to
        differ, a positive estimated gain, and that bound not below the serving estimate."""
        from placement.agents.offpolicy import doubly_robust, dr_terms, one_hot, paired_difference
        from placement.core.threshold import placement_reward

        pairs = holdout.pairs
        ids = pairs["job_id"].astype(str).tolist()
        by_id = {fb.decision.decision_id: fb for fb in feedback}
        logged = np.array([1 if by_id[i].decision.device == "gpu" else 0 for i in ids], dtype=np.int64)
        propensity = np.array([min(max(by_id[i].decision.propensity, 1e-6), 1.0) for i in ids])
        labels = holdout.labels
        r_obs_both = np.stack([placement_reward(np.zeros(len(ids), bool), labels),
                               placement_reward(np.ones(len(ids), bool), labels)], axis=1)
        reward = r_obs_both[np.arange(len(ids)), logged]
        # reward model: the same held-out feedback with the unchosen run estimated, not measured
        held_ids = set(ids)
        blind = [replace(fb, other=None) if fb.decision.decision_id in held_ids else fb for fb in feedback]
        est = form_rewards(blind, thresholds, self.perf_model, self.reward_settings, only=held_ids).pairs
        est = est.set_index(est["job_id"].astype(str)).reindex(ids)
        rhat = r_obs_both.copy()
        ok = est["label_gpu"].notna().to_numpy()
        if ok.any():
            from placement.agents.evaluation import labelled_set

            est_set = labelled_set(est[ok].reset_index(drop=True))
            n_ok = len(est_set)
            rhat[ok] = np.stack([placement_reward(np.zeros(n_ok, bool), est_set.labels),
                                 placement_reward(np.ones(n_ok, bool), est_set.labels)], axis=1)
        serving_a = np.asarray(serving.predict(holdout.x)[0]).reshape(-1).astype(np.int64)
        candidate_a = np.asarray(candidate.predict(holdout.x)[0]).reshape(-1).astype(np.int64)
        v = np.array([recency[i] for i in ids])
        t_s = dr_terms(reward, logged, propensity, one_hot(serving_a), rhat)
        t_c = dr_terms(reward, logged, propensity, one_hot(candidate_a), rhat)
        v_s = doubly_robust(reward, logged, propensity, one_hot(serving_a), rhat, confidence, v)
        v_c = doubly_robust(reward, logged, propensity, one_hot(candidate_a), rhat, confidence, v)
        diff = paired_difference(t_c, t_s, confidence, v)
        bound = v_s.value + diff.lower
        differs = int((serving_a != candidate_a).sum())
        tolerance = float(self.settings.gate_tolerance)
        passed, why = gate_decision(gain=diff.value, lower=diff.lower, upper=diff.upper, serving=v_s.value,
                                    tolerance=tolerance, confidence=confidence, rows=len(ids), differs=differs)
        return {
            "method": "doubly_robust (reward model: estimated counterfactual; logged propensities; rows weighted "
                      f"by recency, half-life {self.settings.recency_half_life} feedback rows)",
            "confidence": confidence,
            "holdout_rows": len(ids),
            "holdout_answers_changed": differs,
            "holdout_explored": int(sum(by_id[i].decision.explored for i in ids)),
            "serving": v_s.to_dict(),
            "candidate": v_c.to_dict(),
            "difference": diff.to_dict(),
            "candidate_lower_bound": bound,
            "tolerance": tolerance,
            "passed": passed,
            "decision": why,
        }

    def _count_quarantine(self, screened: Screened) -> None:
        """Add the quarantined rows not counted before to the store-wide counts by reason
        (:data:`QUARANTINE_KEY`: ``{"counts": {reason: n}, "last_seq": s, "recent": [...]}``)."""
        raw = self.store.get_meta(QUARANTINE_KEY)
        state: dict[str, Any] = json.loads(raw) if raw else {"counts": {}, "last_seq": 0, "recent": []}
        counted = int(state.get("last_seq", 0))
        new = [q for q in screened.quarantined if q.seq > counted]
        if not new:
            return
        counts = dict(state.get("counts", {}))
        for q in new:
            counts[q.reason] = int(counts.get(q.reason, 0)) + 1
        recent = (list(state.get("recent", [])) + [
            {"seq": q.seq, "decision_id": q.decision_id, "reason": q.reason, "detail": q.detail} for q in new])[-20:]
        state = {"counts": counts, "last_seq": max(q.seq for q in new), "recent": recent}
        self.store.set_meta(QUARANTINE_KEY, json.dumps(state))

    def _next_version(self) -> str:
        existing = {v.version for v in self.store.versions()}
        n = sum(1 for v in existing if v.startswith("online-")) + 1
        while f"online-{n:04d}" in existing:
            n += 1
        return f"online-{n:04d}"

    def _write_training_trace(self, version: str, trace: pd.DataFrame, formed: FormedRewards,
                              thresholds: dict[str, Any]) -> tuple[Path, str]:
        path = self.settings.state_dir / "traces" / f"{version}.parquet"
        meta = TraceMeta(
            source="feedback",
            description=f"training rows of learner update {version}: observed runs and estimated counterfactuals",
            seed=self.settings.seed,
            code_version=code_version(),
            hardware="targets: " + ", ".join(sorted(set(trace["target_id"].astype(str)))),
            method="chosen-device runs as reported by clients; unchosen-device rows 'modelled' by placement.serve.learning.rewards "
            "(performance model corrected by residuals of observed runs: similar-job history, then target "
            "calibration)",
            extra={"thresholds": thresholds, "estimate_sources": formed.sources,
                   "database": str(self.store.path)},
        )
        write_trace(trace, path, meta)
        return path, file_sha256(path)
