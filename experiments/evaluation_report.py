"""The agents' evaluation report: held-out Table 5 with regret, DNN metrics, warm vs cold PPO curves.

Run: ``python -m experiments.evaluation_report`` (``make evaluation-report``); ``--quick`` for a smoke run with
tiny budgets. Writes ``docs/evaluation.md``, ``docs/evaluation.json`` (every figure, with
provenance: seed, thresholds, trace hashes, host, code version) and
``docs/figures/ppo_learning_curves.png``.

Sections:

1. **Held-out model families on the measured traces** (every ``*_measured.parquet`` but
   ``NOT_POOLED``, pooled;
   the issue's target: selection accuracy >= 97 %, time and energy regret <= 3 % of the
   Oracle): leave one model family (``arch``: mlp, alexnet, ..., lenet, vgg11, textcnn,
   fasttext) out at a time. Two training sets: the measured traces' other families only, and
   every shipped trace with the held-out family removed from all of them (no leak through the
   simulated trace). Then: a measured host kept out of the pool (``NOT_POOLED``), scored with
   policies fitted on the pool; and the accuracy ceiling (:mod:`placement.agents.ceiling`): the
   prediction error the target allows, the error a learned predictor makes, and how often a
   repeat measurement (``RERUNS``) reproduces the labels.
2. **Simulated trace** (every catalogue target): held-out model families, held-out targets,
   random rows.
3. **DNN probabilities** (out-of-fold, held-out families): PR-AUC, ROC-AUC, calibration.
4. **Warm vs cold PPO** on ``DevicePlacement-v0`` replaying the simulated trace (edge targets
   included: device, cores and cap): reward / Oracle reward of the deterministic policy on a
   fixed set of jobs, per environment step, for several seeds; steps to 95 % and 99 %. Two
   settings: jobs of the training trace (in distribution), and jobs of model families held
   out of both the DNN's and PPO's training.
5. **Decision latency**: the output of ``benchmarks/bench_decide.py`` run now.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from placement.agents.baselines import CpuOnlyPolicy, GpuOnlyPolicy, RandomPolicy, RuleBasedPolicy
from placement.agents.ceiling import (
    accuracy_curve,
    margin_prediction,
    median_relative_time_error_pct,
    reproducibility,
    sigma_for_accuracy,
)
from placement.agents.dnn import DnnConfig, classification_metrics, train_dnn
from placement.agents.evaluation import (
    LabelledSet,
    Split,
    compare,
    covered_rows,
    evaluate_choices,
    labelled_set,
    leave_one_group_out,
    out_of_fold,
    reports_frame,
)
from placement.agents.policy import Policy
from placement.agents.training import cv_splits
from placement.core.paper import TABLE5
from placement.core.threshold import Thresholds
from placement.core.trace import pair_outcomes, read_trace
from placement.core.version import code_version

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "data" / "traces"


def _policies(train: LabelledSet, seed: int, recipes: Mapping[str, DnnConfig]) -> dict[str, Policy]:
    out: dict[str, Policy] = {
        "cpu_only": CpuOnlyPolicy(),
        "gpu_only": GpuOnlyPolicy(),
        "random": RandomPolicy(0.5, seed),
        "rule_based": RuleBasedPolicy.fit(train.x, train.y),
    }
    for name, cfg in recipes.items():
        out[name], _ = train_dnn(train.x, train.y, config=cfg)
    return out


def _table(data: LabelledSet, splits: Sequence[Split], fit: Callable[[LabelledSet], Mapping[str, Policy]],
           choices_out: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    choices = out_of_fold(data, splits, fit)
    covered = covered_rows(len(data), splits)
    test = data.subset(np.flatnonzero(covered))
    reports = [evaluate_choices(test.y, test, "oracle")]
    reports += [evaluate_choices(c[covered], test, name) for name, c in choices.items()]
    if choices_out is not None:
        choices_out.update(choices)
    return reports_frame(reports)


def measured_family_holdout(
    measured: LabelledSet, others: LabelledSet | None, seed: int, recipes: Mapping[str, DnnConfig]
) -> dict[str, pd.DataFrame]:
    """Leave-one-family-out on the measured trace; training on the measured trace only, and on
    every trace with the held-out family removed everywhere."""
    splits = leave_one_group_out(measured, "arch")
    choices: dict[str, np.ndarray] = {}
    out = {"measured only": _table(measured, splits, lambda tr: _policies(tr, seed, recipes), choices)}
    out["_errors"] = _misplaced(measured, choices["dnn"])
    if others is not None:
        def fit_all(train: LabelledSet) -> Mapping[str, Policy]:
            families = set(train.pairs["arch"].astype(str))
            held = set(measured.pairs["arch"].astype(str)) - families
            keep = ~np.isin(others.pairs["arch"].astype(str), sorted(held))
            pooled = _concat(train, others.subset(np.flatnonzero(keep)))
            return _policies(pooled, seed, recipes)

        out["all traces, family removed everywhere"] = _table(measured, splits, fit_all)
    return out


CEILING_SIGMAS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)
RERUNS = {"h200_pairs_rerun.parquet": "h200_pairs_measured.parquet"}
"""Repeat sweeps (not pooled into training or evaluation) and the sweep each repeats."""
NOT_POOLED = {
    "h100_pairs_measured.parquet": "its GPU timings are far noisier than the pooled sweeps' and its host CPU, the same "
    "model string, ran the same jobs much slower (figures follow); the catalogue cannot tell the two hosts' CPUs "
    "apart, so it is a held-out host here, not training data (the Makefile's calibration and model leave it out too)",
}
"""Measured traces kept out of the pooled measured set, and why; the report scores policies fitted
on the pooled set on each of them (a held-out measured host)."""


def held_out_host(meas: LabelledSet, pooled_runs: pd.DataFrame, path: Path, frame: pd.DataFrame, why: str,
                  seed: int, recipes: Mapping[str, DnnConfig], th: Thresholds) -> tuple[list[str], dict[str, Any]]:
    """Policies fitted on the pooled measured set (``meas``; its runs ``pooled_runs``), scored on
    a measured host kept out of it (``frame``), with the host's timing variability against the
    pooled sweeps' and its label agreement with the pooled host on the jobs both ran."""
    pairs = pair_outcomes(frame, th)
    host = labelled_set(pairs)
    table = compare(_policies(meas, seed, recipes), host)
    cv = frame.groupby("device")["time_cv"].median()
    cv_pooled = pooled_runs.groupby("device")["time_cv"].median()
    flagged = int(frame["cv_flag"].astype("boolean").fillna(False).sum())
    flagged_pooled = int(pooled_runs["cv_flag"].astype("boolean").fillna(False).sum())
    pooled = meas.pairs.drop_duplicates("job_id").set_index("job_id")
    shared = pairs[pairs["job_id"].isin(pooled.index)]
    ratio = {d: float(np.median(shared[f"{d}_time_per_sample_s"].to_numpy(dtype=float)
                                / pooled.loc[shared["job_id"], f"{d}_time_per_sample_s"].to_numpy(dtype=float)))
             for d in ("cpu", "gpu")} if len(shared) else {}
    agree = reproducibility(pooled.reset_index(), pairs, on=("job_id",)) if len(shared) else None
    targets = ", ".join(f"`{t}`" for t in sorted(pairs["target_id"].astype(str).unique()))
    md = [f"**A held-out measured host: `{path.name}`** ({len(host)} pairs on {targets}, {int(host.y.sum())} GPU "
          f"labels). Not pooled: {why}. Timing CV median {100 * cv.get('cpu', np.nan):.1f} % on its CPU rows and "
          f"{100 * cv.get('gpu', np.nan):.1f} % on its GPU rows, {flagged} of {len(frame)} rows keep `cv_flag` "
          f"(pooled sweeps: {100 * cv_pooled.get('cpu', np.nan):.1f} % and {100 * cv_pooled.get('gpu', np.nan):.1f} %, "
          f"{flagged_pooled} of {len(pooled_runs)} rows)."]
    if agree is not None:
        md[-1] += (f" On the {len(shared)} jobs it shares with the pooled set, its CPU time per sample is "
                   f"{ratio['cpu']:.2f}x and its GPU time {ratio['gpu']:.2f}x the pooled host's (median), and "
                   f"{100 * agree.label_agreement:.1f} % of the jobs get the same label on both hosts "
                   f"({len(agree.flipped)} differ: {', '.join(agree.flipped)}).")
    md[-1] += " The policies fitted on the whole pooled set, scored on this host:\n"
    md.append(f"{_md_table(table)}\n")
    out = {"trace": path.name, "not_pooled_because": why, "table": _records(table),
           "time_cv_median": {k: float(v) for k, v in cv.items()}, "cv_flag_rows": flagged,
           "pooled_time_cv_median": {k: float(v) for k, v in cv_pooled.items()}, "pooled_cv_flag_rows": flagged_pooled,
           "time_ratio_vs_pooled": ratio, "label_agreement_with_pooled": agree.to_dict() if agree else None}
    return md, out


