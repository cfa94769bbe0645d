"""train.vae: the demo checkpoint's video VAE (Wan) and audio VAE (DAC) trained on the demo world.

Each kind is trained once per module through the command line on the tiny configs (a few dozen CPU steps); the
tests then check that the loss fell, that the exported folders load back with the official loaders and give the
trained model's outputs, that the latent statistics are written and standardise the training latents, and that
the DAC keeps MOVA's 50 Hz latent clock at 16 kHz.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.vae.autoencoders import (build_model, clips_to_model, encode_mode, evaluate, standardise_audio_latents,
                                    wan_decode_unclamped)
from train.vae.clips import ClipPool, generate_clips, read_clips
from train.vae.configuration import CONFIG_DIR, DEFAULT_CONFIGS, VAETrainConfig
from train.vae.losses import log_spectral_distance, psnr, si_sdr, temporal_loss
from train.vae.loop import STATE, main, train
from train.yaml_config import load_config


def load_vae_config(path, overrides=()):
    return load_config(VAETrainConfig, path, overrides)

TINY = {"video": CONFIG_DIR / "tiny_video.yaml", "audio": CONFIG_DIR / "tiny_audio.yaml"}


def _run(kind: str, out, *extra: str):
    assert main([kind, "--out", str(out), "--config", str(TINY[kind]), *extra]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "eval.json").read_text()), rows


def _untrained_eval(kind: str) -> dict:
    """Held-out metrics of the model a run starts from (train() seeds torch with data.seed before building)."""
    cfg = load_vae_config(TINY[kind])
    torch.manual_seed(cfg.data.seed)
    model = build_model(cfg).eval()
    clips, scenes = generate_clips(cfg, cfg.data.held_out_clips, "held_out")
    return evaluate(cfg, model, clips, scenes, torch.device("cpu"))


def _trained(kind: str, out):
    """The model as trained (from the resumable state, before export)."""
    cfg = load_vae_config(TINY[kind])
    model = build_model(cfg)
    model.load_state_dict(torch.load(out / STATE, weights_only=False)["model"])
    return cfg, model.eval()


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae_video")
    return out, *_run("video", out)


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae_audio")
    return out, *_run("audio", out)


# --- configs ---------------------------------------------------------------------------------------------


def test_demo_configs_are_valid_and_match_mova_clocks():
    video, audio = (load_vae_config(DEFAULT_CONFIGS[k]) for k in ("video", "audio"))
    assert video.model["z_dim"] == 16 and video.data.crop_frames % 4 == 1
    dac = audio.dac_config()
    assert (dac.sample_rate, dac.hop, dac.latent_rate) == (16000, 320, 50.0)


@pytest.mark.parametrize("override, field", [
    ("data.crop_frames=6", "data.crop_frames"), ("data.crop_size=60", "data.crop_size"),
    ("precision=fp16", "precision"), ("model.sample_rate=48000", "model.sample_rate"),
])
def test_config_errors_name_the_field(override, field):
    kind = "audio" if field == "model.sample_rate" else "video"
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        load_vae_config(TINY[kind], [override])


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match="optim.learning_rate"):
        load_vae_config(TINY["video"], ["optim.learning_rate=1"])


# --- pieces ----------------------------------------------------------------------------------------------


def test_metrics_on_known_signals():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, np.clip(a.astype(int) + 1, 0, 255).astype(np.uint8)) > 48
    x = rng.standard_normal(4000).astype(np.float32)
    assert si_sdr(0.5 * x, x) > 100 and log_spectral_distance(x, x) < 1e-6
    assert si_sdr(x + 0.1 * rng.standard_normal(4000).astype(np.float32), x) == pytest.approx(20, abs=0.5)


def test_unclamped_wan_decode_matches_diffusers():
    cfg = load_vae_config(TINY["video"])
    torch.manual_seed(0)
    vae = build_model(cfg).eval()
    z = torch.randn(1, 16, 2, 2, 2)
    with torch.no_grad():
        ours = wan_decode_unclamped(vae, z)
        ref = vae.decode(z).sample
    assert ours.shape == ref.shape == (1, 3, 5, 16, 16)
    torch.testing.assert_close(ours.clamp(-1, 1), ref)


def test_dac_latent_clock_is_50_hz_at_16_khz():
    cfg = load_vae_config(DEFAULT_CONFIGS["audio"])
    vae = build_model(cfg).eval()
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 1, 320 * 7))
        assert z.shape == (1, cfg.model["latent_dim"], 7)
        assert vae.decode(z).shape == (1, 1, 320 * 7)
        assert vae.encode(torch.zeros(1, 1, 16000)).shape[-1] == 50  # one second -> 50 latent frames


def test_standardising_audio_latents_keeps_reconstructions():
    cfg = load_vae_config(TINY["audio"])
    torch.manual_seed(0)
    vae = build_model(cfg).eval()
    x = 0.3 * torch.randn(2, 1, 640)
    with torch.no_grad():
        z = vae.encode(x)
        mean, std = z.mean(dim=(0, 2)), z.std(dim=(0, 2))
        before = vae.decode(z)
        standardise_audio_latents(vae, mean.tolist(), std.tolist())
        z2 = vae.encode(x)
        torch.testing.assert_close(z2, (z - mean[:, None]) / std[:, None], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(vae.decode(z2), before, atol=1e-5, rtol=1e-4)


def test_pool_crops_have_the_configured_shapes():
    cfg = load_vae_config(TINY["video"], ["data.crop_size=16"])
    clips, scenes = generate_clips(cfg, 3)
    assert clips.shape == (3, 9, 32, 32, 3) and clips.dtype == np.uint8 and len(scenes) == 3
    again, _ = generate_clips(cfg, 3)
    np.testing.assert_array_equal(clips, again)  # deterministic seeds
    batch = ClipPool(clips, "video", cfg.data, torch.device("cpu")).sample(4, torch.Generator().manual_seed(0))
    assert batch.shape == (4, 3, 5, 16, 16) and -1 <= batch.min() and batch.max() <= 1


def test_pool_can_come_from_a_dataset_folder(tmp_path):
    from train.demo_world import WorldConfig, generate_dataset
    cfg = load_vae_config(TINY["audio"], [f"data.path={tmp_path}"])
    generate_dataset(tmp_path, n=3, config=WorldConfig.from_dict(cfg.world), save_mp4=False, save_npz=True)
    audio, scenes = read_clips(cfg, 2)
    generated, _ = generate_clips(cfg, 2)  # the same seeds: dataset clip i is clip_seed(seed, i, "train")
    np.testing.assert_array_equal(audio, generated)
    assert scenes == ["bouncing_balls", "talking_face"]


# --- training runs ---------------------------------------------------------------------------------------


def test_video_training_reduces_the_loss(video_run):
    out, result, rows = video_run
    assert rows[-1]["step"] == 30 and rows[-1]["loss"] < rows[0]["loss"]
    assert {"pixel", "gradient", "kl", "lr", "sec_per_step"} <= set(rows[0])
    # deterministic: whole held-out clips reconstruct better than with the initial weights
    assert result["held_out"]["clips"] == 2
    assert result["held_out"]["psnr"] > _untrained_eval("video")["psnr"] + 1.0
    assert len(result["held_out"]["psnr_by_latent_frame"]) == 3  # 9 frames: [0], [1-4], [5-8]
    assert (out / "video_vae" / "config.json").is_file()
    assert (out / "video_vae" / "diffusion_pytorch_model.safetensors").is_file()


def test_video_export_loads_and_standardises_latents(video_run):
    from diffusers import AutoencoderKLWan

    out, result, _ = video_run
    cfg, trained = _trained("video", out)
    loaded = AutoencoderKLWan.from_pretrained(out / "video_vae").eval()
    clips, _ = generate_clips(cfg, cfg.data.stats_clips)  # the clips the statistics were measured on
    x = clips_to_model(cfg, clips, torch.device("cpu"))
    z = encode_mode(cfg, loaded, x)
    torch.testing.assert_close(z, encode_mode(cfg, trained, x), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(z).sample, trained.decode(z).sample, atol=1e-5, rtol=1e-5)
    # the pipeline's normalisation (spec §11) gives zero-mean, unit-std latents on the training clips
    mean = torch.tensor(loaded.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(loaded.config.latents_std).view(1, -1, 1, 1, 1)
    assert mean.numel() == std.numel() == 16 and result["latents_std"] == pytest.approx(std.flatten().tolist(), 1e-4)
    zn = (z - mean) * (1.0 / std)
    torch.testing.assert_close(zn.mean(dim=(0, 2, 3, 4)), torch.zeros(16), atol=1e-3, rtol=0)
    torch.testing.assert_close(zn.std(dim=(0, 2, 3, 4), correction=0), torch.ones(16), atol=1e-3, rtol=0)


def test_decoder_only_fine_tune_keeps_the_latent_space(video_run, tmp_path):
    """trainable=decoder from an exported VAE: the encoder's weights and the latent normalisation are the init's
    (a denoiser trained on those latents stays valid), the decoder's weights moved."""
    from safetensors.torch import load_file

    out, _, _ = video_run
    _, rows = _run("video", tmp_path, "--steps", "3", "--set", f"init={out / 'video_vae'}",
                   "--set", "trainable=decoder", "--set", "loss.foreground=20", "--set", "loss.temporal=1")
    assert rows[-1]["step"] == 3 and np.isfinite(rows[-1]["loss"]) and rows[-1]["temporal"] > 0
    before = load_file(out / "video_vae" / "diffusion_pytorch_model.safetensors")
    after = load_file(tmp_path / "video_vae" / "diffusion_pytorch_model.safetensors")
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    tuned = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert frozen and tuned and len(frozen) + len(tuned) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert sum(not torch.equal(before[k], after[k]) for k in tuned) > len(tuned) // 2
    old, new = (json.loads((d / "video_vae" / "config.json").read_text()) for d in (out, tmp_path))
    assert (new["latents_mean"], new["latents_std"]) == (old["latents_mean"], old["latents_std"])


