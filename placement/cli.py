"""The ``placement`` command-line tool.

Each subcommand parses its arguments, calls the library, and formats the answer; heavy
imports (torch, ray, SB3) happen inside the commands that need them so ``--help`` is fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from placement.threshold import MissingPower, Thresholds

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
    from placement.trace import TraceValidationError, pair_outcomes, read_trace

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
    from placement.catalogue import CatalogueError, load_catalogue

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
def probe() -> None:
    """Probe this machine (cores, RAM, NVIDIA GPUs) and print it as a hardware target (JSON)."""
    from placement.probe import probe_local

    sys.stdout.write(probe_local().model_dump_json(indent=2) + "\n")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
