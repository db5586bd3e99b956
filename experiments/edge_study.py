"""Study 10 -- paper B on measured hardware: time against CPU cores and GPU memory cap, and the knobs
recommended from the measurements.

Reads the measured trace (``data/traces/h200_measured.parquet``, written by ``placement profile``
on the lent H200 host) and its journal (peak GPU memory under "grow"). Every time here is measured
(the trace's trimmed mean per batch, paper B's protocol); CPU energy per batch is *modelled* (no RAPL
on that host: the linear TDP x utilisation model of :mod:`placement.lab.meter`), GPU energy is measured
(NVML counter). Outputs: ``edge_cores.png`` (speed-up over one core per model, and modelled CPU
energy per batch), ``edge_gpu_cap.png`` (time under each cap relative to "grow", OOM marked),
CSV tables, the checks of paper B's three findings, and :mod:`placement.model.recommend`'s knobs for the
host and -- restricted to their core counts and GPU memory -- the catalogue's Jetson targets.
``--docs`` also copies the figures to ``docs/figures/`` (the committed ``docs/edge_study.md``).

Run: ``placement experiment edge_study`` (no sweep: ``--full``, ``--smoke``, ``--ray`` and
``--address`` are accepted for the runner and change nothing).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments import plotstyle
from experiments.harness import parse_script_args
from placement.core.catalogue import get_target
from placement.core.threshold import Thresholds
from placement.core.trace import read_trace
from placement.core.version import code_version
from placement.lab.workloads import get_workload
from placement.model.recommend import (
    DEFAULT_TOLERANCE,
    peak_memory_from_journal,
    recommend_for_target,
    recommend_from_trace,
    recommendations_frame,
)


@dataclass
class Args:
    out: str = "results/edge_study"
    trace: str = "data/traces/h200_measured.parquet"
    tolerance: float = DEFAULT_TOLERANCE
    edge_targets: tuple[str, ...] = ("jetson-nano", "orin-nano", "agx-orin")
    docs: bool = False
    seed: int = 0
    full: bool = False
    smoke: bool = False
    ray: bool = False
    address: str = ""


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_script_args(Args, argv, __doc__)  # no presets: --full and --smoke change nothing here


args = parse_args()
plt.switch_backend("Agg")
plotstyle.apply()  # one style for every study (experiments/plotstyle.py)
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
trace = read_trace(Path(args.trace))
frame = trace.frame.copy()
journal = Path(args.trace + ".journal.jsonl")
peaks = peak_memory_from_journal(journal) if journal.exists() else {}
frame["arch"] = [get_workload(m).model for m in frame["model"]]
frame["t"] = frame["time_per_batch_s"].astype("Float64").astype("float64")
MODELS = ("mlp", "alexnet", "mobilenet", "resnet18", "lstm", "gru", "transformer")
LABEL = {"mlp": "DNN (MLP)", "alexnet": "AlexNet", "mobilenet": "MobileNet", "resnet18": "ResNet-18",
         "lstm": "LSTM", "gru": "GRU", "transformer": "Transformer"}
main = frame[frame["model"].str.endswith(("cifar10", "imdb"))]

# ---------------------------------------------------------------- cores
cpu = main[(main["device"] == "cpu") & main["feasible"].astype(bool)].copy()
cpu["cores"] = cpu["cpu_cores"].astype(int)
cpu["power_w"] = cpu["avg_cpu_power_w"].astype("Float64").astype("float64")
cpu["energy_per_batch_j"] = cpu["power_w"] * cpu["t"]
t1 = cpu[cpu["cores"] == 1].set_index("job_id")["t"]
cpu["speedup_vs_1"] = cpu["t"] / cpu["job_id"].map(t1)
cpu["speedup_vs_1"] = 1.0 / cpu["speedup_vs_1"]
cpu[["job_id", "model", "mode", "batch_size", "cores", "t", "time_cv", "speedup_vs_1", "power_w",
     "energy_per_batch_j", "cpu_power_method"]].sort_values(["job_id", "cores"]).to_csv(out / "edge_cores.csv", index=False)

panels = (("infer", 1, "inference, batch 1"), ("infer", 32, "inference, batch 32"), ("train", 32, "training, batch 32"))
fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
for ax, (mode, batch, title) in zip(axes.flat, panels, strict=False):
    for arch in MODELS:
        rows = cpu[(cpu["arch"] == arch) & (cpu["mode"] == mode) & (cpu["batch_size"] == batch)].sort_values("cores")
        if len(rows):
            ax.plot(rows["cores"], rows["speedup_vs_1"], marker="o", label=LABEL[arch],
                    linestyle="--" if arch in ("lstm", "gru") else "-", color=plotstyle.model_color(arch))
    ax.plot([1, 16], [1, 16], color="0.8", linewidth=0.8, label="linear")
    ax.set(xscale="log", yscale="log", xlabel="CPU cores (affinity + intra-op threads)",
           ylabel="speed-up over 1 core (x)", title=title)
    plotstyle.integer_ticks(ax, [1, 2, 4, 8, 16])
    ax.axvline(4, color="0.6", linestyle=":", linewidth=1)
    ax.legend(fontsize=7.5)
ax = axes.flat[3]
for arch in MODELS:
    rows = cpu[(cpu["arch"] == arch) & (cpu["mode"] == "infer") & (cpu["batch_size"] == 32)].sort_values("cores")
    if len(rows):
        ax.plot(rows["cores"], rows["energy_per_batch_j"] / rows["energy_per_batch_j"].min(), marker="o",
                label=LABEL[arch], linestyle="--" if arch in ("lstm", "gru") else "-", color=plotstyle.model_color(arch))
ax.set(xscale="log", xlabel="CPU cores (affinity + intra-op threads)", ylabel="CPU energy per batch / its minimum (x)",
       title="inference, batch 32: CPU energy (modelled)")
plotstyle.integer_ticks(ax, [1, 2, 4, 8, 16])
ax.legend(fontsize=7.5)
fig.suptitle(f"Measured on {trace.frame['target_id'].iloc[0]} (trimmed mean of repeats; energy: modelled CPU power)")
plotstyle.save(fig, out / "edge_cores.png")
plt.close(fig)

# ---------------------------------------------------------------- GPU caps
gpu = frame[frame["device"] == "gpu"].copy()
gpu["cap"] = gpu["gpu_mem_cap_mib"].astype("Float64")
capped_jobs = sorted(set(gpu.loc[gpu["cap"].notna(), "job_id"]))
cap_rows = []
for job_id in capped_jobs:
    rows = gpu[gpu["job_id"] == job_id]
    grow = rows[rows["cap"].isna()]
    t_grow = float(grow["t"].iloc[0]) if len(grow) and grow["feasible"].astype(bool).iloc[0] else np.nan
    for r in rows.itertuples():
        cap_rows.append({"job_id": job_id, "model": r.model, "mode": r.mode, "batch_size": r.batch_size,
                         "gpu_mem_cap_mib": "grow" if pd.isna(r.cap) else str(int(r.cap)),
                         "feasible": bool(r.feasible), "time_per_batch_s": r.t, "time_vs_grow": r.t / t_grow,
                         "time_cv": r.time_cv, "peak_grow_mib": peaks.get(job_id, np.nan),
                         "avg_gpu_power_w": r.avg_gpu_power_w})
caps = pd.DataFrame(cap_rows)
caps.to_csv(out / "edge_caps.csv", index=False)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
order = ["128", "512", "2048", "grow"]
for ax, mode in zip(axes, ("infer", "train"), strict=True):
    sub = caps[caps["mode"] == mode]
    for i, (job_id, rows) in enumerate(sub.groupby("job_id", sort=True)):
        rows = rows.set_index("gpu_mem_cap_mib").reindex([c for c in order if c in set(rows["gpu_mem_cap_mib"])])
        x = [order.index(c) for c in rows.index]
        y = rows["time_vs_grow"].to_numpy(dtype=float)
        ok = rows["feasible"].to_numpy(dtype=bool)
        line = ax.plot(np.array(x)[ok], y[ok], marker="o", label=job_id.replace(f"-{mode}", ""),
                       linestyle="--" if "imagenet" in job_id else "-", zorder=2,
                       color=plotstyle.model_color(job_id))[0]
        ax.scatter(np.array(x)[~ok], np.full((~ok).sum(), 0.79 + 0.004 * i), marker="x", color=line.get_color(),
                   zorder=3)
        noisy = ok & (pd.to_numeric(rows["time_cv"], errors="coerce").to_numpy(dtype=float, na_value=np.nan) > 0.05)
        ax.scatter(np.array(x)[noisy], y[noisy], s=140, facecolors="none", edgecolors="k", zorder=3)
    ax.axhline(1.0, color="0.7", linewidth=0.8, zorder=1)
    ax.axhspan(0.78, 0.845, color="0.95", zorder=0)
    ax.text(0.02, 0.836, "ran out of memory (x); ringed: CV > 5 % (flagged)", fontsize=8,
            transform=ax.get_yaxis_transform())
    ax.set_xticks(range(len(order)), [f"{c} MiB" if c != "grow" else "grow" for c in order])
    ax.set(xlabel="GPU memory cap (MiB, set_per_process_memory_fraction)", ylabel="time per batch / time under grow (x)",
           title=f"{mode}, batch 256 (CIFAR/IMDB) and 64 (ImageNet, dashed)", ylim=(0.78, 1.16))
for ax in axes:
    ax.legend(fontsize=7, ncol=2, loc="upper right")
plotstyle.save(fig, out / "edge_gpu_cap.png")
plt.close(fig)

# ---------------------------------------------------------------- recommendations
recs = [recommendations_frame(recommend_from_trace(frame, args.tolerance, peaks_mib=peaks))]
for tid in args.edge_targets:
    recs.append(recommendations_frame(recommend_for_target(frame, get_target(tid), args.tolerance, peaks_mib=peaks)))
rec = pd.concat(recs, ignore_index=True)
rec.to_csv(out / "edge_recommend.csv", index=False)

# ---------------------------------------------------------------- findings (numbers for the write-up)


def markdown_table(table: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def speedup(arch: str, mode: str, batch: int, cores: int) -> float:
    rows = cpu[(cpu["arch"] == arch) & (cpu["mode"] == mode) & (cpu["batch_size"] == batch) & (cpu["cores"] == cores)]
    return float(rows["speedup_vs_1"].iloc[0]) if len(rows) else float("nan")


def best_cores(arch: str, mode: str, batch: int) -> int:
    rows = cpu[(cpu["arch"] == arch) & (cpu["mode"] == mode) & (cpu["batch_size"] == batch)]
    return int(rows.loc[rows["t"].idxmin(), "cores"])


finding1 = pd.DataFrame([{"model": arch, "mode": mode, "batch": b, "best_cores": best_cores(arch, mode, b),
                          **{f"speedup_{c}": speedup(arch, mode, b, c) for c in (2, 4, 8, 16)}}
                         for arch in MODELS for mode, b in (("infer", 1), ("infer", 32), ("train", 2), ("train", 32))
                         if mode == "infer" or b != 1])
finding1.to_csv(out / "edge_scaling.csv", index=False)
host_rec = rec[(rec["target_id"] == frame["target_id"].iloc[0]) & rec["job_id"].isin(cpu["job_id"])
               & rec["cores_measured"].map(lambda c: len(c) == 5)]
rec_counts = host_rec["cpu_cores"].value_counts().sort_index()
energy_best = cpu.loc[cpu.groupby("job_id")["energy_per_batch_j"].idxmin()].groupby("cores").size()
gain_4_16 = []
for _job, rows in cpu.groupby("job_id"):
    r = rows.set_index("cores")["t"]
    if 4 in r.index and 16 in r.index:
        gain_4_16.append(float(r[4] / r[16]))
feasible_caps = caps[caps["feasible"] & (caps["gpu_mem_cap_mib"] != "grow")]
ratio = feasible_caps["time_vs_grow"].to_numpy(dtype=float)
steady_jobs = {j for j, rows in caps.groupby("job_id") if (rows.loc[rows["feasible"], "time_cv"].astype(float) <= 0.05).all()}
steady = feasible_caps[feasible_caps["job_id"].isin(steady_jobs)]["time_vs_grow"].to_numpy(dtype=float)
summary = {
    "rows": len(frame), "trace_sha256": trace.sha256,
    "recommended_cores_host_counts": {int(k): int(v) for k, v in rec_counts.items()},
    "modelled_energy_best_cores_counts": {int(k): int(v) for k, v in energy_best.items()},
    "median_time_4_over_16_cores": float(np.median(gain_4_16)),
    "cap_time_vs_grow_median": float(np.median(ratio)), "cap_time_vs_grow_min": float(ratio.min()),
    "cap_time_vs_grow_max": float(ratio.max()),
    "cap_time_vs_grow_steady_min": float(steady.min()), "cap_time_vs_grow_steady_max": float(steady.max()),
    "cap_steady_jobs": len(steady_jobs), "cap_jobs": int(caps["job_id"].nunique()),
    "cap_rows": int(len(caps[caps["gpu_mem_cap_mib"] != "grow"])),
    "cap_oom_rows": int((~caps["feasible"]).sum()),
    "grow_fastest_share": float(np.mean([
        rows.loc[rows["feasible"], "time_per_batch_s"].idxmin() == rows.index[rows["gpu_mem_cap_mib"] == "grow"][0]
        for _, rows in caps.groupby("job_id")])),
    "oom_caps_below_peak": int(((caps["gpu_mem_cap_mib"] != "grow") & ~caps["feasible"]
                                & (caps["gpu_mem_cap_mib"].map(lambda c: float(c) if c != "grow" else np.inf)
                                   < caps["peak_grow_mib"])).sum()),
}
(out / "edge_summary.json").write_text(json.dumps(summary, indent=1))

lines = [
    "## Study 10 — Paper B on the measured host: cores, GPU memory caps, recommended knobs",
    "",
    f"Measured trace `{args.trace}` (sha256 `{trace.sha256[:12]}`, {len(frame)} rows). Times measured; CPU energy "
    "modelled (no RAPL on the host), GPU energy measured (NVML).",
    "",
    "![CPU speed-up and energy vs cores, measured host](edge_study/edge_cores.png)",
    "",
    "![GPU time under memory caps, measured host](edge_study/edge_gpu_cap.png)",
    "",
    "Speed-up over one core (finding 1, LSTM vs GRU; finding 2, flattening):",
    "",
    markdown_table(finding1.round(2)),
    "",
    f"Recommended cores on the host (fewest within {args.tolerance:.0%} of the best, jobs measured on 1-16 cores): "
    + ", ".join(f"{k} cores: {v} jobs" for k, v in summary["recommended_cores_host_counts"].items()),
    "",
    f"Caps (finding 3): feasible capped runs took {summary['cap_time_vs_grow_min']:.3f}-"
    f"{summary['cap_time_vs_grow_max']:.3f}x the time under grow (median {summary['cap_time_vs_grow_median']:.3f}); "
    f"{summary['cap_time_vs_grow_steady_min']:.3f}-{summary['cap_time_vs_grow_steady_max']:.3f}x for the "
    f"{summary['cap_steady_jobs']} of {summary['cap_jobs']} jobs whose every run has CV <= 5 %; "
    f"{summary['cap_oom_rows']} of {summary['cap_rows']} capped runs ran out of memory.",
    "",
]
(out / "section.md").write_text("\n".join(lines))
provenance = {
    "seed": trace.meta.seed, "thresholds": Thresholds().as_dict(), "trace_hashes": {args.trace: trace.sha256},
    "journal_sha256": trace.meta.extra.get("journal_sha256"), "code_version": code_version(),
    "hardware": {"measured_on": json.loads(trace.meta.hardware or "{}"), "analysed_on": platform.platform()},
    "args": dataclasses.asdict(args), "summary": summary,
}
(out / "provenance.json").write_text(json.dumps(provenance, indent=1, default=str))
if args.docs:
    figures = Path("docs/figures")
    figures.mkdir(parents=True, exist_ok=True)
    for name in ("edge_cores.png", "edge_gpu_cap.png"):
        shutil.copyfile(out / name, figures / name)
print(json.dumps(summary, indent=1))
print(finding1.round(2).to_string(index=False))
