"""Request and response records of the placement HTTP API (pydantic; the OpenAPI schema is built from them).

* ``POST /v1/placements``: :class:`PlacementRequest` -> :class:`PlacementResponse`
* ``POST /v1/feedback``: :class:`FeedbackRequest` -> :class:`FeedbackResponse`
* ``GET /v1/policy``: :class:`PolicyInfo`; ``POST /v1/policy/rollback``: :class:`RollbackRequest`
  -> :class:`RollbackResponse`; ``POST /v1/policy/update``: :class:`LearnerReport`

Jobs and hardware are the core records (:class:`placement.core.job.Job`,
:class:`placement.core.hardware.HardwareTarget`); thresholds are paper A's ``T_t``
(``speedup_min``) and ``T_e`` (``energy_ratio_max``). Units are in field names.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationInfo,
    WrapValidator,
    create_model,
    field_validator,
    model_validator,
)

from placement.core.decision import GROW, GpuMemCap
from placement.core.hardware import HardwareTarget
from placement.core.job import Job
from placement.core.outcome import Device, DeviceOutcome, EnergyMethod
from placement.core.record import (
    Record,
    admits_string,
    is_number_annotation,
    json_number,
    number_not_bool,
)
from placement.lab.job_probe import ProbeResult

DECISION_ID_PATTERN = r"^[0-9a-f]{32}-[0-9]{1,7}$"
LOCAL_TARGET = "local"

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
MAX_POWER_W = 1e5
"""Upper bound of an average power, given (``avg_*_power_w``) or implied (``energy_j / time_total_s``)."""
MIN_TIME_PER_SAMPLE_S = 1e-12
"""Lower bound of a per-sample time (a picosecond): below it the inverse and the ratios overflow."""

WIRE_GROW: Literal["grow"] = "grow"
"""How the JSON API spells "no GPU memory cap" (fixed: clients parse it)."""
WireGpuMemCap = int | Literal["grow"]
"""An answer's ``gpu_mem_cap`` on the wire: MiB or ``"grow"`` (null, where allowed: no GPU)."""


def cap_to_wire(cap: GpuMemCap, has_gpu: bool) -> WireGpuMemCap | None:
    """An answer's ``gpu_mem_cap`` for a decision's cap: MiB, :data:`WIRE_GROW` for GROW, null on a
    target without a GPU. With :func:`cap_from_wire`, the one conversion at the HTTP edge."""
    if not has_gpu:
        return None
    return WIRE_GROW if cap == GROW else int(cap)


def cap_from_wire(value: WireGpuMemCap | None) -> GpuMemCap:
    """The cap an answer's ``gpu_mem_cap`` stands for: MiB, or GROW for ``"grow"`` and for null
    (no GPU: nothing to cap)."""
    return GROW if value is None or value == WIRE_GROW else int(value)


def check_derived(what: str, value: float, fix: str, *, allow_zero: bool = False, upper: float | None = None,
                  lower: float | None = None) -> None:
    """Raise ``ValueError`` naming ``what`` and ``fix`` unless ``value`` is finite, positive
    (or zero with ``allow_zero``) and at most ``upper``: what a reported figure implies
    must itself be a usable number (no inf, NaN or underflow to 0 in a later division)."""
    if not math.isfinite(value):
        raise ValueError(f"{what} is {value}, not a finite number: {fix}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{what} is {value:g}; it must be positive: {fix}")
    if upper is not None and value > upper:
        raise ValueError(f"{what} is {value:g}, above the bound of {upper:g}: {fix}")
    if lower is not None and value < lower:
        raise ValueError(f"{what} is {value:g}, below the bound of {lower:g}: {fix}")


def _target_tag(value: Any) -> str:
    return "id" if isinstance(value, str) else "hardware"


TargetRef = Annotated[
    Annotated[str, Tag("id")] | Annotated[HardwareTarget, Tag("hardware")],
    Discriminator(_target_tag),
]
"""A catalogue id (``GET /v1/targets`` lists them), ``"local"`` (the probed host), or a full
hardware description."""


