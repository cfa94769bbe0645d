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

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from mova.models.checks import (MAX_KERNEL, MAX_LAYERS, MAX_SAMPLE_RATE, MAX_VOCAB, MAX_WIDTH, ConfigRules, fail,
                                flag, fraction_or_flag, optional_size, size, sizes)

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
    def __init__(self, c):  # c: AudioVAE.config
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
    def __init__(self, c):  # c: AudioVAE.config
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


class AudioVAE(ConfigRules, ModelMixin, ConfigMixin):
    """Args (the official ``config.json`` fields, docs/model.md#audio-vae-config): ``encoder_dim`` / ``decoder_dim`` and
    ``encoder_rates`` / ``decoder_rates`` (widths and strides; hop = prod(rates) = 960), ``latent_dim`` (128),
    ``sample_rate`` (48,000), ``continuous`` (MOVA's continuous VAE; the RVQ codec is not implemented),
    ``use_weight_norm`` (the storage form of the conv weights; the loader takes it from the checkpoint's keys).
    ``n_codebooks``, ``codebook_size``, ``codebook_dim``, ``quantizer_dropout`` belong to the unused RVQ codec and
    ``hop_length`` (written by some configs; the hop is always prod(encoder_rates)) is stored without effect."""

    _official_class_name = "DAC"
    _no_split_modules = ["EncoderBlock", "DecoderBlock"]
    _config_rules = {
        "encoder_dim": size(MAX_WIDTH), "latent_dim": size(MAX_WIDTH), "decoder_dim": size(MAX_WIDTH),
        "encoder_rates": sizes(MAX_KERNEL), "decoder_rates": sizes(MAX_KERNEL), "sample_rate": size(MAX_SAMPLE_RATE),
        "continuous": lambda v: None if v is True else "true (the RVQ codec is not implemented)",
        "n_codebooks": size(MAX_LAYERS), "codebook_size": size(MAX_VOCAB), "codebook_dim": size(MAX_WIDTH),
        "quantizer_dropout": fraction_or_flag, "use_weight_norm": flag, "hop_length": optional_size(MAX_SAMPLE_RATE),
    }

    @classmethod
    def _check_relations(cls, c: dict) -> None:
        if math.prod(c["encoder_rates"]) != math.prod(c["decoder_rates"]):
            fail(cls.__name__, "decoder_rates", c["decoder_rates"],
                 f"rates whose product equals prod(encoder_rates)={math.prod(c['encoder_rates'])}")
        if c["encoder_dim"] * 2 ** len(c["encoder_rates"]) > MAX_WIDTH:
            fail(cls.__name__, "encoder_dim", c["encoder_dim"], f"at most {MAX_WIDTH} // 2**{len(c['encoder_rates'])} "
                 "(the width doubles at each of the encoder_rates)")
        if c["decoder_dim"] % (2 ** len(c["decoder_rates"])):
            fail(cls.__name__, "decoder_dim", c["decoder_dim"], f"a multiple of 2**{len(c['decoder_rates'])}")

    @register_to_config
    def __init__(self, encoder_dim: int = 128, encoder_rates: tuple[int, ...] = (2, 3, 4, 5, 8), latent_dim: int = 128,
                 decoder_dim: int = 2048, decoder_rates: tuple[int, ...] = (8, 5, 4, 3, 2), sample_rate: int = 48000,
                 continuous: bool = True, n_codebooks: int = 9, codebook_size: int = 1024, codebook_dim: int = 8,
                 quantizer_dropout: bool | float = False, use_weight_norm: bool = True, hop_length: int | None = None):
        super().__init__()
        self.check_config(self.config)
        self.encoder = Encoder(self.config)
        self.quant_conv = nn.Conv1d(latent_dim, 2 * latent_dim, 1)
        self.post_quant_conv = nn.Conv1d(latent_dim, latent_dim, 1)
        self.decoder = Decoder(self.config)

    @property
    def hop(self) -> int:
        """Samples per latent frame (960 for MOVA: 48 kHz / 960 = 50 latent frames per second)."""
        return math.prod(self.config.encoder_rates)

    @property
    def latent_rate(self) -> float:
        return self.config.sample_rate / self.hop

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
