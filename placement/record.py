"""The base of the typed records that cross layers (jobs, hardware targets, outcomes,
decisions, service requests): a JSON ``true``/``false`` is not a number.

Pydantic's lax mode reads ``true`` as 1 and ``false`` as 0 for an ``int`` or ``float`` field,
so ``"batch_size": true`` would place a batch of one and ``"cpu_idle_w": false`` a 0 W CPU.
Every numeric field of a :class:`Record` refuses booleans instead, naming the field."""

from __future__ import annotations

import types
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationInfo, field_validator


def is_number_annotation(annotation: Any) -> bool:
    """``int``, ``float``, or a union / ``Annotated`` of them (``float | None``, ...)."""
    if annotation in (int, float):
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return is_number_annotation(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(is_number_annotation(a) for a in get_args(annotation))
    return False


def number_not_bool(value: Any) -> Any:
    """A ``BeforeValidator`` for one numeric value (e.g. the elements of a column): refuse a bool."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


@cache
def _number_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, field in cls.model_fields.items() if is_number_annotation(field.annotation))


class Record(BaseModel):
    """Mix-in base: numeric fields refuse ``bool`` (subclasses keep their own ``model_config``)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return number_not_bool(value) if info.field_name in _number_fields(cls) else value
