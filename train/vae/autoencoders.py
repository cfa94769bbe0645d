"""The two autoencoders: build, training loss, latent statistics, export, held-out evaluation."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from train.vae.clips import video_from_model, video_to_model
from train.vae.configuration import DTYPES, VAETrainConfig
from train.vae.losses import (charbonnier, detector_agreement, foreground_weights, gradient_loss, kl_mean, temporal_loss,
                              log_spectral_distance, multi_resolution_stft_loss, psnr, si_sdr, summarise_agreement)


def build_model(cfg: VAETrainConfig) -> nn.Module:
    if cfg.kind == "video":
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan(**cfg.model)
    from mova.models import AudioVAE

    return AudioVAE(**cfg.model)


def wan_decode_unclamped(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``AutoencoderKLWan._decode`` (diffusers 0.42.1) without its final clamp, whose zero gradient outside [-1, 1]
    would stall pixels that overshoot: z [B, z_dim, T', h, w] → [B, 3, 4(T'−1)+1, 8h, 8w]."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                  first_chunk=i == 0))
    vae.clear_cache()
    return torch.cat(frames, 2)


def audio_posterior(vae: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DAC posterior (mean, logvar) [B, latent_dim, N/hop] of x [B, 1, N] (N a multiple of the hop)."""
    return vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)


