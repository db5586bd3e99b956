"""How well the operator model predicts measured architectures it never saw.

The operator model (:mod:`placement.model.opmodel`) is fitted from the reference micro-benchmarks
alone, so every architecture of the measured traces is held out of its fit by construction.
:func:`evaluate` predicts every feasible, uncapped row of the given traces from the row's
zoo workload's operators (recorded on ``meta``) and reports |time error| per row;
:func:`leave_one_architecture_out` adds an optional second stage -- one log-time scale per
(device, mode) fitted on the *other* architectures' rows -- and scores each architecture
with a correction that never saw it. :func:`report` writes the markdown section of
``docs/calibration.md``.

Run: ``python -m placement.model.opcalibration`` (``make calibration`` runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from placement.core.catalogue import get_target
from placement.core.decision import GROW
from placement.core.job import Job
from placement.core.trace import row_job
from placement.model.opmodel import OperatorModel, bundled_operator_model

REFERENCE_TRACES = ("data/traces/h200_measured.parquet", "data/traces/h200_pairs_measured.parquet",
                    "data/traces/h200_archs_measured.parquet")
HELD_OUT_HOST = "data/traces/h100_pairs_measured.parquet"


def _job(row: pd.Series) -> Job:
    from placement.model.operators import zoo_operators

    return row_job(row, operators=zoo_operators(str(row["model"]), str(row["mode"]), int(row["batch_size"])))


def predictions(paths: Sequence[str | Path], model: OperatorModel | None = None) -> pd.DataFrame:
    """One row per feasible, uncapped measured row: measured and operator-model time (s)."""
    from placement.core.trace import read_trace
    from placement.model.perfmodel import PerformanceModel

    model = model or bundled_operator_model()
    if model is None:
        raise FileNotFoundError("no operator model: fit one (python -m placement.model.opcalibration --fit)")
    agg = PerformanceModel()
    frames = []
    for path in paths:
        df = read_trace(Path(path)).frame
        df = df[df["feasible"].astype(bool) & df["gpu_mem_cap_mib"].isna()].copy()
        df["trace"] = Path(path).name
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    jobs: dict[tuple[str, str, int], Job] = {}
    pred, agg_pred = [], []
    for _, row in df.iterrows():
        key = (str(row["model"]), str(row["mode"]), int(row["batch_size"]))
        if key not in jobs:
            jobs[key] = _job(row)
        job = jobs[key]
        target = get_target(str(row["target_id"]))
        dev = str(row["device"])
        cores = int(row["cpu_cores"]) if dev == "cpu" else None
        pred.append(model.time_s(job, target, dev, cores)[0])
        agg_job = job.model_copy(update={"operators": None})
        agg_pred.append(agg.predict(agg_job, target, dev, cores).time_per_batch_s)
    df["pred_time_s"] = pred
    df["agg_pred_time_s"] = agg_pred
    df["arch"] = df["model"].str.split("_").str[0]
    df["err"] = df["pred_time_s"] / df["time_per_batch_s"] - 1.0
    df["agg_err"] = df["agg_pred_time_s"] / df["time_per_batch_s"] - 1.0
    return df


def leave_one_architecture_out(df: pd.DataFrame, per_lease: bool = False) -> pd.DataFrame:
    """Adds ``loao_pred_time_s``: the zero-shot prediction times one scale per (device, mode)
    -- the median log ratio measured/predicted over the *other* architectures' rows. With
    ``per_lease`` the scale is fitted per trace too (each trace ran on one lease of the machine):
    from the other architectures measured on the held-out one's lease."""
    out = df.copy()
    out["loao_pred_time_s"] = np.nan
    logr = np.log(out["time_per_batch_s"].astype(float) / out["pred_time_s"].astype(float))
    lease = out["trace"] if per_lease else pd.Series("", index=out.index)
    for arch in out["arch"].unique():
        held = out["arch"] == arch
        for (dev, mode, tr), _ in out[held].groupby([out["device"], out["mode"], lease]):
            same = (out["device"] == dev) & (out["mode"] == mode) & (lease == tr)
            train = (~held) & same
            scale = float(np.exp(np.median(logr[train]))) if train.any() else 1.0
            rows = held & same
            out.loc[rows, "loao_pred_time_s"] = out.loc[rows, "pred_time_s"] * scale
    out["loao_err"] = out["loao_pred_time_s"] / out["time_per_batch_s"] - 1.0
    return out


