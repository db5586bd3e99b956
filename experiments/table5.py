"""Study 1 -- paper A's Table 5: every policy, on each dataset and each hardware configuration.

Policies: CPU-only, GPU-only, Random (p = 0.5), Rule-based (FLOPs / input-size thresholds fitted
on the training fold), the supervised DNN, PPO warm-started from the DNN and fine-tuned on the
training fold's trace replayed in ``DevicePlacement-v0``, the online learner (the service's
library-level placer + learner, fed the test jobs one at a time and updated from their
feedback), and the Oracle (the joint threshold on the true outcomes).

Protocols. Out-of-fold over ``folds`` folds (:func:`placement.agents.training.cv_splits`), each protocol of
``protocols`` in turn: ``arch`` holds out whole model architectures (every variant of an
architecture, on every target, together -- generalisation to a model nobody has run); ``random``
holds out random (job, target) rows (closer to paper A's train/validation split);
every learnt policy is fitted on the other folds only. The online learner starts from the
fold's DNN + warm PPO and sees the held-out jobs as a stream in random order: it decides each
job before its feedback arrives (prequential), feedback reports the chosen device's run only
(bandit feedback, as a client would), and the learner updates every ``online_update_every``
feedback rows behind its safety gate. Metrics (:mod:`placement.agents.evaluation`): throughput vs
CPU-only, energy efficiency vs GPU-only (geometric means), selection accuracy vs the Oracle,
GPU usage reduction vs GPU-only, time and energy regret vs the Oracle, reward ratio.

Datasets: the simulated trace (every catalogue target; energy ``modelled``), the measured
trace(s) when present (GPU energy measured by NVML, CPU power modelled: ``mixed``), and paper
A's Table 2 jobs scored by policies trained on the simulated trace (transfer; energy as the
paper reports it, ``measured`` by the paper).

Run: ``placement experiment table5`` (``--full`` for the paper-scale run; ``--no-ray`` runs
the folds in this process; ``--address`` sends them to a Ray cluster).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments import plotstyle
from experiments.harness import (
    fan_out,
    job_from_row,
    parse_script_args,
    provenance_note,
    write_provenance,
)
from experiments.online_learner import online_learner_loop
from placement.agents.evaluation import evaluate_choices, labelled_set, reports_frame
from placement.agents.training import cv_splits
from placement.core.catalogue import default_catalogue
from placement.core.paper import TABLE5
from placement.core.threshold import Thresholds
from placement.core.trace import pair_outcomes, read_trace
from placement.model.simulate import simulate_trace


@dataclass
class Args:
    out: str = "results/table5"
    seed: int = 0
    speedup_min: float = 2.0
    """T_t: minimum GPU speedup."""
    energy_ratio_max: float = 1.5
    """T_e: maximum GPU/CPU per-sample energy ratio."""
    simulated: str = "data/traces/simulated.parquet"
    """Simulated trace file (used when sim_jobs is 0)."""
    sim_jobs: int = 0
    """> 0: simulate this many jobs on every catalogue target instead of reading `simulated`."""
    measured: tuple[str, ...] = ("data/traces/h200_measured.parquet", "data/traces/h200_pairs_measured.parquet")
    """Measured traces: each one present is a dataset of its own."""
    paper: str = "data/traces/paper_table2.csv"
    targets: tuple[str, ...] = ()
    """Restrict the simulated dataset to these target ids (empty: all)."""
    folds: int = 5
    protocols: tuple[str, ...] = ("arch", "random")
    """Fold protocols (placement.agents.training.cv_splits columns): arch, model, family, target_id or random. The first is
    the main one (its rows carry the plain dataset name); the others are suffixed '(<protocol> folds)'."""
    ppo_steps: int = 4096
    ppo_warmup_steps: int = 2048
    """Value warm-up steps of the warm start (placement.agents.ppo.PpoConfig.value_warmup_steps)."""
    """PPO fine-tuning steps after the warm start, per fold."""
    online: bool = True
    """Run the online learner (serve's placer + learner) on each fold's stream."""
    online_update_every: int = 32
    """Feedback rows between online learner updates."""
    online_ppo_steps: int = 1024
    """PPO steps per online learner update."""
    online_exploration: float = 0.05
    threads: int = 1
    """torch threads per task."""
    full: bool = False
    """Paper-scale run (overrides the budget fields still at their defaults)."""
    smoke: bool = False
    """Tiny run for the test suite."""
    ray: bool = True
    """Run folds as Ray tasks (local Ray unless --address)."""
    address: str = ""
    """Ray cluster address (empty: start a local Ray)."""


FULL = dict(sim_jobs=400, folds=5, ppo_steps=30_000, online_update_every=64, online_ppo_steps=4096)
SMOKE = dict(sim_jobs=40, ppo_warmup_steps=128, protocols=("arch", "random"), targets=("A", "orin-nano"), folds=2, ppo_steps=64, online_update_every=16,
             online_ppo_steps=64, measured=(), online=False)


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_script_args(Args, argv, __doc__, {"full": FULL, "smoke": SMOKE})


args = parse_args()
plt.switch_backend("Agg")
plotstyle.apply()  # one style for every study (experiments/plotstyle.py)
start = time.time()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
th = Thresholds(args.speedup_min, args.energy_ratio_max)

# ---------------------------------------------------------------------------------------
# datasets: name -> (trace frame, pairs, trace hashes)
# ---------------------------------------------------------------------------------------
catalogue = default_catalogue()
trace_hashes: dict[str, str] = {}
datasets: dict[str, pd.DataFrame] = {}
if args.sim_jobs > 0:
    sim_targets = [catalogue[t] for t in (args.targets or tuple(catalogue))]
    sim_frame = simulate_trace(sim_targets, args.sim_jobs, args.seed)
    trace_hashes[f"simulate_trace(n_jobs={args.sim_jobs}, seed={args.seed})"] = "generated in-process"
else:
    sim = read_trace(Path(args.simulated))
    sim_frame = sim.frame
    trace_hashes[args.simulated] = sim.sha256
    if args.targets:
        sim_frame = sim_frame[sim_frame["target_id"].isin(args.targets)].reset_index(drop=True)
datasets["simulated"] = sim_frame
for path in args.measured:
    if Path(path).exists():
        measured = read_trace(Path(path))
        datasets[f"measured:{Path(path).stem}"] = measured.frame
        trace_hashes[path] = measured.sha256
missing_measured = [p for p in args.measured if not Path(p).exists()]
paper = read_trace(Path(args.paper))
trace_hashes[args.paper] = paper.sha256


# ---------------------------------------------------------------------------------------
# one fold: fit every learnt policy on the training rows, decide the test rows
# ---------------------------------------------------------------------------------------
def run_fold(dataset: str, frame: pd.DataFrame, train_idx: np.ndarray, test_idx: np.ndarray | None,
             test_frame: pd.DataFrame | None, a: Args, fold: int) -> dict[str, Any]:
    """Choices (True = GPU) of every policy on the test rows. ``test_idx`` indexes the labelled
    set of ``frame``; with ``test_frame`` the test rows are that frame's labelled set instead
    (transfer)."""
    import torch

    from placement.agents.dnn import DnnConfig, train_dnn
    from placement.agents.ppo import PpoConfig, make_env, train_warm_ppo
    from placement.agents.training import baseline_policies

    torch.set_num_threads(a.threads)
    thr = Thresholds(a.speedup_min, a.energy_ratio_max)
    data = labelled_set(pair_outcomes(frame, thr))
    train = data.subset(train_idx)
    test = data.subset(test_idx) if test_frame is None else labelled_set(pair_outcomes(test_frame, thr))
    seed = a.seed + fold
    policies = baseline_policies(train, seed)
    dnn, history = train_dnn(train.x, train.y, config=DnnConfig(seed=seed))
    policies["dnn"] = dnn
    keys = set(zip(train.pairs["job_id"].astype(str), train.pairs["target_id"].astype(str), strict=True))
    in_train = [(j, t) in keys for j, t in zip(frame["job_id"].astype(str), frame["target_id"].astype(str), strict=True)]
    train_trace = frame[np.asarray(in_train)].reset_index(drop=True)
    env = make_env(train_trace, thr)
    run = train_warm_ppo(dnn, env, timesteps=a.ppo_steps, config=PpoConfig.warm(value_warmup_steps=a.ppo_warmup_steps), seed=seed, eval_jobs=256)
    policies["ppo_warm"] = run.policy
    choices = {name: np.asarray(p.predict(test.x)[0]).reshape(-1) == 1 for name, p in policies.items()}
    online_info: dict[str, Any] = {}
    if a.online and test_frame is None:
        choices["online_learner"], online_info = online_stream(dnn, run.policy, test, frame, thr, a, seed,
                                                               {str(k): v for k, v in trace_hashes.items()})
    return {
        "dataset": dataset, "fold": fold, "test_idx": test_idx, "choices": choices,
        "rule": policies["rule_based"].rule.to_dict(),  # type: ignore[attr-defined]
        "dnn_epochs": history.epochs_run,
        "ppo": {k: run.metrics[k] for k in ("dnn_reward_ratio", "reward_ratio_start", "reward_ratio_end")},
        "online": online_info,
    }


def online_stream(dnn: Any, ppo: Any, test: Any, frame: pd.DataFrame, thr: Thresholds, a: Args, seed: int,
                  hashes: dict[str, str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The service's online learner on the test rows as a stream (in random order): place, report
    the chosen device's run (the trace row nearest the decided knobs, with its real knobs), update."""
    from placement.core.trace import row_target
    from placement.serve.schemas import PlacementRequest

    rng = np.random.default_rng(seed)
    runs = {key: rows for key, rows in frame.groupby(["job_id", "target_id"], sort=False)}
    chose = np.zeros(len(test), dtype=bool)

    def request(i: int) -> PlacementRequest:
        row = test.pairs.iloc[i]
        return PlacementRequest(job=job_from_row(row), target=row_target(row))

    def chosen_run(i: int, result: Any) -> dict[str, Any]:
        row = test.pairs.iloc[i]
        gpu = bool(result.gpu[0])
        chose[i] = gpu
        rows = runs[(row["job_id"], row["target_id"])]
        rows = rows[rows["device"] == ("gpu" if gpu else "cpu")]
        cores = float(result.cpu_cores[0])
        cap = float(result.gpu_mem_cap_mib[0])  # -1 = grow
        rcap = rows["gpu_mem_cap_mib"].astype("Float64").to_numpy(dtype="float64", na_value=-1.0)
        rcores = rows["cpu_cores"].astype("float64").to_numpy()
        # nearest logged knobs: same cap kind first (grow vs capped), then log distance
        dist = np.abs(np.log(rcores / cores)) + np.where((rcap < 0) != (cap < 0), 100.0,
                                                         np.abs(np.log(np.maximum(rcap, 1) / max(cap, 1))))
        run_row = rows.iloc[int(np.argmin(dist))]
        ok = bool(run_row["feasible"])
        outcome: dict[str, Any] = {"device": "gpu" if gpu else "cpu", "feasible": ok,
                                   "cpu_cores": int(run_row["cpu_cores"])}
        if not pd.isna(run_row["gpu_mem_cap_mib"]):
            outcome["gpu_mem_cap_mib"] = int(run_row["gpu_mem_cap_mib"])
        if ok:
            outcome.update(n_samples=int(run_row["n_samples"]), time_total_s=float(run_row["time_total_s"]))
            for power in ("cpu", "gpu"):
                value, method = run_row[f"avg_{power}_power_w"], str(run_row[f"{power}_power_method"])
                if not pd.isna(value) and method != "unknown" and (power == "cpu" or gpu):
                    outcome[f"avg_{power}_power_w"] = float(value)
                    outcome[f"{power}_power_method"] = method
        else:
            outcome["infeasible_reason"] = str(run_row["infeasible_reason"] or "infeasible")
        return outcome

    _, updates = online_learner_loop(
        dnn, ppo, thr, (int(i) for i in rng.permutation(len(test))), request, chosen_run, seed=seed,
        version=f"fold-start-{seed}", trace_hashes=hashes, update_every=a.online_update_every,
        min_holdout=max(4, a.online_update_every // 8), ppo_steps=a.online_ppo_steps,
        exploration=a.online_exploration, threads=a.threads)
    statuses = [u.status for u in updates]
    return chose, {"updates": len(statuses), "promoted": statuses.count("promoted"),
                   "rejected": statuses.count("rejected"), "skipped": statuses.count("skipped")}


# ---------------------------------------------------------------------------------------
# the sweep: one task per (dataset, fold), plus the paper Table 2 transfer task
# ---------------------------------------------------------------------------------------
tasks: list[tuple[Any, ...]] = []
labelled: dict[str, Any] = {}
dataset_of: dict[str, str] = {}
for name, frame in datasets.items():
    data = labelled_set(pair_outcomes(frame, th))
    for proto in args.protocols:
        key = name if proto == args.protocols[0] else f"{name} ({proto} folds)"
        labelled[key] = data
        dataset_of[key] = name
        for k, split in enumerate(cv_splits(data, proto, args.folds, args.seed)):
            tasks.append((key, frame, split.train, split.test, None, args, k))
sim_data = labelled["simulated"]
tasks.append(("paper_table2", datasets["simulated"], np.arange(len(sim_data)), None, paper.frame,
              dataclasses.replace(args, online=False), 0))
labelled["paper_table2"] = labelled_set(pair_outcomes(paper.frame, th))

results = fan_out(run_fold, tasks, "table5 folds", use_ray=args.ray, address=args.address, unit="fold")

# ---------------------------------------------------------------------------------------
# gather out-of-fold choices; score per dataset and per target
# ---------------------------------------------------------------------------------------
POLICIES = ("cpu_only", "gpu_only", "random", "rule_based", "dnn", "ppo_warm", "online_learner")


def basis(frame: pd.DataFrame) -> str:
    """How a dataset's energies were obtained, from its rows' power methods (eq. 2 sums the host CPU
    and the GPU on GPU runs, so a GPU energy with a modelled CPU part is partly modelled)."""
    ok = frame["feasible"].fillna(False).astype(bool)
    cpu = set(frame.loc[ok, "cpu_power_method"].astype(str)) - {"unknown"}
    gpu = set(frame.loc[ok & (frame["device"] == "gpu"), "gpu_power_method"].astype(str)) - {"unknown"}
    if cpu | gpu == {"measured"}:
        return "measured"
    if cpu | gpu == {"modelled"}:
        return "modelled"
    return f"mixed: CPU power {'/'.join(sorted(cpu))}, GPU power {'/'.join(sorted(gpu))}"


energy_basis = {key: basis(datasets[name]) for key, name in dataset_of.items()}
energy_basis["paper_table2"] = basis(paper.frame) + " (as reported by paper A)"
rows: list[pd.DataFrame] = []
for name, data in labelled.items():
    parts = [r for r in results if r["dataset"] == name]
    choices: dict[str, np.ndarray] = {}
    covered = np.zeros(len(data), dtype=bool)
    for r in parts:
        idx = np.arange(len(data)) if r["test_idx"] is None else r["test_idx"]
        covered[idx] = True
        for pol, c in r["choices"].items():
            choices.setdefault(pol, np.zeros(len(data), dtype=bool))[idx] = c
    groups = [("all", covered)] + [(t, covered & (data.pairs["target_id"].astype(str).to_numpy() == t))
                                   for t in sorted(set(data.pairs["target_id"].astype(str)))]
    if name == "paper_table2":
        groups = groups[:1]
    for group, mask in groups:
        sub = data.subset(np.flatnonzero(mask))
        reports = [evaluate_choices(sub.y, sub, "oracle")]
        reports += [evaluate_choices(choices[p][mask], sub, p) for p in POLICIES if p in choices]
        frame = reports_frame(reports)
        frame.insert(0, "target", group)
        frame.insert(0, "dataset", name)
        frame["gpu_share"] = [r.gpu_share for r in reports]
        frame["energy_basis"] = energy_basis[name]
        rows.append(frame)
    if name == "paper_table2":  # five jobs: show every decision
        jobs = data.pairs[["job_id", "speedup", "energy_ratio", "reason"]].copy()
        jobs.insert(1, "oracle", np.where(data.y, "gpu", "cpu"))
        for p in POLICIES:
            if p in choices:
                jobs[p] = np.where(choices[p], "gpu", "cpu")
        jobs.to_csv(out / "table5_paper_jobs.csv", index=False, float_format="%.4f")
        paper_jobs = jobs
table = pd.concat(rows, ignore_index=True)
table.to_csv(out / "table5.csv", index=False, float_format="%.4f")

# ---------------------------------------------------------------------------------------
# plot: our simulated / measured "all" rows beside paper A's Table 5
# ---------------------------------------------------------------------------------------
paper_rows = {"cpu_only": "cpu_only", "gpu_only": "gpu_only", "random": "random", "rule_based": "rule_based", "dnn": "dnn"}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
show = [d for d in labelled if d != "paper_table2"] + ["paper A"]
for ax, (metric, paper_key, label) in zip(axes, (
        ("throughput_vs_cpu_only", "throughput", "throughput vs CPU-only"),
        ("energy_efficiency_vs_gpu_only", "energy_efficiency", "energy efficiency vs GPU-only"),
        ("accuracy", "selection_accuracy_pct", "selection accuracy")), strict=True):
    pols = ["oracle", *POLICIES]
    width = 0.8 / len(show)
    for j, d in enumerate(show):
        if d == "paper A":
            vals = [np.nan if p not in paper_rows or TABLE5[paper_rows[p]][paper_key] is None else
                    float(TABLE5[paper_rows[p]][paper_key]) / (100.0 if metric == "accuracy" else 1.0) for p in pols]
        else:
            sel = table[(table.dataset == d) & (table.target == "all")].set_index("policy")
            vals = [float(sel.loc[p, metric]) if p in sel.index else np.nan for p in pols]
        ax.bar(np.arange(len(pols)) + j * width, vals, width, label=d,
               color=plotstyle.policy_color("paper A") if d == "paper A" else f"C{j}")
    ax.set_xticks(np.arange(len(pols)) + width * (len(show) - 1) / 2, pols, rotation=60, ha="right")
    ax.set_xlabel("policy")
    ax.set_ylabel({"accuracy": "selection accuracy (fraction of jobs)",
                   "throughput_vs_cpu_only": "throughput (x CPU-only, log)",
                   "energy_efficiency_vs_gpu_only": "energy efficiency (x GPU-only, log)"}[metric])
    ax.set_title(label)
    if metric != "accuracy":
        ax.set_yscale("log")
axes[0].legend(title="dataset", fontsize=7.5)
plotstyle.save(fig, out / "table5.png")
plt.close(fig)

# ---------------------------------------------------------------------------------------
# provenance and the markdown section
# ---------------------------------------------------------------------------------------
write_provenance(out, "table5", args, thresholds=th.as_dict(), trace_hashes=trace_hashes,
                 targets=sorted(set(table["target"]) - {"all"}), start=start, missing_measured_traces=missing_measured,
                 folds=[{k: r[k] for k in ("dataset", "fold", "rule", "dnn_epochs", "ppo", "online")} for r in results])


def fmt(x: Any, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


lines = ["## Study 1 — Table 5: policy comparison", ""]
lines += [f"Out-of-fold over {args.folds} folds (seed {args.seed}, T_t = {th.speedup_min:g}, "
          f"T_e = {th.energy_ratio_max:g}; warm PPO {args.ppo_steps} fine-tuning steps per fold; online learner "
          f"updates every {args.online_update_every} feedback rows, {args.online_ppo_steps} PPO steps each). "
          "Throughput and energy efficiency are geometric means over jobs; the energy column says how the "
          f"energies were obtained. Fold protocol of the rows without a suffix: `{args.protocols[0]}`"
          + (" (whole model architectures held out: a ResNet-18 variant is never scored by a policy that trained "
             "on another ResNet-18 variant)" if args.protocols[0] == "arch" else "")
          + "; rows marked '(random folds)' hold out random (job, target) rows, closer to paper A's own "
          "train/validation split.", ""]
lines += ["### All targets, beside paper A", "",
          "| dataset | policy | throughput ×CPU-only | energy eff. ×GPU-only | accuracy % | GPU use reduction % | "
          "time regret % | energy regret % | energy |", "|---|---|---|---|---|---|---|---|---|"]
for d in [*labelled]:
    sel = table[(table.dataset == d) & (table.target == "all")]
    for _, r in sel.iterrows():
        lines.append(f"| {d} | {r.policy} | {fmt(r.throughput_vs_cpu_only)} | {fmt(r.energy_efficiency_vs_gpu_only)} | "
                     f"{fmt(100 * r.accuracy, 1)} | {fmt(r.gpu_usage_reduction_pct, 1)} | {fmt(r.time_regret_pct, 1)} | "
                     f"{fmt(r.energy_regret_pct, 1)} | {r.energy_basis} |")
for p, v in TABLE5.items():
    acc = v["selection_accuracy_pct"]
    lines.append(f"| paper A | {p} | {fmt(v['throughput'])} | {fmt(v['energy_efficiency'])} | "
                 f"{'–' if acc is None else ('≥ ' if p == 'dnn' else '') + str(acc)} | {v['gpu_usage_reduction_pct']} | – | – | "
                 "measured (paper) |")
lines += ["", "![Table 5](table5/table5.png)", "",
          "### Paper A's Table 2 jobs, decided by policies trained on the simulated trace", "",
          "Energy as paper A reports it (its Table 2 powers, `measured` by the paper); xgb_iris has no GPU power, so "
          "its label uses the speedup alone (`energy_unknown`, rule `speed_only`).", "",
          "| job | Oracle | speedup | energy ratio | reason | " + " | ".join(c for c in paper_jobs.columns[5:]) + " |",
          "|---" * (5 + len(paper_jobs.columns[5:])) + "|"]
for _, r in paper_jobs.iterrows():
    lines.append(f"| {r.job_id} | {r.oracle} | {fmt(r.speedup)} | {fmt(r.energy_ratio, 3)} | {r.reason} | "
                 + " | ".join(str(r[c]) for c in paper_jobs.columns[5:]) + " |")
lines.append("")
sim_all = table[(table.dataset == "simulated") & (table.target != "all")]
lines += ["### Simulated, per configuration (accuracy % / throughput ×CPU-only / energy eff. ×GPU-only; energy modelled)", ""]
pols = ["oracle", *[p for p in POLICIES if p in set(table.policy)]]
lines += ["| target | " + " | ".join(pols) + " |", "|---" * (len(pols) + 1) + "|"]
for t, grp in sim_all.groupby("target", sort=False):
    g = grp.set_index("policy")
    lines.append(f"| {t} | " + " | ".join(f"{fmt(100 * g.loc[p, 'accuracy'], 0)} / {fmt(g.loc[p, 'throughput_vs_cpu_only'])}"
                                          f" / {fmt(g.loc[p, 'energy_efficiency_vs_gpu_only'])}" for p in pols) + " |")
lines.append("")
sim = table[(table.dataset == "simulated") & (table.target == "all")].set_index("policy")
ours_ee_cpu = float(sim.loc["cpu_only", "energy_efficiency_vs_gpu_only"])
lines += ["### Where we differ from paper A", ""]
lines.append(f"* CPU-only energy efficiency: ours {ours_ee_cpu:.2f}× GPU-only (modelled), paper 1.30×. "
             + ("On our job mix the GPU is on average the *more* frugal device per sample, so CPU-only is less "
                "efficient, the opposite of the paper's job mix." if ours_ee_cpu < 1 else
                "Like the paper, CPU-only is the more frugal policy on average."))
gpu_tp = float(sim.loc["gpu_only", "throughput_vs_cpu_only"])
lines.append(f"* GPU-only throughput: ours {gpu_tp:.2f}× CPU-only, paper 1.60×. Our geometric mean over a wide job "
             "mix (batch 1–1024, tiny to ImageNet-scale models) spreads far more than the paper's five jobs.")
dnn_acc = 100 * float(sim.loc["dnn", "accuracy"])
rand_key = "simulated (random folds)"
rand_acc = (100 * float(table[(table.dataset == rand_key) & (table.target == "all")].set_index("policy").loc["dnn", "accuracy"])
            if rand_key in labelled else float("nan"))
lines.append(f"* DNN selection accuracy on held-out `{args.protocols[0]}` folds: {dnn_acc:.1f} %"
             + (f"; on random held-out rows: {rand_acc:.1f} %" if np.isfinite(rand_acc) else "")
             + " (paper: ≥ 95 %, on its own training/validation split). "
             + ("An unseen architecture is much harder than an unseen row of a seen one." if np.isfinite(rand_acc)
                and rand_acc > dnn_acc + 5 else ""))
rb = float(sim.loc["rule_based", "accuracy"]) * 100
lines.append(f"* Rule-based (FLOPs/input size, fitted thresholds): {rb:.1f} % (paper 75 %). The rule sees no "
             "hardware, so its accuracy depends on how much the label varies across targets for the same job.")
if rb > dnn_acc:
    lines.append(f"* On architectures held out of training the fitted two-threshold rule ({rb:.1f} %) beats the DNN "
                 f"({dnn_acc:.1f} %) here. A plausible reason (not tested here): the DNN's 30 inputs let it fit quirks of "
                 "the training architectures that do not carry over to an unseen one, while the rule's FLOPs cut "
                 "transfers. Paper A reports the DNN ahead "
                 "(≥ 95 % vs 75 %) on its own split, not on held-out architectures.")
lines.append(f"* GPU usage reduction of the DNN: {float(sim.loc['dnn', 'gpu_usage_reduction_pct']):.1f} % "
             f"(Oracle {float(sim.loc['oracle', 'gpu_usage_reduction_pct']):.1f} %; paper 65 %): it is set by the "
             "share of jobs that are not a valid GPU acceleration in the job mix, not by the policy.")
for d in labelled:
    if not d.startswith("measured:"):
        continue
    m = table[(table.dataset == d) & (table.target == "all")].set_index("policy")
    lines.append(f"* Measured trace `{d.split(':', 1)[1]}` ({int(m.loc['oracle', 'n'])} jobs, energy "
                 f"{m.loc['oracle', 'energy_basis']}): the Oracle sends {100 * (1 - m.loc['oracle', 'gpu_usage_reduction_pct'] / 100):.0f} % "
                 f"of jobs to the GPU; GPU-only reaches {m.loc['gpu_only', 'throughput_vs_cpu_only']:.2f}× CPU-only throughput; "
                 f"the DNN scores {100 * m.loc['dnn', 'accuracy']:.1f} % out-of-fold "
                 f"(rule-based {100 * m.loc['rule_based', 'accuracy']:.1f} %). A data-centre GPU beside 16 host cores is a "
                 "valid acceleration for almost every job, unlike paper A's desktop mix.")
online_updates = {}
for r in results:
    if r["online"]:
        agg = online_updates.setdefault(r["dataset"], {"updates": 0, "promoted": 0, "rejected": 0})
        for k in agg:
            agg[k] += r["online"].get(k, 0)
if online_updates:
    lines.append("* Online learner updates over all folds (promoted / rejected by its safety gate): "
                 + "; ".join(f"{d}: {v['updates']} ({v['promoted']} / {v['rejected']})" for d, v in online_updates.items())
                 + ". With fewer held-out jobs than one update's worth of feedback the learner never updates and decides "
                 "as the warm PPO it started from (with exploration).")
if missing_measured and any(d.startswith("measured:") for d in labelled):
    lines.append(f"* Also looked for {', '.join(missing_measured)}: not present (only the traces listed were measured).")
elif missing_measured:
    lines.append(f"* Measured-trace rows: **pending** — {', '.join(missing_measured)} not present when this ran; "
                 "rerun `placement experiment table5` once it lands.")
lines += ["", provenance_note("table5", trace_hashes), ""]
s_all = table[(table.dataset == "simulated") & (table.target == "all")].set_index("policy")


def t5(p: str) -> str:
    r = s_all.loc[p]
    return (f"{r.throughput_vs_cpu_only:.2f}× / {r.energy_efficiency_vs_gpu_only:.2f}× / {100 * r.accuracy:.1f} % / "
            f"{r.gpu_usage_reduction_pct:.0f} %")


headline = ("Paper A's DNN: 1.45× throughput / 1.25× energy efficiency / ≥ 95 % accuracy / 65 % GPU usage reduction. "
            f"Ours on the simulated trace, architectures held out (modelled energy): DNN {t5('dnn')}, rule-based "
            f"{t5('rule_based')}, warm PPO {t5('ppo_warm')}"
            + (f", online learner {t5('online_learner')}" if "online_learner" in s_all.index else "")
            + f", Oracle {t5('oracle')}.")
if np.isfinite(rand_acc):
    headline += f" On random held-out rows (paper A's kind of split) the DNN scores {rand_acc:.1f} %."
for d in labelled:
    if d.startswith("measured:") and d in datasets:
        m = table[(table.dataset == d) & (table.target == "all")].set_index("policy")
        headline += (f" Measured host ({d.split(':', 1)[1]}): Oracle GPU share {1 - m.loc['oracle', 'gpu_usage_reduction_pct'] / 100:.2f}, "
                     f"DNN accuracy {100 * m.loc['dnn', 'accuracy']:.1f} %.")
lines.insert(2, f"> **Headline.** {headline}\n")
(out / "section.md").write_text("\n".join(lines))
print(table[table.target == "all"].to_string(index=False))
print(f"wrote {out}/table5.csv, table5.png, section.md, provenance.json in {time.time() - start:.0f} s")
