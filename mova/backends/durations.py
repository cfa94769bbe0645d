"""How many seconds of GPU one request needs on a ZeroGPU slice: ``spaces.GPU(duration=...)``, the pre-queue refusal
of requests that cannot fit, the Space's default settings and the cost the UI shows before Generate.

The model sums the pipeline's stages — text encoder, first-frame encode, denoising (steps × NFE denoiser
evaluations), Wan VAE decode, DAC decode — from **measured** whole-clip stage times on a full H200
(``benchmarks/clip_time.py`` writes ``benchmarks/results/clip_time_h200.json``), scaled to the request and by
``slice_factor`` to the slice, plus the task start. Without that file (or with ``$MOVA_ZEROGPU_FIGURES`` naming
none) it falls back to :class:`DeclaredCosts`, whose step times come from measured denoising steps
(``benchmarks/results/step_time_{360p,720p}_h200.json``) but whose text, encode and decode costs are declared, and
says so in the log and in :attr:`DurationModel.source`.

Scaling from a measured clip to a request: one denoiser evaluation costs ``a·N + b·N²`` for N video tokens
(projections and MLPs linear, attention quadratic), with ``a, b`` fitted to the measured clips (one clip: the
declared ``a : b`` shape through it); the first-frame encode and the VAE decode scale with height × width ×
num_frames (the conditioning clip is num_frames long), the DAC decode with the audio's length (num_frames / fps),
and the text encoder is fixed (prompts are padded to the model's sequence length). Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mova.settings import GenerationSettings, ModelInfo

logger = logging.getLogger(__name__)

MAX_DURATION_ENV = "MOVA_ZEROGPU_MAX_DURATION"
FIGURES_ENV = "MOVA_ZEROGPU_FIGURES"
# Where benchmarks/clip_time.py's H200 run is kept in a checkout; an installed mova has none (declared fallback).
DEFAULT_FIGURES = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "clip_time_h200.json"
# The longest task ZeroGPU grants ("5 minutes is the maximum time that can be requested at once",
# huggingface.co/spaces/zero-gpu-explorers/README/discussions/7). Override with $MOVA_ZEROGPU_MAX_DURATION.
ZEROGPU_MAX_DURATION_S = 300.0
DEFAULT_REQUEST_TARGET_S = 240.0  # a default request is fitted to this, leaving headroom under the cap
MIN_DEFAULT_STEPS = 20  # fitting defaults to the limit shortens the clip first, then lowers steps to this floor
# The measured figures' denoiser runs compiled with FlashAttention-3. A Space may run it otherwise: cuDNN attention
# where fa3-fwd is not installed (it is not in requirements.txt), eager where the AoT compile did not go through.
# Step time against the figures', keyed (compiled, FA3), from one H200 run of all four (benchmarks/step_time.py,
# benchmarks/results/step_time_360p_fa3_h200.json: 8.2177, 9.1373, 10.0261, 10.86 s/step at 360p). The eager
# figures predate the eager-path fusion (eager FA3 is now 9.19 s/step), so eager estimates err long, never short.
DENOISER_FACTORS = {(True, True): 1.0, (True, False): 9.1373 / 8.2177, (False, True): 10.0261 / 8.2177,
                    (False, False): 10.86 / 8.2177}


@dataclass(frozen=True)
class DeclaredCosts:
    """The fallback when no whole-clip measurement exists. ``step_linear_s`` / ``step_quadratic_s`` (``a``, ``b``,
    one denoiser evaluation on a full H200) solve the two measured full-size step times (bf16, batched text CFG,
    NFE 2, ``benchmarks/results/step_time_{360p,720p}_h200.json``): 352×640×193 (43,120 tokens) 11.12 s/step and
    720×1280×193 (176,400 tokens) 112.5 s/step. The rest is declared, not measured, and already on the slice."""

    step_linear_s: float = 6.75e-5  # a: seconds per video token per denoiser evaluation (full H200)
    step_quadratic_s: float = 1.425e-9  # b: seconds per token² per denoiser evaluation (full H200)
    decode_s_per_mpixel_frame: float = 0.5  # VAE + DAC decode on the slice, per million pixel-frames (declared)
    text_and_encode_s: float = 10.0  # text encoder, first-frame VAE encode and transfers on the slice (declared)

    def eval_s(self, tokens: int) -> float:
        return self.step_linear_s * tokens + self.step_quadratic_s * tokens * tokens


@dataclass(frozen=True)
class MeasuredClip:
    """One whole clip's stage times on a full H200 (a ``benchmarks/clip_time.py`` run) and the request it ran."""

    height: int
    width: int
    num_frames: int
    fps: float
    nfe: int
    video_tokens: int
    text_s: float  # the text encoder (prompt and negative prompt)
    encode_s: float  # the first-frame condition (VAE encode of the num_frames-long conditioning clip)
    step_s: float  # one denoising step (median), i.e. nfe denoiser evaluations
    vae_decode_s: float
    dac_decode_s: float

    @property
    def eval_s(self) -> float:
        return self.step_s / self.nfe

    @property
    def pixel_frames(self) -> int:
        return self.height * self.width * self.num_frames

    @property
    def audio_s(self) -> float:
        return self.num_frames / self.fps

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MeasuredClip:
        """From one run of ``clip_time.py``'s JSON (``stages_s`` holds the stage seconds)."""
        stages = record["stages_s"]
        return cls(height=int(record["height"]), width=int(record["width"]), num_frames=int(record["num_frames"]),
                   fps=float(record["fps"]), nfe=int(record["nfe"]), video_tokens=int(record["video_tokens"]),
                   text_s=float(stages["text"]), encode_s=float(stages["encode"]), step_s=float(record["step_s"]),
                   vae_decode_s=float(stages["vae_decode"]), dac_decode_s=float(stages["dac_decode"]))


