"""VideoDiT: one Wan2.2-I2V-A14B expert (official class ``WanModel``), docs/model.md#checkpoint-keys, #dit-block, #video-dit.

Input is the 36-channel concatenation [noisy latent 16 | mask 4 | first-frame latent 16] of shape
[B, 36, T', H/8, W/8]; output is the velocity [B, 16, T', H/8, W/8]. Tokens come from a Conv3d patchify
with kernel = stride = (1, 2, 2) in (frame, row, col) order, and carry 3-D interleaved RoPE.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mova.config import WanModelConfig
from mova.models.layers import DiTBackbone, video_rope


class VideoDiT(DiTBackbone):
    """Parameters (keys): ``patch_embedding``, ``text_embedding.{0,2}``, ``time_embedding.{0,2}``,
    ``time_projection.1``, ``blocks.{i}.*``, ``head.{head,modulation}`` — exactly the official ones."""

    config_class = WanModelConfig

    def __init__(self, config: WanModelConfig):
        super().__init__(config)
        self.patch_embedding = nn.Conv3d(config.in_dim, config.dim, kernel_size=config.patch_size,
                                         stride=config.patch_size)

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
        return tokens.flatten(2).transpose(1, 2), grid  # [B, f·h·w, dim]

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
        return video_rope(grid, self.config.rope_split, device)