def _med(x: pd.Series) -> float:
    return float(np.median(np.abs(x))) * 100.0


def report(df: pd.DataFrame, host: pd.DataFrame | None) -> str:
    """The markdown section on the operator-level model: per-architecture median time error of the
    zero-shot, leave-one-architecture-out and aggregate models on ``df``, and on the held-out host's
    rows ``host`` when given."""
    lines = ["## Operator-level model (issue 14)", "",
             "Reproduce: `python -m placement.model.opcalibration --fit --report docs/calibration.md` (`make calibration`; "
             "without `--fit` it scores the bundled fit).", "",
             "Fitted from `data/traces/h200_microbench.json` alone (`placement.model.opmodel.fit`); every architecture below "
             "is unseen by that fit. *zero-shot*: the fitted model as is. *LOAO*: times one scale per (device, mode) "
             "fitted on the other architectures' rows (never the held-out one). *aggregate*: today's model "
             "(`PerformanceModel` from FLOPs, parameters, input size, family; bundled parameters, fitted on these traces, "
             "so not held out). Median |time error|, %; rows: feasible, uncapped.", "",
             "| architecture | rows | CPU zero-shot | CPU LOAO | CPU aggregate | GPU zero-shot | GPU LOAO | GPU aggregate |",
             "|---|---|---|---|---|---|---|---|"]
    for arch, g in df.groupby("arch"):
        c, gg = g[g.device == "cpu"], g[g.device == "gpu"]

        def f(x: pd.DataFrame, col: str) -> str:
            return f"{_med(x[col]):.1f}" if len(x) else "-"

        lines.append(f"| {arch} | {len(g)} | {f(c, 'err')} | {f(c, 'loao_err')} | {f(c, 'agg_err')} | "
                     f"{f(gg, 'err')} | {f(gg, 'loao_err')} | {f(gg, 'agg_err')} |")
    lines.append("")
    for dev in ("cpu", "gpu"):
        d = df[df.device == dev]
        lines.append(f"* **{dev.upper()}**, {len(d)} rows, {d['arch'].nunique()} architectures: median |error| "
                     f"zero-shot {_med(d['err']):.1f} %, LOAO {_med(d['loao_err']):.1f} %, aggregate {_med(d['agg_err']):.1f} %; "
                     f"median over architectures of their median (LOAO) "
                     f"{float(np.median([_med(g['loao_err']) for _, g in d.groupby('arch')])):.1f} %.")
    if "trace" in df.columns and df["trace"].nunique() > 1:
        lease = leave_one_architecture_out(df, per_lease=True)
        lines.append(f"* **LOAO within each lease** (the scale fitted on the other architectures measured in the same "
                     f"trace, which ran on one lease of the lent machine; {df['trace'].nunique()} traces): CPU "
                     f"{_med(lease[lease.device == 'cpu']['loao_err']):.1f} %, GPU "
                     f"{_med(lease[lease.device == 'gpu']['loao_err']):.1f} % -- what is left once the lease's own "
                     "level is known from other jobs measured on it.")
    if host is not None and len(host):
        for dev in ("cpu", "gpu"):
            d = host[host.device == dev]
            lines.append(f"* **Held-out H100 host** ({HELD_OUT_HOST}), {dev.upper()}, {len(d)} rows: median |error| "
                         f"zero-shot {_med(d['err']):.1f} %, aggregate {_med(d['agg_err']):.1f} % "
                         "(the H100 target's data-sheet peaks with the H200 host's efficiencies).")
    lines.append("")
    return "\n".join(lines)


