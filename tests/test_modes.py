"""Generation modes (mova.modes, mova.conditioning, the pipeline's window loop) on a tiny random checkpoint: what is
given comes out as given, windows chain to the promised length, retakes keep the outside, bad inputs name their
field. The demo-model figures are benchmarks/modes_eval.py's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mova import GenerationSettings, MOVAPipeline, media, modes
from mova.conditioning import KnownLatents, audio_latent_known, video_latent_known

SMALL = dict(height=64, width=64, num_frames=9, fps=12.0, num_inference_steps=3)  # 0.75 s; tiny: 48 kHz, hop 960
RATE = 48000


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return MOVAPipeline.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def clip(pipe):
    """A generated 9-frame clip with its (unnormalised) sound: the thing to extend and retake."""
    return pipe("a red ball bounces", seed=3, loudness_lufs=None, **SMALL)


def tone(seconds: float, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)


def moving_frames(n: int, size: int = 64) -> np.ndarray:
    """A bright square moving one pixel per frame on grey: uint8 [n, size, size, 3]."""
    out = np.full((n, size, size, 3), 60, np.uint8)
    for k in range(n):
        out[k, 20:36, 4 + 2 * k:20 + 2 * k] = (230, 40, 40)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Settings: one field per input, and the inputs that exclude or need each other
# ----------------------------------------------------------------------------------------------------------------


def test_each_mode_has_its_kind_and_windows_count_in_the_nfe(tmp_path):
    wav = media.write_wav(tmp_path / "a.wav", tone(1.0), RATE)
    assert GenerationSettings(prompt="x").kind == "t2va"
    assert GenerationSettings(prompt="x", audio=str(wav)).kind == "a2v"
    assert GenerationSettings(prompt="x", video=moving_frames(9)).kind == "v2a"
    assert GenerationSettings(prompt="x", last_image=moving_frames(1)[0]).kind == "flf2va"
    assert GenerationSettings(prompt="x", audio=(tone(1.0), RATE), image=moving_frames(1)[0]).kind == "a2v"
    s = GenerationSettings(prompt="x", num_windows=3, num_inference_steps=4, guidance="dual")
    assert s.nfe == 3 * 4 * 3
    named = GenerationSettings(prompt="x", audio=str(wav), last_image=moving_frames(1)[0]).to_dict()
    assert named["audio"] == "a.wav" and named["last_image"] == "<image>"  # never a server path


@pytest.mark.parametrize("kwargs, match", [
    (dict(audio=("a.wav",), video="v.mp4"), "audio"),
    (dict(retake_start=0.5), "retake_start=0.5 needs a clip to retake"),
    (dict(strength=0.4), "strength=0.4 needs a clip to retake"),
    (dict(retake_modality="audio"), "retake_modality='audio' needs a clip"),
    (dict(num_windows=0), "num_windows=0 is invalid: expected an integer in \\[1, 8\\]"),
    (dict(crossfade="sample"), "crossfade='sample' is invalid"),
    (dict(strength=0.0), "strength=0.0 is invalid: expected a number in \\(0, 1\\]"),
])
def test_bad_mode_settings_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerationSettings(prompt="x", **kwargs)


def test_inputs_that_exclude_each_other(clip, tmp_path):
    wav = str(media.write_wav(tmp_path / "a.wav", tone(1.0), RATE))
    frame = moving_frames(1)[0]
    with pytest.raises(ValueError, match="video cannot be combined with audio"):
        GenerationSettings(prompt="x", audio=wav, video=moving_frames(9))
    with pytest.raises(ValueError, match="retake cannot be combined with extend"):
        GenerationSettings(prompt="x", extend=clip, retake=clip)
    with pytest.raises(ValueError, match="image cannot be combined with extend"):
        GenerationSettings(prompt="x", extend=clip, image=frame)
    with pytest.raises(ValueError, match="last_image cannot be combined with video"):
        GenerationSettings(prompt="x", video=moving_frames(9), last_image=frame)
    with pytest.raises(ValueError, match="num_windows=2 is invalid with retake"):
        GenerationSettings(prompt="x", retake=clip, num_windows=2)
    with pytest.raises(ValueError, match="retake_start=1 is invalid: expected a start before retake_end=0.5"):
        GenerationSettings(prompt="x", retake=clip, retake_start=1.0, retake_end=0.5)
    with pytest.raises(ValueError, match="audio is invalid: no such file"):
        GenerationSettings(prompt="x", audio=str(tmp_path / "missing.wav"))


# ----------------------------------------------------------------------------------------------------------------
# Reading the inputs: every file-dependent problem names its field
# ----------------------------------------------------------------------------------------------------------------


def resolved(**kwargs) -> GenerationSettings:
    return GenerationSettings(prompt="x", **{**SMALL, **kwargs})


def test_audio_shorter_than_the_clip_or_silent_is_refused(tmp_path):
    short = media.write_wav(tmp_path / "short.wav", tone(0.5), RATE)  # the clip lasts 0.75 s
    with pytest.raises(ValueError, match=r"audio is invalid: the sound is 0.50 s long, shorter than the 0.75 s"):
        modes.read_inputs(resolved(audio=str(short)), RATE)
    with pytest.raises(ValueError, match=r"audio is invalid: .* 1.50 s it must cover"):  # two windows need 1.5 s
        modes.read_inputs(resolved(audio=(tone(1.0), RATE), num_windows=2), RATE)
    quiet = media.write_wav(tmp_path / "quiet.wav", tone(1.0) * 1e-4, RATE)
    with pytest.raises(ValueError, match=r"audio is invalid: the sound is silent \(peak -90 dBFS"):
        modes.read_inputs(resolved(audio=str(quiet)), RATE)
    with pytest.raises(ValueError, match="audio is invalid: the file has no audio stream|audio is invalid: .*no audio"):
        video_only = media.write_mp4(tmp_path / "v.mp4", moving_frames(9), 12.0)
        modes.read_inputs(resolved(audio=str(video_only)), RATE)
    ok = modes.read_inputs(resolved(audio=(tone(2.0, 16000), 16000)), RATE)  # resampled, cut to the clip
    assert ok.audio.dtype == np.float32 and ok.audio.shape == (36000,)


def test_clips_without_sound_short_videos_and_other_proportions_are_refused(tmp_path):
    silent_clip = media.write_mp4(tmp_path / "nosound.mp4", moving_frames(9), 12.0)
    with pytest.raises(ValueError, match="extend is invalid: the clip has no sound"):
        modes.read_inputs(resolved(extend=str(silent_clip)), RATE)
    short = media.write_mp4(tmp_path / "short.mp4", moving_frames(5), 12.0)
    with pytest.raises(ValueError, match=r"video is invalid: it has 5 frames at 12 fps \(0.42 s\), shorter than"):
        modes.read_inputs(resolved(video=str(short)), RATE)
    wide = np.zeros((9, 64, 128, 3), np.uint8)
    wide_clip = media.write_mp4(tmp_path / "wide.mp4", wide, 12.0, tone(0.75), RATE)
    with pytest.raises(ValueError, match=r"retake is invalid: the clip is 128×64 \(width×height\) but the clip is "
                                         r"generated at 64×64: their aspect ratios differ \(2.00 vs 1.00\)"):
        modes.read_inputs(resolved(retake=str(wide_clip)), RATE)
    with pytest.raises(ValueError, match="last_image is invalid: the last frame is 128×64"):
        modes.read_inputs(resolved(image=moving_frames(1)[0], last_image=wide[0]), RATE)


def test_a_span_outside_the_clip_or_longer_than_a_window_is_refused(clip):
    with pytest.raises(ValueError, match=r"retake_end=2 is outside the clip: expected 0 ≤ retake_start < "
                                         r"retake_end ≤ 0.75"):
        modes.read_inputs(resolved(retake=clip, retake_start=0.2, retake_end=2.0), RATE)
    with pytest.raises(ValueError, match="retake is invalid: the clip has 9 frames at 12 fps .* fewer than "
                                         "num_frames=13"):
        modes.read_inputs(resolved(retake=clip, num_frames=13), RATE)
    long = modes.Plan(resolved(retake=clip, retake_start=0.25, retake_end=0.5),
                      modes.read_inputs(resolved(retake=clip, retake_start=0.25, retake_end=0.5), RATE),
                      sample_rate=RATE, hop=960, temporal=4)
    assert long.windows == [modes.Window(0, 0, 9)]


def test_a_video_file_is_retimed_and_resized_to_the_clip(tmp_path):
    levels = 8 * np.arange(24)  # 1 s at 24 fps, 64×96 (height×width): frame k is grey level 8k
    frames = np.repeat(levels.astype(np.uint8)[:, None, None, None], 64, 1).repeat(96, 2).repeat(3, 3)
    path = media.write_mp4(tmp_path / "v24.mp4", frames, 24.0, crf=0)
    got = modes.read_inputs(resolved(video=str(path)), RATE).frames
    assert got.shape == (9, 64, 64, 3)  # centre-cropped to the clip's square
    # output frame j (12 fps) is source frame 2j, the nearest in time (±2 grey levels of coding)
    assert np.abs(got[:, 32, 32, 0].astype(int) - 16 * np.arange(9)).max() <= 2


# ----------------------------------------------------------------------------------------------------------------
# Known latents
# ----------------------------------------------------------------------------------------------------------------


def test_latent_known_masks():
    known = np.zeros(9, bool)
    known[:5] = True  # frames 0..4: latent 0 (frame 0) and latent 1 (frames 1..4)
    assert video_latent_known(known, 4).tolist() == [True, True, False]
    known[:4] = True
    known[4] = False
    assert video_latent_known(known, 4).tolist() == [True, False, False]
    samples = np.zeros(10 * 100, bool)
    samples[:600] = True  # six latents' samples; two latents of margin before the generated ones
    assert audio_latent_known(samples, 100, 10, margin=2).tolist() == [True] * 4 + [False] * 6
    assert audio_latent_known(np.ones(950, bool), 100, 10, margin=2).all()  # the padded tail follows the last sample


def test_known_latents_hold_the_flow_interpolation():
    x0, noise = torch.full((1, 2, 3, 1), 2.0), torch.full((1, 2, 3, 1), -1.0)
    known = KnownLatents(x0, torch.tensor([1.0, 0.5, 0.0]))
    z = torch.zeros(1, 2, 3, 1)
    held = known.hold(z, noise, 0.25)
    assert held[0, 0, :, 0].tolist() == pytest.approx([0.75 * 2 - 0.25, 0.5 * 1.25, 0.0])
    assert not known.clean and KnownLatents(x0, torch.ones(3)).clean


# ----------------------------------------------------------------------------------------------------------------
# The modes end to end (tiny random model: the numbers are about what is kept, not how good the clip looks)
# ----------------------------------------------------------------------------------------------------------------


def test_audio_to_video_carries_the_given_sound(pipe, tmp_path):
    sound = tone(1.0)
    wav = media.write_wav(tmp_path / "a.wav", sound, RATE)
    result = pipe("a drum", audio=str(wav), seed=1, **SMALL)
    given, _ = media.read_audio(wav)
    assert result.video.shape == (9, 64, 64, 3) and result.settings.kind == "a2v"
    np.testing.assert_array_equal(result.audio, given[:36000])  # not re-decoded, not loudness-normalised



def test_a_modality_given_whole_runs_clean(pipe, monkeypatch):
    """Audio → video: every denoiser call sees the given sound's latents at t_audio = 0 (video → audio likewise)."""
    calls = []
    forward = pipe.denoiser.forward

    def spy(video, audio, text, t_video, t_audio, *args, **kwargs):
        calls.append((video[:, :16].clone(), audio.clone(), t_video.clone(), t_audio.clone()))
        return forward(video, audio, text, t_video, t_audio, *args, **kwargs)

    monkeypatch.setattr(pipe.denoiser, "forward", spy)
    sound = tone(0.75)
    pipe("a drum", audio=(sound, RATE), seed=1, **SMALL)
    given = pipe.encode_audio(sound)
    assert len(calls) == 3 and all(bool((c[3] == 0).all()) and bool((c[2] > 0).all()) for c in calls)
    assert all(torch.equal(c[1][:1], given) for c in calls)
    calls.clear()
    frames = moving_frames(9)
    pipe("a square slides", video=frames, seed=1, **SMALL)
    given = pipe.encode_video(torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255.0 * 2.0 - 1.0)
    assert all(bool((c[2] == 0).all()) and bool((c[3] > 0).all()) for c in calls)
    assert all(torch.equal(c[0][:1], given) for c in calls)


