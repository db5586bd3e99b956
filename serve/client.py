"""Typed Python client of the placement service, and :func:`apply` to use a decision in this process.

::

    from placement.serve.client import PlacementClient, apply

    with PlacementClient("http://127.0.0.1:8000", token=None) as client:
        decision = client.place(job, target="agx-orin")
        with apply(decision):                     # cores (affinity + torch threads), GPU memory cap
            outcome = run_the_job(decision.device)
        client.feedback(decision.decision_id, outcome)   # ReportedOutcome or a dict of its fields

Every method returns the response records of :mod:`placement.serve.schemas`; a 4xx/5xx answer raises
:class:`PlacementApiError` carrying the status and the fields the service named.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from placement.core.decision import PlacementDecision
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.lab.job_probe import ProbeResult
from placement.serve.schemas import (
    DecisionOut,
    FeedbackResponse,
    LearnerReport,
    PlacementResponse,
    PolicyInfo,
    ReportedOutcome,
    RollbackResponse,
    cap_from_wire,
)

DEFAULT_URL = "http://127.0.0.1:8000"
M = TypeVar("M", bound=BaseModel)


class PlacementApiError(RuntimeError):
    """The service refused a request: ``status``, ``error`` and ``detail`` (``[{field, message}]``)."""

    def __init__(self, status: int, error: str, detail: list[dict[str, str]]) -> None:
        self.status, self.error, self.detail = status, error, detail
        fields = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in detail) or error
        super().__init__(f"HTTP {status} {error}: {fields}")


class PlacementClient:
    """Synchronous client (httpx). ``token`` is the service's bearer token (feedback/policy routes)."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> PlacementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, method: str, path: str, model: type[M], body: Any = None) -> M:
        response = self._http.request(method, path, json=body)
        if response.status_code >= 400:
            try:
                data = response.json()
                raise PlacementApiError(response.status_code, str(data.get("error", "error")), list(data.get("detail", [])))
            except ValueError:
                raise PlacementApiError(response.status_code, "error", [{"field": "body", "message": response.text[:500]}]) from None
        return model.model_validate_json(response.content)

    @staticmethod
    def _request(target: str | HardwareTarget, thresholds: Mapping[str, float] | None, max_slowdown: float | None,
                 explore: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "target": target.model_dump(mode="json") if isinstance(target, HardwareTarget) else target,
            "explore": explore,
        }
        if thresholds:
            body["thresholds"] = dict(thresholds)
        if max_slowdown is not None:
            body["max_slowdown"] = max_slowdown
        return body

    # -- routes ----------------------------------------------------------------------------
    def place(self, job: Job, target: str | HardwareTarget = "local", *, thresholds: Mapping[str, float] | None = None,
              max_slowdown: float | None = None, explore: bool = True, probe: ProbeResult | None = None) -> DecisionOut:
        """Place one job; ``thresholds`` may set ``speedup_min`` (T_t) and ``energy_ratio_max`` (T_e);
        ``probe`` (from :func:`probe`) makes the service decide on the measured run and keep it as evidence."""
        body = {"job": job.model_dump(mode="json"), **self._request(target, thresholds, max_slowdown, explore)}
        if probe is not None:
            body["probes"] = [probe.model_dump(mode="json")]
        response = self._call("POST", "/v1/placements", PlacementResponse, body)
        if not response.decisions:
            raise PlacementApiError(200, "unexpected_answer", [{"field": "decisions", "message": "no decision in the answer"}])
        return response.decisions[0]

    def place_batch(self, jobs: Sequence[Job], target: str | HardwareTarget = "local", *,
                    thresholds: Mapping[str, float] | None = None, max_slowdown: float | None = None,
                    explore: bool = True, probes: Sequence[ProbeResult | None] | None = None) -> PlacementResponse:
        """Place a list of jobs; the answer has one decision per job, in order (``probes``: one per job or None)."""
        body = {"jobs": [j.model_dump(mode="json") for j in jobs], **self._request(target, thresholds, max_slowdown, explore)}
        if probes is not None:
            body["probes"] = [None if p is None else p.model_dump(mode="json") for p in probes]
        return self._call("POST", "/v1/placements", PlacementResponse, body)

    def place_columns(self, columns: Mapping[str, Sequence[Any]], target: str | HardwareTarget = "local", *,
                      thresholds: Mapping[str, float] | None = None, max_slowdown: float | None = None,
                      explore: bool = True) -> PlacementResponse:
        """Place jobs given as columns (each :class:`~placement.core.job.Job` field a list): the fast
        format for large batches; the answer's ``columns`` hold the decisions."""
        body = {"columns": {k: list(v) for k, v in columns.items()}, **self._request(target, thresholds, max_slowdown, explore)}
        return self._call("POST", "/v1/placements", PlacementResponse, body)

    def place_bulk(self, columns: Mapping[str, Any], target: str | HardwareTarget = "local", *,
                   thresholds: Mapping[str, float] | None = None, max_slowdown: float | None = None,
                   explore: bool = True) -> tuple[dict[str, Any], Any]:
        """Place jobs given as columns (lists, numpy arrays or pyarrow arrays) in the bulk format
        (Arrow IPC, :mod:`placement.serve.bulk`): ``(head, decisions)``, the answer's target,
        policy version and thresholds, and a ``pyarrow.Table`` with one row per job."""
        from placement.serve import bulk

        body = bulk.encode_request(dict(columns), **self._request(target, thresholds, max_slowdown, explore))
        response = self._http.post("/v1/placements", content=body, headers={"content-type": bulk.MEDIA_TYPE})
        if response.status_code >= 400:
            data = response.json()
            raise PlacementApiError(response.status_code, str(data.get("error", "error")), list(data.get("detail", [])))
        return bulk.decode_response(response.content)

    def feedback(self, decision_id: str, outcome: ReportedOutcome | Mapping[str, Any],
                 other_outcome: ReportedOutcome | Mapping[str, Any] | None = None) -> FeedbackResponse:
        """Report the measured run of the chosen device (and the other device's, if measured)."""
        def as_dict(o: ReportedOutcome | Mapping[str, Any]) -> dict[str, Any]:
            return o.model_dump(mode="json", exclude_none=True) if isinstance(o, ReportedOutcome) else dict(o)

        body: dict[str, Any] = {"decision_id": decision_id, "outcome": as_dict(outcome)}
        if other_outcome is not None:
            body["other_outcome"] = as_dict(other_outcome)
        return self._call("POST", "/v1/feedback", FeedbackResponse, body)

    def policy(self) -> PolicyInfo:
        """``GET /v1/policy``: the serving policy, thresholds, counts and stored versions."""
        return self._call("GET", "/v1/policy", PolicyInfo)

    def rollback(self, version: str | None = None) -> RollbackResponse:
        """``POST /v1/policy/rollback``: serve ``version`` (default: the one promoted before the current)."""
        return self._call("POST", "/v1/policy/rollback", RollbackResponse, {"version": version} if version else {})

    def update(self) -> LearnerReport:
        """Run one learner update now (PPO on feedback, safety gate, promotion)."""
        return self._call("POST", "/v1/policy/update", LearnerReport)

    def health(self) -> dict[str, Any]:
        """``GET /healthz`` as a dict; ``httpx.HTTPStatusError`` on an error status."""
        response = self._http.get("/healthz")
        response.raise_for_status()
        return dict(response.json())


