"""Unit tests of the data-pipeline stages on arrays: config, letterbox, scenes, VAD, labels, filters, captions,
manifest, frame-rate conversion."""

from __future__ import annotations

import json
import math
import re

import httpx2
import numpy as np
import pytest

from mova.media import write_mp4
from mova.prompting.openai_compat import OpenAICompatibleProvider
from train.data import (
    CaptionConfig,
    CropBox,
    FilterConfig,
    LetterboxConfig,
    PrepareConfig,
    SceneConfig,
    apply_filters,
    clip_type,
    detect_letterbox,
    detect_scene_cuts,
    detect_speech,
    filter_rows,
    merge_captions,
    merge_row,
    plan_transform,
    read_manifest,
    validate_row,
    write_manifest,
)
from train.yaml_config import from_dict, load_config, to_dict
from train.data.cut import clip_starts
from train.data.decode import FrameStream
from train.data.filters import measure_clip
from train.demo_world import synth

SR = 48000

# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------


def test_config_defaults_follow_the_paper():
    cfg = PrepareConfig()
    assert (cfg.cut.num_frames, cfg.cut.fps, cfg.cut.sample_rate) == (193, 24.0, 48000)
    assert cfg.cut.duration_s == pytest.approx(8.0417, abs=1e-3) and cfg.cut.num_samples == 386000
    assert cfg.cut.stride == 193