def test_video_to_audio_carries_the_given_frames(pipe):
    frames = moving_frames(12)
    result = pipe("a square slides", video=frames, seed=1, **SMALL)
    np.testing.assert_array_equal(result.video, frames[:9])
    assert result.audio.shape == (36000,) and np.abs(result.audio).max() > 0
    assert result.first_frame is None


def test_first_last_frame_holds_the_last_latent(pipe):
    last = moving_frames(9)[-1]
    z_video, _ = pipe("a square", last_image=last, seed=1, output_type="latent", **SMALL)
    still = pipe.encode_video(torch.from_numpy(np.repeat(last[None], 9, 0)).permute(3, 0, 1, 2)[None].float()
                              / 255.0 * 2.0 - 1.0)
    torch.testing.assert_close(z_video[:, :, -1], still[:, :, -1])  # exactly the still's latent after σ = 0
    free, _ = pipe("a square", seed=1, output_type="latent", **SMALL)
    assert (free[:, :, -1] - still[:, :, -1]).abs().mean() > 0.1


def test_three_windows_make_a_clip_three_times_as_long(pipe):
    steps = []
    single = pipe("a red ball bounces", seed=5, **SMALL)
    chain = pipe("a red ball bounces", seed=5, num_windows=3, progress=lambda stage, done, total:
                 steps.append((done, total)) if stage == "denoise" else None, **SMALL)
    assert chain.video.shape == (27, 64, 64, 3) and chain.audio.shape == (3 * 36000,)
    assert chain.nfe == 3 * single.nfe and steps[-1] == (9, 9) and len(steps) == 9  # progress over the windows
    # window 0 is the single clip; the pixel join cross-fades from frame 9 - 8 = 1 on (held frames 1..5)
    np.testing.assert_array_equal(chain.video[:1], single.video[:1])


