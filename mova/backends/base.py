"""The one interface between the app and a MOVA model: responses, model facts, and the Backend ABC.

Nothing here imports torch: the UI builds :class:`~mova.backends.request.GenerationRequest` objects and reads
:class:`GenerationResponse` and :class:`ModelInfo`, while the concrete backends (``mova.backends.local``,
``mova.backends.zerogpu``) load the pipeline. Field names are the contract words of ``shared/design.md``
(``num_frames``, ``fps``, ``num_inference_steps``, ``text_scale``, ``bridge_scale``, ``seed``...). Invalid values
raise ``ValueError`` naming the field, the value and what is allowed; the UI shows that text as a message.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as _dt
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mova.arena.paths import resolve_data_dir
from mova import outputs
from mova import validation as check
from mova.backends.request import (
    FRAME_MULTIPLE,
    MAX_DURATION_S,
    MAX_IMAGE_PIXELS,
    MAX_PIXELS_PER_FRAME,
    MAX_SEED,
    SIZE_MULTIPLE,
    GenerationRequest,
)
from mova.guidance import GUIDANCE_MODES, Guidance
from mova.outputs import OutputsPolicy

if TYPE_CHECKING:  # pragma: no cover
    from mova.pipeline import GenerationResult, MOVAPipeline
    from mova.prompting import FrameDescription, PromptProvider, Rewrite

logger = logging.getLogger(__name__)

__all__ = [
    "Backend",
    "GenerationRequest",
    "GenerationResponse",
    "ModelInfo",
    "ModelUnavailableError",
    "ProgressFn",
    "MAX_SEED",
    "resolve_data_dir",
]

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total), the pipeline's callback type
WORK_STEPS, WORK_NFE = 100, 3  # the default work ceiling: the largest size and clip at 100 steps of dual CFG


class ModelUnavailableError(RuntimeError):
    """The requested checkpoint cannot be loaded (missing folder, missing demo checkpoint). ``str`` says what to
    pass instead, for a start-up message."""


# ----------------------------------------------------------------------------------------------------------------
# Response and model facts
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class GenerationResponse:
    """A finished clip on disk with its figures.

    ``av_offset_frames``: audio-visual offset (``mova.eval.av_offset``), video frames, positive = audio late;
    ``None`` when undefined (no motion or no onsets). ``loudness_lufs``: integrated loudness of the written
    audio, ``None`` for silence. ``timings``: seconds per pipeline stage plus ``total`` and ``wall`` (incl. muxing).
    """

    video_path: str
    seed: int
    nfe: int
    timings: dict[str, float]
    av_offset_frames: float | None
    loudness_lufs: float | None
    fps: float
    num_frames: int
    height: int
    width: int
    sample_rate: int
    settings: dict[str, Any] = field(default_factory=dict)
    sidecar_path: str | None = None
    warnings: list[str] = field(default_factory=list)  # for the user (e.g. prompt text the model cannot read)

    @property
    def av_offset_ms(self) -> float | None:
        return None if self.av_offset_frames is None else 1000.0 * self.av_offset_frames / self.fps

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe and fit to show anyone: files by name within the outputs folder, never a server path."""
        out = dataclasses.asdict(self)
        out["video_path"] = Path(self.video_path).name
        out["sidecar_path"] = None if self.sidecar_path is None else Path(self.sidecar_path).name
        out["av_offset_ms"] = self.av_offset_ms
        out["duration_s"] = self.duration_s
        return out


@dataclass(frozen=True)
class ModelInfo:
    """What the UI needs to know about the loaded model to offer valid controls."""

    name: str
    backend: str
    resolutions: tuple[tuple[int, int], ...]  # (height, width) presets, the default first
    default_num_frames: int
    max_num_frames: int
    default_fps: float
    default_num_inference_steps: int
    size_multiple: int = SIZE_MULTIPLE
    frame_multiple: int = FRAME_MULTIPLE
    default_shift: float | None = None  # the scheduler config's shift (both modalities)
    sample_rate: int = 48000
    guidance_modes: tuple[str, ...] = GUIDANCE_MODES
    default_guidance: Guidance = Guidance()
    lora_adapters: tuple[str, ...] = ()
    device: str = "cpu"
    offload: str = "none"
    max_gpu_seconds: float | None = None  # ZeroGPU: the longest GPU task the Space grants
    # Cost ceilings of one clip, checked before a request is queued (Backend.check):
    max_pixels: int = MAX_PIXELS_PER_FRAME  # height × width
    max_duration_s: float = MAX_DURATION_S  # num_frames / fps, the length of the generated audio too
    max_work: float | None = None  # height × width × num_frames × num_inference_steps × NFE; None: no ceiling

    @staticmethod
    def work(request: GenerationRequest) -> float:
        """The denoising work of ``request``: pixels × frames × steps × NFE per step (``request.nfe`` counts the
        steps too), what the GPU time scales with."""
        return float(request.height * request.width * request.num_frames * request.nfe)

    @property
    def default_height(self) -> int:
        return self.resolutions[0][0]

    @property
    def default_width(self) -> int:
        return self.resolutions[0][1]

    @property
    def has_lora(self) -> bool:
        return bool(self.lora_adapters)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["default_guidance"] = dataclasses.asdict(self.default_guidance)
        return out


