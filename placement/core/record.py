"""The base of the typed records that cross layers (jobs, hardware targets, outcomes,
decisions, service requests): a JSON ``true``/``false`` or string is not a number, and a
number is not ``true``/``false``.

Pydantic's lax mode reads ``true`` as 1 and ``false`` as 0 for an ``int`` or ``float`` field,
so ``"batch_size": true`` would place a batch of one and ``"cpu_idle_w": false`` a 0 W CPU;
it reads the string ``"4"`` as 4; and it reads ``1``/``0`` (and ``"yes"``, ``"off"``, ...) as a
boolean, so ``"unified_memory": 0`` would pass for ``false``. Every numeric field of a
:class:`Record` refuses booleans (and strings, unless a string is one of its valid values,
as ``"grow"`` is for a memory cap), and every boolean field accepts only
``true``/``false`` (a numpy bool too), naming the field: what the OpenAPI schema says is
what the service takes."""

from __future__ import annotations

import types
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ValidationInfo, field_validator


def _has_member(annotation: Any, test: Callable[[Any], bool]) -> bool:
    """Whether ``annotation``, or a member of it as a union / ``Annotated``, passes ``test``."""
    if test(annotation):
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _has_member(get_args(annotation)[0], test)
    if origin in (Union, types.UnionType):
        return any(_has_member(a, test) for a in get_args(annotation))
    return False


def is_number_annotation(annotation: Any) -> bool:
    """``int``, ``float``, or a union / ``Annotated`` of them (``float | None``, ...)."""
    return _has_member(annotation, lambda t: t in (int, float))


def is_bool_annotation(annotation: Any) -> bool:
    """``bool``, or a union / ``Annotated`` with it (``bool | None``, ...)."""
    return _has_member(annotation, lambda t: t is bool)


def _is_string_type(t: Any) -> bool:
    if isinstance(t, type):
        return issubclass(t, str)
    return get_origin(t) is Literal and any(isinstance(a, str) for a in get_args(t))


def admits_string(annotation: Any) -> bool:
    """Whether a string can be a valid value: ``str``, a ``Literal`` of strings, a ``str``
    enum, or a union / ``Annotated`` with one (``int | Literal["grow"]``)."""
    return _has_member(annotation, _is_string_type)


def bool_not_number(value: Any) -> Any:
    """A ``BeforeValidator`` for one boolean value: only ``True``/``False`` (or a numpy bool);
    ``None`` passes through for optional fields to decide."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise ValueError("must be true or false")


def number_not_bool(value: Any) -> Any:
    """A ``BeforeValidator`` for a value that may be a number: refuse a bool."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("must be a number, not true/false")
    return value


def json_number(value: Any) -> Any:
    """A ``BeforeValidator`` for one numeric value (e.g. the elements of a column): refuse a
    bool and a string (lax mode would read ``"4"`` as 4)."""
    if isinstance(value, (str, bytes)):
        raise ValueError("must be a number, not a string (write 4, not \"4\")")
    return number_not_bool(value)


@cache
def _number_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, field in cls.model_fields.items() if is_number_annotation(field.annotation))


@cache
def _number_only_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name in _number_fields(cls) if not admits_string(cls.model_fields[name].annotation))


@cache
def _bool_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, field in cls.model_fields.items() if is_bool_annotation(field.annotation))


class Record(BaseModel):
    """Mix-in base: numeric fields refuse ``bool``, boolean fields refuse anything but ``bool``
    (subclasses keep their own ``model_config``)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_number_mixup(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name in _bool_fields(cls):
            return bool_not_number(value)
        if info.field_name in _number_only_fields(cls):
            return json_number(value)
        return number_not_bool(value) if info.field_name in _number_fields(cls) else value