@pytest.mark.parametrize("crossfade", ["pixel", "latent"])
def test_extend_continues_a_clip(pipe, clip, crossfade):
    result = pipe("a red ball bounces", extend=clip, num_windows=2, seed=8, crossfade=crossfade, **SMALL)
    assert result.video.shape == (9 + 2 * 9, 64, 64, 3) and result.audio.shape == (36000 * 3,)
    np.testing.assert_array_equal(result.video[:1], clip.video[:1])  # before the overlap: the clip itself
    np.testing.assert_array_equal(result.audio[:4000], clip.audio[:4000])  # … and its sound
    assert result.settings.kind == "extend"


@pytest.mark.parametrize("modality", ["both", "video", "audio"])
def test_retake_keeps_the_outside_of_the_span(pipe, clip, modality):
    result = pipe("a red ball bounces", retake=clip, retake_start=0.25, retake_end=0.5, retake_modality=modality,
                  seed=9, **SMALL)
    inside_frames, inside_samples = slice(3, 6), slice(12000, 24000)
    outside = np.r_[0:3, 6:9]
    np.testing.assert_array_equal(result.video[outside], clip.video[outside])
    np.testing.assert_array_equal(result.audio[:12000], clip.audio[:12000])
    np.testing.assert_array_equal(result.audio[24000:], clip.audio[24000:])
    video_changed = np.abs(result.video[inside_frames].astype(int) - clip.video[inside_frames]).mean()
    audio_changed = np.abs(result.audio[inside_samples] - clip.audio[inside_samples]).mean()
    assert (video_changed > 0.5) == (modality != "audio")
    assert (audio_changed > 1e-4) == (modality != "video")


