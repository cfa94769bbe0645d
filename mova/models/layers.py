"""Pieces shared by the video DiT and the audio DiT (docs/model.md#dit-block): timestep embedding, RoPE, the DiT block,
the output head, and :class:`DiTBackbone`, the part of a Wan-style DiT both towers have in common.

Parameter names equal the official checkpoint keys (``self_attn.q``, ``norm3``, ``ffn.0``, ``modulation``,
``head.head`` ...). Precision follows the reference (docs/model.md#dit-block): time embeddings are computed in fp32 and
cast to the model dtype; the modulate step ``LN(x)·(1+scale)+shift`` is evaluated in fp32 from
model-dtype operands and rounded once; a gated residual ``x + g·y`` is one multiply-add in the model dtype
(``addcmul``: fp32 arithmetic inside the kernel, rounded once), and the head runs in the model dtype. With fp32
weights every step is plain fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffusers.configuration_utils import ConfigMixin
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin

from mova.attention import Attention, attention
from mova.models.checks import MAX_HEADS, MAX_LAYERS, MAX_WIDTH, ConfigRules, fail, flag, off, positive, size

# --------------------------------------------------------------------------------------------------------
# 1. Small functions
# --------------------------------------------------------------------------------------------------------


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Timestep embedding ``[cos(t·ω_k), sin(t·ω_k)]``, ω_k = 10000^(−k/(dim/2)), cos first (docs/model.md#dit-block).

    Args:
        t: [B] timesteps in [0, 1000].
    Returns:
        [B, dim] float32 (computed in float64).
    """
    half = dim // 2
    omega = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(torch.float32)