def accuracy_ceiling(meas: LabelledSet, seed: int, reruns: Mapping[Path, tuple[Path, pd.DataFrame, pd.DataFrame]],
                     target: float = 0.97) -> dict[str, Any]:
    """Section 1's "what the target asks": the accuracy a policy reaches at a given prediction
    error (:mod:`placement.agents.ceiling`), the error a learned predictor makes on unseen and on seen
    families, and the measurement's own reproducibility (``reruns``: rerun path -> (original
    path, original labelled frame, rerun labelled frame))."""
    margin = meas.pairs["margin"].to_numpy(dtype=float)
    curve = accuracy_curve(margin, CEILING_SIGMAS)
    need = {a: sigma_for_accuracy(margin, a) for a in (target, 0.95, 0.90)}
    preds = [margin_prediction(meas, leave_one_group_out(meas, "arch"), "held-out model families (leave one out)", seed),
             margin_prediction(meas, cv_splits(meas, "random", 5, seed), "random rows (5 folds)", seed)]
    repro = {path: (orig, reproducibility(a, b)) for path, (orig, a, b) in reruns.items()}
    md = ["### What the target asks of a policy\n",
          "A job's *margin* m = min(ln(speedup / T_t), ln(T_e / energy_ratio)) is positive iff the GPU is a valid "
          "acceleration. A policy that predicts a job's time with a log error eps ~ N(0, sigma^2) (powers known) "
          "predicts the margin m + eps exactly, so it places the job right with probability Phi(|m| / sigma); its "
          f"expected accuracy on these {len(meas)} measured jobs (`agents/ceiling.py`, analytic):\n",
          "| sigma (log error) | median time error % | expected accuracy % |\n|---|---|---|"]
    md += [f"| {p.sigma:g} | {p.median_relative_time_error_pct:.1f} | {100 * p.expected_accuracy:.1f} |" for p in curve]
    md.append("")
    md.append("Accuracy " + ", ".join(
        f"{100 * a:.0f} % needs sigma <= {s:.3f} (median time error <= {median_relative_time_error_pct(s):.1f} %)"
        for a, s in need.items()) + ".\n")
    md.append("How far a learned predictor misses: gradient-boosted trees (scikit-learn) regress the margin from the "
              "policy features, out of fold on the measured jobs; sigma-equivalent = median |error| / 0.6745.\n")
    md.append("| split | jobs | median abs. margin error | sigma-equivalent | accuracy by its sign % |\n|---|---|---|---|---|")
    md += [f"| {p.split} | {p.n} | {p.median_abs_error:.3f} | {p.sigma_equivalent:.3f} | {100 * p.accuracy:.1f} |"
           for p in preds]
    md.append("")
    for path, (orig, r) in repro.items():
        md.append(
            f"The measurement itself: `{path.name}` re-measured the jobs of `{orig.name}` on a freshly lent machine "
            f"of the same kind in a later session. Of {r.n} (job, target) pairs, the Oracle's label agrees on {100 * r.label_agreement:.1f} % "
            f"({len(r.flipped)} flipped: {', '.join(r.flipped) if r.flipped else 'none'}); median |m1 - m2| "
            f"{r.median_abs_margin_difference:.3f}, i.e. one measurement's margin noise sigma ~ {r.sigma_measurement:.3f}.\n")
    fam = preds[0]
    md.append(
        f"Reading: to place {100 * target:.0f} % of jobs from unseen families right, a policy must predict their time "
        f"to sigma <= {need[target]:.3f}; the learned predictor's error on unseen families is sigma ~ "
        f"{fam.sigma_equivalent:.2f} ({fam.sigma_equivalent / need[target]:.1f}x that), on seen families "
        f"~ {preds[1].sigma_equivalent:.2f}. Static job features (FLOPs, parameters, input size, batch, family) "
        f"do not say how efficiently an unseen architecture runs on each device ({_contrast(meas)}); the margin of "
        "a new architecture has to be measured, which is what the service's exploration and feedback loop do.\n")
    json_out = {
        "curve": [p.to_dict() for p in curve],
        "sigma_needed": {f"{a:g}": s for a, s in need.items()},
        "margin_prediction": [p.to_dict() for p in preds],
        "reproducibility": {path.name: {"original": orig.name, **r.to_dict()} for path, (orig, r) in repro.items()},
    }
    return {"md": md, "json": json_out}


