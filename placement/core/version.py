"""The code version recorded with every trace, model and experiment output."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

CODE_PATHS = ("placement", "envs", "agents", "serve", "experiments", "benchmarks", "pyproject.toml",
              "constraints.txt", "Makefile")
"""What ``.dirty`` looks at: the code, not its outputs (results/, docs/, models/, data/ change
when the code runs and do not change what it computes)."""


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` from git when run from a checkout, else the package version.

    ``PLACEMENT_CODE_VERSION`` overrides both: set it when running a copy without ``.git``
    (a measurement host that gets the working tree only), e.g. to ``git describe`` output."""
    override = os.environ.get("PLACEMENT_CODE_VERSION", "").strip()
    if override:
        return override
    try:
        package = metadata.version("placement")
    except metadata.PackageNotFoundError:
        package = "0+unknown"
    root = Path(__file__).resolve().parents[2]  # the checkout: placement/core/version.py
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=root, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return package
    return f"{package}+g{commit}" + (".dirty" if dirty else "")
