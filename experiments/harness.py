"""Command-line arguments of the experiment scripts, built from their ``Args`` dataclass.

Every script in ``experiments/`` declares one ``Args`` dataclass (CleanRL style); this
turns its fields into ``--kebab-case`` options (booleans as ``--x/--no-x``, tuples as
lists) and overlays named presets (``--full``, ``--smoke``) on the fields the user left
at their defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def parse_script_args(
    cls: type[T],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> T:
    """An instance of the dataclass ``cls`` from ``argv``.

    ``presets`` maps a boolean field name (e.g. ``"full"``) to field values applied when
    that flag is set, to every field still at its default.
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