def _contrast(data: LabelledSet, flops_tol_log10: float = 0.1) -> str:
    """The two measured jobs of different families, same mode, FLOPs per batch within
    ``flops_tol_log10`` decades and opposite Oracle labels, whose speedups differ most (a sentence)."""
    p = data.pairs
    lf = np.log10(p["flops_per_batch"].to_numpy(dtype=float))
    ls = np.log(p["speedup"].to_numpy(dtype=float))
    arch, mode = p["arch"].astype(str).to_numpy(), p["mode"].astype(str).to_numpy()
    close = ((np.abs(lf[:, None] - lf[None, :]) <= flops_tol_log10) & (arch[:, None] != arch[None, :])
             & (mode[:, None] == mode[None, :]) & (data.y[:, None] != data.y[None, :])
             & np.isfinite(ls[:, None] - ls[None, :]))
    if not close.any():
        return "no two families' jobs of similar FLOPs are placed differently here"
    gap = np.where(close, ls[:, None] - ls[None, :], -np.inf)
    i, j = np.unravel_index(int(np.argmax(gap)), gap.shape)
    label = {True: "a GPU job", False: "a CPU job"}
    return (f"at {p['flops_per_batch'].iloc[i]:.2g} and {p['flops_per_batch'].iloc[j]:.2g} FLOPs per batch the measured "
            f"{p['model'].iloc[i]} ({mode[i]}, batch {p['batch_size'].iloc[i]}) runs {np.exp(ls[i]):.1f}x faster on the "
            f"GPU ({label[bool(data.y[i])]}), {p['model'].iloc[j]} ({mode[j]}, batch {p['batch_size'].iloc[j]}) "
            f"{np.exp(ls[j]):.1f}x ({label[bool(data.y[j])]})")


def _misplaced(data: LabelledSet, chose_gpu: np.ndarray) -> pd.DataFrame:
    """The rows a policy placed differently from the Oracle, with their speedup and energy ratio."""
    cols = ["model", "mode", "batch_size", "speedup", "energy_ratio", "label_gpu"]
    wrong = data.pairs.loc[chose_gpu != data.y, cols].copy()
    wrong["chose"] = np.where(chose_gpu[chose_gpu != data.y], "gpu", "cpu")
    wrong["oracle"] = np.where(wrong.pop("label_gpu").to_numpy(dtype=bool), "gpu", "cpu")
    return wrong.reset_index(drop=True)


def _concat(a: LabelledSet, b: LabelledSet) -> LabelledSet:
    return LabelledSet(pd.concat([a.pairs, b.pairs], ignore_index=True), np.concatenate([a.x, b.x]),
                       np.concatenate([a.y, b.y]))


