"""The service's online learner on a stream of jobs, as studies 1 (Table 5) and 7 (online drift) run it.

A starting model (DNN + warm PPO) is saved as the service's first version and served by the
library-level placer (:class:`placement.serve.placer.Placer`) over a fresh store in a temporary
folder; its learner (:class:`placement.serve.learning.learner.Learner`) updates behind its safety
gate. Each event of the stream: the placer decides, the run of the device it chose is reported as
feedback (bandit feedback, as a client would), and the learner updates once enough feedback has
arrived. What an event is, what the chosen run reports and what is recorded are the study's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from placement.core.threshold import Thresholds
    from placement.serve.placer import PlacementResult, Placer
    from placement.serve.schemas import LearnerReport, PlacementRequest

E = TypeVar("E")


def online_learner_loop(
    dnn: Any,
    ppo: Any,
    thresholds: Thresholds,
    events: Iterable[E],
    request: Callable[[E], PlacementRequest],
    outcome: Callable[[E, PlacementResult], Mapping[str, Any]],
    *,
    record: Callable[[E, PlacementResult, LearnerReport | None, Placer], Any] | None = None,
    seed: int,
    version: str,
    trace_hashes: Mapping[str, str],
    update_every: int,
    min_holdout: int,
    ppo_steps: int,
    exploration: float,
    threads: int,
    history_window: int | None = None,
) -> tuple[list[Any], list[LearnerReport]]:
    """Serve ``dnn`` + ``ppo`` through the service's placer and learner over ``events``.

    Per event, in order: ``request(event)`` is the placement request (one job, one target);
    the placer answers it (a :class:`~placement.serve.placer.PlacementResult`, recorded as a
    decision); ``outcome(event, result)`` is the reported run of the chosen device
    (:class:`~placement.serve.schemas.ReportedOutcome` fields: device, feasible, n_samples,
    time_total_s in s, avg_*_power_w in W...), sent as the decision's feedback; the learner updates
    if due (a promoted or rejected candidate is then served: the placer refreshes); last,
    ``record(event, result, update, placer)`` (``update``: the learner's report, None when it did not
    run) returns what the study keeps of the event. ``events`` is consumed lazily, one event per
    decision, so a generator may draw from the study's random stream in step with the outcomes.

    The starting model is saved as version ``version`` (seed ``seed``, ``thresholds``,
    ``trace_hashes`` in its metadata). Service settings: the thresholds, ``seed``, an update every
    ``update_every`` feedback rows with at least ``min_holdout`` held out for the gate, at least 64
    PPO steps per update (``ppo_steps``), ``exploration`` (probability of a bounded exploratory
    decision), ``threads`` torch threads, and ``history_window`` recent feedback rows per update
    (None: the service default).

    Returns what ``record`` returned for each event (none without ``record``) and the learner's
    update reports, in order.
    """
    from placement.agents.artifact import ModelMetadata, save_model
    from placement.serve.learning.learner import Learner
    from placement.serve.placer import Placer, bootstrap_store, seeded_batch_ids
    from placement.serve.schemas import FeedbackRequest, ReportedOutcome
    from placement.serve.settings import Settings
    from placement.serve.storage.store import Store

    records: list[Any] = []
    updates: list[LearnerReport] = []
    with tempfile.TemporaryDirectory(prefix="online-learner-") as tmp:
        model_dir = Path(tmp) / "start"
        save_model(model_dir, dnn=dnn, ppo=ppo, normaliser=dnn.normaliser, thresholds=thresholds,
                   metadata=ModelMetadata(version=version, seed=seed, thresholds=thresholds.as_dict(),
                                          trace_hashes=dict(trace_hashes)))
        window: dict[str, Any] = {} if history_window is None else {"history_window": history_window}
        settings = Settings(state_dir=Path(tmp) / "state", model_path=model_dir, speedup_min=thresholds.speedup_min,
                            energy_ratio_max=thresholds.energy_ratio_max, seed=seed, min_feedback_per_update=update_every,
                            min_holdout=min_holdout, ppo_timesteps=max(64, ppo_steps), exploration_rate=exploration,
                            torch_threads=threads, **window)
        store = Store(settings.database)
        # seeded decision ids: the learner's held-out split hashes them, so the study reproduces from its seed
        placer = Placer(bootstrap_store(store, settings), settings=settings, store=store, batch_ids=seeded_batch_ids(seed))
        learner = Learner(settings, store)
        for event in events:
            result = placer.place(request(event))
            placer.feedback(FeedbackRequest(decision_id=result.decision_ids[0],
                                            outcome=ReportedOutcome.model_validate(dict(outcome(event, result)))))
            update = learner.maybe_update()
            if update is not None:
                updates.append(update)
                placer.refresh()
            if record is not None:
                records.append(record(event, result, update, placer))
        store.close()
    return records, updates
