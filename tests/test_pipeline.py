"""End-to-end generation on a tiny random checkpoint (CPU, float32): files a real decoder reads back."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from mova import Guidance, MOVAPipeline
from mova.media import integrated_loudness, read_mp4

SMALL = dict(height=64, width=64, num_frames=9, fps=12.0, num_inference_steps=3)


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return MOVAPipeline.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def first_frame(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "frame.png"
    x = np.linspace(0, 255, 96, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(x, (80, 1)), np.tile(x[::-1], (80, 1)), np.full((80, 96), 90, np.uint8)], -1)).save(path)
    return path


def decode_streams(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0]
        frames = sum(1 for _ in c.decode(video=0))
        info = dict(vcodec=v.codec_context.name, vrate=float(v.average_rate), acodec=a.codec_context.name,
                    arate=a.rate, n_video=len(c.streams.video), n_audio=len(c.streams.audio))
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    info.update(frames=frames, samples=samples)
    return info


@pytest.mark.parametrize("mode", ["it2va", "t2va"])
def test_generation_writes_playable_mp4(pipe, first_frame, tmp_path, mode):
    image = first_frame if mode == "it2va" else None
    result = pipe("A small red ball bounces twice on a wooden floor.", image=image, seed=7, **SMALL)
    assert result.video.shape == (9, 64, 64, 3) and result.video.dtype == np.uint8
    assert result.audio.dtype == np.float32 and result.audio.shape == (int(48000 * 9 / 12.0),)
    assert result.seed == 7 and result.nfe == 2 * 3 and result.sample_rate == 48000
    path = result.save(tmp_path / f"{mode}.mp4")
    info = decode_streams(path)
    assert info["n_video"] == 1 and info["n_audio"] == 1
    assert info["vcodec"] == "h264" and info["acodec"] == "aac" and info["arate"] == 48000
    assert info["frames"] == 9 and info["vrate"] == pytest.approx(12.0)
    assert abs(info["samples"] - 48000 * 9 / 12.0) <= 1024  # within one AAC frame of the video duration


def test_seed_determinism(pipe):
    a = pipe("rain on a tin roof", seed=11, **SMALL)
    b = pipe("rain on a tin roof", seed=11, **SMALL)
    c = pipe("rain on a tin roof", seed=12, **SMALL)
    assert np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio)
    assert not np.array_equal(a.video, c.video) and not np.array_equal(a.audio, c.audio)
    d = pipe("rain on a tin roof", **SMALL)  # random seed, reported
    assert isinstance(d.seed, int) and d.seed >= 0


def test_loudness_normalisation(pipe):
    raw = pipe("thunder", seed=5, loudness_lufs=None, **SMALL)
    assert np.abs(raw.audio).max() > 0
    for target in (-16.0, -23.0):
        out = pipe("thunder", seed=5, loudness_lufs=target, **SMALL)
        assert abs(integrated_loudness(out.audio, 48000) - target) <= 0.5
        assert np.abs(out.audio).max() <= 10 ** (-1.0 / 20) + 1e-6


def test_true_peak_ceiling_is_a_setting(pipe):
    """Loud normalisation drives the peaks into the limiter: its ceiling follows ``true_peak_db``."""
    peak_db = lambda audio: 20 * np.log10(np.abs(audio).max())  # noqa: E731 (sample peak <= true peak)
    default = pipe("thunder", seed=3, loudness_lufs=-8.0, **SMALL)
    capped = pipe("thunder", seed=3, loudness_lufs=-8.0, true_peak_db=-6.0, **SMALL)
    assert peak_db(capped.audio) <= -6.0 + 0.01 < -3.0 < peak_db(default.audio) <= -1.0 + 0.01
    assert capped.settings.true_peak_db == -6.0 and default.settings.true_peak_db == -1.0
    with pytest.raises(ValueError, match=r"true_peak_db=3 is invalid: expected a number in \[-20, 0\]"):
        pipe("thunder", true_peak_db=3, **SMALL)


def test_batched_guidance_equals_sequential_in_pipeline(pipe):
    for guidance in (Guidance("text", 4.0), Guidance("dual", text_scale=3.0, bridge_scale=2.0)):
        a = pipe("a dog barks", seed=3, guidance=guidance, output_type="latent", **SMALL)
        b = pipe("a dog barks", seed=3, guidance=guidance, output_type="latent", sequential_cfg=True, **SMALL)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_bridge_strength_zero_runs_the_towers_independently(tiny_checkpoint):
    """bridge_strength=0 (the bridge ablation) equals generating with every bridge output projection zeroed, and
    differs from the trained bridge."""
    pipe = MOVAPipeline.from_pretrained(tiny_checkpoint, device="cpu")
    off = pipe("a ball bounces", seed=4, bridge_strength=0.0, output_type="latent", **SMALL)
    on = pipe("a ball bounces", seed=4, output_type="latent", **SMALL)
    with torch.no_grad():
        for name, param in pipe.denoiser.bridge.named_parameters():
            if ".inner.o." in name:
                param.zero_()
    zeroed = pipe("a ball bounces", seed=4, output_type="latent", **SMALL)
    for a, b, c in zip(off, zeroed, on):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert (a - c).abs().max() > 1e-4
    with pytest.raises(ValueError, match="bridge_strength=-1.0 is invalid"):
        pipe("a ball bounces", bridge_strength=-1.0, **SMALL)


def test_image_modes_are_converted(pipe, tmp_path):
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 128))
    rgba.save(tmp_path / "a.png")
    Image.new("CMYK", (40, 30), (0, 255, 0, 0)).save(tmp_path / "c.jpg")
    for name in ("a.png", "c.jpg"):
        assert pipe("x", image=tmp_path / name, output_type="latent", seed=0, **SMALL)[0].shape == (1, 16, 3, 8, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(height=60), r"height=60 is invalid: expected a positive multiple of 16"),
        (dict(width=0), r"width=0"),
        (dict(num_frames=10), r"num_frames=10 is invalid: expected 4k\+1"),
        (dict(fps=0.0), r"fps=0.0 is invalid"),
        (dict(fps=-24.0), r"fps=-24.0 is invalid"),
        (dict(num_inference_steps=0), r"num_inference_steps=0"),
        (dict(height=16000, width=16000), r"too large"),
        (dict(seed=-1), r"seed=-1"),
        (dict(loudness_lufs=5.0), r"loudness_lufs"),
        (dict(fps=1e-300), r"fps=1e-300 is invalid: expected a number in \[1, 240\]"),  # was a C++ error
        (dict(fps=0.5), r"fps=0.5"),
        (dict(num_frames=193, fps=2.0), r"96.5 s is too long: at most 60 s"),
        (dict(fps=True), r"fps=True"),
    ],
)
def test_bad_inputs_name_the_field(pipe, kwargs, match):
    args = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe("a prompt", **args)


def test_bad_prompt_guidance_and_image(pipe, tmp_path):
    for empty in ("   ", "\x00\x00", "\u200b\u200c\u2060", "&nbsp;"):  # nothing visible once cleaned
        with pytest.raises(ValueError, match="prompt is empty"):
            pipe(empty, **SMALL)
    with pytest.raises(ValueError, match="text_scale"):
        Guidance("text", text_scale=-1.0)
    for name in ("text_scale", "bridge_scale"):  # 1e30 used to end as "audio contains NaN or inf"
        with pytest.raises(ValueError, match=rf"{name}=1e\+30 is invalid: expected a number in \[0, 100\]"):
            Guidance("dual", **{name: 1e30})
    with pytest.raises(ValueError, match="mode"):
        Guidance("cfg++")
    bogus = tmp_path / "not_an_image.png"
    bogus.write_text("hello")
    with pytest.raises(ValueError, match="image"):
        pipe("x", image=bogus, **SMALL)
    with pytest.raises(ValueError, match="image"):
        pipe("x", image=tmp_path / "missing.png", **SMALL)
    with pytest.raises(ValueError, match="offload"):
        MOVAPipeline.from_pretrained(tmp_path, offload="disk")


def test_prompt_the_tokenizer_cannot_represent_gets_a_warning(pipe):
    """Characters the tokenizer maps to <unk> are named in the result's warnings; a fully unknown prompt says the
    clip does not follow it (such prompts all give the same clip)."""
    clean = pipe("a red ball", seed=1, **{**SMALL, "num_inference_steps": 1})
    assert clean.warnings == []
    partly = pipe("a red ball 弹跳", seed=1, **{**SMALL, "num_inference_steps": 1})
    assert len(partly.warnings) == 1 and "'弹跳' became <unk>" in partly.warnings[0]
    unknown = [pipe(text, seed=1, **{**SMALL, "num_inference_steps": 1}) for text in ("一个红球", "🎉🎉")]
    assert all("every character became <unk>" in r.warnings[0] for r in unknown)
    assert np.array_equal(unknown[0].video, unknown[1].video)  # why the warning matters


def test_read_back_pixels_follow_the_model(pipe, tmp_path):
    result = pipe("waves", seed=2, **SMALL)
    media = read_mp4(result.save(tmp_path / "w.mp4"))
    assert media.video.shape == result.video.shape
    assert np.abs(media.video.astype(int) - result.video.astype(int)).mean() < 12  # lossy H.264, same picture


def test_generate_cli(tiny_checkpoint, first_frame, tmp_path, capsys):
    from mova.__main__ import main

    out = tmp_path / "cli.mp4"
    code = main(["generate", "--model", str(tiny_checkpoint), "--prompt", "a bell rings", "--image", str(first_frame),
                 "--out", str(out), "--height", "64", "--width", "64", "--num-frames", "9", "--fps", "12",
                 "--steps", "2", "--guidance", "dual", "--bridge-scale", "2", "--seed", "4", "--wav",
                 str(tmp_path / "a.wav")])
    assert code == 0
    line = capsys.readouterr().out
    assert "seed 4" in line and "NFE 6" in line
    assert decode_streams(out)["frames"] == 9 and (tmp_path / "a.wav").stat().st_size > 0
    assert main(["generate", "--model", str(tiny_checkpoint), "--prompt", "x", "--out", str(out),
                 "--height", "63"]) == 2  # a user error: one line, exit code 2
    assert "height=63" in capsys.readouterr().err


def test_checkpoint_default_text_scale(tiny_checkpoint, tmp_path, monkeypatch):
    """model_index.json's ``default_text_scale`` is the s_T of a call without guidance, of the CLI without
    --text-scale and of the UI's default; a folder without it gets MOVA's 5."""
    import json
    import shutil

    from mova.__main__ import main

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "default_text_scale": 2.0}))
    own = MOVAPipeline.from_pretrained(folder, device="cpu")
    assert MOVAPipeline.from_pretrained(tiny_checkpoint, device="cpu").default_guidance() == Guidance(text_scale=5.0)
    assert own.default_guidance() == Guidance(text_scale=2.0)
    assert own.model_info().default_guidance.text_scale == 2.0
    kwargs = dict(SMALL, output_type="latent", seed=11)
    default = own("a bell rings", **kwargs)
    for scale, same in ((2.0, True), (5.0, False)):
        other = own("a bell rings", guidance=Guidance(text_scale=scale), **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(default, other)) == same
    from mova.settings import ModelInfo

    seen, original = [], ModelInfo.check

    def spy(self, settings):
        resolved = original(self, settings)
        seen.append(resolved.text_scale)
        return resolved

    monkeypatch.setattr(ModelInfo, "check", spy)
    for extra in ([], ["--text-scale", "4"]):
        assert main(["generate", "--model", str(folder), "--prompt", "x", "--out", str(tmp_path / "a.mp4"),
                     "--steps", "1", "--seed", "1", *extra]) == 0
    assert seen == [2.0, 4.0]


def test_an_encoders_only_pipeline_encodes_like_the_full_one(tiny_checkpoint, pipe):
    """The training cache's pipeline: the same encoders and inference code, no denoiser loaded."""
    encoders = MOVAPipeline.from_pretrained(tiny_checkpoint, device="cpu", encoders_only=True)
    assert encoders.denoiser is None and "video_dit" not in encoders.components
    torch.testing.assert_close(encoders.encode_prompt(["waves on rocks"]), pipe.encode_prompt(["waves on rocks"]),
                               rtol=0, atol=0)
    frame = np.full((40, 50, 3), 120, np.uint8)
    torch.testing.assert_close(encoders.prepare_condition(frame, 64, 64, 9), pipe.prepare_condition(frame, 64, 64, 9),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="encoders_only=True"):
        encoders("waves", **SMALL)


def test_the_denoiser_takes_the_video_vaes_temporal_stride(pipe):
    """A VAE of temporal stride 2 gives the denoiser (and so the bridge's aligned RoPE) stride 2, not MOVA's 4."""
    from diffusers import AutoencoderKLWan

    cfg = {k: v for k, v in pipe.video_vae.config.items() if not k.startswith("_")}
    vae = AutoencoderKLWan(**{**cfg, "temperal_downsample": [False, False, True], "scale_factor_temporal": 2})
    strided = MOVAPipeline({**pipe.components, "video_vae": vae.eval()}, torch.device("cpu"), torch.float32)
    assert pipe.denoiser.temporal_stride == 4
    assert strided.vae_scale_temporal == 2 and strided.denoiser.temporal_stride == 2