def training_losses(cfg: VAETrainConfig, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weighted loss terms of one batch; ``loss`` is their sum. Run under the caller's autocast."""
    w = cfg.loss
    if cfg.kind == "video":
        with torch.no_grad() if cfg.trainable == "decoder" else contextlib.nullcontext():
            posterior = model.encode(x).latent_dist
        mean, logvar = posterior.mean, posterior.logvar
        y = wan_decode_unclamped(model, posterior.sample()).float()
        weights = foreground_weights(x, w) if w.foreground > 0 else None
        terms = {"pixel": w.pixel * charbonnier(y, x, w.charbonnier_eps, weights),
                 "gradient": w.gradient * gradient_loss(y, x)}
        if w.temporal > 0:
            terms["temporal"] = w.temporal * temporal_loss(y, x, w.charbonnier_eps, weights)
    else:
        mean, logvar = audio_posterior(model, x)
        z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * torch.randn_like(mean)
        y = model.decode(z).float()[:, 0]
        target = x[:, 0]
        terms = {"stft": w.stft * multi_resolution_stft_loss(y, target, w.fft_sizes),
                 "waveform": w.waveform * (y - target).abs().mean()}
    terms["kl"] = w.kl * kl_mean(mean, logvar)
    terms["loss"] = sum(terms.values())
    return terms


@torch.no_grad()
def encode_mode(cfg: VAETrainConfig, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Posterior mean (fp32): video [B, z, T', h, w] (the pipeline's ``latent_dist.mode()``); audio [B, c, n]."""
    if cfg.kind == "video":
        return model.encode(x).latent_dist.mode().float()
    return audio_posterior(model, x)[0].float()


@torch.no_grad()
def decode(cfg: VAETrainConfig, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The inference decode: video [B, 3, T, H, W] clamped to [-1, 1]; audio [B, N]."""
    if cfg.kind == "video":
        return model.decode(z).sample.float()
    return model.decode(z).float()[:, 0]


def clips_to_model(cfg: VAETrainConfig, clips: np.ndarray, device: torch.device, hop: int = 1) -> torch.Tensor:
    """Whole clips as model input: video [B, 3, T, H, W]; audio [B, 1, N] cut to a multiple of ``hop``."""
    t = torch.from_numpy(np.ascontiguousarray(clips)).to(device)
    if cfg.kind == "video":
        return video_to_model(t)
    return t[:, None, : t.shape[-1] // hop * hop].float()


@torch.no_grad()
def latent_statistics(cfg: VAETrainConfig, model: nn.Module, clips: np.ndarray, device: torch.device,
                      batch: int = 16) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior mode over whole clips (float64 accumulation)."""
    hop = getattr(model, "hop", 1)
    total = sq = None
    count = 0
    for start in range(0, len(clips), batch):
        z = encode_mode(cfg, model, clips_to_model(cfg, clips[start:start + batch], device, hop)).double()
        z = z.transpose(0, 1).reshape(z.shape[1], -1)                   # [C, everything else]
        total = z.sum(1) if total is None else total + z.sum(1)
        sq = z.pow(2).sum(1) if sq is None else sq + z.pow(2).sum(1)
        count += z.shape[1]
    mean = total / count
    std = (sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.tolist()


@torch.no_grad()
def standardise_audio_latents(vae: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
    """Fold z' = (z − mean)/std into ``quant_conv`` and z = std·z' + mean into ``post_quant_conv``, in place.

    Encoder mean rows: W/std, (b − mean)/std; logvar rows: b − 2·log std (the same Gaussian, rescaled).
    ``post_quant_conv``: b + W·mean, then W·diag(std). Reconstructions are unchanged up to rounding."""
    c = vae.config.latent_dim
    q, p = vae.quant_conv, vae.post_quant_conv
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    qw, qb, pw, pb = (t.double() for t in (q.weight, q.bias, p.weight, p.bias))
    qw[:c] /= s[:, None, None]
    qb[:c] = (qb[:c] - m) / s
    qb[c:] -= 2 * torch.log(s)
    pb += pw[:, :, 0] @ m
    pw *= s[None, :, None]
    for param, value in ((q.weight, qw), (q.bias, qb), (p.weight, pw), (p.bias, pb)):
        param.copy_(value.to(param.dtype))


def export(cfg: VAETrainConfig, model: nn.Module, folder: Path, mean: list[float], std: list[float]) -> Path:
    """Write the official-layout component folder (latent statistics applied) and return it."""
    dtype = DTYPES[cfg.export_dtype]
    model = copy.deepcopy(model).cpu().eval()  # weights are float32 during training
    if cfg.kind == "video":
        model.register_to_config(latents_mean=[round(v, 6) for v in mean], latents_std=[round(v, 6) for v in std])
        if dtype != torch.float32:
            model.to(dtype)
        model.save_pretrained(folder, safe_serialization=True)
    else:
        from mova.loading import save_native

        standardise_audio_latents(model, mean, std)
        save_native(model, folder, dtype=dtype)
    return folder


@torch.no_grad()
def evaluate(cfg: VAETrainConfig, model: nn.Module, clips: np.ndarray, scenes: list[str], device: torch.device,
             batch: int = 8) -> dict[str, Any]:
    """Reconstruction metrics of whole clips through encode (mode) → decode: video PSNR (uint8) per clip and, over
    all clips, per latent frame (pixel frames [0], [1-4], [5-8], ...: the causal VAE's chunks, where drift in later
    chunks shows); audio log-spectral distance and SI-SDR per clip; means overall and per scene."""
    hop = getattr(model, "hop", 1)
    rows: list[dict[str, float]] = []
    agree: list[dict[str, Any]] = []
    frame_se: np.ndarray | None = None  # summed squared error per pixel frame
    for start in range(0, len(clips), batch):
        x = clips_to_model(cfg, clips[start:start + batch], device, hop)
        y = decode(cfg, model, encode_mode(cfg, model, x))
        if cfg.kind == "video":
            pred, ref = video_from_model(y).cpu().numpy(), clips[start:start + batch]
            rows += [{"psnr": psnr(p, t)} for p, t in zip(pred, ref)]
            fps = cfg.world_config().fps
            agree += [detector_agreement(p, t, sc, fps) for p, t, sc in zip(pred, ref, scenes[start:start + batch])]
            se = ((pred.astype(np.float64) - ref.astype(np.float64)) ** 2).sum(axis=(0, 2, 3, 4))
            frame_se = se if frame_se is None else frame_se + se
        else:
            pred, ref = y.cpu().numpy(), x[:, 0].cpu().numpy()
            rows += [{"lsd_db": log_spectral_distance(p, r), "si_sdr_db": si_sdr(p, r)} for p, r in zip(pred, ref)]
    keys = list(rows[0])
    result: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    result["per_scene"] = {s: {k: float(np.mean([r[k] for r, rs in zip(rows, scenes) if rs == s])) for k in keys}
                           for s in sorted(set(scenes))}
    result["clips"] = len(rows)
    if frame_se is not None:
        mse = frame_se / (len(clips) * np.prod(clips.shape[2:]))
        groups = [mse[:1]] + [mse[i:i + 4] for i in range(1, len(mse), 4)]
        result["psnr_by_latent_frame"] = [round(float(10 * np.log10(255.0**2 / max(g.mean(), 1e-10))), 2)
                                          for g in groups]
    if agree:
        result["detectors"] = summarise_agreement(agree)
    return result