def dnn_probability_metrics(data: LabelledSet, splits: Sequence[Split], cfg: DnnConfig) -> dict[str, Any]:
    p = np.full(len(data), np.nan)
    for split in splits:
        train = data.subset(split.train)
        policy, _ = train_dnn(train.x, train.y, config=cfg)
        p[split.test] = policy.gpu_probability(data.x[split.test])
    ok = np.isfinite(p)
    return classification_metrics(data.y[ok], p[ok])


# --- PPO curves --------------------------------------------------------------------------

def ppo_curves(
    frame: pd.DataFrame, *, seeds: Sequence[int], warm_steps: int, cold_steps: int, every: int, eval_jobs: int,
    held_out_arch: Sequence[str] = (), thresholds: Thresholds | None = None,
) -> dict[str, Any]:
    """Warm and cold PPO learning curves (reward / Oracle reward vs environment steps).

    ``held_out_arch``: model families removed from the DNN's and PPO's training trace; the
    evaluation jobs then come from those families only (otherwise from the training trace).
    """
    from placement.agents.evaluation import model_architecture
    from placement.agents.knobs import KnobLevels
    from placement.agents.ppo import (
        PpoConfig,
        collect_eval_jobs,
        env_actions,
        knob_labels,
        make_env,
        make_ppo,
        steps_to_fraction,
        train_curve,
        warm_start,
    )

    arch = model_architecture(frame["model"])
    held = np.isin(arch, list(held_out_arch))
    train_frame = frame[~held].reset_index(drop=True)
    eval_frame = frame[held].reset_index(drop=True) if held_out_arch else train_frame
    data = labelled_set(pair_outcomes(train_frame, thresholds))
    runs: dict[str, Any] = {"held_out_arch": list(held_out_arch), "seeds": list(seeds), "warm": [], "cold": [],
                            "train_pairs": len(data)}
    for seed in seeds:
        torch.manual_seed(seed)
        env = make_env(train_frame, thresholds)
        edge = [t.id for t in env.targets if t.is_edge]
        cores, caps = knob_labels(make_env(train_frame, thresholds, targets=edge), data.x,
                                  max_steps=40 * len(data), seed=seed)
        dnn, _ = train_dnn(data.x, data.y, config=DnnConfig(seed=seed), core_labels=cores, cap_labels=caps,
                           knob_levels=KnobLevels())
        jobs = collect_eval_jobs(make_env(eval_frame, thresholds), eval_jobs, seed + 1000)
        if jobs.knobbed != env.knobs:
            raise ValueError("evaluation and training environments differ in action space")
        t0 = time.perf_counter()
        model, warm = warm_start(dnn, env, PpoConfig.warm(), seed)
        start = jobs.reward_ratio(env_actions(dnn, jobs.obs, jobs.knobbed))
        points = [(0, start)]  # the warm actor before any environment step (the critic warm-up changes no decision)
        points += [(p.steps, p.reward_ratio) for p in train_curve(model, jobs, warm_steps, every=every,
                                                                   offset=int(warm["steps"]))]
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cold = make_ppo(make_env(train_frame, thresholds), dnn.normaliser, PpoConfig.cold(), seed)
        cold_points = [(p.steps, p.reward_ratio) for p in train_curve(cold, jobs, cold_steps, every=every)]
        cold_s = time.perf_counter() - t0
        for kind, pts, secs in (("warm", points, warm_s), ("cold", cold_points, cold_s)):
            from placement.agents.ppo import CurvePoint

            cps = [CurvePoint(s, r) for s, r in pts]
            runs[kind].append({
                "seed": seed, "curve": pts, "wall_s": secs,
                "steps_to_95": steps_to_fraction(cps, 0.95), "steps_to_99": steps_to_fraction(cps, 0.99),
                "final": pts[-1][1],
            })
        runs.setdefault("value_warmup", []).append(warm)
    return runs


def _median_steps(runs: list[dict[str, Any]], key: str) -> str:
    vals = [r[key] for r in runs]
    if any(v is None for v in vals):
        reached = [v for v in vals if v is not None]
        return f"not reached in {len(vals) - len(reached)}/{len(vals)} seeds" + (
            f" (reached: {', '.join(map(str, reached))})" if reached else "")
    return f"{int(np.median(vals)):,} (seeds: {', '.join(f'{v:,}' for v in vals)})"


def plot_curves(results: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.2), squeeze=False)
    for ax, (title, runs) in zip(axes[0], results.items(), strict=True):
        for kind, color in (("warm", "tab:blue"), ("cold", "tab:orange")):
            for k, run in enumerate(runs[kind]):
                steps, ratio = zip(*run["curve"], strict=True)
                ax.plot(steps, ratio, color=color, alpha=0.8, lw=1.4,
                        label=f"{kind} PPO" if k == 0 else None)
        ax.axhline(0.95, color="grey", ls="--", lw=0.8)
        ax.axhline(0.99, color="grey", ls=":", lw=0.8)
        ax.set_ylim(max(-0.2, min(0.5, ax.get_ylim()[0])), 1.02)
        ax.set_xlabel("environment steps (warm: value warm-up included)")
        ax.set_ylabel("mean reward / Oracle mean reward")
        ax.set_title(title)
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- markdown ----------------------------------------------------------------------------

