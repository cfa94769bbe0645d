"""The demo checkpoint's starting point: trained demo autoencoders + a fresh denoiser, in the official layout.

    python -m train demo-base --video-vae runs/demo/vae_video/video_vae --audio-vae runs/demo/vae_audio/audio_vae \\
        --out runs/demo/base

writes a complete MOVA folder (``model_index.json``, ``video_dit``, ``video_dit_2``, ``audio_dit``,
``dual_tower_bridge``, ``audio_vae``, ``video_vae``, ``text_encoder``, ``tokenizer``, ``scheduler``) that
``python -m train run train/configs/demo.yaml`` starts from. The whole recipe is ``scripts/train_demo.sh``.

Design choices (the MOVA paper has no small model; these are ours):

- Denoiser: MOVA's architecture at 160 wide (5 heads of 32), 4 layers per tower, full bridge interaction, two
  video experts split at the official boundary (0.9). The sequences are short — 64×64×25 frames at 12 fps give
  7×4×4 = 112 video tokens, 2.08 s of audio 104 tokens — so this trains in minutes on one GPU and samples in
  seconds on a laptop CPU. 6.6 M parameters, 13 MB stored in bfloat16 (a 128-wide variant, 4.3 M, trained to a
  higher loss in the same time).
- Text: a 2-layer UMT5 encoder (64 wide) with random weights over a 512-piece SentencePiece BPE vocabulary learnt
  from demo-world captions (a caption word is one to three pieces; any ASCII text is covered). A random transformer
  keeps token identity in its output, so the denoiser's text cross-attention learns what "red", "twice" or
  "metallic" mean; no pretrained language model is needed for a closed world, nothing is downloaded. It stays
  frozen in stages 1 and 2 and trains with the denoiser in stage 3 (``demo_text.yaml``): which colour belongs to
  which of two balls is a relation between words, and random attention carries it poorly.
- Scheduler: the official flow-matching pair scheduler with shift 3 for both modalities: the demo's latents are
  tiny (7×8×8 video, 104 audio frames), so less of the schedule needs to sit at high noise than at 360p.
- Text-only generation (T2VA) follows MOVA: a pure-white first frame. Training replaces the first-frame condition
  by the white frame's for a share of samples (``diffusion.image_dropout`` in the stage config), so the same
  checkpoint does image+text and text-only generation.
"""

from __future__ import annotations

import argparse
import logging
import os
import string
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from mova.config import SCHEDULER_CONFIG, UMT5_XXL_CONFIG, ModelPreset
from train.demo_world import SCENE_NAMES, WorldConfig, clip_seed, generate_clip

logger = logging.getLogger("train.demo")

DEMO_WORLD = WorldConfig()  # 64×64, 12 fps, 25 frames (2.08 s), 16 kHz
DEMO_SHIFT = 3.0
DEMO_STEPS = 25  # default sampling steps written into model_index.json
DEMO_TEXT_SCALE = 3.0  # default text CFG (model_index.json default_text_scale): the shipped checkpoint drew the
                       # prompted ball colours in 92 % of 60 tuning clips at 2.5 and 3, 88 % at 4, 83 % at MOVA's 5
TOKENIZER_VOCAB = 512
DEMO_TEXT_LEN = 64  # T5 tokens prompts are padded to (model_index.json max_sequence_length; data.text_len in demo.yaml)


def demo_preset(*, audio_latent_dim: int, sample_rate: int, hop: int, dim: int = 160, heads: int = 5,
                layers: int = 4, text_dim: int = 64) -> ModelPreset:
    """The demo denoiser + text encoder configs (the VAEs come from their trained folders)."""
    head_dim = dim // heads
    return ModelPreset(
        name="mova-demo",
        video_dit=dict(dim=dim, ffn_dim=4 * dim, num_heads=heads, num_layers=layers, text_dim=text_dim),
        audio_dit=dict(dim=dim, in_dim=audio_latent_dim, out_dim=audio_latent_dim, ffn_dim=4 * dim, num_heads=heads,
                       num_layers=layers, text_dim=text_dim),
        bridge=dict(visual_layers=layers, audio_layers=layers, visual_hidden_dim=dim, audio_hidden_dim=dim,
                    head_dim=head_dim, audio_fps=sample_rate / hop),
        audio_vae=None, video_vae={},  # taken from the trained autoencoder folders
        text_encoder=dict(UMT5_XXL_CONFIG, d_model=text_dim, d_kv=16, d_ff=2 * text_dim, num_layers=2, num_heads=4,
                          vocab_size=TOKENIZER_VOCAB, dropout_rate=0.0),
        scheduler=dict(SCHEDULER_CONFIG, shift=DEMO_SHIFT),
        resolutions=((DEMO_WORLD.height, DEMO_WORLD.width),),
        default_num_frames=DEMO_WORLD.num_frames, default_fps=DEMO_WORLD.fps,
    )


