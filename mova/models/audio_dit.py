"""AudioDiT: the audio tower (official class ``WanAudioModel``), docs/model.md#checkpoint-keys, #audio-rope, #audio-dit.

Input is the audio VAE latent [B, 128, N_a] (raw posterior mean, no normalisation); tokens come from a
Conv1d patchify (kernel = stride = patch_size, 1 for MOVA) and carry plain 1-D interleaved RoPE over the
whole head with position = token index.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mova.config import WanAudioModelConfig
from mova.models.layers import DiTBackbone, rope_angles


class AudioDiT(DiTBackbone):
    config_class = WanAudioModelConfig

    def __init__(self, config: WanAudioModelConfig):
        super().__init__(config)
        p = config.patch_size[0]
        self.patch_embedding = nn.Conv1d(config.in_dim, config.dim, kernel_size=p, stride=p)

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int]]:
        """[B, in_dim, N] -> tokens [B, N/p, dim], grid (N/p,)."""
        B, C, N = x.shape
        p = self.config.patch_size[0]
        if C != self.config.in_dim:
            raise ValueError(f"audio latents have {C} channels, the audio DiT expects in_dim={self.config.in_dim}")
        if N % p:
            raise ValueError(f"audio latent length {N} must be divisible by patch_size={p}")
        tokens = self.patch_embedding(x.to(self.dtype))  # [B, dim, n]
        return tokens.transpose(1, 2), (tokens.shape[2],)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int]) -> torch.Tensor:
        """[B, n, p·out_dim] -> [B, out_dim, n·p] (channel index innermost)."""
        (n,) = grid
        p = self.config.patch_size[0]
        c = self.config.out_dim
        return x.reshape(x.shape[0], n, p, c).permute(0, 3, 1, 2).reshape(x.shape[0], c, n * p)

    def rope(self, grid: tuple[int], device: torch.device) -> torch.Tensor:
        """[n, head_dim/2] angles with position = token index (docs/model.md#audio-rope: the 22/22/20 chunking of the
        reference concatenates back to this plain table)."""
        return rope_angles(torch.arange(grid[0], device=device), self.config.head_dim)
