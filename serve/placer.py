"""The placement service as a library (no Ray, no HTTP): one decision path over estimated outcomes.

:class:`Placer` answers a :class:`~placement.serve.schemas.PlacementRequest` for one job or a batch,
vectorised over the batch:

1. **Target**: a catalogue id, ``"local"`` (this host, probed once) or a full description.
2. **Estimate** (:mod:`placement.model.estimate`): per job, CPU and GPU time per sample, powers,
   GPU memory need against the target's, each with a source and a log-scale sigma -- the
   performance model's (``model``), corrected by the stored outcomes of the job's signature
   on this target (``history``: feedback and earlier probes, shrunk toward the model by
   the amount of evidence; a run that stands out from the signature's runs before and after
   it is left out, the learner's poison screen; so are the runs of a client whose reports sit
   consistently off other clients', :mod:`placement.serve.learning.clients`) and by a probe the
   request carries for it (``probe``). Every
   estimate on a target is first shifted by the median residual of the last outcomes
   reported on it, or of those since the device changed (:mod:`placement.serve.learning.offsets`): a drifted
   device is seen within about 20 outcomes. The offsets are recomputed every
   :data:`OFFSET_REFRESH_ROWS` feedback rows: by the first placement that finds them stale in
   the library (deterministic), by the service's own thread (``offsets_inline=False``,
   :meth:`Placer.refresh_offsets`) so that no request pays for it.
3. **Policy**: the serving version's ``gpu_probability`` on features that include the
   estimate's threshold margins ``log(speedup / T_t)``, ``log(T_e / energy_ratio)``, their
   sigma and the GPU fit (:func:`placement.model.features.feature_matrix`); GPU when ``p >= 0.5``.
   Where both devices' figures are measured (probe or history) and the margin's ``+-SETTLE_Z``
   sigma interval is clear of the threshold, the estimate settles the answer by itself
   (:func:`placement.model.estimate.settle`, ``decided_by='estimate'``, P(GPU) the estimate's
   probability of passing): the policy keeps the uncertain jobs and the unmeasured ones.
   Per-request thresholds change only those margins: the same policy decides at any
   ``T_t``/``T_e``. A target without a GPU is always CPU (``decided_by='no_gpu'``) and the
   answer has no GPU probability and no cap. A job estimated not to fit in GPU memory is
   never placed on the GPU unless a measurement (probe or outcome) showed it running
   (``decided_by='infeasible'``).
4. **Maximum slowdown**: with ``max_slowdown = m`` the chosen device may be at most ``m``
   times slower than the other by the estimate; a choice that breaks it is switched
   (``decided_by='max_slowdown'``).
5. **Exploration by uncertainty** (bounded, recorded): with probability ``exploration_rate``
   (at most :data:`placement.serve.settings.MAX_EXPLORATION_RATE`) the other device is tried -- only
   for policy decisions on GPU targets whose estimate's ``+-explore_z`` sigma interval
   straddles the joint threshold, never into an estimated OOM, never against
   ``max_slowdown``, never when the request says ``explore=false``. Each decision stores
   ``explored`` and the propensity of the action taken (for off-policy evaluation).
   (``explore_band`` is kept for configuration compatibility and no longer gates.)
6. **Knobs**: on edge targets the policy's :meth:`~placement.agents.policy.Policy.knobs` (cores, GPU
   memory cap); elsewhere all cores and ``"grow"``.
7. **Storage**: the batch is committed to the :class:`~placement.serve.storage.store.Store` before the
   answer is returned; signed jobs are remembered so that their feedback becomes evidence,
   and carried probes are kept as evidence.

The answer says which source decided (``estimate_source``), the estimated speedup and
energy ratio with how each was obtained (``speedup_source``, ``energy_ratio_source``,
``energy_method``, sigmas) and ``gpu_feasible``.

Feedback (:meth:`Placer.feedback`) is checked against the stored decision and stored once;
a signed decision's runs are stored as evidence at once (the next answer uses them).
Policy versions swap atomically (:meth:`Placer.swap`): a request in flight finishes on the
version it started with.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydantic_core

from placement.agents.policy import Policy
from placement.agents.temperature import scale
from placement.core.catalogue import default_catalogue
from placement.core.decision import GROW, GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.outcome import Device
from placement.core.threshold import Thresholds
from placement.core.trace import row_job, target_columns
from placement.model.estimate import (
    Estimate,
    Observation,
    correct,
    margin_columns,
    margins,
    model_estimate,
    settle,
)
from placement.model.features import MODEL_INPUT_COLUMNS, feature_matrix
from placement.model.perfmodel import PerformanceModel
from placement.serve.learning.offsets import OffsetTimeline, shift, target_timeline
from placement.serve.schemas import (
    LOCAL_TARGET,
    FeedbackRequest,
    FeedbackResponse,
    PlacementRequest,
    PlacementResponse,
    cap_to_wire,
    column_length,
    measured_ratios,
)
from placement.serve.settings import Settings
from placement.serve.storage.store import (
    STORED_NONE,
    DecisionBatch,
    Store,
    UnknownDecision,
    caps_to_stored,
    iso,
    split_decision_id,
)
from placement.serve.storage.writer import DecisionWriter

log = logging.getLogger(__name__)


_NO_TIMELINE = OffsetTimeline(now={}, before={}, since_seq={})
"""No offsets, nobody distrusted: a target before its first computation."""

MAX_OFFSET_TARGETS = 64
"""Targets whose offsets a placer keeps (the most recently added): a client sending a new hardware
description per request cannot grow them without bound."""


def _bound(cache: dict[str, Any], limit: int) -> None:
    """Drop the oldest entries of an insertion-ordered dict beyond ``limit``."""
    while len(cache) > limit:
        cache.pop(next(iter(cache)))


MAX_SCREENED_GROUPS = 4096
"""Signature/device groups of evidence whose screen verdicts a placer remembers (the most recent)."""

OFFSET_REFRESH_ROWS = 8
"""New feedback rows after which a target's offsets are recomputed at the next placement."""
EXPLORE_Z = 1.0
"""Exploration is eligible only where the estimate's +-EXPLORE_Z sigma interval straddles the joint threshold."""


