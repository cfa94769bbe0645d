"""VideoDiT: one Wan2.2-I2V-A14B expert (official class ``WanModel``), docs/model.md#checkpoint-keys, #dit-block, #video-dit.

Input is the 36-channel concatenation [noisy latent 16 | mask 4 | first-frame latent 16] of shape
[B, 36, T', H/8, W/8]; output is the velocity [B, 16, T', H/8, W/8]. Tokens come from a Conv3d patchify
with kernel = stride = (1, 2, 2) in (frame, row, col) order, and carry 3-D interleaved RoPE.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config

from mova.models.checks import MAX_KERNEL, sizes
from mova.models.layers import DiTBackbone, video_rope


class VideoDiT(DiTBackbone):
    """Parameters (keys): ``patch_embedding``, ``text_embedding.{0,2}``, ``time_embedding.{0,2}``,
    ``time_projection.1``, ``blocks.{i}.*``, ``head.{head,modulation}`` — exactly the official ones.

    Args (the official ``config.json`` fields; defaults are MOVA's, docs/model.md#video-dit-config):
        dim, ffn_dim, num_heads, num_layers: width, FFN width, heads and blocks (5120, 13824, 40, 40).
        in_dim, out_dim: latent channels in (noisy ‖ mask ‖ condition = 36) and out (16).
        patch_size: (frame, row, col) patch (1, 2, 2). text_dim: UMT5 width 4096. freq_dim: sinusoidal width 256.
        eps: norm epsilon. The remaining flags are Wan options the MOVA checkpoints leave off (refused when on) or
        store without effect here (``require_*_embedding``, ``in_dim_control_adapter``).
    """

    _official_class_name = "WanModel"
    _config_rules = {**DiTBackbone._config_rules, "patch_size": sizes(MAX_KERNEL, 3)}

    @register_to_config
    def __init__(self, dim: int = 5120, in_dim: int = 36, out_dim: int = 16, ffn_dim: int = 13824,
                 num_heads: int = 40, num_layers: int = 40, patch_size: tuple[int, ...] = (1, 2, 2),
                 text_dim: int = 4096, freq_dim: int = 256, eps: float = 1e-6, has_image_input: bool = False,
                 has_image_pos_emb: bool = False, has_ref_conv: bool = False, add_control_adapter: bool = False,
                 in_dim_control_adapter: int = 24, seperated_timestep: bool = False,  # (sic) the official key
                 require_vae_embedding: bool = True, require_clip_embedding: bool = False,
                 fuse_vae_embedding_in_latents: bool = False):
        super().__init__()
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=tuple(patch_size), stride=tuple(patch_size))

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Real dims of the head given to the (frame, height, width) RoPE axes (docs/model.md#video-rope): 44/42/42 at 128."""
        d = self.head_dim
        hw = 2 * (d // 6)
        return d - 2 * hw, hw, hw

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[B, in_dim, T, H, W] -> tokens [B, L, dim] with L = T/pf · H/ph · W/pw, and the grid (f, h, w)."""
        B, C, T, H, W = x.shape
        pf, ph, pw = self.config.patch_size
        if C != self.config.in_dim:
            raise ValueError(f"video latents have {C} channels, the video DiT expects in_dim={self.config.in_dim}")
        if T % pf or H % ph or W % pw:
            raise ValueError(
                f"video latent size (T={T}, H={H}, W={W}) must be divisible by patch_size={list(self.config.patch_size)}"
            )
        tokens = self.patch_embedding(x.to(self.dtype))  # [B, dim, f, h, w]
        grid = tuple(tokens.shape[2:])
        # [B, f·h·w, dim], made contiguous once: a transposed view would stay transposed through every residual add
        # (elementwise ops keep their first input's layout) and make each LayerNorm copy it again
        return tokens.flatten(2).transpose(1, 2).contiguous(), grid

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, L, pf·ph·pw·out_dim] -> [B, out_dim, f·pf, h·ph, w·pw]; channel index innermost
        (out feature ((p_f·ph + p_h)·pw + p_w)·out_dim + c)."""
        f, h, w = grid
        pf, ph, pw = self.config.patch_size
        c = self.config.out_dim
        x = x.reshape(x.shape[0], f, h, w, pf, ph, pw, c)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, c, f, pf, h, ph, w, pw]
        return x.reshape(x.shape[0], c, f * pf, h * ph, w * pw)

    def rope(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """[f·h·w, head_dim/2] RoPE angles (frame | row | col)."""
        return video_rope(grid, self.rope_split, device)