MARKER = "<!-- operator-level model: python -m placement.model.opcalibration -->"


def write_section(path: Path, text: str) -> None:
    """Replace (or append) this report's section of ``path`` (after :data:`MARKER`)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    head = old.split(MARKER)[0].rstrip() if MARKER in old else old.rstrip()
    path.write_text((head + "\n\n" if head else "") + MARKER + "\n\n" + text.rstrip() + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (``python -m placement.model.opcalibration``): optionally refit the operator
    model from the micro-benchmarks, score it on the reference traces (CSV to ``--out``), and write
    the report section to ``--report``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m placement.model.opcalibration", description=__doc__.split("\n")[0])
    parser.add_argument("--fit", action="store_true", help="refit placement/data/op_params.json from the micro-benchmarks first")
    parser.add_argument("--microbench", default="data/traces/h200_microbench.json")
    parser.add_argument("--out", type=Path, default=Path("results/opmodel_predictions.csv"))
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    model = None
    if args.fit:
        from placement.model.opmodel import fit

        model = fit(Path(args.microbench))
        model.save(Path(__file__).resolve().parents[1] / "data" / "op_params.json")  # placement/data
    df = leave_one_architecture_out(predictions(REFERENCE_TRACES, model))
    host = predictions([HELD_OUT_HOST], model) if Path(HELD_OUT_HOST).exists() else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    text = report(df, host)
    journals = [str(p) + ".journal.jsonl" for p in REFERENCE_TRACES if Path(str(p) + ".journal.jsonl").exists()]
    knobs = knob_evaluation(df, journals)
    text += (f"* **Knob advice** on the H200 host (`placement.model.knob_advice.advise_knobs`, operator model): "
             f"{knobs['jobs']:.0f} jobs measured at >= 3 core counts, advised count chosen among the measured ones: "
             f"median slowdown vs the best measured {100 * knobs['median_slowdown']:.1f} %, 90th percentile "
             f"{100 * knobs['p90_slowdown']:.1f} %, {knobs['over_10pct']:.0f} jobs > 10 % slower. GPU caps: "
             f"{knobs['caps_below_measured_peak']:.0f} of {knobs['caps_checked']:.0f} advised caps below the job's measured "
             "peak reserved memory (journals, 'grow' rows)" + _cap_run_text(knobs) + ".\n")
    answers = zero_shot_answers(REFERENCE_TRACES, model)
    from placement.core.trace import read_trace

    third = read_trace(Path(REFERENCE_TRACES[2])).frame["model"].astype(str).str.split("_").str[0]
    used = model or bundled_operator_model()
    fit_report = used.provenance.get("fit", {}) if used is not None else {}
    text += "\n" + targets_text(df, host, knobs, answers, sorted(set(third)), fit_report, load_variants())
    if args.report is not None:
        write_section(args.report, text)
    sys.stdout.write(text + "\n")
    return 0




def _cap_run_text(knobs: Mapping[str, float]) -> str:
    """The measured cap check (each job run under its advised cap on the lent H200), when there is one."""
    if knobs["caps_ran_under_cap"] + knobs["caps_oom_under_cap"] == 0:
        return "; not yet run under the caps (`python -m experiments.cap_check`)"
    text = (f"; run under the advised cap on the lent H200 (`python -m experiments.cap_check`, "
            f"`{CAP_RUNS}`): {knobs['caps_ran_under_cap']:.0f} ran, {knobs['caps_oom_under_cap']:.0f} ran out of "
            f"memory, {knobs['caps_not_run']:.0f} not run under today's advice (measured)")
    scan = CAP_RUNS.with_name("scan.jsonl")
    if knobs["caps_oom_under_cap"] > 0 and scan.exists():
        recs = [json.loads(line) for line in scan.read_text().splitlines() if line.strip()]
        text += "; the caps they needed (`--scan`, advised x 1.25^k): " + ", ".join(
            f"{r['workload']} {r['mode']} b{r['batch_size']} {r['smallest_cap_that_ran_mib']} MiB "
            f"(advised {r['cap_mib']}, estimated peak {r['estimated_peak_mib']:.0f}, uncapped reserved peak "
            f"{r['reserved_peak_mib']:.0f})" for r in recs)
    return text


def journal_peaks(journals: Sequence[str | Path]) -> dict[tuple[str, str, int], float]:
    """The peak *reserved* GPU memory (MiB) of every uncapped GPU run in profiler journals, by
    (workload, mode, batch size)."""
    import json

    peaks: dict[tuple[str, str, int], float] = {}
    for path in journals:
        for line in Path(path).read_text().splitlines()[1:]:
            rec = json.loads(line)
            spec = rec.get("spec", {})
            if spec.get("device") == "gpu" and spec.get("gpu_mem_cap_mib") is None and rec.get("peak_reserved_mib"):
                peaks[(spec["workload"], spec["mode"], int(spec["batch_size"]))] = float(rec["peak_reserved_mib"])
    return peaks


CAP_RUNS = Path("results/cap_check/runs.jsonl")
"""Advised caps run under the cap on the lent H200 (``python -m experiments.cap_check --run``)."""


def cap_runs(path: Path = CAP_RUNS) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The jobs of a cap-check run by (workload, mode, batch size): the cap it ran under and whether it ran."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if not rec.get("summary"):
            out[(rec["workload"], rec["mode"], int(rec["batch_size"]))] = rec
    return out


def knob_evaluation(df: pd.DataFrame, journals: Sequence[str | Path] = (),
                    runs: Mapping[tuple[str, str, int], Mapping[str, Any]] | None = None) -> dict[str, float]:
    """Core advice against the measured core counts (H200 CPU rows of jobs measured at >= 3
    core counts): slowdown of the advised count (chosen among the measured ones) vs the
    fastest measured; and GPU caps vs the journals' measured peak (reserved) memory."""
    from placement.model.knob_advice import advise_knobs

    target = get_target("h200-host")
    cpu = df[(df.device == "cpu")]
    slow = []
    for _key, g in cpu.groupby(["model", "mode", "batch_size"]):
        if g["cpu_cores"].nunique() < 3:
            continue
        times = dict(zip(g["cpu_cores"].astype(int), g["time_per_batch_s"].astype(float), strict=True))
        job = _job(g.iloc[0])
        advice = advise_knobs(job, target, "cpu", candidates=sorted(times))
        slow.append(times[advice.cpu_cores] / min(times.values()) - 1.0)
    peaks = journal_peaks(journals)
    runs = cap_runs() if runs is None else runs
    below = checked = ran = oom = unrun = 0
    for (model, mode, batch), peak in peaks.items():
        row = df[(df.model == model) & (df["mode"] == mode) & (df.batch_size == batch)]
        if row.empty:
            continue
        advice = advise_knobs(_job(row.iloc[0]), target, "gpu")
        checked += 1
        if advice.gpu_mem_cap_mib != GROW and float(advice.gpu_mem_cap_mib) < peak:
            below += 1
        if advice.gpu_mem_cap_mib == GROW:
            continue
        rec = runs.get((model, mode, batch))
        if rec is None or rec.get("cap_mib") != advice.gpu_mem_cap_mib or rec.get("feasible") is None:
            unrun += 1  # not run, run under another cap (stale), or failed for another reason
        elif rec["feasible"]:
            ran += 1
        else:
            oom += 1
    arr = np.array(slow) if slow else np.array([np.nan])
    return {"jobs": float(len(slow)), "median_slowdown": float(np.median(arr)), "p90_slowdown": float(np.quantile(arr, 0.9)),
            "over_10pct": float((arr > 0.10).sum()), "caps_checked": float(checked), "caps_below_measured_peak": float(below),
            "caps_ran_under_cap": float(ran), "caps_oom_under_cap": float(oom), "caps_not_run": float(unrun)}