class InputError(ValueError):
    """A request that is well-formed JSON but cannot be served; ``field`` names the culprit (answered 422)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


class NotFound(InputError):
    """An unknown id (target, decision, version) in a request: HTTP 404."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message, status=404)


@dataclass(frozen=True)
class PolicyBundle:
    """One servable policy version: the policy, the thresholds it was trained for, its metrics."""

    version: str
    policy: Policy
    thresholds: Thresholds
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    temperature: float = 1.0
    """The answers' P(GPU) is the policy's, scaled by this temperature (:mod:`placement.agents.temperature`;
    the model's metadata): which side of 0.5 never changes, only how sure the answer claims to be."""


def load_bundle(path: Path, version: str | None = None) -> PolicyBundle:
    """Load a model directory's serving policy (:func:`placement.agents.artifact.load_served`: the
    artifact's checks, and no torch for an artifact with the actor's numpy file) as a servable bundle."""
    from placement.agents.artifact import load_served

    served = load_served(Path(path))
    return PolicyBundle(
        version=version or served.metadata.version,
        policy=served.policy,
        thresholds=served.thresholds,
        metrics=dict(served.metadata.metrics),
        path=Path(path),
        temperature=served.metadata.temperature_value,
    )


_JOB_FIELDS = ("name", "family", "mode", "batch_size", "flops_per_batch", "param_count", "input_elems_per_sample",
               "input_bytes_per_sample", "dataset_size")


@dataclass(frozen=True)
class JobBatch:
    """``n`` jobs as columns: ``text`` (name, family, mode) and ``numeric`` (float64; ``dataset_size``
    NaN where unknown). ``jobs`` keeps the typed records when the request sent them."""

    n: int
    text: dict[str, list[str]]
    numeric: dict[str, npt.NDArray[np.float64]]
    jobs: Sequence[Job] | None = None
    signatures: list[str | None] | None = None
    """Each job's structural signature (:mod:`placement.lab.signature`), None where not sent."""

    @classmethod
    def from_jobs(cls, jobs: Sequence[Job]) -> JobBatch:
        """The batch of typed ``jobs`` (kept alongside the columns)."""
        rows = [
            (j.name, j.family, j.mode, j.batch_size, j.flops_per_batch, j.param_count, j.input_elems_per_sample,
             j.input_bytes_per_sample, np.nan if j.dataset_size is None else j.dataset_size)
            for j in jobs
        ]
        columns = dict(zip(_JOB_FIELDS, (list(c) for c in zip(*rows, strict=True)), strict=True))
        sigs = [j.signature for j in jobs]
        return cls._build(len(jobs), columns, jobs, sigs if any(sigs) else None)

    @classmethod
    def from_columns(cls, columns: Any) -> JobBatch:
        """The batch of a columns request (``name`` defaults to ``job``; a missing ``dataset_size``
        is NaN)."""
        n = column_length(columns)
        data = {name: getattr(columns, name) for name in _JOB_FIELDS}
        if data["name"] is None:
            data["name"] = ["job"] * n
        data["dataset_size"] = ([np.nan] * n if data["dataset_size"] is None
                                else [np.nan if v is None else v for v in data["dataset_size"]])
        sigs = getattr(columns, "signature", None)
        return cls._build(n, data, None, list(sigs) if sigs is not None and any(sigs) else None)

    @classmethod
    def from_arrays(cls, n: int, columns: Mapping[str, Any]) -> JobBatch:
        """The batch of checked job columns (:mod:`placement.serve.bulk`: every field of
        ``_JOB_FIELDS``, ``dataset_size`` NaN where unknown, ``signature`` a list or None)."""
        sigs = columns.get("signature")
        return cls._build(n, columns, None, list(sigs) if sigs is not None else None)

    @classmethod
    def _build(cls, n: int, columns: Mapping[str, Any], jobs: Sequence[Job] | None,
               signatures: list[str | None] | None = None) -> JobBatch:
        text = {k: [str(v) for v in columns[k]] if k != "name" else list(columns[k]) for k in ("name", "family", "mode")}
        numeric = {k: np.asarray(columns[k], dtype=np.float64) for k in _JOB_FIELDS[3:]}
        numeric["dataset_size"] = np.where(numeric["dataset_size"] > 0, numeric["dataset_size"], np.nan)
        return cls(n, text, numeric, jobs, signatures)

    def job(self, i: int) -> Job:
        """Job ``i`` as a record: the one sent, or rebuilt from the columns (unvalidated: the request was)."""
        if self.jobs is not None:
            return self.jobs[i]
        row = {"model": self.text["name"][i], "family": self.text["family"][i], "mode": self.text["mode"][i],
               **{k: v[i] for k, v in self.numeric.items()}}  # dataset_size NaN: unknown
        return row_job(row, validate=False, signature=None if self.signatures is None else self.signatures[i])

    def model_columns(self, target: HardwareTarget) -> dict[str, Any]:
        """What :func:`feature_matrix` and :meth:`PerformanceModel.predict_columns` read
        (:data:`placement.model.features.MODEL_INPUT_COLUMNS`: the target's columns broadcast, all cores)."""
        n = self.n
        cols: dict[str, Any] = {
            "family": np.asarray(self.text["family"], dtype=object),
            "mode": np.asarray(self.text["mode"], dtype=object),
            "model": np.asarray(self.text["name"], dtype=object),
            **{k: v for k, v in self.numeric.items() if k != "dataset_size"},
        }
        for name, value in target_columns(target).items():
            if name in MODEL_INPUT_COLUMNS:
                dtype = object if isinstance(value, str) else bool if isinstance(value, bool) else np.float64
                cols[name] = np.full(n, value, dtype=dtype)
        cols["cpu_cores"] = np.full(n, float(target.cpu_cores), dtype=np.float64)
        return cols


