"""The MOVA trainer: staged joint training (docs/model.md#training-recipe), audio pretraining and LoRA fine-tuning on
torch.distributed (single process, DDP or FSDP2).

One optimizer step (``train_step``) runs ``optim.grad_accum`` micro-steps of ``forward_backward``:

1. a micro-batch of cached latents (video x₀ [B, 16, T', h, w], first-frame condition y [B, 20, T', h, w], audio x₀
   [B, C_a, N_a], T5 embeddings [B, 512, D]);
2. the video expert of the micro-batch (``diffusion.expert_routing``; the same on every rank, as FSDP needs) and,
   per sample, independent video/audio noise levels through their own shifts, restricted to that expert's side of
   the boundary for video (``FlowMatchPairScheduler.sample_training_timesteps``);
3. text dropout: a sample's caption embeddings replaced by the empty prompt's with probability p (when the text
   encoder trains too — ``model.train`` names ``text_encoder`` — the caption's tokens are replaced by the empty
   prompt's and the batch is encoded here, with gradients, instead of read from the cache);
4. x_σ = (1 − σ)·x₀ + σ·ε per modality, the denoiser's velocities,
   L = λ_v·MSE(v̂_v, ε_v − x₀_v) + λ_a·MSE(v̂_a, ε_a − x₀_a);

then gradient clipping, AdamW (per-component learning rates), the warmup + cosine LR schedule.

Randomness: the draws of step 2–4 come from one generator seeded with ``seed`` and are made for the *global* batch
(all ranks' samples); each rank uses its slice. A run on N ranks therefore sees exactly the noise, timesteps and
dropout of a single-process run with N× the batch, and its losses match it (tested with 2 CPU processes). The global
torch/numpy/python RNGs are seeded with ``seed + rank`` (adapter dropout, anything else stochastic).

Single GPU / CPU:   python -m train run train/configs/phase1.yaml --data MANIFEST_OR_CACHE --out runs/phase1
Several GPUs:       torchrun --nproc_per_node 8 -m train run train/configs/phase1.yaml --data ... --out ...
                    (torch.distributed throughout; ``accelerate launch`` sets the same variables and works too)
Resume:             the same command with --resume (latest complete checkpoint under OUT/checkpoints).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mova.pipeline import encode_tokens
from train.checkpoint import (Checkpointer, component_keys, component_of, export_pipeline, full_trainable_state,
                              split_components)
from train.config import TEXT_ENCODER, TrainConfig
from train.latents import LatentCache, ResumableSampler, is_cache
from train.metrics import MetricsLogger
from train.parallel import all_reduce_grads, barrier, ensure_process_group, init_processes, parallelize
from train.schedule import lr_factor
from train.yaml_config import dump_config

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Pieces: the audio-only root, expert routing
# ----------------------------------------------------------------------------------------------------------------------


class AudioTower(nn.Module):
    """Root module of ``mode: audio_only`` (audio pretraining): the audio DiT alone, text-conditioned. Keeps the
    ``audio_dit.`` prefix on parameter names, as in the joint model."""

    def __init__(self, audio_dit: nn.Module) -> None:
        super().__init__()
        self.audio_dit = audio_dit

    def forward(self, audio_latents: torch.Tensor, t_audio: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        return self.audio_dit(audio_latents, t_audio, text_embeds)


def expert_mass(shift: float, boundary_ratio: float) -> float:
    """P(σ_video ≥ boundary) when σ = s·u/(1 + (s − 1)·u), u ~ U[0, 1): 0.357 at s = 5, boundary 0.9."""
    return 1.0 - boundary_ratio / (shift - (shift - 1.0) * boundary_ratio)  # 1 − u at the boundary


@dataclasses.dataclass
class Draw:
    """Randomness of one micro-step for the global batch (G samples)."""

    expert: int | None
    t_video: torch.Tensor  # [G]
    t_audio: torch.Tensor
    sigma_video: torch.Tensor
    sigma_audio: torch.Tensor
    dropped: torch.Tensor  # [G] bool
    noise_video: torch.Tensor | None  # [G, 16, T', h, w]
    noise_audio: torch.Tensor  # [G, C_a, N_a]
    image_dropped: torch.Tensor | None = None  # [G] bool: first-frame condition replaced by the white frame's


# ----------------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------------


class Trainer:
    """Build with a config, a data path (latent cache folder, or a manifest to cache first) and an output folder;
    ``train()`` runs to ``cfg.steps`` and returns the per-step losses of this run."""

    def __init__(self, cfg: TrainConfig, data: str | os.PathLike, out: str | os.PathLike, resume: bool = False) -> None:
        self.cfg, self.out = cfg, Path(out)
        if not cfg.model.base:
            raise ValueError("model.base is empty: set it to the checkpoint folder the run starts from "
                             "(in the YAML or with --set model.base=PATH)")

        # 1. Processes and devices
        self.device, self.rank, self.world = init_processes()
        self.is_main = self.rank == 0
        p = cfg.parallel
        self.strategy = p.strategy if p.strategy != "auto" else (
            "fsdp" if (self.world > 1 or p.cpu_offload) else "single")
        if self.strategy == "single" and self.world > 1:
            raise ValueError(f"parallel.strategy='single' with {self.world} processes: use 'ddp' or 'fsdp'")
        bf16 = p.mixed_precision == "bf16" or (p.mixed_precision == "auto" and self.device.type == "cuda")
        self.compute_dtype = torch.bfloat16 if bf16 else torch.float32
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

        # 2. Data (a manifest is encoded into OUT/cache first)
        self.data = self._open_data(Path(data))
        self.sampler = ResumableSampler(len(self.data), cfg.data.batch_size * self.world, cfg.seed, cfg.data.shuffle)
        self.null_text = self.data.null_text("empty").to(self.device)
        if cfg.mode == "joint" and cfg.diffusion.image_dropout > 0:
            self.white_cond = self.data.white_cond().to(self.device, torch.float32)
        if cfg.data.preload:
            self.data.preload(self.device)

        # 3. Model: base weights, re-initialised parts, trainable set, LoRA (same seed on every rank)
        torch.manual_seed(cfg.seed)
        self.model, self.scheduler, self.boundary_ratio, self.lora_spec = self._build_model()
        self.train_text = TEXT_ENCODER in cfg.model.train
        if self.train_text:
            if self.strategy != "single":
                raise ValueError(f"model.train names {TEXT_ENCODER!r}, which trains on one process only "
                                 f"(parallel.strategy resolved to {self.strategy!r} with {self.world} processes)")
            self.tokens, self.token_mask, self.null_tokens = self._tokenize_captions()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        n_train = sum(p.numel() for p in self.trainable)
        n_total = sum(p.numel() for p in self.model.parameters())

        # 4. Parallelism (activation checkpointing → compile → FSDP2 | DDP); FSDP2 replaces the parameters
        self._parallelize()
        self.trainable = [p for p in self.raw_model.parameters() if p.requires_grad]

        # 5. Optimizer and LR schedule
        self.optimizer = self._build_optimizer()
        o = cfg.optim
        self.total_steps = cfg.steps  # shortened by cfg.max_minutes once the step time is measured
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(
            s, total=self.total_steps, warmup=o.warmup_steps, warmup_start=o.warmup_start, min_ratio=o.min_lr_ratio))

        # 6. Randomness: per-rank global RNGs; one shared generator for the global batch's draws
        random.seed(cfg.seed + self.rank)
        np.random.seed((cfg.seed + self.rank) % 2**32)
        torch.manual_seed(cfg.seed + self.rank)
        self.gen = torch.Generator(self.device).manual_seed(cfg.seed)
        self.step = self.micro_step = 0

        # 7. Checkpoints, metrics, resume
        self.checkpointer = Checkpointer(self.out / "checkpoints", cfg.checkpoint.keep_latest, self.rank, self.is_main)
        resume_from = self._check_resume() if resume else None
        if resume_from is not None:
            self._load_trainer_state(self.checkpointer.load(resume_from, self.model, self.optimizer))
        elif self.is_main:
            (self.out / "config.yaml").write_text(dump_config(cfg))
        self.metrics = MetricsLogger(self.out, enabled=self.is_main, tensorboard=cfg.log.tensorboard,
                                     batches=cfg.log.batches, resume_step=self.step if resume_from else None)
        if self.is_main:
            logger.info("%s: %s, %d process(es), strategy %s, %s on %s; %.2fM of %.2fM parameters train; %s",
                        cfg.name, cfg.mode, self.world, self.strategy, self.compute_dtype, self.device,
                        n_train / 1e6, n_total / 1e6, self.data.summary())

    # -- setup ---------------------------------------------------------------------------------------------------------

    def _open_data(self, path: Path) -> LatentCache:
        cfg = self.cfg
        if not is_cache(path):
            if not path.is_file():
                raise ValueError(f"--data {str(path)!r} is neither a latent cache folder nor a manifest file")
            path = self._cache_manifest(path)
        data = LatentCache(path, text_len=cfg.data.text_len, require_video=cfg.mode == "joint",
                           text=TEXT_ENCODER not in cfg.model.train)  # a trained encoder encodes the captions itself
        data.check(cfg.data.num_frames, cfg.data.fps, cfg.data.height, cfg.data.width)
        return data

    def _cache_manifest(self, manifest: Path) -> Path:
        """Encode a manifest into OUT/cache with the base checkpoint's encoders (rows split over the ranks)."""
        from train.cache import CacheSpec, build_cache

        d = self.cfg.data
        cache = self.out / "cache"
        spec = CacheSpec(num_frames=d.num_frames, fps=d.fps, height=d.height, width=d.width,
                         max_sequence_length=d.text_len, audio_only=self.cfg.mode == "audio_only")
        if self.is_main:
            logger.info("caching %s into %s", manifest, cache)
        build_cache(manifest, self.cfg.model.base, cache, spec, device=self.device, rank=self.rank, world=self.world,
                    progress=self.is_main, barrier=barrier, allow_empty=True)
        barrier()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return cache

    def _build_model(self):
        from mova.loading import library_config, load_components
        from mova.models import DualTowerDenoiser

        cfg = self.cfg
        joint = cfg.mode == "joint"
        names = ["video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "scheduler"] if joint \
            else ["audio_dit", "scheduler"]
        if TEXT_ENCODER in cfg.model.train:
            names.append(TEXT_ENCODER)
        comps = load_components(cfg.model.base, device="cpu", dtype=torch.float32, names=names)
        missing = [n for n in cfg.model.train if n not in comps]
        if missing:
            raise ValueError(f"model.train={cfg.model.train} names {missing}, which {cfg.model.base} does not have")
        boundary = cfg.diffusion.boundary_ratio or float(comps["model_index"].get("boundary_ratio", 0.9))
        text_len = int(comps["model_index"].get("max_sequence_length", cfg.data.text_len))
        if text_len != cfg.data.text_len:  # the pipeline pads prompts to the checkpoint's length at inference
            raise ValueError(f"data.text_len={cfg.data.text_len} differs from {cfg.model.base}'s "
                             f"max_sequence_length={text_len}: train with data.text_len={text_len}")
        scheduler = comps["scheduler"]
        parts = {n: comps[n] for n in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge") if n in comps}
        for name in cfg.model.reinit:
            parts[name].init_weights()
            logger.debug("re-initialised %s", name)
        lora_spec = None
        if cfg.lora.enabled:
            from train.lora import apply_lora, lora_spec as make_spec

            lora_spec = make_spec(cfg.lora, cfg.model.train, str(cfg.model.base))
            apply_lora(parts, lora_spec)
        else:
            for name, module in parts.items():
                module.requires_grad_(name in cfg.model.train)
        if joint:  # the bridge's aligned RoPE spaces latent frames by the VAE's stride, as the pipeline's does
            vae = Path(cfg.model.base) / "video_vae"
            stride = library_config("video_vae", vae).get("scale_factor_temporal", 4) if vae.is_dir() else 4
            model = DualTowerDenoiser(parts["video_dit"], parts["audio_dit"], parts["dual_tower_bridge"],
                                      parts.get("video_dit_2"), boundary, scheduler.config.num_train_timesteps,
                                      int(stride))
        else:
            model = AudioTower(parts["audio_dit"])
        if TEXT_ENCODER in cfg.model.train:  # a child of the root: checkpointed, exported and optimised like the rest
            model.add_module(TEXT_ENCODER, comps[TEXT_ENCODER].requires_grad_(True))
        return model.train(), scheduler, boundary, lora_spec

    def _tokenize_captions(self) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Every cached caption's (ids, mask) [N, text_len] and the empty prompt's ([text_len], [text_len]), on the
        device — tokenised once, the way the pipeline tokenises a prompt."""
        from mova.loading import load_components
        from mova.pipeline import tokenize_prompts

        tokenizer = load_components(self.cfg.model.base, names=["tokenizer"])["tokenizer"]
        captions = [row["caption"] for row in self.data.rows]
        ids, mask = tokenize_prompts(tokenizer, captions, self.cfg.data.text_len)
        null_ids, null_mask = tokenize_prompts(tokenizer, [""], self.cfg.data.text_len)
        return ids.to(self.device), mask.to(self.device), (null_ids[0].to(self.device), null_mask[0].to(self.device))

    def _parallelize(self) -> None:
        cfg, fsdp = self.cfg, self.strategy == "fsdp"
        offload = cfg.parallel.cpu_offload
        self._own_process_group = False
        self._threads = None
        if not offload:
            self.model.to(self.device)
        if not fsdp and self.compute_dtype != torch.float32:
            for p in self.model.parameters():  # frozen weights in the compute dtype (autocast does the rest)
                if not p.requires_grad:
                    p.data = p.data.to(self.compute_dtype)
        mesh = None
        if fsdp:
            from torch.distributed.device_mesh import init_device_mesh

            self._own_process_group = ensure_process_group(self.device)
            mesh = init_device_mesh(self.device.type, (self.world,))
            if self.device.type == "cpu":
                # FSDP2 on CPU runs its collectives on helper threads; spinning OpenMP workers starve them (measured:
                # 5–8 s instead of 0.15 s per tiny step on 2 cores). Leave a core free per process.
                local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
                self._threads = torch.get_num_threads()
                torch.set_num_threads(max(1, (os.cpu_count() or 2) // local - 1))
        param_dtype = self.compute_dtype if self.compute_dtype != torch.float32 else None
        self.model = parallelize(self.model, mesh=mesh, cfg=cfg.parallel, param_dtype=param_dtype, fsdp=fsdp)
        if offload:
            for p in self.trainable:  # not managed by FSDP: kept on the device, replicated
                p.data = p.data.to(self.device)
        self.raw_model = self.model
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        groups: dict[str, list[nn.Parameter]] = {}
        for name, param in self.raw_model.named_parameters():
            if param.requires_grad:
                groups.setdefault(component_of(name), []).append(param)
        param_groups = [{"params": ps, "lr": self.cfg.lr_for(name), "name": name} for name, ps in groups.items()]
        kwargs = dict(betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)
        if o.optimizer == "adamw8bit":
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(param_groups, **kwargs)
        return torch.optim.AdamW(param_groups, **kwargs)

    def _check_resume(self) -> Path | None:
        latest = self.checkpointer.latest()
        if latest is None:
            if self.is_main:
                logger.warning("--resume: no complete checkpoint under %s; starting from step 0",
                               self.checkpointer.folder)
            return None
        saved = self.out / "config.yaml"
        if saved.is_file():
            import yaml

            old, new = yaml.safe_load(saved.read_text()), self.cfg.to_dict()
            for key in ("mode", "model", "lora", "data"):
                if old.get(key) != new.get(key):
                    raise ValueError(f"--resume: config section {key!r} differs from the run in {self.out} "
                                     f"({old.get(key)} vs {new.get(key)}); resume with the same {key} settings")
            changed = sorted(k for k in new if old.get(k) != new[k])
            if changed and self.is_main:
                logger.warning("--resume: config sections %s differ from the saved run; using the new values", changed)
        return latest

    # -- the loop ------------------------------------------------------------------------------------------------------

    def train(self) -> list[float]:
        """Run until ``cfg.steps``; checkpoint every ``checkpoint.every`` steps and at the end; export."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        losses: list[float] = []
        bar = tqdm(total=self.total_steps, initial=self.step, desc=cfg.name, unit="step", dynamic_ncols=True,
                   disable=not (self.is_main and cfg.log.progress))
        start, first, probe_start = time.perf_counter(), self.step, None
        try:
            while self.step < self.total_steps:
                self.step += 1
                t0 = time.perf_counter()
                metrics = self.train_step()
                metrics["step_time_s"] = time.perf_counter() - t0
                if cfg.max_minutes is not None:
                    if self.step - first == BUDGET_WARMUP_STEPS:
                        probe_start = time.perf_counter()  # the first steps (CUDA warm-up, allocator) are not timed
                    elif self.step - first == BUDGET_PROBE_STEPS:
                        pace = (time.perf_counter() - probe_start) / (BUDGET_PROBE_STEPS - BUDGET_WARMUP_STEPS)
                        self._fit_budget(time.perf_counter() - start, pace)
                        bar.total = self.total_steps
                samples = cfg.data.batch_size * self.world * cfg.optim.grad_accum
                metrics["samples_per_s"] = samples / metrics["step_time_s"]
                if self.device.type == "cuda":
                    metrics["max_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
                losses.append(metrics["loss"])
                if self.step % cfg.log.every == 0 or self.step == self.total_steps:
                    self.metrics.log(self.step, metrics)
                first_lr = metrics[f"lr/{self.optimizer.param_groups[0]['name']}"]
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{first_lr:.2e}")
                bar.update(1)
                last = self.step == self.total_steps
                if last or (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0):
                    self.save(final=last)
        finally:
            bar.close()
            self.metrics.close()
        return losses

    def _fit_budget(self, elapsed: float, pace: float) -> None:
        """Set the run's length so that its remaining steps fit ``max_minutes`` at ``pace`` seconds per step (the
        same on every rank); ``elapsed`` is the time spent so far. The budget counts from the start of this run (a
        resumed run gets a fresh budget)."""
        import torch.distributed as dist

        remaining = self.cfg.max_minutes * 60.0 - elapsed
        projected = torch.tensor([self.step + max(0, int(remaining / pace))], device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(projected, op=dist.ReduceOp.MIN)
        total = max(self.step, min(self.cfg.steps, int(projected.item())))
        if total < self.total_steps and self.is_main:
            logger.info("max_minutes=%s: %.3f s/step, the run ends at step %d instead of %d", self.cfg.max_minutes,
                        pace, total, self.cfg.steps)
        self.total_steps = total

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over ``grad_accum`` micro-batches; returns rank-averaged metrics."""
        cfg = self.cfg
        accum = cfg.optim.grad_accum
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, loss_video, loss_audio
        experts = []
        for micro in range(accum):
            with self._sync(last=micro == accum - 1):
                out = self.forward_backward(self._next_batch())
            totals += out["losses"] / accum  # no host sync per micro-step
            experts.append(out["expert"])
        if cfg.parallel.cpu_offload:
            all_reduce_grads(self.trainable)
        metrics: dict[str, Any] = dict(zip(("loss", "loss_video", "loss_audio"), _reduce_mean(totals)))
        if cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.optim.grad_clip)
            metrics["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        for group in self.optimizer.param_groups:
            metrics[f"lr/{group['name']}"] = group["lr"]
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        metrics["experts"] = experts
        return metrics

    def forward_backward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Noise, predict, loss, backward for one micro-batch (this rank's slice of the global batch)."""
        cfg, d = self.cfg, self.cfg.diffusion
        joint = cfg.mode == "joint"
        B = batch["audio"].shape[0]
        local = slice(self.rank * B, (self.rank + 1) * B)
        draw = self.draw(B * self.world, batch)
        self._log_draw(draw)
        self.micro_step += 1

        if self.train_text:
            drop = draw.dropped[local, None]
            ids = torch.where(drop, self.null_tokens[0][None], batch["tokens"])
            mask = torch.where(drop, self.null_tokens[1][None], batch["token_mask"])
        else:
            text = batch["text"].to(self.device, self.compute_dtype)
            text = torch.where(draw.dropped[local, None, None], self.null_text[None].to(text.dtype), text)
        if joint:
            cond = batch["cond"].to(self.device, torch.float32)
            if draw.image_dropped is not None:
                cond = torch.where(draw.image_dropped[local, None, None, None, None], self.white_cond[None], cond)
        audio0 = batch["audio"].to(self.device, torch.float32)
        x_audio = self.scheduler.add_noise(audio0, draw.noise_audio[local], draw.sigma_audio[local])
        target_audio = self.scheduler.velocity_target(audio0, draw.noise_audio[local])
        t_audio = draw.t_audio[local]
        with self._autocast():
            if self.train_text:
                text = encode_tokens(self.raw_model.text_encoder, ids, mask)
            if joint:
                video0 = batch["video"].to(self.device, torch.float32)
                x_video = self.scheduler.add_noise(video0, draw.noise_video[local], draw.sigma_video[local])
                target_video = self.scheduler.velocity_target(video0, draw.noise_video[local])
                model_in = torch.cat([x_video, cond], dim=1)
                pred_video, pred_audio = self.model(model_in, x_audio, text, draw.t_video[local], t_audio,
                                                    batch["fps"], expert=draw.expert)
            else:
                pred_audio = self.model(x_audio, t_audio, text)
        loss_audio = F.mse_loss(pred_audio.float(), target_audio)
        if joint:
            loss_video = F.mse_loss(pred_video.float(), target_video)
            loss = d.loss_weight_video * loss_video + d.loss_weight_audio * loss_audio
        else:
            loss_video = torch.zeros((), device=self.device)
            loss = loss_audio
        (loss / cfg.optim.grad_accum).backward()
        return {"losses": torch.stack([loss, loss_video, loss_audio]).detach().double(), "expert": draw.expert}

    def draw(self, global_batch: int, batch: dict[str, Any]) -> Draw:
        """The micro-step's randomness for all G = B·world samples, from the shared generator (same on every rank):
        expert, timesteps, text-dropout flags, noise — in this order."""
        d, g = self.cfg.diffusion, self.gen
        expert = self._expert_for(self.micro_step)
        ts = self.scheduler.sample_training_timesteps(
            global_batch, generator=g, shift_video=d.shift_video, shift_audio=d.shift_audio,
            independent=d.independent_timesteps, expert=expert, boundary_ratio=self.boundary_ratio)
        dropped = torch.rand(global_batch, generator=g, device=self.device) < d.text_dropout
        image_dropped = None  # drawn only when used, so runs without image dropout keep their random stream
        if self.cfg.mode == "joint" and d.image_dropout > 0:
            image_dropped = torch.rand(global_batch, generator=g, device=self.device) < d.image_dropout
        noise_video = None
        if self.cfg.mode == "joint":
            noise_video = torch.randn((global_batch, *batch["video"].shape[1:]), generator=g, device=self.device)
        noise_audio = torch.randn((global_batch, *batch["audio"].shape[1:]), generator=g, device=self.device)
        return Draw(expert, ts.t_video.to(self.device), ts.t_audio.to(self.device), ts.sigma_video.to(self.device),
                    ts.sigma_audio.to(self.device), dropped, noise_video, noise_audio, image_dropped)

    def _expert_for(self, micro_step: int) -> int | None:
        """Video expert of a micro-step, a pure function of (seed, micro-step): identical on every rank and
        after a resume. None for audio-only runs and single-expert models."""
        model = self.raw_model
        if self.cfg.mode != "joint" or getattr(model, "video_dit_2", None) is None:
            return None
        if self.cfg.diffusion.expert_routing == "alternate":
            return micro_step % 2
        mass = expert_mass(self.cfg.diffusion.shift_video, self.boundary_ratio)
        return 0 if random.Random(self.cfg.seed * 1_000_003 + micro_step).random() < mass else 1

    # -- helpers -------------------------------------------------------------------------------------------------------

    def _next_batch(self) -> dict[str, Any]:
        indices = self.sampler.next()
        B = self.cfg.data.batch_size
        mine = indices[self.rank * B:(self.rank + 1) * B]
        batch = self.data.batch(mine)
        if self.train_text:
            rows = torch.tensor(mine, device=self.device)
            batch["tokens"], batch["token_mask"] = self.tokens[rows], self.token_mask[rows]
        return batch

    def _autocast(self):
        if self.strategy == "fsdp" or self.compute_dtype == torch.float32:
            return contextlib.nullcontext()  # FSDP2 casts parameters itself (MixedPrecisionPolicy)
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def _sync(self, last: bool):
        """No gradient all-reduce / reduce-scatter until the last micro-step of an accumulation window."""
        if self.strategy == "ddp" and not last:
            return self.model.no_sync()
        if self.strategy == "fsdp" and hasattr(self.model, "set_requires_gradient_sync"):
            self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def _log_draw(self, draw: Draw) -> None:
        if self.is_main and self.cfg.log.batches:
            self.metrics.log_batch({
                "step": self.step, "micro_step": self.micro_step, "expert": draw.expert,
                "t_video": draw.t_video.tolist(), "t_audio": draw.t_audio.tolist(),
                "sigma_audio": draw.sigma_audio.tolist(), "dropped": draw.dropped.tolist(),
                **({"image_dropped": draw.image_dropped.tolist()} if draw.image_dropped is not None else {})})

    def close(self) -> None:
        """Release what the trainer opened (metrics files, a process group it created for single-process FSDP)."""
        import torch.distributed as dist

        self.metrics.close()
        if self._threads is not None:
            torch.set_num_threads(self._threads)
            self._threads = None
        if self._own_process_group and dist.is_initialized():
            dist.destroy_process_group()
            self._own_process_group = False

    # -- state ---------------------------------------------------------------------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        state = {"step": self.step, "micro_step": self.micro_step, "total_steps": self.total_steps,
                 "sampler": self.sampler.state_dict(),
                 "lr_scheduler": self.lr_scheduler.state_dict(), "gen": self.gen.get_state(),
                 "torch": torch.get_rng_state(), "numpy": _numpy_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def _load_trainer_state(self, state: dict[str, Any]) -> None:
        self.step, self.micro_step = int(state["step"]), int(state["micro_step"])
        self.total_steps = int(state.get("total_steps", self.cfg.steps)) if self.cfg.max_minutes else self.cfg.steps
        self.sampler.load_state_dict(state["sampler"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])

    def save(self, final: bool = False) -> None:
        """Resumable checkpoint (every rank), then the export the config asks for."""
        path = self.checkpointer.save(self.step, self.model, self.optimizer, self.trainer_state())
        export = self.cfg.checkpoint.export
        if export == "always":
            self.export(path / ("adapter" if self.lora_spec else "pipeline"))
        if final and export != "never":
            self.export(self.out / "final")

    def export(self, folder: Path) -> None:
        """Official-layout folder of the current weights (or the adapter folder with LoRA). Collective."""
        from train.lora import export_adapter, merged_component_states

        state = component_keys(full_trainable_state(self.model))
        if self.is_main:
            cfg = self.cfg
            extra = {"_trained_by": f"train ({cfg.name}, step {self.step})"}
            if self.lora_spec is not None:
                dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(cfg.checkpoint.export_dtype)
                export_adapter(folder, state, self.lora_spec, dtype)
                if cfg.lora.export_merged:
                    merged = merged_component_states(cfg.model.base, state, self.lora_spec)
                    export_pipeline(folder / "merged", cfg.model.base, merged, cfg.checkpoint.export_dtype, extra)
                logger.info("exported LoRA adapter %s", folder)
            else:
                states = {k: v for k, v in split_components(state).items() if k in cfg.model.train}
                export_pipeline(folder, cfg.model.base, states, cfg.checkpoint.export_dtype, extra)
        barrier()


# ----------------------------------------------------------------------------------------------------------------------
# Module helpers
# ----------------------------------------------------------------------------------------------------------------------


BUDGET_WARMUP_STEPS = 10  # max_minutes: steps before the timing starts (CUDA warm-up would inflate the pace)
BUDGET_PROBE_STEPS = 40  # ... and the step at which the run's length is fitted to the budget


def _numpy_rng_state() -> tuple:
    """numpy's global RNG state with its key array as a list, so the trainer state loads with weights_only=True."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, keys.tolist(), int(pos), int(has_gauss), float(cached)


def _reduce_mean(values: torch.Tensor) -> list[float]:
    """Mean over ranks of a small float64 tensor, as Python floats (one host sync)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values.tolist()


def run(cfg: TrainConfig, data: str | os.PathLike, out: str | os.PathLike, resume: bool = False) -> list[float]:
    """Build a :class:`Trainer` and train; returns this run's per-step losses."""
    trainer = Trainer(cfg, data, out, resume=resume)
    try:
        return trainer.train()
    finally:
        trainer.close()
