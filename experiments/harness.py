"""The shared harness of the experiment scripts: their arguments, the Ray fan-out of a sweep, and
the provenance each study writes.

Every study in ``experiments/`` declares one ``Args`` dataclass (CleanRL style);
:func:`parse_script_args` turns its fields into ``--kebab-case`` options (booleans as
``--x/--no-x``, tuples as lists) and overlays named presets (``--full``, ``--smoke``) on the fields
the user left at their defaults. :func:`fan_out` runs a sweep's tasks (one per fold, seed, load
level or target) as Ray tasks or in the calling process; :func:`write_provenance` writes
``OUT/provenance.json`` and :func:`provenance_note` the line of ``section.md`` that points to it.
:func:`job_from_row` is the :class:`~placement.core.job.Job` of a trace row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pandas as pd

    from placement.core.job import Job

T = TypeVar("T")
R = TypeVar("R")

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout holding ``experiments/``: shipped as the Ray tasks' working directory on a cluster."""
RAY_EXCLUDES = (".venv", ".git", "results", "models", "data")
"""Folders of the checkout not shipped to a Ray cluster (the tasks get their data as arguments)."""
LOCAL_RAY_CPUS = 2
"""CPUs of the local Ray started when no cluster address is given."""


def parse_script_args(
    cls: type[T],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> T:
    """An instance of the dataclass ``cls`` from ``argv`` (``None``: ``sys.argv[1:]``).

    Each field is an option ``--field-name`` of the field's default's type; a tuple field takes
    several values of its first element's type (``str`` when the default is empty).
    ``description``: the script's docstring (its first line is the ``--help`` text).
    ``presets`` maps a boolean field name (e.g. ``"full"``) to field values applied when
    that flag is set, to every field still at its default; presets apply in their order.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    parser = argparse.ArgumentParser(description=(description or "").strip().splitlines()[0] if description else None)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif isinstance(f.default, tuple):
            parser.add_argument(flag, nargs="*", type=type(f.default[0]) if f.default else str, default=f.default)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(parser.parse_args(argv)).items()}
    args = cls(**values)
    for flag_name, preset in (presets or {}).items():
        if getattr(args, flag_name):
            for key, value in preset.items():
                if getattr(args, key) == getattr(cls, key):
                    setattr(args, key, value)
    return args


# ---------------------------------------------------------------------------------------
# the Ray fan-out
# ---------------------------------------------------------------------------------------
@contextmanager
def ray_session(use_ray: bool, address: str = "") -> Iterator[None]:
    """Ray for the duration of the block, for a study that fans out more than once.

    ``use_ray`` False: nothing (the fan-outs run in this process). Otherwise Ray starts -- a local
    Ray with :data:`LOCAL_RAY_CPUS` CPUs, or the cluster at ``address`` (e.g. ``ray://HOST:10001``),
    which gets the checkout (less :data:`RAY_EXCLUDES`) as the tasks' working directory -- and
    shuts down when the block ends. A Ray already running is used as it is and left running.
    """
    if not use_ray:
        yield
        return
    import ray

    if ray.is_initialized():
        yield
        return
    runtime_env = {"working_dir": str(REPO_ROOT), "excludes": list(RAY_EXCLUDES)} if address else None
    ray.init(address=address or None, num_cpus=None if address else LOCAL_RAY_CPUS, include_dashboard=False,
             log_to_driver=False, runtime_env=runtime_env)
    try:
        yield
    finally:
        ray.shutdown()


def fan_out(fn: Callable[..., R], calls: Sequence[Sequence[Any]], desc: str, *, use_ray: bool,
            address: str = "", unit: str = "it") -> list[R]:
    """``[fn(*call) for call in calls]``, as Ray tasks or in this process, with a progress bar.

    ``fn``: the task, a function of the script (one call = one fold, seed, load level, target...).
    ``calls``: the argument tuple of each task. ``desc`` and ``unit``: the progress bar's label and
    unit. ``use_ray`` False: the calls run one after another in this process. True: one Ray task
    per call, one CPU each (:func:`ray_session`: a local Ray, or the cluster at ``address``; a Ray
    already running is used). An argument object shared by several calls (a trace frame, the
    ``Args``) is put into Ray's object store once. Results come back in the order of ``calls``,
    whichever task finishes first. No calls: an empty list, without starting Ray.
    """
    if not calls:
        return []
    if not use_ray:
        from tqdm.auto import tqdm

        return [fn(*c) for c in tqdm(calls, desc=desc, unit=unit)]
    import ray
    from tqdm.auto import tqdm

    with ray_session(True, address):
        remote = ray.remote(num_cpus=1)(fn)
        uses: dict[int, int] = {}
        for c in calls:
            for a in c:
                if not isinstance(a, (str, int, float, type(None))):
                    uses[id(a)] = uses.get(id(a), 0) + 1
        shared: dict[int, Any] = {}
        for c in calls:
            for a in c:
                if uses.get(id(a), 0) > 1 and id(a) not in shared:
                    shared[id(a)] = ray.put(a)
        refs = [remote.remote(*(shared.get(id(a), a) for a in c)) for c in calls]
        pending = list(refs)
        with tqdm(total=len(refs), desc=desc, unit=unit) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return list(ray.get(refs))


# ---------------------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------------------
def host_hardware(targets: Any) -> dict[str, Any]:
    """The machine the study ran on (CPU model, usable cores, RAM in GiB, from
    :func:`placement.lab.probe.probe_local`), its platform and Python version, and ``targets``:
    the hardware targets studied, in whatever form the study records them (ids or descriptions)."""
    from placement.lab.probe import probe_local

    host = probe_local()
    return {"experiment_host": f"{host.cpu_model}, {host.cpu_cores} usable cores, {host.ram_gib} GiB RAM",
            "platform": platform.platform(), "python": sys.version.split()[0], "targets": targets}


def write_provenance(out: Path, study: str, args: Any, *, thresholds: Any, trace_hashes: Mapping[str, str],
                     targets: Any, start: float, **extra: Any) -> dict[str, Any]:
    """Write ``out/provenance.json`` and return what it holds.

    Keys, in order: ``study`` (its name), ``args`` (the ``Args`` dataclass as a dict), ``seed``
    (``args.seed``), ``thresholds`` (``Thresholds.as_dict()``, or the grid a sweep used),
    ``trace_hashes`` (trace file -> sha256, or a note for a trace generated in-process),
    ``code_version`` (:func:`placement.core.version.code_version`), ``hardware``
    (:func:`host_hardware` of ``targets``), then the study's ``extra`` keys, then ``wall_s``: seconds
    since ``start`` (a ``time.time()`` reading), to 0.1 s. JSON indented by one; values JSON cannot
    hold (paths, numpy scalars) are written as their ``str``.
    """
    from placement.core.version import code_version

    provenance = {
        "study": study, "args": dataclasses.asdict(args), "seed": args.seed, "thresholds": thresholds,
        "trace_hashes": dict(trace_hashes), "code_version": code_version(), "hardware": host_hardware(targets),
        **extra, "wall_s": round(time.time() - start, 1),
    }
    (Path(out) / "provenance.json").write_text(json.dumps(provenance, indent=1, default=str))
    return provenance


def provenance_note(study: str, trace_hashes: Mapping[str, str]) -> str:
    """The line of ``section.md`` pointing to the study's provenance: code version and the first 12
    hex digits of each trace's sha256 (by file name; none when the study read no trace)."""
    from placement.core.version import code_version

    hashes = ", ".join(f"`{Path(k).name}` {v[:12]}" for k, v in trace_hashes.items())
    return f"Provenance: `{study}/provenance.json` (code {code_version()}" + (f", trace sha256 {hashes}" if hashes else "") + ")."


# ---------------------------------------------------------------------------------------
# trace rows
# ---------------------------------------------------------------------------------------
def job_from_row(row: pd.Series | Mapping[str, Any]) -> Job:
    """The job of a trace row (or of a :func:`placement.model.simulate.generate_jobs` row): its model
    name, family, mode, batch size, FLOPs per batch, parameters and input size per sample."""
    from placement.core.job import Job

    return Job(name=str(row["model"]), family=row["family"], mode=row["mode"], batch_size=int(row["batch_size"]),
               flops_per_batch=float(row["flops_per_batch"]), param_count=int(row["param_count"]),
               input_elems_per_sample=int(row["input_elems_per_sample"]),
               input_bytes_per_sample=int(row["input_bytes_per_sample"]))
