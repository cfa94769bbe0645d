"""Training the demo checkpoint's two autoencoders on the demo world: a tiny Wan video VAE and a tiny DAC audio VAE.

    python -m train.vae video --out runs/vae_video --device cuda       # train/vae_configs/demo_video.yaml
    python -m train.vae audio --out runs/vae_audio --device cuda       # train/vae_configs/demo_audio.yaml
    python -m train.vae video --out DIR --config my.yaml --steps 500 --batch 16 --set optim.lr=5e-4 [--resume]
    python -m train.vae audio --out DIR --max-minutes 5    # the LR schedule completes within 5 minutes

Tiny CPU configs for smoke runs: ``--config train/vae_configs/tiny_video.yaml`` (or ``tiny_audio.yaml``).

Clips are generated on the fly from deterministic seeds (``clip_seed(data.seed, i, "train")``) into a pool held on
the training device, in worker processes, once; each step draws random crops from it (video: a random window of
``crop_frames`` = 4k+1 frames, a random square of ``crop_size`` pixels, a random horizontal flip; audio: a random
``crop_samples`` window at any sample offset). ``data.path`` reads a ``generate_dataset`` folder instead.

Losses (no GAN, no perceptual network):
    video: Charbonnier(x̂, x) + gradient · L1(∇x̂ − ∇x) over W, H and T + kl · mean KL(q(z|x) ‖ N(0, I))
    audio: stft · Σ_n [SC_n + L1(log|X̂_n| − log|X_n|)] / #n + waveform · L1(x̂, x) + kl · mean KL

A run folder holds ``metrics.jsonl`` (one row per logged step), ``state.pt`` (resumable: model, optimizer, step,
RNG states), the export in the official layout (``video_vae/`` written by diffusers ``save_pretrained``;
``audio_vae/`` by :func:`mova.loading.save_native`) and ``eval.json`` (held-out reconstruction metrics, parameter
count, file sizes, latent statistics).

Latent statistics: MOVA's pipeline normalises video latents with ``latents_mean`` / ``latents_std`` from the video
VAE config (docs/model.md#image-conditioning), so these are measured here (per channel, posterior mode of ``data.stats_clips`` training
clips) and written into the exported config. Audio latents are used unnormalised (docs/model.md#audio-latents), so the export folds
the same per-channel standardisation into ``quant_conv`` (mean rows) and ``post_quant_conv`` (exactly inverse):
the exported DAC encodes to zero-mean, unit-variance latents and reconstructs the same waveform.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from train.demo_world import SCENE_NAMES, WorldConfig, clip_seed, generate_clip

logger = logging.getLogger("train.vae")

CONFIG_DIR = Path(__file__).parent / "vae_configs"
DEFAULT_CONFIGS = {"video": CONFIG_DIR / "demo_video.yaml", "audio": CONFIG_DIR / "demo_audio.yaml"}
KINDS = tuple(DEFAULT_CONFIGS)
EXPORT_NAMES = {"video": "video_vae", "audio": "audio_vae"}  # official component folder names
STATE, METRICS, EVAL = "state.pt", "metrics.jsonl", "eval.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# --------------------------------------------------------------------------------------------------------
# 1. Config
# --------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DataSpec:
    """Where clips come from and how a training sample is cut from one.

    Args:
        seed: world seed; pool clip i is ``clip_seed(seed, i, "train")``, held-out clip i uses split "held_out".
        pool_clips: training clips generated once and held on the device.
        held_out_clips: clips of the held-out split scored after training (``eval.json``).
        stats_clips: training clips whose latents give the latent mean/std.
        scenes: demo-world scenes, taking turns.
        workers: processes generating clips (0: one per CPU core, up to 16).
        path: a ``generate_dataset`` folder (or its manifest.jsonl) to read the pool from instead.
        crop_frames: video frames per sample, 4k+1.
        crop_size: video square crop in pixels, a multiple of 8.
        flip: random horizontal flips (video).
        crop_samples: audio samples per sample, a multiple of the DAC hop.
    """

    seed: int = 0
    pool_clips: int = 2048
    held_out_clips: int = 64
    stats_clips: int = 256
    scenes: list[str] = field(default_factory=lambda: list(SCENE_NAMES))
    workers: int = 0
    path: str | None = None
    crop_frames: int = 17
    crop_size: int = 64
    flip: bool = True
    crop_samples: int = 16000


@dataclass(kw_only=True)
class OptimSpec:
    """AdamW with linear warmup then cosine decay to ``min_lr_ratio · lr``; grad-norm clipping."""

    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0


@dataclass(kw_only=True)
class LossSpec:
    """Loss weights. Video uses pixel, gradient, kl; audio uses stft, waveform, kl.

    ``foreground`` (video): pixels of what the demo world is about — whatever moves (differs from the clip's
    temporal median by more than ``foreground_motion``) or is strongly coloured (chroma above
    ``foreground_chroma``), grown by one pixel — weigh ``1 + foreground`` in the pixel loss instead of 1. Balls a few
    pixels wide and a mouth opening are a few percent of a frame; without it the autoencoder spends its capacity on
    walls and floors and blurs them away.
    """

    pixel: float = 1.0
    foreground: float = 0.0
    foreground_motion: float = 0.1   # in [-1, 1] pixel units (≈ 13/255)
    foreground_chroma: float = 0.3   # (max − min over RGB) / 2 in [-1, 1] units
    gradient: float = 1.0
    charbonnier_eps: float = 1e-3
    stft: float = 1.0
    waveform: float = 1.0
    fft_sizes: list[int] = field(default_factory=lambda: [1024, 512, 256, 128, 64])
    kl: float = 1e-6


@dataclass(kw_only=True)
class VAETrainConfig:
    """One autoencoder training run.

    Args:
        kind: "video" (diffusers ``AutoencoderKLWan``) or "audio" (``mova.models.AudioVAE``, DAC).
        model: the model's config.json fields (AutoencoderKLWan kwargs, or DACConfig fields).
        world: :class:`~train.demo_world.WorldConfig` fields of the generated clips.
        precision: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "bf16" or "fp32"; weights stay fp32.
        export_dtype: dtype of the exported weights, "float32" or "bfloat16".
        max_minutes: a wall-clock budget for training (0 = none): the cosine schedule runs on
            max(step / steps, minutes / max_minutes) and training ends when either reaches 1, then exports and
            evaluates. Lets a run fit a time slot on any GPU (the step count then depends on its speed).
        init: an exported autoencoder folder (this command's ``video_vae/`` or ``audio_vae/``) whose weights the
            run starts from (fine-tuning with other losses); "" = random initialisation. Audio exports fold the
            latent standardisation into their weights, so only video folders are accepted.
        trainable: "all", or "decoder" (video, with ``init``): the encoder stays frozen, so the latent space — and a
            denoiser already trained on it — stays valid; the export keeps the init's ``latents_mean``/``latents_std``.
    """

    kind: str
    model: dict[str, Any]
    world: dict[str, Any] = field(default_factory=dict)
    steps: int = 4000
    batch_size: int = 32
    data: DataSpec = field(default_factory=DataSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    precision: str = "auto"
    export_dtype: str = "float32"
    log_every: int = 50
    checkpoint_every: int = 1000
    max_minutes: float = 0.0
    init: str = ""
    trainable: str = "all"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is invalid: expected one of {list(KINDS)}")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: expected a positive integer")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision={self.precision!r} is invalid: expected 'auto', 'bf16' or 'fp32'")
        if self.init and self.kind != "video":
            raise ValueError(f"init={self.init!r} is invalid for kind='audio': audio exports carry folded latent "
                             "statistics; resume the run folder instead (--resume)")
        if self.trainable not in ("all", "decoder"):
            raise ValueError(f"trainable={self.trainable!r} is invalid: expected 'all' or 'decoder'")
        if self.trainable == "decoder" and (self.kind != "video" or not self.init):
            raise ValueError("trainable='decoder' needs kind='video' and init (the frozen encoder's weights)")
        if self.export_dtype not in DTYPES:
            raise ValueError(f"export_dtype={self.export_dtype!r} is invalid: expected one of {list(DTYPES)}")
        world = self.world_config()
        d = self.data
        for name in ("pool_clips", "held_out_clips", "stats_clips"):
            if getattr(d, name) < 1:
                raise ValueError(f"data.{name}={getattr(d, name)!r} is invalid: expected a positive integer")
        bad = [s for s in d.scenes if s not in SCENE_NAMES]
        if not d.scenes or bad:
            raise ValueError(f"data.scenes={d.scenes!r} is invalid: expected a non-empty subset of {list(SCENE_NAMES)}")
        if self.kind == "video":
            if d.crop_frames < 1 or (d.crop_frames - 1) % 4 or d.crop_frames > world.num_frames:
                raise ValueError(f"data.crop_frames={d.crop_frames!r} is invalid: expected 4k+1 and at most "
                                 f"world.num_frames={world.num_frames}")
            if d.crop_size < 8 or d.crop_size % 8 or d.crop_size > min(world.height, world.width):
                raise ValueError(f"data.crop_size={d.crop_size!r} is invalid: expected a multiple of 8 and at most "
                                 f"min(height, width)={min(world.height, world.width)}")
        else:
            dac = self.dac_config()
            if dac.sample_rate != world.sample_rate:
                raise ValueError(f"model.sample_rate={dac.sample_rate!r} is invalid: expected the world's "
                                 f"sample_rate={world.sample_rate}")
            if d.crop_samples % dac.hop or not 0 < d.crop_samples <= world.num_samples:
                raise ValueError(f"data.crop_samples={d.crop_samples!r} is invalid: expected a multiple of the hop "
                                 f"{dac.hop} and at most the clip length {world.num_samples}")
            if not self.loss.fft_sizes or any(n < 8 or n > d.crop_samples for n in self.loss.fft_sizes):
                raise ValueError(f"loss.fft_sizes={self.loss.fft_sizes!r} is invalid: expected sizes in "
                                 f"[8, crop_samples={d.crop_samples}]")

    def world_config(self) -> WorldConfig:
        return WorldConfig.from_dict(self.world)

    def dac_config(self):
        from mova.config import DACConfig

        return DACConfig.from_dict(dict(self.model))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Strict dataclass from a YAML mapping: unknown keys raise ValueError naming them."""
    if not isinstance(data, dict):
        raise ValueError(f"{path or cls.__name__}={data!r} is invalid: expected a mapping")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown config key(s) {[f'{path}.{k}' if path else k for k in unknown]}; "
                         f"allowed: {sorted(names)}")
    nested = {"data": DataSpec, "optim": OptimSpec, "loss": LossSpec}
    kwargs = {}
    for key, value in data.items():
        if cls is VAETrainConfig and key in nested:
            value = _from_dict(nested[key], value, key)
        elif isinstance(value, str) and isinstance(names[key].default, float):
            value = float(value)  # YAML 1.1 reads "1e-6" as a string
        kwargs[key] = value
    return cls(**kwargs)


