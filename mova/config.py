"""Component configurations whose fields are the official ``config.json`` fields, and presets.

Every DiT/bridge/VAE class of ``mova.models`` is built from one of these dataclasses. ``from_dict`` takes
the dict read from a checkpoint's ``config.json``: metadata keys (``_class_name``, ``_diffusers_version``,
``_name_or_path`` ...) are kept aside, keys the class does not use are logged once and dropped when the dict
came from a file (as diffusers does: a later MOVA release may add fields) and refused when it was built in
code (a typo), and every value is checked for type and range — sizes against the ceilings below, so an
absurd ``config.json`` is refused before any module is built. ``to_dict`` writes the known keys back, so a
saved folder round-trips.

Values of the full-size presets are from docs/model.md#component-configs (MOVA-360p / MOVA-720p share every
architecture field; they differ in weights and in their trained resolution).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

logger = logging.getLogger(__name__)

DIFFUSERS_VERSION = "0.36.0"  # the version the official checkpoints record

INTERACTION_STRATEGIES = ("full", "shallow_focus", "distributed", "progressive", "custom")

# Ceilings on the sizes a config.json may ask for, far above MOVA-720p's (the largest released model; its values
# in brackets). A config beyond them is refused before anything is built: ``num_layers: 100000`` would otherwise
# fill host memory with module objects even on the meta device, before any weight is compared.
MAX_LAYERS = 512  # transformer blocks per tower / bridge layers [video 40, audio 30, UMT5 24]
MAX_WIDTH = 65_536  # hidden, FFN, text, latent and conv channel widths [5120, 13824, 4096; DAC 2048]
MAX_HEADS = 1_024  # attention heads [video 40, audio 12, UMT5 64]
MAX_HEAD_DIM = 4_096  # per-head width [128; UMT5 d_kv 64]
MAX_KERNEL = 64  # patch sizes and VAE strides, per entry [patch 1x2x2; DAC rates 2..8]
MAX_STAGES = 16  # entries of a rates / patch / dim_mult list [DAC 5 rates; Wan VAE 4 stages]
MAX_VOCAB = 1 << 20  # text-encoder vocabulary [UMT5 256,384]
MAX_SAMPLE_RATE = 384_000  # audio VAE sample rate in Hz [48,000]
MAX_TRAIN_TIMESTEPS = 100_000  # the scheduler's training grid [1000]


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be used; the message starts with the file it is about."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@contextlib.contextmanager
def naming_file(source: str | os.PathLike | None) -> Iterator[None]:
    """A ValueError raised inside becomes a CheckpointError that starts with ``source`` (when there is one)."""
    try:
        yield
    except ValueError as exc:
        if source is None or isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(source, str(exc)) from None


def _fail(cls_name: str, field_name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{cls_name}.{field_name}={value!r} is invalid: expected {allowed}")


_LOGGED_UNUSED: set[tuple[str, str, tuple[str, ...]]] = set()


def log_unused_keys(owner: str, keys: list[str], source: str | os.PathLike, *, quiet: tuple[str, ...] = ()) -> None:
    """Say once per (owner, file, keys) that ``keys`` of ``source`` are not used and will be ignored (diffusers'
    wording). ``quiet`` keys are fields the official class registers that have no meaning here: INFO, not WARNING."""
    if not keys or (owner, str(source), tuple(keys)) in _LOGGED_UNUSED:
        return
    _LOGGED_UNUSED.add((owner, str(source), tuple(keys)))
    level = logging.INFO if all(k in quiet for k in keys) else logging.WARNING
    logger.log(level, "The config attributes %s of %s are not used by %s and will be ignored.", keys, source, owner)


def check_sizes(owner: str, values: dict[str, Any], limits: dict[str, int]) -> None:
    """Every ``values[key]`` with a ceiling in ``limits`` must be an integer in [1, ceiling] (a list: at most
    ``MAX_STAGES`` such integers). ``None`` means "the class default" and passes. ValueError names the key."""
    for key, high in limits.items():
        value = values.get(key)
        if value is None:
            continue
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, (list, tuple)) and len(items) > MAX_STAGES:
            _fail(owner, key, value, f"at most {MAX_STAGES} entries")
        for item in items:
            if isinstance(item, bool) or not isinstance(item, numbers.Integral) or not 1 <= item <= high:
                what = "a list of integers" if isinstance(value, (list, tuple)) else "an integer"
                _fail(owner, key, value, f"{what} from 1 to {high}")


@dataclass(kw_only=True)
class ComponentConfig:
    """Base class: ``from_dict`` / ``to_dict`` over the dataclass fields, with every value checked.

    Subclasses declare ``LIMITS`` (size ceilings of their integer and integer-list fields, next to the fields)
    and put their cross-field rules in ``_validate``.
    """

    CLASS_NAME: ClassVar[str] = ""
    LIMITS: ClassVar[dict[str, int]] = {}
    metadata: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "metadata"]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | os.PathLike | None = None) -> "ComponentConfig":
        """Build from a ``config.json`` dict.

        Args:
            source: the file ``data`` was read from. Errors then start with it, and keys the class does not use
                are logged once and dropped (a later release may add fields; diffusers does the same). Without a
                source (a dict built in code) unknown keys are refused: there they are typos.
        """
        with naming_file(source):
            return cls._from_dict(data, source)

    @classmethod
    def _from_dict(cls, data: dict[str, Any], source: str | os.PathLike | None) -> "ComponentConfig":
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: config must be a JSON object, got {type(data).__name__}")
        allowed = cls.field_names()
        meta = {k: v for k, v in data.items() if k.startswith("_")}
        values = {k: v for k, v in data.items() if not k.startswith("_")}
        unknown = sorted(set(values) - set(allowed))
        if unknown and source is None:
            raise ValueError(
                f"{cls.__name__}: unknown config field(s) {unknown}; allowed fields are {sorted(allowed)}"
            )
        log_unused_keys(cls.__name__, unknown, source or "")
        class_name = meta.get("_class_name")
        if class_name is not None and cls.CLASS_NAME and class_name != cls.CLASS_NAME:
            raise ValueError(f"{cls.__name__}: _class_name is {class_name!r}, expected {cls.CLASS_NAME!r}")
        return cls(**{k: v for k, v in values.items() if k in allowed}, metadata=meta)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_class_name": self.CLASS_NAME, "_diffusers_version": DIFFUSERS_VERSION}
        out.update({k: v for k, v in self.metadata.items() if k not in out})
        for name in self.field_names():
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> "ComponentConfig":
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in dataclasses.fields(self):
            if f.name != "metadata":
                setattr(self, f.name, _typed(name, f.name, getattr(self, f.name), f.type))
        check_sizes(name, {k: getattr(self, k) for k in self.LIMITS}, self.LIMITS)
        self._validate()

    def _validate(self) -> None:
        """Rules between fields (subclasses)."""

    # helpers for _validate
    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                _fail(type(self).__name__, name, value, "a positive number")


def _typed(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against a field annotation of the config classes (JSON types: ints for floats are
    accepted, lists for tuples), normalised to that type."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    annotation = str(annotation)
    if annotation == "bool":
        if isinstance(value, bool):
            return value
        _fail(owner, name, value, "true or false")
    if annotation == "int" or (annotation == "int | None" and value is not None):
        if is_int:
            return int(value)
        _fail(owner, name, value, "an integer" + (" or null" if "None" in annotation else ""))
    if annotation == "float":
        if is_real:
            return float(value)
        _fail(owner, name, value, "a finite number")
    if annotation == "bool | float":
        if isinstance(value, bool) or is_real:
            return value
        _fail(owner, name, value, "true, false or a number")
    if annotation == "str":
        if isinstance(value, str):
            return value
        _fail(owner, name, value, "a string")
    if annotation == "tuple[int, ...]":
        if isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                                    for v in value):
            return tuple(int(v) for v in value)
        _fail(owner, name, value, "a list of integers")
    if annotation == "int | None":
        return value
    raise TypeError(f"{owner}.{name}: no check for annotation {annotation!r}")  # a new field type: add its check


class FromConfigMixin:
    """``from_config`` for model classes: build from a config dataclass or the official ``config.json`` dict
    (parsed strictly by the class's ``config_class``)."""

    config_class: ClassVar[type[ComponentConfig]]

    @classmethod
    def from_config(cls, config: "ComponentConfig | dict[str, Any]"):
        if isinstance(config, dict):
            config = cls.config_class.from_dict(config)
        return cls(config)  # type: ignore[call-arg]


@dataclass(kw_only=True)
class WanModelConfig(ComponentConfig):
    """``video_dit`` / ``video_dit_2`` (official class ``WanModel``, the Wan2.2-I2V-A14B expert).

    Defaults are the MOVA checkpoint values (docs/model.md#video-dit-config). Image-CLIP, reference-conv and control-adapter
    branches are Wan options the MOVA checkpoints leave off; enabling them is refused with a clear error.
    """

    CLASS_NAME: ClassVar[str] = "WanModel"
    dim: int = 5120
    in_dim: int = 36
    out_dim: int = 16
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    patch_size: tuple[int, ...] = (1, 2, 2)
    text_dim: int = 4096
    freq_dim: int = 256
    eps: float = 1e-6
    has_image_input: bool = False
    has_image_pos_emb: bool = False
    has_ref_conv: bool = False
    add_control_adapter: bool = False
    in_dim_control_adapter: int = 24
    seperated_timestep: bool = False  # (sic) the official key
    require_vae_embedding: bool = True
    require_clip_embedding: bool = False
    fuse_vae_embedding_in_latents: bool = False

    UNSUPPORTED: ClassVar[tuple[str, ...]] = (
        "has_image_input", "has_image_pos_emb", "has_ref_conv", "add_control_adapter",
        "seperated_timestep", "fuse_vae_embedding_in_latents",
    )
    PATCH_DIMS: ClassVar[int] = 3
    LIMITS: ClassVar[dict[str, int]] = {  # size ceilings (module docstring), far above the MOVA values above
        "dim": MAX_WIDTH, "in_dim": MAX_WIDTH, "out_dim": MAX_WIDTH, "ffn_dim": MAX_WIDTH, "text_dim": MAX_WIDTH,
        "freq_dim": MAX_WIDTH, "in_dim_control_adapter": MAX_WIDTH, "num_heads": MAX_HEADS, "num_layers": MAX_LAYERS,
        "patch_size": MAX_KERNEL,
    }

    def _validate(self) -> None:
        name = type(self).__name__
        self._positive("dim", "in_dim", "out_dim", "ffn_dim", "num_heads", "num_layers", "text_dim", "freq_dim", "eps")
        if self.dim % self.num_heads:
            _fail(name, "num_heads", self.num_heads, f"a divisor of dim={self.dim}")
        if self.freq_dim % 2:
            _fail(name, "freq_dim", self.freq_dim, "an even number")
        if len(self.patch_size) != self.PATCH_DIMS or any(int(p) < 1 for p in self.patch_size):
            _fail(name, "patch_size", list(self.patch_size), f"{self.PATCH_DIMS} positive integers")
        for flag in self.UNSUPPORTED:
            if getattr(self, flag):
                _fail(name, flag, True, "false (MOVA checkpoints do not use this Wan branch; it is not implemented)")
        if self.head_dim % 2:
            _fail(name, "num_heads", self.num_heads, "a value giving an even head_dim (RoPE rotates pairs)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Real dims of the head given to the (frame, height, width) RoPE axes (docs/model.md#video-rope): 44/42/42 at 128."""
        d = self.head_dim
        hw = 2 * (d // 6)
        return d - 2 * hw, hw, hw


@dataclass(kw_only=True)
class WanAudioModelConfig(WanModelConfig):
    """``audio_dit`` (official class ``WanAudioModel``): the same DiT on 1-D audio latent tokens (docs/model.md#audio-dit-config)."""

    CLASS_NAME: ClassVar[str] = "WanAudioModel"
    dim: int = 1536
    in_dim: int = 128
    out_dim: int = 128
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    patch_size: tuple[int, ...] = (1,)
    require_vae_embedding: bool = True  # unused by the audio model; kept because the checkpoint stores it
    require_clip_embedding: bool = True
    vae_type: str = "dac"

    PATCH_DIMS: ClassVar[int] = 1

    def _validate(self) -> None:
        super()._validate()
        if self.vae_type != "dac":
            _fail(type(self).__name__, "vae_type", self.vae_type,
                  "'dac' (the legacy 'oobleck' RoPE variant is not used by any released MOVA checkpoint)")


@dataclass(kw_only=True)
class BridgeConfig(ComponentConfig):
    """``dual_tower_bridge`` (official class ``DualTowerConditionalBridge``), docs/model.md#bridge-config and #bridge."""

    CLASS_NAME: ClassVar[str] = "DualTowerConditionalBridge"
    visual_layers: int = 40
    audio_layers: int = 30
    visual_hidden_dim: int = 5120
    audio_hidden_dim: int = 1536
    audio_fps: float = 50.0
    head_dim: int = 128
    interaction_strategy: str = "full"
    apply_cross_rope: bool = True
    apply_first_frame_bias_in_rope: bool = False
    trainable_condition_scale: bool = False
    pooled_adaln: bool = False

    LIMITS: ClassVar[dict[str, int]] = {  # size ceilings (module docstring), far above the MOVA values above
        "visual_layers": MAX_LAYERS, "audio_layers": MAX_LAYERS, "visual_hidden_dim": MAX_WIDTH,
        "audio_hidden_dim": MAX_WIDTH, "head_dim": MAX_HEAD_DIM,
    }

    def _validate(self) -> None:
        name = type(self).__name__
        self._positive("visual_layers", "audio_layers", "visual_hidden_dim", "audio_hidden_dim", "audio_fps", "head_dim")
        if self.interaction_strategy not in INTERACTION_STRATEGIES:
            _fail(name, "interaction_strategy", self.interaction_strategy, f"one of {list(INTERACTION_STRATEGIES)}")
        for dim_name in ("visual_hidden_dim", "audio_hidden_dim"):
            if getattr(self, dim_name) % self.head_dim:
                _fail(name, dim_name, getattr(self, dim_name), f"a multiple of head_dim={self.head_dim}")
        if self.head_dim % 2:
            _fail(name, "head_dim", self.head_dim, "an even number (rotate-half RoPE)")
        if self.pooled_adaln and self.visual_hidden_dim % (self.audio_hidden_dim // self.head_dim):
            _fail(name, "pooled_adaln", True,
                  f"false for these widths: the per-frame pooling needs visual_hidden_dim={self.visual_hidden_dim} "
                  f"divisible by the audio head count {self.audio_hidden_dim // self.head_dim}")

    def interaction_layers(self) -> list[int]:
        """Layer indices j with a conditioner in both directions (video layer j <-> audio layer j)."""
        n = min(self.visual_layers, self.audio_layers)
        strategy = self.interaction_strategy
        if strategy == "full":
            return list(range(n))
        if strategy == "shallow_focus":
            return list(range(min(10, n // 3)))
        if strategy == "distributed":
            return list(range(0, n, 3))
        if strategy == "progressive":
            return list(range(min(8, n))) + (list(range(8, n, 3)) if n > 8 else [])
        return [i for i in (0, 2, 4, 6, 8, 12, 16, 20) if i < n]  # "custom"


@dataclass(kw_only=True)
class DACConfig(ComponentConfig):
    """``audio_vae`` (official class ``DAC``, continuous mode), docs/model.md#audio-vae-config."""

    CLASS_NAME: ClassVar[str] = "DAC"
    encoder_dim: int = 128
    encoder_rates: tuple[int, ...] = (2, 3, 4, 5, 8)
    latent_dim: int = 128
    decoder_dim: int = 2048
    decoder_rates: tuple[int, ...] = (8, 5, 4, 3, 2)
    sample_rate: int = 48000
    continuous: bool = True
    n_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8
    quantizer_dropout: bool | float = False
    use_weight_norm: bool = True
    # Carried by some configs (sglang writes 3840); the model computes the hop as prod(encoder_rates) and
    # never reads this value. Kept so such a config.json loads and round-trips unchanged.
    hop_length: int | None = None

    LIMITS: ClassVar[dict[str, int]] = {  # size ceilings (module docstring), far above the MOVA values above
        "encoder_dim": MAX_WIDTH, "latent_dim": MAX_WIDTH, "decoder_dim": MAX_WIDTH, "encoder_rates": MAX_KERNEL,
        "decoder_rates": MAX_KERNEL, "sample_rate": MAX_SAMPLE_RATE, "n_codebooks": MAX_LAYERS,
        "codebook_size": MAX_VOCAB, "codebook_dim": MAX_WIDTH,
    }

    def _validate(self) -> None:
        name = type(self).__name__
        self._positive("encoder_dim", "latent_dim", "decoder_dim", "sample_rate")
        if not self.continuous:
            _fail(name, "continuous", False, "true (MOVA uses the continuous VAE; the RVQ codec is not implemented)")
        for key in ("encoder_rates", "decoder_rates"):
            rates = getattr(self, key)
            if not rates or any(int(r) < 1 for r in rates):
                _fail(name, key, list(rates), "a non-empty list of positive integers")
        if math.prod(self.encoder_rates) != math.prod(self.decoder_rates):
            _fail(name, "decoder_rates", list(self.decoder_rates),
                  f"rates whose product equals prod(encoder_rates)={math.prod(self.encoder_rates)}")
        if self.encoder_dim * 2 ** len(self.encoder_rates) > MAX_WIDTH:
            _fail(name, "encoder_dim", self.encoder_dim, f"at most {MAX_WIDTH} // 2**{len(self.encoder_rates)} (the "
                  "width doubles at each of the encoder_rates)")
        if self.decoder_dim % (2 ** len(self.decoder_rates)):
            _fail(name, "decoder_dim", self.decoder_dim, f"a multiple of 2**{len(self.decoder_rates)}")

    @property
    def hop(self) -> int:
        """Samples per latent frame (960 for MOVA: 48 kHz / 960 = 50 latent frames per second)."""
        return math.prod(self.encoder_rates)

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.hop


# --------------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------------

# The official Wan2.1 VAE (diffusers AutoencoderKLWan) config, docs/model.md#video-vae-config.
WAN21_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
    "temperal_downsample": [False, True, True], "dropout": 0.0,
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160],
    "scale_factor_spatial": 8, "scale_factor_temporal": 4,
}

# UMT5-XXL encoder (docs/model.md#text-encoder-config).
UMT5_XXL_CONFIG: dict[str, Any] = {
    "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64, "vocab_size": 256384,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu", "pad_token_id": 0, "eos_token_id": 1,
    "is_encoder_decoder": True, "tie_word_embeddings": False,
}

SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 5.0, "extra_one_step": True}

# Size ceilings (module docstring) of the library components' config.json keys, checked before diffusers or
# transformers build anything; the MOVA values are in the two configs above. ``None`` values pass (class default).
LIBRARY_LIMITS: dict[str, dict[str, int]] = {
    "video_vae": {
        "base_dim": MAX_WIDTH // MAX_KERNEL, "decoder_base_dim": MAX_WIDTH // MAX_KERNEL, "z_dim": MAX_WIDTH,
        "dim_mult": MAX_KERNEL, "num_res_blocks": MAX_LAYERS // 8, "in_channels": MAX_WIDTH,
        "out_channels": MAX_WIDTH, "patch_size": MAX_KERNEL, "scale_factor_spatial": MAX_KERNEL,
        "scale_factor_temporal": MAX_KERNEL,
    },
    "text_encoder": {
        "d_model": MAX_WIDTH, "d_kv": MAX_HEAD_DIM, "d_ff": MAX_WIDTH, "num_layers": MAX_LAYERS,
        "num_decoder_layers": MAX_LAYERS, "num_heads": MAX_HEADS, "vocab_size": MAX_VOCAB,
        "relative_attention_num_buckets": MAX_WIDTH, "relative_attention_max_distance": MAX_WIDTH,
    },
}


@dataclass(kw_only=True)
class ModelPreset:
    """Every component config of one MOVA model plus the pipeline-level values of model_index.json."""

    name: str
    video_dit: WanModelConfig
    audio_dit: WanAudioModelConfig
    bridge: BridgeConfig
    audio_vae: DACConfig
    video_vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any]
    boundary_ratio: float = 0.9
    resolutions: tuple[tuple[int, int], ...] = ((352, 640), (640, 352))  # (height, width) it was trained at
    default_num_frames: int = 193
    default_fps: float = 24.0


def _full(name: str, resolutions: tuple[tuple[int, int], ...]) -> ModelPreset:
    return ModelPreset(
        name=name, video_dit=WanModelConfig(), audio_dit=WanAudioModelConfig(), bridge=BridgeConfig(),
        audio_vae=DACConfig(), video_vae=dict(WAN21_VAE_CONFIG), text_encoder=dict(UMT5_XXL_CONFIG),
        scheduler=dict(SCHEDULER_CONFIG), resolutions=resolutions,
    )


def tiny_preset(
    *, video_dim: int = 48, video_heads: int = 3, video_layers: int = 3, audio_dim: int = 32, audio_heads: int = 2,
    audio_layers: int = 2, text_dim: int = 32, head_dim: int = 16, audio_latent_dim: int = 8,
    interaction_strategy: str = "full", sample_rate: int = 48000, encoder_rates: tuple[int, ...] = (2, 3, 4, 5, 8),
) -> ModelPreset:
    """A tiny model of the same architecture for tests (random weights; builds in milliseconds).

    Head counts differ between the towers and the video tower has more layers than the audio one, so
    mismatched-width and leftover-layer code paths are exercised.
    """
    assert video_dim == video_heads * head_dim and audio_dim == audio_heads * head_dim
    vae = dict(WAN21_VAE_CONFIG, base_dim=8, num_res_blocks=1)
    return ModelPreset(
        name="tiny",
        video_dit=WanModelConfig(dim=video_dim, ffn_dim=2 * video_dim, num_heads=video_heads, num_layers=video_layers,
                                 text_dim=text_dim, freq_dim=32),
        audio_dit=WanAudioModelConfig(dim=audio_dim, in_dim=audio_latent_dim, out_dim=audio_latent_dim,
                                      ffn_dim=2 * audio_dim, num_heads=audio_heads, num_layers=audio_layers,
                                      text_dim=text_dim, freq_dim=32),
        bridge=BridgeConfig(visual_layers=video_layers, audio_layers=audio_layers, visual_hidden_dim=video_dim,
                            audio_hidden_dim=audio_dim, head_dim=head_dim, interaction_strategy=interaction_strategy,
                            audio_fps=sample_rate / math.prod(encoder_rates)),
        audio_vae=DACConfig(encoder_dim=4, latent_dim=audio_latent_dim, decoder_dim=32, sample_rate=sample_rate,
                            encoder_rates=encoder_rates, decoder_rates=tuple(reversed(encoder_rates))),
        video_vae=vae,
        text_encoder=dict(UMT5_XXL_CONFIG, d_model=text_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          vocab_size=384, dropout_rate=0.0),
        scheduler=dict(SCHEDULER_CONFIG),
        resolutions=((64, 64),), default_num_frames=9, default_fps=24.0,
    )


def get_preset(name: str) -> ModelPreset:
    """``mova-360p``, ``mova-720p`` (full size) or ``tiny``."""
    presets = {
        "mova-360p": lambda: _full("mova-360p", ((352, 640), (640, 352))),
        "mova-720p": lambda: _full("mova-720p", ((720, 1280), (1280, 720))),
        "tiny": tiny_preset,
    }
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; available presets: {sorted(presets)}")
    return presets[name]()


PRESET_NAMES = ("mova-360p", "mova-720p", "tiny")