def zero_shot_answers(paths: Sequence[str | Path], model: OperatorModel | None = None,
                      band: float = math.log(1.25)) -> dict[str, float]:
    """The operator model's own answers against the measured pairs of ``paths``: for each pair (the
    job on all CPU cores and on the GPU), the joint threshold (T_t = 2, T_e = 1.5) on the model's
    step times and modelled powers vs the measured label; agreement on the pairs whose measured
    margin lies outside ``+-band``, and the median |ln(predicted / measured speedup)| over all."""
    from placement.core.threshold import Thresholds
    from placement.core.trace import pair_outcomes, read_traces

    model = model or bundled_operator_model()
    if model is None:
        raise FileNotFoundError("no operator model: fit one (python -m placement.model.opcalibration --fit)")
    th = Thresholds()
    frame, _ = read_traces([Path(p) for p in paths])
    pairs = pair_outcomes(frame, th)
    agree, log_err = [], []
    for _, row in pairs.iterrows():
        job = _job(row)
        target = get_target(str(row["target_id"]))
        cpu, gpu = model.predict(job, target, "cpu"), model.predict(job, target, "gpu")
        speedup = cpu.time_per_batch_s / gpu.time_per_batch_s
        ratio = (gpu.time_per_batch_s * (gpu.avg_cpu_power_w + (gpu.avg_gpu_power_w or 0.0))
                 / (cpu.time_per_batch_s * cpu.avg_cpu_power_w))
        if abs(float(row["margin"])) > band:
            agree.append((speedup >= th.speedup_min and ratio <= th.energy_ratio_max) == bool(row["label_gpu"]))
        measured = float(row["speedup"])
        if math.isfinite(measured) and measured > 0:
            log_err.append(abs(math.log(speedup / measured)))
    return {"pairs": float(len(pairs)), "clear": float(len(agree)), "agreement_clear": float(np.mean(agree)),
            "median_abs_log_speedup_error": float(np.median(log_err)),
            "cpu_labels_too_slow": float(((pairs["reason"] == "too_slow")).sum()),
            "cpu_labels": float((~pairs["label_gpu"].astype(bool)).sum())}


