"""DualTowerBridge (official class ``DualTowerConditionalBridge``): bidirectional cross-attention between
the video and audio towers, with aligned rotate-half RoPE on the physical timeline. docs/model.md#checkpoint-keys, #bridge.

At an interaction layer j both directions read the pre-bridge states (simultaneous update)::

    v' = v + s · A2V_j(v, a)        a' = a + s · V2A_j(a, v)

where ``s`` is the bridge strength (the denoiser's ``bridge_strength``; 0 makes the towers independent, which is how the
"bridge off" branch of dual CFG is realised), times the learned ``condition_scale`` when the config has
``trainable_condition_scale``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin

from mova.models.checks import MAX_HEAD_DIM, MAX_LAYERS, MAX_WIDTH, ConfigRules, fail, flag, one_of, positive, size
from mova.models.layers import QKNormAttention

INTERACTION_STRATEGIES = ("full", "shallow_focus", "distributed", "progressive", "custom")


def interaction_layers(strategy: str, visual_layers: int, audio_layers: int) -> list[int]:
    """Layer indices j with a conditioner in both directions (video layer j <-> audio layer j)."""
    n = min(visual_layers, audio_layers)
    if strategy == "full":
        return list(range(n))
    if strategy == "shallow_focus":
        return list(range(min(10, n // 3)))
    if strategy == "distributed":
        return list(range(0, n, 3))
    if strategy == "progressive":
        return list(range(min(8, n))) + (list(range(8, n, 3)) if n > 8 else [])
    return [i for i in (0, 2, 4, 6, 8, 12, 16, 20) if i < n]  # "custom"

# --------------------------------------------------------------------------------------------------------
# 1. Aligned RoPE (rotate-half convention, docs/model.md#aligned-rope)
# --------------------------------------------------------------------------------------------------------


def aligned_positions(
    video_fps: float, grid: tuple[int, int, int], audio_len: int, audio_fps: float, first_frame_bias: bool = False,
    temporal_stride: int = 4, device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of video and audio tokens on one timeline, in audio-latent-frame units (float32).

    Audio token j sits at j. Video latent frame k covers ``temporal_stride`` pixel frames, so without the
    first-frame bias it sits at ``k · audio_fps / (video_fps / stride)``; with it, frame 0 sits at 0 and
    frame k ≥ 1 at ``audio_fps · (1/fps + (k−1)·stride/fps)``. Every spatial token of a frame shares its
    frame's position.

    Returns:
        video positions [f·h·w], audio positions [audio_len], float32.
    """
    f, h, w = grid
    if first_frame_bias:
        starts = torch.zeros(f, dtype=torch.float32, device=device)
        if f > 1:
            starts[1:] = (1.0 / float(video_fps)) + torch.arange(f - 1, dtype=torch.float32, device=device) * (
                1.0 / (float(video_fps) / temporal_stride)
            )
        per_frame = starts * float(audio_fps)
    else:
        scale = float(audio_fps) / (float(video_fps) / temporal_stride)  # formed in float64 ...
        per_frame = torch.arange(f, dtype=torch.float32, device=device) * scale  # ... applied in float32
    video_pos = per_frame.repeat_interleave(h * w)
    audio_pos = torch.arange(audio_len, dtype=torch.float32, device=device)
    return video_pos, audio_pos


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [L, head_dim] for rotate-half RoPE: angles [pos·inv_freq, pos·inv_freq] with
    inv_freq_m = 1/10000^(2m/head_dim), all float32 (float64 when ``dtype`` is float64), then rounded to ``dtype``
    (the hidden dtype, as the reference's tables are) and held in float32 (float64), the dtype
    :func:`apply_rope_half` computes in, so no layer casts them again."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32  # float32: the reference's tables
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device)
                                  .to(compute) / head_dim))
    angles = positions.to(compute)[:, None] * inv_freq[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().to(dtype).to(compute), emb.sin().to(dtype).to(compute)


def apply_rope_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x·cos + rotate_half(x)·sin``, rotate_half([x1, x2]) = [−x2, x1]; fp32 (fp64 for fp64 input)
    arithmetic, rounded once to x.dtype.

    Args:
        x: [B, L, H, D]; cos, sin: [L, D].
    """
    compute = torch.promote_types(x.dtype, torch.float32)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)  # exact in x.dtype; both products read x.dtype and compute in fp32
    out = torch.addcmul(x * cos.to(compute)[None, :, None, :], rotated, sin.to(compute)[None, :, None, :])
    return out.to(x.dtype)


# --------------------------------------------------------------------------------------------------------
# 2. Conditioner blocks
# --------------------------------------------------------------------------------------------------------


class ConditionalCrossAttention(QKNormAttention):
    """q from the primary tower (width ``dim``), k/v from the conditioning tower (width ``kv_dim``), each
    rotated with its own tower's aligned positions."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__(dim, num_heads, eps, kv_dim=kv_dim)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor,
        x_rope: tuple[torch.Tensor, torch.Tensor] | None, y_rope: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """x: [B, Lx, dim], y: [B, Ly, kv_dim] (already normalised) -> [B, Lx, dim]."""
        q, k, v = self.project(x, y)  # [B, Lx, H, D], [B, Ly, H, D]
        if x_rope is not None:
            q = apply_rope_half(q, *x_rope)
        if y_rope is not None:
            k = apply_rope_half(k, *y_rope)
        return self.o(self.attn(q, k, v).flatten(-2))


class PerFrameAttentionPooling(nn.Module):
    """One learned probe query per latent frame attending over that frame's h·w tokens (``pooled_adaln``)."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """x: [B, f·h·w, D] -> [B, f, D]."""
        B, L, D = x.shape
        f, h, w = grid
        frames = x.reshape(B * f, h * w, D)
        pooled = self.attention(self.probe.expand(B * f, -1, -1), frames, frames, need_weights=False)[0]
        return self.layernorm(pooled.reshape(B, f, D))


class AdaLayerNorm(nn.Module):
    """``LN(x)·(1+scale) + shift`` with (scale, shift) = Linear(SiLU(cond)) — scale first."""

    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(cond_dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=1e-5, elementwise_affine=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(cond)).chunk(2, dim=2)
        return self.norm(x) * (1 + scale) + shift


class ConditionerBlock(nn.Module):
    """``y_norm`` (LayerNorm on the conditioning states) + ``inner`` cross-attention; optional pooled AdaLN
    of the primary states from per-frame pooled conditioning states (a disabled option of the checkpoints)."""

    def __init__(self, dim: int, kv_dim: int, num_heads: int, eps: float = 1e-6, pooled_adaln: bool = False):
        super().__init__()
        self.y_norm = nn.LayerNorm(kv_dim, eps=eps)
        self.inner = ConditionalCrossAttention(dim, kv_dim, num_heads, eps)
        self.pooled_adaln = pooled_adaln
        if pooled_adaln:
            self.per_frame_pooling = PerFrameAttentionPooling(kv_dim, num_heads, eps)
            self.adaln = AdaLayerNorm(kv_dim, dim)

    def forward(self, x, y, x_rope, y_rope, video_grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        if self.pooled_adaln:
            pooled = self.per_frame_pooling(y, video_grid)  # [B, f, kv_dim]
            if pooled.shape[1] != x.shape[1]:  # stretch the frame axis to the primary sequence length
                pooled = F.interpolate(pooled.transpose(1, 2), size=x.shape[1], mode="linear",
                                       align_corners=False).transpose(1, 2)
            x = self.adaln(x, pooled)
        return self.inner(x, self.y_norm(y), x_rope, y_rope)


# --------------------------------------------------------------------------------------------------------
# 3. The bridge
# --------------------------------------------------------------------------------------------------------


class DualTowerBridge(ConfigRules, ModelMixin, ConfigMixin, PeftAdapterMixin):
    """Keys: ``audio_to_video_conditioners.{j}.*``, ``video_to_audio_conditioners.{j}.*`` (j as strings),
    ``condition_scale`` only with ``trainable_condition_scale`` (a float32 scalar whatever the model dtype).

    Args (the official ``config.json`` fields, docs/model.md#bridge-config): ``visual_layers`` / ``audio_layers`` and
    ``visual_hidden_dim`` / ``audio_hidden_dim`` of the two towers (40/30, 5120/1536), ``audio_fps`` (audio latent
    frames per second, 50), ``head_dim`` (128), ``interaction_strategy`` (which layers interact), ``apply_cross_rope``,
    ``apply_first_frame_bias_in_rope`` (aligned RoPE options), ``trainable_condition_scale``, ``pooled_adaln``.
    """

    _official_class_name = "DualTowerConditionalBridge"
    _repeated_blocks = ["ConditionerBlock"]
    _no_split_modules = ["ConditionerBlock"]
    _keep_in_fp32_modules = ["condition_scale"]
    _config_rules = {
        "visual_layers": size(MAX_LAYERS), "audio_layers": size(MAX_LAYERS), "visual_hidden_dim": size(MAX_WIDTH),
        "audio_hidden_dim": size(MAX_WIDTH), "head_dim": size(MAX_HEAD_DIM), "audio_fps": positive,
        "interaction_strategy": one_of(*INTERACTION_STRATEGIES), "apply_cross_rope": flag,
        "apply_first_frame_bias_in_rope": flag, "trainable_condition_scale": flag, "pooled_adaln": flag,
    }

    @classmethod
    def _check_relations(cls, c: dict) -> None:
        for dim_name in ("visual_hidden_dim", "audio_hidden_dim"):
            if c[dim_name] % c["head_dim"]:
                fail(cls.__name__, dim_name, c[dim_name], f"a multiple of head_dim={c['head_dim']}")
        if c["head_dim"] % 2:
            fail(cls.__name__, "head_dim", c["head_dim"], "an even number (rotate-half RoPE)")
        if c["pooled_adaln"] and c["visual_hidden_dim"] % (c["audio_hidden_dim"] // c["head_dim"]):
            fail(cls.__name__, "pooled_adaln", True, f"false for these widths: the per-frame pooling needs "
                 f"visual_hidden_dim={c['visual_hidden_dim']} divisible by the audio head count "
                 f"{c['audio_hidden_dim'] // c['head_dim']}")

    @register_to_config
    def __init__(self, visual_layers: int = 40, audio_layers: int = 30, visual_hidden_dim: int = 5120,
                 audio_hidden_dim: int = 1536, audio_fps: float = 50.0, head_dim: int = 128,
                 interaction_strategy: str = "full", apply_cross_rope: bool = True,
                 apply_first_frame_bias_in_rope: bool = False, trainable_condition_scale: bool = False,
                 pooled_adaln: bool = False):
        super().__init__()
        self.check_config(self.config)
        self.layers = interaction_layers(interaction_strategy, visual_layers, audio_layers)
        vdim, adim, hd = visual_hidden_dim, audio_hidden_dim, head_dim
        self.audio_to_video_conditioners = nn.ModuleDict(
            {str(j): ConditionerBlock(vdim, adim, vdim // hd) for j in self.layers}
        )
        self.video_to_audio_conditioners = nn.ModuleDict(
            {str(j): ConditionerBlock(adim, vdim, adim // hd, pooled_adaln=pooled_adaln) for j in self.layers}
        )
        if trainable_condition_scale:
            self.condition_scale = nn.Parameter(torch.ones(1, dtype=torch.float32))

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.audio_to_video_conditioners.values())).inner.q.weight.dtype

    def has_layer(self, j: int) -> bool:
        return str(j) in self.audio_to_video_conditioners

    def rope(self, video_fps: float, grid: tuple[int, int, int], audio_len: int, device: torch.device,
             dtype: torch.dtype, temporal_stride: int = 4):
        """Aligned (cos, sin) tables for both towers (video latent frames ``temporal_stride`` pixel frames apart), or
        (None, None) when ``apply_cross_rope`` is off."""
        if not self.config.apply_cross_rope:
            return None, None
        vpos, apos = aligned_positions(video_fps, grid, audio_len, self.config.audio_fps,
                                       self.config.apply_first_frame_bias_in_rope, temporal_stride, device=device)
        hd = self.config.head_dim
        return rotary_cos_sin(vpos, hd, dtype), rotary_cos_sin(apos, hd, dtype)

    def forward(
        self, j: int, video: torch.Tensor, audio: torch.Tensor,
        video_rope: tuple[torch.Tensor, torch.Tensor] | None, audio_rope: tuple[torch.Tensor, torch.Tensor] | None,
        strength: float | torch.Tensor = 1.0, video_grid: tuple[int, int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One interaction layer. video: [B, L_v, visual_hidden_dim], audio: [B, L_a, audio_hidden_dim];
        strength: float or [B] per-sample bridge strength. Returns the updated (video, audio)."""
        key = str(j)
        a2v = self.audio_to_video_conditioners[key](video, audio, video_rope, audio_rope, video_grid)
        v2a = self.video_to_audio_conditioners[key](audio, video, audio_rope, video_rope, video_grid)
        if isinstance(strength, torch.Tensor):
            strength = strength.to(device=video.device, dtype=video.dtype).reshape(-1, 1, 1)
        if self.config.trainable_condition_scale:
            strength = self.condition_scale.to(video.dtype) * strength
        if isinstance(strength, torch.Tensor):
            return torch.addcmul(video, a2v, strength), torch.addcmul(audio, v2a, strength)
        return torch.add(video, a2v, alpha=strength), torch.add(audio, v2a, alpha=strength)  # one pass each

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialisation for a randomly initialised bridge (joint phase 1): Xavier-uniform projections,
        zero biases, and zero output projections so that a fresh bridge is an identity map and joint
        training starts from the two towers' own behaviour (our choice; the paper does not say)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in [*self.audio_to_video_conditioners.values(), *self.video_to_audio_conditioners.values()]:
            nn.init.zeros_(block.inner.o.weight)
