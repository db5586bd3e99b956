"""The code version every trace, model and experiment output records."""

from __future__ import annotations

import re

from placement.core.version import code_version


def test_version_names_the_commit_in_a_checkout(monkeypatch):
    monkeypatch.delenv("PLACEMENT_CODE_VERSION", raising=False)
    code_version.cache_clear()
    try:
        assert re.fullmatch(r"[^+]+\+g[0-9a-f]{12}(\.dirty)?", code_version()), code_version()
    finally:
        code_version.cache_clear()


def test_override_for_a_copy_without_git(monkeypatch):
    monkeypatch.setenv("PLACEMENT_CODE_VERSION", "0.1.0+gcf48d94")
    code_version.cache_clear()
    try:
        assert code_version() == "0.1.0+gcf48d94"
    finally:
        code_version.cache_clear()


def test_outputs_do_not_make_the_code_dirty(tmp_path, monkeypatch):
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = root / "results" / "REPORT.md"
    monkeypatch.delenv("PLACEMENT_CODE_VERSION", raising=False)
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                      capture_output=True, text=True).stdout.strip():
        import pytest

        pytest.skip("the checkout has uncommitted changes")
    before = readme.read_bytes()
    try:
        readme.write_bytes(before + b"\n")
        code_version.cache_clear()
        assert not code_version().endswith(".dirty")
    finally:
        readme.write_bytes(before)
        code_version.cache_clear()
