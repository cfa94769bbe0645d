"""DualTowerDenoiser: one denoising forward of both towers and the bridge (docs/model.md#one-denoising-step).

The active video expert (``video_dit`` for t ≥ boundary, ``video_dit_2`` below) supplies every video-side
module; the audio DiT and the bridge are shared by both experts. For each layer j: the bridge (if it has
layer j) updates both streams from their pre-bridge states, then video block j, then audio block j; the
video layers past the audio tower's depth run after.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mova.models.audio_dit import AudioDiT
from mova.models.bridge import DualTowerBridge
from mova.models.layers import rope_tables
from mova.models.video_dit import VideoDiT


def _as_batch(value: float | torch.Tensor, batch: int, device: torch.device, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        return t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{name} has {t.numel()} values for a batch of {batch}; expected 1 or {batch}")
    return t


class DualTowerDenoiser(nn.Module):
    """Velocity model for (video, audio) latents.

    Args:
        video_dit: high-noise expert (used while t_video ≥ boundary_ratio · num_train_timesteps).
        audio_dit, bridge: shared.
        video_dit_2: low-noise expert; ``None`` for a single-expert model (then ``video_dit`` serves all t).
    """

    def __init__(self, video_dit: VideoDiT, audio_dit: AudioDiT, bridge: DualTowerBridge,
                 video_dit_2: VideoDiT | None = None, boundary_ratio: float = 0.9, num_train_timesteps: int = 1000):
        super().__init__()
        self.video_dit = video_dit
        self.video_dit_2 = video_dit_2
        self.audio_dit = audio_dit
        self.bridge = bridge
        self.boundary = boundary_ratio * num_train_timesteps
        self.parallel = None  # a mova.parallel.ParallelState once parallelize_denoiser() has run
        self._check_widths()

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

    def compile_blocks(self, **compile_kwargs) -> None:
        """Regional ``torch.compile``: every repeated block (the DiT blocks of each tower, the bridge
        conditioners) is compiled in place. Blocks of one class share a compiled graph, and the elementwise
        chains around the matmuls (norms, modulate, RoPE, gates, residuals) fuse into a few kernels."""
        import torch._dynamo

        # One graph per (block kind, batch size, resolution): static shapes give the best kernels, and the
        # a2v/v2a conditioners, the two towers' blocks and each CFG batch size each need their own entry.
        cfg = torch._dynamo.config
        key = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
        setattr(cfg, key, max(getattr(cfg, key), 64))
        compile_kwargs.setdefault("dynamic", False)
        for model in [*self.experts, self.audio_dit, self.bridge]:
            names = set(model._repeated_blocks)
            for module in model.modules():
                if type(module).__name__ in names:
                    module.compile(**compile_kwargs)

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
        vdit, adit, bridge = self.experts[expert], self.audio_dit, self.bridge

        # 2. Time and text embeddings (fp32 time embedding, cast to the model dtype)
        t_emb_v, t_mod_v = vdit.embed_time(t_video)
        t_emb_a, t_mod_a = adit.embed_time(t_audio)
        ctx_v = vdit.embed_text(text_embeds)
        ctx_a = adit.embed_text(text_embeds)

        # 3. Patchify and position tables
        x_v, grid_v = vdit.patchify(video_latents)  # [B, L_v, Dv]
        x_a, grid_a = adit.patchify(audio_latents)  # [B, L_a, Da]
        rope_v = rope_tables(vdit.rope(grid_v, device), x_v.dtype)  # (cos, sin), shared by all blocks
        rope_a = rope_tables(adit.rope(grid_a, device), x_a.dtype)
        bridge_rope_v, bridge_rope_a = bridge.rope(video_fps, grid_v, grid_a[0], device, x_v.dtype)
        strength = bridge_strength
        if isinstance(strength, torch.Tensor) or strength != 1.0:
            strength = _as_batch(bridge_strength, B, device, "bridge_strength")
        sp = self.parallel if (self.parallel is not None and self.parallel.sp_size > 1) else None
        if sp is not None:  # sequence parallel: every rank keeps one shard of each stream (mova.parallel)
            from mova.parallel import shard_seq

            len_v, len_a = x_v.shape[1], x_a.shape[1]
            sp.valid_len = {"video": len_v, "audio": len_a}
            x_v, x_a = shard_seq(x_v, sp), shard_seq(x_a, sp)
            rope_v = tuple(shard_seq(t, sp, dim=0) for t in rope_v)
            rope_a = tuple(shard_seq(t, sp, dim=0) for t in rope_a)
            if bridge_rope_v is not None:
                bridge_rope_v = tuple(shard_seq(t, sp, dim=0) for t in bridge_rope_v)
                bridge_rope_a = tuple(shard_seq(t, sp, dim=0) for t in bridge_rope_a)

        # 4. Layers: bridge j, video block j, audio block j; then the remaining layers of either tower
        for j in range(max(len(vdit.blocks), len(adit.blocks))):
            if bridge.has_layer(j):
                x_v, x_a = bridge(j, x_v, x_a, bridge_rope_v, bridge_rope_a, strength, grid_v)
            if j < len(vdit.blocks):
                x_v = vdit.blocks[j](x_v, ctx_v, t_mod_v, rope_v)
            if j < len(adit.blocks):
                x_a = adit.blocks[j](x_a, ctx_a, t_mod_a, rope_a)

        if sp is not None:
            from mova.parallel import gather_seq

            x_v, x_a = gather_seq(x_v, sp)[:, :len_v], gather_seq(x_a, sp)[:, :len_a]

        # 5. Heads and unpatchify
        return vdit.unpatchify(vdit.head(x_v, t_emb_v), grid_v), adit.unpatchify(adit.head(x_a, t_emb_a), grid_a)
