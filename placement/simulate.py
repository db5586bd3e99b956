"""Synthetic jobs and simulated traces from the performance model (source ``simulated``).

:func:`generate_jobs` draws a realistic mix of ML jobs around the measured zoo of
:mod:`placement.workloads` (MLP, AlexNet, MobileNet, ResNet-18, LSTM, GRU, a BERT-like
encoder on CIFAR-10 / ImageNet-100 / IMDB inputs) with width, depth, resolution and
sequence-length variants, plus a few embedding, tree and other jobs, batch 1..1024,
train and infer -- spread wide enough that the CPU/GPU label is not trivial on any
catalogue target.

The zoo's per-sample FLOPs and parameter counts below were computed with
:func:`placement.workloads.describe_workload` (``torch.utils.flop_counter`` on ``meta``,
batch 2 and 4, the per-sample FLOPs being the difference); a training step's FLOPs are
``batch x train_flops_per_sample + OPTIMIZER_FLOPS_PER_PARAM x params`` as there. They
are copied as numbers so that drawing jobs does not import torch.

:func:`simulate_trace` runs every job on every given target through
:class:`placement.perfmodel.PerformanceModel` with noise: CPU rows over a core grid,
GPU rows with ``grow`` and explicit caps (fractions of the GPU memory), each row the
trimmed mean of 5 noisy repeats (paper B's protocol: drop the fastest and the slowest,
average the rest). Powers are ``modelled``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from placement.hardware import HardwareTarget
from placement.perfmodel import PerformanceModel
from placement.trace import TraceMeta, target_columns, validate, write_trace
from placement.version import code_version

OPTIMIZER_FLOPS_PER_PARAM = 4  # as placement.workloads (SGD with momentum and weight decay)
REPEATS = 5


@dataclass(frozen=True)
class _Template:
    """A zoo model at its native input: FLOPs per sample (forward; train step without the
    optimizer), trainable parameters, input elements and bytes per sample."""

    arch: str
    family: str
    dataset: str
    fwd_flops_per_sample: float
    train_flops_per_sample: float
    param_count: float
    input_elems: int
    input_bytes: int


# placement.workloads.describe_workload, batch 2 and 4 (see module docstring)
_ZOO: tuple[_Template, ...] = (
    _Template("mlp", "mlp", "cifar10", 7_350_272, 15_759_360, 3_676_682, 3072, 12288),
    _Template("mlp", "mlp", "imagenet100", 309_432_320, 620_015_616, 154_717_796, 150528, 602112),
    _Template("alexnet", "cnn", "cifar10", 125_485_056, 375_570_432, 23_272_266, 3072, 12288),
    _Template("alexnet", "cnn", "imagenet100", 1_421_004_160, 4_122_458_880, 57_413_540, 150528, 602112),
    _Template("mobilenet", "cnn", "cifar10", 23_192_576, 243_013_632, 3_217_226, 3072, 12288),
    _Template("mobilenet", "cnn", "imagenet100", 1_135_637_504, 11_905_271_808, 3_309_476, 150528, 602112),
    _Template("resnet18", "cnn", "cifar10", 74_033_152, 217_282_560, 11_181_642, 3072, 12288),
    _Template("resnet18", "cnn", "imagenet100", 3_627_225_088, 10_645_647_360, 11_227_812, 150528, 602112),
    _Template("lstm", "rnn", "imdb", 25_166_336, 75_367_936, 1_379_586, 128, 1024),
    _Template("gru", "rnn", "imdb", 18_874_880, 56_526_336, 1_354_754, 128, 1024),
    _Template("transformer", "transformer", "imdb", 117_441_024, 352_323_072, 2_973_186, 128, 1024),
)
_DATASET_SIZE = {"cifar10": 50_000, "imagenet100": 126_689, "imdb": 25_000}

# family -> share of generated jobs; zoo families dominate, as in the measured trace
FAMILY_MIX: dict[str, float] = {
    "mlp": 0.14,
    "cnn": 0.40,
    "rnn": 0.18,
    "transformer": 0.16,
    "embedding": 0.05,
    "tree": 0.04,
    "other": 0.03,
}
BATCH_SIZES = tuple(2**k for k in range(11))  # 1 .. 1024
BATCH_WEIGHTS = tuple(0.8**k for k in range(11))  # small batches (online inference) more common

JOB_FRAME_COLUMNS = (
    "job_id", "model", "family", "mode", "batch_size", "flops_per_batch", "param_count",
    "input_elems_per_sample", "input_bytes_per_sample", "dataset_size",
)


def _zoo_job(rng: np.random.Generator, family: str) -> tuple[str, float, float, float, int, int, int]:
    """(model name, fwd FLOPs/sample, train FLOPs/sample, params, elems, bytes, dataset size)."""
    choices = [t for t in _ZOO if t.family == family]
    t = choices[int(rng.integers(len(choices)))]
    width = float(2.0 ** rng.uniform(-2.5, 0.5))  # 0.18x .. 1.4x channels / hidden units
    depth = float(2.0 ** rng.uniform(-1.0, 1.0))  # 0.5x .. 2x layers
    fwd, train, params = t.fwd_flops_per_sample, t.train_flops_per_sample, t.param_count
    elems, nbytes = t.input_elems, t.input_bytes
    tag = [f"w{width:.2g}", f"d{depth:.2g}"]
    if t.dataset == "imdb":
        seq = int(rng.choice((32, 64, 128, 256, 512)))
        ratio = seq / 128.0
        if family == "transformer":  # 85% linear in length, 15% attention (quadratic) at 128
            fwd, train = (x * (0.85 * ratio + 0.15 * ratio**2) for x in (fwd, train))
        else:
            fwd, train = fwd * ratio, train * ratio
        elems, nbytes = seq, seq * (t.input_bytes // t.input_elems)
        tag.append(f"seq{seq}")
    else:
        native = 32 if t.dataset == "cifar10" else 224
        px = int(rng.choice((32, 48, 64)) if native == 32 else rng.choice((96, 128, 160, 192, 224, 256)))
        area = (px / native) ** 2
        fwd, train = fwd * area, train * area
        elems = int(round(t.input_elems * area))
        nbytes = int(round(t.input_bytes * area))
        if family == "mlp":  # the first layer grows with the input
            params = params * (0.3 + 0.7 * area)
        tag.append(f"{px}px")
    scale = width**2 * depth
    name = f"{t.arch}-{'-'.join(tag)}_{t.dataset}"
    return name, fwd * scale, train * scale, params * scale, elems, nbytes, _DATASET_SIZE[t.dataset]


def _other_job(rng: np.random.Generator, family: str) -> tuple[str, float, float, float, int, int, int]:
    if family == "embedding":  # DLRM-like: big tables, small dense MLP; 13 dense + 26 sparse ids
        tables = float(10 ** rng.uniform(6, 8.3))
        dense = float(10 ** rng.uniform(5, 7.5))
        fwd = 2 * dense + 26 * 64 * 2
        return f"dlrm-t{tables:.2g}_criteo", fwd, 3 * fwd, tables + dense, 39, 13 * 4 + 26 * 8, 1_000_000
    if family == "tree":  # gradient-boosted trees on tabular data
        trees = int(rng.integers(50, 1001))
        depth = int(rng.integers(4, 9))
        feats = int(rng.integers(4, 200))
        fwd = 2.0 * trees * depth
        train = fwd + 10.0 * trees * feats  # histogram building per sample
        return f"xgb-{trees}x{depth}_tabular{feats}", fwd, train, float(trees * 2**depth), feats, feats * 4, int(10 ** rng.uniform(3, 6))
    # other: autoencoders, GNNs, audio models -- wide random spread
    fwd = float(10 ** rng.uniform(6, 10))
    params = float(10 ** rng.uniform(5, 8))
    elems = int(10 ** rng.uniform(2, 5))
    return f"other-{fwd:.2g}flop", fwd, 3 * fwd, params, elems, elems * 4, int(10 ** rng.uniform(3, 6))


def generate_jobs(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` synthetic jobs as trace job columns (``job_id``, ``model``, ``family``, ``mode``,
    ``batch_size``, ``flops_per_batch``, ``param_count``, ``input_elems_per_sample``,
    ``input_bytes_per_sample``, ``dataset_size``). Deterministic given ``rng``'s state."""
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    families = list(FAMILY_MIX)
    weights = np.array([FAMILY_MIX[f] for f in families])
    rows = []
    for i in range(int(n)):
        family = families[int(rng.choice(len(families), p=weights / weights.sum()))]
        if family in ("embedding", "tree", "other"):
            name, fwd, train, params, elems, nbytes, size = _other_job(rng, family)
        else:
            name, fwd, train, params, elems, nbytes, size = _zoo_job(rng, family)
        mode = "train" if rng.random() < 0.5 else "infer"
        batch = int(rng.choice(BATCH_SIZES, p=np.array(BATCH_WEIGHTS) / sum(BATCH_WEIGHTS)))
        flops = batch * fwd if mode == "infer" else batch * train + OPTIMIZER_FLOPS_PER_PARAM * params
        rows.append(
            {
                "job_id": f"job-{i:05d}",
                "model": name,
                "family": family,
                "mode": mode,
                "batch_size": batch,
                "flops_per_batch": float(flops),
                "param_count": int(round(params)),
                "input_elems_per_sample": int(max(1, elems)),
                "input_bytes_per_sample": int(max(1, nbytes)),
                "dataset_size": int(size),
            }
        )
    return pd.DataFrame(rows, columns=list(JOB_FRAME_COLUMNS))


