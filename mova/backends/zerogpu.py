"""ZeroGPUBackend: generation on a Hugging Face ZeroGPU Space (``spaces.GPU`` with a duration per request).

ZeroGPU conventions (https://huggingface.co/docs/hub/spaces-zerogpu):

* ``import spaces`` comes before anything touches CUDA, and the model is loaded to ``"cuda"`` at start-up in the
  main process (``spaces`` defers the real transfer); the Space's entry ``app.py`` builds this backend in
  ``main()``, which a Gradio Space runs at start-up.
* Only the function wrapped by ``spaces.GPU`` holds a GPU. It runs in a forked worker: its arguments and result are
  pickled, so they are resolved :class:`~mova.settings.GenerationSettings`, a picklable progress callable and a
  ``GenerationResult``
  (numpy arrays). Muxing the mp4 and measuring the clip happen after, off the GPU.
* ``duration`` may be a function of the same arguments: :class:`DurationModel` estimates the seconds from
  height × width × num_frames (→ video tokens) × num_inference_steps × NFE, clamped to the Space's limit. A
  request estimated above the limit is refused before it is scheduled, with what to lower.

With ``SPACES_ZERO_GPU`` unset ``spaces.GPU`` returns the function unchanged, so this backend also runs (slowly,
without the GPU scheduler) anywhere, which is how it is tested.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mova.backends.base import Backend, ProgressFn, resolve_model_folder
from mova.settings import GenerationSettings, ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    from mova.pipeline import GenerationResult, MOVAPipeline

logger = logging.getLogger(__name__)

MAX_DURATION_ENV = "MOVA_ZEROGPU_MAX_DURATION"
# The longest task ZeroGPU grants ("5 minutes is the maximum time that can be requested at once",
# huggingface.co/spaces/zero-gpu-explorers/README/discussions/7). Override with $MOVA_ZEROGPU_MAX_DURATION.
ZEROGPU_MAX_DURATION_S = 300.0
MIN_DEFAULT_STEPS = 20  # fitting defaults to the limit shortens the clip first, then lowers steps to this floor


@dataclass(frozen=True)
class DurationModel:
    """Seconds of GPU time one request needs: denoising + decoding + a fixed overhead, times a safety margin.

    Denoising cost per denoiser evaluation is ``a·N + b·N²`` for N video tokens (``(H/16)·(W/16)·((F−1)/4+1)``;
    the linear term is the projections and MLPs, the quadratic one attention), times ``steps × NFE``. ``a`` and ``b``
    solve the two measured full-size MOVA step times on one H200 (bf16, batched CFG, NFE 2,
    ``benchmarks/results/step_time_{360p,720p}_h200.json``): 352×640×193 (43,120 tokens) 11.12 s/step and
    720×1280×193 (176,400 tokens) 112.5 s/step. ``slice_factor`` scales a full H200 to a ZeroGPU slice (an H200
    MIG 3g.71gb: 60 of 132 SMs). Decoding (Wan VAE + DAC) and the text encoder are declared, not measured yet.
    Smaller models (the demo checkpoint) cost less than this estimate, so it errs on the safe side.
    """

    step_linear_s: float = 6.75e-5  # a: seconds per video token per denoiser evaluation (full H200)
    step_quadratic_s: float = 1.425e-9  # b: seconds per token² per denoiser evaluation (full H200)
    slice_factor: float = 2.2  # ZeroGPU slice vs a full H200
    decode_s_per_mpixel_frame: float = 0.5  # VAE + DAC decode on the slice, per million pixel-frames (declared)
    overhead_s: float = 10.0  # text encoder, first-frame VAE encode, transfers (declared)
    margin: float = 1.25  # requested = margin × estimate
    min_s: float = 20.0
    max_s: float = ZEROGPU_MAX_DURATION_S
    token_pixels: int = 16  # VAE ×8 · patch ×2
    token_frames: int = 4  # VAE temporal ×4

    @classmethod
    def from_env(cls) -> DurationModel:
        raw = os.environ.get(MAX_DURATION_ENV)
        if raw in (None, ""):
            return cls()
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{MAX_DURATION_ENV}={raw!r} is invalid: expected seconds > 0")
        return cls(max_s=value)

    def tokens(self, height: int, width: int, num_frames: int) -> int:
        """Video tokens of one denoiser evaluation."""
        t_lat = (num_frames - 1) // self.token_frames + 1
        return (height // self.token_pixels) * (width // self.token_pixels) * t_lat

    def estimate(self, height: int, width: int, num_frames: int, num_inference_steps: int, nfe_per_step: int) -> float:
        """Unclamped seconds, margin included."""
        n = self.tokens(height, width, num_frames)
        per_eval = (self.step_linear_s * n + self.step_quadratic_s * n * n) * self.slice_factor
        denoise = per_eval * num_inference_steps * nfe_per_step
        decode = self.decode_s_per_mpixel_frame * height * width * num_frames / 1e6
        return self.margin * (denoise + decode + self.overhead_s)

    def estimate_settings(self, settings: GenerationSettings) -> float:
        """Unclamped seconds for resolved settings: every window of a long clip or an extension (those that continue
        another are ``mova.modes.overlap_frames`` longer)."""
        from mova.modes import overlap_frames

        s, longer = settings, overlap_frames(settings.num_frames, self.token_frames)
        first = s.num_frames + (longer if s.extend is not None else 0)
        frames = [first] + [s.num_frames + longer] * (s.num_windows - 1)
        return sum(self.estimate(s.height, s.width, n, s.num_inference_steps, s.guidance_config.nfe) for n in frames)

    def __call__(self, settings: GenerationSettings, progress: Any = None) -> int:
        """The ``spaces.GPU(duration=...)`` callable (resolved settings): whole seconds in [min_s, max_s]."""
        return int(min(self.max_s, max(self.min_s, math.ceil(self.estimate_settings(settings)))))


def fit_defaults(info: ModelInfo, durations: DurationModel, *, min_steps: int = MIN_DEFAULT_STEPS) -> ModelInfo:
    """``info`` with default num_frames / steps lowered until the default request fits ``durations.max_s``.

    The clip is shortened first (longest 4k+1 length that fits at ≥ ``min_steps``), then steps are the most that
    fit up to the model's default. Resolution and guidance keep their defaults.
    """
    h, w = info.default_height, info.default_width
    nfe = info.default_guidance.nfe
    steps_default = info.default_num_inference_steps
    floor = min(min_steps, steps_default)

    def fits(frames: int, steps: int) -> bool:
        return durations.estimate(h, w, frames, steps, nfe) <= durations.max_s

    frames = info.default_num_frames
    while frames > 1 and not fits(frames, floor):
        frames -= info.frame_multiple
    steps = steps_default
    while steps > 1 and not fits(frames, steps):
        steps -= 1
    if (frames, steps) != (info.default_num_frames, steps_default):
        logger.info("ZeroGPU defaults for %s: num_frames %d -> %d, num_inference_steps %d -> %d (limit %.0f s)",
                    info.name, info.default_num_frames, frames, steps_default, steps, durations.max_s)
    return dataclasses.replace(info, default_num_frames=frames, default_num_inference_steps=steps,
                               max_gpu_seconds=durations.max_s)


class ZeroGPUBackend(Backend):
    """Generate inside ``spaces.GPU(duration=DurationModel)``; the model is loaded when the backend is built.

    Args:
        model: ``"demo"`` or a checkpoint folder. Ignored when ``pipeline`` is given.
        device: default ``"cuda"`` on ZeroGPU (``spaces`` makes that work before a GPU is attached), else the
            pipeline's default (CUDA when available, else CPU), so the same Space code runs on other hardware.
        durations: the duration model (default :meth:`DurationModel.from_env`).
        loras: LoRA adapters offered by name (``MOVAPipeline.register_lora``).
        pipeline: an already loaded pipeline (tests).
    """

    name = "zerogpu"

    def __init__(self, model: str | os.PathLike = "demo", *, device: str | None = None, data_dir: Any = None,
                 durations: DurationModel | None = None, loras: Any = None,
                 pipeline: MOVAPipeline | None = None) -> None:
        import spaces  # before torch touches CUDA (ZeroGPU patches torch on import)
        from spaces.config import Config

        if device is None and Config.zero_gpu:
            device = "cuda"
        super().__init__(data_dir=data_dir)
        self.durations = durations or DurationModel.from_env()
        if pipeline is None:
            from mova.pipeline import MOVAPipeline

            resolve_model_folder(model)  # a clear start-up error for a missing model
            pipeline = MOVAPipeline.from_pretrained(model, device=device)
        self.pipeline = pipeline
        for name, path in (loras or {}).items():  # loaded in the GPU worker when asked for, like any other backend
            pipeline.register_lora(name, path)
        info = dataclasses.replace(pipeline.model_info(), backend=self.name)
        self._info = fit_defaults(info, self.durations)
        # Inert (returns the bound method itself) unless SPACES_ZERO_GPU is set.
        self._gpu_call = spaces.GPU(duration=self.durations)(self._gpu_generate)

    def model_info(self) -> ModelInfo:
        return self._info

    def check(self, settings: GenerationSettings) -> GenerationSettings:
        resolved = super().check(settings)
        needed = self.durations.estimate_settings(resolved)
        if needed > self.durations.max_s:
            raise ValueError(
                f"this request needs about {needed:.0f} s of GPU time, more than the {self.durations.max_s:.0f} s a "
                f"ZeroGPU task may take: lower num_inference_steps (now {resolved.num_inference_steps}), num_frames "
                f"(now {resolved.num_frames}) or the resolution (now {resolved.height}×{resolved.width})")
        return resolved

    def _run(self, settings: GenerationSettings, progress: ProgressFn | None) -> GenerationResult:
        return self._gpu_call(self._info.resolve(settings), progress)  # resolved: the duration model reads sizes

    def _gpu_generate(self, settings: GenerationSettings, progress: ProgressFn | None = None) -> GenerationResult:
        """The GPU task (a forked worker on ZeroGPU). A ValueError becomes a gr.Error there, since the worker
        reports other exceptions by class name only."""
        try:
            return self.pipeline(settings, progress=progress)
        except ValueError as exc:
            from spaces.config import Config

            if not Config.zero_gpu:
                raise
            import gradio as gr

            raise gr.Error(str(exc), print_exception=False) from None

    def close(self) -> None:
        self.pipeline = None  # type: ignore[assignment]