def test_retake_strength_keeps_more_of_the_original(pipe, clip):
    def change(strength):
        r = pipe("a red ball bounces", retake=clip, strength=strength, seed=9, **SMALL)
        return np.abs(r.video.astype(int) - clip.video.astype(int)).mean()

    assert change(0.3) < change(1.0)


def test_the_backend_check_reads_the_inputs_before_the_queue(pipe, tmp_path):
    from mova.backends.local import LocalBackend

    backend = LocalBackend(pipeline=pipe, data_dir=tmp_path)
    short = media.write_wav(tmp_path / "short.wav", tone(0.3), RATE)
    with pytest.raises(ValueError, match="audio is invalid: the sound is 0.30 s long"):
        backend.check(GenerationSettings(prompt="a drum", audio=str(short), **SMALL))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="last_image is invalid"):
        backend.check(GenerationSettings(prompt="x", last_image=str(broken), **SMALL))
    Image.fromarray(moving_frames(1)[0]).save(tmp_path / "f.png")
    assert backend.check(GenerationSettings(prompt="x", last_image=str(tmp_path / "f.png"), **SMALL)).kind == "flf2va"


def test_the_cli_runs_a_mode(tiny_checkpoint, tmp_path, capsys):
    from mova.__main__ import main

    wav = media.write_wav(tmp_path / "a.wav", tone(1.0), RATE)
    out = tmp_path / "a2v.mp4"
    assert main(["generate", "--model", str(tiny_checkpoint), "--prompt", "a drum", "--audio", str(wav),
                 "--num-frames", "9", "--fps", "12", "--steps", "2", "--seed", "4", "--out", str(out)]) == 0
    clip = media.read_mp4(out)
    assert clip.video.shape[0] == 9 and clip.audio is not None
    given, _ = media.read_audio(wav)
    # the mp4 carries the given sound (AAC-coded: close, not bit-exact)
    n = min(len(clip.audio), 36000)
    assert np.corrcoef(clip.audio[2048:n], given[2048:n])[0, 1] > 0.99


