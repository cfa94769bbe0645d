"""What a ``config.json`` of our model classes may hold, checked before any module is built.

Each model class is a diffusers ``ModelMixin`` + ``ConfigMixin`` whose ``__init__`` arguments are the official
``config.json`` fields (``@register_to_config``), so diffusers reads and writes the configs. diffusers does not check
values, though, and a checkpoint is untrusted input: ``num_layers: 100000`` would fill host memory with module objects
even on the meta device. :class:`ConfigRules` gives every class a table of its fields' allowed values
(``_config_rules``) plus the rules between fields (``_check_relations``); ``check_config`` runs both on a plain dict
(the loader calls it on every component before anything loads) and ``__init__`` runs it on its own arguments.

The ceilings are far above MOVA-720p's sizes (the largest released model; its values in brackets).
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

MAX_LAYERS = 512  # transformer blocks per tower / bridge layers [video 40, audio 30, UMT5 24]
MAX_WIDTH = 65_536  # hidden, FFN, text, latent and conv channel widths [5120, 13824, 4096; DAC 2048]
MAX_HEADS = 1_024  # attention heads [video 40, audio 12, UMT5 64]
MAX_HEAD_DIM = 4_096  # per-head width [128; UMT5 d_kv 64]
MAX_KERNEL = 64  # patch sizes and VAE strides, per entry [patch 1x2x2; DAC rates 2..8]
MAX_STAGES = 16  # entries of a rates / patch / dim_mult list [DAC 5 rates; Wan VAE 4 stages]
MAX_VOCAB = 1 << 20  # text-encoder vocabulary [UMT5 256,384]
MAX_SAMPLE_RATE = 384_000  # audio VAE sample rate in Hz [48,000]

Rule = Callable[[Any], "str | None"]  # None when the value is allowed, else what is allowed


def _int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def size(high: int) -> Rule:
    """An integer in [1, high]."""
    return lambda v: None if _int(v) and 1 <= v <= high else f"an integer from 1 to {high}"


def optional_size(high: int) -> Rule:
    return lambda v: None if v is None else size(high)(v)


def sizes(high: int, count: int | None = None) -> Rule:
    """A list of integers in [1, high], ``count`` of them (else 1 to MAX_STAGES)."""
    def rule(v: Any) -> str | None:
        ok = isinstance(v, (list, tuple)) and all(_int(x) and 1 <= x <= high for x in v) and (
            len(v) == count if count else 1 <= len(v) <= MAX_STAGES)
        return None if ok else f"a list of {count or f'1 to {MAX_STAGES}'} integers from 1 to {high}"
    return rule


def positive(v: Any) -> str | None:
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return None if ok else "a positive number"


def flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def off(reason: str) -> Rule:
    """A Wan option MOVA's checkpoints leave off and we do not implement."""
    return lambda v: None if v is False else f"false ({reason})"


def one_of(*choices: Any) -> Rule:
    return lambda v: None if v in choices else f"one of {list(choices)}"


def fraction_or_flag(v: Any) -> str | None:
    ok = isinstance(v, bool) or (isinstance(v, numbers.Real) and math.isfinite(v) and 0 <= v <= 1)
    return None if ok else "true, false or a number in [0, 1]"


def fail(owner: str, name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{owner}.{name}={value!r} is invalid: expected {allowed}")


class ConfigRules:
    """Checked configs and the official class name, for the model classes of ``mova.models``.

    ``_official_class_name`` is the ``_class_name`` the official checkpoints carry (``WanModel`` ...): it is what our
    ``save_pretrained`` writes, and the loader accepts it or ours.
    """

    _official_class_name: ClassVar[str] = ""
    _config_rules: ClassVar[dict[str, Rule]] = {}

    @classmethod
    def config_defaults(cls) -> dict[str, Any]:
        params = inspect.signature(cls.__init__).parameters.values()
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    @classmethod
    def check_config(cls, values: Mapping[str, Any]) -> None:
        """Every known field of ``values`` (a config.json dict; absent fields take the defaults) within its rule, and
        the fields consistent with each other; ValueError ``Class.field=value is invalid: expected ...``."""
        merged = {**cls.config_defaults(), **{k: v for k, v in values.items() if not k.startswith("_")}}
        for name, rule in cls._config_rules.items():
            problem = rule(merged[name])
            if problem:
                fail(cls.__name__, name, merged[name], problem)
        cls._check_relations(merged)

    @classmethod
    def _check_relations(cls, c: dict[str, Any]) -> None:
        """Rules between fields (subclasses)."""

    @classmethod
    def class_names(cls) -> tuple[str, ...]:
        """The ``_class_name`` values a config of this class may carry."""
        return tuple(dict.fromkeys((cls._official_class_name or cls.__name__, cls.__name__)))

    def to_json_string(self) -> str:
        """diffusers' config JSON with the official ``_class_name``, so the official code reads our folders too."""
        data = json.loads(super().to_json_string())  # type: ignore[misc]
        data["_class_name"] = self._official_class_name or type(self).__name__
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
