"""AudioDiT: the audio tower (official class ``WanAudioModel``), docs/model.md#checkpoint-keys, #audio-rope, #audio-dit.

Input is the audio VAE latent [B, 128, N_a] (raw posterior mean, no normalisation); tokens come from a
Conv1d patchify (kernel = stride = patch_size, 1 for MOVA) and carry plain 1-D interleaved RoPE over the
whole head with position = token index.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config

from mova.models.checks import MAX_KERNEL, one_of, sizes
from mova.models.layers import DiTBackbone, rope_angles


class AudioDiT(DiTBackbone):
    """The same DiT on 1-D audio latent tokens. Args: the official ``config.json`` fields (docs/model.md#audio-dit-config),
    those of :class:`~mova.models.VideoDiT` with the audio tower's defaults, plus ``vae_type`` (``"dac"``; the legacy
    ``"oobleck"`` RoPE variant is not used by any released checkpoint)."""

    _official_class_name = "WanAudioModel"
    _config_rules = {**DiTBackbone._config_rules, "patch_size": sizes(MAX_KERNEL, 1), "vae_type": one_of("dac")}

    @register_to_config
    def __init__(self, dim: int = 1536, in_dim: int = 128, out_dim: int = 128, ffn_dim: int = 8960,
                 num_heads: int = 12, num_layers: int = 30, patch_size: tuple[int, ...] = (1,),
                 text_dim: int = 4096, freq_dim: int = 256, eps: float = 1e-6, has_image_input: bool = False,
                 has_image_pos_emb: bool = False, has_ref_conv: bool = False, add_control_adapter: bool = False,
                 in_dim_control_adapter: int = 24, seperated_timestep: bool = False,
                 require_vae_embedding: bool = True, require_clip_embedding: bool = True,
                 fuse_vae_embedding_in_latents: bool = False, vae_type: str = "dac"):
        super().__init__()
        p = patch_size[0]
        self.patch_embedding = nn.Conv1d(in_dim, dim, kernel_size=p, stride=p)

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int]]:
        """[B, in_dim, N] -> tokens [B, N/p, dim], grid (N/p,)."""
        B, C, N = x.shape
        p = self.config.patch_size[0]
        if C != self.config.in_dim:
            raise ValueError(f"audio latents have {C} channels, the audio DiT expects in_dim={self.config.in_dim}")
        if N % p:
            raise ValueError(f"audio latent length {N} must be divisible by patch_size={p}")
        tokens = self.patch_embedding(x.to(self.dtype))  # [B, dim, n]
        return tokens.transpose(1, 2).contiguous(), (tokens.shape[2],)  # contiguous: see VideoDiT.patchify

    def unpatchify(self, x: torch.Tensor, grid: tuple[int]) -> torch.Tensor:
        """[B, n, p·out_dim] -> [B, out_dim, n·p] (channel index innermost)."""
        (n,) = grid
        p = self.config.patch_size[0]
        c = self.config.out_dim
        return x.reshape(x.shape[0], n, p, c).permute(0, 3, 1, 2).reshape(x.shape[0], c, n * p)

    def rope(self, grid: tuple[int], device: torch.device) -> torch.Tensor:
        """[n, head_dim/2] angles with position = token index (docs/model.md#audio-rope: the 22/22/20 chunking of the
        reference concatenates back to this plain table)."""
        return rope_angles(torch.arange(grid[0], device=device), self.head_dim)