def _md_table(frame: pd.DataFrame) -> str:
    cols = ["policy", "throughput_vs_cpu_only", "energy_efficiency_vs_gpu_only", "accuracy", "gpu_usage_reduction_pct",
            "time_regret_pct", "energy_regret_pct", "reward_ratio", "infeasible_choices", "energy_method"]
    head = ["policy", "throughput (x CPU-only)", "energy eff. (x GPU-only)", "accuracy %", "GPU use reduction %",
            "time regret %", "energy regret %", "reward / Oracle", "infeasible", "energy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in frame[cols].to_dict(orient="records"):
        cells = []
        for c in cols:
            v = rec[c]
            if c == "accuracy":
                cells.append(f"{100 * v:.1f}")
            elif isinstance(v, float):
                cells.append("–" if not np.isfinite(v) else f"{v:.3f}" if c == "reward_ratio" else f"{v:.2f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


GROUNDING_START = "<!-- section:grounding (python -m experiments.evaluation_report --only grounding) -->"
GROUNDING_END = "<!-- /section:grounding -->"


def _repo_relative(path: str) -> str:
    """``path`` relative to the repository (trace hashes name files, not one machine's checkout)."""
    root = ROOT.resolve()
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path


def pooled_traces() -> list[Path]:
    """The traces the grounding evaluation pools: paper A's Table 2, the simulated trace and every
    shipped measured trace except the held-out hosts' (:data:`NOT_POOLED`)."""
    hosts = {TRACES / name for name in NOT_POOLED}
    measured = [p for p in sorted(TRACES.glob("*_measured.parquet")) if p not in hosts]
    return [p for p in [TRACES / "paper_table2.csv", TRACES / "simulated.parquet", *measured] if p.exists()]


def write_grounding_section(out: Path, seed: int = 0, threads: int = 1) -> dict[str, Any]:
    """Issue 12's targets (:mod:`placement.agents.grounding`) as a section of ``out``: replaced between its
    markers when present, else appended; the figures also go to ``docs/evaluation_grounding.json``."""
    from placement.agents.grounding import (
        GroundingSettings,
        grounding_evaluation,
        grounding_markdown,
    )

    pooled = pooled_traces()
    # a shortened DNN recipe (no refit, 120 epochs at most): 11 splits in minutes on a shared 2-core host
    recipe = DnnConfig(seed=seed, max_epochs=120, patience=40, refit=False)
    result = grounding_evaluation(pooled, TRACES / "h200_probe.parquet",
                                  GroundingSettings(seed=seed, threads=threads, dnn=recipe), progress=True)
    command = f"python -m experiments.evaluation_report --only grounding --seed {seed}"
    result["command"] = command
    result["code_version"] = code_version()
    result["trace_hashes"] = {_repo_relative(k): v for k, v in result.get("trace_hashes", {}).items()}
    section = f"{GROUNDING_START}\n{grounding_markdown(result, command)}\n{GROUNDING_END}\n"
    text = out.read_text() if out.exists() else ""
    if GROUNDING_START in text and GROUNDING_END in text:
        head, rest = text.split(GROUNDING_START, 1)
        text = head + section + rest.split(GROUNDING_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    out.write_text(text)
    (out.parent / "evaluation_grounding.json").write_text(json.dumps(result, indent=1, sort_keys=True, default=_jsonable) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write docs/evaluation.md (agents' evaluation report).")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "evaluation.md")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ppo-seeds", type=int, default=3)
    parser.add_argument("--warm-steps", type=int, default=20_000)
    parser.add_argument("--cold-steps", type=int, default=40_000)
    parser.add_argument("--every", type=int, default=1_000)
    parser.add_argument("--eval-jobs", type=int, default=2_048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run; not for the committed report)")
    parser.add_argument("--only", choices=("grounding",), default=None,
                        help="write one section alone into --out (between its markers), leaving the rest as is")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only == "grounding":
        write_grounding_section(args.out, args.seed, args.threads)
        return
    if args.quick:
        args.ppo_seeds, args.warm_steps, args.cold_steps, args.every, args.eval_jobs = 1, 1024, 1024, 512, 256
    th = Thresholds()
    started = time.time()
    recipes = {"dnn": DnnConfig(seed=args.seed)}
    if not args.quick:
        recipes["dnn_paper_recipe"] = DnnConfig.paper(seed=args.seed)

    paper_path = TRACES / "paper_table2.csv"
    sim_path = TRACES / "simulated.parquet"
    hosts = {TRACES / name: why for name, why in NOT_POOLED.items() if (TRACES / name).exists()}
    measured_paths = [p for p in sorted(TRACES.glob("*_measured.parquet")) if p not in hosts]
    traces = {p: read_trace(p) for p in [paper_path, sim_path, *measured_paths] if p.exists()}
    hashes = {str(p.relative_to(ROOT)): t.sha256 for p, t in traces.items()}
    labelled = {p: labelled_set(pair_outcomes(t.frame, th)) for p, t in traces.items()}
    prov: dict[str, Any] = {
            "command": "python -m experiments.evaluation_report" + (" --quick" if args.quick else ""),
            "seed": args.seed, "thresholds": th.as_dict(), "trace_hashes": hashes, "code_version": code_version(),
            "host": {"node": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count(),
                     "python": platform.python_version(), "torch": torch.__version__, "torch_threads": args.threads},
            "dnn_recipes": {k: v.to_dict() for k, v in recipes.items()},
    }
    host_traces = {p: read_trace(p) for p in hosts}
    hashes.update({str(p.relative_to(ROOT)): t.sha256 for p, t in host_traces.items()})
    reruns = {}
    for rerun_name, orig_name in RERUNS.items():
        rerun_path, orig_path = TRACES / rerun_name, TRACES / orig_name
        if rerun_path.exists() and orig_path in traces:
            rerun = read_trace(rerun_path)
            hashes[str(rerun_path.relative_to(ROOT))] = rerun.sha256
            reruns[rerun_path] = (orig_path, pair_outcomes(traces[orig_path].frame, th), pair_outcomes(rerun.frame, th))
    results: dict[str, Any] = {"provenance": prov}
    md: list[str] = []

    # 1. the measured traces (pooled: every *_measured.parquet), held-out model families
    if measured_paths:
        meas = labelled[measured_paths[0]]
        for mp in measured_paths[1:]:
            meas = _concat(meas, labelled[mp])
        others = [labelled[p] for p in labelled if p not in measured_paths]
        pooled = others[0] if others else None
        for o in others[1:]:
            pooled = _concat(cast(LabelledSet, pooled), o)
        tables = measured_family_holdout(meas, pooled, args.seed, recipes)
        errors = tables.pop("_errors")
        random_rows = _table(meas, cv_splits(meas, "random", 5, args.seed), lambda tr: _policies(tr, args.seed, recipes))
        measured_targets = meas.pairs.groupby("target_id")["label_gpu"].agg(["size", "sum"])
        held_target = (_table(meas, leave_one_group_out(meas, "target_id"), lambda tr: _policies(tr, args.seed, recipes))
                       if len(measured_targets) > 1 else None)
        key = "measured_family_holdout"
        results[key] = {k: _records(v) for k, v in tables.items()}
        results[key]["traces"] = {mp.name: len(labelled[mp]) for mp in measured_paths}
        results[key]["random rows, measured only (5 folds)"] = _records(random_rows)
        results[key]["dnn_misplaced_measured_only"] = _records(errors)
        names = ", ".join(f"`{mp.name}` ({len(labelled[mp])} pairs)" for mp in measured_paths)
        md.append("## 1. Held-out model families on the measured traces\n")
        md.append(
            f"Traces pooled: {names}. {len(meas)} labelled (job, target) pairs ({int(meas.y.sum())} GPU, "
            f"{int((~meas.y).sum())} CPU by the joint threshold), {meas.pairs['arch'].nunique()} model families "
            f"({', '.join(sorted(meas.pairs['arch'].unique()))}); each family is held out in turn "
            "(leave-one-family-out) and the policies are fitted on the rest. Energy: GPU power measured by "
            "NVML, host CPU power modelled (the host exposes no RAPL), so eq. (2) energies are `modelled`.\n")
        for name, table in tables.items():
            md.append(f"**Training on: {name}.**\n\n{_md_table(table)}\n")
            dnn_row = table.set_index("policy").loc["dnn"]
            ok = (dnn_row["accuracy"] >= 0.97 and dnn_row["time_regret_pct"] <= 3 and dnn_row["energy_regret_pct"] <= 3)
            md.append(f"Target (accuracy >= 97 %, time and energy regret <= 3 %): DNN {100 * dnn_row['accuracy']:.1f} %, "
                      f"{dnn_row['time_regret_pct']:.2f} % / {dnn_row['energy_regret_pct']:.2f} % -> "
                      f"**{'met' if ok else 'not met'}**.\n")
        md.append("For comparison, **random rows** (5 folds of the measured pairs, measured only; paper A's own "
                  f"kind of split, where every family is seen in training):\n\n{_md_table(random_rows)}\n")
        if held_target is not None:
            results[key]["held-out hardware targets, measured only"] = _records(held_target)
            md.append("**Held-out hardware targets** (each measured target held out in turn, the policies fitted on the "
                      "other targets' jobs; " + ", ".join(f"`{t}` {int(r['size'])} pairs, {int(r['sum'])} GPU labels"
                                                         for t, r in measured_targets.iterrows())
                      + f"):\n\n{_md_table(held_target)}\n")
        gpu_share = 100 * float(meas.y.mean())
        dist = np.minimum(np.abs(np.log(meas.pairs["speedup"].to_numpy(dtype=float) / th.speedup_min)),
                          np.abs(np.log(meas.pairs["energy_ratio"].to_numpy(dtype=float) / th.energy_ratio_max)))
        near10, near20 = (int(np.sum(dist < np.log(f))) for f in (1.1, 1.2))
        md.append(
            f"Reading: {gpu_share:.1f} % of the measured jobs are GPU jobs (GPU-only scores that accuracy). "
            f"{near10} of the {len(meas)} jobs have a measured speedup or energy ratio within 10 % of its threshold "
            f"(T_t = {th.speedup_min:g}, T_e = {th.energy_ratio_max:g}), {near20} within 20 %: a policy must predict an "
            "unseen architecture's speedup and energy ratio about that well to place them. "
            f"The DNN trained on the measured traces alone misplaced these {len(errors)} jobs (their families unseen "
            "in training):\n")
        md.append("| model | mode | batch | speedup | energy ratio | DNN | Oracle |\n|---|---|---|---|---|---|---|")
        for r in errors.itertuples():
            md.append(f"| {r.model} | {r.mode} | {r.batch_size} | {r.speedup:.2f} | {r.energy_ratio:.2f} | {r.chose} | {r.oracle} |")
        if len(tables) > 1:
            acc_m = float(tables["measured only"].set_index("policy").at["dnn", "accuracy"])  # type: ignore[arg-type]
            acc_a = float(tables["all traces, family removed everywhere"].set_index("policy").at["dnn", "accuracy"])  # type: ignore[arg-type]
            verdict = "raises" if acc_a > acc_m else "does not raise"
            md.append(f"\nAdding the other traces (the held-out family removed from them as well) {verdict} the DNN's "
                      f"held-out accuracy ({100 * acc_m:.1f} % -> {100 * acc_a:.1f} %).\n")
        for hp, why in hosts.items():
            pooled_runs = pd.concat([traces[mp].frame for mp in measured_paths], ignore_index=True)
            host_md, host_json = held_out_host(meas, pooled_runs, hp, host_traces[hp].frame, why, args.seed, recipes, th)
            md.extend(host_md)
            results[key].setdefault("held-out measured hosts", []).append(host_json)
        ceiling = accuracy_ceiling(meas, args.seed, reruns)
        results[key]["ceiling"] = ceiling["json"]
        md.extend(ceiling["md"])

    # 2. simulated trace
    if sim_path in labelled:
        sim = labelled[sim_path]
        md.append(f"## 2. Simulated trace `{sim_path.name}` ({len(sim)} pairs on {sim.pairs['target_id'].nunique()} targets)\n")
        md.append("Energy `modelled` (performance model). Out-of-fold: every row is scored by policies fitted without it.\n")
        sim_tables = {
            "held-out model families (5 folds of whole families)": cv_splits(sim, "arch", 5, args.seed),
            "held-out hardware targets (leave one target out)": leave_one_group_out(sim, "target_id"),
            "random rows (5 folds)": cv_splits(sim, "random", 5, args.seed),
        }
        results["simulated"] = {}
        for title, splits in sim_tables.items():
            table = _table(sim, splits, lambda tr: _policies(tr, args.seed, {"dnn": recipes["dnn"]}))
            results["simulated"][title] = _records(table)
            md.append(f"**{title}.**\n\n{_md_table(table)}\n")
        probs = dnn_probability_metrics(sim, sim_tables["held-out model families (5 folds of whole families)"],
                                        recipes["dnn"])
        results["dnn_probabilities_simulated_family_holdout"] = probs
        md.append("## 3. DNN probabilities (simulated trace, held-out model families, out-of-fold)\n")
        md.append(
            f"accuracy {probs['accuracy']:.3f}, precision {probs['precision']:.3f}, recall {probs['recall']:.3f}, "
            f"PR-AUC (average precision) {probs['average_precision']:.3f}, ROC-AUC {probs['roc_auc']:.3f}, "
            f"Brier {probs['brier']:.3f}, log loss {probs['log_loss']:.3f}, expected calibration error "
            f"{probs['ece']:.3f} (scikit-learn; 10 equal-width bins).\n")

        # 4. PPO curves
        frame = traces[sim_path].frame
        seeds = [args.seed + k for k in range(args.ppo_seeds)]
        archs = sorted(set(sim.pairs["arch"].astype(str)))
        rng = np.random.default_rng(args.seed)
        held = sorted(rng.choice(archs, size=max(1, len(archs) // 5), replace=False).tolist())
        curves = {
            "in distribution (jobs of the training trace)": ppo_curves(
                frame, seeds=seeds, warm_steps=args.warm_steps, cold_steps=args.cold_steps, every=args.every,
                eval_jobs=args.eval_jobs, thresholds=th),
            f"held-out model families ({', '.join(held)})": ppo_curves(
                frame, seeds=seeds, warm_steps=args.warm_steps, cold_steps=args.cold_steps, every=args.every,
                eval_jobs=args.eval_jobs, held_out_arch=held, thresholds=th),
        }
        results["ppo_curves"] = curves
        fig = args.out.parent / "figures" / "ppo_learning_curves.png"
        plot_curves(curves, fig)
        md.append("## 4. Warm-started vs cold PPO on `DevicePlacement-v0`\n")
        md.append(
            "The environment replays the simulated trace on every catalogue target, edge targets included, so an "
            "action is `[device, core level, cap level]` (`MultiDiscrete([2, 6, 5])`) and the reward carries the "
            "knob term. The curve is the deterministic policy's mean reward over the Oracle's on a fixed set of "
            f"{args.eval_jobs} jobs, every {args.every} steps. Warm: the DNN (and its knob heads) copied into the "
            f"actor, the critic fitted on {curves[next(iter(curves))]['value_warmup'][0].get('steps', 0)} steps "
            "of the warm policy (counted in its steps), then conservative PPO (lr 1e-4, clip 0.1, target KL 0.02). "
            "The warm actor is scored at step 0 too: the critic warm-up changes no decision. The DNN's own "
            "training used the trace's labelled pairs (offline data, no environment steps). Cold: SB3's default "
            "PPO recipe on the same network, orthogonal initialisation.\n")
        md.append(f"![warm vs cold PPO learning curves](figures/{fig.name})\n")
        md.append("| setting | policy | steps to 95 % of Oracle reward (median) | steps to 99 % (median) | final ratio (mean) |")
        md.append("|---|---|---|---|---|")
        for title, runs in curves.items():
            for kind in ("warm", "cold"):
                finals = np.mean([r["final"] for r in runs[kind]])
                md.append(f"| {title} | {kind} | {_median_steps(runs[kind], 'steps_to_95')} | "
                          f"{_median_steps(runs[kind], 'steps_to_99')} | {finals:.4f} |")
        md.append("")
        for title, runs in curves.items():
            w = [r["steps_to_95"] for r in runs["warm"]]
            c = [r["steps_to_95"] for r in runs["cold"]]
            if all(v is not None for v in w + c):
                ratio = np.median(w) / max(np.median(c), 1)
                md.append(f"- {title}: warm needs {np.median(w):,.0f} steps to 95 %, cold {np.median(c):,.0f}: "
                          f"ratio {ratio:.3f} (target <= 0.1: **{'met' if ratio <= 0.1 else 'not met'}**).")
            else:
                md.append(f"- {title}: 95 % not reached by every run within the budget (warm {w}, cold {c}).")
        md.append("")
        first = next(iter(curves.values()))
        w95 = [r["steps_to_95"] for r in first["warm"]]
        n99 = sum(r["steps_to_99"] is not None for r in first["warm"])
        reach95 = (f"reaches 95 % of the Oracle reward after {int(np.median(w95)):,} environment steps (median)"
                   if all(v is not None for v in w95) else "does not reach 95 % in every seed")
        md.append(
            "Reading: in distribution the warm actor starts where the DNN is (its in-sample reward ratio, "
            f"{np.mean([r['curve'][0][1] for r in first['warm']]):.4f}), so it {reach95} and 99 % in {n99} of "
            f"{len(first['warm'])} seeds within the budget, while cold PPO has to learn the rule from rewards; "
            f"the warm policy's final ratio is {np.mean([r['final'] for r in first['warm']]):.4f}. On model families held out "
            "of both the DNN's and PPO's training, fine-tuning on the training trace's jobs cannot show what those "
            "families do: final ratios there are warm "
            f"{np.mean([r['final'] for r in list(curves.values())[-1]['warm']]):.4f} and cold "
            f"{np.mean([r['final'] for r in list(curves.values())[-1]['cold']]):.4f}. The step comparison "
            "measures learning speed on the deployment distribution, not generalisation to new families.\n")

    # 5. latency
    bench = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_decide.py"), "--calls",
                            "2000" if args.quick else "20000", "--repeats", "3" if args.quick else "20"],
                           capture_output=True, text=True, cwd=ROOT)
    results["bench_decide"] = bench.stdout
    md.append("## 5. Decision latency (`benchmarks/bench_decide.py`, run now on this host)\n")
    md.append("```\n" + (bench.stdout or bench.stderr).strip() + "\n```\n")

    # paper reference
    md.append("## Paper A's Table 5 (for reference; its workload and aggregation are not published)\n")
    md.append("| policy | throughput | energy efficiency | selection accuracy % | GPU usage reduction % |\n|---|---|---|---|---|")
    for name, row_obj in TABLE5.items():
        row = cast(dict[str, Any], row_obj)
        acc = row["selection_accuracy_pct"]
        md.append(f"| {name} | {row['throughput']:.2f} | {row['energy_efficiency']:.2f} | "
                  f"{'–' if acc is None else ('≥ ' if name == 'dnn' else '') + str(acc)} | {row['gpu_usage_reduction_pct']} |")
    md.append("")

    prov["wall_s"] = round(time.time() - started, 1)
    header = [
        "# Evaluation of the placement policies",
        "",
        f"Generated by `{prov['command']}` (`make evaluation-report`) in {prov['wall_s']:.0f} s; every figure below "
        "was measured in that run. Machine-readable: `docs/evaluation.json`.",
        "",
        f"- code version `{prov['code_version']}`, seed {args.seed}, thresholds T_t = {th.speedup_min:g}, "
        f"T_e = {th.energy_ratio_max:g} (missing power: {th.missing_power.value})",
        f"- host {prov['host']['node']} ({prov['host']['machine']}, {prov['host']['cpus']} CPUs), Python "
        f"{prov['host']['python']}, torch {prov['host']['torch']} ({args.threads} thread)",
        "- traces (sha256): " + "; ".join(f"`{p}` {h[:16]}…" for p, h in hashes.items()),
        "",
        "Metrics (`agents/evaluation.py`): throughput = geometric mean over jobs of CPU time / chosen time "
        "(CPU-only = 1); energy efficiency = geometric mean of GPU-only energy / chosen energy (GPU-only = 1, "
        "higher is better; per-sample energy by paper A eq. 2, host CPU counted during GPU runs); accuracy = "
        "share of jobs placed as the Oracle (the joint threshold T_t = 2, T_e = 1.5 on the true outcomes) "
        "places them; GPU usage reduction vs GPU-only; regret = geometric-mean excess time / energy over the "
        "Oracle's choices (signed: the Oracle trades time for energy); reward / Oracle = mean "
        "`placement_reward` over the Oracle's. `energy` names how the energies were obtained.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + md) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=_jsonable))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {prov['wall_s']:.0f} s")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return str(obj)


if __name__ == "__main__":
    main()