def test_temporal_loss_charges_a_late_frame_by_its_weights():
    """A ball that turns at the floor one frame late: only the changes into and out of the late frame differ; the
    loss is their Charbonnier (eps²-smoothed L1), each at the larger weight of its two frames, over the weight sum."""
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 6, 4, 4)).astype(np.float32))
    pred = target.clone()
    pred[:, :, 3] = target[:, :, 2]  # frame 3 repeats frame 2
    weights = torch.ones(1, 1, 6, 4, 4)
    weights[:, :, 3] = 21.0
    eps = 1e-3
    d = (pred.diff(dim=2) - target.diff(dim=2)).numpy().astype(np.float64)
    w = np.maximum(weights[:, :, 1:].numpy(), weights[:, :, :-1].numpy()).astype(np.float64)
    want = ((np.sqrt(d**2 + eps**2) - eps) * w).mean() / np.broadcast_to(w, d.shape).mean()
    assert float(temporal_loss(pred, target, eps, weights)) == pytest.approx(want, rel=1e-5)
    assert float(temporal_loss(target, target, eps, weights)) == pytest.approx(0.0, abs=1e-7)
    # without weights every change counts once: the two wrong changes over the 5 × 48 entries
    plain = (np.sqrt(d**2 + eps**2) - eps).mean()
    assert float(temporal_loss(pred, target, eps)) == pytest.approx(plain, rel=1e-5) and plain > 0


