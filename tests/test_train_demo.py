"""``python -m train demo-base``: the demo checkpoint's starting folder from trained autoencoders (here random tiny
ones in the same formats): official layout, strict loading, a tokenizer that covers the demo world's captions, and a
text encoder shared by denoisers of every width (so one latent cache serves them all)."""

from __future__ import annotations

import json

import pytest
import torch

from train_helpers import one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    from diffusers import AutoencoderKLWan

    from mova.models import AudioVAE

    root = tmp_path_factory.mktemp("demo_vaes")
    torch.manual_seed(0)
    AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                     temperal_downsample=[False, True, True]).save_pretrained(root / "video_vae")
    AudioVAE(encoder_dim=4, latent_dim=8, decoder_dim=16, sample_rate=16000, encoder_rates=(2, 4, 5, 8),
             decoder_rates=(8, 5, 4, 2)).save_pretrained(root / "audio_vae")
    return root


def test_demo_base_folder(vaes, tmp_path):
    from mova.loading import load_components
    from mova.pipeline import MOVAPipeline
    from train.__main__ import main
    from train.demo import build_base
    from train.demo_world import SCENE_NAMES, clip_seed, generate_clip

    out = tmp_path / "base"
    assert main(["demo-base", "--video-vae", str(vaes / "video_vae"), "--audio-vae", str(vaes / "audio_vae"),
                 "--out", str(out), "--dim", "64", "--heads", "2", "--layers", "2"]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["default_height"] == index["default_width"] == 64 and index["default_num_frames"] == 25
    assert index["default_fps"] == 12.0 and index["default_num_inference_steps"] == 25
    assert index["default_text_scale"] == 3.0
    assert index["default_negative_prompt"] == "" and index["max_sequence_length"] == 64
    assert index["_name_or_path"] == "mova-demo"  # the model's name, not the folder's
    comps = load_components(out, device="cpu", dtype=torch.float32)  # strict, like an official folder
    assert comps["audio_dit"].config.in_dim == 8 and comps["dual_tower_bridge"].config.audio_fps == 50.0
    assert comps["video_dit"].config.dim == 64 and comps["video_dit"].config.text_dim == 64
    assert comps["scheduler"].config.shift == 3.0
    # captions of clips the tokenizer never saw (held-out split) map to known pieces, a word to at most a few
    tok = comps["tokenizer"]
    for i, scene in enumerate(SCENE_NAMES):
        caption = generate_clip(scene, clip_seed(9, i, "held_out")).caption
        ids = tok(caption).input_ids
        assert tok.unk_token_id not in ids and len(ids) <= 2 * len(caption.split()) + 4, caption
    # a wider denoiser gets the same text encoder and tokenizer
    wide = build_base(vaes / "video_vae", vaes / "audio_vae", tmp_path / "wide", dim=96, heads=3, layers=2,
                      corpus_clips=120)
    a = (out / "text_encoder" / "model.safetensors").read_bytes()
    assert a == (wide / "text_encoder" / "model.safetensors").read_bytes()
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == (wide / "tokenizer" / "tokenizer.json").read_bytes()
    pipe = MOVAPipeline.from_pretrained(out, device="cpu")
    result = pipe("A small red ball bounces twice.", num_frames=9, num_inference_steps=2, seed=0)
    assert result.video.shape == (9, 64, 64, 3) and result.sample_rate == 16000
    assert result.settings.negative_prompt is None and pipe.model_info().negative_prompt(result.settings) == ""


def test_demo_base_refuses_a_video_vae_of_another_latent_width(vaes, tmp_path):
    from diffusers import AutoencoderKLWan

    from train.__main__ import main

    AutoencoderKLWan(base_dim=8, z_dim=8, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                     temperal_downsample=[False, True, True]).save_pretrained(tmp_path / "v8")
    assert main(["demo-base", "--video-vae", str(tmp_path / "v8"), "--audio-vae", str(vaes / "audio_vae"),
                 "--out", str(tmp_path / "x")]) == 2


def test_recipe_script_runs_its_stages_on_the_cpu(vaes, tmp_path):
    """scripts/train_demo.sh base data cache dit data2 cache2 refine text export, tiny and on the CPU: the documented
    recipe runs end to end (stage 2 starting from stage 1's export, stage 3 from stage 2's) and exports stage 3 — its
    trained text encoder included — as a folder the pipeline loads strictly (the autoencoder stage is replaced by the
    random tiny ones)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from mova.pipeline import MOVAPipeline

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    shutil.copytree(vaes / "video_vae", run / "vae_video" / "video_vae")
    shutil.copytree(vaes / "audio_vae", run / "vae_audio" / "audio_vae")
    env = {**os.environ, "RUN": str(run), "CLIPS": "4", "REFINE_CLIPS": "6", "DIT_DIM": "32", "DIT_HEADS": "2",
           "DEST": str(tmp_path / "demo"),
           "DIT_ARGS": "--set data.batch_size=2 --set steps=2 --set max_minutes=null --set optim.warmup_steps=1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]  # python3 = this interpreter
    stages = ["base", "data", "cache", "dit", "data2", "cache2", "refine", "text", "export"]
    proc = subprocess.run(["bash", "scripts/train_demo.sh", *stages], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "cached 4 of 4 rows" in proc.stdout and "cached 6 of 6 rows" in proc.stdout
    for stage in ("dit", "refine", "text"):
        assert json.loads((run / stage / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2
    world2 = [json.loads(line)["scene"] for line in (run / "world2" / "manifest.jsonl").read_text().splitlines()]
    assert world2 == ["bouncing_balls", "talking_face", "bouncing_balls", "pendulum", "bouncing_balls", "passing_car"]
    pipe = MOVAPipeline.from_pretrained(tmp_path / "demo", device="cpu")
    assert pipe.denoiser.video_dit.config.dim == 32 and not any(p.is_symlink() for p in (tmp_path / "demo").rglob("*"))
    # stage 2 started from stage 1's weights and moved on from them
    stage1 = MOVAPipeline.from_pretrained(run / "dit" / "final", device="cpu")
    stage2 = MOVAPipeline.from_pretrained(run / "refine" / "final", device="cpu")
    diff = [(a - b).abs().max().item() for a, b in zip(stage1.denoiser.audio_dit.state_dict().values(),
                                                       stage2.denoiser.audio_dit.state_dict().values())]
    assert max(diff) > 0
    # the export is stage 3: stage 2's denoiser moved on, and the text encoder (frozen in stages 1 and 2, so still
    # the base's) trained too
    assert "demo_text" in json.loads((tmp_path / "demo" / "model_index.json").read_text())["_trained_by"]
    diff = [(a - b).abs().max().item() for a, b in zip(stage2.denoiser.audio_dit.state_dict().values(),
                                                       pipe.denoiser.audio_dit.state_dict().values())]
    assert max(diff) > 0
    encoder = Path("text_encoder") / "model.safetensors"
    assert (run / "refine" / "final" / encoder).read_bytes() == (run / "base" / encoder).read_bytes()
    text_base = load_file(run / "base" / encoder)
    text_stage3 = load_file(tmp_path / "demo" / encoder)
    assert text_stage3.keys() == text_base.keys()
    assert max((text_stage3[k].float() - text_base[k].float()).abs().max().item() for k in text_base) > 0