def targets_text(df: pd.DataFrame, host: pd.DataFrame | None, knobs: Mapping[str, float],
                 answers: Mapping[str, float], new_archs: Sequence[str],
                 fit: Mapping[str, Mapping[str, float]] | None = None, variants: Mapping[str, Any] | None = None) -> str:
    """The issue-14 targets against this run's figures, and what limits the model (markdown bullets;
    ``fit``: the model's per-device bench residuals, ``variants``: :func:`load_variants`)."""
    fit = fit or {}
    def med(frame: pd.DataFrame, col: str) -> float:
        return _med(frame[col]) if len(frame) else float("nan")

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    cpu, gpu = df[df.device == "cpu"], df[df.device == "gpu"]
    better = {dev: sum(med(g[g.device == dev], "loao_err") < med(g[g.device == dev], "agg_err")
                       for a, g in df.groupby("arch") if a in new_archs) for dev in ("cpu", "gpu")}
    lines = [
        f"* **Zero-shot answers** (the operator model's step times and modelled powers, CPU on all cores vs GPU, "
        f"the joint threshold T_t = 2, T_e = 1.5, against the labels of the {answers['pairs']:.0f} measured H200 "
        f"pairs): {answers['clear']:.0f} pairs fall outside the +-25 % margin band; "
        f"**{100 * answers['agreement_clear']:.1f} %** of them agree with the measured label (target >= 95 %: "
        f"{'met' if answers['agreement_clear'] >= 0.95 else 'not met'}). Median |ln(predicted / measured speedup)| "
        f"{answers['median_abs_log_speedup_error']:.2f}. ({answers['cpu_labels_too_slow']:.0f} of the "
        f"{answers['cpu_labels']:.0f} measured CPU labels are `too_slow`: the speed criterion decides them.)",
        f"* **Targets** (issue 14): LOAO median |time error| <= 15 % on CPU and GPU -- "
        f"{verdict(med(cpu, 'loao_err') <= 15 and med(gpu, 'loao_err') <= 15)} ({med(cpu, 'loao_err'):.1f} % CPU, "
        f"{med(gpu, 'loao_err'):.1f} % GPU; the aggregate model, fitted on these very architectures, is not a "
        f"held-out comparison except on the {len(new_archs)} architectures of the third sweep, where the operator "
        f"model (LOAO) is better on {better['cpu']} on CPU and {better['gpu']} on GPU)",
    ]
    if host is not None and len(host):
        hc, hg = med(host[host.device == "cpu"], "err"), med(host[host.device == "gpu"], "err")
        lines[-1] += f"; <= 25 % on the H100 host -- {verdict(hc <= 25 and hg <= 25)} ({hc:.1f} % CPU, {hg:.1f} % GPU)"
    lines[-1] += (f"; knob advice median slowdown <= 5 % -- {verdict(knobs['median_slowdown'] <= 0.05)} "
                  f"({100 * knobs['median_slowdown']:.1f} %, {knobs['over_10pct']:.0f} of {knobs['jobs']:.0f} jobs "
                  f"> 10 % slower); ")
    if knobs.get("caps_ran_under_cap", 0) + knobs.get("caps_oom_under_cap", 0) > 0:
        ok = knobs["caps_oom_under_cap"] == 0 and knobs["caps_not_run"] == 0
        lines[-1] += (f"no recommended cap that runs out of memory -- {verdict(ok)} (measured: "
                      f"{knobs['caps_oom_under_cap']:.0f} of {knobs['caps_ran_under_cap'] + knobs['caps_oom_under_cap']:.0f} "
                      f"jobs run under their advised cap on the lent H200 ran out of memory, "
                      f"{knobs['caps_not_run']:.0f} not run; {knobs['caps_below_measured_peak']:.0f} of "
                      f"{knobs['caps_checked']:.0f} caps are below the peak *reserved* under 'grow', which overstates "
                      "the need).")
    else:
        lines[-1] += (f"no cap below the measured peak -- {verdict(knobs['caps_below_measured_peak'] == 0)} "
                      f"({knobs['caps_below_measured_peak']:.0f} of {knobs['caps_checked']:.0f} caps below the peak "
                      "*reserved* under 'grow', which overstates the need; not yet run under the caps).")
    lines += limits_text(fit, variants)
    lines += ["* **Estimation cost**: `python benchmarks/bench_opmodel.py` (docs/benchmarks.md)."]
    return "\n".join(lines) + "\n"


