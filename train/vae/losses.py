"""Losses of autoencoder training and the reconstruction metrics of its held-out evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from train.vae.configuration import LossSpec


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of sqrt((a - b)² + eps²) - eps; with ``weights`` (broadcast to a) the weighted mean."""
    root = torch.sqrt((a - b).pow(2) + eps * eps)
    return root.mean() - eps if weights is None else ((root - eps) * weights).mean() / weights.mean()


def gradient_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean L1 between finite differences of [B, C, T, H, W] along W, H and T (T only when T > 1)."""
    dims = [d for d in (-1, -2, -3) if a.shape[d] > 1]
    return sum((a.diff(dim=d) - b.diff(dim=d)).abs().mean() for d in dims) / len(dims)


def temporal_loss(a: torch.Tensor, b: torch.Tensor, eps: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Charbonnier between the frame-to-frame changes of [B, C, T, H, W] clips; ``weights`` [B, 1, T, H, W] (or
    None) weigh each change by the larger weight of its two frames."""
    pair = None if weights is None else torch.maximum(weights[:, :, 1:], weights[:, :, :-1])
    return charbonnier(a.diff(dim=2), b.diff(dim=2), eps, pair)


def foreground_weights(x: torch.Tensor, spec: LossSpec) -> torch.Tensor:
    """[B, 1, T, H, W] pixel-loss weights of clips x [B, 3, T, H, W] in [-1, 1] (see :class:`LossSpec`)."""
    x = x.float()
    moving = (x - x.median(dim=2, keepdim=True).values).abs().amax(dim=1, keepdim=True) > spec.foreground_motion
    chroma = (x.amax(dim=1, keepdim=True) - x.amin(dim=1, keepdim=True)) / 2 > spec.foreground_chroma
    mask = (moving | chroma).float()
    mask = torch.nn.functional.max_pool3d(mask, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))
    return 1.0 + spec.foreground * mask


def kl_mean(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, 1)) averaged over elements (logvar clamped to [-30, 20] as diffusers)."""
    logvar = logvar.float().clamp(-30.0, 20.0)
    return 0.5 * (mean.float().pow(2) + logvar.exp() - 1.0 - logvar).mean()


def stft_magnitude(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """[B, N] → |STFT| [B, n_fft/2+1, frames], Hann window, hop n_fft/4, float32."""
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x.float(), n_fft, hop_length=n_fft // 4, window=window, return_complex=True)
    return spec.abs()


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor, fft_sizes: Sequence[int]) -> torch.Tensor:
    """Mean over resolutions of spectral convergence (per clip) + L1 of log magnitudes; inputs [B, N]."""
    total = pred.new_zeros((), dtype=torch.float32)
    for n_fft in fft_sizes:
        p, t = stft_magnitude(pred, n_fft), stft_magnitude(target, n_fft)
        sc = torch.linalg.vector_norm(p - t, dim=(1, 2)) / torch.linalg.vector_norm(t, dim=(1, 2)).clamp_min(1e-7)
        log_mag = (torch.log(p.clamp_min(1e-5)) - torch.log(t.clamp_min(1e-5))).abs().mean()
        total = total + sc.mean() + log_mag
    return total / len(fft_sizes)


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of uint8 arrays (peak 255)."""
    mse = np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def log_spectral_distance(pred: np.ndarray, target: np.ndarray, n_fft: int = 512) -> float:
    """LSD in dB: mean over frames of the RMS over bins of 10·log10 power differences (power floor 1e-10)."""
    p, t = (stft_magnitude(torch.from_numpy(a)[None], n_fft)[0].pow(2) for a in (pred, target))
    diff = 10 * (torch.log10(p.clamp_min(1e-10)) - torch.log10(t.clamp_min(1e-10)))
    return float(diff.pow(2).mean(dim=0).sqrt().mean())


def si_sdr(pred: np.ndarray, target: np.ndarray) -> float:
    """Scale-invariant SDR in dB (both signals mean-removed)."""
    pred, target = pred.astype(np.float64) - pred.mean(), target.astype(np.float64) - target.mean()
    scale = np.dot(pred, target) / max(np.dot(target, target), 1e-12)
    projection = scale * target
    noise = pred - projection
    return float(10 * np.log10(max(np.dot(projection, projection), 1e-12) / max(np.dot(noise, noise), 1e-12)))


def detector_agreement(pred: np.ndarray, ref: np.ndarray, scene: str, fps: float) -> dict[str, Any]:
    """Whether the demo world's pixel detectors see in a reconstruction what they see in its reference: ball floor
    contacts (matched within ±1 frame) and the dominant ball colour; the mouth-opening track (correlation)."""
    from train.demo_world.detectors import detect_ball_impacts, dominant_ball_colour, mouth_opening

    if scene == "bouncing_balls":
        ref_t, pred_t = detect_ball_impacts(ref, fps), detect_ball_impacts(pred, fps)
        found = sum(any(abs(p - r) * fps <= 1.0 + 1e-6 for p in pred_t) for r in ref_t)
        return {"scene": scene, "impacts": len(ref_t), "impacts_found": found,
                "colour_same": dominant_ball_colour(pred) == dominant_ball_colour(ref)}
    if scene == "talking_face":
        a, b = mouth_opening(ref), mouth_opening(pred)
        corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
        return {"scene": scene, "mouth_correlation": corr}
    return {"scene": scene}


def summarise_agreement(rows: list[dict[str, Any]]) -> dict[str, float]:
    balls = [r for r in rows if r["scene"] == "bouncing_balls"]
    faces = [r for r in rows if r["scene"] == "talking_face"]
    impacts = sum(r["impacts"] for r in balls)
    return {
        "ball_impact_recall": sum(r["impacts_found"] for r in balls) / impacts if impacts else float("nan"),
        "ball_colour_agreement": float(np.mean([r["colour_same"] for r in balls])) if balls else float("nan"),
        "mouth_correlation_median": float(np.median([r["mouth_correlation"] for r in faces])) if faces
        else float("nan"),
    }

