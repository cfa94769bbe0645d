"""Tiny random MOVA checkpoints in the official layout, for tests, smoke runs and CI (no downloads).

``make_tiny_checkpoint(folder)`` writes every component of a MOVA folder — two video experts, audio DiT,
bridge, DAC audio VAE, a small diffusers ``AutoencoderKLWan``, a small transformers ``UMT5EncoderModel``
with a SentencePiece tokenizer trained on the spot, and the scheduler config — from a
:class:`~mova.config.ModelPreset` (default :func:`~mova.config.tiny_preset`), seeded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from mova.config import ModelPreset, tiny_preset
from mova.loading import save_pretrained
from mova.models import AudioDiT, AudioVAE, DualTowerBridge, VideoDiT
from mova.scheduler import FlowMatchPairScheduler

_CORPUS = """
A small red ball bounces three times on a wooden floor, each bounce a sharp knock.
A woman with short hair smiles and says hello to the camera in a quiet room.
Rain falls on a tin roof while thunder rolls in the distance over the sea.
A metronome swings left and right, ticking at one hundred and twenty beats per minute.
A blue car drives past from left to right, its engine rising and falling as it passes.
Two people talk at a table in a busy cafe; cups clink and a coffee machine hisses.
The audio shows a steady hum, soft footsteps, and a door closing at the end.
Waves crash on rocks, seagulls call, and wind blows through tall green grass.
A dog barks twice, a bird sings, a bell rings, music plays from a radio.
""".strip()


def make_tokenizer(folder: str | os.PathLike, vocab_size: int = 256, corpus: str | None = None,
                   model_type: str = "unigram"):
    """Train a SentencePiece model (``unigram`` or ``bpe``) on ``corpus`` (default: a built-in one) and save it as a
    T5 tokenizer folder (``spiece.model`` + tokenizer configs)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        text = corpus if corpus is not None else (_CORPUS + "\n") * 4
        corpus_path = Path(tmp) / "corpus.txt"
        corpus_path.write_text(text, encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus_path), model_prefix=str(Path(tmp) / "spm"), vocab_size=vocab_size, model_type=model_type,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
        )
        src = Path(tmp) / "tok"
        src.mkdir()
        (src / "spiece.model").write_bytes((Path(tmp) / "spm.model").read_bytes())
        tokenizer = T5Tokenizer.from_pretrained(src, extra_ids=0)
    tokenizer.save_pretrained(folder)
    return tokenizer


def make_tiny_components(preset: ModelPreset | None = None, seed: int = 0) -> dict:
    """Random-weight components of ``preset`` (default tiny), in eval mode, float32."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    preset = preset or tiny_preset()
    torch.manual_seed(seed)
    components = {
        "video_dit": VideoDiT(**preset.video_dit),
        "video_dit_2": VideoDiT(**preset.video_dit),
        "audio_dit": AudioDiT(**preset.audio_dit),
        "dual_tower_bridge": DualTowerBridge(**preset.bridge),
        "audio_vae": AudioVAE(**preset.audio_vae),
        "video_vae": AutoencoderKLWan(**preset.video_vae),
        "text_encoder": UMT5EncoderModel(UMT5Config(**preset.text_encoder)),
    }
    for name in ("video_dit", "video_dit_2", "audio_dit"):
        components[name].init_weights()
        # a non-zero head so that random tiny models produce non-trivial outputs
        torch.nn.init.normal_(components[name].head.head.weight, std=0.02)
    for module in components.values():
        module.eval()
    return components


def make_tiny_checkpoint(folder: str | os.PathLike, preset: ModelPreset | None = None, seed: int = 0) -> Path:
    """Write a complete random checkpoint folder (official layout) and return its path."""
    preset = preset or tiny_preset()
    folder = Path(folder)
    components = make_tiny_components(preset, seed)
    components["tokenizer"] = make_tokenizer(folder / "tokenizer")
    return write_checkpoint(folder, components, preset)


def write_checkpoint(folder: str | os.PathLike, components: dict, preset: ModelPreset,
                     extra_index: dict | None = None) -> Path:
    """Save ``components`` as an official-layout folder with ``preset``'s scheduler config and boundary, plus the
    ``model_index.json`` extras our own checkpoints carry (default size, frames, fps, trained resolutions)."""
    h, w = preset.resolutions[0]
    index = {"default_height": h, "default_width": w, "default_num_frames": preset.default_num_frames,
             "default_fps": preset.default_fps, "resolutions": [list(r) for r in preset.resolutions],
             **(extra_index or {})}
    return save_pretrained(folder, {**components, "scheduler": FlowMatchPairScheduler(**preset.scheduler)},
                           boundary_ratio=preset.boundary_ratio, extra_index=index)