def _float_or_none(values: npt.NDArray[np.float64]) -> list[float | None]:
    """The values as JSON numbers, None where not finite (vectorised: no Python test per value)."""
    arr = np.asarray(values, dtype=np.float64)
    out = arr.astype(object)
    out[~np.isfinite(arr)] = None
    return out.tolist()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PlacementResult:
    """The answers to one request, as columns. :meth:`to_response` gives the typed
    :class:`~placement.serve.schemas.PlacementResponse`; :meth:`to_json` the same document, fast."""

    batch_id: str
    created_at: float
    target: HardwareTarget
    thresholds: Thresholds
    max_slowdown: float | None
    policy_version: str
    columns_format: bool
    jobs: JobBatch
    gpu: npt.NDArray[np.bool_]
    cpu_cores: npt.NDArray[np.int64]
    gpu_mem_cap: Sequence[GpuMemCap]
    """Per job: the GPU memory cap (MiB, or GROW; GROW on the CPU and off the edge)."""
    gpu_probability: npt.NDArray[np.float64]
    predicted_speedup: npt.NDArray[np.float64]
    predicted_energy_ratio: npt.NDArray[np.float64]
    explored: npt.NDArray[np.bool_]
    propensity: npt.NDArray[np.float64]
    decided_by: list[str]
    estimate: Estimate | None = None
    """What the policy decided on (sources, sigmas, feasibility); None only for results built by hand."""

    @property
    def n(self) -> int:
        """Number of decisions."""
        return self.jobs.n

    @property
    def decision_ids(self) -> list[str]:
        """Each decision's id, ``<batch id>-<index>``."""
        return [f"{self.batch_id}-{i}" for i in range(self.n)]

    @property
    def gpu_mem_cap_mib(self) -> npt.NDArray[np.int64]:
        """The caps as the store keeps them (:func:`placement.serve.storage.store.caps_to_stored`: -1 = grow)."""
        return caps_to_stored(self.gpu_mem_cap)

    def record(self) -> DecisionBatch:
        """The decisions as the store's :class:`DecisionBatch` (one row per job, columns as stored)."""
        num = self.jobs.numeric
        columns: dict[str, Any] = {
            **{k: num[k] for k in ("batch_size", "flops_per_batch", "param_count", "input_elems_per_sample",
                                   "input_bytes_per_sample")},
            "dataset_size": np.nan_to_num(num["dataset_size"], nan=float(STORED_NONE)),
            "gpu": self.gpu, "cpu_cores": self.cpu_cores, "gpu_mem_cap_mib": self.gpu_mem_cap_mib,
            "gpu_probability": self.gpu_probability, "predicted_speedup": self.predicted_speedup,
            "predicted_energy_ratio": self.predicted_energy_ratio, "explored": self.explored,
            "propensity": self.propensity, "decided_by": self.decided_by, **self.jobs.text,
        }
        return DecisionBatch(self.batch_id, self.created_at, self.target, self.thresholds, self.max_slowdown,
                             self.policy_version, columns)

    def _columns(self) -> dict[str, Any]:
        sp = _float_or_none(self.predicted_speedup)
        er = _float_or_none(self.predicted_energy_ratio)
        has_gpu = self.target.has_gpu
        cols: dict[str, Any] = {
            "decision_id": self.decision_ids,
            "job_name": self.jobs.text["name"],
            "device": np.where(self.gpu, "gpu", "cpu").tolist(),
            "cpu_cores": self.cpu_cores.tolist(),
            "gpu_mem_cap": self._wire_caps(has_gpu),
            "gpu_probability": self.gpu_probability.tolist() if has_gpu else [None] * self.n,
            "predicted_speedup": sp,
            "predicted_energy_ratio": er,
            "explored": self.explored.tolist(),
            "decided_by": self.decided_by,
        }
        est = self.estimate
        if est is not None:
            mixed = est.speedup_source
            cols.update({
                "estimate_source": est.source.tolist(),
                "speedup_source": mixed if has_gpu else [None] * self.n,
                "energy_ratio_source": mixed if has_gpu else [None] * self.n,
                "energy_method": [m if r is not None else None for m, r in zip(est.energy_method.tolist(), er, strict=True)],
                "speedup_sigma": _float_or_none(np.where(np.isfinite(self.predicted_speedup), est.speedup_sigma, np.nan)),
                "energy_ratio_sigma": _float_or_none(np.where(np.isfinite(self.predicted_energy_ratio),
                                                              est.energy_ratio_sigma, np.nan)),
                "gpu_feasible": est.gpu_usable.tolist() if has_gpu else [None] * self.n,
                "gpu_mem_need_mib": _float_or_none(est.gpu_mem_need_mib) if has_gpu else [None] * self.n,
            })
        return cols

    def _wire_caps(self, has_gpu: bool) -> list[Any]:
        """The caps as the answer spells them (:func:`placement.serve.schemas.cap_to_wire`), without a
        call per job where they are all the same (off the edge every cap is GROW)."""
        caps = self.gpu_mem_cap
        caps = caps if isinstance(caps, list) else list(caps)
        if caps and caps.count(caps[0]) == len(caps):
            return [cap_to_wire(caps[0], has_gpu)] * len(caps)
        return [cap_to_wire(c, has_gpu) for c in caps]

    def _head(self) -> dict[str, Any]:
        th = self.thresholds
        return {
            "target_id": self.target.id,
            "policy_version": self.policy_version,
            "thresholds": th.as_dict(),
        }

    def _document(self) -> dict[str, Any]:
        cols = self._columns()
        if self.columns_format:
            return {**self._head(), "decisions": None, "columns": {**cols, "prediction_method": "modelled"}}
        keys = tuple(cols)
        version = self.policy_version
        rows = []
        for values in zip(*cols.values(), strict=True):
            row = dict(zip(keys, values, strict=True))
            row["prediction_method"] = (None if row["predicted_speedup"] is None and row["predicted_energy_ratio"] is None
                                        else "modelled" if row.get("estimate_source", "model") == "model" else "measured")
            row["policy_version"] = version
            rows.append(row)
        return {**self._head(), "decisions": rows, "columns": None}

    def to_json(self) -> bytes:
        """The response document as JSON bytes (the HTTP fast path; same content as :meth:`to_response`)."""
        return pydantic_core.to_json(self._document())

    def to_response(self) -> PlacementResponse:
        """The answer as a typed :class:`PlacementResponse`."""
        return PlacementResponse.model_validate(self._document())


