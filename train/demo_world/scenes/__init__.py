"""Scene generators of the demo world, by name. Each is ``fn(seed, config=None, **overrides) -> Clip``."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import numpy as np

from ..world import Clip, WorldConfig
from .balls import bouncing_balls
from .car import passing_car
from .face import talking_face
from .pendulum import pendulum

SceneFn = Callable[..., Clip]

SCENES: MappingProxyType[str, SceneFn] = MappingProxyType(
    {"bouncing_balls": bouncing_balls, "talking_face": talking_face, "pendulum": pendulum, "passing_car": passing_car})
SCENE_NAMES: tuple[str, ...] = tuple(SCENES)


def generate_clip(scene: str, seed: int | np.random.Generator, config: WorldConfig | None = None, **overrides) -> Clip:
    """One clip of ``scene`` from ``seed``; ``overrides`` fix scene parameters (see each generator)."""
    if scene not in SCENES:
        raise ValueError(f"scene={scene!r} is invalid: expected one of {list(SCENES)}")
    return SCENES[scene](seed, config, **overrides)


__all__ = ["SCENES", "SCENE_NAMES", "SceneFn", "generate_clip", "bouncing_balls", "talking_face", "pendulum",
           "passing_car"]