def _knob_rows(target: HardwareTarget, core_grid: Sequence[int], cap_fracs: Sequence[float]) -> list[tuple[str, int, float]]:
    """(device, cpu_cores, gpu_mem_cap_mib or NaN) per configuration run on ``target``."""
    cores = sorted({int(c) for c in core_grid if 1 <= int(c) < target.cpu_cores} | {target.cpu_cores})
    rows: list[tuple[str, int, float]] = [("cpu", c, np.nan) for c in cores]
    if target.has_gpu:
        rows.append(("gpu", target.cpu_cores, np.nan))
        for frac in cap_fracs:
            if not 0.0 < float(frac) <= 1.0:
                raise ValueError(f"cap_fracs must be fractions of the GPU memory in (0, 1], got {frac}")
            rows.append(("gpu", target.cpu_cores, float(max(1, round(float(frac) * target.gpu_mem_mib)))))
    return rows


def simulate_trace(
    targets: Sequence[HardwareTarget],
    n_jobs: int,
    seed: int,
    core_grid: Sequence[int] = (1, 2, 4, 8, 16),
    cap_fracs: Sequence[float] = (0.25, 0.5, 0.75),
    model: PerformanceModel | None = None,
) -> pd.DataFrame:
    """A validated trace frame: the same ``n_jobs`` jobs on every target, ``source='simulated'``.

    CPU rows at every core count of ``core_grid`` below the target's cores plus all
    cores; GPU rows (targets with a GPU) at ``grow`` and at each fraction of
    ``cap_fracs`` of the GPU memory, with all cores. Each row is the trimmed mean of
    :data:`REPEATS` noisy model draws (``time_per_batch_median_s``, ``_iqr_s`` and
    ``time_cv`` from the same draws). ``n_samples`` = one batch.
    """
    if not targets:
        raise ValueError("simulate_trace needs at least one target")
    model = model or PerformanceModel()
    rng = np.random.default_rng(seed)
    jobs = generate_jobs(n_jobs, rng)
    jobs["job_id"] = [f"sim{seed}-{i:05d}" for i in range(len(jobs))]
    parts = []
    for target in targets:
        knobs = _knob_rows(target, core_grid, cap_fracs)
        frame = jobs.loc[jobs.index.repeat(len(knobs))].reset_index(drop=True)
        k = np.tile(np.arange(len(knobs)), len(jobs))
        frame["device"] = [knobs[i][0] for i in k]
        frame["cpu_cores"] = [knobs[i][1] for i in k]
        frame["gpu_mem_cap_mib"] = [knobs[i][2] for i in k]
        for name, value in target_columns(target).items():
            frame[name] = value
        parts.append(frame)
    frame = pd.concat(parts, ignore_index=True)
    device = frame["device"].to_numpy(dtype=object)
    cores = frame["cpu_cores"].to_numpy(dtype=np.float64)
    caps = frame["gpu_mem_cap_mib"].to_numpy(dtype=np.float64)
    draws = [model.predict_columns(frame, device, cores, caps, rng) for _ in range(REPEATS)]
    times = np.stack([d.time_per_batch_s for d in draws])
    sorted_t = np.sort(times, axis=0)
    trimmed = sorted_t[1:-1].mean(axis=0)
    median = np.median(times, axis=0)
    iqr = np.percentile(times, 75, axis=0) - np.percentile(times, 25, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = times.std(axis=0, ddof=1) / times.mean(axis=0)
    p_cpu = np.mean([d.avg_cpu_power_w for d in draws], axis=0)
    p_gpu = np.mean([d.avg_gpu_power_w for d in draws], axis=0)
    first = draws[0]
    feasible = first.feasible
    is_gpu = first.is_gpu

    def col(values: np.ndarray, mask: np.ndarray) -> pd.Series:
        return pd.Series(np.where(mask, values, np.nan), dtype="Float64")

    frame["source"] = "simulated"
    frame["feasible"] = feasible
    frame["infeasible_reason"] = pd.Series(
        [None if ok else str(why) for ok, why in zip(feasible, first.infeasible_reason, strict=True)], dtype="object"
    )
    frame["n_samples"] = pd.array(np.where(feasible, frame["batch_size"], 0), dtype="Int64")
    frame.loc[~feasible, "n_samples"] = pd.NA
    frame["time_total_s"] = col(trimmed, feasible)
    frame["time_per_batch_s"] = col(trimmed, feasible)
    frame["time_per_batch_median_s"] = col(median, feasible)
    frame["time_per_batch_iqr_s"] = col(iqr, feasible)
    frame["time_cv"] = col(cv, feasible)
    frame["repeats"] = REPEATS
    frame["avg_cpu_power_w"] = col(p_cpu, feasible)
    frame["avg_gpu_power_w"] = col(p_gpu, feasible & is_gpu)
    frame["cpu_power_method"] = np.where(feasible, "modelled", "unknown")
    frame["gpu_power_method"] = np.where(feasible & is_gpu, "modelled", "unknown")
    frame["gpu_mem_cap_mib"] = pd.array(np.where(np.isfinite(caps), caps, np.nan), dtype="Float64").astype("Int64")
    return validate(frame, source="simulated trace")


def simulated_meta(targets: Sequence[HardwareTarget], n_jobs: int, seed: int, model: PerformanceModel,
                   core_grid: Sequence[int], cap_fracs: Sequence[float]) -> TraceMeta:
    """Provenance of a simulated trace: seed, targets, knobs, model parameters, code version."""
    return TraceMeta(
        source="simulated",
        description=f"{n_jobs} synthetic jobs (placement.simulate.generate_jobs) on {len(targets)} targets",
        seed=seed,
        code_version=code_version(),
        hardware=", ".join(t.id for t in targets),
        method="time and powers modelled by placement.perfmodel.PerformanceModel with noise; "
        f"each row the trimmed mean of {REPEATS} draws; energy 'modelled', never measured",
        extra={
            "n_jobs": n_jobs,
            "core_grid": list(core_grid),
            "cap_fracs": list(cap_fracs),
            "perf_params": model.params.to_dict(),
        },
    )


def write_simulated(path: Path, targets: Sequence[HardwareTarget], n_jobs: int, seed: int,
                    core_grid: Sequence[int] = (1, 2, 4, 8, 16), cap_fracs: Sequence[float] = (0.25, 0.5, 0.75),
                    model: PerformanceModel | None = None) -> Path:
    """Simulate and write a trace with its provenance (Parquet or CSV by suffix)."""
    model = model or PerformanceModel()
    frame = simulate_trace(targets, n_jobs, seed, core_grid, cap_fracs, model)
    return write_trace(frame, Path(path), simulated_meta(targets, n_jobs, seed, model, core_grid, cap_fracs))
