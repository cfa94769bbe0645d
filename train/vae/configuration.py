"""The configuration of an autoencoder run (``train/vae_configs/*.yaml``), read by ``train.yaml_config.load_config``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from train.demo_world import SCENE_NAMES, WorldConfig
from train.yaml_config import check_number, fail, to_dict

CONFIG_DIR = Path(__file__).resolve().parent.parent / "vae_configs"
DEFAULT_CONFIGS = {"video": CONFIG_DIR / "demo_video.yaml", "audio": CONFIG_DIR / "demo_audio.yaml"}
EXPORT_NAMES = {"video": "video_vae", "audio": "audio_vae"}  # official component folder names
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


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

    ``temporal`` (video): Charbonnier of the frame-to-frame change (prediction against target), weighted like the
    pixel loss (a change counts with the larger weight of its two frames). The pixel loss lets a decoder unsure of
    the exact frame of a bounce spread the ball over neighbouring frames; this term charges for the motion it smooths
    away (a floor contact is a one-frame turn of the ball's path).
    """

    pixel: float = 1.0
    foreground: float = 0.0
    foreground_motion: float = 0.1   # in [-1, 1] pixel units (≈ 13/255)
    foreground_chroma: float = 0.3   # (max − min over RGB) / 2 in [-1, 1] units
    gradient: float = 1.0
    temporal: float = 0.0
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
        model: the model's config.json fields (AutoencoderKLWan or AudioVAE keyword arguments).
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

    kind: Literal["video", "audio"]
    model: dict[str, Any]
    world: dict[str, Any] = field(default_factory=dict)
    steps: int = 4000
    batch_size: int = 32
    data: DataSpec = field(default_factory=DataSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    export_dtype: Literal["float32", "bfloat16"] = "float32"
    log_every: int = 50
    checkpoint_every: int = 1000
    max_minutes: float = 0.0
    init: str = ""
    trainable: Literal["all", "decoder"] = "all"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            check_number(name, getattr(self, name), lo=1, integer=True)
        if self.init and self.kind != "video":
            fail("init", self.init, "'' with kind='audio' (audio exports carry folded latent statistics; resume the "
                 "run folder instead with --resume)")
        if self.trainable == "decoder" and (self.kind != "video" or not self.init):
            fail("trainable", self.trainable,
                 "'all' unless kind='video' and init is set (the frozen encoder's weights)")
        world = self.world_config()
        d = self.data
        for name in ("pool_clips", "held_out_clips", "stats_clips"):
            check_number(f"data.{name}", getattr(d, name), lo=1, integer=True)
        if not d.scenes or any(s not in SCENE_NAMES for s in d.scenes):
            fail("data.scenes", d.scenes, f"a non-empty subset of {list(SCENE_NAMES)}")
        if self.kind == "video":
            if d.crop_frames < 1 or (d.crop_frames - 1) % 4 or d.crop_frames > world.num_frames:
                fail("data.crop_frames", d.crop_frames, f"4k+1 and at most world.num_frames={world.num_frames}")
            if d.crop_size < 8 or d.crop_size % 8 or d.crop_size > min(world.height, world.width):
                fail("data.crop_size", d.crop_size,
                     f"a multiple of 8 and at most min(height, width)={min(world.height, world.width)}")
        else:
            dac = self.dac_config()
            if dac.sample_rate != world.sample_rate:
                fail("model.sample_rate", dac.sample_rate, f"the world's sample_rate={world.sample_rate}")
            if d.crop_samples % dac.hop or not 0 < d.crop_samples <= world.num_samples:
                fail("data.crop_samples", d.crop_samples,
                     f"a multiple of the hop {dac.hop} and at most the clip length {world.num_samples}")
            if not self.loss.fft_sizes or any(n < 8 or n > d.crop_samples for n in self.loss.fft_sizes):
                fail("loss.fft_sizes", self.loss.fft_sizes, f"sizes in [8, crop_samples={d.crop_samples}]")

    def world_config(self) -> WorldConfig:
        return WorldConfig.from_dict(self.world)

    def dac_config(self):
        """The audio VAE ``model`` describes, built on the meta device (its fields checked; ``sample_rate``, ``hop``,
        ``latent_rate``)."""
        from mova.models import AudioVAE

        with torch.device("meta"):
            return AudioVAE(**self.model)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