class RequestThresholds(Record):
    """Per-request joint threshold (paper A). Omitted fields use the service's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speedup_min: FiniteFloat | None = Field(default=None, gt=0, le=1e6, description="T_t: GPU must be at least this many times faster.")
    energy_ratio_max: FiniteFloat | None = Field(default=
        None, gt=0, le=1e6, description="T_e: GPU per-sample energy may be at most this multiple of the CPU's."
    )


_PLAIN_NUMBER_TYPES = frozenset({int, float, type(None)})


def _numbers_at_once(checked: TypeAdapter[Any]) -> Any:
    """A column validator: a list whose values are all plain JSON numbers (or nulls) goes to the
    column's own (Rust) validation at once; anything else -- a bool, a string, a numpy scalar --
    through ``checked``, which tests every value as a single job's field would (same errors, each
    located at its row). Both accept and refuse exactly the same columns; a 10 000-job request no
    longer calls a Python function per value."""
    def validate(values: Any, handler: Any) -> Any:
        if type(values) is list and set(map(type, values)) <= _PLAIN_NUMBER_TYPES:
            return handler(values)
        return checked.validate_python(values)

    return validate


def _job_columns_model() -> type[BaseModel]:
    """:class:`JobColumns`: every :class:`~placement.core.job.Job` field as a list, with the same
    per-element constraints (derived from ``Job.model_fields``, so the two never disagree)."""
    fields: dict[str, Any] = {}
    for name, info in Job.model_fields.items():
        element: Any = info.annotation
        extra: list[Any] = [Field(allow_inf_nan=False)] if element is float else []
        column: Any
        if is_number_annotation(element):
            checked = BeforeValidator(number_not_bool if admits_string(element) else json_number)
            plain: Any = Annotated[(element, *info.metadata, *extra)] if (info.metadata or extra) else element
            each: Any = Annotated[(element, *info.metadata, *extra, checked)]
            column = Annotated[list[plain], WrapValidator(_numbers_at_once(TypeAdapter(list[each])))]  # type: ignore[valid-type]
        else:
            item: Any = Annotated[(element, *info.metadata, *extra)] if (info.metadata or extra) else element
            column = list[item]  # type: ignore[valid-type]
        required = info.is_required()
        fields[name] = (column if required else column | None, Field(default=... if required else None,
                                                                     description=info.description))

    def _same_length(self: BaseModel) -> BaseModel:
        column_length(self)
        return self

    return create_model(  # type: ignore[call-overload, no-any-return]
        "JobColumns",
        __validators__={"_same_length": model_validator(mode="after")(_same_length)},  # type: ignore[dict-item]
        __config__=ConfigDict(extra="forbid", frozen=True, use_enum_values=True),
        __doc__="A batch of jobs as columns: each field of Job as a list, all the same length "
        "(name and dataset_size optional). The fast format for large batches.",
        **fields,
    )


JobColumns = _job_columns_model()


def column_length(columns: BaseModel) -> int:
    """Rows in a :data:`JobColumns`; raises naming the first column of another length."""
    n: int | None = None
    for name in Job.model_fields:
        values = getattr(columns, name)
        if values is None:
            continue
        if n is None:
            n = len(values)
        elif len(values) != n:
            raise ValueError(f"column '{name}' has {len(values)} values but the first column has {n}: give every column the same length")
    if not n:
        raise ValueError("columns hold no jobs")
    return n


class PlacementRequest(Record):
    """Jobs to place on one target: one ``job``, a list of ``jobs`` (answered as a list of
    decisions), or ``columns`` (answered as columns: the fast format for large batches)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: Job | None = Field(default=None, description="One job. Give either job or jobs.")
    jobs: list[Job] | None = Field(default=None, min_length=1, description="A batch of jobs (at most the service's max_batch_jobs).")
    columns: JobColumns | None = Field(default=None, description="A batch of jobs as columns (answered as columns).")  # type: ignore[valid-type]
    target: TargetRef = Field(default=LOCAL_TARGET, description="Catalogue id, 'local' (the probed host) or a hardware description.")
    thresholds: RequestThresholds | None = Field(default=None, description="Override T_t / T_e for this request.")
    max_slowdown: FiniteFloat | None = Field(default=
        None, ge=1.0, le=1e6,
        description="The chosen device may be at most this many times slower than the faster one (by the performance model).",
    )
    explore: bool = Field(default=True, description="Allow exploration for these jobs (false: always the policy's best guess).")
    probes: list[ProbeResult | None] | None = Field(
        default=None, description="A probe result per job (`placement probe`), in job order, null where none: the service "
        "decides on it (source 'probe') and keeps it as evidence of the job's signature.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> PlacementRequest:
        given = [name for name in ("job", "jobs", "columns") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'job' (one job), 'jobs' (a list of jobs) or 'columns' (jobs as columns)")
        if self.probes is not None and len(self.probes) != self.n_jobs:
            raise ValueError(f"probes has {len(self.probes)} entries for {self.n_jobs} jobs: give one per job "
                             "(null where a job was not probed)")
        return self

    @property
    def n_jobs(self) -> int:
        """Number of jobs in the request (``job``, ``jobs`` or ``columns``)."""
        if self.columns is not None:
            return column_length(self.columns)
        return 1 if self.job is not None else len(self.jobs or [])


DecidedBy = Literal["policy", "estimate", "thresholds", "max_slowdown", "exploration", "no_gpu", "infeasible"]
EstimateSource = Literal["probe", "history", "model"]


class DecisionOut(BaseModel):
    """The answer for one job."""

    model_config = ConfigDict(frozen=True, use_enum_values=True)

    decision_id: str = Field(description="Quote it in POST /v1/feedback.")
    job_name: str = Field(description="The job's name as sent (or one the service derived from its features).")
    device: Device = Field(description="Where to run the job: 'cpu' or 'gpu'.")
    cpu_cores: int = Field(description="Cores the job may use (affinity and intra-op threads).")
    gpu_mem_cap: WireGpuMemCap | None = Field(description="GPU memory cap in MiB, or 'grow' (no cap); null on a target without a GPU.")
    gpu_probability: float | None = Field(
        description="The policy's P(GPU is a valid acceleration) at the request's thresholds; null on a target without a GPU.")
    predicted_speedup: float | None = Field(default=None, description="Estimated T_cpu / T_gpu (source in speedup_source); null without a GPU or when infeasible.")
    predicted_energy_ratio: float | None = Field(default=None, description="Estimated GPU/CPU per-sample energy (eq. 2; source in energy_ratio_source, power method in energy_method).")
    prediction_method: Literal["modelled", "measured"] | None = Field(
        default=None, description="'modelled' when the speedup is the performance model's, 'measured' when a probe or the signature's history corrected it.")
    explored: bool = Field(description="True when this decision deliberately tried the other device (exploration).")
    decided_by: DecidedBy = Field(description="What decided: policy, estimate (a measured estimate of both devices clear of the threshold by SETTLE_Z = 1 sigma), thresholds, max_slowdown (the request's limit), exploration, infeasible (estimated not to fit in GPU memory), or no_gpu (the target has none).")
    policy_version: str = Field(description="The policy version that decided (GET /v1/policy lists the versions).")
    estimate_source: EstimateSource | None = Field(
        default=None, description="The strongest source of the estimate the policy decided on: probe > history > model.")
    speedup_source: str | None = Field(default=None, description="probe | history | model, or cpu:<source>+gpu:<source> when mixed.")
    energy_ratio_source: str | None = Field(default=None, description="Same as speedup_source (time and power per device).")
    energy_method: Literal["measured", "modelled"] | None = Field(default=None, description="measured when every power was read from a counter.")
    speedup_sigma: float | None = Field(default=None, description="Log-scale sd of the estimated speedup.")
    energy_ratio_sigma: float | None = Field(default=None, description="Log-scale sd of the estimated energy ratio.")
    gpu_feasible: bool | None = Field(default=None, description="The job is estimated to fit in GPU memory (or was seen running); null without a GPU.")
    gpu_mem_need_mib: float | None = Field(default=None, description="Estimated GPU memory need, MiB (modelled working set).")


class ThresholdsOut(BaseModel):
    """The joint threshold of paper A that a decision used: T_t, T_e and the missing-power rule."""

    speedup_min: float = Field(description="T_t (paper A): the GPU must be at least this many times faster than the CPU.")
    energy_ratio_max: float = Field(description="T_e (paper A): the GPU's per-sample energy may be at most this multiple of the CPU's.")
    missing_power: str = Field(description="How a run without power readings is labelled: speed_only (speed alone) or cpu (no GPU without energy evidence).")


class DecisionColumns(BaseModel):
    """The answers as columns (for a ``columns`` request), same meaning as :class:`DecisionOut`."""

    model_config = ConfigDict(frozen=True, use_enum_values=True)

    decision_id: list[str] = Field(description="Per job: the decision id to quote in POST /v1/feedback.")
    job_name: list[str] = Field(description="Per job: the job's name.")
    device: list[Device] = Field(description="Per job: 'cpu' or 'gpu'.")
    cpu_cores: list[int] = Field(description="Per job: cores the job may use.")
    gpu_mem_cap: list[WireGpuMemCap | None] = Field(description="Per job: GPU memory cap in MiB, or 'grow' (no cap); null without a GPU.")
    gpu_probability: list[float | None] = Field(description="Per job: the policy's P(GPU is a valid acceleration); null without a GPU.")
    predicted_speedup: list[float | None] = Field(description="Per job: estimated T_cpu / T_gpu, or null.")
    predicted_energy_ratio: list[float | None] = Field(description="Per job: estimated GPU/CPU per-sample energy, or null.")
    prediction_method: Literal["modelled"] = Field(default="modelled", description="Kept for old clients: see estimate_source per row.")
    explored: list[bool] = Field(description="Per job: true when the decision deliberately tried the other device.")
    decided_by: list[DecidedBy] = Field(description="Per job: what decided (as in DecisionOut).")
    estimate_source: list[EstimateSource] | None = Field(default=None, description="Per job: probe, history or model (as in DecisionOut).")
    speedup_source: list[str] | None = Field(default=None, description="Per job: how the speedup was obtained.")
    energy_ratio_source: list[str] | None = Field(default=None, description="Per job: how the energy ratio was obtained.")
    energy_method: list[Literal["measured", "modelled"] | None] | None = Field(default=None, description="Per job: measured or modelled power.")
    speedup_sigma: list[float | None] | None = Field(default=None, description="Per job: log-scale sd of the speedup.")
    energy_ratio_sigma: list[float | None] | None = Field(default=None, description="Per job: log-scale sd of the energy ratio.")
    gpu_feasible: list[bool | None] | None = Field(default=None, description="Per job: estimated to fit in GPU memory.")
    gpu_mem_need_mib: list[float | None] | None = Field(default=None, description="Per job: estimated GPU memory need, MiB.")


class PlacementResponse(BaseModel):
    """The answer to a placement request: the target and policy version, the thresholds used, and a
    decision per job (``decisions``, or ``columns`` for a columns request)."""

    target_id: str = Field(description="The hardware target decided for (a catalogue id, or 'local' / the id of the hardware sent).")
    policy_version: str = Field(description="The policy version that answered.")
    thresholds: ThresholdsOut = Field(description="The thresholds the decisions used (the service's, or the request's override).")
    decisions: list[DecisionOut] | None = Field(default=None, description="Per job, for 'job' and 'jobs' requests.")
    columns: DecisionColumns | None = Field(default=None, description="For 'columns' requests.")


class ReportedOutcome(Record):
    """What one device's run of a placed job measured.

    Give ``time_total_s`` and ``n_samples`` for a run that completed, or ``feasible=false``
    and ``infeasible_reason`` (``oom``, ``did_not_run``, ...) for one that failed. Energy is
    either ``energy_j`` (the whole run by paper A eq. 2: the host CPU counts during GPU runs)
    or average powers; each with its method (``measured`` by a counter, or ``modelled``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    device: Device = Field(description="The device this run used: 'cpu' or 'gpu'.")
    feasible: bool = Field(default=True, description="False when the run failed (then give infeasible_reason); true (default) when it completed.")
    infeasible_reason: str | None = Field(default=None, min_length=1, max_length=200, description="Why the run failed, e.g. 'oom' or 'did_not_run'; only with feasible=false.")
    n_samples: int | None = Field(default=None, ge=1, le=10**13, description="Samples the run processed (all batches); required for a completed run.")
    time_total_s: FiniteFloat | None = Field(default=None, gt=0, le=1e9, description="Wall time of the whole run, seconds; required for a completed run.")
    energy_j: FiniteFloat | None = Field(default=None, ge=0, le=1e15, description="Energy of the whole run, J (eq. 2).")
    energy_method: EnergyMethod | None = Field(default=None, description="measured or modelled; required with energy_j.")
    avg_cpu_power_w: FiniteFloat | None = Field(default=None, ge=0, le=1e5, description="Average host CPU power during the run, W (during a GPU run too: eq. 2 counts it).")
    avg_gpu_power_w: FiniteFloat | None = Field(default=None, ge=0, le=1e5, description="Average GPU power during a GPU run, W.")
    cpu_power_method: EnergyMethod | None = Field(default=None, description="Required with avg_cpu_power_w.")
    gpu_power_method: EnergyMethod | None = Field(default=None, description="Required with avg_gpu_power_w.")
    cpu_cores: int | None = Field(default=None, ge=1, le=4096, description="Cores used, if not the decision's.")
    gpu_mem_cap_mib: int | None = Field(default=None, ge=1, le=10**8, description="Cap used in MiB, if not the decision's.")

    @field_validator("time_total_s")
    @classmethod
    def _time_per_sample(cls, value: float | None, info: ValidationInfo) -> float | None:
        """What the time implies: the per-sample time ``time_total_s / n_samples`` must be a
        positive finite number (5e-324 s over 64 samples rounds to 0 s per sample)."""
        n = info.data.get("n_samples")
        if value is not None and n is not None:
            check_derived("time_total_s / n_samples (s per sample)", value / n,
                          "give time_total_s in seconds for all n_samples samples", lower=MIN_TIME_PER_SAMPLE_S)
        return value

    @field_validator("energy_j")
    @classmethod
    def _power(cls, value: float | None, info: ValidationInfo) -> float | None:
        """What the energy implies: the average power ``energy_j / time_total_s`` must be a
        finite number of at most :data:`MAX_POWER_W` (1e15 J in 1e-300 s is not a run)."""
        t = info.data.get("time_total_s")
        if value is not None and t is not None:
            check_derived("energy_j / time_total_s (average W)", value / t,
                          "give energy_j in joules for the whole run of time_total_s seconds", allow_zero=True,
                          upper=MAX_POWER_W)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ReportedOutcome:
        if self.feasible:
            for name in ("time_total_s", "n_samples"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name} is required for a run that completed (or set feasible=false with infeasible_reason)")
            if self.infeasible_reason is not None:
                raise ValueError("infeasible_reason is only for feasible=false")
        elif self.infeasible_reason is None:
            raise ValueError("infeasible_reason is required when feasible=false (e.g. 'oom')")
        for value, method, vname, mname in (
            (self.energy_j, self.energy_method, "energy_j", "energy_method"),
            (self.avg_cpu_power_w, self.cpu_power_method, "avg_cpu_power_w", "cpu_power_method"),
            (self.avg_gpu_power_w, self.gpu_power_method, "avg_gpu_power_w", "gpu_power_method"),
        ):
            if value is not None and method in (None, EnergyMethod.UNKNOWN.value):
                raise ValueError(f"{mname} is required with {vname}: say 'measured' (by a counter) or 'modelled'")
            if value is None and method not in (None, EnergyMethod.UNKNOWN.value):
                raise ValueError(f"{mname} given without {vname}")
        if self.energy_j is not None and (self.avg_cpu_power_w is not None or self.avg_gpu_power_w is not None):
            raise ValueError("give either energy_j or average powers (avg_cpu_power_w, avg_gpu_power_w), not both")
        if self.device == Device.CPU.value and self.avg_gpu_power_w is not None:
            raise ValueError("avg_gpu_power_w is for GPU runs (a CPU run's energy counts the CPU only)")
        return self

    def device_outcome(self) -> DeviceOutcome:
        """The run as a :class:`~placement.core.outcome.DeviceOutcome` (trace row form).

        ``energy_j`` becomes an average power over the run: on a CPU run the CPU power; on
        a GPU run the eq. (2) total is carried as ``avg_cpu_power_w`` with
        ``avg_gpu_power_w = 0`` (the split is unknown; eq. (2) sums them, so labels are exact).
        """
        cpu_w, gpu_w = self.avg_cpu_power_w, self.avg_gpu_power_w
        cpu_m = self.cpu_power_method or EnergyMethod.UNKNOWN.value
        gpu_m = self.gpu_power_method or EnergyMethod.UNKNOWN.value
        if self.energy_j is not None and self.time_total_s is not None:
            cpu_w = self.energy_j / self.time_total_s
            cpu_m = str(self.energy_method)
            if self.device == Device.GPU.value:
                gpu_w, gpu_m = 0.0, str(self.energy_method)
        return DeviceOutcome.model_validate(
            {
                "device": self.device,
                "feasible": self.feasible,
                "infeasible_reason": self.infeasible_reason,
                "n_samples": self.n_samples,
                "time_total_s": self.time_total_s,
                "avg_cpu_power_w": cpu_w,
                "avg_gpu_power_w": gpu_w if self.device == Device.GPU.value else None,
                "cpu_power_method": cpu_m if cpu_w is not None else EnergyMethod.UNKNOWN.value,
                "gpu_power_method": gpu_m if (gpu_w is not None and self.device == Device.GPU.value) else EnergyMethod.UNKNOWN.value,
            }
        )

    @property
    def energy_per_sample_j(self) -> float:
        """Per-sample energy by eq. (2); NaN when unknown or infeasible."""
        if not self.feasible:
            return math.nan
        return self.device_outcome().energy_per_sample_j


class FeedbackRequest(Record):
    """The measured outcome of a placed job. Idempotent per ``decision_id``: the same payload
    again gets the same answer; a different payload for the same decision is a conflict (409)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision_id: str = Field(pattern=DECISION_ID_PATTERN, description="From the placement answer.")
    outcome: ReportedOutcome = Field(description="The run on the device the decision chose.")
    other_outcome: ReportedOutcome | None = Field(default=
        None, description="The other device's run, when the client measured both (used directly as the label)."
    )

    @model_validator(mode="after")
    def _devices_differ(self) -> FeedbackRequest:
        if self.other_outcome is not None and self.other_outcome.device == self.outcome.device:
            raise ValueError("other_outcome must be the other device's run (its device equals outcome.device)")
        return self

    @field_validator("other_outcome")
    @classmethod
    def _ratios(cls, value: ReportedOutcome | None, info: ValidationInfo) -> ReportedOutcome | None:
        outcome = info.data.get("outcome")
        if value is not None and outcome is not None and value.device != outcome.device:
            measured_ratios(outcome, value)  # raises when the pair implies no usable ratio
        return value


def measured_ratios(outcome: ReportedOutcome, other: ReportedOutcome) -> tuple[float | None, float | None, str | None]:
    """``(speedup, energy_ratio, energy_method)`` implied by runs on both devices: T_cpu / T_gpu per
    sample and GPU/CPU per-sample energy (eq. 2). None where a run failed or energy is unknown.
    Raises ``ValueError`` naming the fields when a ratio is not a positive finite number (each run
    valid on its own, but e.g. 1e-300 s per sample against 1 s overflows)."""
    if not (outcome.feasible and other.feasible):
        return None, None, None
    runs = {str(outcome.device): outcome, str(other.device): other}
    cpu, gpu = runs[Device.CPU.value].device_outcome(), runs[Device.GPU.value].device_outcome()
    fix = "the two runs' per-sample times (time_total_s / n_samples) differ by too much to be real: check units"
    check_derived("the measured speedup (CPU s per sample / GPU s per sample)",
                  cpu.time_per_sample_s / gpu.time_per_sample_s, fix)
    e_cpu, e_gpu = cpu.energy_per_sample_j, gpu.energy_per_sample_j
    if not (math.isfinite(e_cpu) and math.isfinite(e_gpu) and e_cpu > 0):
        return cpu.time_per_sample_s / gpu.time_per_sample_s, None, None
    ratio = e_gpu / e_cpu
    check_derived("the measured energy ratio (GPU J per sample / CPU J per sample)", ratio,
                  "the two runs' per-sample energies differ by too much to be real: check units", allow_zero=True)
    from placement.core.outcome import combine_methods

    return cpu.time_per_sample_s / gpu.time_per_sample_s, ratio, combine_methods(cpu.energy_method, gpu.energy_method)


class FeedbackResponse(BaseModel):
    """The feedback as recorded: its decision, the devices measured and, when both were, the
    measured speedup and energy ratio."""

    model_config = ConfigDict(frozen=True, use_enum_values=True)

    decision_id: str = Field(description="The decision the feedback is for.")
    status: Literal["recorded"] = Field(default="recorded", description="Always 'recorded' (also when an identical payload is replayed).")
    recorded_at: str = Field(description="UTC ISO-8601 time the feedback was first stored.")
    device: Device = Field(description="The device the recorded run used.")
    observed_devices: list[Device] = Field(description="Devices with a measured run in this feedback (one, or both with other_outcome).")
    measured_speedup: float | None = Field(default=None, description="T_cpu / T_gpu when the client measured both devices.")
    measured_energy_ratio: float | None = Field(default=None, description="GPU/CPU per-sample energy when both measured (method in energy_method).")
    energy_method: str | None = Field(default=None, description="How the energies behind measured_energy_ratio were obtained: measured, modelled or mixed.")


class VersionInfo(BaseModel):
    """One stored policy version: its status, creation time, parent and recorded metrics."""

    version: str = Field(description="Policy version id.")
    status: str = Field(description="serving (answers now), retired (served before; rollback can restore it) or rejected (failed the safety gate).")
    created_at: str = Field(description="UTC ISO-8601 time the version was stored.")
    parent: str | None = Field(default=None, description="The version it was fine-tuned from, if any.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Training and safety-gate metrics recorded with it.")


class PolicyInfo(BaseModel):
    """The serving policy, the thresholds, counts of decisions and feedback, the learner's state and
    every stored version."""

    version: str = Field(description="The version serving now.")
    thresholds: ThresholdsOut = Field(description="The service's thresholds (T_t, T_e, missing-power rule).")
    training_metrics: dict[str, Any] = Field(description="Metrics recorded when the serving version was trained.")
    decisions: dict[str, Any] = Field(description="Counts of stored decisions (by device, explored, GPU share).")
    feedback: dict[str, Any] = Field(description="Counts of stored feedback (by device, failures).")
    learner: dict[str, Any] = Field(description="Learner state: enabled, interval, counts of promoted/rejected/skipped updates.")
    versions: list[VersionInfo] = Field(description="Every stored version, newest first.")
    exploration_rate: float = Field(description="Share of unsure decisions that explore (at most 0.2).")
    explore_band: float = Field(description="Kept for configuration compatibility; it no longer gates exploration "
                                "(explore_z does).")
    explore_z: float = Field(description="Exploration is eligible only where the estimate's +-explore_z sigma "
                             "interval straddles the joint threshold.")
    temperature: float = Field(description="The serving policy's temperature: an answer's gpu_probability is "
                               "sigmoid(logit(P) / T) of the policy's P (1.0: none recorded in the model).")


class RollbackRequest(Record):
    """Serve an earlier policy version (the one promoted before the current, unless ``version`` names one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str | None = Field(default=None, min_length=1, max_length=200, description="Version to serve; default: the one promoted before the current.")


class RollbackResponse(BaseModel):
    """The version serving after a rollback and the one it replaced."""

    active_version: str = Field(description="The version serving after the rollback.")
    previous_version: str = Field(description="The version that served before it.")


class LearnerReport(BaseModel):
    """The result of one learner update."""

    status: Literal["promoted", "rejected", "skipped"] = Field(description="promoted (candidate serves now), rejected (failed the safety gate) or skipped (too little feedback).")
    reason: str = Field(description="Why, in words.")
    serving_version: str = Field(description="The version serving after this update.")
    candidate_version: str | None = Field(default=None, description="The candidate trained in this update, if any.")
    feedback_used: int = Field(default=0, description="Feedback rows the update read.")
    train_rows: int = Field(default=0, description="Rows the candidate was fine-tuned on.")
    holdout_rows: int = Field(default=0, description="Rows held out for the safety gate.")
    serving_holdout_reward: float | None = Field(default=None, description="Mean joint-threshold reward of the serving policy on the held-out rows.")
    candidate_holdout_reward: float | None = Field(default=None, description="Mean joint-threshold reward of the candidate on the held-out rows.")
    serving_holdout_accuracy: float | None = Field(default=None, description="Share of held-out rows the serving policy labels right.")
    candidate_holdout_accuracy: float | None = Field(default=None, description="Share of held-out rows the candidate labels right.")
    reward_sources: dict[str, int] = Field(default_factory=dict, description="How the other device's outcome was obtained per row (measured by the client, residual-corrected model, bare model).")
    duration_s: float = Field(default=0.0, description="Wall time of the update, seconds.")
    quarantined: dict[str, int] = Field(default_factory=dict, description="Feedback in the window kept out of learning, by reason (placement.serve.learning.quarantine).")
    screened_out: dict[str, int] = Field(default_factory=dict, description="Feedback the poison screens excluded, by reason.")
    gate: dict[str, Any] | None = Field(default=None, description="The off-policy gate's estimates, bounds and decision.")


class ErrorItem(BaseModel):
    """One problem with a request: the field and what is wrong with it."""

    field: str = Field(description="The offending field as a path, e.g. jobs[3].batch_size ('body' for the whole request).")
    message: str = Field(description="What is wrong and how to fix it.")


class ErrorResponse(BaseModel):
    """Every error answer of the API: the error kind and one item per problem."""

    error: str = Field(description="Error kind, e.g. invalid_request, not_found, conflict, payload_too_large, unauthorized.")
    detail: list[ErrorItem] = Field(description="One item per problem (the first 20).")