def model_info_from_pipeline(pipe: MOVAPipeline, *, backend: str, name: str | None = None,
                             max_gpu_seconds: float | None = None) -> ModelInfo:
    """Presets and defaults from a loaded pipeline.

    Resolution presets: ``model_index.json`` ``resolutions`` (``"352x640,640x352"``, or a list of [h, w] pairs), else
    by name — 720p → 720×1280 / 1280×720, 360p (or no declared default size) → 352×640 / 640×352 — else only the
    declared default size (``default_height`` × ``default_width``, e.g. the demo checkpoint's own). The default size
    always comes first.
    """
    index = pipe.model_index
    default = tuple(int(v) for v in pipe.default_size())
    presets = _declared_resolutions(index.get("resolutions"))
    if not presets:
        tag = f"{name or pipe.name} {index.get('_name_or_path', '')}"
        if "720" in tag:
            presets = [(720, 1280), (1280, 720)]
        elif "360" in tag or "default_height" not in index:
            presets = [(352, 640), (640, 352)]
    presets = [default] + [p for p in presets if p != default]
    frames, fps = pipe.default_num_frames_fps()
    max_frames = max(int(frames), int(index.get("max_num_frames", frames)))
    max_pixels = int(_declared_limit(index, "max_pixels", max(h * w for h, w in presets), MAX_PIXELS_PER_FRAME))
    max_duration = _declared_limit(index, "max_duration_s", min(MAX_DURATION_S, 2.0 * frames / fps), MAX_DURATION_S)
    max_work = _declared_limit(index, "max_work", float(max_pixels * max_frames * WORK_STEPS * WORK_NFE), math.inf)
    shift = getattr(getattr(pipe.scheduler, "config", None), "shift", None)
    return ModelInfo(
        name=name or pipe.name or str(index.get("_name_or_path", "model")),
        backend=backend,
        resolutions=tuple(presets),
        default_num_frames=int(frames),
        max_num_frames=max_frames,
        default_fps=float(fps),
        default_num_inference_steps=int(index.get("default_num_inference_steps", 50)),
        size_multiple=int(pipe.size_multiple),
        frame_multiple=int(pipe.vae_scale_temporal),
        default_shift=None if shift is None else float(shift),
        default_guidance=pipe.default_guidance(),
        sample_rate=int(pipe.audio_sample_rate),
        lora_adapters=_declared_names(index.get("lora_adapters")),
        device=str(pipe.device),
        offload=pipe.offload,
        max_gpu_seconds=max_gpu_seconds,
        max_pixels=max_pixels,
        max_duration_s=max_duration,
        max_work=max_work,
    )


def _declared_limit(index: dict[str, Any], key: str, default: float, ceiling: float) -> float:
    """A cost ceiling from ``model_index.json`` (an operator may raise or lower it), else ``default``."""
    if key not in index:
        return default
    return check.real(f"model_index.json {key}", index[key], 0.0, ceiling, low_open=True)


# ----------------------------------------------------------------------------------------------------------------
# Backend
# ----------------------------------------------------------------------------------------------------------------