def test_seam_figures_find_a_cut_and_pass_a_fade():
    from mova.eval import Join, nearest_offsets, seam_figures

    assert nearest_offsets([1.0, 2.0, 3.1], [0.9, 2.6]).tolist() == pytest.approx([0.1, 0.5])
    assert np.isnan(nearest_offsets([], [1.0])).all()
    rng = np.random.default_rng(0)
    levels = np.cumsum(rng.uniform(0, 2, 40))  # a slow drift of brightness, a step of 40 at frame 20
    levels[20:] += 40
    video = np.repeat(np.clip(levels, 0, 255).astype(np.uint8)[:, None, None, None], 8, 1).repeat(8, 2).repeat(3, 3)
    audio = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    audio[4000:] += 0.8  # a click
    cut = seam_figures(video, audio, [Join(20, 20, (4000,))])
    assert not cut["joins"][0]["within"] and cut["joins"][0]["frame_change_vs_p95"] > 10
    smooth = seam_figures(video, audio, [Join(10, 10, (2000,))])
    assert smooth["joins"][0]["frame_change_vs_p95"] < 1.5 and 0 < smooth["seamless_frame_share_within"] <= 1


def test_zerogpu_duration_counts_every_window():
    from mova.backends.durations import DurationModel

    d = DurationModel(slice_factor=1.0, margin=1.0)
    one = GenerationSettings(prompt="x", height=352, width=640, num_frames=193, fps=24.0, num_inference_steps=50)
    three = one.replace(num_windows=3)
    assert d.estimate_settings(three) == pytest.approx(d.estimate(352, 640, 193, 50, 2, 24.0)
                                                       + 2 * d.estimate(352, 640, 193 + 12, 50, 2, 24.0))
    assert d.estimate_settings(three) > 3 * d.estimate_settings(one)


def test_the_work_ceiling_counts_windows_and_arena_specs_take_no_media(pipe):
    info = pipe.model_info()
    steps = int(info.max_work // (64 * 64 * 9 * 2))  # the most steps of text CFG one 9-frame window may take
    assert info.check(GenerationSettings(prompt="x", **{**SMALL, "num_inference_steps": steps})).num_windows == 1
    with pytest.raises(ValueError, match=r"too much work .*×num_windows = .*lower num_inference_steps, num_frames, "
                                         r"num_windows or the size"):
        info.check(GenerationSettings(prompt="x", num_windows=2, **{**SMALL, "num_inference_steps": steps}))
    from mova.arena.fill import spec_keys

    keys = spec_keys()
    assert "num_windows" in keys and not {"image", "last_image", "audio", "video", "extend", "retake"} & set(keys)