@pytest.mark.parametrize("overrides, message", [
    (["trainable=encoder"], "trainable='encoder' is invalid"),
    (["trainable=decoder"], "trainable='decoder' is invalid: expected 'all' unless kind='video' and init is set"),
])
def test_trainable_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_vae_config(TINY["video"], overrides)


def test_audio_training_reduces_the_loss(audio_run):
    out, result, rows = audio_run
    # per-batch losses of 4 random crops are noisy (they rise before they fall): compare the first and last thirds
    losses = [r["loss"] for r in rows]
    assert rows[-1]["step"] == 60 and np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    assert {"stft", "waveform", "kl"} <= set(rows[0])
    # whole held-out clips have a smaller log-spectral distance than with the initial weights (deterministic on one
    # machine, but the CPU's kernels change it: after 60 steps 13.8 dB with AVX-512 or AVX2, 15.0 without SIMD,
    # against 16.5 untrained)
    assert result["held_out"]["lsd_db"] < _untrained_eval("audio")["lsd_db"] - 0.5
    assert result["latent_rate_hz"] == 50.0 and result["hop"] == 320
    assert {"lsd_db", "si_sdr_db"} <= set(result["held_out"])


def test_audio_export_loads_with_the_native_loader(audio_run):
    from mova.loading import load_native
    from mova.models import AudioVAE

    out, result, _ = audio_run
    cfg, trained = _trained("audio", out)
    loaded = load_native(AudioVAE, out / "audio_vae")
    assert loaded.config.sample_rate == 16000 and loaded.hop == 320
    clips, _ = generate_clips(cfg, cfg.data.stats_clips)
    x = clips_to_model(cfg, clips, torch.device("cpu"), hop=320)
    with torch.no_grad():
        z = loaded.encode(x)
        # the export folds the standardisation in: same reconstruction, zero-mean unit-std latents
        torch.testing.assert_close(loaded.decode(z), trained.decode(trained.encode(x)), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(z.mean(dim=(0, 2)), torch.zeros(z.shape[1]), atol=1e-3, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2), correction=0), torch.ones(z.shape[1]), atol=1e-3, rtol=0)
    assert len(result["latents_mean"]) == len(result["latents_std"]) == cfg.model["latent_dim"]


def test_resume_continues_the_same_run(tmp_path):
    cfg = load_vae_config(TINY["audio"], ["steps=4", "log_every=2", "checkpoint_every=100", "data.held_out_clips=1",
                                          "data.stats_clips=2"])
    straight = train(cfg, tmp_path / "a", device="cpu")
    train(cfg, tmp_path / "b", device="cpu", stop_after=2)
    resumed = train(cfg, tmp_path / "b", device="cpu", resume=True)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and resumed["steps"] == 4
    assert resumed["losses"] == pytest.approx(straight["losses"][1:], rel=1e-4)