def test_config_yaml_round_trip_and_errors_name_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cut:\n  num_frames: 49\n  stride_frames: 24\n"
                    "filters:\n  allowed_clip_types: [multi_scene_speech]\n")
    cfg = load_config(PrepareConfig, path)
    assert cfg.cut.num_frames == 49 and cfg.cut.stride == 24
    assert cfg.filters.allowed_clip_types == ("multi_scene_speech",)
    assert from_dict(PrepareConfig, to_dict(cfg)) == cfg
    cases = [
        ({"filters": {"max_silence_ratio": 1.5}}, "filters.max_silence_ratio=1.5 is invalid: expected a number >= 0"),
        ({"filters": {"bogus": 1}}, "filters.bogus=1 is invalid: unknown key; filters has"),
        ({"cut": {"width": 641}}, "cut.width=641 is invalid: expected an even size"),
        ({"cut": {"sample_rate": 44000}}, "cut.sample_rate=44000 is invalid: expected one of"),
        ({"cut": {"missing_audio": "maybe"}}, "cut.missing_audio='maybe' is invalid: expected one of ['drop', 'keep']"),
        ({"cut": {"fps": "fast"}}, "cut.fps='fast' is invalid: expected a number"),
        ({"vad": {"hop_ms": 50, "frame_ms": 25}}, "vad.hop_ms=50"),
        ({"filters": {"min_brightness": 200, "max_brightness": 100}}, "filters.min_brightness=200"),
        ({"filters": {"allowed_clip_types": ["talking"]}}, "filters.allowed_clip_types=('talking',)"),
        ({"letterbox": {"fit": "stretch"}}, "letterbox.fit='stretch'"),
        ({"captions": {"provider": "gpt"}}, "captions.provider='gpt'"),
        ({"scenes": "fast"}, "scenes='fast' is invalid: expected a mapping"),
        ({"nonsense": {}}, "nonsense={} is invalid: unknown key; the top level has"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            from_dict(PrepareConfig, data)


def test_clip_starts():
    assert clip_starts(480, 97, 97) == [0, 97, 194, 291]
    assert clip_starts(480, 193, 96) == [0, 96, 192]
    assert clip_starts(96, 97, 97) == []


# --------------------------------------------------------------------------------------------------------------
# Letterbox and aspect fit
# --------------------------------------------------------------------------------------------------------------


def test_detect_letterbox_on_arrays():
    rng = np.random.default_rng(0)
    gray = np.zeros((5, 90, 160), np.uint8)
    gray[:, 12:78, 20:140] = rng.integers(40, 255, (5, 66, 120))
    gray[2, 0:3, :] = 10  # faint noise in a bar stays under the threshold
    assert detect_letterbox(gray) == CropBox(20, 12, 120, 66)
    # a dark scene inside the content in some frames does not shrink the box (max over frames)
    gray[:3, 12:20] = 5
    assert detect_letterbox(gray) == CropBox(20, 12, 120, 66)
    # an all-dark video is not "all bars"
    assert detect_letterbox(np.zeros((3, 90, 160), np.uint8)) == CropBox(0, 0, 160, 90)


def test_plan_transform_crops_or_pads_to_the_nearer_aspect():
    cfg = LetterboxConfig()
    # 4:3 content: cropping to 16:9 removes 25 % -> crop (auto)
    t = plan_transform(640, 480, CropBox(0, 0, 640, 480), cfg, 1280, 720)
    assert (t.aspect, t.width, t.height, t.crop, t.pad) == ("16:9", 1280, 720, CropBox(0, 60, 640, 360), (0, 0, 0, 0))
    # square content: a crop would remove 44 % -> pad instead
    t = plan_transform(500, 500, CropBox(0, 0, 500, 500), cfg, 1280, 720)
    assert t.aspect == "16:9" and t.crop == CropBox(0, 0, 500, 500) and t.pad == (0, 0, 194, 195)
    # portrait content -> 9:16
    t = plan_transform(720, 1280, CropBox(0, 0, 720, 1280), cfg, 1280, 720)
    assert (t.aspect, t.width, t.height) == ("9:16", 720, 1280)
    out = t.apply(np.full((1280, 720, 3), 7, np.uint8))
    assert out.shape == (1280, 720, 3)
    # pad mode keeps all content and adds black
    t = plan_transform(640, 480, CropBox(0, 0, 640, 480), LetterboxConfig(fit="pad"), 64, 36)
    frame = t.apply(np.full((480, 640, 3), 200, np.uint8))
    assert frame.shape == (36, 64, 3) and frame[:, 0].max() == 0 and frame[18, 32, 0] == 200


# --------------------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------------------


def _textured(T: int, colour: tuple[int, int, int], speed: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 60, (48, 400)).astype(np.int16)
    video = np.empty((T, 48, 80, 3), np.uint8)
    for t in range(T):
        patch = base[:, speed * t : speed * t + 80]
        video[t] = np.clip(np.array(colour)[None, None] + patch[..., None], 0, 255)
    return video


def test_scene_cut_found_and_fast_pan_ignored():
    a = _textured(30, (200, 80, 40), 6, 0)  # fast pan: large pixel change every frame, same colours
    b = _textured(30, (30, 90, 200), 1, 1)
    cuts = detect_scene_cuts(np.concatenate([a, b]), 24.0, SceneConfig())
    assert cuts.tolist() == [30]
    assert detect_scene_cuts(a, 24.0).tolist() == []
    # two cuts closer than min_scene_s keep the stronger one
    c = _textured(8, (120, 200, 60), 1, 2)
    video = np.concatenate([a, c, b])
    assert detect_scene_cuts(video, 24.0, SceneConfig(min_scene_s=0.2)).tolist() == [30, 38]
    assert len(detect_scene_cuts(video, 24.0, SceneConfig(min_scene_s=0.5))) == 1
    # a one-frame flash in a steady shot is not a cut
    flash = _textured(30, (90, 90, 90), 1, 3)
    flash[15] = np.clip(flash[15].astype(np.int16) + 150, 0, 255).astype(np.uint8)
    assert detect_scene_cuts(flash, 24.0).tolist() == []
    assert detect_scene_cuts(flash, 24.0, SceneConfig(flash_frames=0)).tolist() != []


# --------------------------------------------------------------------------------------------------------------
# Voice activity, labels
# --------------------------------------------------------------------------------------------------------------


def _babble(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    source = synth.glottal_source(np.full(n, 180.0), SR, rng)
    out = np.zeros(n)
    vowels = list(synth.VOWELS.values())
    step = int(0.25 * SR)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        seg = synth.vowel(source[max(0, lo - 400) : hi], vowels[(lo // step) % 5], SR)[min(lo, 400) :]
        out[lo:hi] = seg / (np.std(seg) + 1e-9) * np.sin(np.pi * np.arange(hi - lo) / (hi - lo)) ** 0.5
    return 0.1 * out


def test_vad_segments_on_arrays():
    rng = np.random.default_rng(3)
    n = 6 * SR
    t = np.arange(n) / SR
    audio = 0.02 * rng.standard_normal(n)  # white noise bed: flat, not speech
    audio[int(1.0 * SR) : int(2.5 * SR)] += _babble(int(1.5 * SR), 0)
    audio[int(3.5 * SR) : int(4.5 * SR)] = 0.1 * np.sin(2 * np.pi * 440 * t[: SR])  # steady tone: not speech
    segments = detect_speech(audio.astype(np.float32), SR)
    assert len(segments) == 1
    assert abs(segments[0][0] - 1.0) <= 0.1 and abs(segments[0][1] - 2.5) <= 0.1
    assert detect_speech(np.zeros(SR, np.float32), SR) == []
    assert detect_speech(np.zeros(100, np.float32), SR) == []


def test_clip_type_labels():
    assert clip_type(1, 3.0) == "single_scene_speech"
    assert clip_type(1, 0.5) == "single_scene_nonspeech"
    assert clip_type(3, 1.0) == "multi_scene_speech"
    assert clip_type(2, 0.0) == "multi_scene_nonspeech"
    with pytest.raises(ValueError, match="num_scenes"):
        clip_type(0, 1.0)


# --------------------------------------------------------------------------------------------------------------
# Measurements and filters
# --------------------------------------------------------------------------------------------------------------


def test_measure_clip_on_arrays():
    rng = np.random.default_rng(1)
    video = rng.integers(0, 255, (24, 36, 64, 3), dtype=np.uint8)
    audio = np.zeros(SR, np.float32)
    audio[SR // 2 :] = 0.1 * rng.standard_normal(SR // 2)
    m = measure_clip(video, 24.0, audio, SR)
    assert m["silence_ratio"] == pytest.approx(0.5, abs=0.03)
    assert m["bandwidth_hz"] > 15000 and m["clipping_ratio"] == 0 and m["loudness_lufs"] < -10
    assert m["brightness"] == pytest.approx(127, abs=5) and m["motion"] > 50 and m["sharpness"] > 1000
    silent = measure_clip(video, 24.0, np.zeros(SR, np.float32), SR)
    assert silent["loudness_lufs"] is None and silent["silence_ratio"] == 1.0 and silent["av_offset_frames"] is None
    json.dumps(silent, allow_nan=False)  # strict JSON


def _row(**over):
    row = {"id": "a", "video": "a.mp4", "caption": "c", "num_frames": 97, "fps": 24.0, "sample_rate": 48000,
           "has_audio": True, "silence_ratio": 0.1, "bandwidth_hz": 8000.0, "loudness_lufs": -20.0,
           "clipping_ratio": 0.0, "sharpness": 100.0, "brightness": 120.0, "motion": 2.0, "av_sync_score": 0.3,
           "av_offset_frames": 1.0, "clip_type": "single_scene_speech", "crop_box": [0, 0, 1280, 720]}
    row.update(over)
    return row


def test_apply_filters_reasons():
    cfg = FilterConfig()
    assert apply_filters(_row(), cfg) == []
    assert apply_filters(_row(silence_ratio=0.9, bandwidth_hz=3000.0), cfg) == ["silence", "bandwidth"]
    assert apply_filters(_row(loudness_lufs=None), cfg) == ["loudness_low"]  # silence reads as too quiet
    assert apply_filters(_row(loudness_lufs=-2.0, clipping_ratio=0.01), cfg) == ["loudness_high", "clipping"]
    assert apply_filters(_row(sharpness=3.0, brightness=5.0, motion=0.0), cfg) == [
        "sharpness", "brightness_low", "motion_low"]
    assert apply_filters(_row(caption="  "), cfg) == ["missing_caption"]
    no_audio = _row(has_audio=False, silence_ratio=None, bandwidth_hz=None, loudness_lufs=None, clipping_ratio=None)
    assert apply_filters(no_audio, cfg) == []
    sync = FilterConfig(min_av_sync_score=0.2, max_av_offset_frames=2)
    assert apply_filters(_row(av_sync_score=0.1, av_offset_frames=1.0), sync) == []  # OR rule, like the paper
    assert apply_filters(_row(av_sync_score=0.1, av_offset_frames=5.0), sync) == ["av_sync"]
    assert apply_filters(_row(av_sync_score=0.1, av_offset_frames=None), sync) == ["av_sync"]
    strict = FilterConfig(allowed_clip_types=("multi_scene_speech",), min_content_short_side=1080)
    assert apply_filters(_row(), strict) == ["clip_type", "low_resolution"]
    off = FilterConfig(**{f: None for f in ("max_silence_ratio", "min_bandwidth_hz", "min_loudness_lufs",
                                            "max_loudness_lufs", "max_clipping_ratio", "min_sharpness",
                                            "min_brightness", "max_brightness", "min_motion")},
                       require_caption=False)
    assert apply_filters(_row(silence_ratio=1.0, sharpness=0.0, caption=""), off) == []


def test_filter_rows_skips_rows_it_cannot_judge():
    rows = [_row(), _row(id="b", silence_ratio=0.9), {k: v for k, v in _row(id="c").items() if k != "motion"},
            _row(id="d", has_audio=None)]
    result = filter_rows(rows, FilterConfig())
    assert [r["id"] for r in result.kept] == ["a"] and [r["id"] for r in result.rejected] == ["b"]
    assert result.skipped == [(2, "missing_field:motion"), (3, "missing_field:has_audio")]
    assert result.summary()["rejected_by_reason"] == {"silence": 1}
    assert "keep" not in rows[0]  # inputs untouched


# --------------------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------------------


def test_rule_merge_anchors_speech_and_ends_with_the_audio():
    caption = merge_captions(
        "a young woman stands at a whiteboard in a classroom. she points at a diagram",
        "Today we talk about waves",
        "Soft room tone and chalk tapping. A young woman stands at a whiteboard in a classroom.",
    )
    body, audio = caption.split("\n\n")
    assert body == ('A young woman stands at a whiteboard in a classroom. She points at a diagram. '
                    'The young woman says, "Today we talk about waves."')
    assert audio == "The audio shows soft room tone and chalk tapping."  # the repeated visual sentence is dropped
    assert merge_captions("A red car drives past.", "Look out", "") == (
        'A red car drives past. A voice off screen says, "Look out."')
    assert merge_captions("", "", "The audio contains rain on a roof.") == "The audio shows rain on a roof."
    assert merge_captions(None, None, None) == ""


class _FakeChat:
    name = "fake"

    def __init__(self, reply):
        self.reply = reply
        self.messages = None

    def complete(self, messages, *, vision=False):
        self.messages = messages
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def test_merge_row_with_a_provider_and_fallbacks():
    row = {"id": "x", "visual_caption": "A man at a desk.", "transcript": "Hello there", "sound_caption": "Typing."}
    good = _FakeChat('A man sits at a desk and says, "Hello there."\n\nThe audio shows typing.')
    out = merge_row(row, CaptionConfig(provider="openai"), good)
    assert out["caption_source"] == "fake" and out["caption"].startswith("A man sits")
    assert "Hello there" in good.messages[1]["content"] and "The audio shows" in good.messages[0]["content"]
    dropped_words = merge_row(row, CaptionConfig(), _FakeChat("A man types at a desk."))
    assert dropped_words["caption_source"] == "rules" and '"Hello there."' in dropped_words["caption"]
    failed = merge_row(row, CaptionConfig(fallback_to_rules=False), _FakeChat(RuntimeError("down")))
    assert failed["caption"] == "" and failed["caption_source"] == "failed"
    assert merge_row({"id": "y", "caption": "kept"}, CaptionConfig(), good) == {"id": "y", "caption": "kept"}


def test_merge_row_through_the_openai_compatible_provider():
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(json.loads(request.content))
        reply = 'A woman waves and says, "Hi." The audio shows birdsong.'
        return httpx2.Response(200, json={"choices": [{"message": {"role": "assistant", "content": reply}}]})

    client = httpx2.Client(transport=httpx2.MockTransport(handler))  # the openai SDK's transport library
    provider = OpenAICompatibleProvider("http://127.0.0.1:9/v1", "merge-model", http_client=client)
    row = {"id": "z", "visual_caption": "A woman waves.", "transcript": "Hi", "sound_caption": "Birdsong."}
    out = merge_row(row, CaptionConfig(provider="openai"), provider)
    assert out["caption_source"] == "openai" and out["caption"].endswith("birdsong.")
    assert seen[0]["model"] == "merge-model" and "Speech transcript: Hi" in seen[0]["messages"][1]["content"]


def test_make_provider_from_environment():
    from train.data.captions import make_provider

    assert make_provider(CaptionConfig(provider="rules"), {}) is None
    assert make_provider(CaptionConfig(provider="auto"), {}) is None
    env = {"MOVA_PROMPT_BASE_URL": "http://127.0.0.1:9/v1", "MOVA_PROMPT_MODEL": "m"}
    assert isinstance(make_provider(CaptionConfig(provider="auto"), env), OpenAICompatibleProvider)
    with pytest.raises(ValueError, match="MOVA_PROMPT_BASE_URL"):
        make_provider(CaptionConfig(provider="openai"), {})


# --------------------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------------------


def test_manifest_round_trip_and_skips(tmp_path):
    rows = [_row(id="a", video="clips/a.mp4", loudness_lufs=float("-inf"), sharpness=np.float32(3.5)),
            _row(id="b", video="clips/b.mp4")]
    write_manifest(tmp_path / "m.jsonl", rows)
    text = (tmp_path / "m.jsonl").read_text()
    assert "Infinity" not in text and "NaN" not in text
    read = read_manifest(tmp_path / "m.jsonl")
    assert [r["id"] for r in read.rows] == ["a", "b"] and read.rows[0]["loudness_lufs"] is None
    assert read.rows[0]["sharpness"] == 3.5
    # bad rows are skipped with reasons
    lines = text.splitlines() + [
        json.dumps(_row(id="a")),  # duplicate
        json.dumps([1, 2]),
        json.dumps({k: v for k, v in _row(id="c").items() if k != "fps"}),
        json.dumps(_row(id="d", fps=0)),
        json.dumps(_row(id="e", has_audio="yes")),
        "{",
    ]
    (tmp_path / "m2.jsonl").write_text("\n".join(lines) + "\n\n")
    read = read_manifest(tmp_path / "m2.jsonl")
    assert [r["id"] for r in read.rows] == ["a", "b"]
    assert read.skipped_by_reason() == {"bad_type:has_audio": 1, "bad_value:fps": 1, "duplicate_id": 1,
                                        "invalid_json": 1, "missing_field:fps": 1, "not_an_object": 1}
    assert [s.line for s in read.skipped] == [3, 4, 5, 6, 7, 8]
    # check_files: rows whose clip is missing are skipped
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    read = read_manifest(tmp_path / "m.jsonl", check_files=True)
    assert [r["id"] for r in read.rows] == ["a"] and read.skipped_by_reason() == {"missing_file": 1}
    assert validate_row(_row()) is None
    with pytest.raises(ValueError, match="manifest"):
        read_manifest(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------------------------------------------
# Frame-rate conversion
# --------------------------------------------------------------------------------------------------------------


def test_frame_stream_converts_30_to_24_fps_by_nearest_timestamp(tmp_path):
    T = 60  # 2 s at 30 fps; frame k shows grey level 4 * k
    video = np.repeat(np.repeat((4 * np.arange(T, dtype=np.uint8))[:, None, None, None], 16, 1), 16, 2)
    video = np.repeat(video, 3, axis=3)
    write_mp4(tmp_path / "v.mp4", video, 30, crf=0)
    stream = FrameStream(tmp_path / "v.mp4", 24.0, lambda f: int(round(f[8, 8, 0] / 4)))
    got = list(stream)
    assert stream.error is None and len(got) == 48
    expected = [min(T - 1, math.floor(j * 30 / 24 + 0.5)) for j in range(48)]
    assert all(abs(index - want) <= 1 for (_, index), want in zip(got, expected))
    assert [j for j, _ in got] == list(range(48))


# --------------------------------------------------------------------------------------------------------------
# Cutting: rotation, audio/video alignment
# --------------------------------------------------------------------------------------------------------------


def test_cutter_applies_the_display_rotation(tmp_path):
    import av

    from train.data.cut import CutConfig, VideoCutter

    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:  # landscape frames + "rotate 90° clockwise for display"
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 36, "yuv420p"
        stream.set_display_rotation(-90)
        for _ in range(30):
            frame = np.full((36, 64, 3), 90, np.uint8)
            frame[:8, :8] = 255  # marker at the stored top-left
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    cut = CutConfig(num_frames=24, width=64, height=36, missing_audio="keep")
    with VideoCutter(path, cut, LetterboxConfig()) as cutter:
        (window,) = list(cutter.windows())
    assert cutter.display_size == (36, 64) and cutter.transform.aspect == "9:16"
    assert window.video.shape == (24, 64, 36, 3) and window.audio is None
    first = window.video[0, :, :, 0].astype(int)
    assert first[:6, -6:].mean() > 200 and first[:6, :6].mean() < 120  # the marker is now top-right


def test_cutter_keeps_audio_and_video_aligned(tmp_path):
    from train.data.cut import CutConfig, VideoCutter

    T = 144  # 6 s at 24 fps; a white flash and a click at frames 30 and 100
    video = np.full((T, 36, 64, 3), 60, np.uint8)
    audio = np.zeros(6 * SR, np.float32)
    for f in (30, 100):
        video[f] = 250
        audio[f * SR // 24 : f * SR // 24 + 240] = 0.8
    write_mp4(tmp_path / "sync.mp4", video, 24, audio, SR)
    cut = CutConfig(num_frames=48, stride_frames=40, width=64, height=36)
    with VideoCutter(tmp_path / "sync.mp4", cut, LetterboxConfig()) as cutter:
        windows = list(cutter.windows())
    assert [w.start_frame for w in windows] == [0, 40, 80]
    assert [d.reason for d in cutter.drops] == ["partial_tail"]
    for w in windows:
        assert w.audio.shape == (cut.num_samples,) and w.audio_coverage == 1.0
        for f in (30, 100):
            k = f - w.start_frame
            if 0 <= k < cut.num_frames:
                assert int(np.argmax(w.video[:, 18, 32, 0])) == k
                onset = int(np.argmax(np.abs(w.audio) > 0.3))
                assert abs(onset - k * SR / 24) < 48  # within 1 ms