class Backend(abc.ABC):
    """Generation and prompting behind one interface; the UI holds one instance and calls only these methods.

    Subclasses implement :meth:`model_info` and :meth:`_run` (one pipeline call, returning a ``GenerationResult``);
    :meth:`generate` validates, runs, writes the mp4 and its sidecar JSON under ``<data_dir>/outputs`` and measures
    the clip. ``concurrency_limit`` is how many GPU jobs the UI may run at once with this backend.
    """

    name: str = "backend"
    concurrency_limit: int = 1

    def __init__(self, *, data_dir: str | os.PathLike | None = None,
                 prompt_provider: PromptProvider | str | None = None) -> None:
        self.data_dir = resolve_data_dir(data_dir)
        self.prompt_provider = prompt_provider
        self.outputs_policy = OutputsPolicy.from_env()
        outputs.sweep(self.outputs_dir)

    # facts ------------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def model_info(self) -> ModelInfo:
        """Name, resolution presets, default frames/fps/steps, adapters..."""

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    def allowed_paths(self) -> list[str]:
        """Folders the web server may serve files from (generated clips, example first frames)."""
        return [str(self.outputs_dir), str(self.data_dir / "examples")]

    # generation -------------------------------------------------------------------------------------------------

    def check(self, request: GenerationRequest) -> None:
        """Model-specific limits on top of the request's own validation (ValueError naming the field)."""
        info = self.model_info()
        for name in ("height", "width"):
            value = getattr(request, name)
            if value % info.size_multiple:
                raise ValueError(f"{name}={value} is invalid for {info.name}: expected a multiple of "
                                 f"{info.size_multiple}")
        if (request.num_frames - 1) % info.frame_multiple:
            raise ValueError(f"num_frames={request.num_frames} is invalid for {info.name}: expected "
                             f"{info.frame_multiple}k+1")
        if request.num_frames > info.max_num_frames:
            raise ValueError(f"num_frames={request.num_frames} is invalid for {info.name}: at most "
                             f"{info.max_num_frames}")
        if request.height * request.width > info.max_pixels:
            raise ValueError(f"height×width={request.height}×{request.width} is too large for {info.name}: at most "
                             f"{info.max_pixels} pixels per frame (its sizes: "
                             f"{', '.join(f'{h}×{w}' for h, w in info.resolutions)})")
        check.clip_duration(request.num_frames, request.fps, info.max_duration_s)
        work = info.work(request)
        if info.max_work is not None and work > info.max_work:
            raise ValueError(
                f"this request is too much work for {info.name}: height×width×num_frames×num_inference_steps×NFE = "
                f"{request.height}×{request.width}×{request.num_frames}×{request.num_inference_steps}×"
                f"{request.guidance.nfe} = {work:.3g}, at most {info.max_work:.3g}: lower num_inference_steps, "
                "num_frames or the size")
        if request.lora is not None and request.lora not in info.lora_adapters:
            allowed = list(info.lora_adapters) or "none (this model has no LoRA adapters)"
            raise ValueError(f"lora={request.lora!r} is invalid: allowed adapters are {allowed}")
        request.check_image()

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResponse:
        """Validate, generate, write ``<data_dir>/outputs/<stamp>.mp4`` + ``.json`` and measure the clip.

        Raises ValueError (naming the field) on bad input."""
        if not isinstance(request, GenerationRequest):
            raise ValueError(f"request must be a GenerationRequest, got {type(request).__name__}")
        self.check(request)
        result = self._run(request, progress)
        return self._finish(request, result, progress)

    @abc.abstractmethod
    def _run(self, request: GenerationRequest, progress: ProgressFn | None) -> GenerationResult:
        """One pipeline call for a checked request."""

    def _pipeline_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        """``MOVAPipeline.__call__`` arguments for ``request``."""
        return dict(
            prompt=request.prompt, image=request.image, negative_prompt=request.negative_prompt,
            height=request.height, width=request.width, num_frames=request.num_frames, fps=request.fps,
            num_inference_steps=request.num_inference_steps, guidance=request.guidance, seed=request.seed,
            video_shift=request.video_shift, audio_shift=request.audio_shift, loudness_lufs=request.loudness_lufs,
        )

    def _finish(self, request: GenerationRequest, result: GenerationResult,
                progress: ProgressFn | None) -> GenerationResponse:
        """Measure the clip, then write its mp4 (H.264 + AAC), first frame (a PNG we encode) and sidecar JSON
        together (``mova.outputs.save_clip``), and keep the folder within its policy."""
        from mova import media
        from mova.eval import av_offset

        t0 = time.perf_counter()
        if progress is not None:
            progress("encode", 0, 1)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        stem = f"{stamp}-{request.kind}-{result.seed}-{uuid.uuid4().hex[:8]}"
        first_frame = None
        if request.image is not None:  # as the model saw it: cropped and resized to the clip, re-encoded by us
            from mova.pipeline import center_crop_resize

            first_frame = center_crop_resize(media.load_image(request.image, max_pixels=MAX_IMAGE_PIXELS),
                                             request.height, request.width)
        files = outputs.clip_paths(self.outputs_dir, stem, first_frame=first_frame is not None)
        offset = _finite(av_offset(result.video, result.fps, result.audio, result.sample_rate))
        loudness = _finite(media.integrated_loudness(result.audio, result.sample_rate))
        timings = {k: round(float(v), 4) for k, v in result.timings.items()}
        settings = {**request.to_dict(), "seed": result.seed, "model": self.model_info().name, "backend": self.name,
                    "image": files.first_frame.name if files.first_frame else None}
        response = GenerationResponse(
            video_path=str(files.mp4), seed=int(result.seed), nfe=int(result.nfe), timings=timings,
            av_offset_frames=offset, loudness_lufs=loudness, fps=float(result.fps),
            num_frames=int(result.video.shape[0]), height=int(result.video.shape[1]),
            width=int(result.video.shape[2]), sample_rate=int(result.sample_rate), settings=settings,
            sidecar_path=str(files.sidecar), warnings=list(result.warnings),
        )

        def sidecar() -> dict[str, Any]:  # once the mp4 is encoded: the wall time includes it
            timings["wall"] = round(float(result.timings.get("total", 0.0)) + time.perf_counter() - t0, 4)
            return response.to_dict()

        outputs.save_clip(self.outputs_dir, stem, result.video, result.fps, result.audio, result.sample_rate,
                          sidecar, first_frame)
        outputs.prune(self.outputs_dir, self.outputs_policy, keep=stem)
        if progress is not None:
            progress("encode", 1, 1)
        logger.info("%s %s seed=%d nfe=%d in %.1f s -> %s", self.name, request.kind, result.seed, result.nfe,
                    timings["wall"], files.mp4)
        return response

    # prompting (mova.prompting; no GPU) -------------------------------------------------------------------------

    def describe(self, image: Any) -> FrameDescription:
        """First-frame description (style, cinematography, elements, on-screen text) with pixel facts."""
        from mova.prompting import describe_first_frame

        if image is None or (isinstance(image, str) and not image.strip()):
            raise ValueError("image is missing: upload a first frame to describe")
        if isinstance(image, (str, os.PathLike)):  # decode here: a clear ValueError for a non-image or huge file
            from mova import media

            image = media.load_image(image, max_pixels=MAX_IMAGE_PIXELS)
        return describe_first_frame(image, provider=self.prompt_provider)

    def rewrite(self, prompt: str, description: FrameDescription | str | None = None,
                language: str | None = None) -> Rewrite:
        """The prompt rewritten into MOVA's caption style (dialogue verbatim, an audio paragraph)."""
        from mova.prompting import rewrite

        return rewrite(prompt, description, language or None, provider=self.prompt_provider)

    def first_frame_prompt(self, prompt: str, aspect: str = "16:9") -> Rewrite:
        """No first frame yet: an image prompt for a text-to-image model."""
        from mova.prompting import make_first_frame_prompt

        return make_first_frame_prompt(prompt, aspect, provider=self.prompt_provider)

    def close(self) -> None:
        """Release the model (tests, reloads)."""


