"""The hardware catalogue: named targets with public spec figures and their sources.

Shipped as ``placement/data/catalogue.json``; :func:`load_catalogue` validates every entry
and raises naming the entry and field on bad data.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from placement.core.hardware import HardwareTarget

CATALOGUE_SCHEMA = "placement.catalogue/1"


class CatalogueError(ValueError):
    """A catalogue file that cannot be used, with the entry and field at fault."""


def _read(path: Path | None) -> dict:
    if path is None:
        text = resources.files("placement").joinpath("data/catalogue.json").read_text()
    else:
        text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogueError(f"catalogue {path or 'bundled'} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != CATALOGUE_SCHEMA:
        raise CatalogueError(f"catalogue must be an object with schema '{CATALOGUE_SCHEMA}'")
    return data


def load_catalogue(path: Path | None = None) -> dict[str, HardwareTarget]:
    """Targets by id, from ``path`` or the bundled catalogue."""
    data = _read(path)
    targets: dict[str, HardwareTarget] = {}
    for index, entry in enumerate(data.get("targets", [])):
        try:
            target = HardwareTarget.model_validate(entry)
        except ValidationError as exc:
            name = entry.get("id", f"#{index}") if isinstance(entry, dict) else f"#{index}"
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "entry"
            raise CatalogueError(f"catalogue entry {name}: field '{field}': {first['msg']}") from exc
        if target.id in targets:
            raise CatalogueError(f"catalogue entry {target.id}: duplicate id")
        targets[target.id] = target
    if not targets:
        raise CatalogueError("catalogue has no targets")
    return targets


@lru_cache(maxsize=1)
def default_catalogue() -> dict[str, HardwareTarget]:
    """The bundled catalogue (cached; targets are immutable)."""
    return load_catalogue()


def get_target(target_id: str) -> HardwareTarget:
    """A bundled target by id; the error lists the known ids."""
    catalogue = default_catalogue()
    if target_id not in catalogue:
        raise KeyError(f"unknown target '{target_id}'; known: {', '.join(sorted(catalogue))}")
    return catalogue[target_id]
