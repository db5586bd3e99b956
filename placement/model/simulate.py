"""Synthetic jobs and simulated traces from the performance model (source ``simulated``).

:func:`generate_jobs` draws a realistic mix of ML jobs around the measured zoo of
:mod:`placement.lab.workloads` (MLP, AlexNet, MobileNet, ResNet-18, LSTM, GRU, a BERT-like
encoder on CIFAR-10 / ImageNet-100 / IMDB inputs) with width, depth, resolution and
sequence-length variants, plus a few embedding, tree and other jobs, batch 1..1024,
train and infer -- spread wide enough that the CPU/GPU label is not trivial on any
catalogue target.

The zoo's per-sample FLOPs and parameter counts below were computed with
:func:`placement.lab.workloads.describe_workload` (``torch.utils.flop_counter`` on ``meta``,
batch 2 and 4, the per-sample FLOPs being the difference); a training step's FLOPs are
``batch x train_flops_per_sample + OPTIMIZER_FLOPS_PER_PARAM x params`` as there. They
are copied as numbers so that drawing jobs does not import torch.

:func:`simulate_trace` runs every job on every given target through
:class:`placement.model.perfmodel.PerformanceModel` with noise: CPU rows over a core grid,
GPU rows with ``grow`` and explicit caps (fractions of the GPU memory), each row the
trimmed mean of 5 noisy repeats (paper B's protocol: drop the fastest and the slowest,
average the rest). Powers are ``modelled``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from placement.core.hardware import HardwareTarget
from placement.core.trace import TraceMeta, target_columns, validate, write_trace
from placement.core.version import code_version
from placement.model.perfmodel import PerformanceModel

OPTIMIZER_FLOPS_PER_PARAM = 4  # as placement.lab.workloads (SGD with momentum and weight decay)
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


# placement.lab.workloads.describe_workload, batch 2 and 4 (see module docstring)
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


def _pick(rng: np.random.Generator, options: Sequence[float], n: int) -> npt.NDArray[np.float64]:
    return np.asarray(options, dtype=np.float64)[rng.integers(0, len(options), size=n)]


def generate_jobs(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` synthetic jobs as trace job columns (``job_id``, ``model``, ``family``, ``mode``,
    ``batch_size``, ``flops_per_batch``, ``param_count``, ``input_elems_per_sample``,
    ``input_bytes_per_sample``, ``dataset_size``). Deterministic given ``rng``'s state;
    vectorised (a few ms per thousand jobs).

    Zoo families draw a zoo model of the family, a width multiplier (0.18x..1.4x: FLOPs and
    parameters x width^2), a depth multiplier (0.5x..2x), and an input size: 32/48/64 px
    for CIFAR-like, 96..256 px for ImageNet-like (FLOPs x area), 32..512 tokens for IMDB-like
    (recurrent FLOPs x length; transformer 85% linear, 15% quadratic in length). Embedding
    jobs are DLRM-like (large tables, small dense part), tree jobs gradient-boosted trees on
    tabular rows, other jobs a wide random spread. Batch 1..1024 in powers of two, small
    batches more common (:data:`BATCH_WEIGHTS`); train and infer equally likely.
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    n = int(n)
    families = np.array(list(FAMILY_MIX), dtype=object)
    weights = np.array([FAMILY_MIX[f] for f in families])
    family = families[rng.choice(len(families), size=n, p=weights / weights.sum())]
    train = rng.random(n) < 0.5
    bw = np.array(BATCH_WEIGHTS)
    batch = np.asarray(BATCH_SIZES, dtype=np.int64)[rng.choice(len(BATCH_SIZES), size=n, p=bw / bw.sum())]

    # zoo-based jobs: a template of the family, then width / depth / input-size variants
    tmpl_idx = np.zeros(n, dtype=np.int64)
    u = rng.random(n)
    for fam in ("mlp", "cnn", "rnn", "transformer"):
        members = np.array([i for i, t in enumerate(_ZOO) if t.family == fam])
        rows = family == fam
        tmpl_idx[rows] = members[np.minimum((u[rows] * len(members)).astype(np.int64), len(members) - 1)]
    fwd = np.array([t.fwd_flops_per_sample for t in _ZOO])[tmpl_idx]
    trn = np.array([t.train_flops_per_sample for t in _ZOO])[tmpl_idx]
    params = np.array([t.param_count for t in _ZOO], dtype=np.float64)[tmpl_idx]
    elems0 = np.array([t.input_elems for t in _ZOO], dtype=np.float64)[tmpl_idx]
    bytes0 = np.array([t.input_bytes for t in _ZOO], dtype=np.float64)[tmpl_idx]
    dataset = np.array([t.dataset for t in _ZOO], dtype=object)[tmpl_idx]
    arch = np.array([t.arch for t in _ZOO], dtype=object)[tmpl_idx]
    width = 2.0 ** rng.uniform(-2.5, 0.5, n)
    depth = 2.0 ** rng.uniform(-1.0, 1.0, n)
    seq = _pick(rng, (32, 64, 128, 256, 512), n)
    px_small = _pick(rng, (32, 48, 64), n)
    px_large = _pick(rng, (96, 128, 160, 192, 224, 256), n)
    text = dataset == "imdb"
    px = np.where(dataset == "cifar10", px_small, px_large)
    native = np.where(dataset == "cifar10", 32.0, 224.0)
    ratio = seq / 128.0
    area = np.where(text, 1.0, (px / native) ** 2)
    length = np.where(text, np.where(family == "transformer", 0.85 * ratio + 0.15 * ratio**2, ratio), 1.0)
    scale = width**2 * depth
    fwd = fwd * area * length * scale
    trn = trn * area * length * scale
    params = params * np.where(family == "mlp", 0.3 + 0.7 * area, 1.0) * scale
    elems = np.where(text, seq, np.round(elems0 * area))
    nbytes = np.where(text, seq * (bytes0 / elems0), np.round(bytes0 * area))
    size = np.array([_DATASET_SIZE.get(d, 1) for d in dataset.tolist()], dtype=np.float64)

    # embedding: DLRM-like, 13 dense + 26 sparse ids
    tables = 10 ** rng.uniform(6, 8.3, n)
    dense = 10 ** rng.uniform(5, 7.5, n)
    # tree: gradient-boosted trees on tabular rows
    trees = rng.integers(50, 1001, n).astype(np.float64)
    tdepth = rng.integers(4, 9, n).astype(np.float64)
    feats = rng.integers(4, 200, n).astype(np.float64)
    tsize = np.round(10 ** rng.uniform(3, 6, n))
    # other: autoencoders, GNNs, audio models
    o_fwd = 10 ** rng.uniform(6, 10, n)
    o_params = 10 ** rng.uniform(5, 8, n)
    o_elems = np.round(10 ** rng.uniform(2, 5, n))
    o_size = np.round(10 ** rng.uniform(3, 6, n))

    is_emb, is_tree, is_other = family == "embedding", family == "tree", family == "other"
    emb_fwd = 2 * dense + 26 * 64 * 2
    fwd = np.select([is_emb, is_tree, is_other], [emb_fwd, 2.0 * trees * tdepth, o_fwd], fwd)
    trn = np.select([is_emb, is_tree, is_other], [3 * emb_fwd, 2.0 * trees * tdepth + 10.0 * trees * feats, 3 * o_fwd], trn)
    params = np.select([is_emb, is_tree, is_other], [tables + dense, trees * 2**tdepth, o_params], params)
    elems = np.select([is_emb, is_tree, is_other], [np.full(n, 39.0), feats, o_elems], elems)
    nbytes = np.select([is_emb, is_tree, is_other], [np.full(n, 13 * 4 + 26 * 8.0), feats * 4, o_elems * 4], nbytes)
    size = np.select([is_emb, is_tree, is_other], [np.full(n, 1e6), tsize, o_size], size)

    flops = np.where(train, batch * trn + OPTIMIZER_FLOPS_PER_PARAM * params, batch * fwd)
    names = []
    for i in range(n):
        f = family[i]
        if f == "embedding":
            names.append(f"dlrm-t{tables[i]:.2g}_criteo")
        elif f == "tree":
            names.append(f"xgb-{int(trees[i])}x{int(tdepth[i])}_tabular{int(feats[i])}")
        elif f == "other":
            names.append(f"other-{o_fwd[i]:.2g}flop")
        else:
            shape = f"seq{int(seq[i])}" if text[i] else f"{int(px[i])}px"
            names.append(f"{arch[i]}-w{width[i]:.2g}-d{depth[i]:.2g}-{shape}_{dataset[i]}")
    return pd.DataFrame(
        {
            "job_id": [f"job-{i:05d}" for i in range(n)],
            "model": names,
            "family": family.astype(str) if n else np.array([], dtype=str),
            "mode": np.where(train, "train", "infer"),
            "batch_size": batch,
            "flops_per_batch": flops.astype(np.float64),
            "param_count": np.round(params).astype(np.int64),
            "input_elems_per_sample": np.maximum(1, elems).astype(np.int64),
            "input_bytes_per_sample": np.maximum(1, np.round(nbytes)).astype(np.int64),
            "dataset_size": size.astype(np.int64),
        },
        columns=list(JOB_FRAME_COLUMNS),
    )


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
        description=f"{n_jobs} synthetic jobs (placement.model.simulate.generate_jobs) on {len(targets)} targets",
        seed=seed,
        code_version=code_version(),
        hardware=", ".join(t.id for t in targets),
        method="time and powers modelled by placement.model.perfmodel.PerformanceModel with noise; "
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
