"""GenerationSettings: everything one generation needs, each field declared once with its range and help.

The UI form, the API parameters, the CLI flags and the arena's model specs are all derived from these fields
(:func:`setting_fields`), so a new setting is one field here, its use in the pipeline and a test. Construction
validates every field (``ValueError`` naming the field, the value and what is allowed) and normalises UI values
(integral floats → int, blank text → ``None``); what depends on the model — its trained sizes, longest clip, work
budget, adapters — is checked by :meth:`ModelInfo.check` (``Backend.check``) once the model's defaults are
filled in (:meth:`ModelInfo.resolve`).

Nothing here imports torch: the UI builds settings without loading the model.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mova import validation as check
from mova.guidance import GUIDANCE_MODES, Guidance

PRECISIONS = ("bf16", "fp8")  # mova.acceleration implements them
# How a pipeline is placed and run (load-time choices of the CLI and the app, not per-request settings):
OFFLOAD_MODES = ("none", "model", "sequential")  # MOVAPipeline.from_pretrained(offload=)
COMPILE_MODES = ("auto", "on", "off")  # MOVAPipeline.apply_compile: auto = on where it pays (full size, one GPU)
QUANTIZATIONS = ("fp8", "int8", "nf4")  # weight storage, MOVAPipeline.from_pretrained(quantization=); mova.quantization
# Memory profiles (from_pretrained(memory=), the CLI's and the app's --memory): the load options each one sets. "24gb":
# MOVA-360p on a 24 GB GPU with 32 GB of host RAM (README "Memory profiles"): fp8 weights, the denoiser's blocks
# streamed, and the experts and the text encoder read from disk when needed and freed after (lazy=True). Its CUDA
# caching allocator grows segments instead of keeping fixed-size ones (cuda_alloc: PYTORCH_CUDA_ALLOC_CONF's syntax,
# applied when the variable is unset): with fixed segments 720p ran out of memory under a 48 GB cap with 12 GB
# reserved but unallocated.
MEMORY_PROFILES = {"full": {"quantization": None, "offload": "none", "lazy": False, "cuda_alloc": None},
                   "24gb": {"quantization": "fp8", "offload": "sequential", "lazy": True,
                            "cuda_alloc": "expandable_segments:True"}}
# The help of these load-time flags, shared by the CLI and the app
LOAD_FLAG_HELP = {
    "memory": "memory profile: 24gb (MOVA-360p on a 24 GB GPU with 32 GB of host RAM: fp8 weights, streamed blocks, "
              "experts and text encoder read from disk when needed) or full; sets --offload and --quantization",
    "quantization": "store the DiT, bridge and text-encoder block weights as fp8 or int8 (half of bf16's bytes) or "
                    "nf4 (about a quarter)",
    "offload": "GPU memory mode: none (default), model (one component on the GPU at a time), sequential (DiT blocks "
               "streamed from host memory)",
}

__all__ = ["GenerationSettings", "ModelInfo", "Setting", "GenerationCancelled", "setting_fields"]


class GenerationCancelled(Exception):
    """Raised by a progress callback to end a generation at the next step (the user pressed Stop or left)."""


@dataclass(frozen=True)
class Setting:
    """What is declared once per field: its help, type and allowed values, and where it shows.

    ``group``: ``"main"`` (laid out by the generation tabs), ``"advanced"`` (a plain control in the Advanced box,
    the default for a new field) or ``"api"`` (API, CLI and Python only). ``model_default``: ``None`` means the
    checkpoint's own value. A field may be ``None`` when its default is, or when ``nullable``. ``flags``: extra CLI
    spellings besides ``--name-with-dashes`` and ``--name_with_underscores``. ``media``: the field is a media input
    (see :data:`MEDIA_KINDS`): a file path in the CLI and the API; in Python also what the kind lists.
    """

    help: str
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    group: str = "advanced"
    model_default: bool = False
    nullable: bool = False  # None is allowed besides a default that is not None (loudness_lufs: off)
    flags: tuple[str, ...] = ()
    media: str | None = None  # a media input: "image", "audio", "video" or "clip" (a file; in Python also arrays)

    def allowed(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        if self.kind is bool:
            return "true or false"
        if self.low is None:
            return "text"
        bracket = "(" if self.low_open else "["
        return f"{'an integer' if self.kind is int else 'a number'} in {bracket}{self.low:g}, {self.high:g}]"


_MAX_SIDE = check.MAX_PIXELS_PER_FRAME // check.SIZE_MULTIPLE  # the pixel ceiling decides; one side alone may be long


def _field(default: Any, help: str, kind: type, **meta: Any) -> Any:
    return dataclasses.field(default=default, metadata={"setting": Setting(help, kind, **meta)})


@dataclass(frozen=True, kw_only=True)
class GenerationSettings:
    """One generation. ``None`` means the model's default (size, frames, fps, steps, s_T, negative prompt, shifts)
    or, for ``seed``, a random seed (the one used comes back in the result). Field order is the API's."""

    image: Any = _field(None, "first frame (a file; in Python also a PIL image or uint8 array); empty: text only, "
                        "MOVA's white first frame", str, group="main", media="image")
    prompt: str = _field("", "what is seen and heard: the scene, the motion, the sounds, dialogue in \"quotes\"", str,
                         group="main")
    negative_prompt: str | None = _field(None, "what to steer away from; empty: the model's default negative prompt",
                                         str, model_default=True)
    height: int | None = _field(None, f"frame height, a multiple of {check.SIZE_MULTIPLE}", int,
                                low=check.SIZE_MULTIPLE, high=_MAX_SIDE, group="main", model_default=True)
    width: int | None = _field(None, f"frame width, a multiple of {check.SIZE_MULTIPLE}", int,
                               low=check.SIZE_MULTIPLE, high=_MAX_SIDE, group="main", model_default=True)
    num_frames: int | None = _field(None, f"{check.FRAME_MULTIPLE}k+1 frames", int, low=1, high=check.MAX_FRAMES,
                                    group="main", model_default=True)
    fps: float | None = _field(None, "frames per second (the audio lasts num_frames / fps)", float,
                               low=check.MIN_FPS, high=check.MAX_FPS, group="main", model_default=True)
    num_inference_steps: int | None = _field(None, "denoising steps", int, low=1, high=check.MAX_STEPS,
                                             group="main", model_default=True, flags=("--steps",))
    guidance: str = _field("text", "CFG mode: none (NFE 1), text (2, released MOVA), text+bridge (2), dual (3)", str,
                           choices=GUIDANCE_MODES, group="main")
    text_scale: float | None = _field(None, "s_T, the text guidance scale", float, low=0.0,
                                      high=check.MAX_GUIDANCE_SCALE, group="main", model_default=True)
    bridge_scale: float = _field(1.0, "s_B, the bridge guidance scale of dual CFG", float, low=0.0,
                                 high=check.MAX_GUIDANCE_SCALE, group="main")
    video_shift: float | None = _field(None, "σ shift of the video schedule", float, low=0.0, high=100.0,
                                       low_open=True, model_default=True)
    audio_shift: float | None = _field(None, "σ shift of the audio schedule", float, low=0.0, high=100.0,
                                       low_open=True, model_default=True)
    seed: int | None = _field(None, "noise seed; empty: random (the one used is reported)", int, low=0,
                              high=check.MAX_SEED, group="main")
    loudness_lufs: float | None = _field(-16.0, "integrated loudness target of the audio; empty: as decoded", float,
                                         low=check.LOUDNESS_RANGE[0], high=check.LOUDNESS_RANGE[1], nullable=True)
    true_peak_db: float = _field(-1.0, "true-peak ceiling of the loudness-normalised audio, dBTP", float, low=-20.0,
                                 high=0.0)
    lora: str | None = _field(None, "a LoRA adapter the app offers; empty: none", str)
    lora_scale: float = _field(1.0, "strength of the LoRA adapter", float, low=0.0, high=2.0)
    bridge_strength: float = _field(1.0, "cross-modal bridge strength: 1 as trained, 0 runs video and audio "
                                    "independently (the bridge ablation)", float, low=0.0, high=1000.0)
    precision: str = _field("bf16", "bf16: exact attention and GEMMs; fp8: e4m3 GEMMs and 8-bit attention in the "
                            "denoiser blocks, faster on Hopper/Ada GPUs, slightly different clips", str,
                            choices=PRECISIONS)
    cache: float = _field(0.0, "step cache threshold: 0 evaluates every step; 0.05-0.3 reuse the last velocity while "
                          "its predicted drift stays below that fraction (fewer denoiser evaluations, slightly "
                          "different clips)", float, low=0.0, high=1.0)
    # Generation modes (mova.modes): what the clip is given besides the prompt, and how it is made of windows
    last_image: Any = _field(None, "last frame (a file; in Python also a PIL image or uint8 array): the clip ends on "
                             "it; empty: a free ending", str, group="main", media="image")
    audio: Any = _field(None, "audio → video: a sound file (wav, mp3, flac, or an mp4's sound) kept as given while "
                        "the picture is generated to match it", str, group="main", media="audio")
    video: Any = _field(None, "video → audio: a video file kept as given (cropped, resized and retimed to the "
                        "clip) while its sound is generated", str, group="main", media="video")
    extend: Any = _field(None, "a clip to continue (an mp4 with sound): num_windows windows of num_frames new "
                         "frames follow it", str, group="main", media="clip")
    retake: Any = _field(None, "a clip (an mp4 with sound) whose span retake_start…retake_end is generated again, "
                         "the rest kept", str, group="main", media="clip")
    retake_start: float | None = _field(None, "start of the retaken span, seconds; empty: the clip's start", float,
                                        low=0.0, high=check.MAX_DURATION_S, group="main")
    retake_end: float | None = _field(None, "end of the retaken span, seconds; empty: the clip's end", float,
                                      low=0.0, high=check.MAX_DURATION_S, group="main")
    retake_modality: str = _field("both", "what a retake generates again: both, video (the sound is kept) or audio "
                                  "(the picture is kept)", str, choices=check.RETAKE_MODALITIES, group="main")
    strength: float = _field(1.0, "how far a retake re-noises its span: 1 generates it anew, less keeps more of the "
                             "original (SDEdit-style variations)", float, low=0.0, high=1.0, low_open=True,
                             group="main")
    num_windows: int = _field(1, "windows generated one after another, each continuing the last: a long clip of "
                              "num_windows × num_frames frames", int, low=1, high=check.MAX_WINDOWS)
    crossfade: str = _field("pixel", "how chained windows are joined where they overlap: pixel (frames and samples "
                            "cross-faded) or latent (the known latents fade out)", str, choices=check.CROSSFADES)

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        for f in dataclasses.fields(self):
            spec = f.metadata["setting"]
            put(f.name, _coerce(f.name, getattr(self, f.name), spec, f.default is None or spec.nullable))
        # Fields that need each other
        check.prompt("prompt", self.prompt)
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and value % check.SIZE_MULTIPLE:
                raise ValueError(f"{name}={value} is invalid: expected a positive multiple of {check.SIZE_MULTIPLE}")
        if self.height is not None and self.width is not None and self.height * self.width > check.MAX_PIXELS_PER_FRAME:
            raise ValueError(f"height×width={self.height}×{self.width} is too large: at most "
                             f"{check.MAX_PIXELS_PER_FRAME} pixels per frame (720×1280 is MOVA's largest trained size)")
        if self.num_frames is not None and (self.num_frames - 1) % check.FRAME_MULTIPLE:
            raise ValueError(f"num_frames={self.num_frames} is invalid: expected {check.FRAME_MULTIPLE}k+1 "
                             "(e.g. 9, 97, 121, 193)")
        if self.num_frames is not None and self.fps is not None:
            check.clip_duration(self.num_frames, self.fps)
        self._check_modes()

    def _check_modes(self) -> None:
        """The mode inputs that exclude or need each other (what depends on the files is ``mova.modes``')."""
        given = [name for name in ("audio", "video", "extend", "retake") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"{given[1]} cannot be combined with {given[0]}: give one of audio (audio → video), "
                             "video (video → audio), extend or retake")
        source = given[0] if given else None
        if self.image is not None and source in ("video", "extend", "retake"):
            raise ValueError(f"image cannot be combined with {source}: the first frame is the given clip's own")
        if self.last_image is not None and source in ("video", "retake"):
            raise ValueError(f"last_image cannot be combined with {source}: the given clip's frames are kept")
        if self.retake is None:
            for name, unset in (("retake_start", None), ("retake_end", None), ("retake_modality", "both"),
                                ("strength", 1.0)):
                if getattr(self, name) != unset:
                    raise ValueError(f"{name}={getattr(self, name)!r} needs a clip to retake: give retake (a clip)")
        if self.retake_start is not None and self.retake_end is not None and self.retake_start >= self.retake_end:
            raise ValueError(f"retake_start={self.retake_start:g} is invalid: expected a start before "
                             f"retake_end={self.retake_end:g}")
        if self.num_windows > 1 and source in ("retake",):
            raise ValueError(f"num_windows={self.num_windows} is invalid with retake: a retake runs one window "
                             "(expected 1)")

    # derived ----------------------------------------------------------------------------------------------------

    @property
    def guidance_config(self) -> Guidance:
        """The CFG of these settings (s_T 5, MOVA's released value, when ``text_scale`` is still unresolved)."""
        return Guidance(self.guidance, Guidance().text_scale if self.text_scale is None else self.text_scale,
                        self.bridge_scale)

    @property
    def kind(self) -> str:
        """The generation mode: ``retake``, ``extend``, ``v2a`` (video given), ``a2v`` (audio given), ``flf2va`` (a
        last frame), else ``it2va`` with a first frame and ``t2va`` without."""
        for name, kind in (("retake", "retake"), ("extend", "extend"), ("video", "v2a"), ("audio", "a2v"),
                           ("last_image", "flf2va"), ("image", "it2va")):
            if getattr(self, name) is not None:
                return kind
        return "t2va"

    @property
    def nfe(self) -> int | None:
        """Denoiser evaluations of the whole run (windows × steps × the guidance mode's branches); ``None`` until
        resolved."""
        if self.num_inference_steps is None:
            return None
        return self.num_windows * self.num_inference_steps * self.guidance_config.nfe

    def replace(self, **changes: Any) -> GenerationSettings:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a media input by its file name (never a server path), an in-memory one as ``"<image>"``,
        ``"<audio>"``, ``"<video>"`` or ``"<clip>"``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for f in dataclasses.fields(self):
            media, value = f.metadata["setting"].media, out[f.name]
            if media is not None and value is not None:
                out[f.name] = Path(value).name if isinstance(value, str) else f"<{media}>"
        return out

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> GenerationSettings:
        """Settings from a mapping (a form, an API call, a sidecar); other keys are refused by name."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}: allowed are {sorted(names)}")
        return cls(**values)


def setting_fields() -> list[tuple[str, Any, Setting]]:
    """(name, default, declaration) of every setting, in API order: what forms, CLI flags and specs are built from."""
    return [(f.name, f.default, f.metadata["setting"]) for f in dataclasses.fields(GenerationSettings)]


def _coerce(name: str, value: Any, spec: Setting, optional: bool) -> Any:
    """One field's value, normalised and checked against its declaration."""
    if spec.media is not None:
        return _media(name, value, spec.media)
    if spec.kind is str:
        if value is None or (optional and isinstance(value, str) and not value.strip()):
            if not optional:
                raise ValueError(f"{name} is missing: expected {spec.allowed()}")
            return None
        if not isinstance(value, str) or (spec.choices and value not in spec.choices):
            raise ValueError(f"{name}={value!r} is invalid: expected {spec.allowed()}")
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise ValueError(f"{name} is missing: expected {spec.allowed()}")
    if spec.kind is bool:
        return check.boolean(name, value)
    if spec.kind is int:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) \
            and float(value) == int(value)
        if not ok or not spec.low <= int(value) <= spec.high:
            raise ValueError(f"{name}={value!r} is invalid: expected {spec.allowed()}")
        return int(value)
    return check.real(name, value, spec.low, spec.high, low_open=spec.low_open)


