"""Run configuration of ``python -m train run``: nested dataclasses, read from YAML, validated.

A stage config (``train/configs/*.yaml``) is a YAML mapping whose keys are the fields below. A file may start from
another with ``base: other.yaml`` (path relative to the file) and change a few values; ``--set key.sub=value``
on the command line overrides any field last (the value is parsed as YAML: ``--set optim.lr.audio_dit=2e-5``,
``--set model.train=[audio_dit]``). Unknown keys and invalid values raise ``ValueError`` naming the field
(``diffusion.expert_routing``), the value and what is allowed.

    cfg = load_config("train/configs/phase1.yaml", overrides=["steps=100", "model.base=ckpt/MOVA-360p"])
    cfg.diffusion.shift_audio   # 1.0

Values of the paper's recipe are in ``train/configs/``; each unknown the configs had to fill is commented there.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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


def _fail(path: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ValueError(f"{path}={value!r} is invalid: expected {allowed}")


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
class DataConfig:
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
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def lr_for(self, component: str) -> float:
        lr = self.optim.lr
        return float(lr if not isinstance(lr, dict) else lr[component])


# ----------------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------------


def _choice(path: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(path, value, f"one of {list(allowed)}")


def _positive(path: str, value: Any, integer: bool = False, zero_ok: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero_ok):
        _fail(path, value, f"a {'non-negative' if zero_ok else 'positive'} {'integer' if integer else 'number'}")


def _components(path: str, names: list[str], allowed: tuple[str, ...] = COMPONENTS) -> None:
    bad = [n for n in names if n not in allowed]
    if bad or len(set(names)) != len(names):
        _fail(path, names, f"a list of distinct components from {list(allowed)}")


def validate(cfg: TrainConfig) -> None:
    """Check every field; raises ValueError naming the first invalid one."""
    _choice("mode", cfg.mode, MODES)
    _positive("steps", cfg.steps, integer=True)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        _fail("seed", cfg.seed, "a non-negative integer")
    m, d, f, o, lo, p, c, lg = (cfg.model, cfg.data, cfg.diffusion, cfg.optim, cfg.lora, cfg.parallel,
                                cfg.checkpoint, cfg.log)
    # model
    if not isinstance(m.base, str):
        _fail("model.base", m.base, "a checkpoint folder path")
    _components("model.train", m.train, (*COMPONENTS, TEXT_ENCODER))
    _components("model.reinit", m.reinit)
    if not m.train:
        _fail("model.train", m.train, "at least one component")
    if cfg.mode == "audio_only" and m.train != ["audio_dit"]:
        _fail("model.train", m.train, "['audio_dit'] with mode=audio_only (only the audio tower runs)")
    if set(m.reinit) - set(m.train):
        _fail("model.reinit", m.reinit, f"components that also train (model.train={m.train})")
    if lo.enabled and m.reinit:
        _fail("model.reinit", m.reinit, "[] with lora.enabled (adapters train on top of pretrained weights)")
    if TEXT_ENCODER in m.train:
        if lo.enabled:
            _fail("model.train", m.train, f"denoiser components only with lora.enabled (adapters go on {list(COMPONENTS)})")
        if cfg.parallel.strategy not in ("auto", "single") or cfg.parallel.cpu_offload:
            _fail("parallel.strategy", cfg.parallel.strategy,
                  f"'single' (or 'auto' on one process) when model.train names {TEXT_ENCODER!r}")
    # data
    _positive("data.num_frames", d.num_frames, integer=True)
    if (d.num_frames - 1) % 4:
        _fail("data.num_frames", d.num_frames, "4k + 1 (e.g. 9, 97, 121, 193)")
    _positive("data.fps", d.fps)
    for name in ("height", "width"):
        value = getattr(d, name)
        _positive(f"data.{name}", value, integer=True)
        if value % 16:
            _fail(f"data.{name}", value, "a positive multiple of 16")
    _positive("data.batch_size", d.batch_size, integer=True)
    _positive("data.text_len", d.text_len, integer=True)
    # diffusion
    _positive("diffusion.shift_video", f.shift_video)
    _positive("diffusion.shift_audio", f.shift_audio)
    for name in ("text_dropout", "image_dropout"):
        value = getattr(f, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            _fail(f"diffusion.{name}", value, "a probability in [0, 1]")
    if cfg.max_minutes is not None:
        _positive("max_minutes", cfg.max_minutes)
    _positive("diffusion.loss_weight_video", f.loss_weight_video, zero_ok=True)
    _positive("diffusion.loss_weight_audio", f.loss_weight_audio, zero_ok=True)
    if f.loss_weight_video == 0 and f.loss_weight_audio == 0:
        _fail("diffusion.loss_weight_audio", 0, "a positive weight for at least one modality")
    if f.boundary_ratio is not None and not (isinstance(f.boundary_ratio, (int, float)) and 0 < f.boundary_ratio < 1):
        _fail("diffusion.boundary_ratio", f.boundary_ratio, "null (the checkpoint's) or a number in (0, 1)")
    _choice("diffusion.expert_routing", f.expert_routing, EXPERT_ROUTINGS)
    # optim
    _choice("optim.optimizer", o.optimizer, OPTIMIZERS)
    if isinstance(o.lr, dict):
        _components("optim.lr", list(o.lr), (*COMPONENTS, TEXT_ENCODER))
        missing = [n for n in m.train if n not in o.lr]
        if missing:
            _fail("optim.lr", o.lr, f"a learning rate for every trained component (missing {missing})")
        for name, value in o.lr.items():
            _positive(f"optim.lr.{name}", value)
    else:
        _positive("optim.lr", o.lr)
    if len(o.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in o.betas):
        _fail("optim.betas", o.betas, "two numbers in [0, 1)")
    _positive("optim.weight_decay", o.weight_decay, zero_ok=True)
    _positive("optim.eps", o.eps)
    _positive("optim.warmup_steps", o.warmup_steps, integer=True, zero_ok=True)
    if not isinstance(o.warmup_start, (int, float)) or not 0 <= o.warmup_start <= 1:
        _fail("optim.warmup_start", o.warmup_start, "a factor in [0, 1]")
    if not isinstance(o.min_lr_ratio, (int, float)) or not 0 <= o.min_lr_ratio <= 1:
        _fail("optim.min_lr_ratio", o.min_lr_ratio, "a factor in [0, 1]")
    _positive("optim.grad_accum", o.grad_accum, integer=True)
    _positive("optim.grad_clip", o.grad_clip, zero_ok=True)
    # lora
    _positive("lora.rank", lo.rank, integer=True)
    _positive("lora.alpha", lo.alpha)
    if not isinstance(lo.dropout, (int, float)) or not 0 <= lo.dropout < 1:
        _fail("lora.dropout", lo.dropout, "a probability in [0, 1)")
    if not lo.target_modules or not all(isinstance(t, str) and t for t in lo.target_modules):
        _fail("lora.target_modules", lo.target_modules, "a non-empty list of module path suffixes")
    # parallel
    _choice("parallel.strategy", p.strategy, STRATEGIES)
    _choice("parallel.mixed_precision", p.mixed_precision, MIXED_PRECISIONS)
    if p.cpu_offload and p.strategy not in ("auto", "fsdp"):
        _fail("parallel.strategy", p.strategy, "'fsdp' or 'auto' with parallel.cpu_offload (offload is FSDP2's)")
    if o.optimizer == "adamw8bit" and p.strategy == "fsdp" and not p.cpu_offload:
        _fail("optim.optimizer", o.optimizer, "'adamw' with FSDP sharding (bitsandbytes cannot step sharded "
              "DTensor parameters), or set parallel.cpu_offload (trainable weights then stay unsharded)")
    # checkpoint, log
    _positive("checkpoint.every", c.every, integer=True, zero_ok=True)
    _positive("checkpoint.keep_latest", c.keep_latest, integer=True)
    _choice("checkpoint.export", c.export, EXPORTS)
    _choice("checkpoint.export_dtype", c.export_dtype, EXPORT_DTYPES)
    _positive("log.every", lg.every, integer=True)


# ----------------------------------------------------------------------------------------------------------------------
# dict / YAML conversion
# ----------------------------------------------------------------------------------------------------------------------


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Convert a YAML value to the annotated type; ValueError names the field."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(path, value, arg)
            except ValueError:
                continue
        _fail(path, value, " or ".join(_type_name(a) for a in args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            _fail(path, value, "a list")
        (item,) = typing.get_args(hint)
        return [_coerce(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            _fail(path, value, "a mapping")
        _, item = typing.get_args(hint)
        return {str(k): _coerce(f"{path}.{k}", v, item) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            _fail(path, value, "true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, value, "an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                _fail(path, value, "a number")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(path, value, "a number")
        return float(value)
    if hint is str:
        if isinstance(value, bool):  # YAML 1.1 reads unquoted yes/no/on/off as booleans
            _fail(path, value, "a string (quote it: YAML reads unquoted yes/no/on/off as true/false)")
        if not isinstance(value, str):
            _fail(path, value, "a string")
        return value
    return value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is dict:
        return "a mapping"
    if origin is list:
        return "a list"
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _from_dict(cls: type, data: Any, path: str = "") -> Any:
    prefix = f"{path}." if path else ""
    if not isinstance(data, dict):
        _fail(path or cls.__name__, data, "a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"in {path}" if path else "at the top level"
        raise ValueError(f"unknown config key(s) {[prefix + k for k in unknown]}; allowed keys {where}: {names}")
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)  # TrainConfig validates the whole tree in __post_init__


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a (YAML-shaped) dict."""
    return _from_dict(TrainConfig, data)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a dict, with its ``base:`` chain merged in (base first)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"config {path} includes itself through 'base:' ({' -> '.join(map(str, _seen))})")
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a YAML mapping")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ValueError(f"{path}: base={base!r} is invalid: expected a path to another config file")
        data = _deep_merge(read_yaml(path.parent / base, (*_seen, path)), data)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a config dict."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r} is invalid: expected key=value, e.g. optim.grad_accum=4")
        key, raw = item.split("=", 1)
        keys = key.strip().split(".")
        if not all(keys):
            raise ValueError(f"--set {item!r} is invalid: empty key component")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = data
        for k in keys[:-1]:
            child = node.get(k)
            child = dict(child) if isinstance(child, dict) else {}
            node[k] = child
            node = child
        node[keys[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a stage config (with its ``base:`` chain), apply ``--set`` overrides, validate."""
    return config_from_dict(apply_overrides(read_yaml(path), overrides or []))


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