VARIANTS = Path("results/opmodel_variants.json")


def load_variants(path: Path = VARIANTS) -> dict[str, Any] | None:
    """The committed output of ``python -m experiments.opmodel_variants``, or None."""
    return json.loads(path.read_text()) if path.exists() else None


def limits_text(fit: Mapping[str, Mapping[str, float]], variants: Mapping[str, Any] | None) -> list[str]:
    """What bounds the operator model's held-out error: the fit's own residuals on its benches
    (``fit``: the model's provenance), the host lease's effect and the variants tried
    (``variants``: :func:`load_variants`), as markdown bullets."""
    order = sorted(fit, key=lambda k: (k == "gpu", int(k[3:]) if k.startswith("cpu") and k[3:].isdigit() else 0))
    res = ", ".join(f"{k} {100 * fit[k]['median_abs_err']:.0f} %" for k in order)
    text = (f"* **What limits it.** The fit misses its own benches by a median of {res}: one bounded roofline "
            "share per kind cannot follow oneDNN's and cuDNN's choices across sizes, the CPU's 300 MiB L3 "
            "(which holds most zoo weights and the mid-sized benches, not the large ones), and the H200's fused kernels (cuDNN RNN, flash attention, the Transformer "
            "encoder's inference fast path) launch far fewer kernels than the operators recorded on `meta`.")
    if variants:
        lr = variants["lease_ratio"]
        lease = "; ".join(f"{name.removesuffix('.json').rsplit('_', 1)[-1]}: "
                          + ", ".join(f"{c} {v:.2f}x" for c, v in r.items()) for name, r in lr.items())
        host = variants["h100_over_h200"]
        text += (f" **The host lease moves a step by more than the targets**: the same benches re-measured on two "
                 f"later leases of the lent H200 took, at the median, {lease} the fit lease's time, and the same "
                 f"jobs ran {host['cpu']:.2f}x (CPU) and {host['gpu']:.2f}x (GPU) slower on the H100 host than on the "
                 "H200 host although both report the same CPU model: no data-sheet figure tells a model this, so "
                 "a zero-shot estimate for an unmeasured lease carries this spread, and the traces scored here come "
                 "from three leases.")
        few = variants.get("h100_few_shot") or {}
        if few:
            text += (" Adapting to the H100 host from a few of its measurements (HELP's way: k rows of other "
                     "architectures set one scale per device) leaves " + "; ".join(
                         f"{k} rows: CPU {v['cpu']:.1f} %, GPU {v['gpu']:.1f} %" for k, v in few.items())
                     + " -- the rest is per architecture.")
        busy = variants.get("gpu_by_busy_share") or []
        if busy:
            total = sum(b["rows"] for b in busy)
            text += (" On the GPU, " + ", ".join(
                f"{b['rows']:.0f} of {total:.0f} rows with the GPU busy {100 * b['busy_from']:.0f}-{100 * b['busy_to']:.0f} % "
                f"of the step (LOAO {b['loao_pct']:.1f} %)" for b in busy)
                + ": most rows are launch-bound, where the host's dispatch decides, so a tile-level kernel model "
                "(NeuSight's) would sharpen only the few compute-bound rows.")
    out = [text]
    if variants:
        out += ["", "Variants (`python -m experiments.opmodel_variants`, `results/opmodel_variants.json`; median |time "
                "error| %):", "",
                "| variant | bench fit | CPU zero-shot | CPU LOAO | CPU H100 | GPU zero-shot | GPU LOAO | GPU H100 |",
                "|---|---|---|---|---|---|---|---|"]
        for name, v in variants["variants"].items():
            out.append(f"| {name} | {v['bench_fit_median_pct']:.1f} | {v['cpu_zero_shot_pct']:.1f} | {v['cpu_loao_pct']:.1f} "
                       f"| {v['cpu_h100_pct']:.1f} | {v['gpu_zero_shot_pct']:.1f} | {v['gpu_loao_pct']:.1f} "
                       f"| {v['gpu_h100_pct']:.1f} |")
        out += ["", "*bundled* (served): per-kind host costs and a fitted training-step term (opmodel/2); *grouped*: "
                "opmodel/1, three host costs (op/recurrent/attention) and none per training step -- a training-step "
                "term alone had made it worse (CPU zero-shot 50.4 %, GPU 59.9 %), with per-kind costs it is kept. "
                "*grouped* scores better on the H100 host's GPU rows only because it overestimated the H200 "
                "host's GPU steps (inference by 1.6x at the median) by about as much as that host was slower; "
                "*chains*: plus `microbench.EXTRA_BENCHES` (stacked small layers, SGD steps) from the later leases "
                "scaled to the fit lease by the shared benches; *all leases*: every run of the three files as "
                "measured. The extra benches fit well but do not carry to the architectures (GPU LOAO worse), so the "
                "served fit reads the fit lease alone. Also tried earlier and dropped: a second LOAO stage with one "
                "scale per operator kind, overhead and fixed terms per (device, mode) (CPU 54.2 %, GPU 26.1 %).", ""]
    return out


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
