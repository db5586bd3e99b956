"""The code version every trace, model and experiment output records."""

from __future__ import annotations

import re

from placement.version import code_version


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
