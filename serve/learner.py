"""The online learner: accumulated feedback -> PPO update -> safety gate -> promotion (or rejection).

One update (:meth:`Learner.update`):

1. **Window**: the ``history_window`` most recent feedback rows (older outcomes age out, so
   the policy follows drift).
2. **Rewards**: one labelled pair per feedback (:func:`serve.rewards.form_rewards`: the
   unchosen device measured by the client, or estimated from similar jobs' history and the
   performance model), under the serving version's thresholds.
3. **Split**: a deterministic share ``holdout_fraction`` of the pairs (by a hash of the
   decision id) is held out; the rest is the training set.
4. **Candidate**: the serving model is loaded fresh from its directory and fine-tuned by PPO
   (:func:`agents.ppo.fine_tune`) on ``DevicePlacement-v0`` replaying the training pairs'
   trace rows, for ``ppo_timesteps`` steps with ``seed``.
5. **Safety gate**: serving and candidate policies are scored on the held-out pairs
   (:func:`agents.evaluation.evaluate_policy`: mean joint-threshold reward, accuracy); the
   candidate is promoted only if its mean reward is not below the serving policy's by more
   than ``gate_tolerance`` (default 0: not worse) and the holdout has at least
   ``min_holdout`` rows.
6. **Versions**: every candidate is saved (:func:`agents.artifact.save_model`) under
   ``<state_dir>/policies/<version>`` with its seed, thresholds, training-trace hash, code
   version and gate metrics, and registered in the store as ``serving`` (promoted) or
   ``rejected``; the feedback it trained on is written as a trace beside it
   (``<state_dir>/traces/<version>.parquet``). Earlier versions stay for rollback
   (:meth:`serve.store.Store.rollback`). Placer replicas poll the store and load a newly
   active version without restarting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from placement.perfmodel import PerformanceModel
from placement.trace import TraceMeta, file_sha256, write_trace
from placement.version import code_version
from serve.quarantine import Screened, screen_stored
from serve.rewards import FormedRewards, RewardSettings, form_rewards, screen_feedback
from serve.schemas import LearnerReport
from serve.settings import Settings
from serve.store import Store

log = logging.getLogger(__name__)

LAST_SEQ_KEY = "learner_last_feedback_seq"
LAST_REPORT_KEY = "learner_last_report"
QUARANTINE_KEY = "learner_quarantine"
"""Store-wide counts of quarantined feedback by reason (:mod:`serve.quarantine`)."""


def learner_fields(store: Store) -> dict[str, Any]:
    """The learner's figures for ``GET /v1/policy``: quarantined feedback by reason (store-wide)."""
    raw = store.get_meta(QUARANTINE_KEY)
    quarantine = json.loads(raw) if raw else {"counts": {}, "last_seq": 0, "recent": []}
    return {"quarantine": quarantine}


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


def ppo_fine_tune(loaded: Any, env: Any, timesteps: int, seed: int) -> Any:
    """The default trainer: :func:`agents.ppo.fine_tune` with the conservative warm recipe."""
    from agents.ppo import PpoConfig, fine_tune

    return fine_tune(loaded, env, timesteps, seed=seed, config=PpoConfig.warm())


