"""AudioVAE: the continuous DAC audio autoencoder (official class ``DAC``), docs/model.md#audio-vae-config, #audio-latents.

48 kHz mono waveform <-> 128-channel latents at 50 Hz (hop = prod(encoder_rates) = 960). Convolutions are
weight-normalised: with ``use_weight_norm`` the parameters are stored as ``weight_g`` / ``weight_v`` (the
official layout); without it as a plain ``weight``. The loader picks the form the checkpoint has.

Encoder:  WNConv(1→d, k7) → EncoderBlock(2d, s) … → Snake → WNConv(→latent_dim, k3)
          → quant_conv (Conv1d latent→2·latent: mean ‖ logvar) → posterior mean
Decoder:  post_quant_conv → WNConv(latent→D, k7) → DecoderBlock(D/2, s) … → Snake → WNConv(→1, k7) → tanh
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mova.config import DACConfig, FromConfigMixin

# --------------------------------------------------------------------------------------------------------
# 1. Weight-normalised convolutions and Snake
# --------------------------------------------------------------------------------------------------------


class WNConv1d(nn.Module):
    """Conv1d whose weight is ``g · v / ‖v‖`` (norm over every dim but 0) when weight-normed."""

    transposed = False

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, output_padding: int = 0, weight_norm: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation, self.output_padding = stride, padding, dilation, output_padding
        shape = (in_ch, out_ch, kernel_size) if self.transposed else (out_ch, in_ch, kernel_size)
        v = torch.empty(shape)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))
        if weight_norm:
            self.weight_v = nn.Parameter(v)
            self.weight_g = nn.Parameter(v.flatten(1).norm(dim=1).reshape(-1, 1, 1))
        else:
            self.weight = nn.Parameter(v)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.weight_norm = weight_norm

    def effective_weight(self) -> torch.Tensor:
        if not self.weight_norm:
            return self.weight
        v = self.weight_v
        norm = v.float().flatten(1).norm(dim=1).reshape(-1, 1, 1)
        return (self.weight_g.float() * v.float() / norm).to(v.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation)


class WNConvTranspose1d(WNConv1d):
    transposed = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.effective_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, 1, self.dilation)


class Snake(nn.Module):
    """``x + (α + 1e-9)⁻¹ · sin²(α x)`` with a per-channel α [1, C, 1]."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha.to(x.dtype)
        return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


# --------------------------------------------------------------------------------------------------------
# 2. Blocks
# --------------------------------------------------------------------------------------------------------


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int, wn: bool):
        super().__init__()
        self.block = nn.Sequential(
            Snake(dim), WNConv1d(dim, dim, 7, dilation=dilation, padding=3 * dilation, weight_norm=wn),
            Snake(dim), WNConv1d(dim, dim, 1, weight_norm=wn),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        trim = (x.shape[-1] - y.shape[-1]) // 2
        return (x[..., trim:trim + y.shape[-1]] if trim > 0 else x) + y


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, stride: int, wn: bool):
        super().__init__()
        self.block = nn.Sequential(
            ResidualUnit(dim // 2, 1, wn), ResidualUnit(dim // 2, 3, wn), ResidualUnit(dim // 2, 9, wn),
            Snake(dim // 2),
            WNConv1d(dim // 2, dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2), weight_norm=wn),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DecoderBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, stride: int, wn: bool):
        super().__init__()
        self.block = nn.Sequential(
            Snake(in_dim),
            WNConvTranspose1d(in_dim, out_dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
                              output_padding=stride % 2, weight_norm=wn),
            ResidualUnit(out_dim, 1, wn), ResidualUnit(out_dim, 3, wn), ResidualUnit(out_dim, 9, wn),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, c: DACConfig):
        super().__init__()
        wn, d = c.use_weight_norm, c.encoder_dim
        layers: list[nn.Module] = [WNConv1d(1, d, 7, padding=3, weight_norm=wn)]
        for stride in c.encoder_rates:
            d *= 2
            layers.append(EncoderBlock(d, stride, wn))
        layers += [Snake(d), WNConv1d(d, c.latent_dim, 3, padding=1, weight_norm=wn)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    def __init__(self, c: DACConfig):
        super().__init__()
        wn, d = c.use_weight_norm, c.decoder_dim
        layers: list[nn.Module] = [WNConv1d(c.latent_dim, d, 7, padding=3, weight_norm=wn)]
        for stride in c.decoder_rates:
            layers.append(DecoderBlock(d, d // 2, stride, wn))
            d //= 2
        layers += [Snake(d), WNConv1d(d, 1, 7, padding=3, weight_norm=wn), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --------------------------------------------------------------------------------------------------------
# 3. The VAE
# --------------------------------------------------------------------------------------------------------


class AudioVAE(FromConfigMixin, nn.Module):
    config_class = DACConfig
    _no_split_modules = ("EncoderBlock", "DecoderBlock")

    def __init__(self, config: DACConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv1d(config.latent_dim, 2 * config.latent_dim, 1)
        self.post_quant_conv = nn.Conv1d(config.latent_dim, config.latent_dim, 1)
        self.decoder = Decoder(config)

    @property
    def hop(self) -> int:
        return self.config.hop

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def num_latent_frames(self, num_samples: int) -> int:
        """(N − 1)//hop + 1: 403 for 386,000 samples at hop 960 (docs/model.md#audio-latents)."""
        return (int(num_samples) - 1) // self.hop + 1

    def encode(self, audio: torch.Tensor, sample_posterior: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """audio: [B, 1, N] or [B, N] in [-1, 1] -> latents [B, latent_dim, ceil(N/hop)].

        The waveform is right-padded with zeros to a multiple of the hop; the posterior mean is returned
        (a sample with ``sample_posterior``), logvar clamped to [-30, 20]."""
        if audio.ndim == 2:
            audio = audio[:, None, :]
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(f"audio must be [B, 1, N] or [B, N] (mono), got shape {list(audio.shape)}")
        pad = (-audio.shape[-1]) % self.hop
        x = F.pad(audio.to(self.dtype), (0, pad))
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        if not sample_posterior:
            return mean
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, latent_dim, n] -> waveform [B, 1, hop · n] in [-1, 1]."""
        if latents.ndim != 3 or latents.shape[1] != self.config.latent_dim:
            raise ValueError(f"audio latents must be [B, {self.config.latent_dim}, n], got {list(latents.shape)}")
        return self.decoder(self.post_quant_conv(latents.to(self.dtype)))
