"""Field checks shared by the data-pipeline config dataclasses.

Every check raises ``ValueError("<field>: <value> is not allowed; <what is>")``. Config classes call them from
``__post_init__`` with the bare field name; :func:`from_dict` prefixes the section (``filters.min_motion: …``),
so a YAML mistake names the exact key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def check_number(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """``value`` is a finite number (an int when ``integer``) in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``);
    None passes when ``optional``."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    bounds = []
    if lo is not None:
        bounds.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        bounds.append(f"<= {hi}")
    allowed = kind + (" " + " and ".join(bounds) if bounds else "") + (" or null" if optional else "")
    ok_type = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if integer:
        ok_type = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} is not allowed; expected {allowed}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name}: {value!r} is not allowed; expected {allowed}")
    if hi is not None and value > hi:
        raise ValueError(f"{name}: {value!r} is not allowed; expected {allowed}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: {value!r} is not allowed; choose one of {', '.join(map(repr, choices))}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not allowed; expected true or false")


def check_order(lo_name: str, lo: float | None, hi_name: str, hi: float | None) -> None:
    """When both bounds are set, ``lo <= hi``."""
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{lo_name}: {lo!r} is not allowed; it must be <= {hi_name} ({hi!r})")


def _dataclass_type(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``X`` or ``X | None``), else None."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg):
                return arg
    return None


def _is_tuple_type(tp: Any) -> bool:
    if typing.get_origin(tp) is tuple:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(typing.get_origin(a) is tuple for a in typing.get_args(tp))
    return False


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a (YAML) mapping: nested dataclasses recurse, lists become tuples for
    tuple fields, unknown keys and bad values raise ``ValueError`` naming ``prefix + key``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "config"
        raise ValueError(f"{where}: {data!r} is not allowed; expected a mapping of field names to values")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ValueError(f"{prefix}{key}: unknown field; allowed: {', '.join(names)}")
        sub = _dataclass_type(hints[key])
        if sub is not None and (isinstance(value, Mapping) or value is None) and not (
            value is None and typing.get_origin(hints[key]) in (typing.Union, types.UnionType)
        ):
            value = from_dict(sub, value, f"{prefix}{key}.")
        elif _is_tuple_type(hints[key]) and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ValueError as exc:
        message = str(exc)
        if prefix and not message.startswith(prefix):
            message = prefix + message
        raise ValueError(message) from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A config dataclass as plain data (tuples as lists), the inverse of :func:`from_dict`."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(obj)