def _random_batch_id() -> str:
    """A fresh random batch id (UUID4 hex): the service's default."""
    return uuid.uuid4().hex


def seeded_batch_ids(seed: int) -> Callable[[], str]:
    """Reproducible batch ids (32 hex digits from a seeded generator) for studies and tests: the
    learner's held-out split then depends on the seed alone. Never for a service, whose ids
    must stay unique across restarts."""
    rng = np.random.default_rng([seed, 0x1D5])
    return lambda: rng.bytes(16).hex()


class Placer:
    """Answers placement requests and takes feedback; see the module docstring."""

    def __init__(
        self,
        bundle: PolicyBundle,
        *,
        settings: Settings,
        store: Store | None,
        perf_model: PerformanceModel | None = None,
        catalogue: Mapping[str, HardwareTarget] | None = None,
        local_target: HardwareTarget | None = None,
        rng_stream: int = 0,
        offsets_inline: bool = True,
        batch_ids: Callable[[], str] | None = None,
    ) -> None:
        """``batch_ids``: where a batch's id comes from (default a random UUID, unique across
        replicas and restarts). Decision ids derive from it, and the learner's held-out split
        hashes them, so a study or test passes :func:`seeded_batch_ids` to be reproducible."""
        self._bundle = bundle
        self._batch_ids = batch_ids if batch_ids is not None else _random_batch_id
        self.settings = settings
        self.store = store
        self.perf_model = perf_model if perf_model is not None else PerformanceModel()
        self.catalogue = dict(catalogue) if catalogue is not None else default_catalogue()
        self._local = local_target
        self._rng = np.random.default_rng([settings.seed, rng_stream])
        self._rng_lock = threading.Lock()
        self.exploration_rate = settings.exploration_rate
        self.explore_band = settings.explore_band
        self.explore_z = EXPLORE_Z
        self._offsets: dict[str, tuple[int, OffsetTimeline]] = {}
        self.offsets_inline = offsets_inline
        """True: a placement recomputes stale target offsets itself (the library; deterministic).
        False: placements use the last computed offsets and :meth:`refresh_offsets`, called by the
        service's own thread, recomputes them (no request pays for it)."""
        self._offset_targets: dict[str, HardwareTarget] = {}
        self._screens: dict[Any, frozenset[int]] = {}
        """Screen verdicts per evidence group (:meth:`_screened_evidence`), by the group's rows."""
        self.writer: DecisionWriter | None = None
        """``decision_writes = "behind"``: commits this placer's decisions after the answers."""
        if store is not None and settings.decision_writes == "behind":
            self.writer = DecisionWriter(store, max_pending_jobs=settings.max_pending_decisions)

    def close(self, timeout_s: float = 30.0) -> None:
        """Commit the decisions still queued behind answers (``decision_writes = "behind"``)."""
        if self.writer is not None:
            self.writer.close(timeout_s)

    # -- policy versions -----------------------------------------------------------------
    @property
    def bundle(self) -> PolicyBundle:
        """The policy version serving now."""
        return self._bundle

    @property
    def version(self) -> str:
        """The serving version's id."""
        return self._bundle.version

    def swap(self, bundle: PolicyBundle) -> None:
        """Serve ``bundle`` from now on; requests in flight finish on the old one."""
        old = self._bundle.version
        self._bundle = bundle
        if old != bundle.version:
            log.info("policy version %s -> %s", old, bundle.version)

    def set_exploration(self, rate: float | None = None, band: float | None = None) -> None:
        """Change exploration at runtime (Serve ``user_config``); bounds as in :class:`Settings`."""
        if rate is not None:
            Settings.from_mapping({**self.settings.model_dump(), "exploration_rate": rate}, origin="user_config")
            self.exploration_rate = float(rate)
        if band is not None:
            Settings.from_mapping({**self.settings.model_dump(), "explore_band": band}, origin="user_config")
            self.explore_band = float(band)

    # -- targets ---------------------------------------------------------------------------
    def resolve_target(self, ref: str | HardwareTarget) -> HardwareTarget:
        """The hardware a request names: a full description as given, ``local`` (this host, probed
        once), or a catalogue id; :class:`InputError` for an unknown id."""
        if isinstance(ref, HardwareTarget):
            return ref
        if ref == LOCAL_TARGET:
            if self._local is None:
                from placement.lab.probe import probe_local

                self._local = probe_local(LOCAL_TARGET)
            return self._local
        target = self.catalogue.get(ref)
        if target is None:
            raise InputError(
                "target", f"unknown target '{ref}': use 'local', a catalogue id ({', '.join(sorted(self.catalogue))}) "
                "or a full hardware description"
            )
        return target

    def thresholds_for(self, request: PlacementRequest) -> Thresholds:
        """The service's thresholds with the request's ``speedup_min`` / ``energy_ratio_max``
        overrides (the missing-power rule stays the service's)."""
        base = self.settings.thresholds
        if request.thresholds is None:
            return base
        return Thresholds(
            request.thresholds.speedup_min if request.thresholds.speedup_min is not None else base.speedup_min,
            request.thresholds.energy_ratio_max if request.thresholds.energy_ratio_max is not None else base.energy_ratio_max,
            base.missing_power,
        )

    # -- placement -------------------------------------------------------------------------
    def place(self, request: PlacementRequest, *, record: bool = True) -> PlacementResult:
        """Decide every job of ``request``, store the decisions, return the answers.
        ``record=False``: decide without storing anything (an evaluation: the answers' decision
        ids cannot take feedback)."""
        n = request.n_jobs
        if n > self.settings.max_batch_jobs:
            raise InputError(
                "columns" if request.columns is not None else "jobs",
                f"{n} jobs exceed the limit of {self.settings.max_batch_jobs} per request: split the batch",
                status=413,
            )
        if request.columns is not None:
            batch = JobBatch.from_columns(request.columns)
        else:
            batch = JobBatch.from_jobs([request.job] if request.job is not None else list(request.jobs or []))
        return self.place_batch(batch, request, record=record)

    def place_batch(self, batch: JobBatch, request: PlacementRequest, *, record: bool = True) -> PlacementResult:
        """Decide every job of ``batch`` on the request's target: the policy's P(GPU) on the
        features and the performance estimate's margins, settled by the estimate where it is sure,
        never the GPU for an estimated OOM, then the request's ``max_slowdown`` and bounded
        exploration of unsure decisions; cores and GPU memory cap on edge targets. Records the
        decisions in the store (when the placer has one) unless ``record`` is false."""
        n = batch.n
        target = self.resolve_target(request.target)
        bundle = self._bundle  # one version for the whole request
        th = self.thresholds_for(request)

        cols = batch.model_columns(target)
        est = self.estimate(batch, target, cols, request)
        m = margins(est, th.speedup_min, th.energy_ratio_max)
        x = feature_matrix({**cols, **margin_columns(m, est)})
        p_gpu = np.asarray(bundle.policy.gpu_probability(x), dtype=np.float64).reshape(-1)
        if p_gpu.shape != (n,) or not np.all(np.isfinite(p_gpu)):
            raise RuntimeError(f"policy {bundle.version} returned bad GPU probabilities (shape {p_gpu.shape})")
        p_gpu = scale(p_gpu, bundle.temperature)
        speedup, ratio = est.speedup, est.energy_ratio
        usable = est.gpu_usable

        decided_by = np.full(n, "policy", dtype=object)
        if not target.has_gpu:
            gpu = np.zeros(n, dtype=bool)
            p_gpu = np.zeros(n, dtype=np.float64)
            decided_by[:] = "no_gpu"
        else:
            p_gpu, settled_rows = settle(p_gpu, est, m)
            decided_by[settled_rows] = "estimate"
            gpu = p_gpu >= 0.5
            oom = gpu & ~usable  # never GPU for an estimated OOM unless a measurement shows it ran
            gpu = gpu & usable
            decided_by[oom] = "infeasible"

        slow_ok = np.ones(n, dtype=bool)
        if request.max_slowdown is not None and target.has_gpu:
            ms = request.max_slowdown
            with np.errstate(invalid="ignore"):
                cpu_too_slow = speedup > ms
                gpu_too_slow = speedup < 1.0 / ms
            flip = (~gpu & cpu_too_slow & usable) | (gpu & gpu_too_slow & est.cpu_feasible)
            gpu = np.where(flip, ~gpu, gpu)
            decided_by[flip] = "max_slowdown"
            # may the other device be tried without breaking the constraint?
            slow_ok = np.where(gpu, ~cpu_too_slow, ~gpu_too_slow)

        rate = self.exploration_rate
        explored = np.zeros(n, dtype=bool)
        propensity = np.ones(n, dtype=np.float64)
        if target.has_gpu and request.explore and rate > 0:
            flip_feasible = np.where(gpu, est.cpu_feasible, usable)
            eligible = (decided_by == "policy") & m.straddles(self.explore_z) & flip_feasible & slow_ok
            if eligible.any():
                with self._rng_lock:
                    u = self._rng.random(n)
                explored = eligible & (u < rate)
                gpu = np.where(explored, ~gpu, gpu)
                decided_by[explored] = "exploration"
                propensity = np.where(eligible, np.where(explored, rate, 1.0 - rate), 1.0)

        if target.is_edge:
            # the knob heads read the jobs' own features (the model's estimate, as build_features gives
            # them one by one), all rows in one pass
            cores, caps = bundle.policy.knobs_batch(feature_matrix(cols), target, gpu.astype(np.int64),
                                                    job_at=batch.job)
        else:
            cores = np.full(n, target.cpu_cores, dtype=np.int64)
            caps = [GROW] * n

        result = PlacementResult(
            batch_id=self._batch_ids(), created_at=time.time(), target=target, thresholds=th,
            max_slowdown=request.max_slowdown, policy_version=bundle.version, columns_format=request.columns is not None,
            jobs=batch, gpu=gpu, cpu_cores=cores, gpu_mem_cap=caps, gpu_probability=p_gpu,
            predicted_speedup=speedup, predicted_energy_ratio=ratio, explored=explored, propensity=propensity,
            decided_by=decided_by.tolist(), estimate=est,
        )
        if self.store is not None and record:
            if self.writer is not None:
                self.writer.submit(result.record())  # committed a moment after the answer
            else:
                self.store.insert_decisions(result.record())
            self._keep_signatures(result, request)
        return result

    # -- the estimate ----------------------------------------------------------------------
    def estimate(self, batch: JobBatch, target: HardwareTarget, cols: Mapping[str, Any],
                 request: PlacementRequest | None = None) -> Estimate:
        """The model's estimate of every job, corrected by the request's probes and by the stored
        outcomes of each job's signature on this target (:func:`placement.model.estimate.correct`)."""
        timeline = self._target_timeline(target)
        offsets = timeline.now
        est = shift(model_estimate(self.perf_model, cols), offsets)
        rows: dict[int, list[Observation]] = {}
        probes = request.probes if request is not None else None
        if probes is not None:
            for i, probe in enumerate(probes):
                if probe is None:
                    continue
                for run in probe.runs:
                    if run.device == "gpu" and not target.has_gpu:
                        continue
                    rows.setdefault(i, []).append(self._observation(est, i, run.device, run.feasible,
                                                                    run.time_per_sample_s, run.power_w,
                                                                    run.power_method, True, "probe"))
        if batch.signatures is not None and self.store is not None:
            self._history(batch, target, est, rows, offsets, timeline.distrusted, timeline.distrusted_clients)
        return correct(est, rows)

    def _target_offsets(self, target: HardwareTarget) -> dict[str, float]:
        """The target's log offsets now (:meth:`_target_timeline`)."""
        return self._target_timeline(target).now

    def _target_timeline(self, target: HardwareTarget) -> OffsetTimeline:
        """The target's log offsets (:func:`placement.serve.learning.offsets.target_timeline`) and the
        decision ids of distrusted clients' feedback there, recomputed once
        :data:`OFFSET_REFRESH_ROWS` new feedback rows arrived since the last computation (reading
        and screening the recent feedback takes a few hundred milliseconds; a placement after
        every feedback must not pay it each time). Counted in rows, not seconds, so the answers
        do not depend on timing."""
        from placement.serve.storage.store import target_key

        if self.store is None:
            return _NO_TIMELINE
        key = target_key(target)
        if not self.offsets_inline:
            if key not in self._offset_targets:
                self._offset_targets[key] = target
                _bound(self._offset_targets, MAX_OFFSET_TARGETS)
            cached = self._offsets.get(key)
            return cached[1] if cached is not None else _NO_TIMELINE
        return self._recompute_if_stale(key, target, self.store.last_feedback_seq())

    def _recompute_if_stale(self, key: str, target: HardwareTarget, seq: int) -> OffsetTimeline:
        cached = self._offsets.get(key)
        if cached is not None and 0 <= seq - cached[0] < OFFSET_REFRESH_ROWS:
            return cached[1]
        timeline = target_timeline(self.store, self.perf_model, target)
        self._offsets[key] = (seq, timeline)
        _bound(self._offsets, MAX_OFFSET_TARGETS)
        return timeline

    def refresh_offsets(self) -> int:
        """Recompute the offsets of every target placed on since the start (at most
        :data:`MAX_OFFSET_TARGETS`, the most recent) whose offsets are :data:`OFFSET_REFRESH_ROWS`
        feedback rows old; returns how many were recomputed. With ``offsets_inline=False`` the
        service calls this from its own thread (:class:`placement.serve.app.PlacementService`), so the ~0.5 s of
        reading and screening the recent feedback is paid by no placement; a placement then uses
        offsets at most one refresh late (the first one on a new target: none yet)."""
        if self.store is None:
            return 0
        seq = self.store.last_feedback_seq()
        done = 0
        for key, target in list(self._offset_targets.items()):
            cached = self._offsets.get(key)
            if cached is None or not 0 <= seq - cached[0] < OFFSET_REFRESH_ROWS:
                self._recompute_if_stale(key, target, seq)
                done += 1
        return done

    @staticmethod
    def _observation(est: Estimate, i: int, device: str, feasible: bool, time_s: float | None, power_w: float | None,
                     method: str, same_job: bool, source: Any) -> Observation:
        if device == "cpu":
            mt, mp = float(est.cpu_time_per_sample_s[i]), float(est.cpu_power_w[i])
        else:
            mt = float(est.gpu_time_per_sample_s[i])
            mp = float(est.gpu_power_w[i] + est.gpu_host_cpu_power_w[i])
        return Observation(device, feasible, time_s, power_w, method, mt, mp, same_job, source)

    def _history(self, batch: JobBatch, target: HardwareTarget, est: Estimate, rows: dict[int, list[Observation]],
                 offsets: Mapping[str, float] | None = None, distrusted: frozenset[str] = frozenset(),
                 distrusted_clients: frozenset[str] = frozenset()) -> None:
        """Append each signed job's stored outcomes on ``target`` (same mode) as observations, but
        not the runs of ``distrusted`` decisions nor any feedback of ``distrusted_clients`` (a
        distrusted client's, :mod:`placement.serve.learning.clients`: its runs older than the
        window that distrusted it would otherwise count again)."""
        from placement.serve.storage.store import target_key

        assert batch.signatures is not None and self.store is not None
        sigs = [s for s in batch.signatures if s]
        evidence = self.store.evidence(sigs, target_key(target))
        if not evidence:
            return
        ev_jobs: list[Job] = []
        ev_rows: list[Any] = []
        for ev_list in evidence.values():
            for ev in ev_list:
                if ev.source == "feedback" and (ev.decision_id in distrusted or ev.client in distrusted_clients):
                    continue
                ev_jobs.append(Job.model_validate_json(ev.job_json))
                ev_rows.append(ev)
        if not ev_rows:
            return
        ev_batch = JobBatch.from_jobs(ev_jobs)
        ev_est = shift(model_estimate(self.perf_model, ev_batch.model_columns(target)), offsets or {})
        by_sig: dict[str, list[int]] = {}
        for k, ev in enumerate(ev_rows):
            by_sig.setdefault(ev.signature, []).append(k)
        screened = self._screened_evidence(ev_rows, ev_jobs, ev_est, by_sig)
        for i, sig in enumerate(batch.signatures):
            if not sig or sig not in by_sig:
                continue
            job = batch.job(i)
            for k in by_sig[sig]:
                ev, ej = ev_rows[k], ev_jobs[k]
                if ej.mode != job.mode or k in screened:
                    continue
                same = ej.batch_size == job.batch_size
                obs = self._observation(ev_est, k, ev.device, ev.feasible, ev.time_per_sample_s, ev.power_w,
                                        ev.power_method, same, "history")
                if ev.device == "gpu" and not same and not ev.feasible:
                    continue  # an OOM at another batch size says nothing certain about this one
                rows.setdefault(i, []).append(obs)

    def _screened_evidence(self, ev_rows: Sequence[Any], ev_jobs: Sequence[Job], ev_est: Estimate,
                           by_sig: Mapping[str, list[int]]) -> set[int]:
        """Evidence rows left out of the history: per signature, device and mode (the history is per
        mode, and the model's error differs between training and inference), in arrival order, the runs
        whose log residuals against the model (time per sample, eq. 2 power) stand out from the runs
        before and after them (:func:`placement.serve.learning.rewards.robust_outliers`, the learner's
        signature screen). A client lying about a few of an architecture's runs (a GPU 3-10x slower
        than it is) is outvoted by the architecture's other runs instead of moving its answers; a
        device that really changed is followed by the target's offsets, and its newest runs here
        once later runs agree with them."""
        from placement.core.job import MODES
        from placement.serve.learning.rewards import robust_outliers

        out: set[int] = set()
        for ks in by_sig.values():
            for device, mode in itertools.product(("cpu", "gpu"), MODES):
                group = [k for k in ks if ev_rows[k].device == device and ev_jobs[k].mode == mode]
                if len(group) < 4:
                    continue
                # the verdicts depend only on the group's runs (a target's offsets shift every residual
                # of the group alike): remembered until a run joins or leaves it
                first, last = ev_rows[group[0]], ev_rows[group[-1]]
                key = (first.signature, first.target_key, device, mode, len(group), first.at, first.decision_id,
                       last.at, last.decision_id)
                cached = self._screens.get(key)
                if cached is not None:
                    out.update(group[j] for j in cached)
                    continue
                res_t = np.full(len(group), np.nan)
                res_p = np.full(len(group), np.nan)
                for j, k in enumerate(group):
                    ev = ev_rows[k]
                    o = self._observation(ev_est, k, device, ev.feasible, ev.time_per_sample_s, ev.power_w,
                                          ev.power_method, False, "history")
                    if ev.feasible and ev.time_per_sample_s and o.model_time_per_sample_s > 0:
                        res_t[j] = math.log(ev.time_per_sample_s / o.model_time_per_sample_s)
                    if ev.power_w and o.model_power_w > 0:
                        res_p[j] = math.log(ev.power_w / o.model_power_w)
                flags = robust_outliers(res_t, res_p)
                self._screens[key] = frozenset(int(j) for j in np.flatnonzero(flags))
                _bound(self._screens, MAX_SCREENED_GROUPS)
                out.update(k for k, flag in zip(group, flags, strict=True) if flag)
        return out

    def _keep_signatures(self, result: PlacementResult, request: PlacementRequest) -> None:
        """Remember signed jobs (feedback becomes evidence) and keep carried probes as evidence."""
        from placement.serve.storage.store import EvidenceRow, target_key

        batch = result.jobs
        if batch.signatures is None or self.store is None:
            return
        ids = result.decision_ids
        keep: list[tuple[str, str, str]] = []
        evidence: list[EvidenceRow] = []
        key = target_key(result.target)
        for i, sig in enumerate(batch.signatures):
            if not sig:
                continue
            job_json = batch.job(i).model_dump_json()
            keep.append((ids[i], sig, job_json))
            probe = request.probes[i] if request.probes is not None else None
            if probe is None:
                continue
            for run in probe.runs:
                if run.device == "gpu" and not result.target.has_gpu:
                    continue
                evidence.append(EvidenceRow(sig, key, result.created_at, "probe", ids[i], job_json, run.device,
                                            run.feasible, run.time_per_sample_s, run.power_w, run.power_method))
        self.store.record_signatures(keep)
        self.store.add_evidence(evidence)

    # -- feedback --------------------------------------------------------------------------
    def _stored_decision(self, decision_id: str) -> Any:
        """The stored decision; one this placer answered but has not written yet (``decision_writes =
        "behind"``) is written first. :class:`UnknownDecision` otherwise."""
        store = self.store
        if store is None:
            raise RuntimeError("feedback needs a store")
        try:
            return store.get_decision(decision_id)
        except UnknownDecision:
            if self.writer is None or not self.writer.holds(split_decision_id(decision_id)[0]):
                raise
        self.writer.flush(self.settings.decision_wait_s)
        return store.get_decision(decision_id)

    def feedback(self, request: FeedbackRequest, *, client: str | None = None) -> tuple[str, bool]:
        """Check and store feedback once, attributed to ``client`` (the HTTP layer's name for the
        bearer token it carried; None: unattributed). Returns ``(response JSON, replayed)``.

        Raises :class:`NotFound` (unknown decision), :class:`InputError` (outcome does not fit
        the decision) or :class:`placement.serve.storage.store.FeedbackConflict` (a different payload was
        already recorded for this decision).
        """
        if self.store is None:
            raise RuntimeError("feedback needs a store")
        try:
            decision = self._stored_decision(request.decision_id)
        except UnknownDecision:
            raise NotFound("decision_id", f"no decision '{request.decision_id}' (quote decision_id from a placement answer)") from None
        target = decision.target
        if request.outcome.device != decision.device:
            raise InputError(
                "outcome.device",
                f"the decision chose '{decision.device}' but outcome.device is '{request.outcome.device}': report the "
                "chosen device's run as outcome and any other run as other_outcome",
            )
        for name, run in (("outcome", request.outcome), ("other_outcome", request.other_outcome)):
            if run is None:
                continue
            if run.device == Device.GPU.value and not target.has_gpu:
                raise InputError(f"{name}.device", f"target '{target.id}' has no GPU")
            if run.cpu_cores is not None and run.cpu_cores > target.cpu_cores:
                raise InputError(f"{name}.cpu_cores", f"target '{target.id}' has {target.cpu_cores} cores, got {run.cpu_cores}")
            if run.gpu_mem_cap_mib is not None and (run.device != Device.GPU.value or run.gpu_mem_cap_mib > target.gpu_mem_mib):
                raise InputError(
                    f"{name}.gpu_mem_cap_mib",
                    f"a cap is for GPU runs and at most the GPU's {target.gpu_mem_mib} MiB, got {run.gpu_mem_cap_mib}",
                )
        payload = request.model_dump_json()
        digest = hashlib.sha256(payload.encode()).hexdigest()
        response = self._feedback_response(request, decision.device)
        answer, replayed = self.store.record_feedback(
            request.decision_id, digest, response.model_dump_json(), request.outcome, request.other_outcome, client
        )
        if not replayed:
            self._feedback_evidence(request, target)
        return answer, replayed

    def _feedback_evidence(self, request: FeedbackRequest, target: HardwareTarget) -> None:
        """A signed decision's measured runs become evidence of its signature on its target, at once."""
        from placement.serve.storage.store import EvidenceRow, target_key

        assert self.store is not None
        signed = self.store.decision_signature(request.decision_id)
        if signed is None:
            return
        sig, job_json = signed
        now = time.time()
        rows = []
        for run in (request.outcome, request.other_outcome):
            if run is None:
                continue
            t = p = None
            method = "unknown"
            if run.feasible:
                out = run.device_outcome()
                t = out.time_per_sample_s
                e = out.energy_per_sample_j
                if math.isfinite(e) and t > 0:
                    p = e / t
                    method = out.energy_method
            rows.append(EvidenceRow(sig, target_key(target), now, "feedback", request.decision_id, job_json,
                                    str(run.device), bool(run.feasible), t, p, str(method)))
        self.store.add_evidence(rows)

    @staticmethod
    def _feedback_response(request: FeedbackRequest, device: str) -> FeedbackResponse:
        observed = [request.outcome.device] + ([request.other_outcome.device] if request.other_outcome else [])
        speedup = ratio = None
        method = None
        if request.other_outcome is not None:
            try:
                speedup, ratio, method = measured_ratios(request.outcome, request.other_outcome)
            except ValueError as exc:  # the request model refuses these first; a record built in code may not
                raise InputError("other_outcome", str(exc)) from None
        return FeedbackResponse(
            decision_id=request.decision_id, recorded_at=iso(time.time()), device=Device(device),
            observed_devices=[Device(d) for d in observed], measured_speedup=speedup, measured_energy_ratio=ratio,
            energy_method=method,
        )

    # -- versions from the store -----------------------------------------------------------
    def refresh(self) -> bool:
        """Serve the store's active version if it changed (placer replicas call this on a timer).
        Returns whether the version changed."""
        if self.store is None:
            return False
        active = self.store.active_version()
        if active is None or active == self._bundle.version:
            return False
        stored = self.store.get_version(active)
        self.swap(load_bundle(stored.path, stored.version))
        return True


