"""The shape of the house (issue 18): one namespace, layered, no package too large.

Layers of the ``placement`` namespace, lowest first; a module may import its own layer and the
layers below it, never above (deferred imports inside functions count too):

    core < lab < model < envs < agents < serve < cli

The library never imports ``experiments`` or ``tests``, nor the bare folder names ``envs``,
``agents`` and ``serve`` (they install as ``placement.envs`` etc.; Ray's ``from ray import serve``
is a different package).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "lab", "model", "envs", "agents", "serve", "cli")
"""Lowest first; ``placement/__init__.py`` and ``placement/cli.py`` are the top (``cli``)."""
SOURCE_OF = {"core": "placement/core", "lab": "placement/lab", "model": "placement/model",
             "envs": "envs", "agents": "agents", "serve": "serve"}
"""Where each layer's source lives in the checkout (envs/, agents/, serve/ install as placement.X)."""
FORBIDDEN_TOP = {"experiments", "tests", "envs", "agents", "serve"}
MAX_PACKAGE_SHARE = 0.20


def library_files() -> Iterator[tuple[str, Path]]:
    """Every library module with its layer."""
    for layer, folder in SOURCE_OF.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield layer, path
    for name in ("__init__.py", "cli.py"):
        yield "cli", ROOT / "placement" / name


def layer_of(module: str) -> str | None:
    """The layer of an imported ``placement`` module; None for other packages."""
    parts = module.split(".")
    if parts[0] != "placement":
        return None
    if len(parts) == 1 or parts[1] in ("cli", "data"):
        return "cli"
    return parts[1] if parts[1] in LAYERS else "cli"


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import in the source, at any depth."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "placement":  # from placement import core -> placement.core
                for alias in node.names:
                    yield node.lineno, f"placement.{alias.name}"
            else:
                yield node.lineno, node.module


def violations(layer: str, source: str, where: str) -> list[str]:
    """The import edges of one module that break the layering."""
    found = []
    rank = LAYERS.index(layer)
    for line, module in imported_modules(source):
        top = module.split(".")[0]
        if top in FORBIDDEN_TOP:
            found.append(f"{where}:{line} imports {module} (the library imports only placement.*)")
            continue
        target = layer_of(module)
        if target is not None and LAYERS.index(target) > rank:
            found.append(f"{where}:{line} ({layer}) imports {module} ({target}): an upward edge")
    return found


def test_the_checker_sees_an_upward_edge() -> None:
    source = "def f():\n    from placement.serve.placer import Placer\n"
    assert violations("core", source, "x.py") == ["x.py:2 (core) imports placement.serve.placer (serve): an upward edge"]
    assert violations("model", "import placement.lab.meter\nfrom placement.core import job\n", "y.py") == []
    assert violations("cli", "import agents.dnn\n", "z.py")[0].startswith("z.py:1 imports agents.dnn")
    assert violations("agents", "from placement import cli\n", "w.py")[0].endswith("an upward edge")


def test_import_graph_has_no_upward_edges() -> None:
    found = []
    for layer, path in library_files():
        found += violations(layer, path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def package_lines() -> dict[str, int]:
    """Lines of each package's own modules (subpackages counted on their own)."""
    sizes: dict[str, int] = {}
    for _, path in library_files():
        rel = path.parent.relative_to(ROOT)
        sizes[str(rel)] = sizes.get(str(rel), 0) + _lines(path)
    return sizes


def test_no_package_holds_a_fifth_of_the_library() -> None:
    sizes = package_lines()
    total = sum(sizes.values())
    assert total > 10_000  # the whole library is counted, not a part
    largest = max(sizes, key=lambda k: sizes[k])
    share = sizes[largest] / total
    print(f"largest package {largest}: {sizes[largest]} of {total} lines ({share:.1%})")
    assert share < MAX_PACKAGE_SHARE, sizes


@pytest.mark.parametrize("folder", ["envs", "agents", "serve"])
def test_the_namespace_links_point_at_the_top_level_folders(folder: str) -> None:
    link = ROOT / "placement" / folder
    assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve()


def test_installed_under_one_namespace() -> None:
    import placement.agents.dnn
    import placement.envs
    import placement.serve.app

    for module in (placement.envs, placement.agents.dnn, placement.serve.app):
        assert module.__name__.startswith("placement.")
    text = (ROOT / "pyproject.toml").read_text()
    for folder in ("envs", "agents", "serve"):
        assert f'"placement.{folder}" = "{folder}"' in text