MEDIA_KINDS = {  # what a media field takes in Python besides a file path
    "image": "a PIL image or a uint8 array [H, W, 3]",
    "audio": "a (samples float [N], sample_rate) pair",
    "video": "uint8 frames [T, H, W, 3] at the settings' fps",
    "clip": "a GenerationResult (or anything with video, fps, audio and sample_rate)",
}


def _media(name: str, value: Any, kind: str) -> Any:
    """A media input: a path that exists, or the in-memory forms of :data:`MEDIA_KINDS` (decoded by mova.modes)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        if not Path(value).is_file():
            raise ValueError(f"{name} is invalid: no such file ({Path(value).name!r})")
        return value
    ok = {
        "image": lambda v: hasattr(v, "convert") or hasattr(v, "__array__"),
        "audio": lambda v: isinstance(v, tuple) and len(v) == 2 and hasattr(v[0], "__array__")
        and isinstance(v[1], numbers.Integral) and not isinstance(v[1], bool) and v[1] > 0,
        "video": lambda v: hasattr(v, "__array__") and getattr(v, "ndim", 0) == 4,
        "clip": lambda v: all(hasattr(v, a) for a in ("video", "fps", "audio", "sample_rate")),
    }[kind]
    if not ok(value):
        raise ValueError(f"{name}={type(value).__name__} is invalid: expected a file path, {MEDIA_KINDS[kind]} or "
                         "nothing")
    return value


# ----------------------------------------------------------------------------------------------------------------
# What a loaded model supports
# ----------------------------------------------------------------------------------------------------------------

WORK_STEPS, WORK_NFE = 100, 3  # the default work ceiling: the largest size and clip at 100 steps of dual CFG


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model's facts: its defaults (which fill unset settings), presets for the UI, and the ceilings every
    request is checked against before it is queued.

    ``max_work`` bounds height × width × num_frames × num_inference_steps × NFE per step × num_windows (what GPU
    time scales with); ``max_duration_s`` bounds num_frames / fps (the length of the generated audio too).
    """

    name: str
    resolutions: tuple[tuple[int, int], ...]  # (height, width) presets, the default first
    default_num_frames: int
    max_num_frames: int
    default_fps: float
    default_num_inference_steps: int
    default_guidance: Guidance = Guidance()
    default_negative_prompt: str = ""
    default_shift: float | None = None  # the scheduler config's shift (both modalities); None when exponential
    size_multiple: int = check.SIZE_MULTIPLE
    frame_multiple: int = check.FRAME_MULTIPLE
    sample_rate: int = 48000
    guidance_modes: tuple[str, ...] = GUIDANCE_MODES
    lora_adapters: tuple[str, ...] = ()
    max_pixels: int = check.MAX_PIXELS_PER_FRAME
    max_duration_s: float = check.MAX_DURATION_S
    max_work: float | None = None
    # where and how it runs (set by the backend)
    backend: str = "python"
    device: str = "cpu"
    offload: str = "none"
    max_gpu_seconds: float | None = None  # ZeroGPU: the longest GPU task the Space grants
    unavailable_precisions: tuple[tuple[str, str], ...] = ()  # (precision, why) this device cannot run

    @property
    def default_height(self) -> int:
        return self.resolutions[0][0]

    @property
    def default_width(self) -> int:
        return self.resolutions[0][1]

    @property
    def has_lora(self) -> bool:
        return bool(self.lora_adapters)

    def model_defaults(self) -> dict[str, Any]:
        """The model's value of each setting declared ``model_default`` (``None`` where the model has no single
        value: the shifts of a scheduler with exponential shifting). The negative prompt is left out: it stays
        ``None`` in the settings, since the model's may be empty text (see :meth:`negative_prompt`)."""
        return dict(height=self.default_height, width=self.default_width, num_frames=self.default_num_frames,
                    fps=self.default_fps, num_inference_steps=self.default_num_inference_steps,
                    text_scale=self.default_guidance.text_scale, video_shift=self.default_shift,
                    audio_shift=self.default_shift)

    def resolve(self, settings: GenerationSettings) -> GenerationSettings:
        """``settings`` with the model's defaults (:meth:`model_defaults`) filled in where they are unset."""
        changes = {k: v for k, v in self.model_defaults().items() if v is not None and getattr(settings, k) is None}
        return settings.replace(**changes) if changes else settings

    def negative_prompt(self, settings: GenerationSettings) -> str:
        """The negative prompt a generation uses: the settings', else the model's default."""
        return self.default_negative_prompt if settings.negative_prompt is None else settings.negative_prompt

    def check(self, settings: GenerationSettings) -> GenerationSettings:
        """Resolve ``settings`` and refuse what this model cannot or should not run (``ValueError`` naming the
        field and what is allowed). Returns the resolved settings."""
        s = self.resolve(settings)
        for name in ("height", "width"):
            value = getattr(s, name)
            if value % self.size_multiple:
                raise ValueError(f"{name}={value} is invalid for {self.name}: expected a multiple of "
                                 f"{self.size_multiple}")
        if (s.num_frames - 1) % self.frame_multiple:
            raise ValueError(f"num_frames={s.num_frames} is invalid for {self.name}: expected "
                             f"{self.frame_multiple}k+1")
        if s.num_frames > self.max_num_frames:
            raise ValueError(f"num_frames={s.num_frames} is invalid for {self.name}: at most {self.max_num_frames}")
        if s.height * s.width > self.max_pixels:
            sizes = ", ".join(f"{h}×{w}" for h, w in self.resolutions)
            raise ValueError(f"height×width={s.height}×{s.width} is too large for {self.name}: at most "
                             f"{self.max_pixels} pixels per frame (its sizes: {sizes})")
        check.clip_duration(s.num_frames, s.fps, self.max_duration_s)
        work = float(s.height * s.width * s.num_frames * s.nfe)
        if self.max_work is not None and work > self.max_work:
            raise ValueError(
                f"num_inference_steps={s.num_inference_steps} is too much work for {self.name} at this size and "
                f"length: height×width×num_frames×num_inference_steps×NFE×num_windows = {s.height}×{s.width}×"
                f"{s.num_frames}×{s.num_inference_steps}×{s.guidance_config.nfe}×{s.num_windows} = {work:.3g}, at "
                f"most {self.max_work:.3g}: lower num_inference_steps, num_frames, num_windows or the size")
        for precision, why in self.unavailable_precisions:
            if s.precision == precision:
                raise ValueError(f"precision={precision!r} is unavailable here: {why}; use precision='bf16'")
        if s.lora is not None and s.lora not in self.lora_adapters:
            allowed = list(self.lora_adapters) or "none (this model has no LoRA adapters)"
            raise ValueError(f"lora={s.lora!r} is invalid: allowed adapters are {allowed}")
        return s

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["default_guidance"] = dataclasses.asdict(self.default_guidance)
        return out
