"""Flow-matching scheduler for (video, audio) pairs — MOVA's ``FlowMatchPairScheduler`` (docs/model.md#scheduler-config, #scheduler).

The model is trained with the rectified-flow interpolation ``x_σ = (1 − σ)·x₀ + σ·ε`` and predicts the velocity
``v = ε − x₀``; sampling integrates ``dx/dσ = v`` with Euler steps from σ = 1 (noise) to σ = 0 (data).
Timesteps fed to the networks are ``t = num_train_timesteps · σ`` (floats, not integers).

:class:`FlowMatchPairScheduler` (a diffusers ``SchedulerMixin`` + ``ConfigMixin`` on the official
``scheduler_config.json`` fields) holds only the config and the training grid; each request gets its own immutable
:class:`PairSchedule` from ``make_schedule``, so requests sharing one scheduler share no mutable state.

Precision (docs/model.md#sigma-grid): every grid is float32 on the CPU — ``torch.linspace`` in float32, then
``σ = s·σ̃ / (1 + (s − 1)·σ̃)`` and ``t = 1000·σ`` with each operation rounded to float32 — so the 50-step shift-5 grid
reproduces the reference's float32 values bit for bit. Grids stay on the CPU because they are tiny and read by
Python control flow (expert choice, progress); ``step`` moves the two scalars it needs to the sample's device.

Config options of the reference scheduler and what this implementation does with them:

* ``extra_one_step`` (checkpoint: true) — build ``linspace(σ_max, σ_min, N + 1)`` and drop the last point, so the final
  step goes from σ_{N−1} straight to 0; false builds ``linspace(σ_max, σ_min, N)``.
* ``exponential_shift`` with ``exponential_shift_mu = μ`` — honoured: ``σ = e^μ / (e^μ + (1/σ̃ − 1))``, which is the same
  shift formula with ``s = e^μ``. μ must be given (the reference derives it from an image sequence length, which
  a video+audio scheduler does not have). Per-modality shifts cannot be combined with it.
* ``shift_terminal = τ`` — honoured: after the shift, ``1 − σ`` is rescaled so that the last grid point (before the
  appended 0) equals τ, as in the reference.
* ``inverse_timesteps`` / ``reverse_sigmas`` — **rejected** (ValueError). They run the grid from data to noise (for
  inversion); their final σ, the expert order and the snapping rule are not defined for MOVA's pair sampling, and
  nothing in MOVA Studio uses them.

Borrowed formulas: DiffSynth-Studio ``diffsynth/schedulers/flow_match.py`` (``FlowMatchScheduler.set_timesteps``,
``step``, ``add_noise``), which MOVA's ``mova/diffusion/schedulers/flow_match.py`` and ``flow_match_pair.py`` follow
(OpenMOSS/MOVA @ 595a976, docs/model.md#sources [R]).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from mova.config import MAX_TRAIN_TIMESTEPS
from mova.models.checks import ConfigRules, fail, flag, off, positive

__all__ = ["FlowMatchPairScheduler", "PairSchedule", "TrainingTimesteps", "shift_sigmas"]

Modality = Literal["video", "audio"]
_MODALITY_COLUMN = {"video": 0, "audio": 1}
_NO_INVERSION = "data-to-noise inversion grids are not defined for MOVA pair sampling"


def _real(v: Any) -> str | None:
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    return None if ok else "a finite number"


def _as_float(name: str, value: Any) -> float:
    if _real(value):
        raise ValueError(f"{name}={value!r} is invalid; allowed: a finite number")
    return float(value)


# ----------------------------------------------------------------------------------------------------------------------
# Grid math (float32, CPU)
# ----------------------------------------------------------------------------------------------------------------------


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """``σ = s·σ̃ / (1 + (s − 1)·σ̃)`` with every operation in the dtype of ``sigmas`` (docs/model.md#sigma-grid).

    ``sigmas``: any shape; float32 for the inference/training grids. ``shift`` is rounded to that dtype first.
    """
    s = torch.tensor(shift, dtype=sigmas.dtype, device=sigmas.device)
    return (s * sigmas) / (1 + (s - 1) * sigmas)


def _build_sigmas(
    config: Any, num_steps: int, shift: float | None, strength: float
) -> torch.Tensor:
    """One modality's σ grid, [num_steps] float32 on the CPU, without the appended final 0 (docs/model.md#sigma-grid).

    ``shift=None`` means the config's shift rule (``shift`` or the exponential shift).
    """
    # 1. Start of the unshifted grid: strength < 1 starts lower, like img2img (reference rule).
    if strength == 1.0:
        start = config.sigma_max
    else:
        start = config.sigma_min + (config.sigma_max - config.sigma_min) * strength
    # 2. Unshifted float32 linspace; extra_one_step builds one more point and drops it.
    if config.extra_one_step:
        sig = torch.linspace(start, config.sigma_min, num_steps + 1, dtype=torch.float32)[:-1]
    else:
        sig = torch.linspace(start, config.sigma_min, num_steps, dtype=torch.float32)
    # 3. Shift (exponential shift = the same formula with s = e^μ, evaluated the reference's way).
    if shift is None and config.exponential_shift:
        e_mu = torch.tensor(math.exp(config.exponential_shift_mu), dtype=torch.float32)
        sig = e_mu / (e_mu + (1 / sig - 1))
    else:
        sig = shift_sigmas(sig, config.shift if shift is None else shift)
    # 4. Optional terminal stretch: the last point becomes shift_terminal.
    if config.shift_terminal is not None:
        one_minus = 1 - sig
        scale = one_minus[-1] / (1 - config.shift_terminal)
        sig = 1 - one_minus / scale
    return sig


# ----------------------------------------------------------------------------------------------------------------------
# One inference schedule
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSchedule:
    """An immutable (video, audio) inference schedule of N steps; all tensors float32 on the CPU.

    Attributes:
        timesteps: [N, 2] — (video t, audio t) fed to the networks at step i, t = num_train_timesteps·σ.
        sigmas: [N + 1, 2] — the inference grid σ_i per modality, final row 0 (docs/model.md#sigma-grid).
        step_sigmas: [N + 1, 2] — the σ the Euler step actually uses: each t_i snapped to the nearest point of the
            1000-point training grid (MOVA ``step_from_to``, docs/model.md#euler-update), final row 0. Equals ``sigmas`` bit for bit
            for the checkpoint config at N = 25, 50, 100; 1 ulp off at some steps for N = 10, 20, 40.
        num_train_timesteps: from the config (for the expert boundary).
    """

    timesteps: torch.Tensor
    sigmas: torch.Tensor
    step_sigmas: torch.Tensor
    num_train_timesteps: int

    @property
    def num_inference_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def __len__(self) -> int:
        return self.num_inference_steps

    # -- Euler update --------------------------------------------------------------------------------------------------

    def step(
        self, model_output: torch.Tensor, step_index: int, sample: torch.Tensor, modality: Modality
    ) -> torch.Tensor:
        """Euler step ``x_{i+1} = x_i + v·(σ_{i+1} − σ_i)`` for one modality (docs/model.md#euler-update).

        Args:
            model_output: predicted velocity, same shape as ``sample`` (video [B, 16, T', h, w], audio [B, C_a, N_a]).
            step_index: the loop index i in [0, N) — not the timestep t.
            sample: the current latent x_i.
            modality: "video" (column 0) or "audio" (column 1).

        Returns:
            x_{i+1}, computed in float32 and cast back to ``sample.dtype``; same shape as ``sample``.
        """
        i = self._check_index(step_index, "step_index")
        if modality not in _MODALITY_COLUMN:
            raise ValueError(f"modality={modality!r} is invalid; allowed: {list(_MODALITY_COLUMN)}")
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output shape {tuple(model_output.shape)} does not match sample shape {tuple(sample.shape)}"
            )
        col = _MODALITY_COLUMN[modality]
        dt = (self.step_sigmas[i + 1, col] - self.step_sigmas[i, col]).to(sample.device)  # float32 scalar
        prev = sample.to(torch.float32) + model_output.to(torch.float32) * dt
        return prev.to(sample.dtype)

    # -- Wan 2.2 expert switch -----------------------------------------------------------------------------------------

    def high_noise_steps(self, boundary_ratio: float = 0.9) -> int:
        """Number of leading steps run by the high-noise video expert (``video_dit``, expert 0).

        A step is high-noise while its video t ≥ boundary_ratio·num_train_timesteps; the switch to expert 1 is
        irreversible, so this counts the leading run (50 steps at shift 5: 18; 25 steps: 9 — docs/model.md#fifty-step-schedule).
        """
        boundary = _check_boundary(boundary_ratio) * self.num_train_timesteps
        video_t = self.timesteps[:, 0].tolist()
        return next((i for i, t in enumerate(video_t) if t < boundary), len(video_t))

    def expert_for_step(self, step_index: int, boundary_ratio: float = 0.9) -> int:
        """Video expert for step i: 0 (``video_dit``, high noise) or 1 (``video_dit_2``, low noise)."""
        i = self._check_index(step_index, "step_index")
        return 0 if i < self.high_noise_steps(boundary_ratio) else 1

    def _check_index(self, step_index: Any, name: str) -> int:
        if isinstance(step_index, bool) or not isinstance(step_index, numbers.Integral):
            raise ValueError(
                f"{name}={step_index!r} ({type(step_index).__name__}) is invalid; allowed: a Python int in "
                f"[0, {self.num_inference_steps}). Pass the loop index i (e.g. from enumerate(timesteps)), "
                "not the timestep t or a tensor."
            )
        i = int(step_index)
        if not 0 <= i < self.num_inference_steps:
            raise ValueError(f"{name}={i} is out of range; allowed: 0 <= {name} < {self.num_inference_steps}")
        return i


def _check_boundary(boundary_ratio: Any) -> float:
    if isinstance(boundary_ratio, bool) or not isinstance(boundary_ratio, numbers.Real) or not 0 <= boundary_ratio <= 1:
        raise ValueError(f"boundary_ratio={boundary_ratio!r} is invalid; allowed: a number in [0, 1]")
    return float(boundary_ratio)


# ----------------------------------------------------------------------------------------------------------------------
# Training-time sampling result
# ----------------------------------------------------------------------------------------------------------------------


class TrainingTimesteps(NamedTuple):
    """Per-sample training noise levels, each [B] float32: t = num_train_timesteps·σ."""

    t_video: torch.Tensor
    t_audio: torch.Tensor
    sigma_video: torch.Tensor
    sigma_audio: torch.Tensor


# ----------------------------------------------------------------------------------------------------------------------
# Scheduler
# ----------------------------------------------------------------------------------------------------------------------


class FlowMatchPairScheduler(ConfigRules, SchedulerMixin, ConfigMixin):
    """MOVA's flow-matching scheduler for (video, audio) latent pairs (docs/model.md#scheduler-config, #scheduler).

    ``FlowMatchPairScheduler()`` is the checkpoint configuration (shift 5, extra_one_step); ``from_config(dict)`` and
    ``from_pretrained(folder, subfolder="scheduler")`` read a ``scheduler_config.json`` (diffusers).

    Args (the official ``scheduler_config.json`` fields; defaults are the reference's):
        num_train_timesteps: t = num_train_timesteps·σ; also the size of the training grid (1000).
        shift: default shift s of ``σ = s·σ̃/(1 + (s − 1)·σ̃)`` for both modalities (checkpoint: 5).
        sigma_max / sigma_min: start / end of the unshifted grid σ̃ (1.0 = pure noise; 0.003/1.002 ≈ 0.0029940).
        inverse_timesteps, reverse_sigmas: must be false (see the module docstring).
        extra_one_step: build N + 1 points and drop the last (checkpoint: true).
        exponential_shift: use ``σ = e^μ/(e^μ + 1/σ̃ − 1)`` instead of the ``shift`` formula; needs ``exponential_shift_mu``.
        exponential_shift_mu: μ of the exponential shift.
        shift_terminal: if set, stretch ``1 − σ`` so the last grid point equals this value (0 < τ < 1).

    Attributes:
        train_sigmas / train_timesteps: [num_train_timesteps] float32 CPU training grid at the config shift
            (docs/model.md#sigma-grid), used to snap σ in ``step``.

    The scheduler holds no inference state: :meth:`make_schedule` returns a :class:`PairSchedule` (timesteps, σ
    grids, ``step``, expert switch) that the caller keeps per request.
    """

    config_name = "scheduler_config.json"
    _quiet_config_keys = ("num_inference_steps",)  # registered by the official class, meaningless here: logged at INFO
    _config_rules = {
        # bounded: the scheduler builds its training grid of n points at once
        "num_train_timesteps": lambda v: None if isinstance(v, numbers.Integral) and not isinstance(v, bool)
        and 2 <= v <= MAX_TRAIN_TIMESTEPS else f"an integer from 2 to {MAX_TRAIN_TIMESTEPS}",
        "shift": positive, "sigma_max": _real, "sigma_min": _real, "extra_one_step": flag,
        "exponential_shift": flag, "inverse_timesteps": off(_NO_INVERSION), "reverse_sigmas": off(_NO_INVERSION),
        "exponential_shift_mu": lambda v: None if v is None else _real(v),
        "shift_terminal": lambda v: None if v is None or (_real(v) is None and 0 < v < 1) else "null or 0 < value < 1",
    }

    @classmethod
    def _check_relations(cls, c: dict) -> None:
        if not 0.0 <= c["sigma_min"] < c["sigma_max"] <= 1.0:
            fail(cls.__name__, "sigma_min", c["sigma_min"], f"0 <= sigma_min < sigma_max={c['sigma_max']!r} <= 1")
        if c["exponential_shift"] and c["exponential_shift_mu"] is None:
            fail(cls.__name__, "exponential_shift_mu", None, "a finite number with exponential_shift=true (the "
                 "reference's image-sequence-length rule does not apply to a video+audio scheduler)")

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 5.0, sigma_max: float = 1.0,
                 sigma_min: float = 0.003 / 1.002, inverse_timesteps: bool = False, extra_one_step: bool = True,
                 reverse_sigmas: bool = False, exponential_shift: bool = False,
                 exponential_shift_mu: float | None = None, shift_terminal: float | None = None) -> None:
        self.check_config(self.config)
        # Training grid: N = num_train_timesteps at the config shift, cached once (docs/model.md#sigma-grid).
        self.train_sigmas = _build_sigmas(self.config, num_train_timesteps, shift=None, strength=1.0)
        self.train_timesteps = self.train_sigmas * num_train_timesteps

    # -- σ lookup ------------------------------------------------------------------------------------------------------

    def timestep_to_sigma(self, timesteps: torch.Tensor | float) -> torch.Tensor:
        """σ of the nearest training-grid point for each timestep (MOVA ``step_from_to``, docs/model.md#euler-update).

        ``timesteps``: any shape (float); returns float32 on the CPU, same shape. Ties go to the first (higher-noise)
        grid point, like ``argmin``.
        """
        t = torch.as_tensor(timesteps, dtype=torch.float32).cpu()
        idx = (self.train_timesteps.reshape(1, -1) - t.reshape(-1, 1)).abs().argmin(dim=1)
        return self.train_sigmas[idx].reshape(t.shape)

    # -- inference schedule --------------------------------------------------------------------------------------------

    def make_schedule(
        self,
        num_inference_steps: int,
        *,
        video_shift: float | None = None,
        audio_shift: float | None = None,
        video_strength: float = 1.0,
        audio_strength: float = 1.0,
    ) -> PairSchedule:
        """Build an N-step (video, audio) schedule (docs/model.md#sigma-grid, #paired-timesteps).

        Args:
            num_inference_steps: N ≥ 1.
            video_shift / audio_shift: per-modality shift s (> 0); None = the config rule (shift 5 for the
                checkpoints, which is what the released pipeline uses for both columns).
            video_strength / audio_strength: in (0, 1]. Below 1 the unshifted grid starts at
                σ̃ = σ_min + (σ_max − σ_min)·strength (≈ strength) instead of σ_max, like img2img: the sample is expected
                to be noised to that level already. The shift is applied after, as for the full grid.

        Returns:
            :class:`PairSchedule` with timesteps [N, 2], sigmas [N + 1, 2] and step_sigmas [N + 1, 2].
        """
        n = num_inference_steps
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"num_inference_steps={n!r} is invalid; allowed: an integer >= 1")
        n = int(n)
        shifts = {"video_shift": video_shift, "audio_shift": audio_shift}
        for name, value in shifts.items():
            if value is None:
                continue
            if self.config.exponential_shift:
                raise ValueError(
                    f"{name}={value!r} cannot be combined with exponential_shift=True (the shift is e^mu); "
                    "allowed: None"
                )
            if _as_float(name, value) <= 0:
                raise ValueError(f"{name}={value!r} is invalid; allowed: None or a finite number > 0")
        for name, value in (("video_strength", video_strength), ("audio_strength", audio_strength)):
            if not 0.0 < _as_float(name, value) <= 1.0:
                raise ValueError(f"{name}={value!r} is invalid; allowed: 0 < {name} <= 1")

        grid = torch.stack([_build_sigmas(self.config, n, None if shift is None else float(shift), float(strength))
                            for shift, strength in ((video_shift, video_strength), (audio_shift, audio_strength))],
                           dim=1)  # [N, 2]
        timesteps = grid * self.config.num_train_timesteps  # [N, 2], t = 1000σ in float32
        zero = torch.zeros(1, 2, dtype=torch.float32)
        sigmas = torch.cat([grid, zero], dim=0)  # [N + 1, 2]
        step_sigmas = torch.cat([self.timestep_to_sigma(timesteps), zero], dim=0)  # [N + 1, 2]
        return PairSchedule(timesteps=timesteps, sigmas=sigmas, step_sigmas=step_sigmas,
                            num_train_timesteps=self.config.num_train_timesteps)

    # -- training helpers ----------------------------------------------------------------------------------------------

    def sample_training_timesteps(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        shift_video: float | None = None,
        shift_audio: float | None = None,
        independent: bool = True,
        expert: int | None = None,
        boundary_ratio: float = 0.9,
    ) -> TrainingTimesteps:
        """Draw per-sample training noise levels for both modalities (paper recipe, docs/model.md#training-recipe).

        For each modality u ~ U[0, 1) (drawn independently per modality when ``independent``; one shared u otherwise,
        so t_video = t_audio iff the two shifts are equal), then ``σ = s·u/(1 + (s − 1)·u)`` with that modality's
        shift — continuous, not snapped to the training grid (unlike the released trainer, docs/model.md#training-timesteps, which indexes
        the 1000-point grid with one u for both modalities). ``expert`` restricts the *video* level to one Wan 2.2
        expert: 0 → t_video ≥ boundary_ratio·num_train_timesteps, 1 → t_video < it (u drawn uniformly on the matching
        sub-interval, so the within-expert distribution is the shifted one, conditioned). Audio is never restricted
        (with ``independent=False`` it shares the restricted u).

        Args:
            batch: B ≥ 1.
            generator: torch.Generator (its device is used); None = the global RNG on the CPU.
            shift_video / shift_audio: shifts (> 0); None = the config shift.
            independent: draw separate u for video and audio.
            expert: None, 0 or 1.
            boundary_ratio: expert boundary as a fraction of num_train_timesteps (MOVA: 0.9).

        Returns:
            :class:`TrainingTimesteps` (t_video, t_audio, sigma_video, sigma_audio), each [B] float32 on the generator's
            device; t = num_train_timesteps·σ in float32.
        """
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1:
            raise ValueError(f"batch={batch!r} is invalid; allowed: an integer >= 1")
        s_v = self.config.shift if shift_video is None else _as_float("shift_video", shift_video)
        s_a = self.config.shift if shift_audio is None else _as_float("shift_audio", shift_audio)
        for name, value in (("shift_video", s_v), ("shift_audio", s_a)):
            if value <= 0:
                raise ValueError(f"{name}={value!r} is invalid; allowed: None or a finite number > 0")
        if expert not in (None, 0, 1) or isinstance(expert, bool):
            raise ValueError(f"expert={expert!r} is invalid; allowed: None, 0 or 1")
        ratio = _check_boundary(boundary_ratio)
        n_train = self.config.num_train_timesteps
        device = generator.device if generator is not None else torch.device("cpu")

        # 1. u for video, restricted to the chosen expert's interval of the shifted map (float64).
        lo, hi = 0.0, 1.0
        if expert is not None:
            u_boundary = ratio / (s_v - (s_v - 1.0) * ratio)  # the shift map inverted: σ = ratio ⇔ t = ratio·n_train
            lo, hi = (u_boundary, 1.0) if expert == 0 else (0.0, u_boundary)
        u_v = lo + (hi - lo) * torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        # 2. u for audio: its own draw, or the shared one.
        u_a = torch.rand(batch, generator=generator, device=device, dtype=torch.float64) if independent else u_v
        # 3. Shift each modality (float64, then float32), t = num_train_timesteps·σ in float32.
        sigma_v = shift_sigmas(u_v, s_v).to(torch.float32)
        sigma_a = shift_sigmas(u_a, s_a).to(torch.float32)
        if expert is not None:
            sigma_v = _enforce_expert(sigma_v, expert, ratio * n_train, n_train)
        return TrainingTimesteps(t_video=sigma_v * n_train, t_audio=sigma_a * n_train, sigma_video=sigma_v,
                                 sigma_audio=sigma_a)

    @staticmethod
    def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Flow-matching interpolation ``x_σ = (1 − σ)·x₀ + σ·ε`` (docs/model.md#training-timesteps), in float32, cast to ``x0.dtype``.

        Args:
            x0: clean latents [B, ...]; noise: ε, same shape.
            sigma: a float, a 0-d tensor, or [B] (one level per sample, broadcast over the sample dims).
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} does not match x0 shape {tuple(x0.shape)}")
        sig = torch.as_tensor(sigma, dtype=torch.float32, device=x0.device)
        if sig.ndim == 1:
            if sig.shape[0] != x0.shape[0]:
                raise ValueError(f"sigma has {sig.shape[0]} entries but the batch size is {x0.shape[0]}")
            sig = sig.reshape(-1, *([1] * (x0.ndim - 1)))
        elif sig.ndim != 0:
            raise ValueError(f"sigma must be a scalar or [B], got shape {tuple(sig.shape)}")
        out = (1 - sig) * x0.to(torch.float32) + sig * noise.to(torch.float32)
        return out.to(x0.dtype)

    @staticmethod
    def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Training target ``v = ε − x₀`` (docs/model.md#training-timesteps); same shape and dtype as the inputs."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} does not match x0 shape {tuple(x0.shape)}")
        return noise - x0


def _enforce_expert(sigma: torch.Tensor, expert: int, boundary_t: float, n_train: int) -> torch.Tensor:
    """Nudge float32 σ by ulps where rounding put t = n_train·σ on the wrong side of the boundary (rare)."""
    for _ in range(64):
        t = sigma * n_train
        bad = t < boundary_t if expert == 0 else t >= boundary_t
        if not bool(bad.any()):
            return sigma
        target = torch.full_like(sigma, 2.0 if expert == 0 else -1.0)
        sigma = torch.where(bad, torch.nextafter(sigma, target), sigma)
    raise RuntimeError("could not place sigma on the expert's side of the boundary")  # pragma: no cover
