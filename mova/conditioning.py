"""Known latents: the parts of a clip a generation is given, held in the denoising loop (torch side of
``mova.modes``; docs/model.md#generation-modes).

MOVA's denoiser takes one timestep per modality and sample, so "these frames are given" cannot be a per-frame
timestep. Two mechanisms express it instead:

* a modality given whole (audio → video, video → audio, the kept modality of a retake) is **clean**: its latent is
  the given one and it runs at t = 0 every step, which MOVA's training covers (the video and audio timesteps are
  drawn independently, docs/model.md#training-timesteps);
* a modality given in part (the start of an extension window, the outside of a retake span, a last frame) is held
  by **replacement**: before every step the given latent positions are set to the given latents noised to the
  step's σ with the run's own noise, ``(1 − σ)·x₀ + σ·ε`` (the flow-matching interpolation the model was trained
  on), and after the last step (σ = 0) to the given latents themselves. A weight below 1 blends the two (the
  latent cross-fade of chained windows).

Positions are latent frames along the time axis: video [1, 16, T', h, w] (axis 2), audio [1, C_a, N_a] (axis 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import binary_erosion

__all__ = ["KnownLatents", "video_latent_known", "audio_latent_known"]


@dataclass
class KnownLatents:
    """Given latents of one modality: ``x0`` (float32, the modality's latent shape), ``weight`` float32 [L] per
    latent frame (1 given, 0 generated, between: blended)."""

    x0: torch.Tensor
    weight: torch.Tensor

    @property
    def clean(self) -> bool:
        """Every position given: the modality runs clean at t = 0."""
        return bool((self.weight >= 1.0).all())

    @property
    def any(self) -> bool:
        return bool((self.weight > 0).any())

    def _w(self, z: torch.Tensor) -> torch.Tensor:
        shape = [1] * z.ndim
        shape[2] = -1
        return self.weight.to(z.device).view(shape)

    def hold(self, z: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        """``z`` with the given positions set to ``(1 − σ)·x₀ + σ·ε`` (blended by their weight), in float32."""
        w = self._w(z)
        given = (1.0 - sigma) * self.x0.to(z.device) + sigma * noise.to(z.device, torch.float32)
        return (w * given + (1.0 - w) * z.float()).to(z.dtype)

    def start(self, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        """The SDEdit start of a partial re-noising: every position ``(1 − σ)·x₀ + σ·ε``."""
        return ((1.0 - sigma) * self.x0.to(noise.device) + sigma * noise.float()).to(noise.dtype)


def video_latent_known(known_frames: np.ndarray, temporal: int) -> np.ndarray:
    """bool [N] (frame given) → bool [T'] (latent frame given): latent 0 holds frame 0, latent j ≥ 1 frames
    ``temporal·(j−1)+1 … temporal·j`` (the causal Wan VAE); a latent is given when all its frames are."""
    known = np.asarray(known_frames, bool)
    t_lat = (known.shape[0] - 1) // temporal + 1
    out = np.zeros(t_lat, bool)
    out[0] = known[0]
    for j in range(1, t_lat):
        out[j] = bool(known[temporal * (j - 1) + 1:temporal * j + 1].all())
    return out


def audio_latent_known(known_samples: np.ndarray, hop: int, num_latents: int, margin: int) -> np.ndarray:
    """bool [n] (sample given) → bool [N_a] (latent frame given): latent k covers samples ``k·hop … (k+1)·hop − 1``
    and is given when those and ``margin`` latents' worth on either side are (the DAC's receptive field reaches
    past its own hop, so latents next to generated audio are generated too)."""
    given = np.asarray(known_samples, bool)[:num_latents * hop]
    known = np.full(num_latents * hop, bool(given[-1]) if given.size else False)  # the encoder's zero padding
    known[:given.shape[0]] = given                                              # follows the last sample
    per_latent = known.reshape(num_latents, hop).all(axis=1)
    # a latent stays given only when every latent within ``margin`` is; outside the window: nothing to protect
    return binary_erosion(per_latent, np.ones(2 * max(margin, 0) + 1, bool), border_value=1)