def read_measured_clips(path: str | os.PathLike) -> tuple[MeasuredClip, ...]:
    """The successful runs of a ``clip_time.py`` results file. Raises OSError / ValueError / KeyError for a missing
    or malformed file, ValueError when it holds no successful run."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    clips = tuple(MeasuredClip.from_record(run) for run in data["runs"] if run.get("status") == "ok")
    if not clips:
        raise ValueError(f"{path} holds no successful run")
    return clips


@dataclass(frozen=True)
class DurationModel:
    """Seconds of GPU time one request needs on the slice: the stages (module docstring) times ``margin``.

    ``measured``: whole-clip stage times on a full H200 (empty: the :class:`DeclaredCosts` fallback).
    ``slice_factor`` scales a full H200 to a ZeroGPU slice (an H200 MIG 3g.71gb: 60 of its 132 SMs, so 132/60 ≈ 2.2
    for compute-bound work). ``task_start_s`` is the worker's start and the weights' move to the GPU (declared).
    ``denoise_factor`` scales the measured denoising to the denoiser the Space runs (:meth:`for_denoiser`).
    """

    measured: tuple[MeasuredClip, ...] = ()
    declared: DeclaredCosts = DeclaredCosts()
    source: str = "declared"  # the figures file, or "declared"
    slice_factor: float = 2.2
    task_start_s: float = 5.0  # with measured figures only (the declared fixed cost includes it)
    margin: float = 1.25  # requested = margin × estimate
    denoise_factor: float = 1.0  # the Space's denoiser step time against the measured figures' (DENOISER_FACTORS)
    min_s: float = 20.0
    max_s: float = ZEROGPU_MAX_DURATION_S
    default_target_s: float = DEFAULT_REQUEST_TARGET_S
    token_pixels: int = 16  # VAE ×8 · patch ×2
    token_frames: int = 4  # VAE temporal ×4

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **overrides: Any) -> DurationModel:
        """The model with the measured figures in ``path`` (default :data:`DEFAULT_FIGURES`); the declared
        fallback, with the reason logged, when the file is missing or unreadable."""
        path = Path(path) if path is not None else DEFAULT_FIGURES
        try:
            clips = read_measured_clips(path)
        except FileNotFoundError:
            logger.warning("ZeroGPU durations: no measured stage times at %s (run benchmarks/clip_time.py on an "
                           "H200): using the declared costs", path)
            return cls(**overrides)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ZeroGPU durations: %s is unusable (%s: %s): using the declared costs", path,
                           type(exc).__name__, exc)
            return cls(**overrides)
        logger.info("ZeroGPU durations from %d measured clip(s) in %s", len(clips), path)
        return cls(measured=clips, source=str(path), **overrides)

    @classmethod
    def from_result(cls, settings: GenerationSettings, timings: dict[str, float]) -> DurationModel:
        """A model of this machine from one generated clip: its resolved ``settings`` and the pipeline's
        ``timings`` (text, condition, denoise, decode; the decode is VAE and DAC together), with nothing added
        (slice factor and margin 1, no task start)."""
        clip = MeasuredClip(
            height=settings.height, width=settings.width, num_frames=settings.num_frames, fps=float(settings.fps),
            nfe=settings.guidance_config.nfe, video_tokens=cls().tokens(settings.height, settings.width,
                                                                          settings.num_frames),
            text_s=timings["text"], encode_s=timings["condition"],
            step_s=timings["denoise"] / max(settings.num_inference_steps, 1), vae_decode_s=timings["decode"],
            dac_decode_s=0.0)
        return cls(measured=(clip,), source="the latest clip", slice_factor=1.0, margin=1.0, task_start_s=0.0)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> DurationModel:
        """:meth:`load` with ``$MOVA_ZEROGPU_FIGURES`` (a results file) and ``$MOVA_ZEROGPU_MAX_DURATION``
        (seconds > 0)."""
        env = os.environ if env is None else env
        overrides = {}
        raw = env.get(MAX_DURATION_ENV)
        if raw not in (None, ""):
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{MAX_DURATION_ENV}={raw!r} is invalid: expected seconds > 0")
            overrides["max_s"] = value
        return cls.load(env.get(FIGURES_ENV) or None, **overrides)

    def for_denoiser(self, *, compiled: bool, fa3: bool) -> DurationModel:
        """This model for a denoiser that runs ``compiled`` (AoT on a Space) or eager, with FlashAttention-3 or
        cuDNN attention (the measured figures' is compiled with FA3; the declared fallback's costs already are
        eager cuDNN steps)."""
        return dataclasses.replace(self, denoise_factor=DENOISER_FACTORS[(compiled, fa3)] if self.measured else 1.0)

    def tokens(self, height: int, width: int, num_frames: int) -> int:
        """Video tokens of one denoiser evaluation."""
        t_lat = (num_frames - 1) // self.token_frames + 1
        return (height // self.token_pixels) * (width // self.token_pixels) * t_lat

    def eval_s(self, tokens: int) -> float:
        """One denoiser evaluation on a full H200: ``a·N + b·N²`` fitted to the measured clips (least squares for
        two or more token counts; one clip scales the declared shape through it), else the declared one."""
        points = {clip.video_tokens: clip.eval_s for clip in self.measured}
        if len(points) >= 2:
            # normal equations of eval = a·N + b·N² over the measured points
            s11 = sum(n**2 for n in points)
            s12 = sum(n**3 for n in points)
            s22 = sum(n**4 for n in points)
            y1 = sum(n * e for n, e in points.items())
            y2 = sum(n * n * e for n, e in points.items())
            det = s11 * s22 - s12 * s12
            a, b = (y1 * s22 - y2 * s12) / det, (s11 * y2 - s12 * y1) / det
            return a * tokens + b * tokens * tokens
        if points:
            (n1, e1), = points.items()
            return e1 * self.declared.eval_s(tokens) / self.declared.eval_s(n1)
        return self.declared.eval_s(tokens)

    def _nearest(self, pixel_frames: int) -> MeasuredClip:
        return min(self.measured, key=lambda clip: abs(math.log(clip.pixel_frames / max(pixel_frames, 1))))

    def stages(self, height: int, width: int, num_frames: int, num_inference_steps: int, nfe_per_step: int,
               fps: float | None = None) -> dict[str, float]:
        """Seconds per stage on the slice (margin not included): ``text``, ``encode``, ``denoise``, ``vae_decode``,
        ``dac_decode``, ``task_start`` from measured clips, or ``denoise``, ``decode``, ``fixed`` from the declared
        costs. ``fps`` sets the audio's length (default: the nearest measured clip's)."""
        denoise = self.eval_s(self.tokens(height, width, num_frames)) * num_inference_steps * nfe_per_step
        pixel_frames = height * width * num_frames
        if not self.measured:
            decode = self.declared.decode_s_per_mpixel_frame * pixel_frames / 1e6
            return {"denoise": denoise * self.slice_factor, "decode": decode,
                    "fixed": self.declared.text_and_encode_s}
        clip = self._nearest(pixel_frames)
        scale = pixel_frames / clip.pixel_frames
        audio_s = num_frames / (fps or clip.fps)
        on_h200 = {"text": clip.text_s, "encode": clip.encode_s * scale, "denoise": denoise * self.denoise_factor,
                   "vae_decode": clip.vae_decode_s * scale, "dac_decode": clip.dac_decode_s * audio_s / clip.audio_s}
        return {**{k: v * self.slice_factor for k, v in on_h200.items()}, "task_start": self.task_start_s}

    def estimate(self, height: int, width: int, num_frames: int, num_inference_steps: int, nfe_per_step: int,
                 fps: float | None = None) -> float:
        """Unclamped seconds, margin included."""
        return self.margin * sum(self.stages(height, width, num_frames, num_inference_steps, nfe_per_step,
                                             fps).values())

    def estimate_settings(self, settings: GenerationSettings) -> float:
        """Unclamped seconds for resolved settings: every window of a long clip or an extension (those that continue
        another are ``mova.modes.overlap_frames`` longer)."""
        from mova.modes import overlap_frames

        s, longer = settings, overlap_frames(settings.num_frames, self.token_frames)
        first = s.num_frames + (longer if s.extend is not None else 0)
        frames = [first] + [s.num_frames + longer] * (s.num_windows - 1)
        return sum(self.estimate(s.height, s.width, n, s.num_inference_steps, s.guidance_config.nfe, s.fps)
                   for n in frames)

    def __call__(self, settings: GenerationSettings, progress: Any = None) -> int:
        """The ``spaces.GPU(duration=...)`` callable (resolved settings): whole seconds in [min_s, max_s]."""
        return int(min(self.max_s, max(self.min_s, math.ceil(self.estimate_settings(settings)))))


def fit_defaults(info: ModelInfo, durations: DurationModel, *, min_steps: int = MIN_DEFAULT_STEPS) -> ModelInfo:
    """``info`` with default num_frames / steps lowered until the default request is estimated within
    ``durations.default_target_s`` (at most ``max_s``).

    The clip is shortened first (longest 4k+1 length that fits at ≥ ``min_steps``), then steps are the most that
    fit up to the model's default. Resolution and guidance keep their defaults.
    """
    h, w = info.default_height, info.default_width
    nfe = info.default_guidance.nfe
    steps_default = info.default_num_inference_steps
    floor = min(min_steps, steps_default)
    target = min(durations.default_target_s, durations.max_s)

    def fits(frames: int, steps: int) -> bool:
        return durations.estimate(h, w, frames, steps, nfe, info.default_fps) <= target

    frames = info.default_num_frames
    while frames > 1 and not fits(frames, floor):
        frames -= info.frame_multiple
    steps = steps_default
    while steps > 1 and not fits(frames, steps):
        steps -= 1
    if (frames, steps) != (info.default_num_frames, steps_default):
        logger.info("ZeroGPU defaults for %s: num_frames %d -> %d, num_inference_steps %d -> %d (target %.0f s, "
                    "durations %s)", info.name, info.default_num_frames, frames, steps_default, steps, target,
                    durations.source)
    return dataclasses.replace(info, default_num_frames=frames, default_num_inference_steps=steps,
                               max_gpu_seconds=durations.max_s)