@contextlib.contextmanager
def apply(decision: DecisionOut | PlacementDecision, memory: Any = None) -> Iterator[PlacementDecision]:
    """Apply a decision's knobs in this process for the body of the ``with``: pin to
    ``cpu_cores`` cores (affinity and torch intra-op threads) and, on the GPU, cap the CUDA
    allocator at ``gpu_mem_cap`` MiB (``"grow"``: no cap). Restores the previous state on exit.
    Uses :func:`placement.lab.knobs.applied`; ``memory`` is its GPU-memory backend (tests pass
    :class:`placement.lab.knobs.FakeGpuMemory`)."""
    from placement.lab.knobs import applied

    core = decision if isinstance(decision, PlacementDecision) else PlacementDecision(
        device=decision.device, cpu_cores=decision.cpu_cores,
        gpu_mem_cap=cap_from_wire(decision.gpu_mem_cap))
    with applied(core, memory) as effective:
        yield effective


def job_signature(model: Any, sample_shape: Sequence[int], input_dtype: str = "float32") -> str:
    """The structural signature (:mod:`placement.lab.signature`) of an ``nn.Module`` or of a
    zero-argument factory of one, for per-sample inputs of ``sample_shape`` and ``input_dtype``.
    Send it as the job's ``signature``: the service then learns from every outcome of this
    architecture at once."""
    from placement.lab.signature import signature_of, signature_of_factory

    if callable(model) and not hasattr(model, "named_modules"):
        return signature_of_factory(model, sample_shape, input_dtype)
    return signature_of(model, sample_shape, input_dtype)


def probe(model: Any, *, batch_size: int = 32, mode: str = "infer", example: tuple[Any, Any] | None = None,
          family: str | None = None, input_shape: Sequence[int] | None = None, input_dtype: str = "float32",
          budget_s: float = 5.0, cpu_cores: int | None = None, gpu_mem_cap_mib: int | None = None,
          speedup_min: float = 2.0) -> ProbeResult:
    """Probe a job on this machine's devices (:mod:`placement.lab.job_probe`) and return the result to
    pass to :meth:`PlacementClient.place` as ``probe``.

    ``model``: a zoo workload name, ``'package.module:Factory'`` (with ``family`` and
    ``input_shape``), or an ``nn.Module`` / zero-argument factory with ``example`` = one batch
    ``(inputs, labels)`` on the host (its job description is then left to the caller; the
    result carries no job)."""
    from placement.lab.job_probe import probe_factory, probe_job, probe_workload
    from placement.lab.workloads import ZOO

    kwargs: dict[str, Any] = {"budget_s": budget_s, "cpu_cores": cpu_cores, "gpu_mem_cap_mib": gpu_mem_cap_mib,
                              "speedup_min": speedup_min}
    if isinstance(model, str):
        if model in ZOO:
            return probe_workload(model, batch_size, mode, **kwargs)
        if family is None or input_shape is None:
            raise ValueError("probing 'package.module:Factory' needs family= and input_shape=")
        return probe_factory(model, family, list(input_shape), input_dtype, batch_size, mode, **kwargs)
    if example is None:
        raise ValueError("probing a module needs example=(inputs, labels), one batch on the host")
    import copy

    build = model if (callable(model) and not hasattr(model, "named_modules")) else (lambda: copy.deepcopy(model))
    return probe_job(build, example, mode, **kwargs)