class Learner:
    """Turns feedback into PPO updates behind a safety gate; one instance per service."""

    def __init__(self, settings: Settings, store: Store, perf_model: PerformanceModel | None = None,
                 reward_settings: RewardSettings | None = None, trainer: Trainer | None = None) -> None:
        self.settings = settings
        self.store = store
        self.perf_model = perf_model or PerformanceModel()
        self.reward_settings = reward_settings or RewardSettings()
        self.trainer = trainer or ppo_fine_tune
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
            self.store.increment_meta(f"learner_updates_{report.status}")
            log.info("learner update: %s (%s)", report.status, report.reason)
            return report

    def _update(self) -> LearnerReport:
        from agents.artifact import ModelMetadata, load_model, save_model
        from agents.evaluation import evaluate_policy, labelled_set
        from agents.ppo import PpoConfig, make_env

        s = self.settings
        serving_version = self.store.active_version()
        if serving_version is None:
            raise RuntimeError("no serving policy version registered in the store")
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
                                 reward_sources=excluded)
        formed = form_rewards(feedback, thresholds, self.perf_model, self.reward_settings)
        formed = replace(formed, sources={**formed.sources, **excluded})
        pairs = formed.pairs[formed.pairs["hw_gpu_gflops"].astype("float64") > 0].reset_index(drop=True)
        held = holdout_mask(pairs["job_id"].astype(str).tolist(), s.holdout_fraction, s.seed)
        base = LearnerReport(
            status="skipped", reason="", serving_version=serving_version, feedback_used=len(feedback),
            train_rows=int((~held).sum()), holdout_rows=int(held.sum()), reward_sources=formed.sources,
            quarantined=quarantine.counts, screened_out=excluded,
        )
        self.store.set_meta(LAST_SEQ_KEY, str(last_seq))
        if held.sum() < s.min_holdout or (~held).sum() < s.min_holdout:
            return base.model_copy(update={"reason": f"too little feedback on GPU targets for a gated update "
                                           f"({int((~held).sum())} train, {int(held.sum())} held out; need "
                                           f"{s.min_holdout} each)"})
        train_ids = set(pairs.loc[~held, "job_id"].astype(str))
        train_trace = formed.trace[formed.trace["job_id"].astype(str).isin(train_ids)].reset_index(drop=True)
        holdout = labelled_set(pairs[held].reset_index(drop=True))

        version = self._next_version()
        trace_path, trace_sha = self._write_training_trace(version, train_trace, formed, thresholds.as_dict())
        import torch

        torch.set_num_threads(s.torch_threads)
        serving_score = evaluate_policy(loaded.policy, holdout, "serving")  # before fine-tuning touches the agent
        env = make_env(train_trace, thresholds=thresholds)
        candidate = self.trainer(loaded, env, s.ppo_timesteps, s.seed)
        candidate_score = evaluate_policy(candidate, holdout, "candidate")
        passed = candidate_score.mean_reward >= serving_score.mean_reward - s.gate_tolerance
        gate = {
            "serving_holdout_reward": serving_score.mean_reward,
            "candidate_holdout_reward": candidate_score.mean_reward,
            "serving_holdout_accuracy": serving_score.accuracy,
            "candidate_holdout_accuracy": candidate_score.accuracy,
            "oracle_holdout_reward": candidate_score.oracle_mean_reward,
            "gate_tolerance": s.gate_tolerance,
            "passed": bool(passed),
        }
        metrics: dict[str, Any] = {
            "parent": serving_version,
            "gate": gate,
            "feedback_used": len(feedback),
            "feedback_last_seq": last_seq,
            "train_rows": base.train_rows,
            "holdout_rows": base.holdout_rows,
            "reward_sources": formed.sources,
            "ppo_timesteps": s.ppo_timesteps,
            "targets": sorted(set(pairs["target_id"].astype(str))),
            "training_trace": {"path": str(trace_path), "sha256": trace_sha},
        }
        meta = ModelMetadata(
            version=version, seed=s.seed, thresholds=thresholds.as_dict(), trace_hashes={str(trace_path): trace_sha},
            code_version=code_version(), metrics=metrics, ppo_config=PpoConfig.warm().to_dict(),
        )
        out = save_model(s.policies_dir / version, dnn=loaded.dnn, ppo=candidate, normaliser=loaded.normaliser,
                         thresholds=thresholds, metadata=replace(meta))
        report = base.model_copy(update={
            "candidate_version": version,
            "serving_holdout_reward": serving_score.mean_reward,
            "candidate_holdout_reward": candidate_score.mean_reward,
            "serving_holdout_accuracy": serving_score.accuracy,
            "candidate_holdout_accuracy": candidate_score.accuracy,
        })
        summary = {"gate": gate, "feedback_used": len(feedback), "reward_sources": formed.sources,
                   "training_trace_sha256": trace_sha}
        if passed:
            self.store.register_version(version, out, parent=serving_version, status="serving", thresholds=thresholds,
                                        metrics=summary, activate=True)
            return report.model_copy(update={
                "status": "promoted",
                "reason": f"candidate holdout reward {candidate_score.mean_reward:.4f} >= serving "
                          f"{serving_score.mean_reward:.4f} - tolerance {s.gate_tolerance:g}",
            })
        self.store.register_version(version, out, parent=serving_version, status="rejected", thresholds=thresholds,
                                    metrics=summary)
        return report.model_copy(update={
            "status": "rejected",
            "reason": f"candidate holdout reward {candidate_score.mean_reward:.4f} < serving "
                      f"{serving_score.mean_reward:.4f} - tolerance {s.gate_tolerance:g} (safety gate)",
        })

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

    def quarantine_counts(self) -> dict[str, Any]:
        raw = self.store.get_meta(QUARANTINE_KEY)
        return json.loads(raw) if raw else {"counts": {}, "last_seq": 0, "recent": []}

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
            method="chosen-device runs as reported by clients; unchosen-device rows 'modelled' by serve.rewards "
            "(performance model corrected by residuals of observed runs: similar-job history, then target "
            "calibration)",
            extra={"thresholds": thresholds, "estimate_sources": formed.sources,
                   "database": str(self.store.path)},
        )
        write_trace(trace, path, meta)
        return path, file_sha256(path)

    def last_report(self) -> dict[str, Any] | None:
        raw = self.store.get_meta(LAST_REPORT_KEY)
        return None if raw is None else json.loads(raw)
