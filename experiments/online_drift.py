"""Study 7 -- online drift: the service's online learner vs the static DNN when the world changes.

Two streams of jobs (:func:`placement.model.simulate.generate_jobs`; outcomes from the performance
model with noise, time and energy ``modelled``):

* **gpu_slowdown** -- jobs on one target; from event ``drift_at`` on, its GPU runs 3x slower
  (``gpu_slowdown`` times the modelled GPU time, same power, so 3x the GPU energy too) while the
  hardware description the policies see is unchanged;
* **new_target** -- jobs on the known targets; from event ``drift_at`` on, a share
  ``new_target_share`` of the jobs run on a target absent from the training data.

The starting model (DNN + warm PPO, trained on the simulated trace of the known targets by the
shipped recipe: labelled pairs plus their estimate-augmented copies, :mod:`placement.agents.augmentation`) is
served by the service's library-level placer (:class:`placement.serve.placer.Placer`, bounded
exploration on) and updated by its learner (:class:`placement.serve.learning.learner.Learner`: bandit feedback of
the chosen device only, counterfactual estimated from residuals, PPO fine-tuning on the recent
window, safety gate). Every event: the placer decides, the chosen device's run is reported as
feedback, and the learner updates once ``update_every`` new feedback rows have arrived. The
static DNN decides the same jobs and never changes. Accuracy is measured against the joint
threshold on the *current* world's outcomes, over a rolling window of events. Recovery: the
first event after the drift at which the rolling accuracy is back to 95 % of its pre-drift
level (and, separately, at 95 % absolute).

Run: ``placement experiment online_drift`` (``--full``; ``--no-ray``; ``--address``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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
from placement.core.threshold import Thresholds
from placement.core.trace import read_trace


@dataclass
class Args:
    out: str = "results/online_drift"
    seed: int = 0
    speedup_min: float = 2.0
    energy_ratio_max: float = 1.5
    simulated: str = "data/traces/simulated.parquet"
    """Trace the starting model is trained on (its rows of the known targets)."""
    scenarios: tuple[str, ...] = ("gpu_slowdown", "new_target")
    slow_target: str = "A"
    """gpu_slowdown: the target whose GPU slows down."""
    gpu_slowdown: float = 3.0
    known_targets: tuple[str, ...] = ("A", "B", "C", "D")
    """Targets of the starting model (new_target stream before the drift)."""
    new_target: str = "h100-host"
    """new_target: the target that appears."""
    new_target_share: float = 0.5
    events: int = 1200
    drift_at: int = 400
    window: int = 100
    """Rolling accuracy window (events)."""
    update_every: int = 8
    """Feedback rows between learner updates (the service's default min_feedback_per_update)."""
    history_window: int = 256
    """Most recent feedback rows a learner update trains on."""
    learner_ppo_steps: int = 2048
    exploration: float = 0.1
    ppo_steps: int = 4096
    ppo_warmup_steps: int = 2048
    """Value warm-up steps of the warm start (placement.agents.ppo.PpoConfig.value_warmup_steps)."""
    """Warm PPO fine-tuning of the starting model."""
    seeds: int = 1
    eval_jobs: int = 300
    """Fixed evaluation jobs (their own seed) on the drifting target (gpu_slowdown) or the new target
    (new_target): the serving policy's accuracy on them against the *current* world's noiseless labels
    is recorded at every event (recovery is read from it, not from the noisy rolling window)."""
    threads: int = 1
    full: bool = False
    smoke: bool = False
    ray: bool = True
    address: str = ""


FULL = dict(events=4000, drift_at=1000, seeds=3, learner_ppo_steps=4096, ppo_steps=20_000)
SMOKE = dict(events=48, ppo_warmup_steps=128, drift_at=24, window=12, update_every=16, history_window=32, learner_ppo_steps=64,
             ppo_steps=64, known_targets=("A", "D"))


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_script_args(Args, argv, __doc__, {"full": FULL, "smoke": SMOKE})


args = parse_args()
plt.switch_backend("Agg")
plotstyle.apply()  # one style for every study (experiments/plotstyle.py)
start = time.time()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
th = Thresholds(args.speedup_min, args.energy_ratio_max)
trace = read_trace(Path(args.simulated))
trace_hashes = {args.simulated: trace.sha256}
train_targets = sorted(set(args.known_targets) | {args.slow_target})
train_frame = trace.frame[trace.frame["target_id"].isin(train_targets)].reset_index(drop=True)


def run_stream(scenario: str, seed: int, train_frame: pd.DataFrame, a: Args) -> dict[str, Any]:
    """One stream: train the starting model, then place, report and learn event by event."""
    import torch

    from placement.agents.augmentation import estimate_augmentation, with_augmentation
    from placement.agents.dnn import DnnConfig, train_dnn
    from placement.agents.evaluation import labelled_set
    from placement.agents.ppo import PpoConfig, make_env, train_warm_ppo
    from placement.agents.training import TrainSettings
    from placement.core.catalogue import default_catalogue
    from placement.core.job import Job
    from placement.core.threshold import joint_threshold
    from placement.core.trace import pair_outcomes
    from placement.model.features import build_features
    from placement.model.perfmodel import PerformanceModel
    from placement.model.simulate import generate_jobs
    from placement.serve.schemas import PlacementRequest

    torch.set_num_threads(a.threads)
    thr = Thresholds(a.speedup_min, a.energy_ratio_max)
    catalogue = default_catalogue()
    data = labelled_set(pair_outcomes(train_frame, thr))
    # the shipped recipe (placement.agents.training.train_from_traces): the labelled pairs plus their
    # estimate-augmented copies, so the starting policy reads the estimate's margins as the served one does
    xa, ya, _ = estimate_augmentation(data, TrainSettings().augment_copies, seed, thr.speedup_min, thr.energy_ratio_max)
    x_fit, y_fit, _ = with_augmentation(data.x, data.y, {}, xa, ya)
    dnn, _ = train_dnn(x_fit, y_fit, config=DnnConfig(seed=seed))
    run = train_warm_ppo(dnn, make_env(train_frame, thr), timesteps=a.ppo_steps, config=PpoConfig.warm(value_warmup_steps=a.ppo_warmup_steps), seed=seed,
                         eval_jobs=256)
    pm = PerformanceModel()
    rng = np.random.default_rng([seed, 7])
    jobs = generate_jobs(a.events, rng)
    if scenario == "gpu_slowdown":
        targets = [a.slow_target] * a.events
    else:
        old = list(a.known_targets)
        targets = [old[int(rng.integers(len(old)))] if (i < a.drift_at or rng.random() >= a.new_target_share)
                   else a.new_target for i in range(a.events)]

    def outcome(job: Job, tid: str, device: str, drifted: bool, cores: int | None = None,
                cap: int | None = None) -> Any:
        o = pm.predict(job, catalogue[tid], device, cpu_cores=cores, gpu_mem_cap_mib=cap, rng=rng)
        if drifted and device == "gpu" and o.feasible and scenario == "gpu_slowdown":
            o = o.model_copy(update={"time_total_s": o.time_total_s * a.gpu_slowdown,
                                     "time_per_batch_s": o.time_per_batch_s * a.gpu_slowdown})
        return o

    def noiseless_label(job: Job, tid: str, drifted: bool) -> bool:
        c = pm.predict(job, catalogue[tid], "cpu")
        g = pm.predict(job, catalogue[tid], "gpu")
        if drifted and g.feasible and scenario == "gpu_slowdown":
            g = g.model_copy(update={"time_total_s": g.time_total_s * a.gpu_slowdown,
                                     "time_per_batch_s": g.time_per_batch_s * a.gpu_slowdown})
        return bool(joint_threshold(c.time_per_sample_s, g.time_per_sample_s, c.energy_per_sample_j,
                                    g.energy_per_sample_j, c.feasible, g.feasible, thr).gpu)

    eval_target = a.slow_target if scenario == "gpu_slowdown" else a.new_target
    eval_frame = generate_jobs(a.eval_jobs, np.random.default_rng([seed, 11]))
    eval_list = [job_from_row(r) for _, r in eval_frame.iterrows()]
    eval_truth = {d: np.array([noiseless_label(j, eval_target, d) for j in eval_list]) for d in (False, True)}
    eval_x = np.stack([build_features(j, catalogue[eval_target]) for j in eval_list])
    static_eval = {d: float(np.mean((np.asarray(dnn.predict(eval_x)[0]).reshape(-1) == 1) == eval_truth[d]))
                   for d in (False, True)}

    eval_cache: dict[tuple[str, int, bool], float] = {}

    def online_eval(placer: Any, drifted: bool) -> float:
        # the answers move with the serving version and with every feedback (the target's offsets,
        # placement.serve.learning.offsets): keyed by both; evaluated without storing decisions
        key = (placer.version, placer.store.last_feedback_seq(), drifted)
        if key not in eval_cache:
            res = placer.place(PlacementRequest(jobs=eval_list, target=eval_target, explore=False), record=False)
            eval_cache[key] = float(np.mean(np.asarray(res.gpu, dtype=bool) == eval_truth[drifted]))
        return eval_cache[key]

    def stream() -> Iterator[dict[str, Any]]:
        # lazily, one event per decision: the outcomes draw from rng in the order cpu, gpu, chosen run
        for i in range(a.events):
            job = job_from_row(jobs.iloc[i])
            tid = targets[i]
            drifted = i >= a.drift_at
            cpu_o, gpu_o = outcome(job, tid, "cpu", drifted), outcome(job, tid, "gpu", drifted)
            label = joint_threshold(cpu_o.time_per_sample_s, gpu_o.time_per_sample_s, cpu_o.energy_per_sample_j,
                                    gpu_o.energy_per_sample_j, cpu_o.feasible, gpu_o.feasible, thr)
            yield {"event": i, "job": job, "target": tid, "drifted": drifted, "truth": bool(label.gpu),
                   "static": bool(dnn.predict(build_features(job, catalogue[tid]))[0] == 1)}

    def chosen_run(ev: dict[str, Any], result: Any) -> dict[str, Any]:
        gpu = bool(result.gpu[0])
        cap = int(result.gpu_mem_cap_mib[0])
        run_o = outcome(ev["job"], ev["target"], "gpu" if gpu else "cpu", ev["drifted"], int(result.cpu_cores[0]),
                        cap if (gpu and cap > 0) else None)
        report: dict[str, Any] = {"device": "gpu" if gpu else "cpu", "feasible": run_o.feasible}
        if run_o.feasible:
            report.update(n_samples=run_o.n_samples, time_total_s=run_o.time_total_s,
                          avg_cpu_power_w=run_o.avg_cpu_power_w, cpu_power_method="modelled")
            if gpu:
                report.update(avg_gpu_power_w=run_o.avg_gpu_power_w, gpu_power_method="modelled")
        else:
            report["infeasible_reason"] = run_o.infeasible_reason
        return report

    def record(ev: dict[str, Any], result: Any, update: Any, placer: Any) -> dict[str, Any]:
        return {"scenario": scenario, "seed": seed, "event": ev["event"], "target": ev["target"],
                "drifted": ev["drifted"], "label_gpu": ev["truth"], "online_gpu": bool(result.gpu[0]),
                "static_dnn_gpu": ev["static"], "explored": bool(result.explored[0]),
                "policy_version": result.policy_version,
                "learner_update": None if update is None else update.status,
                "online_eval_accuracy": online_eval(placer, ev["drifted"]),
                "static_dnn_eval_accuracy": static_eval[ev["drifted"]]}

    rows, updates = online_learner_loop(
        dnn, run.policy, thr, stream(), lambda ev: PlacementRequest(job=ev["job"], target=ev["target"]), chosen_run,
        record=record, seed=seed, version=f"{scenario}-start-{seed}",
        trace_hashes={"training rows of " + a.simulated: "see provenance"}, update_every=a.update_every, min_holdout=3,
        ppo_steps=a.learner_ppo_steps, exploration=a.exploration, threads=a.threads,
        history_window=max(10, a.history_window))
    return {"rows": rows, "update_s": [u.duration_s for u in updates]}


calls = [(scenario, args.seed + s, train_frame, args) for scenario in args.scenarios for s in range(args.seeds)]
results = fan_out(run_stream, calls, "streams", use_ray=args.ray, address=args.address)

events = pd.DataFrame([row for r in results for row in r["rows"]])
for who in ("online", "static_dnn"):
    events[f"{who}_correct"] = events[f"{who}_gpu"] == events["label_gpu"]
    events[f"{who}_rolling_accuracy"] = (events.groupby(["scenario", "seed"])[f"{who}_correct"]
                                         .transform(lambda s: s.rolling(args.window, min_periods=1).mean()))
# per-event decisions (the rolling accuracies are recomputed from these; kept out of the CSV to keep it small)
events.drop(columns=[c for c in events.columns if c.endswith("_rolling_accuracy") or c.endswith("_correct")]).to_csv(
    out / "online_drift_events.csv", index=False)

def _first_event(post: pd.DataFrame, column: str, level: float, drift_at: int) -> float:
    """Feedback events after the drift until the column first reaches ``level`` (NaN: never)."""
    hit = np.flatnonzero(post[column].to_numpy() >= level) if np.isfinite(level) else []
    return float(post.event.to_numpy()[hit[0]] - drift_at + 1) if len(hit) else np.nan


summary_rows = []
for (scenario, seed), g in events.groupby(["scenario", "seed"], sort=False):
    g = g.sort_values("event")
    pre = g[(g.event < args.drift_at) & (g.event >= max(0, args.drift_at - args.window))]
    post = g[g.event >= args.drift_at]
    tail = g[g.event >= max(args.drift_at, args.events - args.window)]
    for who in ("online", "static_dnn"):
        acc = post[f"{who}_rolling_accuracy"].to_numpy()
        ev = post.event.to_numpy()
        # recovery: first event with a full post-drift window whose rolling accuracy is back
        full = ev >= args.drift_at + args.window - 1
        pre_level = float(pre[f"{who}_correct"].mean()) if len(pre) else np.nan
        rel_hit = np.flatnonzero(full & (acc >= 0.95 * pre_level))
        abs_hit = np.flatnonzero(full & (acc >= 0.95))
        summary_rows.append({
            "scenario": scenario, "seed": seed, "policy": who, "pre_drift_accuracy": pre_level,
            "post_drift_accuracy": float(post[f"{who}_correct"].mean()) if len(post) else np.nan,
            "min_rolling_accuracy_after_drift": float(acc.min()) if len(acc) else np.nan,
            "final_window_accuracy": float(tail[f"{who}_correct"].mean()) if len(tail) else np.nan,
            "events_to_95pct_of_pre_drift": int(ev[rel_hit[0]] - args.drift_at) if len(rel_hit) else np.nan,
            "events_to_95pct_absolute": int(ev[abs_hit[0]] - args.drift_at) if len(abs_hit) else np.nan,
            "learner_updates": int(g["learner_update"].notna().sum()) if who == "online" else 0,
            "promoted": int((g["learner_update"] == "promoted").sum()) if who == "online" else 0,
            "rejected": int((g["learner_update"] == "rejected").sum()) if who == "online" else 0,
            "explored_share": float(g.explored.mean()) if who == "online" else 0.0,
            "label_gpu_share_pre": float(g[g.event < args.drift_at].label_gpu.mean()),
            "label_gpu_share_post": float(post.label_gpu.mean()) if len(post) else np.nan,
            # on the fixed evaluation jobs (current world's noiseless labels), after each event
            "eval_accuracy_pre_drift": float(pre[f"{who}_eval_accuracy"].iloc[-1]) if len(pre) else np.nan,
            "eval_accuracy_at_drift": float(post[f"{who}_eval_accuracy"].iloc[0]) if len(post) else np.nan,
            "eval_accuracy_final": float(g[f"{who}_eval_accuracy"].iloc[-1]),
            "eval_events_to_95pct_of_pre_drift": _first_event(post, f"{who}_eval_accuracy",
                                                               0.95 * float(pre[f"{who}_eval_accuracy"].iloc[-1])
                                                               if len(pre) else np.nan, args.drift_at),
            "eval_events_to_95pct_absolute": _first_event(post, f"{who}_eval_accuracy", 0.95, args.drift_at),
            "eval_min_online_minus_static_after_drift": float((post["online_eval_accuracy"]
                                                               - post["static_dnn_eval_accuracy"]).min()) if len(post) else np.nan,
        })
summary = pd.DataFrame(summary_rows)
summary.to_csv(out / "online_drift_summary.csv", index=False, float_format="%.4f")

fig, axes = plt.subplots(1, len(args.scenarios), figsize=(6 * len(args.scenarios), 3.8), squeeze=False)
for ax, scenario in zip(axes[0], args.scenarios, strict=True):
    sel = events[events.scenario == scenario]
    for who, color in (("online", plotstyle.policy_color("online")), ("static_dnn", plotstyle.policy_color("dnn"))):
        mean = sel.groupby("event")[f"{who}_rolling_accuracy"].mean()
        ax.plot(mean.index, mean.values, color=color, label=who.replace("_", " "))
    for ev in sel[sel["learner_update"] == "promoted"].event.unique():
        ax.axvline(ev, color=plotstyle.policy_color("online"), lw=0.4, alpha=0.4)
    ax.axvline(args.drift_at, color="k", ls="--", lw=1, label="drift")
    ax.set_xlabel("feedback event")
    ax.set_ylabel(f"rolling accuracy (fraction, last {args.window} events)")
    title = (f"GPU of {args.slow_target} {args.gpu_slowdown:g}x slower" if scenario == "gpu_slowdown"
             else f"new target {args.new_target} appears ({args.new_target_share:.0%} of jobs)")
    ax.set_title(f"{title}\n(modelled; thin lines: promotions)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
plotstyle.save(fig, out / "online_drift.png")
plt.close(fig)

write_provenance(out, "online_drift", args, thresholds=th.as_dict(), trace_hashes=trace_hashes,
                 targets=sorted(set(events.target)), start=start)


def fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def events_text(values: pd.Series) -> str:
    hits = values.dropna()
    if not len(hits):
        return "not within the stream"
    return f"{int(hits.median())}" + (f" ({len(hits)}/{len(values)} seeds)" if len(hits) < len(values) else "")


lines = ["## Study 7 — online drift", "",
         f"Streams of {args.events} jobs, drift at event {args.drift_at}, {args.seeds} seed(s); outcomes and energy "
         f"**modelled** (performance model with noise). The online learner is the service's placer + learner "
         f"(exploration {args.exploration:g}, update every {args.update_every} feedback rows on the last "
         f"{args.history_window}, {args.learner_ppo_steps} PPO steps per update, safety gate); only the chosen "
         f"device's run is fed back. Accuracy is against the current world's joint-threshold label, rolling over "
         f"{args.window} events.", "",
         "| scenario | policy | pre-drift acc. | post-drift acc. | worst rolling acc. | final window acc. | "
         "events to 95 % of pre-drift | events to 95 % absolute | updates (promoted / rejected) |",
         "|---|---|---|---|---|---|---|---|---|"]
for (scenario, who), g in summary.groupby(["scenario", "policy"], sort=False):
    lines.append(f"| {scenario} | {who.replace('_', ' ')} | {fmt(g.pre_drift_accuracy.mean())} | "
                 f"{fmt(g.post_drift_accuracy.mean())} | {fmt(g.min_rolling_accuracy_after_drift.mean())} | "
                 f"{fmt(g.final_window_accuracy.mean())} | {events_text(g.events_to_95pct_of_pre_drift)} | "
                 f"{events_text(g.events_to_95pct_absolute)} | "
                 + (f"{g.learner_updates.mean():.0f} ({g.promoted.mean():.0f} / {g.rejected.mean():.0f})" if who == "online" else "–")
                 + " |")
update_s = np.array([x for r in results for x in r["update_s"]])
lines += ["", f"On {args.eval_jobs} fixed evaluation jobs (the drifting target, or the new target), against the current "
          "world's noiseless labels, the serving policy after each feedback event:", "",
          "| scenario | policy | eval acc. before drift | at drift | final | events to 95 % of pre-drift | "
          "events to 95 % absolute | worst (online - static) after drift |", "|---|---|---|---|---|---|---|---|"]
for (scenario, who), g in summary.groupby(["scenario", "policy"], sort=False):
    lines.append(f"| {scenario} | {who.replace('_', ' ')} | {fmt(g.eval_accuracy_pre_drift.mean())} | "
                 f"{fmt(g.eval_accuracy_at_drift.mean())} | {fmt(g.eval_accuracy_final.mean())} | "
                 f"{events_text(g.eval_events_to_95pct_of_pre_drift)} | {events_text(g.eval_events_to_95pct_absolute)} | "
                 f"{fmt(g.eval_min_online_minus_static_after_drift.mean()) if who == 'online' else '–'} |")
if len(update_s):
    lines += ["", f"Learner update wall time in this run ({len(update_s)} updates, windows up to {args.history_window} "
              f"rows, {args.threads} torch thread(s), streams in parallel on this host): median "
              f"{np.median(update_s):.1f} s, max {update_s.max():.1f} s (the first includes one-time imports)."]
lines += ["", "![online drift](online_drift/online_drift.png)", ""]
for scenario, g in summary.groupby("scenario", sort=False):
    gg = g.set_index("policy")
    lines.append(f"* {scenario}: GPU-labelled share {gg.label_gpu_share_pre.mean():.2f} before the drift, "
                 f"{gg.label_gpu_share_post.mean():.2f} after. Final-window accuracy: online "
                 f"{fmt(gg.loc['online', 'final_window_accuracy'])}, static DNN "
                 f"{fmt(gg.loc['static_dnn', 'final_window_accuracy'])}.")
lines.append("* Paper A's DNN is static; it has no online experiment. This study is ours.")
lines += ["", provenance_note("online_drift", trace_hashes), ""]
parts = []
for scenario, g in summary.groupby("scenario", sort=False):
    gg = g.groupby("policy").mean(numeric_only=True)
    parts.append(f"{scenario}: final-window accuracy online {fmt(gg.loc['online', 'final_window_accuracy'])} vs static DNN "
                 f"{fmt(gg.loc['static_dnn', 'final_window_accuracy'])} (pre-drift {fmt(gg.loc['online', 'pre_drift_accuracy'])}), "
                 f"online back to 95 % of its pre-drift accuracy after "
                 f"{events_text(g[g.policy == 'online'].events_to_95pct_of_pre_drift)} events")
headline = "No paper figure. Ours (modelled outcomes, bandit feedback): " + "; ".join(parts) + "."
lines.insert(2, f"> **Headline.** {headline}\n")
(out / "section.md").write_text("\n".join(lines))
print(summary.to_string(index=False))
if len(update_s):
    print(f"learner updates: {len(update_s)}, median {np.median(update_s):.2f} s, max {update_s.max():.2f} s")
print(f"wrote {out} in {time.time() - start:.0f} s")
