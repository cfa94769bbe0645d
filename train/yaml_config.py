"""The one config loader of ``train/``: YAML files → validated dataclasses (stage, data-prep and VAE configs).

A config file is a YAML mapping of a dataclass's fields, nested dataclasses as nested mappings. It may start from
another file with ``base: other.yaml`` (a path relative to it) and change a few values; ``--set key.sub=value``
overrides apply last, the value parsed as YAML (``--set optim.lr=2e-5``, ``--set model.train=[audio_dit]``).

    cfg = load_config(TrainConfig, "train/configs/phase1.yaml", ["steps=100", "model.base=ckpt/MOVA-360p"])

Values are checked against the field annotations (``int``, ``float``, ``bool``, ``str``, ``Literal``, ``X | None``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, nested dataclasses), then by the dataclass's ``__post_init__``.
Every mistake raises :class:`ConfigError` (a ValueError) naming the file that set the key (or ``--set``), the key,
the value and what is allowed:

    my.yaml: diffusion.expert_routing='random' is invalid: expected one of ['proportional', 'alternate']
    my.yaml: optim.lrr=0.0001 is invalid: unknown key; optim has ['optimizer', 'lr', 'betas', ...]
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import numpy as np
import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that is not allowed. ``source`` (the file, or ``--set``) is filled in by :func:`load_config`."""

    def __init__(self, key: str, value: Any, reason: str, source: str | None = None) -> None:
        super().__init__(key, value, reason)
        self.key, self.value, self.reason, self.source = key, value, reason, source

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key}={self.value!r} is invalid: {self.reason}"


def fail(key: str, value: Any, allowed: str) -> NoReturn:
    raise ConfigError(key, value, f"expected {allowed}")


# ----------------------------------------------------------------------------------------------------------------------
# Field checks (called by the config classes' __post_init__ with the field's key)
# ----------------------------------------------------------------------------------------------------------------------


def check_number(key: str, value: Any, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 integer: bool = False, optional: bool = False) -> None:
    """``value`` is a finite number (an int when ``integer``) in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``);
    None passes when ``optional``."""
    if value is None and optional:
        return
    bounds = ([f"{'>' if lo_open else '>='} {lo}"] if lo is not None else []) + ([f"<= {hi}"] if hi is not None else [])
    allowed = ("an integer" if integer else "a number") + (" " + " and ".join(bounds) if bounds else "") \
        + (" or null" if optional else "")
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi):
        fail(key, value, allowed)


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        fail(key, value, f"one of {list(choices)}")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(key, value, "true or false")


def check_order(lo_key: str, lo: float | None, hi_key: str, hi: float | None) -> None:
    """When both bounds are set, ``lo <= hi``."""
    if lo is not None and hi is not None and lo > hi:
        fail(lo_key, lo, f"a value <= {hi_key} ({hi!r})")


# ----------------------------------------------------------------------------------------------------------------------
# dict ⇄ dataclass
# ----------------------------------------------------------------------------------------------------------------------


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return f"one of {list(typing.get_args(hint))}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false",
            type(None): "null"}.get(hint, str(hint))


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """A YAML value as the annotated type; ConfigError names ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg)
            except ConfigError as exc:
                if exc.key != key:  # a mistake inside a nested value of the matching type
                    raise
        fail(key, value, _describe(hint))
    if origin is Literal:
        check_choice(key, value, args)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail(key, value, "a list")
        items = [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            fail(key, value, "a mapping")
        return {str(k): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if hint is bool:
        check_bool(key, value)
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, value, "an integer")
    elif hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                fail(key, value, "a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(key, value, "a number")
        return float(value)
    elif hint is str:
        if isinstance(value, bool):  # YAML 1.1 reads unquoted yes/no/on/off as booleans
            fail(key, value, "a string (quote it: YAML reads unquoted yes/no/on/off as true/false)")
        if not isinstance(value, str):
            fail(key, value, "a string")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """The dataclass ``cls`` from a (YAML) mapping: values coerced to the field types, nested dataclasses recursed;
    unknown or missing keys and invalid values raise :class:`ConfigError` naming ``prefix + key``."""
    section = prefix.rstrip(".")
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        fail(section or cls.__name__, data, "a mapping of field names to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(prefix + str(key), value, f"unknown key; {section or 'the top level'} has {list(fields)}")
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(prefix + name, None, "the key is missing (it has no default)")
    kwargs = {key: _coerce(prefix + key, value, hints[key]) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # __post_init__ checks name keys relative to cls
        exc.key = prefix + exc.key
        raise


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain data (tuples as lists), the inverse of :func:`from_dict`."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------------------------------------------------
# Files: base chains, --set overrides, where each key came from
# ----------------------------------------------------------------------------------------------------------------------


def _leaves(data: Mapping[str, Any], prefix: str = "") -> typing.Iterator[str]:
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) \
            else value
    return out


def read_yaml(path: str | os.PathLike, sources: dict[str, str] | None = None,
              _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a dict, with its ``base:`` chain merged in (base first). ``sources``, when given, receives
    each leaf key's file (the last one that set it)."""
    resolved = Path(path).resolve()
    if resolved in _seen:
        raise ValueError(f"config {path} includes itself through 'base:' ({' -> '.join(map(str, _seen))})")
    if not resolved.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid YAML ({exc})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a YAML mapping, not {type(data).__name__}")
    base = data.pop("base", None)
    merged = data
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError("base", base, "a path to another config file", str(path))
        merged = _deep_merge(read_yaml(Path(path).parent / base, sources, (*_seen, resolved)), data)
    if sources is not None:
        sources.update(dict.fromkeys(_leaves(data), str(path)))
    return merged


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], sources: dict[str, str] | None = None
                    ) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a config dict."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        keys = key.strip().split(".")
        if not sep or not all(keys):
            raise ValueError(f"--set {item!r} is invalid: expected key=value, e.g. optim.grad_accum=4")
        node = data
        for k in keys[:-1]:
            node[k] = dict(node[k]) if isinstance(node.get(k), dict) else {}
            node = node[k]
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        if sources is not None:
            sources[".".join(keys)] = "--set"
    return data


def _source(sources: Mapping[str, str], key: str) -> str | None:
    """The file that set ``key`` or the nearest enclosing key (``model.train[1]`` → ``model.train``)."""
    parts = key.split("[", 1)[0].split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in sources:
            return sources[".".join(parts[:n])]
    return None


def load_config(cls: type[T], path: str | os.PathLike, overrides: Sequence[str] = ()) -> T:
    """Read a config file (with its ``base:`` chain), apply ``--set`` overrides, build and validate ``cls``."""
    sources: dict[str, str] = {}
    data = apply_overrides(read_yaml(path, sources), overrides, sources)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        exc.source = _source(sources, exc.key) or str(path)
        raise
    except (TypeError, ValueError) as exc:  # raised by a helper a config calls (a model or world config's check)
        raise ValueError(f"{path}: {exc}") from None
