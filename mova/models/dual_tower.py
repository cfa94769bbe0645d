"""DualTowerDenoiser: one denoising forward of both towers and the bridge (docs/model.md#one-denoising-step).

The active video expert (``video_dit`` for t ≥ boundary, ``video_dit_2`` below) supplies every video-side
module; the audio DiT and the bridge are shared by both experts. For each layer j: the bridge (if it has
layer j) updates both streams from their pre-bridge states, then video block j, then audio block j; the
video layers past the audio tower's depth run after.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from mova.models.audio_dit import AudioDiT
from mova.models.bridge import DualTowerBridge
from mova.models.layers import rope_tables
from mova.models.video_dit import VideoDiT

Tables = tuple[torch.Tensor, torch.Tensor]  # RoPE (cos, sin)


@dataclasses.dataclass
class Streams:
    """One forward between the embeddings and the heads: the two token streams and what every layer reads.

    ``SEQUENCE_FIELDS`` name, per stream, the fields indexed by that stream's tokens (dim 1 of the tokens, dim 0 of
    the RoPE tables): what code that splits the sequences across devices splits and gathers.
    """

    video: torch.Tensor  # [B, L_v, Dv]
    audio: torch.Tensor  # [B, L_a, Da]
    rope_video: Tables  # [L_v, head_dim/2] each
    rope_audio: Tables  # [L_a, head_dim/2] each
    bridge_rope_video: Tables | None  # [L_v, bridge head_dim] each (None without cross RoPE)
    bridge_rope_audio: Tables | None
    context_video: torch.Tensor  # [B, L_text, Dv]
    context_audio: torch.Tensor  # [B, L_text, Da]
    t_emb_video: torch.Tensor  # [B, Dv]
    t_mod_video: torch.Tensor  # [B, 6, Dv]
    t_emb_audio: torch.Tensor
    t_mod_audio: torch.Tensor
    grid_video: tuple[int, int, int]
    grid_audio: tuple[int]
    strength: float | torch.Tensor  # bridge strength, scalar or [B]
    expert: int

    SEQUENCE_FIELDS = {"video": ("video", "rope_video", "bridge_rope_video"),
                       "audio": ("audio", "rope_audio", "bridge_rope_audio")}


def _as_batch(value: float | torch.Tensor, batch: int, device: torch.device, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{name} has {t.numel()} values for a batch of {batch}; expected 1 or {batch}")
    return t


class DualTowerDenoiser(nn.Module):
    """Velocity model for (video, audio) latents. ``forward`` = :meth:`embed` → :meth:`run_layers` → :meth:`unembed`;
    code that changes how a forward runs (sequence sharding across devices) composes the three stages with its own
    steps between them and swaps the attention modules named in ``_attention_seams``; the model stays unchanged.

    Args:
        video_dit: high-noise expert (used while t_video ≥ boundary_ratio · num_train_timesteps).
        audio_dit, bridge: shared.
        video_dit_2: low-noise expert; ``None`` for a single-expert model (then ``video_dit`` serves all t).
        temporal_stride: pixel frames per video latent frame (the video VAE's ``scale_factor_temporal``, 4 in MOVA),
            where the bridge's aligned RoPE places each latent frame in time.
    """

    def __init__(self, video_dit: VideoDiT, audio_dit: AudioDiT, bridge: DualTowerBridge,
                 video_dit_2: VideoDiT | None = None, boundary_ratio: float = 0.9, num_train_timesteps: int = 1000,
                 temporal_stride: int = 4):
        super().__init__()
        if not isinstance(temporal_stride, int) or isinstance(temporal_stride, bool) or temporal_stride < 1:
            raise ValueError(f"temporal_stride={temporal_stride!r} must be a positive integer")
        self.temporal_stride = temporal_stride
        self.video_dit = video_dit
        self.video_dit_2 = video_dit_2
        self.audio_dit = audio_dit
        self.bridge = bridge
        self.boundary = boundary_ratio * num_train_timesteps
        self._check_widths()

    # The attention seams (``Attention`` modules without weights) of each token stream: module name pattern ->
    # (stream of the queries, stream of the keys/values). Text cross-attention is not listed (its keys are the prompt).
    _attention_seams = {
        "video_dit.blocks.*.self_attn.attn": ("video", "video"),
        "video_dit_2.blocks.*.self_attn.attn": ("video", "video"),
        "audio_dit.blocks.*.self_attn.attn": ("audio", "audio"),
        "bridge.audio_to_video_conditioners.*.inner.attn": ("video", "audio"),
        "bridge.video_to_audio_conditioners.*.inner.attn": ("audio", "video"),
    }

    def _check_widths(self) -> None:
        b = self.bridge.config
        for name, dit in (("video_dit", self.video_dit), ("video_dit_2", self.video_dit_2)):
            if dit is not None and (dit.config.dim != b.visual_hidden_dim or dit.config.num_layers != b.visual_layers):
                raise ValueError(f"{name} (dim {dit.config.dim}, {dit.config.num_layers} layers) does not match the "
                                 f"bridge (visual_hidden_dim {b.visual_hidden_dim}, visual_layers {b.visual_layers})")
        a = self.audio_dit.config
        if a.dim != b.audio_hidden_dim or a.num_layers != b.audio_layers:
            raise ValueError(f"audio_dit (dim {a.dim}, {a.num_layers} layers) does not match the bridge "
                             f"(audio_hidden_dim {b.audio_hidden_dim}, audio_layers {b.audio_layers})")
        if self.video_dit.config.text_dim != a.text_dim:
            raise ValueError(f"video_dit text_dim {self.video_dit.config.text_dim} != audio_dit text_dim {a.text_dim}")

    @property
    def experts(self) -> list[VideoDiT]:
        return [m for m in (self.video_dit, self.video_dit_2) if m is not None]

    def expert_index(self, t_video: float | torch.Tensor) -> int:
        """0 (high noise) when every t ≥ boundary, 1 when every t < boundary; a batch straddling the boundary
        must be split by the caller (or pass ``expert=``)."""
        t = torch.as_tensor(t_video, dtype=torch.float32).reshape(-1)
        high = t >= self.boundary
        if self.video_dit_2 is None:
            return 0
        if bool(high.all()):
            return 0
        if not bool(high.any()):
            return 1
        raise ValueError(f"t_video values {t.tolist()} straddle the expert boundary {self.boundary}: "
                         "split the batch by expert or pass expert=0/1")

    def forward(
        self,
        video_latents: torch.Tensor,
        audio_latents: torch.Tensor,
        text_embeds: torch.Tensor,
        t_video: float | torch.Tensor,
        t_audio: float | torch.Tensor,
        video_fps: float,
        bridge_strength: float | torch.Tensor = 1.0,
        expert: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward of both towers.

        Args:
            video_latents: [B, 36, T', H/8, W/8] (noisy latent ‖ mask ‖ image latent).
            audio_latents: [B, C_a, N_a] (C_a = 128 for MOVA).
            text_embeds: [B, L_text, text_dim] (L_text = 512, text_dim = 4096 for MOVA).
            t_video, t_audio: timesteps in [0, 1000], scalar or [B].
            video_fps: pixel frame rate of the clip (aligned RoPE).
            bridge_strength: strength of the bridge, scalar or [B] per sample (0 = towers independent; not the
                guidance weight ``Guidance.bridge_scale``).
            expert: force the video expert (0 or 1); default chooses by ``t_video``.
        Returns:
            (video velocity [B, 16, T', H/8, W/8], audio velocity [B, C_a, N_a]), in the model dtype.
        """
        streams = self.embed(video_latents, audio_latents, text_embeds, t_video, t_audio, video_fps,
                             bridge_strength, expert)
        return self.unembed(self.run_layers(streams))

    def embed(self, video_latents: torch.Tensor, audio_latents: torch.Tensor, text_embeds: torch.Tensor,
              t_video: float | torch.Tensor, t_audio: float | torch.Tensor, video_fps: float,
              bridge_strength: float | torch.Tensor = 1.0, expert: int | None = None) -> Streams:
        """Inputs (as :meth:`forward`) checked, the expert picked, time/text embeddings, tokens and RoPE tables."""
        # 1. Check inputs and pick the expert
        if video_latents.ndim != 5 or audio_latents.ndim != 3 or text_embeds.ndim != 3:
            raise ValueError(
                f"expected video_latents [B, C, T, H, W], audio_latents [B, C, N], text_embeds [B, L, D]; got shapes "
                f"{list(video_latents.shape)}, {list(audio_latents.shape)}, {list(text_embeds.shape)}")
        B = video_latents.shape[0]
        if audio_latents.shape[0] != B or text_embeds.shape[0] != B:
            raise ValueError(f"batch sizes differ: video_latents {B}, audio_latents {audio_latents.shape[0]}, "
                             f"text_embeds {text_embeds.shape[0]}")
        if text_embeds.shape[2] != self.audio_dit.config.text_dim:
            raise ValueError(f"text_embeds width {text_embeds.shape[2]} != text_dim {self.audio_dit.config.text_dim}")
        if not video_fps or video_fps <= 0:
            raise ValueError(f"video_fps={video_fps!r} must be > 0")
        device = video_latents.device
        t_video = _as_batch(t_video, B, device, "t_video")
        t_audio = _as_batch(t_audio, B, device, "t_audio")
        if expert is None:
            expert = self.expert_index(t_video)
        if expert not in (0, 1) or expert >= len(self.experts):
            raise ValueError(f"expert={expert!r} is invalid: this model has experts {list(range(len(self.experts)))}")
        vdit, adit = self.experts[expert], self.audio_dit

        # 2. Time and text embeddings (fp32 time embedding, cast to the model dtype)
        t_emb_v, t_mod_v = vdit.embed_time(t_video)
        t_emb_a, t_mod_a = adit.embed_time(t_audio)

        # 3. Patchify and position tables (shared by all blocks)
        x_v, grid_v = vdit.patchify(video_latents)  # [B, L_v, Dv]
        x_a, grid_a = adit.patchify(audio_latents)  # [B, L_a, Da]
        bridge_rope_v, bridge_rope_a = self.bridge.rope(video_fps, grid_v, grid_a[0], device, x_v.dtype,
                                                        self.temporal_stride)
        strength = bridge_strength
        if isinstance(strength, torch.Tensor) or strength != 1.0:
            strength = _as_batch(bridge_strength, B, device, "bridge_strength")
        return Streams(
            video=x_v, audio=x_a, rope_video=rope_tables(vdit.rope(grid_v, device), x_v.dtype),
            rope_audio=rope_tables(adit.rope(grid_a, device), x_a.dtype), bridge_rope_video=bridge_rope_v,
            bridge_rope_audio=bridge_rope_a, context_video=vdit.embed_text(text_embeds),
            context_audio=adit.embed_text(text_embeds), t_emb_video=t_emb_v, t_mod_video=t_mod_v, t_emb_audio=t_emb_a,
            t_mod_audio=t_mod_a, grid_video=grid_v, grid_audio=grid_a, strength=strength, expert=expert)

    def run_layers(self, s: Streams) -> Streams:
        """4. For each layer j: bridge j (if it has layer j), video block j, audio block j; then the remaining
        layers of either tower. Returns the streams with the updated tokens (``s`` gives up its own)."""
        vdit, adit, bridge = self.experts[s.expert], self.audio_dit, self.bridge
        x_v, x_a = s.video, s.audio
        s.video = s.audio = None  # consumed: the embedded tokens are freed as the first layer replaces them
        for j in range(max(len(vdit.blocks), len(adit.blocks))):
            if bridge.has_layer(j):
                x_v, x_a = bridge(j, x_v, x_a, s.bridge_rope_video, s.bridge_rope_audio, s.strength, s.grid_video)
            if j < len(vdit.blocks):
                x_v = vdit.blocks[j](x_v, s.context_video, s.t_mod_video, s.rope_video)
            if j < len(adit.blocks):
                x_a = adit.blocks[j](x_a, s.context_audio, s.t_mod_audio, s.rope_audio)
        return dataclasses.replace(s, video=x_v, audio=x_a)

    def unembed(self, s: Streams) -> tuple[torch.Tensor, torch.Tensor]:
        """5. Heads and unpatchify: (video velocity [B, 16, T', h, w], audio velocity [B, C_a, N_a])."""
        vdit, adit = self.experts[s.expert], self.audio_dit
        return (vdit.unpatchify(vdit.head(s.video, s.t_emb_video), s.grid_video),
                adit.unpatchify(adit.head(s.audio, s.t_emb_audio), s.grid_audio))
