"""The data-pipeline configuration: one dataclass per stage, composed by :class:`DataConfig`, loadable from YAML.

    cut:        {num_frames: 193, fps: 24, stride_frames: null, sample_rate: 48000, width: 1280, height: 720}
    letterbox:  {threshold: 24, samples: 16, fit: auto, max_crop_fraction: 0.25}
    scenes:     {min_content: 15, adaptive_ratio: 3, min_hist_distance: 0.2, min_scene_s: 0.5}
    vad:        {energy_floor_db: -45, max_flatness: 0.3, min_periodicity: 0.6, min_total_speech_s: 1.0}
    measure:    {silence_threshold_db: -50, bandwidth_rolloff: 0.99, av_max_offset_frames: 12}
    filters:    {max_silence_ratio: 0.5, min_bandwidth_hz: 4000, min_loudness_lufs: -40, ...}
    captions:   {provider: auto}

Any section or key may be left out (defaults). Unknown keys and bad values raise ``ValueError`` naming the key
(``filters.max_silence_ratio: 1.5 is not allowed; expected a number >= 0 and <= 1 or null``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .captions import CaptionConfig
from .cut import CutConfig
from .filters import FilterConfig, MeasureConfig
from .letterbox import LetterboxConfig
from .scenes import SceneConfig
from .vad import VADConfig
from .validation import from_dict, to_dict

__all__ = ["DataConfig", "load_config"]


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """All stages of ``prepare``; see each section's class for its fields."""

    cut: CutConfig = field(default_factory=CutConfig)
    letterbox: LetterboxConfig = field(default_factory=LetterboxConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)

    def __post_init__(self) -> None:
        for name, cls in (("cut", CutConfig), ("letterbox", LetterboxConfig), ("scenes", SceneConfig),
                          ("vad", VADConfig), ("measure", MeasureConfig), ("filters", FilterConfig),
                          ("captions", CaptionConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name}: {getattr(self, name)!r} is not allowed; expected a {cls.__name__}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DataConfig:
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def load_config(path: str | os.PathLike[str] | None) -> DataConfig:
    """A :class:`DataConfig` from a YAML file (None -> defaults)."""
    if path is None:
        return DataConfig()
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config: {str(p)!r} is not a file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"config: {str(p)!r} is not valid YAML ({exc})") from None
    return DataConfig.from_dict(data)