def bootstrap_store(store: Store, settings: Settings) -> PolicyBundle:
    """The bundle to serve at start.

    * A model given explicitly (``PLACEMENT_MODEL_PATH`` / ``--model``) whose version the store
      does not know yet is registered and served (a new model is adopted).
    * Otherwise the store's active version: a restart keeps serving what the learner
      promoted (or what was rolled back to), not the bundled model.
    * An empty store registers and serves the configured model (default: the bundled
      ``models/default``).

    Safe when several replicas start at once (the first registration wins).
    """
    from placement.agents.artifact import DEFAULT_MODEL_DIR

    explicit = settings.model_path
    if explicit is not None:
        bundle = load_bundle(explicit)
        if _register_initial(store, bundle, explicit):
            return bundle
    active = store.active_version()
    if active is not None:
        stored = store.get_version(active)
        return load_bundle(stored.path, stored.version)
    path = explicit or DEFAULT_MODEL_DIR
    bundle = load_bundle(path)
    if not _register_initial(store, bundle, path):
        active = store.active_version()
        if active is not None and active != bundle.version:
            stored = store.get_version(active)
            return load_bundle(stored.path, stored.version)
        if active is None:
            store.promote(bundle.version, {"reason": "start with configured model"})
    return bundle


def _register_initial(store: Store, bundle: PolicyBundle, path: Path) -> bool:
    """Register ``bundle`` as the serving version unless its version is known; True if registered."""
    try:
        store.get_version(bundle.version)
        return False
    except KeyError:
        pass
    try:
        store.register_version(bundle.version, Path(path).resolve(), parent=None, status="serving",
                               thresholds=bundle.thresholds,
                               metrics={"source": "configured model", **_summary(bundle.metrics)}, activate=True)
    except ValueError:  # another replica registered it first
        return False
    log.info("registered and serving model %s from %s", bundle.version, path)
    return True


def _summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Small scalar metrics only (the registry row stays small)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
