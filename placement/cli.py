"""The ``placement`` command-line tool.

Each subcommand parses its arguments, calls the library, and formats the answer; heavy
imports (torch, ray, SB3) happen inside the commands that need them so ``--help`` is fast.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from placement.core.threshold import MissingPower, Thresholds

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    help="Device placement for ML jobs: CPU or GPU by a joint speed/energy threshold; cores and "
    "GPU memory cap on edge targets.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def thresholds_from(speedup_min: float, energy_ratio_max: float, missing_power: str) -> Thresholds:
    """The command's :class:`Thresholds` from its options; exits with a usage error when they are invalid."""
    try:
        return Thresholds(speedup_min, energy_ratio_max, MissingPower(missing_power))
    except ValueError as exc:
        _fail(f"{exc} (options --speedup-min, --energy-ratio-max, --missing-power speed_only|cpu)")
        raise


SPEEDUP_OPT = typer.Option(2.0, "--speedup-min", "-t", help="T_t: minimum GPU speedup over CPU.")
ENERGY_OPT = typer.Option(1.5, "--energy-ratio-max", "-e", help="T_e: maximum GPU/CPU per-sample energy ratio.")
MISSING_OPT = typer.Option("speed_only", "--missing-power", help="When power is unknown: speed_only or cpu.")