def caption_corpus(n_per_scene: int = 120, seed: int = 0, config: WorldConfig = DEMO_WORLD) -> str:
    """Captions of training-split clips of every scene (one per line), then every printable ASCII character (so
    that no typed prompt maps to ``<unk>``): the tokenizer's training text."""
    lines = [" ".join(string.ascii_letters + string.digits + string.punctuation)] * 3
    for i in range(n_per_scene * len(SCENE_NAMES)):
        lines.append(generate_clip(SCENE_NAMES[i % len(SCENE_NAMES)], clip_seed(seed, i, "train"), config).caption)
    return "\n".join(lines) + "\n"


def build_base(video_vae: str | os.PathLike, audio_vae: str | os.PathLike, out: str | os.PathLike, *,
               seed: int = 0, dim: int = 160, heads: int = 5, layers: int = 4, corpus_clips: int = 120) -> Path:
    """Write the demo starting checkpoint (trained VAEs, fresh denoiser, random text encoder); the tokenizer
    learns from the captions of ``corpus_clips`` training clips per scene."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    from mova.loading import load_native, parameter_count
    from mova.models import AudioDiT, AudioVAE, DualTowerBridge, VideoDiT
    from mova.tiny import make_tokenizer, write_checkpoint

    out = Path(out)
    vae_v = AutoencoderKLWan.from_pretrained(video_vae).eval()
    vae_a = load_native(AudioVAE, audio_vae).eval()
    if vae_v.config.z_dim != 16:
        raise ValueError(f"--video-vae has z_dim={vae_v.config.z_dim}: MOVA's video DiT takes 16 latent channels")
    preset = demo_preset(audio_latent_dim=vae_a.config.latent_dim, sample_rate=vae_a.sample_rate, hop=vae_a.hop,
                         dim=dim, heads=heads, layers=layers)
    # the text encoder is seeded on its own, so denoisers of any size share it (and one latent cache)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(**preset.text_encoder)).eval()
    torch.manual_seed(seed + 1)
    components = {
        "video_dit": VideoDiT(**preset.video_dit),
        "video_dit_2": VideoDiT(**preset.video_dit),
        "audio_dit": AudioDiT(**preset.audio_dit),
        "dual_tower_bridge": DualTowerBridge(**preset.bridge),
        "audio_vae": vae_a,
        "video_vae": vae_v,
        "text_encoder": text_encoder,
    }
    for name in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"):
        components[name].init_weights()
    tokenizer = make_tokenizer(out / "tokenizer", vocab_size=TOKENIZER_VOCAB,
                               corpus=caption_corpus(corpus_clips, seed=seed),
                               model_type="bpe")
    if len(tokenizer) > TOKENIZER_VOCAB:
        raise ValueError(f"the tokenizer has {len(tokenizer)} pieces, more than the encoder's {TOKENIZER_VOCAB}")
    components["tokenizer"] = tokenizer
    # the unconditional CFG branch is the empty prompt, as trained by text dropout (not Wan's Chinese negative prompt)
    # captions are at most ~60 tokens: padding them to 64 rather than 512 keeps the zero rows from drowning the
    # prompt in every cross-attention (with 512, ~92 % of the keys are identical padding)
    write_checkpoint(out, components, preset, extra_index={"_name_or_path": preset.name,  # not the folder's name
                                                           "default_num_inference_steps": DEMO_STEPS,
                                                           "default_text_scale": DEMO_TEXT_SCALE,
                                                           "default_negative_prompt": "",
                                                           "max_sequence_length": DEMO_TEXT_LEN})
    n = sum(parameter_count(components[k]) for k in ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"))
    logger.info("demo base checkpoint %s: denoiser %.2fM parameters", out, n / 1e6)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train demo-base", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video-vae", required=True,
                        help="folder of the trained video VAE (python -m train vae video)")
    parser.add_argument("--audio-vae", required=True,
                        help="folder of the trained audio VAE (python -m train vae audio)")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=160, help="denoiser width (both towers)")
    parser.add_argument("--heads", type=int, default=5)
    parser.add_argument("--layers", type=int, default=4, help="blocks per tower")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        build_base(args.video_vae, args.audio_vae, args.out, seed=args.seed, dim=args.dim, heads=args.heads,
                   layers=args.layers)
    except (ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