def load_vae_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> VAETrainConfig:
    """A config YAML (``base:`` chains allowed) with ``key.sub=value`` overrides applied, validated."""
    from train.config import apply_overrides, read_yaml

    return _from_dict(VAETrainConfig, apply_overrides(read_yaml(path), list(overrides)))


# --------------------------------------------------------------------------------------------------------
# 2. Data: a pool of demo-world clips on the training device
# --------------------------------------------------------------------------------------------------------


def _make_clip(job: tuple[str, str, int, dict]) -> np.ndarray:
    """One clip's video (uint8 [T, H, W, 3]) or audio (float32 [N]); top-level so worker processes can run it."""
    kind, scene, seed, world = job
    clip = generate_clip(scene, seed, WorldConfig.from_dict(world))
    return clip.video if kind == "video" else clip.audio


def generate_clips(cfg: VAETrainConfig, n: int, split: str = "train", offset: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` clips of ``split`` stacked ([n, T, H, W, 3] uint8 or [n, N] float32) and their scene names."""
    scenes = [cfg.data.scenes[(offset + i) % len(cfg.data.scenes)] for i in range(n)]
    jobs = [(cfg.kind, scenes[i], clip_seed(cfg.data.seed, offset + i, split), cfg.world) for i in range(n)]
    workers = cfg.data.workers or min(16, os.cpu_count() or 1)
    if workers <= 1 or n < 16:
        arrays = list(map(_make_clip, jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            arrays = list(pool.map(_make_clip, jobs, chunksize=max(1, n // (4 * workers))))
    return np.stack(arrays), scenes


def read_clips(cfg: VAETrainConfig, n: int) -> tuple[np.ndarray, list[str]]:
    """The first ``n`` clips of a ``generate_dataset`` folder (``npz_path`` preferred, else ``video_path``)."""
    from train.demo_world import read_manifest, read_npz

    path = Path(cfg.data.path)
    rows = read_manifest(path / "manifest.jsonl" if path.is_dir() else path)[:n]
    world = cfg.world_config()
    arrays = []
    for row in rows:
        if "npz_path" in row:
            video, audio, _, sample_rate = read_npz(row["npz_path"])
        else:
            from mova.media import read_mp4

            media = read_mp4(row["video_path"])
            video, audio, sample_rate = media.video, media.audio, media.sample_rate
        if cfg.kind == "audio" and sample_rate != world.sample_rate:
            raise ValueError(f"data.path: clip {row.get('id')} has sample_rate={sample_rate}, expected "
                             f"world.sample_rate={world.sample_rate}")
        arrays.append(video[: world.num_frames] if cfg.kind == "video" else audio[: world.num_samples])
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"data.path={cfg.data.path!r}: clips differ in shape {sorted(shapes)}; expected one shape")
    return np.stack(arrays), [row.get("scene", "?") for row in rows]


class ClipPool:
    """Clips held on the device; :meth:`sample` cuts a random training batch with one advanced-indexing gather.

    video: uint8 [N, T, H, W, 3] → float [B, 3, crop_frames, crop_size, crop_size] in [-1, 1]
    audio: float32 [N, L]        → float [B, 1, crop_samples]
    """

    def __init__(self, clips: np.ndarray, kind: str, data: DataSpec, device: torch.device):
        self.kind, self.data, self.device = kind, data, device
        self.clips = torch.from_numpy(np.ascontiguousarray(clips)).to(device)

    def __len__(self) -> int:
        return self.clips.shape[0]

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        def randint(high: int, size: int = batch) -> torch.Tensor:
            return torch.randint(0, high, (size,), generator=generator, device=self.device)

        i = randint(len(self))
        if self.kind == "audio":
            n = self.data.crop_samples
            start = randint(self.clips.shape[1] - n + 1)
            idx = start[:, None] + torch.arange(n, device=self.device)
            return self.clips[i[:, None], idx][:, None, :]
        _, t, h, w, _ = self.clips.shape
        f, s = self.data.crop_frames, self.data.crop_size
        ar_f, ar_s = torch.arange(f, device=self.device), torch.arange(s, device=self.device)
        ts = randint(t - f + 1)[:, None] + ar_f                          # [B, F]
        ys = randint(h - s + 1)[:, None] + ar_s                          # [B, S]
        xs = randint(w - s + 1)[:, None] + ar_s                          # [B, S]
        if self.data.flip:
            flip = randint(2).bool()[:, None]
            xs = torch.where(flip, xs.flip(1), xs)
        v = self.clips[i[:, None, None, None], ts[:, :, None, None], ys[:, None, :, None], xs[:, None, None, :]]
        return video_to_model(v)                                         # [B, 3, F, S, S]


def video_to_model(video: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] → float32 [B, 3, T, H, W] in [-1, 1]."""
    return video.permute(0, 4, 1, 2, 3).contiguous().float() / 127.5 - 1.0


def video_from_model(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] in [-1, 1] → uint8 [B, T, H, W, 3] (rounded, as the pipeline's postprocess)."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


# --------------------------------------------------------------------------------------------------------
# 3. Losses and metrics
# --------------------------------------------------------------------------------------------------------


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of sqrt((a - b)² + eps²) - eps; with ``weights`` (broadcast to a) the weighted mean."""
    root = torch.sqrt((a - b).pow(2) + eps * eps)
    return root.mean() - eps if weights is None else ((root - eps) * weights).mean() / weights.mean()


def gradient_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean L1 between finite differences of [B, C, T, H, W] along W, H and T (T only when T > 1)."""
    dims = [d for d in (-1, -2, -3) if a.shape[d] > 1]
    return sum((a.diff(dim=d) - b.diff(dim=d)).abs().mean() for d in dims) / len(dims)


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


# --------------------------------------------------------------------------------------------------------
# 4. The two autoencoders: build, training loss, latent statistics, export, evaluation
# --------------------------------------------------------------------------------------------------------


def build_model(cfg: VAETrainConfig) -> nn.Module:
    if cfg.kind == "video":
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan(**cfg.model)
    from mova.models import AudioVAE

    return AudioVAE(cfg.dac_config())


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


# --------------------------------------------------------------------------------------------------------
# 5. Training loop
# --------------------------------------------------------------------------------------------------------


def lr_at(step: int, optim: OptimSpec, total: int, time_fraction: float = 0.0) -> float:
    """Learning rate before optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr_ratio·lr over
    the larger of the step fraction and ``time_fraction`` (the spent part of a ``max_minutes`` budget)."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = min(1.0, max(time_fraction, (step - optim.warmup_steps) / max(1, total - optim.warmup_steps)))
    return optim.lr * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _uses_bf16(cfg: VAETrainConfig, device: torch.device) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def _autocast(cfg: VAETrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=_uses_bf16(cfg, device))


def _save_state(path: Path, cfg: VAETrainConfig, step: int, train_seconds: float, model: nn.Module,
                optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    state = {"step": step, "train_seconds": train_seconds, "config": cfg.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _format_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def train(cfg: VAETrainConfig, out: str | os.PathLike, device: str | torch.device | None = None,
          resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train, export and evaluate one autoencoder into ``out``; returns the ``eval.json`` dict (with the loss
    history of this run under ``losses``). ``stop_after`` ends this invocation after that many steps (the
    schedule still spans ``cfg.steps``; ``resume=True`` continues), as ``max_minutes`` does by wall time."""
    from train.metrics import MetricsLogger

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.data.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    # 1. Data (generated before the model touches the GPU: worker processes are forked)
    t0 = time.perf_counter()
    if cfg.data.path:
        clips, _ = read_clips(cfg, cfg.data.pool_clips)
    else:
        clips, _ = generate_clips(cfg, cfg.data.pool_clips, "train")
    held_out, held_out_scenes = generate_clips(cfg, cfg.data.held_out_clips, "held_out")
    pool = ClipPool(clips, cfg.kind, cfg.data, device)
    logger.info("%s: %d training clips %s on %s, %d held-out clips (%.1f s)", cfg.kind, len(pool),
                list(clips.shape[1:]), device, len(held_out), time.perf_counter() - t0)

    # 2. Model, optimizer, resumable state
    model = build_model(cfg)
    if cfg.init and not resume:
        from diffusers import AutoencoderKLWan

        model.load_state_dict(AutoencoderKLWan.from_pretrained(cfg.init).state_dict())
        logger.info("starting from the weights of %s", cfg.init)
    model = model.to(device).train()
    if cfg.trainable == "decoder":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(("decoder.", "post_quant_conv.")))
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                  weight_decay=cfg.optim.weight_decay, fused=device.type == "cuda")
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.data.seed)
    step, prior_seconds = 0, 0.0
    state_path = out / STATE
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)  # RNG states must stay on CPU
        if state["config"]["model"] != cfg.model:
            raise ValueError(f"--resume: model config {cfg.model} differs from the checkpoint's "
                             f"{state['config']['model']} in {state_path}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step, prior_seconds = state["step"], state.get("train_seconds", 0.0)
        logger.info("resumed from %s at step %d", state_path, step)
    metrics = MetricsLogger(out, enabled=True, tensorboard=False, batches=False, resume_step=step if resume else None)
    logger.info("%s VAE: %.3f M parameters; %d steps of batch %d, lr %.1e, %s", cfg.kind, n_params / 1e6, cfg.steps,
                cfg.batch_size, cfg.optim.lr, "bf16 autocast" if _uses_bf16(cfg, device) else "fp32")

    # 3. Loop
    losses: list[float] = []
    sums: dict[str, torch.Tensor] = {}
    t_start = t_log = time.perf_counter()
    start_step, n_log = step, 0
    budget_s = 60.0 * cfg.max_minutes

    def spent() -> float:  # training seconds of the whole run, earlier invocations included
        return prior_seconds + time.perf_counter() - t_start

    while step < cfg.steps:
        lr = lr_at(step, cfg.optim, cfg.steps, spent() / budget_s if budget_s else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = pool.sample(cfg.batch_size, generator)
        with _autocast(cfg, device):
            terms = training_losses(cfg, model, x)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        step += 1
        for k, v in {**terms, "grad_norm": grad_norm}.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
        n_log += 1
        elapsed = time.perf_counter() - t_start
        out_of_time = bool(budget_s) and spent() >= budget_s
        if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
            values = {k: float(v) / n_log for k, v in sums.items()}  # one device sync per log interval
            if not math.isfinite(values["loss"]):
                raise RuntimeError(f"{cfg.kind} VAE: loss is {values['loss']} at step {step}; lower optim.lr")
            now = time.perf_counter()
            sec = (now - t_log) / n_log
            eta = (cfg.steps - step) * elapsed / (step - start_step)
            eta = min(eta, budget_s - spent()) if budget_s else eta
            values.update(lr=lr, sec_per_step=sec, elapsed_s=elapsed)
            metrics.log(step, values)
            losses.append(values["loss"])
            parts = " ".join(f"{k} {values[k]:.4g}" for k in terms if k != "loss")
            logger.info("%s step %d/%d loss %.4f (%s) lr %.2e | %.3f s/step | ETA %s", cfg.kind, step, cfg.steps,
                        values["loss"], parts, lr, sec, _format_seconds(eta))
            sums, n_log, t_log = {}, 0, now
        stop = out_of_time or (stop_after is not None and step - start_step >= stop_after)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
            _save_state(state_path, cfg, step, spent(), model, optimizer, generator)
        if stop and step < cfg.steps:
            logger.info("stopping at step %d of %d (%s)", step, cfg.steps,
                        f"max_minutes={cfg.max_minutes} reached: schedule complete" if out_of_time
                        else f"stop_after={stop_after}; --resume continues")
            break
    metrics.close()
    train_s = spent()
    del pool

    # 4. Latent statistics, export, held-out evaluation (fp32)
    model.eval()
    if cfg.trainable == "decoder":  # the frozen encoder's latent space, normalised exactly as before
        from diffusers import AutoencoderKLWan

        init_config = AutoencoderKLWan.load_config(cfg.init)
        mean, std = list(init_config["latents_mean"]), list(init_config["latents_std"])
    else:
        mean, std = latent_statistics(cfg, model, clips[: cfg.data.stats_clips], device)
    folder = export(cfg, model, out / EXPORT_NAMES[cfg.kind], mean, std)
    result: dict[str, Any] = {
        "kind": cfg.kind, "steps": step, "train_seconds": round(train_s, 1), "device": str(device),
        "parameters": n_params, "export": str(folder),
        "size_mb": {"float32": round(n_params * 4 / 1e6, 2), "bfloat16": round(n_params * 2 / 1e6, 2),
                    "exported": round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 2)},
        "latents_mean": mean, "latents_std": std, "held_out": evaluate(cfg, model, held_out, held_out_scenes, device),
        "config": cfg.to_dict(),
    }
    if cfg.kind == "audio":
        dac = cfg.dac_config()
        result.update(sample_rate=dac.sample_rate, hop=dac.hop, latent_rate_hz=dac.latent_rate)
    (out / EVAL).write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result["held_out"].items() if isinstance(v, float)}
    summary.update(result["held_out"].get("detectors", {}))
    logger.info("%s VAE exported to %s; held-out %s; %s written", cfg.kind, folder,
                " ".join(f"{k} {v:.2f}" for k, v in summary.items()), out / EVAL)
    return {**result, "losses": losses}


# --------------------------------------------------------------------------------------------------------
# 6. Command line
# --------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train.vae",
                                     description="Train the demo checkpoint's video VAE (Wan) or audio VAE (DAC)")
    parser.add_argument("kind", choices=KINDS, help="which autoencoder")
    parser.add_argument("--out", required=True, help="run folder: metrics.jsonl, state.pt, the export, eval.json")
    parser.add_argument("--config", default=None, help="config YAML (default train/vae_configs/demo_<kind>.yaml)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides the config)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (overrides the config)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--workers", type=int, default=None, help="clip generation processes (default: CPU cores)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="wall-clock training budget: the LR schedule completes within it, then export")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set optim.lr=5e-4 (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    for flag, key in (("steps", "steps"), ("batch", "batch_size"), ("workers", "data.workers"),
                      ("max_minutes", "max_minutes")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    try:
        cfg = load_vae_config(args.config or DEFAULT_CONFIGS[args.kind], overrides)
        if cfg.kind != args.kind:
            raise ValueError(f"--config {args.config!r} has kind={cfg.kind!r}, but the command is {args.kind!r}")
        train(cfg, args.out, device=args.device, resume=args.resume)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