def _declared_resolutions(value: Any) -> list[tuple[int, int]]:
    """``"352x640,640x352"`` or ``[[352, 640], [640, 352]]`` → [(352, 640), (640, 352)]; anything else → []."""
    try:
        if isinstance(value, str):
            return [tuple(int(v) for v in item.lower().split("x")) for item in value.split(",") if item.strip()]
        if isinstance(value, (list, tuple)):
            return [(int(h), int(w)) for h, w in value]
    except (TypeError, ValueError):
        logger.warning("model_index.json resolutions=%r is not understood; using the default size", value)
    return []


def _declared_names(value: Any) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b"]`` → ("a", "b"); anything else → ()."""
    if isinstance(value, str):
        return tuple(name.strip() for name in value.split(",") if name.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(name) for name in value)
    return ()


def _finite(value: float) -> float | None:
    value = float(value)
    return round(value, 3) if math.isfinite(value) else None


def resolve_model_folder(model: str | os.PathLike) -> Path:
    """``"demo"`` → the shipped checkpoint folder; else the folder itself. ModelUnavailableError when it holds no
    ``model_index.json``, with what to pass instead."""
    name = os.fspath(model)
    if name == "demo":
        from mova.pipeline import DEMO_DIR

        if not (DEMO_DIR / "model_index.json").is_file():
            raise ModelUnavailableError(
                f"the demo checkpoint is not present at {DEMO_DIR}. Pass a MOVA checkpoint folder with "
                "--model DIR (or set MOVA_MODEL=DIR), e.g. a downloaded MOVA-360p.")
        return DEMO_DIR
    folder = Path(name).expanduser()
    if not (folder / "model_index.json").is_file():
        what = "does not exist" if not folder.exists() else "has no model_index.json"
        raise ModelUnavailableError(
            f"model folder {str(folder)!r} {what}. Pass a MOVA checkpoint folder (official layout, with "
            "model_index.json) with --model DIR or MOVA_MODEL=DIR, or --model demo for the shipped demo checkpoint.")
    return folder
