"""The demo world's shared vocabulary: its configuration, the clip record, events and the colour palette.

Every scene generator returns a :class:`Clip` built for a :class:`WorldConfig`; nothing in this package
imports torch. Time is measured in seconds from the first video frame: frame ``f`` shows the instant
``f / fps`` and audio sample ``n`` plays at ``n / sample_rate``, so an event at ``time_s`` is heard at sample
``round(time_s * sample_rate)`` and shown on frame ``round(time_s * fps)`` (:func:`frame_of`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

# The demo video VAE compresses 8x in space and the DiT patchifies 2x2 on top: H and W are multiples of 16.
SPATIAL_MULTIPLE = 16
# ... and 4x in time with the first frame kept: num_frames = 4k + 1.
TEMPORAL_STRIDE = 4

# Named ball / object colours (RGB). Saturated or white on purpose: the pixel detectors tell them apart from
# the scenes' floors and walls, which are kept dark or desaturated (see ``detectors.classify_pixels``).
PALETTE: MappingProxyType[str, tuple[int, int, int]] = MappingProxyType(
    {"red": (222, 38, 38), "orange": (245, 132, 22), "yellow": (240, 218, 32), "green": (42, 186, 62),
     "blue": (36, 88, 226), "purple": (142, 52, 212), "white": (242, 242, 242)})
COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_TIMES_WORDS = {1: "once", 2: "twice"}


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Resolution and clock of the demo world.

    Args:
        width: frame width in pixels (multiple of 16: VAE 8x times DiT patch 2).
        height: frame height in pixels (multiple of 16).
        fps: video frame rate.
        num_frames: frames per clip, ``4k + 1`` (the video VAE keeps frame 0 and compresses the rest 4x).
            The default 25 frames at 12 fps last 2.08 s.
        sample_rate: audio sample rate in Hz. 16 kHz matches the demo audio VAE (hop 320 -> 50 latent
            frames per second, the same latent clock as MOVA's 48 kHz / hop 960 DAC).
        audio_noise_level: RMS of the faint room tone under every clip (keeps silence from being digital
            zero, which no microphone records).
    """

    width: int = 64
    height: int = 64
    fps: float = 12.0
    num_frames: int = 25
    sample_rate: int = 16000
    audio_noise_level: float = 0.0015

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 32 or value % SPATIAL_MULTIPLE:
                raise ValueError(
                    f"WorldConfig.{name}={value!r} is invalid: expected an int >= 32 and a multiple of "
                    f"{SPATIAL_MULTIPLE}"
                )
        if not isinstance(self.num_frames, int) or self.num_frames < 5 or (self.num_frames - 1) % TEMPORAL_STRIDE:
            raise ValueError(
                f"WorldConfig.num_frames={self.num_frames!r} is invalid: expected 4k + 1 with k >= 1 (5, 9, ... 25)"
            )
        if not self.fps > 0:
            raise ValueError(f"WorldConfig.fps={self.fps!r} is invalid: expected a positive number")
        if not isinstance(self.sample_rate, int) or self.sample_rate < 8000:
            raise ValueError(f"WorldConfig.sample_rate={self.sample_rate!r} is invalid: expected an int >= 8000")
        if not 0 <= self.audio_noise_level < 0.1:
            raise ValueError(
                f"WorldConfig.audio_noise_level={self.audio_noise_level!r} is invalid: expected 0 <= level < 0.1"
            )

    @property
    def duration_s(self) -> float:
        """Clip length: ``num_frames / fps`` (each frame lasts one frame period)."""
        return self.num_frames / self.fps

    @property
    def num_samples(self) -> int:
        """Audio samples per clip: ``round(duration_s * sample_rate)``."""
        return int(round(self.duration_s * self.sample_rate))

    def frame_times(self) -> np.ndarray:
        """Float64 [T]: the instant each frame shows, ``f / fps``."""
        return np.arange(self.num_frames) / self.fps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorldConfig":
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"WorldConfig: unknown field(s) {unknown}; allowed fields are {sorted(allowed)}")
        return cls(**data)


class Event(NamedTuple):
    """One ground-truth event: ``(time_s, frame_index, kind, attributes)``.

    ``time_s`` is exact (the audio onset lands on sample ``round(time_s * sample_rate)``); ``frame_index`` is
    the frame that shows it, ``round(time_s * fps)``.
    """

    time_s: float
    frame_index: int
    kind: str
    attributes: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": float(self.time_s), "frame_index": int(self.frame_index), "kind": self.kind,
                "attributes": jsonable(self.attributes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        return cls(float(data["time_s"]), int(data["frame_index"]), str(data["kind"]), dict(data["attributes"]))


@dataclass
class Clip:
    """One generated clip with its description and ground truth.

    Attributes:
        video: uint8 [T, H, W, 3] RGB frames; frame ``f`` shows time ``f / fps``.
        audio: float32 [N] mono in [-1, 1] at ``sample_rate``, N = ``round(T / fps * sample_rate)``.
        fps: video frame rate.
        sample_rate: audio sample rate in Hz.
        caption: what is seen and heard, in plain English.
        scene: the generator's name (``"bouncing_balls"``, ``"talking_face"``, ``"pendulum"``, ``"passing_car"``).
        params: the sampled scene parameters (JSON-serialisable).
        events: the ground-truth timeline, sorted by time.
        tracks: per-frame ground-truth signals (lists of length T), e.g. ``mouth_open`` or a ball's ``y``.
        seed: the seed the clip was generated from.
    """

    video: np.ndarray
    audio: np.ndarray
    fps: float
    sample_rate: int
    caption: str
    scene: str
    params: dict[str, Any]
    events: list[Event]
    tracks: dict[str, list[float]] = field(default_factory=dict)
    seed: int | None = None

    @property
    def first_frame(self) -> np.ndarray:
        """uint8 [H, W, 3]: the image-to-video conditioning frame."""
        return self.video[0]

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    def metadata(self) -> dict[str, Any]:
        """Everything except the arrays, JSON-serialisable (a manifest row without paths)."""
        return {
            "scene": self.scene,
            "seed": self.seed,
            "caption": self.caption,
            "fps": float(self.fps),
            "sample_rate": int(self.sample_rate),
            "num_frames": self.num_frames,
            "height": int(self.video.shape[1]),
            "width": int(self.video.shape[2]),
            "duration_s": self.num_frames / float(self.fps),
            "params": jsonable(self.params),
            "events": [e.to_dict() for e in self.events],
            "tracks": jsonable(self.tracks),
        }


def frame_of(time_s: float, fps: float) -> int:
    """The frame that shows the instant ``time_s``: ``round(time_s * fps)``."""
    return int(np.floor(time_s * fps + 0.5))


def jsonable(value: Any) -> Any:
    """Numpy scalars/arrays and tuples -> plain Python, recursively (for JSON manifests)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return round(value, 6)
    return value


def number_word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def times_word(n: int) -> str:
    """1 -> "once", 2 -> "twice", 3 -> "three times"."""
    return _TIMES_WORDS.get(n, f"{number_word(n)} times")


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def make_rng(seed: int | np.integer | np.random.Generator) -> tuple[np.random.Generator, int | None]:
    """(generator, the int seed to record — None when a Generator was passed in)."""
    if isinstance(seed, np.random.Generator):
        return seed, None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid: expected a non-negative int or a numpy Generator")
    return np.random.default_rng(int(seed)), int(seed)


def pick(rng: np.random.Generator, options: tuple[Any, ...] | list[Any]) -> Any:
    """One element of ``options``, drawn with ``rng`` (keeps element types, unlike ``rng.choice``)."""
    return options[int(rng.integers(len(options)))]