@app.command()
def label(
    trace: Path = typer.Argument(..., help="Trace file (.parquet or .csv)."),
    speedup_min: float = SPEEDUP_OPT,
    energy_ratio_max: float = ENERGY_OPT,
    missing_power: str = MISSING_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Print each job's speedup, energy ratio and CPU/GPU label under the joint threshold."""
    from placement.core.trace import TraceValidationError, pair_outcomes, read_trace

    th = thresholds_from(speedup_min, energy_ratio_max, missing_power)
    try:
        t = read_trace(trace)
    except (FileNotFoundError, TraceValidationError, ValueError) as exc:
        _fail(str(exc))
        return
    pairs = pair_outcomes(t.frame, th)
    cols = ["job_id", "target_id", "speedup", "energy_ratio", "label_gpu", "reason", "energy_unknown", "energy_method"]
    if as_json:
        for rec in pairs[cols].to_dict(orient="records"):
            rec["label"] = "gpu" if rec.pop("label_gpu") else "cpu"
            sys.stdout.write(json.dumps(rec, default=str) + "\n")
        return
    table = Table(title=f"{trace.name}  T_t={th.speedup_min:g}  T_e={th.energy_ratio_max:g}  sha256 {t.sha256[:12]}")
    for c in ("job", "target", "speedup", "energy ratio", "label", "reason", "energy"):
        table.add_column(c)

    def fmt(x: object) -> str:
        value = float(x)  # type: ignore[arg-type]
        return "-" if value != value else f"{value:.3g}"

    for r in pairs.itertuples():
        flag = " (energy_unknown)" if r.energy_unknown else ""
        table.add_row(
            str(r.job_id), str(r.target_id), fmt(r.speedup), fmt(r.energy_ratio),
            "GPU" if r.label_gpu else "CPU", str(r.reason) + flag, str(r.energy_method),
        )
    console.print(table)


@app.command()
def catalogue(
    path: Path | None = typer.Option(None, "--path", help="A catalogue JSON file (default: bundled)."),
) -> None:
    """List the hardware catalogue's targets."""
    from placement.core.catalogue import CatalogueError, load_catalogue

    try:
        targets = load_catalogue(path)
    except (CatalogueError, OSError) as exc:
        _fail(str(exc))
        return
    table = Table(title="hardware catalogue")
    for c in ("id", "kind", "CPU", "cores", "CPU GFLOP/s", "GPU", "GPU GFLOP/s", "GPU GiB", "unified"):
        table.add_column(c)
    for t in targets.values():
        table.add_row(t.id, str(t.kind), t.cpu_model, str(t.cpu_cores), f"{t.cpu_gflops:g}", t.gpu_model or "-",
                      f"{t.gpu_gflops:g}", f"{t.gpu_mem_gib:g}", "yes" if t.unified_memory else "no")
    console.print(table)


@app.command()
def probe(
    model: str = typer.Argument("", help="A zoo workload or 'package.module:Factory' to probe; none (or --host): "
                                "print this machine as a hardware target."),
    host: bool = typer.Option(False, "--host", help="Print this machine (cores, RAM, NVIDIA GPUs) as a hardware target."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Samples per batch."),
    mode: str = typer.Option("infer", "--mode", "-m", help="infer or train."),
    family: str = typer.Option("", "--family", help="Model family (module path)."),
    input_shape: str = typer.Option("", "--input-shape", help="Per-sample input shape, e.g. 3,32,32 (module path)."),
    input_dtype: str = typer.Option("float32", "--input-dtype", help="Input dtype (module path)."),
    budget_s: float = typer.Option(5.0, "--budget-s", min=0.1, help="Time budget of the probe, s."),
    cores: int = typer.Option(0, "--cores", min=0, help="CPU cores the CPU side may use (0: all usable)."),
    gpu_mem_cap_mib: int = typer.Option(0, "--gpu-mem-cap-mib", min=0, help="GPU memory cap, MiB (0: grow)."),
    speedup_min: float = typer.Option(2.0, "--speedup-min", "-t", min=1e-6,
                                      help="T_t for the early exit and the energy window's skip."),
    energy: str = typer.Option("auto", "--energy", help="auto: skip the GPU energy window where it cannot "
                               "change the answer at -t; always: never skip it."),
) -> None:
    """Probe a job on this machine's CPU and GPU (placement.lab.job_probe; JSON to send as a request's
    'probes'), or with --host / no MODEL print this machine as a hardware target (JSON)."""
    if host or not model:
        from placement.lab.probe import probe_local

        sys.stdout.write(probe_local().model_dump_json(indent=2) + "\n")
        return
    from placement.lab.job_probe import probe_factory, probe_workload
    from placement.lab.workloads import ZOO

    here = str(Path.cwd())
    if ":" in model and here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)  # as describe: mymodule:Factory imports from the current directory
    if energy not in ("auto", "always"):
        _fail(f"--energy must be 'auto' or 'always', got {energy!r}")
    kwargs = {"budget_s": budget_s, "cpu_cores": cores or None, "gpu_mem_cap_mib": gpu_mem_cap_mib or None,
              "speedup_min": speedup_min, "energy": energy}
    try:
        if model in ZOO:
            result = probe_workload(model, batch_size, mode, **kwargs)  # type: ignore[arg-type]
        else:
            if not family or not input_shape:
                _fail("probing a module path needs --family and --input-shape (e.g. --family cnn --input-shape 3,32,32)")
            shape = [int(s) for s in input_shape.split(",") if s.strip()]
            result = probe_factory(model, family, shape, input_dtype, batch_size, mode, **kwargs)  # type: ignore[arg-type]
    except (KeyError, ValueError) as exc:
        _fail(str(exc))
        return
    sys.stdout.write(result.model_dump_json(indent=2) + "\n")


def _variadic(first: list[Path] | None, ctx: typer.Context, option: str) -> list[Path]:
    """``--traces A B C`` (click takes one value per option; the rest arrive as extra args)."""
    extra = list(ctx.args)
    unknown = [a for a in extra if a.startswith("-")]
    if unknown:
        _fail(f"unknown option(s) {', '.join(unknown)} (see --help)")
    paths = list(first or []) + [Path(a) for a in extra]
    if not paths:
        _fail(f"give at least one trace: {option} A.parquet B.csv ...")
    return paths


_VARIADIC = {"allow_extra_args": True, "ignore_unknown_options": True}
TRACES_OPT = typer.Option(None, "--traces", help="Trace files (.parquet/.csv): --traces A.parquet B.csv ...")


@app.command(context_settings=_VARIADIC)
def train(
    ctx: typer.Context,
    traces: list[Path] = TRACES_OPT,
    out: Path = typer.Option(..., "--out", help="Model directory to write, e.g. models/NAME."),
    seed: int = typer.Option(0, "--seed"),
    speedup_min: float = SPEEDUP_OPT,
    energy_ratio_max: float = ENERGY_OPT,
    missing_power: str = MISSING_OPT,
    preset: str = typer.Option("default", "--preset", help="DNN recipe: default (AdamW) or paper (SGD 0.05, 800 epochs)."),
    ppo_steps: int = typer.Option(20_000, "--ppo-steps", help="PPO fine-tuning steps after the warm start (0: DNN only)."),
    cv: str = typer.Option("arch", "--cv", help="Held out per fold for the reported metrics: arch (model family), model, family, target_id, random."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds (0 skips)."),
    threads: int = typer.Option(2, "--threads", help="torch threads."),
    version: str | None = typer.Option(None, "--version", help="Model version string (default: code version + content hash)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars (they are off anyway when stderr is not a terminal)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out directory."),
) -> None:
    """Train the DNN, then PPO warm-started from it, from logged traces; write a versioned model directory."""
    from placement.agents.dnn import PRESETS
    from placement.agents.training import TrainSettings, train_from_traces
    from placement.core.trace import TraceValidationError

    paths = _variadic(traces, ctx, "--traces")
    th = thresholds_from(speedup_min, energy_ratio_max, missing_power)
    if preset not in PRESETS:
        _fail(f"--preset must be one of {', '.join(PRESETS)}, got '{preset}'")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        _fail(f"{out} already exists: pass --force to replace it, or choose another --out")
    progress = not quiet and sys.stderr.isatty()  # a log file gets no carriage-return bars
    try:
        settings = TrainSettings(seed=seed, thresholds=th, dnn=PRESETS[preset](), ppo_timesteps=ppo_steps,
                                 cv_column=cv, cv_folds=folds, version=version, progress=progress, threads=threads)
        result = train_from_traces(paths, out, settings)
    except (FileNotFoundError, TraceValidationError, ValueError) as exc:
        _fail(str(exc))
        return
    if result.cv_table is not None:
        _print_table5(result.cv_table, f"held-out {cv} cross-validation ({folds} folds)")
    console.print(f"model [bold]{result.metadata.version}[/] written to {result.path} (serving: {result.metadata.serving})")


@app.command(context_settings=_VARIADIC)
def temperature(
    ctx: typer.Context,
    model: Path = typer.Argument(..., help="Model directory to calibrate (its metadata gains the temperature)."),
    traces: list[Path] = TRACES_OPT,
    folds: int = typer.Option(4, "--folds", help="Groups of measured architectures, one refit of the recipe each."),
    threads: int = typer.Option(1, "--threads", help="torch threads of the refits."),
) -> None:
    """Fit the serving policy's temperature: refit the model's own recipe (DNN, warm PPO) without each group of
    measured architectures, predict those zero-shot, fit T by log-loss, record it in the model's metadata."""
    from placement.agents.artifact import ArtifactError, read_metadata, set_temperature
    from placement.agents.dnn import DnnConfig
    from placement.agents.ppo import PpoConfig
    from placement.agents.temperature import fit_policy_temperature
    from placement.agents.training import TrainSettings
    from placement.core.trace import TraceValidationError, file_sha256

    paths = _variadic(traces, ctx, "--traces")
    try:
        meta = read_metadata(model)
        given = sorted(file_sha256(Path(p)) for p in paths)
        if given != sorted(meta.trace_hashes.values()):
            _fail(f"--traces must be the traces {model} was trained on (by sha256): {', '.join(sorted(meta.trace_hashes))}")
            return
        ppo_steps = int(meta.metrics.get("ppo", {}).get("timesteps", 0)) if meta.serving == "ppo" else 0
        settings = TrainSettings(
            seed=meta.seed, thresholds=Thresholds(**meta.thresholds), dnn=DnnConfig.from_dict(meta.dnn_config),
            ppo_timesteps=ppo_steps, ppo=PpoConfig.from_dict(meta.ppo_config) if ppo_steps else None, cv_folds=0,
            threads=threads, augment_copies=int(meta.metrics.get("estimate_augmentation", {}).get("copies", 0)))
        fit = fit_policy_temperature(paths, settings, folds=folds, work_dir=model.parent)
        set_temperature(model, fit)
    except (ArtifactError, FileNotFoundError, TraceValidationError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(f"{model}: temperature {fit.value:.3f} from {fit.rows} zero-shot predictions ({fit.folds} folds); "
                  f"log-loss {fit.log_loss_before:.3f} -> {fit.log_loss_after:.3f} nats, "
                  f"ECE {fit.ece_before:.3f} -> {fit.ece_after:.3f}")


def _print_table5(frame: pd.DataFrame, title: str) -> None:
    table = Table(title=title)
    heads = {"policy": "policy", "throughput_vs_cpu_only": "throughput", "energy_efficiency_vs_gpu_only": "energy eff",
             "accuracy": "acc %", "gpu_usage_reduction_pct": "GPU red %", "time_regret_pct": "t regret %",
             "energy_regret_pct": "E regret %", "reward_ratio": "R/Oracle", "infeasible_choices": "infeasible",
             "energy_method": "energy"}
    for h in heads.values():
        table.add_column(h)
    for rec in frame.to_dict(orient="records"):
        cells = []
        for key in heads:
            v = rec[key]
            if key == "accuracy":
                cells.append(f"{100 * v:.1f}")
            elif isinstance(v, float):
                cells.append("-" if v != v else f"{v:.3g}" if key != "reward_ratio" else f"{v:.3f}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    Console(width=max(console.width, 130)).print(table)
    console.print("throughput: x CPU-only; energy eff: x GPU-only (higher is better); regrets vs the Oracle (joint "
                  "threshold on true outcomes); energy: how the energies were obtained")


@app.command(context_settings=_VARIADIC)
def evaluate(
    ctx: typer.Context,
    traces: list[Path] = TRACES_OPT,
    model: Path | None = typer.Option(None, "--model", help="Model directory (default: the bundled models/default)."),
    cv: str = typer.Option("none", "--cv", help="none: score the saved model; arch|model|family|target_id|random: "
                           "retrain the DNN per fold with the model's recipe and report held-out results."),
    folds: int = typer.Option(5, "--folds"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON records instead of a table."),
) -> None:
    """Print paper A's Table 5 (plus regret against the Oracle) for a model and the baselines on traces."""
    from placement.agents.artifact import DEFAULT_MODEL_DIR, ArtifactError, load_model
    from placement.agents.dnn import DnnConfig
    from placement.agents.evaluation import load_labelled
    from placement.agents.training import CV_COLUMNS, cross_validate, model_report
    from placement.core.trace import TraceValidationError

    paths = _variadic(traces, ctx, "--traces")
    try:
        loaded = load_model(model or DEFAULT_MODEL_DIR)
        data, hashes = load_labelled(paths, loaded.thresholds)
        if cv == "none":
            frame = model_report(loaded, data, seed)
            title = f"model {loaded.metadata.version} on {len(data)} jobs (in-sample for the rule)"
        elif cv in CV_COLUMNS:
            frame = cross_validate(data, DnnConfig.from_dict(loaded.metadata.dnn_config), column=cv, folds=folds,
                                   seed=seed)
            title = f"held-out {cv}, {folds} folds, DNN recipe of model {loaded.metadata.version}"
        else:
            _fail(f"--cv must be none or one of {', '.join(CV_COLUMNS)}, got '{cv}'")
            return
    except (ArtifactError, FileNotFoundError, TraceValidationError, ValueError) as exc:
        _fail(str(exc))
        return
    if as_json:
        seen_in_training = trained_on(loaded.metadata.trace_hashes, hashes) if cv == "none" else []
        for rec in frame.to_dict(orient="records"):
            sys.stdout.write(json.dumps({**rec, "trace_hashes": hashes, "trained_on": seen_in_training},
                                        default=str) + "\n")
        return
    th = loaded.thresholds
    _print_table5(frame, f"{title}  T_t={th.speedup_min:g} T_e={th.energy_ratio_max:g}")
    seen = trained_on(loaded.metadata.trace_hashes, hashes)
    if seen and cv == "none":
        console.print(f"[bold yellow]note:[/] model {loaded.metadata.version} was trained on {', '.join(seen)}: "
                      "these figures are in-sample, not a test of generalisation (use --cv arch, or traces it was "
                      "not trained on)")


def trained_on(model_hashes: dict[str, str], scored: dict[str, str]) -> list[str]:
    """The scored traces (path) whose sha256 is among the model's training traces (its metadata)."""
    known = set(model_hashes.values())
    return [path for path, sha in scored.items() if sha in known]


@app.command()
def simulate(
    out: Path = typer.Option(Path("data/traces/simulated.parquet"), "--out", "-o", help="Trace file to write (.parquet or .csv)."),
    n_jobs: int = typer.Option(80, "--n-jobs", "-n", min=1, help="Synthetic jobs (each runs on every target)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (jobs and noise)."),
    targets: str = typer.Option("all", "--targets", help="Comma-separated catalogue ids, or 'all'."),
    params: Path | None = typer.Option(None, "--params", help="Performance-model parameters JSON (default: bundled)."),
) -> None:
    """Write a simulated trace (source 'simulated', powers 'modelled') from the performance model."""
    from placement.core.catalogue import default_catalogue
    from placement.core.trace import file_sha256
    from placement.model.perfmodel import PerformanceModel, load_params
    from placement.model.simulate import write_simulated

    catalogue = default_catalogue()
    ids = list(catalogue) if targets == "all" else [t.strip() for t in targets.split(",") if t.strip()]
    unknown = [i for i in ids if i not in catalogue]
    if unknown or not ids:
        _fail(f"--targets: unknown target(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(catalogue)}")
    try:
        model = PerformanceModel(load_params(params)[0]) if params is not None else PerformanceModel()
        path = write_simulated(out, [catalogue[i] for i in ids], n_jobs, seed, model=model)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(f"wrote {path} ({n_jobs} jobs x {len(ids)} targets, seed {seed}) sha256 {file_sha256(path)[:12]}")


@app.command()
def calibrate(
    traces: list[Path] = typer.Argument(..., help="Measured trace file(s) (.parquet or .csv)."),
    params_out: Path = typer.Option(Path("placement/data/perf_params.json"), "--params-out", help="Fitted parameters JSON."),
    report: Path = typer.Option(Path("docs/calibration.md"), "--report", help="Markdown report (figures beside it), "
                                "written by experiments/calibration_report.py: needs a clone of the repository."),
    no_report: bool = typer.Option(False, "--no-report", help="Write the parameters only (no clone needed)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out splits."),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-validation folds (random rows and whole models)."),
    max_nfev: int = typer.Option(400, "--max-nfev", min=1, help="Optimiser budget per fit (function evaluations)."),
) -> None:
    """Fit the performance model to measured traces; report held-out error; write params and report."""
    from placement.core.trace import TraceValidationError
    from placement.model.calibration import calibrate_traces

    writer = _ROOT / "experiments" / "calibration_report.py"
    if not no_report and not writer.is_file():  # say so before minutes of fitting
        _fail(f"{writer} not found: the report is written from a clone of the repository (--no-report: parameters only)")
    try:
        result = calibrate_traces(traces, params_out=params_out, seed=seed, folds=folds, max_nfev=max_nfev)
    except (FileNotFoundError, TraceValidationError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(result.summary_text())
    if no_report:
        console.print(f"wrote {params_out}")
        return
    _write_calibration_report(result, traces, params_out, report)
    console.print(f"wrote {params_out} and {report}")


def _from_root(path: Path) -> str:
    """``path`` (relative to the working directory) as a process started in the repository root
    sees it: relative to the root when inside it (as the Makefile writes it), else absolute."""
    import os

    full = Path(os.path.abspath(path))
    return str(full.relative_to(_ROOT)) if full.is_relative_to(_ROOT) else str(full)


def _write_calibration_report(result: Any, traces: list[Path], params_out: Path, report: Path) -> None:
    """Run experiments/calibration_report.py (study code: the library never imports it) from the
    repository root on ``result``, handed over as a pickle in a private temporary folder."""
    import pickle
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="calibration-") as tmp:
        handover = Path(tmp) / "result.pkl"
        handover.write_bytes(pickle.dumps(result))
        cmd = [sys.executable, "-m", "experiments.calibration_report", "--result", str(handover),
               "--report", _from_root(report), "--params-out", _from_root(params_out),
               "--traces", *(_from_root(t) for t in traces)]
        code = subprocess.run(cmd, cwd=_ROOT).returncode
    if code:
        _fail(f"the calibration report failed (exit {code}); the parameters are in {params_out}", code)


@app.command()
def profile(
    out: Path = typer.Option(Path("data/traces/local_measured.parquet"), "--out", "-o", help="Trace to write (.parquet); its journal sits beside it."),
    plan: str = typer.Option("default", "--plan", help="Sweep plan: default (h200_measured), pairs (h200_pairs_measured: CPU/GPU pairs near the threshold), archs (h200_archs_measured: ten new architectures) or smoke (a few rows)."),
    target: str = typer.Option("auto", "--target", help="'auto' (probe this machine) or a catalogue id."),
    workloads: str = typer.Option("", "--workloads", help="Comma-separated zoo names to keep (default: all of the plan)."),
    gpu: bool = typer.Option(True, "--gpu/--no-gpu", help="Include GPU rows (needs CUDA and NVML)."),
    deadline_s: float | None = typer.Option(None, "--deadline-s", min=1, help="Stop cleanly after this many seconds."),
    resume: bool = typer.Option(True, "--resume/--fresh", help="Skip rows already in the journal (--fresh starts over)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random inputs and weights."),
    cpu_energy: str = typer.Option("auto", "--cpu-energy", help="auto (RAPL, else INA3221, else modelled), modelled or null."),
    description: str = typer.Option("", "--description", help="Text stored in the trace metadata."),
) -> None:
    """Measure a sweep (workloads x mode x batch x cores x GPU memory cap) and write a trace."""
    from placement.core.catalogue import get_target
    from placement.core.trace import file_sha256
    from placement.lab.profiler import (
        PLAN_SETTINGS,
        ProfileError,
        ProfileSettings,
        plan_by_name,
        resolve_target,
    )
    from placement.lab.profiler import profile as run_profile

    try:
        tgt = resolve_target(target) if target == "auto" else get_target(target)
        rows = plan_by_name(plan, tgt.cpu_cores, gpu and tgt.has_gpu,
                            [w.strip() for w in workloads.split(",") if w.strip()] or None)
        summary = run_profile(rows, out, tgt, ProfileSettings(seed=seed, cpu_energy=cpu_energy, **PLAN_SETTINGS.get(plan, {})), resume=resume,
                              deadline_s=deadline_s, description=description)
    except (ProfileError, KeyError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    state = "stopped early (run again to resume)" if summary.stopped_early else "complete"
    console.print(f"{summary.rows_done}/{summary.rows_planned} rows ({summary.rows_new} new), {state}: {out}"
                  + (f" sha256 {file_sha256(out)[:12]}" if out.exists() else ""))
    for failure in summary.failures:
        err_console.print(f"[yellow]warning:[/] {failure}")


@app.command()
def describe(
    model: str = typer.Argument(..., help="A zoo workload (e.g. resnet18_cifar10), 'package.module:attribute', or a job spec file (.json/.yaml)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Samples per batch."),
    mode: str = typer.Option("infer", "--mode", "-m", help="infer or train."),
    family: str = typer.Option("", "--family", help="Model family (needed for a module path)."),
    input_shape: str = typer.Option("", "--input-shape", help="Per-sample input shape, e.g. 3,32,32 (module path)."),
    input_dtype: str = typer.Option("float32", "--input-dtype", help="Input dtype (module path), e.g. float32 or int64."),
    operators: bool = typer.Option(True, "--operators/--no-operators", help="Record the step's operators on 'meta' (the job's operators field)."),
    operator_rows: Path | None = typer.Option(None, "--operator-rows", help="Also write every operator (one row per kernel) to this JSON file."),
) -> None:
    """Describe a model as a job (FLOPs per batch counted on 'meta', parameters, input size, operators) as JSON."""
    from placement.lab.workloads import ZOO, describe_spec, load_job_spec

    here = str(Path.cwd())
    if ":" in model and here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)  # like `python -m`: mymodule:Factory imports from the current directory
    try:
        if model in ZOO:
            job = describe_spec({"workload": model, "batch_size": batch_size, "mode": mode})
        elif Path(model).suffix.lower() in (".json", ".yaml", ".yml"):
            job = load_job_spec(Path(model))
        else:
            if not family or not input_shape:
                _fail("describing a module path needs --family and --input-shape (e.g. --family cnn --input-shape 3,32,32)")
            try:
                shape = [int(s) for s in input_shape.split(",") if s.strip()]
            except ValueError:
                _fail(f"--input-shape must be whole numbers separated by commas, got {input_shape!r}")
                return
            job = describe_spec({"model": model, "family": family, "input_shape": shape, "input_dtype": input_dtype,
                                 "batch_size": batch_size, "mode": mode})
        if operators or operator_rows is not None:
            from placement.model.operators import describe_job_operators

            summary, rows = describe_job_operators(model, job, family, input_shape, input_dtype)
            job = job.model_copy(update={"operators": summary if operators else None})
            if operator_rows is not None:
                operator_rows.write_text(json.dumps(rows) + "\n")
        from placement.lab.signature import signature_of_factory, workload_signature

        if model in ZOO:
            job = job.model_copy(update={"signature": workload_signature(model)})
        elif ":" in model and input_shape:
            from placement.lab.workloads import load_model_factory

            job = job.model_copy(update={"signature": signature_of_factory(load_model_factory(model), shape, input_dtype)})
    except (FileNotFoundError, KeyError, ValueError) as exc:
        hint = ""
        if "cannot import module" in str(exc):
            hint = (f" (looked in the current directory {here} and on PYTHONPATH: run from the folder that holds "
                    "the module, or add that folder to PYTHONPATH; a package needs its __init__.py)")
        _fail(f"{exc}{hint}")
        return
    sys.stdout.write(job.model_dump_json(indent=2, exclude_none=False) + "\n")


def settings_help() -> str:
    """Every service setting as ``PLACEMENT_<NAME>`` with its default and meaning (``placement serve --help``)."""
    from placement.serve.settings import ENV_FILE, ENV_PREFIX, Settings

    lines = [f"Settings (environment variables, or lines of ./{ENV_FILE}; options above win over both):"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None else getattr(default, "value", default)
        about = f" -- {field.description}" if field.description else ""
        lines.append(f"{ENV_PREFIX}{name.upper()} = {shown}{about}")
    return "\n\n".join(lines)


class _ServeCommand(typer.core.TyperCommand):
    """``serve``'s help ends with every setting; built only when help is shown (no import otherwise)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if not self.epilog:
            self.epilog = settings_help()
        super().format_help(ctx, formatter)


@app.command("serve", cls=_ServeCommand)
def serve_command(
    host: str | None = typer.Option(None, help="Bind address (default 127.0.0.1); a non-loopback one needs PLACEMENT_TOKEN."),
    port: int | None = typer.Option(None, help="HTTP port (default 8000)."),
    db_path: Path | None = typer.Option(None, "--db-path", help="SQLite database (default: <state dir>/placement.db)."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="Database and policy versions (default ~/.local/share/placement)."),
    model: Path | None = typer.Option(None, "--model", help="Initial model directory (default: the bundled models/default)."),
    exploration_rate: float | None = typer.Option(None, "--exploration-rate", help="Share of unsure decisions that explore (default 0.05, at most 0.2)."),
    replicas: int | None = typer.Option(None, "--replicas", help="HTTP replicas (default 1)."),
    num_cpus: int | None = typer.Option(None, "--num-cpus", help="CPUs local Ray may use (default: all)."),
) -> None:
    """Start local Ray and the placement service (HTTP, OpenAPI at /docs); settings also from PLACEMENT_* variables."""
    import signal
    import threading

    from placement.serve.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(host=host, port=port, db_path=db_path, state_dir=state_dir, model_path=model,
                                     exploration_rate=exploration_rate, ingress_replicas=replicas)
    except SettingsError as exc:
        _fail(str(exc))
        return
    from placement.serve import app as serve_app
    from placement.serve.storage.store import StoreError

    try:
        serve_app.check_model(settings)
    except (ValueError, OSError, StoreError) as exc:  # before Ray starts: a clear error, no replica restart loop
        _fail(str(exc))
        return
    import logging
    import os

    from placement.serve import instance
    running = instance.Instance.read(settings.state_dir)
    if running is not None and instance.alive(running.pid) and running.pid != os.getpid():
        _fail(f"an instance (process {running.pid}) already serves {running.url} from {settings.state_dir}: stop it "
              "with `placement stop`, or give this one its own PLACEMENT_STATE_DIR, PLACEMENT_PORT and "
              "PLACEMENT_RAY_PROXY_PORT")
        return
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for a new local cluster, without its banner
    from ray import serve as _ray_serve  # noqa: F401  (its import sets the ray.serve logger up; quiet it after)

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # one URL below, not Serve's proxy-port INFO lines
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    for attempt in (1, 2):
        try:
            url = serve_app.start(settings, num_cpus=num_cpus)
            break
        except TimeoutError as exc:
            _fail(str(exc))
            return
        except Exception as exc:  # Ray waits a fixed 30 s for its raylet: too short on a loaded host
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
            err_console.print("[yellow]Ray's node did not register within Ray's fixed 30 s (a loaded host?); "
                              "starting it once more[/]")
            import ray

            ray.shutdown()
    try:
        session_dir, ray_pids = instance.local_ray_pids()
        instance.Instance(pid=os.getpid(), url=url, started_at=time.time(), ray_session_dir=session_dir,
                          ray_pids=ray_pids).write(settings.state_dir)
        if not url.endswith(f":{settings.port}"):
            console.print(f"[yellow]port {settings.port} was taken; the first replica answers on {url}[/]")
        console.print(f"placement service on [bold]{url}[/] (OpenAPI {url}/docs, metrics {url}/metrics); "
                      f"database {settings.database}; Ctrl-C or `placement stop` stops it")
        done.wait()
    finally:
        import ray
        from ray import serve

        console.print("stopping: draining the replicas, then this instance's Ray")
        try:
            serve.delete(serve_app.APP_NAME)  # the app's replicas drain; no controller kill (no raylet noise)
        except Exception as exc:  # Ray may already be gone; the shutdown below still runs
            err_console.print(f"[yellow]serve.delete: {exc}[/]")
        ray.shutdown()
        instance.clear(settings.state_dir, os.getpid())
        console.print("stopped")


@app.command("stop")
def stop_command(
    state_dir: Path | None = typer.Option(None, "--state-dir", help="The instance's state directory (default: PLACEMENT_STATE_DIR or ~/.local/share/placement)."),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds to wait for a graceful stop before killing."),
) -> None:
    """Stop the `placement serve` instance of this state directory, and only its Ray (never `ray stop`)."""
    from placement.serve import instance
    from placement.serve.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(state_dir=state_dir)
    except SettingsError as exc:
        _fail(str(exc))
        return
    try:
        console.print(instance.stop(settings.state_dir, timeout_s=timeout_s))
    except (LookupError, ValueError) as exc:
        _fail(str(exc), 1)


@app.command("export-feedback")
def export_feedback(
    out: Path = typer.Argument(..., help="Trace file to write (.parquet or .csv)."),
    db_path: Path | None = typer.Option(None, "--db-path", help="Service database (default: PLACEMENT_DB_PATH or <state dir>/placement.db)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the most recent N feedback rows."),
) -> None:
    """Write the service's feedback as a trace (source=feedback) for offline training (`placement train`)."""
    from placement.serve.settings import Settings, SettingsError
    from placement.serve.storage.store import Store, StoreError

    try:
        settings = Settings.from_env(db_path=db_path)
    except SettingsError as exc:
        _fail(str(exc))
        return
    if not settings.db_url and not settings.database.is_file():
        _fail(f"no service database at {settings.database} (set --db-path, PLACEMENT_DB_PATH or PLACEMENT_DB_URL)")
        return
    try:
        with Store.from_settings(settings) as store:
            path, sha = store.export_trace(out, seed=settings.seed, thresholds=settings.thresholds, limit=limit)
            quarantined = store.last_export_quarantined
    except (StoreError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    console.print(f"wrote {path} (sha256 {sha[:12]})")
    if quarantined:
        reasons = ", ".join(f"{why}: {n}" for why, n in sorted(quarantined.items()))
        console.print(f"left out {sum(quarantined.values())} quarantined stored feedback rows that cannot be used "
                      f"({reasons}; counted in the trace's metadata)")


def _json_arg(value: str, what: str) -> object:
    text = Path(value).read_text() if not value.lstrip().startswith(("{", "[")) and Path(value).is_file() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{what}: not JSON and not a JSON file ({exc})")
        raise


@app.command()
def query(
    job: str = typer.Argument(..., help="A job as JSON (an object; a list for a batch) or a JSON file of one."),
    target: str = typer.Option("local", "--target", "-T", help="Catalogue id, 'local', or a hardware JSON (file)."),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", envvar="PLACEMENT_URL", help="Service URL."),
    speedup_min: float | None = typer.Option(None, "--speedup-min", "-t", help="T_t for this request."),
    energy_ratio_max: float | None = typer.Option(None, "--energy-ratio-max", "-e", help="T_e for this request."),
    max_slowdown: float | None = typer.Option(None, "--max-slowdown", help="Chosen device at most this much slower."),
    no_explore: bool = typer.Option(False, "--no-explore", help="Never explore for these jobs."),
    as_json: bool = typer.Option(False, "--json", help="Print the service's JSON answer."),
) -> None:
    """Ask a running placement service where to run a job (or a list of jobs)."""
    from pydantic import ValidationError

    from placement.core.hardware import HardwareTarget
    from placement.core.job import Job
    from placement.serve.client import PlacementApiError, PlacementClient

    raw = _json_arg(job, "job")
    try:
        jobs = [Job.model_validate(j) for j in (raw if isinstance(raw, list) else [raw])]
        tgt: str | HardwareTarget = target
        if target.lstrip().startswith("{") or target.endswith(".json"):
            tgt = HardwareTarget.model_validate(_json_arg(target, "target"))
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        return
    thresholds = {k: v for k, v in (("speedup_min", speedup_min), ("energy_ratio_max", energy_ratio_max)) if v is not None}
    try:
        with PlacementClient(url) as client:
            answer = client.place_batch(jobs, tgt, thresholds=thresholds or None, max_slowdown=max_slowdown,
                                        explore=not no_explore)
    except PlacementApiError as exc:
        _fail(str(exc))
        return
    except OSError as exc:
        _fail(f"cannot reach {url} ({exc}): start it with `placement serve`")
        return
    if as_json:
        sys.stdout.write(answer.model_dump_json(indent=2) + "\n")
        return
    wide = console.width >= 150
    console.print(decisions_table(answer, with_ids=wide))
    if not wide:  # a narrow terminal: the ids below the table, whole, one per line
        console.print("decision ids (quote one in feedback):")
        for i, d in enumerate(answer.decisions or [], 1):
            console.print(f"  #{i} {d.decision_id}", soft_wrap=True, highlight=False)
    console.print("* predicted by the performance model (modelled, not measured)")


def decisions_table(answer: Any, *, with_ids: bool = True) -> Table:
    """The ``placement query`` table; the decision id (quoted in feedback) is never cut or wrapped:
    in its own column (``with_ids``) or, for a narrow terminal, listed under the table by row number."""
    table = Table(title=f"target {answer.target_id}  policy {answer.policy_version}  "
                        f"T_t={answer.thresholds.speedup_min:g} T_e={answer.thresholds.energy_ratio_max:g}")
    ids = [d.decision_id for d in answer.decisions or []]
    if not with_ids:
        table.add_column("#", justify="right")
    for c in ("job", "device", "cores", "GPU cap", "P(GPU)", "speedup*", "energy ratio*", "by"):
        table.add_column(c, overflow="fold")
    if with_ids:
        table.add_column("decision id", no_wrap=True, min_width=max((len(i) for i in ids), default=11))
    for i, d in enumerate(answer.decisions or [], 1):
        cells = [d.job_name, d.device.upper(), str(d.cpu_cores), str(d.gpu_mem_cap), f"{d.gpu_probability:.3f}",
                 "-" if d.predicted_speedup is None else f"{d.predicted_speedup:.3g}",
                 "-" if d.predicted_energy_ratio is None else f"{d.predicted_energy_ratio:.3g}", d.decided_by]
        table.add_row(*([*cells, d.decision_id] if with_ids else [str(i), *cells]))
    return table


_ROOT = Path(__file__).resolve().parents[1]  # the checkout holding experiments/ (run from a clone)
_STUDIES = ("contention", "dnn_curves", "edge_knobs", "edge_study", "feature_importance", "gpu_share",
            "online_drift", "ppo_warm_vs_cold", "table5", "threshold_sensitivity")
"""The studies ``placement experiment all`` runs (``experiments/NAME.py``, each writing OUT/NAME/). The other
modules of experiments/ are reports (calibration_report: ``placement calibrate --report``), the shared code
(harness, online_learner), or H200 measurement scripts (run on the lent device)."""


@app.command(context_settings=_VARIADIC)
def experiment(
    ctx: typer.Context,
    name: str = typer.Argument(..., help=f"A study: {', '.join(_STUDIES)}; "
                               "or 'report', or 'all'."),
    address: str = typer.Option("", "--address", help="Ray cluster address for the study's sweep (default: a local Ray)."),
    full: bool = typer.Option(False, "--full", help="Paper-scale budget instead of the small default."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the studies' outputs (NAME/ per study, REPORT.md); "
                                    "default: a new runs/<UTC time>/; --out results refreshes the tracked results."),
) -> None:
    """Run a study (experiments/NAME.py, writing OUT/NAME/); 'all' runs every study, then OUT/REPORT.md.
    Other options go to the script (e.g. --no-ray, --seed 1; see python -m experiments.NAME --help)."""
    import subprocess
    from datetime import datetime, timezone

    root = _ROOT
    folder = root / "experiments"
    if not folder.is_dir():
        _fail(f"{folder} not found: experiments run from a clone of the repository")
    studies = [s for s in _STUDIES if (folder / f"{s}.py").is_file()]
    if out is not None and out.suffix:
        _fail(f"--out is a folder (studies go to OUT/NAME/, the report to OUT/REPORT.md), got {out}")
    base = out if out is not None else Path("runs") / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = base if base.is_absolute() else root / base
    base.mkdir(parents=True, exist_ok=True)
    if name == "all":
        names = [*studies, "report"]
    elif name in studies or name == "report":
        names = [name]
    else:
        _fail(f"unknown experiment '{name}': one of {', '.join(studies)}, report or all")
        return
    flags = (["--address", address] if address else []) + (["--full"] if full else [])
    for study in names:
        shown = base.relative_to(root) if base.is_relative_to(root) else base  # provenance: results/NAME, not a host path
        where = ["--results", str(shown), "--out", str(shown / "REPORT.md")] if study == "report" else \
            ["--out", str(shown / study)]
        cmd = [sys.executable, "-m", f"experiments.{study}", *([] if study == "report" else flags), *where,
               *(ctx.args if len(names) == 1 else [])]
        console.print(f"[bold]experiment {study}[/]: {' '.join(cmd[1:])}")
        code = subprocess.run(cmd, cwd=root).returncode
        if code:
            _fail(f"experiment {study} failed (exit {code})", code)
    console.print(f"outputs in {base}" + ("" if out is not None else " (tracked results/ untouched; --out results "
                                                                     "refreshes them)"))


def main() -> None:  # pragma: no cover - console entry
    """Console entry point: run the ``placement`` command line."""
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
