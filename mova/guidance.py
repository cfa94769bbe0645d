"""Classifier-free guidance for the MOVA dual-tower denoiser (docs/model.md#guidance).

A *branch* is one denoiser evaluation ``v(c_T, c_B)``:

* ``c_T`` — the text condition: the prompt (T) or the negative prompt (∅);
* ``c_B`` — the cross-modal bridge: on (B, denoiser ``bridge_strength`` 1.0) or off (∅, ``bridge_strength`` 0.0,
  every bridge block an identity so the towers run independently — our reading of docs/model.md#bridge-off).

Modes (``s_T = text_scale``, ``s_B = bridge_scale``), applied identically to video and audio, in float32:

====================  =====  ==============================================================================
mode                  NFE    velocity
====================  =====  ==============================================================================
``"none"``            1      v(T, B)
``"text"``            2      v(∅, B) + s_T·[v(T, B) − v(∅, B)]             (the released MOVA behaviour)
``"text+bridge"``     2      v(∅, ∅) + s_T·[v(T, B) − v(∅, ∅)]             (paper special case s_B = s_T)
``"dual"``            3      v(∅, ∅) + s_B·[v(∅, B) − v(∅, ∅)] + s_T·[v(T, B) − v(∅, B)]   (paper dual CFG)
====================  =====  ==============================================================================

``Guidance.bridge_scale`` is the guidance weight s_B; the denoiser's ``bridge_strength`` argument is something else:
the per-sample bridge strength (1.0 on / 0.0 off) that selects c_B for a branch.

:func:`guided_velocity` evaluates all branches of a step in **one batched forward** (branches stacked along the batch
dimension, bridge strength passed per sample as a [B_total] tensor), or one branch at a time with
``sequential=True`` for memory-tight GPUs; both give the same result. How the branches run is a *branch runner*
(``runner=``), so CFG parallelism (``mova.parallel.cfg_parallel_runner``) needs nothing here.

This module imports torch lazily, so ``Guidance`` can be imported (e.g. by the UI) without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mova.validation import MAX_GUIDANCE_SCALE, real

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Guidance", "GUIDANCE_MODES", "Branch", "guided_velocity", "batched_runner", "sequential_runner"]

GUIDANCE_MODES: tuple[str, ...] = ("none", "text", "text+bridge", "dual")


@dataclass(frozen=True)
class Branch:
    """One denoiser evaluation: ``prompt`` = use the prompt (else the negative prompt), ``bridge`` = bridge on."""

    prompt: bool
    bridge: bool


# Branch order per mode: unconditional-most first, the fully conditional branch v(T, B) last.
_BRANCHES: dict[str, tuple[Branch, ...]] = {
    "none": (Branch(prompt=True, bridge=True),),
    "text": (Branch(prompt=False, bridge=True), Branch(prompt=True, bridge=True)),
    "text+bridge": (Branch(prompt=False, bridge=False), Branch(prompt=True, bridge=True)),
    "dual": (Branch(prompt=False, bridge=False), Branch(prompt=False, bridge=True), Branch(prompt=True, bridge=True)),
}


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance settings (docs/model.md#guidance).

    Args:
        mode: one of ``"none"``, ``"text"`` (default, released MOVA), ``"text+bridge"``, ``"dual"``.
        text_scale: s_T ≥ 0 (default 5.0, the released ``cfg_scale``); also the single scale of ``"text+bridge"``.
        bridge_scale: s_B ≥ 0 (default 1.0), used by ``"dual"`` only (paper "w/ dual CFG" rows use 3.5). Not the
            denoiser's ``bridge_strength`` (bridge on/off per branch).
    """

    mode: str = "text"
    text_scale: float = 5.0
    bridge_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in GUIDANCE_MODES:
            raise ValueError(f"mode={self.mode!r} is invalid; allowed: {list(GUIDANCE_MODES)}")
        for name in ("text_scale", "bridge_scale"):
            object.__setattr__(self, name, real(name, getattr(self, name), 0.0, MAX_GUIDANCE_SCALE))

    @property
    def branches(self) -> tuple[Branch, ...]:
        """The branches this mode evaluates, in batch order."""
        return _BRANCHES[self.mode]

    @property
    def nfe(self) -> int:
        """Denoiser evaluations per step: none 1, text 2, text+bridge 2, dual 3."""
        return len(self.branches)

    @property
    def needs_negative(self) -> bool:
        """Whether a negative-prompt embedding is required (every mode but ``"none"``)."""
        return any(not b.prompt for b in self.branches)

    def combine(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """Combine per-branch velocities (in ``branches`` order, any matching shapes) in float32."""
        if len(outputs) != self.nfe:
            raise ValueError(f"mode {self.mode!r} combines {self.nfe} branch outputs, got {len(outputs)}")
        v = [o.float() for o in outputs]
        s_t, s_b = self.text_scale, self.bridge_scale
        if self.mode == "none":
            return v[0]
        if self.mode in ("text", "text+bridge"):
            # text: v(∅,B) + s_T·(v(T,B) − v(∅,B));  text+bridge: v(∅,∅) + s_T·(v(T,B) − v(∅,∅))
            uncond, cond = v
            return uncond + s_t * (cond - uncond)
        # dual: v(∅,∅) + s_B·(v(∅,B) − v(∅,∅)) + s_T·(v(T,B) − v(∅,B))
        null, bridge_only, cond = v
        return null + s_b * (bridge_only - null) + s_t * (cond - bridge_only)


class Denoiser(Protocol):
    """The call contract of ``mova.models.dual_tower.DualTowerDenoiser`` that guidance relies on."""

    def __call__(
        self,
        video_latents: torch.Tensor,
        audio_latents: torch.Tensor,
        text_embeds: torch.Tensor,
        t_video: torch.Tensor,
        t_audio: torch.Tensor,
        video_fps: float,
        bridge_strength: float | torch.Tensor = 1.0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


Runner = Callable[[Callable[[tuple[Branch, ...]], tuple["torch.Tensor", "torch.Tensor"]], tuple[Branch, ...]],
                  list[tuple["torch.Tensor", "torch.Tensor"]]]


def batched_runner(evaluate, branches):
    """All branches in one denoiser call (stacked along the batch): the default branch runner."""
    video, audio = evaluate(tuple(branches))
    return list(zip(video.chunk(len(branches)), audio.chunk(len(branches))))


def sequential_runner(evaluate, branches):
    """One denoiser call per branch: less activation memory, the same result."""
    return [evaluate((b,)) for b in branches]


def guided_velocity(
    denoiser: Denoiser,
    guidance: Guidance,
    video_latents: torch.Tensor,
    audio_latents: torch.Tensor,
    text_embeds: torch.Tensor,
    negative_embeds: torch.Tensor | None,
    t_video: torch.Tensor | float,
    t_audio: torch.Tensor | float,
    video_fps: float,
    expert: int | None = None,
    *,
    sequential: bool = False,
    runner: Runner | None = None,
    bridge_strength: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided (video, audio) velocities for one denoising step (docs/model.md#guidance).

    Args:
        denoiser: called as ``denoiser(video_latents, audio_latents, text_embeds, t_video, t_audio, video_fps,
            bridge_strength=<float tensor [B']>[, expert=expert])`` → (v_video [B', 16, T', h, w],
            v_audio [B', C_a, N_a]).
        guidance: the :class:`Guidance` settings.
        video_latents: [B, 36, T', h, w] (noisy latent ‖ mask ‖ image latent).
        audio_latents: [B, C_a, N_a].
        text_embeds: prompt embeddings [B, L, D].
        negative_embeds: negative-prompt embeddings [B, L, D] or [1, L, D] (broadcast); may be None only for
            mode ``"none"``.
        t_video, t_audio: [B] float timesteps, or a scalar / 0-d tensor shared by the batch.
        video_fps: frames per second of the video (bridge RoPE clock).
        expert: video expert index passed through to the denoiser (omitted when None).
        sequential: evaluate the branches one call at a time (:func:`sequential_runner`) instead of one batched call
            (:func:`batched_runner`); same result, less memory.
        runner: how the branches are evaluated, ``runner(evaluate, branches) -> [(v_video, v_audio) per branch]``
            where ``evaluate(group)`` runs the denoiser on the branches of ``group`` stacked along the batch
            (e.g. ``mova.parallel.cfg_parallel_runner``, which spreads them over GPUs); overrides ``sequential``.
        bridge_strength: the denoiser ``bridge_strength`` of the branches with the bridge on (1.0); 0.0 runs every
            branch with independent towers (the "no bridge" ablation).

    Returns:
        (v_video [B, 16, T', h, w], v_audio [B, C_a, N_a]), float32.
    """
    import torch

    # 1. Inputs.
    if not isinstance(guidance, Guidance):
        raise ValueError(f"guidance must be a Guidance, got {type(guidance).__name__}")
    batch = video_latents.shape[0]
    if audio_latents.shape[0] != batch or text_embeds.shape[0] != batch:
        raise ValueError(
            f"batch sizes differ: video_latents {video_latents.shape[0]}, audio_latents {audio_latents.shape[0]}, "
            f"text_embeds {text_embeds.shape[0]}"
        )
    if guidance.needs_negative:
        if negative_embeds is None:
            raise ValueError(f"negative_embeds is required for guidance mode {guidance.mode!r}")
        if negative_embeds.shape[0] == 1 and batch > 1:
            negative_embeds = negative_embeds.expand(batch, *negative_embeds.shape[1:])
        if negative_embeds.shape != text_embeds.shape:
            raise ValueError(
                f"negative_embeds shape {tuple(negative_embeds.shape)} must equal text_embeds shape "
                f"{tuple(text_embeds.shape)} (or have batch 1)"
            )
    device = video_latents.device
    t_video = _per_sample(t_video, batch, device, "t_video")
    t_audio = _per_sample(t_audio, batch, device, "t_audio")
    extra = {} if expert is None else {"expert": expert}

    def evaluate(group: tuple[Branch, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """One denoiser call for ``group`` branches stacked along the batch: [k·B, ...]."""
        k = len(group)
        embeds = torch.cat([text_embeds if b.prompt else negative_embeds for b in group], dim=0)
        strength = torch.tensor([bridge_strength if b.bridge else 0.0 for b in group for _ in range(batch)],
                                dtype=torch.float32, device=device)
        out_video, out_audio = denoiser(_repeat(video_latents, k), _repeat(audio_latents, k), embeds,
                                        _repeat(t_video, k), _repeat(t_audio, k), video_fps, bridge_strength=strength,
                                        **extra)
        if out_video.shape[0] != k * batch or out_audio.shape[0] != k * batch:
            raise ValueError(f"denoiser returned batch {out_video.shape[0]}/{out_audio.shape[0]}, expected {k * batch}")
        return out_video, out_audio

    # 2. Evaluate the branches (the runner decides how: batched, one by one, spread over GPUs).
    runner = runner or (sequential_runner if sequential else batched_runner)
    outs = runner(evaluate, guidance.branches)

    # 3. Combine in float32.
    return guidance.combine([o[0] for o in outs]), guidance.combine([o[1] for o in outs])


def _repeat(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B, ...] → [k·B, ...] (branch-major: copy j holds rows j·B … j·B + B − 1)."""
    return x if k == 1 else x.repeat(k, *([1] * (x.ndim - 1)))


def _per_sample(t: Any, batch: int, device: torch.device, name: str) -> torch.Tensor:
    import torch

    t = torch.as_tensor(t, device=device)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} shape {tuple(t.shape)} is invalid; allowed: a scalar or [{batch}]")
    return t
