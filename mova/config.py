"""Checkpoint errors, the size ceilings of the library components' configs, and the model presets.

The configs of our model classes are their ``__init__`` arguments (``mova.models``: diffusers ``ConfigMixin``,
checked by ``mova.models.checks``). Here: :class:`CheckpointError` (a refusal that names its file), the ceilings the
loader applies to the diffusers VAE and transformers text-encoder configs before those libraries build anything, and
the presets: every component config of MOVA-360p / MOVA-720p (docs/model.md#component-configs; they share every
architecture field and differ in weights and trained resolution) and a tiny model of the same architecture for tests.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from mova.models.checks import MAX_HEAD_DIM, MAX_HEADS, MAX_KERNEL, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH, size, sizes

logger = logging.getLogger(__name__)

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


_LOGGED_UNUSED: set[tuple[str, str, tuple[str, ...]]] = set()


def log_unused_keys(owner: str, keys: list[str], source: str | os.PathLike, *, quiet: tuple[str, ...] = ()) -> None:
    """Say once per (owner, file, keys) that ``keys`` of ``source`` are not used and will be ignored (diffusers'
    wording). ``quiet`` keys are fields the official class registers that have no meaning here: INFO, not WARNING."""
    if not keys or (owner, str(source), tuple(keys)) in _LOGGED_UNUSED:
        return
    _LOGGED_UNUSED.add((owner, str(source), tuple(keys)))
    level = logging.INFO if all(k in quiet for k in keys) else logging.WARNING
    logger.log(level, "The config attributes %s of %s are not used by %s and will be ignored.", keys, source, owner)


# Size ceilings (mova.models.checks) of the library components' config.json keys, checked before diffusers or
# transformers build anything from them; absent keys pass (the class default).
LIBRARY_LIMITS: dict[str, dict[str, Any]] = {
    "video_vae": {
        **{k: size(MAX_WIDTH // MAX_KERNEL) for k in ("base_dim", "decoder_base_dim")},
        **{k: size(MAX_WIDTH) for k in ("z_dim", "in_channels", "out_channels")},
        "dim_mult": sizes(MAX_KERNEL), "num_res_blocks": size(MAX_LAYERS // 8),
        **{k: size(MAX_KERNEL) for k in ("patch_size", "scale_factor_spatial", "scale_factor_temporal")},
    },
    "text_encoder": {
        **{k: size(MAX_WIDTH) for k in ("d_model", "d_ff", "relative_attention_num_buckets",
                                        "relative_attention_max_distance")},
        "d_kv": size(MAX_HEAD_DIM), "num_layers": size(MAX_LAYERS), "num_decoder_layers": size(MAX_LAYERS),
        "num_heads": size(MAX_HEADS), "vocab_size": size(MAX_VOCAB),
    },
}


def check_library_config(name: str, config: dict[str, Any]) -> None:
    """ValueError naming the key when a value of ``config`` (a library component's config.json) is beyond its
    ceiling in ``LIBRARY_LIMITS[name]``."""
    for key, rule in LIBRARY_LIMITS[name].items():
        if config.get(key) is not None and (problem := rule(config[key])):
            raise ValueError(f"{name}.{key}={config[key]!r} is invalid: expected {problem}")


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



@dataclass(kw_only=True)
class ModelPreset:
    """Every component config (``config.json`` values) of one MOVA model plus the pipeline-level values of
    model_index.json. Our components take theirs as keyword arguments (``VideoDiT(**preset.video_dit)``)."""

    name: str
    video_dit: dict[str, Any]
    audio_dit: dict[str, Any]
    bridge: dict[str, Any]
    audio_vae: dict[str, Any]
    video_vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any]
    boundary_ratio: float = 0.9
    resolutions: tuple[tuple[int, int], ...] = ((352, 640), (640, 352))  # (height, width) it was trained at
    default_num_frames: int = 193
    default_fps: float = 24.0


def _full(name: str, resolutions: tuple[tuple[int, int], ...]) -> ModelPreset:
    return ModelPreset(
        name=name, video_dit={}, audio_dit={}, bridge={}, audio_vae={}, video_vae=dict(WAN21_VAE_CONFIG), text_encoder=dict(UMT5_XXL_CONFIG),
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
        video_dit=dict(dim=video_dim, ffn_dim=2 * video_dim, num_heads=video_heads, num_layers=video_layers,
                       text_dim=text_dim, freq_dim=32),
        audio_dit=dict(dim=audio_dim, in_dim=audio_latent_dim, out_dim=audio_latent_dim, ffn_dim=2 * audio_dim,
                       num_heads=audio_heads, num_layers=audio_layers, text_dim=text_dim, freq_dim=32),
        bridge=dict(visual_layers=video_layers, audio_layers=audio_layers, visual_hidden_dim=video_dim,
                    audio_hidden_dim=audio_dim, head_dim=head_dim, interaction_strategy=interaction_strategy,
                    audio_fps=sample_rate / math.prod(encoder_rates)),
        audio_vae=dict(encoder_dim=4, latent_dim=audio_latent_dim, decoder_dim=32, sample_rate=sample_rate,
                       encoder_rates=list(encoder_rates), decoder_rates=list(reversed(encoder_rates))),
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