def linear_fp32(module: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a Linear/activation ``nn.Sequential`` in float32 whatever the weight dtype (the reference runs
    the time embedding under fp32 autocast)."""
    x = x.float()
    with torch.autocast(x.device.type, enabled=False):  # fp32 even inside a bf16 autocast region (training)
        return _run_fp32(module, x)


def _run_fp32(module: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for layer in module:
        if isinstance(layer, nn.Linear) and layer.weight.dtype != torch.float32:
            bias = None if layer.bias is None else layer.bias.float()
            x = F.linear(x, layer.weight.float(), bias)
        else:  # float32 weights (``_keep_in_fp32_modules``): the module's own call, so its forward hooks run
            x = layer(x)
    return x


def modulate(x_norm: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x_norm·(1 + scale) + shift`` evaluated in fp32 and rounded once to ``x_norm.dtype``.

    One ``addcmul`` reads the model-dtype ``x_norm`` as it is (type promotion inside the kernel, no fp32 copy of the
    tokens), then one cast: two passes over the tokens instead of four in eager mode.
    """
    compute = torch.promote_types(x_norm.dtype, torch.float32)
    return torch.addcmul(shift.to(compute), x_norm, 1.0 + scale.to(compute)).to(x_norm.dtype)


# --------------------------------------------------------------------------------------------------------
# 2. Rotary position embedding of the DiTs (interleaved pairs, docs/model.md#video-rope, #audio-rope)
# --------------------------------------------------------------------------------------------------------


def rope_angles(positions: torch.Tensor, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Angles ``pos·θ_m`` with θ_m = theta^(−2m/dim), m < dim/2, in float64.

    Args:
        positions: [L] positions (any real dtype).
    Returns:
        [L, dim/2] float64.
    """
    freqs = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    return positions.to(torch.float64)[:, None] * freqs[None, :]


def video_rope(grid: tuple[int, int, int], split: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """3-D RoPE angles for tokens in (frame, row, col) row-major order; head dims laid out [f | h | w].

    Returns:
        [F·H·W, head_dim/2] float64.
    """
    f, h, w = grid
    parts = []
    for n, dim, shape in ((f, split[0], (f, 1, 1)), (h, split[1], (1, h, 1)), (w, split[2], (1, 1, w))):
        angles = rope_angles(torch.arange(n, device=device), dim)  # [n, dim/2]
        parts.append(angles.view(*shape, dim // 2).expand(f, h, w, dim // 2))
    return torch.cat(parts, dim=-1).reshape(f * h * w, -1)


def rope_tables(angles: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of RoPE angles [L, D/2], built once per forward and shared by every block.

    float32 tables (float64 for a float64 model): the rotation is evaluated at that precision and rounded
    once to the activation dtype, as the reference's float64 complex product is (docs/model.md#dit-block).
    """
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    return torch.cos(angles).to(compute), torch.sin(angles).to(compute)


def apply_rope_interleaved(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate pairs (x_{2m}, x_{2m+1}) of each head by the angle of token l, pair m.

    Args:
        x: [B, L, H, D]
        rope: (cos, sin), each [L, D/2], from :func:`rope_tables`.
    Returns:
        [B, L, H, D] in x.dtype (computed in the tables' dtype, rounded once).
    """
    cos, sin = (t[None, :, None, :] for t in rope)
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)  # [B, L, H, D/2] each, read in x.dtype, computed in the tables'
    out = torch.stack([torch.addcmul(x0 * cos, x1, sin, value=-1), torch.addcmul(x0 * sin, x1, cos)], dim=-1)
    return out.flatten(-2).to(x.dtype)


# --------------------------------------------------------------------------------------------------------
# 3. Attention modules
# --------------------------------------------------------------------------------------------------------


class QKNormAttention(nn.Module):
    """Projections ``q``, ``k``, ``v``, ``o`` with RMSNorm on q and k over the full width (``norm_q``,
    ``norm_k``). Keys and values may come from a stream of another width (``kv_dim``, the bridge)."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6, kv_dim: int | None = None):
        super().__init__()
        kv_dim = kv_dim or dim
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        self.attn = Attention()  # the math (no weights): a seam another attention module can take the place of

    def project(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, Lx, dim], y: [B, Ly, kv_dim] -> q [B, Lx, H, D], k and v [B, Ly, H, D] (q, k normalised)."""
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))
        k = self.norm_k(self.k(y)).unflatten(-1, (self.num_heads, -1))
        return q, k, self.v(y).unflatten(-1, (self.num_heads, -1))


class SelfAttention(QKNormAttention):
    """Self-attention with RoPE applied to q and k after their RMSNorm."""

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x: [B, L, dim], rope: (cos, sin) [L, head_dim/2] -> [B, L, dim]."""
        q, k, v = self.project(x, x)
        out = self.attn(apply_rope_interleaved(q, rope), apply_rope_interleaved(k, rope), v)
        return self.o(out.flatten(-2))


class CrossAttention(QKNormAttention):
    """Text cross-attention: q from the tokens, k/v from the text context; no RoPE, no mask."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: [B, L, dim], context: [B, L_text, dim] -> [B, L, dim]."""
        return self.o(attention(*self.project(x, context)).flatten(-2))


# --------------------------------------------------------------------------------------------------------
# 4. DiT block and head
# --------------------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    """One Wan DiT layer (docs/model.md#dit-block)::

        (s1, c1, g1, s2, c2, g2) = modulation + t_mod
        x = x + g1 · SelfAttn(LN1(x)·(1+c1) + s1)
        x = x + CrossAttn(LN3(x), context)
        x = x + g2 · FFN(LN2(x)·(1+c2) + s2)
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads, eps)
        self.cross_attn = CrossAttention(dim, num_heads, eps)
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(dim, eps=eps, elementwise_affine=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, context: torch.Tensor, t_mod: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x: [B, L, dim]; context: [B, L_text, dim]; t_mod: [B, 6, dim]; rope: (cos, sin) [L, head_dim/2]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.to(t_mod.dtype) + t_mod).chunk(6, dim=1)
        x = torch.addcmul(x, gate1, self.self_attn(modulate(self.norm1(x), shift1, scale1), rope))
        x = x + self.cross_attn(self.norm3(x), context)
        return torch.addcmul(x, gate2, self.ffn(modulate(self.norm2(x), shift2, scale2)))


class Head(nn.Module):
    """Output head: ``Linear(LN(x)·(1+scale) + shift)`` with (shift, scale) = modulation + t_emb."""

    def __init__(self, dim: int, out_features: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_features)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x: [B, L, dim], t_emb: [B, dim] -> [B, L, out_features]. Eager, per-op rounding (not fused)."""
        shift, scale = (self.modulation.to(t_emb.dtype) + t_emb[:, None, :]).chunk(2, dim=1)
        return self.head(self.norm(x) * (1 + scale) + shift)


# --------------------------------------------------------------------------------------------------------
# 5. The backbone both towers share
# --------------------------------------------------------------------------------------------------------


_NOT_IN_MOVA = "MOVA checkpoints do not use this Wan branch; it is not implemented"


class DiTBackbone(ConfigRules, ModelMixin, ConfigMixin, PeftAdapterMixin):
    """Text/time embeddings, blocks and head of a Wan DiT, built from ``self.config`` (the subclass's
    ``@register_to_config`` arguments, checked first). Subclasses add ``patch_embedding`` and define
    ``patchify`` / ``unpatchify`` / ``rope`` for their token layout.

    Capabilities read by offload, compile, multi-device and training code: ``_repeated_blocks`` (modules to
    shard/compile/checkpoint one by one), ``_no_split_modules`` and ``_keep_in_fp32_modules``: the time embedding is
    stored in fp32; ``time_projection`` also runs in fp32 (docs/model.md#dit-block) but from its stored dtype, since as
    fp32 its 157M parameters would hold 0.3 GB more per expert on the GPU (measured in the streamed-offload peak).
    """

    _repeated_blocks = ["DiTBlock"]
    _no_split_modules = ["DiTBlock", "Head"]
    _keep_in_fp32_modules = ["time_embedding"]
    _config_rules = {
        **{k: size(MAX_WIDTH) for k in ("dim", "in_dim", "out_dim", "ffn_dim", "text_dim", "freq_dim",
                                         "in_dim_control_adapter")},
        "num_heads": size(MAX_HEADS), "num_layers": size(MAX_LAYERS), "eps": positive,
        **{k: off(_NOT_IN_MOVA) for k in ("has_image_input", "has_image_pos_emb", "has_ref_conv",
                                          "add_control_adapter", "seperated_timestep",
                                          "fuse_vae_embedding_in_latents")},
        "require_vae_embedding": flag, "require_clip_embedding": flag,
    }

    @classmethod
    def _check_relations(cls, c: dict) -> None:
        if c["dim"] % c["num_heads"]:
            fail(cls.__name__, "num_heads", c["num_heads"], f"a divisor of dim={c['dim']}")
        if (c["dim"] // c["num_heads"]) % 2:
            fail(cls.__name__, "num_heads", c["num_heads"], "a value giving an even head_dim (RoPE rotates pairs)")
        if c["freq_dim"] % 2:
            fail(cls.__name__, "freq_dim", c["freq_dim"], "an even number")

    def __init__(self):
        super().__init__()
        c = self.config
        self.check_config(c)
        dim = c.dim
        self.text_embedding = nn.Sequential(nn.Linear(c.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(DiTBlock(dim, c.ffn_dim, c.num_heads, c.eps) for _ in range(c.num_layers))
        self.head = Head(dim, c.out_dim * math.prod(c.patch_size), c.eps)

    @property
    def head_dim(self) -> int:
        return self.config.dim // self.config.num_heads

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's matmuls (the time MLPs may be kept in fp32)."""
        return self.head.head.weight.dtype
    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t: [B] in [0, 1000] -> (t_emb [B, dim], t_mod [B, 6, dim]) in the model dtype (computed in fp32)."""
        t_emb = linear_fp32(self.time_embedding, sinusoidal_embedding(t, self.config.freq_dim))
        t_mod = linear_fp32(self.time_projection, t_emb).unflatten(1, (6, self.config.dim))
        return t_emb.to(self.dtype), t_mod.to(self.dtype)

    def embed_text(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """[B, L_text, text_dim] -> [B, L_text, dim]."""
        return self.text_embedding(text_embeds.to(self.dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Single-tower forward (no bridge): latents -> velocity of the same layout as the output latents."""
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        t_emb, t_mod = self.embed_time(t)
        context = self.embed_text(text_embeds)
        tokens, grid = self.patchify(x)
        rope = rope_tables(self.rope(grid, x.device), self.dtype)
        for block in self.blocks:
            tokens = block(tokens, context, t_mod, rope)
        return self.unpatchify(self.head(tokens, t_emb), grid)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Wan-style initialisation for training from scratch: Xavier-uniform linears and patch embedding,
        zero biases, N(0, 0.02) text/time embeddings, zero output head (the model starts predicting 0)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for seq in (self.text_embedding, self.time_embedding):
            for layer in seq:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)
        nn.init.zeros_(self.head.head.bias)
        for block in self.blocks:
            block.modulation.copy_(torch.randn_like(block.modulation) / self.config.dim**0.5)
        self.head.modulation.copy_(torch.randn_like(self.head.modulation) / self.config.dim**0.5)
