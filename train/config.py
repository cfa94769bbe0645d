"""Run configuration of ``python -m train run``: nested dataclasses, read from YAML by ``train.yaml_config``.

A stage config (``train/configs/*.yaml``) is a YAML mapping whose keys are the fields below, with ``base:`` chains
and ``--set key.sub=value`` overrides. Unknown keys and invalid values raise ``ConfigError`` (a ValueError) naming
the file, the field (``diffusion.expert_routing``), the value and what is allowed.

    cfg = load_config(TrainConfig, "train/configs/phase1.yaml", overrides=["steps=100", "model.base=ckpt/MOVA-360p"])
    cfg.diffusion.shift_audio   # 1.0

Values of the paper's recipe are in ``train/configs/``; each unknown the configs had to fill is commented there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from train.yaml_config import check_choice, check_number, fail, to_dict

# Trainable components of a MOVA checkpoint: the four denoiser parts; the VAEs stay frozen. The text encoder stays
# frozen in MOVA's recipe (UMT5-XXL); a small one (the demo checkpoint's) may train with the denoiser, full fine-tune
# on one process only (``model.train`` may name it; ``model.reinit`` and LoRA may not).
COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge")
TEXT_ENCODER = "text_encoder"
MODES = ("joint", "audio_only")
EXPERT_ROUTINGS = ("proportional", "alternate")
OPTIMIZERS = ("adamw", "adamw8bit")
STRATEGIES = ("auto", "single", "ddp", "fsdp")
MIXED_PRECISIONS = ("auto", "bf16", "fp32")
EXPORTS = ("always", "final", "never")
EXPORT_DTYPES = ("auto", "bf16", "fp32")

# LoRA targets (suffixes of module paths): q/k/v/o of DiT self-attention, DiT text cross-attention and the
# bridge's conditioner attention (``ConditionerBlock.inner``) — the low-resource recipe of docs/model.md#lora-recipes.
DEFAULT_LORA_TARGETS = tuple(f"{attn}.{p}" for attn in ("self_attn", "cross_attn", "inner") for p in "qkvo")


# ----------------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ModelConfig:
    """Where the weights come from and which of them train.

    Args:
        base: official-layout checkpoint folder the run starts from (all components; VAEs, text encoder,
            tokenizer and scheduler are copied into every export).
        train: components whose weights train (full fine-tune), or, with ``lora.enabled``, that get adapters.
            ``text_encoder`` may be listed too (full fine-tune, ``parallel.strategy`` single): captions are then
            tokenised once and encoded every step, with gradients, instead of read from the cache.
        reinit: components re-initialised with their ``init_weights()`` before training (phase 1: the bridge;
            audio pretraining from scratch: the audio DiT). Must be a subset of ``train``.
    """

    base: str = ""
    train: list[str] = field(default_factory=lambda: list(COMPONENTS))
    reinit: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ClipConfig:
    """Clip geometry (the latent cache is built at exactly this size) and batching.

    Args:
        num_frames: pixel frames per clip, 4k + 1 (193 = 8.04 s at 24 fps).
        fps: video frame rate of the clips.
        height, width: pixels, multiples of 16 (360p is 352 × 640: 360 is not a multiple of 16, docs/model.md#quirks-of-the-released-code).
        batch_size: samples per rank per micro-step.
        text_len: T5 tokens the embeddings are zero-padded to (512, as at inference).
        shuffle: reshuffle the samples every epoch (seeded).
        preload: hold the whole latent cache on the training device (small caches: no reads per step).
    """

    num_frames: int = 193
    fps: float = 24.0
    height: int = 352
    width: int = 640
    batch_size: int = 1
    text_len: int = 512
    shuffle: bool = True
    preload: bool = False


@dataclass(kw_only=True)
class DiffusionConfig:
    """Flow-matching objective (docs/model.md#training-timesteps, #training-recipe).

    Args:
        shift_video, shift_audio: σ shift of each modality's timestep distribution (σ = s·u / (1 + (s − 1)·u)).
        independent_timesteps: draw u separately for video and audio (paper); false = one u for both (released code).
        text_dropout: probability of replacing a sample's caption embedding by the empty prompt's (for CFG).
        image_dropout: probability of replacing a sample's first-frame condition by a pure-white frame's, MOVA's
            text-only input (T2VA), so one checkpoint serves both tasks. The released checkpoints' share is
            unknown; 0 trains image-to-video only.
        loss_weight_video, loss_weight_audio: λ_v, λ_a of L = λ_v·MSE_v + λ_a·MSE_a.
        boundary_ratio: expert boundary as a fraction of 1000; null = the checkpoint's ``model_index.json`` (0.9).
        expert_routing: how each micro-batch is given to a video expert; every sample of a micro-batch (on every
            rank) uses the same expert and draws its video t on that expert's side of the boundary.
            ``proportional``: expert 0 with probability P(t ≥ boundary) under ``shift_video`` (a draw shared by all
            ranks), so the marginal t_video distribution is exactly the shifted one — what routing each sample to
            the expert owning its t gives, batched. ``alternate``: experts take turns by micro-step parity (the
            released accelerate trainer), 50 % of samples each.
    """

    shift_video: float = 5.0
    shift_audio: float = 5.0
    independent_timesteps: bool = True
    text_dropout: float = 0.0
    image_dropout: float = 0.0
    loss_weight_video: float = 1.0
    loss_weight_audio: float = 1.0
    boundary_ratio: float | None = None
    expert_routing: str = "proportional"


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW with per-component learning rates, linear warmup then cosine decay.

    Args:
        optimizer: ``adamw`` (torch) or ``adamw8bit`` (bitsandbytes 8-bit states).
        lr: one peak learning rate for every trained component, or a mapping component → lr (paper: bridge 2e-5,
            towers 1e-5). A mapping must name every component in ``model.train``.
        betas, weight_decay, eps: AdamW hyper-parameters.
        warmup_steps: optimizer steps of linear warmup from ``warmup_start``·lr to lr.
        warmup_start: warmup starting factor (released LoRA recipe: 0.01).
        min_lr_ratio: cosine decay ends at this fraction of each group's peak lr at ``steps``.
        grad_accum: micro-steps per optimizer step.
        grad_clip: max global gradient norm (0 = no clipping).
    """

    optimizer: str = "adamw"
    lr: float | dict[str, float] = field(default_factory=lambda: {
        "video_dit": 1e-5, "video_dit_2": 1e-5, "audio_dit": 1e-5, "dual_tower_bridge": 2e-5})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 500
    warmup_start: float = 0.01
    min_lr_ratio: float = 0.1
    grad_accum: int = 1
    grad_clip: float = 1.0


@dataclass(kw_only=True)
class LoRAConfig:
    """Low-rank adapters (peft) on the components of ``model.train``; their base weights stay frozen.

    Args:
        enabled: train adapters instead of the weights.
        rank, alpha: r and α (the update is (α/r)·B·A; B starts at zero, so a fresh adapter changes nothing).
        dropout: dropout on the adapter input.
        target_modules: suffixes of module paths that get an adapter (default: q/k/v/o of self-, text- and
            bridge attention).
        export_merged: at export also write an official-layout folder with the adapters merged into the weights.
    """

    enabled: bool = False
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    export_merged: bool = False


@dataclass(kw_only=True)
class ParallelConfig:
    """How the model is spread over ranks (``train/parallel.py``).

    Args:
        strategy: ``single`` (one process), ``ddp``, ``fsdp`` (FSDP2: every DiT block and bridge conditioner
            sharded, then the root); ``auto`` = fsdp with several processes or with ``cpu_offload``, else single.
        mixed_precision: ``bf16`` (FSDP2 bf16 params with fp32 gradient reduction; autocast under single/DDP),
            ``fp32``, ``auto`` (bf16 on CUDA, fp32 on CPU).
        activation_checkpointing: recompute each repeated block in the backward pass.
        compile: ``torch.compile`` each repeated block (regional compilation).
        cpu_offload: keep the frozen weights sharded in host memory (FSDP2 CPUOffloadPolicy); each block is copied
            to the GPU for its forward and backward. Trainable weights (the adapters) stay on the GPU, replicated.
    """

    strategy: str = "auto"
    mixed_precision: str = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    cpu_offload: bool = False


@dataclass(kw_only=True)
class CheckpointConfig:
    """Resumable checkpoints and exports.

    Args:
        every: save a resumable checkpoint every this many optimizer steps (0 = only at the end).
        keep_latest: resumable checkpoints kept (older ones are deleted).
        export: write an official-layout folder (adapters with LoRA) into ``always`` every checkpoint, only the
            ``final`` one (``OUT/final``), or ``never``.
        export_dtype: dtype of exported weights: ``auto`` = the base checkpoint's stored dtype.
    """

    every: int = 1000
    keep_latest: int = 3
    export: str = "final"
    export_dtype: str = "auto"


@dataclass(kw_only=True)
class LogConfig:
    """Args:
        every: write a metrics row every this many optimizer steps.
        tensorboard: also write TensorBoard scalars (skipped with a log line when tensorboard is not installed).
        batches: write every micro-batch's noise levels, text-dropout flags and expert to ``batches.jsonl``.
        progress: show a tqdm progress bar on the main process.
    """

    every: int = 10
    tensorboard: bool = True
    batches: bool = False
    progress: bool = True


@dataclass(kw_only=True)
class TrainConfig:
    """A whole run. ``mode``: ``joint`` (both towers and the bridge on video+audio clips) or ``audio_only`` (the
    audio DiT alone on audio with captions: audio pretraining). ``steps``: optimizer steps of the run."""

    name: str = "run"
    mode: str = "joint"
    seed: int = 0
    steps: int = 1000
    max_minutes: float | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: ClipConfig = field(default_factory=ClipConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def lr_for(self, component: str) -> float:
        lr = self.optim.lr
        return float(lr if not isinstance(lr, dict) else lr[component])


# ----------------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------------


def _positive(key: str, value: Any, integer: bool = False, zero_ok: bool = False) -> None:
    check_number(key, value, lo=0, lo_open=not zero_ok, integer=integer)


def _components(key: str, names: list[str], allowed: tuple[str, ...] = COMPONENTS) -> None:
    if any(n not in allowed for n in names) or len(set(names)) != len(names):
        fail(key, names, f"a list of distinct components from {list(allowed)}")


def validate(cfg: TrainConfig) -> None:
    """Check every field; raises ConfigError naming the first invalid one."""
    check_choice("mode", cfg.mode, MODES)
    _positive("steps", cfg.steps, integer=True)
    _positive("seed", cfg.seed, integer=True, zero_ok=True)
    m, d, f, o, lo, p, c, lg = (cfg.model, cfg.data, cfg.diffusion, cfg.optim, cfg.lora, cfg.parallel,
                                cfg.checkpoint, cfg.log)
    # model
    _components("model.train", m.train, (*COMPONENTS, TEXT_ENCODER))
    _components("model.reinit", m.reinit)
    if not m.train:
        fail("model.train", m.train, "at least one component")
    if cfg.mode == "audio_only" and m.train != ["audio_dit"]:
        fail("model.train", m.train, "['audio_dit'] with mode=audio_only (only the audio tower runs)")
    if set(m.reinit) - set(m.train):
        fail("model.reinit", m.reinit, f"components that also train (model.train={m.train})")
    if lo.enabled and m.reinit:
        fail("model.reinit", m.reinit, "[] with lora.enabled (adapters train on top of pretrained weights)")
    if TEXT_ENCODER in m.train:
        if lo.enabled:
            fail("model.train", m.train,
                 f"denoiser components only with lora.enabled (adapters go on {list(COMPONENTS)})")
        if cfg.parallel.strategy not in ("auto", "single") or cfg.parallel.cpu_offload:
            fail("parallel.strategy", cfg.parallel.strategy,
                 f"'single' (or 'auto' on one process) when model.train names {TEXT_ENCODER!r}")
    # data
    _positive("data.num_frames", d.num_frames, integer=True)
    if (d.num_frames - 1) % 4:
        fail("data.num_frames", d.num_frames, "4k + 1 (e.g. 9, 97, 121, 193)")
    _positive("data.fps", d.fps)
    for name in ("height", "width"):
        _positive(f"data.{name}", getattr(d, name), integer=True)
        if getattr(d, name) % 16:
            fail(f"data.{name}", getattr(d, name), "a positive multiple of 16")
    _positive("data.batch_size", d.batch_size, integer=True)
    _positive("data.text_len", d.text_len, integer=True)
    # diffusion
    _positive("diffusion.shift_video", f.shift_video)
    _positive("diffusion.shift_audio", f.shift_audio)
    check_number("diffusion.text_dropout", f.text_dropout, lo=0, hi=1)
    check_number("diffusion.image_dropout", f.image_dropout, lo=0, hi=1)
    if cfg.max_minutes is not None:
        _positive("max_minutes", cfg.max_minutes)
    _positive("diffusion.loss_weight_video", f.loss_weight_video, zero_ok=True)
    _positive("diffusion.loss_weight_audio", f.loss_weight_audio, zero_ok=True)
    if f.loss_weight_video == 0 and f.loss_weight_audio == 0:
        fail("diffusion.loss_weight_audio", 0, "a positive weight for at least one modality")
    if f.boundary_ratio is not None and not 0 < f.boundary_ratio < 1:
        fail("diffusion.boundary_ratio", f.boundary_ratio, "null (the checkpoint's) or a number in (0, 1)")
    check_choice("diffusion.expert_routing", f.expert_routing, EXPERT_ROUTINGS)
    # optim
    check_choice("optim.optimizer", o.optimizer, OPTIMIZERS)
    if isinstance(o.lr, dict):
        _components("optim.lr", list(o.lr), (*COMPONENTS, TEXT_ENCODER))
        missing = [n for n in m.train if n not in o.lr]
        if missing:
            fail("optim.lr", o.lr, f"a learning rate for every trained component (missing {missing})")
        for name, value in o.lr.items():
            _positive(f"optim.lr.{name}", value)
    else:
        _positive("optim.lr", o.lr)
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        fail("optim.betas", o.betas, "two numbers in [0, 1)")
    _positive("optim.weight_decay", o.weight_decay, zero_ok=True)
    _positive("optim.eps", o.eps)
    _positive("optim.warmup_steps", o.warmup_steps, integer=True, zero_ok=True)
    check_number("optim.warmup_start", o.warmup_start, lo=0, hi=1)
    check_number("optim.min_lr_ratio", o.min_lr_ratio, lo=0, hi=1)
    _positive("optim.grad_accum", o.grad_accum, integer=True)
    _positive("optim.grad_clip", o.grad_clip, zero_ok=True)
    # lora
    _positive("lora.rank", lo.rank, integer=True)
    _positive("lora.alpha", lo.alpha)
    if not 0 <= lo.dropout < 1:
        fail("lora.dropout", lo.dropout, "a probability in [0, 1)")
    if not lo.target_modules or not all(lo.target_modules):
        fail("lora.target_modules", lo.target_modules, "a non-empty list of module path suffixes")
    # parallel
    check_choice("parallel.strategy", p.strategy, STRATEGIES)
    check_choice("parallel.mixed_precision", p.mixed_precision, MIXED_PRECISIONS)
    if p.cpu_offload and p.strategy not in ("auto", "fsdp"):
        fail("parallel.strategy", p.strategy, "'fsdp' or 'auto' with parallel.cpu_offload (offload is FSDP2's)")
    if o.optimizer == "adamw8bit" and p.strategy == "fsdp" and not p.cpu_offload:
        fail("optim.optimizer", o.optimizer, "'adamw' with FSDP sharding (bitsandbytes cannot step sharded "
             "DTensor parameters), or set parallel.cpu_offload (trainable weights then stay unsharded)")
    # checkpoint, log
    _positive("checkpoint.every", c.every, integer=True, zero_ok=True)
    _positive("checkpoint.keep_latest", c.keep_latest, integer=True)
    check_choice("checkpoint.export", c.export, EXPORTS)
    check_choice("checkpoint.export_dtype", c.export_dtype, EXPORT_DTYPES)
    _positive("log.every", lg.every, integer=True)
