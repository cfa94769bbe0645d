"""The data pipeline end to end on generated media whose properties are known (issue 4, items 4 and 6).

One 20 s source at 24 fps, 160x90 with black bars (content box x=8, y=10, 144x70), a hard scene cut at 10.5 s
and an audio timeline (1 kHz-band noise, a silent stretch, two stretches of voiced formant babble), plus bad
inputs: no audio stream, too short, random bytes, a truncated file, a missing path and an unreadable list line.
Clips are 97 frames (4.04 s) at 128x72, so the long source gives four clips and a 92-frame tail.
"""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest
from scipy import signal

from mova.media import probe, read_mp4, write_mp4
from train.data import PrepareConfig, prepare, read_manifest, write_manifest
from train.yaml_config import from_dict
from train.data.cli import main as cli_main
from train.data.manifest import REQUIRED_FIELDS
from train.demo_world import synth

SR = 48000
FPS = 24
W, H = 160, 90
BOX = (8, 10, 144, 70)  # content x, y, w, h inside the bars
CUT_FRAME = 252  # 10.5 s
N = 97  # clip frames in the tests (4.0417 s)
CLIP_S = N / FPS

# Ground truth per clip of long.mp4 (times relative to the clip start).
TRUE_STARTS = [0, 97, 194, 291]
TRUE_CUTS = [[], [], [(CUT_FRAME - 194) / FPS], []]
TRUE_SPEECH = [[], [], [(8.5 - 194 / FPS, 11.5 - 194 / FPS)], [(13.0 - 291 / FPS, CLIP_S)]]
TRUE_SILENCE = [0.0, (7.5 - 4.5) / CLIP_S, 0.0, 0.0]
TRUE_TYPES = ["single_scene_nonspeech", "single_scene_nonspeech", "multi_scene_speech", "single_scene_speech"]

CONFIG = {"cut": {"num_frames": N, "width": 128, "height": 72}}


# --------------------------------------------------------------------------------------------------------------
# Media with known properties
# --------------------------------------------------------------------------------------------------------------


def babble(n: int, seed: int, level: float = 0.15) -> np.ndarray:
    """Voiced formant babble: a glottal pulse train through vowel formants, 5 syllables/s with a fricative
    burst at each onset (so the spectrum reaches past 4 kHz, as real speech does)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    source = synth.glottal_source(130.0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t)), SR, rng)
    vowels = list(synth.VOWELS.values())
    out = np.zeros(n)
    syllable = int(0.2 * SR)
    for lo in range(0, n, syllable):
        hi = min(n, lo + syllable)
        seg = synth.vowel(source[max(0, lo - 400) : hi], vowels[rng.integers(5)], SR)[min(lo, 400) :]
        out[lo:hi] = seg / (np.std(seg) + 1e-9) * (0.1 + 0.9 * np.sin(np.pi * np.arange(hi - lo) / (hi - lo)))
        m = min(int(0.03 * SR), hi - lo)
        out[lo : lo + m] += 0.6 * synth.band_noise(m, 3000, 9000, SR, rng) * np.hanning(m)
    return level * out / np.sqrt(np.mean(out**2))


def noise(n: int, seed: int, level: float, cutoff_hz: float | None = None) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(n)
    if cutoff_hz:
        x = signal.sosfilt(signal.butter(6, cutoff_hz / (SR / 2), output="sos"), x)
    return level * x / np.std(x)


def frames(T: int, cut_frame: int = 10**9) -> np.ndarray:
    """[T, 90, 160, 3]: black bars around a moving orange checkerboard, then (from ``cut_frame``) blue stripes
    with a moving disk."""
    x0, y0, bw, bh = BOX
    video = np.zeros((T, H, W, 3), np.uint8)
    yy, xx = np.mgrid[0:bh, 0:bw]
    for f in range(T):
        if f < cut_frame:
            chk = (((xx + 2 * f) // 8 + yy // 8) % 2).astype(np.float32)
            img = np.stack([150 + 60 * chk, 100 + 40 * chk, 60 + 20 * chk], -1)
        else:
            disk = ((xx - (20 + 2 * f) % bw) ** 2 + (yy - bh / 2) ** 2 < 225).astype(np.float32)
            stripes = ((yy // 6) % 2).astype(np.float32)
            img = np.stack([40 + 30 * stripes + 150 * disk, 120 + 30 * stripes + 100 * disk, 190 + 40 * stripes], -1)
        video[f, y0 : y0 + bh, x0 : x0 + bw] = img.astype(np.uint8)
    return video


def long_audio(duration: float = 20.0) -> np.ndarray:
    n = int(duration * SR)

    def s(t: float) -> int:
        return int(round(t * SR))

    a = np.zeros(n)
    a[: s(CLIP_S)] = noise(s(CLIP_S), 1, 0.05, cutoff_hz=1000)  # clip 0: narrow-band ambience
    a[s(CLIP_S) : s(4.5)] = noise(s(4.5) - s(CLIP_S), 2, 0.03)  # clip 1: ambience, then silence 4.5-7.5 s
    a[s(7.5) :] = noise(n - s(7.5), 3, 0.01)  # a quiet bed from 7.5 s on
    a[s(8.5) : s(11.5)] += babble(s(11.5) - s(8.5), 4)
    a[s(13.0) :] += babble(n - s(13.0), 5)
    return a.astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    src = root / "src"
    src.mkdir()
    write_mp4(src / "long.mp4", frames(480, CUT_FRAME), FPS, long_audio(), SR)
    write_mp4(src / "noaudio.mp4", frames(120), FPS)  # 5 s, no audio stream
    write_mp4(src / "short.mp4", frames(48), FPS, noise(2 * SR, 6, 0.05).astype(np.float32), SR)
    (src / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    write_mp4(root / "whole.mp4", frames(192), FPS, noise(8 * SR, 7, 0.05).astype(np.float32), SR)
    data = (root / "whole.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[: int(len(data) * 0.3)])
    lines = [
        json.dumps({"path": "src/long.mp4", "caption": "A checkerboard slides left, then a disk rolls."}),
        json.dumps({"path": "src/noaudio.mp4", "caption": "No sound here."}),
        json.dumps({"path": "src/short.mp4", "caption": "Too short."}),
        json.dumps({"path": "src/corrupt.mp4", "caption": "Garbage."}),
        json.dumps({"path": "src/truncated.mp4", "caption": "Cut off."}),
        json.dumps({"path": "src/missing.mp4", "caption": "Not there."}),
        "{this is not json",
    ]
    (root / "list.jsonl").write_text("\n".join(lines) + "\n")
    out = root / "out"
    messages = []
    summary = prepare(root / "list.jsonl", out, from_dict(PrepareConfig, CONFIG),
                      progress=lambda done, total, msg: messages.append((done, total, msg)))
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    return {"root": root, "out": out, "summary": summary, "rows": rows, "progress": messages}


def long_rows(dataset):
    rows = [r for r in dataset["rows"] if r["source"] == "src/long.mp4"]
    return sorted(rows, key=lambda r: r["clip_index"])


# --------------------------------------------------------------------------------------------------------------
# Clip boundaries, letterbox, scenes, speech, silence, labels
# --------------------------------------------------------------------------------------------------------------


def test_clip_boundaries(dataset):
    rows = long_rows(dataset)
    assert [r["clip_index"] for r in rows] == [0, 1, 2, 3]
    assert [r["start_frame"] for r in rows] == TRUE_STARTS
    for r, start in zip(rows, TRUE_STARTS):
        assert r["source_start_s"] == pytest.approx(start / FPS, abs=1e-3)
        assert r["source_end_s"] == pytest.approx(start / FPS + CLIP_S, abs=1e-3)
        assert (r["num_frames"], r["fps"], r["sample_rate"]) == (N, FPS, SR)
    dropped = [json.loads(x) for x in (dataset["out"] / "dropped.jsonl").read_text().splitlines()]
    tail = [d for d in dropped if d["source"] == "src/long.mp4"]
    assert tail == [{"source": "src/long.mp4", "reason": "partial_tail", "detail": "92 frames after the last full clip",
                     "clip_index": 4, "start_s": pytest.approx(388 / FPS, abs=1e-3)}]


def test_clip_files_have_the_clip_format(dataset):
    for r in long_rows(dataset):
        media = read_mp4(dataset["out"] / r["video"])
        assert media.video.shape == (N, 72, 128, 3)
        assert media.fps == FPS and media.sample_rate == SR and media.audio_channels == 1
        assert media.audio.shape[0] == pytest.approx(round(N * SR / FPS), abs=2)
        # the bars are gone: the clip's border rows and columns are content, not black
        assert media.video[:, [0, -1], :].mean() > 60 and media.video[:, :, [0, -1]].mean() > 60


def test_letterbox_box_within_2px(dataset):
    for r in long_rows(dataset):
        assert np.all(np.abs(np.array(r["letterbox_box"]) - np.array(BOX)) <= 2), r["letterbox_box"]
        x, y, w, h = r["crop_box"]
        assert r["aspect"] == "16:9" and (r["width"], r["height"]) == (128, 72)
        assert w / h == pytest.approx(16 / 9, abs=0.02)  # 144x70 content centre-cropped to 16:9 (14 % of area)
        assert abs(y - BOX[1]) <= 2 and abs(h - BOX[3]) <= 2 and abs((x + w / 2) - (BOX[0] + BOX[2] / 2)) <= 2


def test_scene_cut_within_one_frame(dataset):
    for r, truth in zip(long_rows(dataset), TRUE_CUTS):
        assert len(r["scene_cuts_s"]) == len(truth)
        for got, want in zip(r["scene_cuts_s"], truth):
            assert abs(got - want) <= 1 / FPS + 1e-6
        assert r["num_scenes"] == len(truth) + 1


def test_speech_segments_within_100ms(dataset):
    for r, truth in zip(long_rows(dataset), TRUE_SPEECH):
        assert len(r["speech_segments"]) == len(truth), r["speech_segments"]
        for (s, e), (ts, te) in zip(r["speech_segments"], truth):
            assert abs(s - ts) <= 0.1 and abs(e - te) <= 0.1
        assert r["speech_ratio"] == pytest.approx(sum(e - s for s, e in truth) / CLIP_S, abs=0.05)


def test_silence_ratio_and_labels(dataset):
    rows = long_rows(dataset)
    for r, truth in zip(rows, TRUE_SILENCE):
        assert abs(r["silence_ratio"] - truth) <= 0.05
    assert [r["clip_type"] for r in rows] == TRUE_TYPES


def test_filter_values_match_the_generated_audio(dataset):
    rows = long_rows(dataset)
    assert rows[0]["bandwidth_hz"] < 2000  # 1 kHz low-passed ambience
    assert all(r["bandwidth_hz"] > 4000 for r in rows[1:])  # full-band noise / babble with fricatives
    assert all(r["loudness_lufs"] is not None and -40 < r["loudness_lufs"] < -10 for r in rows)
    assert all(r["clipping_ratio"] == 0 for r in rows)
    assert all(r["motion"] > 0.25 and r["sharpness"] > 20 and 60 < r["brightness"] < 200 for r in rows)
    assert [r["reject_reasons"] for r in rows] == [["bandwidth"], ["silence"], [], []]
    assert [r["keep"] for r in rows] == [False, False, True, True]


# --------------------------------------------------------------------------------------------------------------
# Bad inputs, summary, manifest
# --------------------------------------------------------------------------------------------------------------


def test_bad_inputs_are_skipped_with_reasons_and_counted(dataset):
    s = dataset["summary"]
    assert s["inputs"] == 7
    assert s["videos_used"] == 1
    assert s["videos_dropped_by_reason"] == {
        "bad_input_row": 1, "corrupt": 1, "missing_file": 1, "no_audio_stream": 1, "too_short": 1, "truncated": 1,
    }
    assert s["windows_dropped_by_reason"] == {"partial_tail": 1}
    assert (s["clips"], s["kept"], s["rejected"]) == (4, 2, 2)
    assert s["rejected_by_reason"] == {"bandwidth": 1, "silence": 1}
    assert s["clip_types_kept"] == {"multi_scene_speech": 1, "single_scene_speech": 1}
    dropped = {d["source"]: d["reason"] for d in map(json.loads, (dataset["out"] / "dropped.jsonl").open())
               if "clip_index" not in d}
    assert dropped["src/corrupt.mp4"] == "corrupt" and dropped["src/truncated.mp4"] == "truncated"
    assert dropped["src/missing.mp4"] == "missing_file" and dropped["src/short.mp4"] == "too_short"
    assert dropped["src/noaudio.mp4"] == "no_audio_stream"
    assert json.loads((dataset["out"] / "summary.json").read_text()) == s
    assert dataset["progress"][-1][:2] == (6, 6)


def test_manifest_holds_the_kept_clips_for_the_trainer(dataset):
    out = dataset["out"]
    read = read_manifest(out / "manifest.jsonl", check_files=True)
    assert read.skipped == []
    assert [r["clip_index"] for r in read.rows] == [2, 3]
    for r in read.rows:
        assert set(REQUIRED_FIELDS) <= set(r) and r["keep"] and r["reject_reasons"] == []
        assert r["caption"] == "A checkerboard slides left, then a disk rolls." and r["caption_source"] == "input"
        assert probe(out / r["video"])["num_frames"] == N
    assert len({r["id"] for r in dataset["rows"]}) == len(dataset["rows"])


def test_missing_audio_can_be_kept_with_a_flag(dataset, tmp_path):
    cfg = from_dict(PrepareConfig, {**CONFIG, "cut": {**CONFIG["cut"], "missing_audio": "keep"},
                                "filters": {"require_caption": False}})
    summary = prepare(dataset["root"] / "src" / "noaudio.mp4", tmp_path, cfg)
    assert (summary["clips"], summary["kept"]) == (1, 1)
    (row,) = read_manifest(tmp_path / "manifest.jsonl").rows
    assert row["has_audio"] is False and row["silence_ratio"] is None and row["loudness_lufs"] is None
    assert row["clip_type"] == "single_scene_nonspeech"
    info = probe(tmp_path / row["video"])
    assert info["audio_codec"] is None and info["num_frames"] == N


# --------------------------------------------------------------------------------------------------------------
# Filters re-run from the manifest alone
# --------------------------------------------------------------------------------------------------------------


def test_filter_rerun_reproduces_decisions_without_decoding(dataset, tmp_path, monkeypatch, capsys):
    # The clips are gone and opening any media would fail: the filter must read only the manifest.
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(dataset["out"] / "clips.jsonl", work / "clips.jsonl")
    (tmp_path / "data.yaml").write_text("cut: {num_frames: 97, width: 128, height: 72}\n")

    def no_decoding(*args, **kwargs):
        raise AssertionError("filter must not open media")

    monkeypatch.setattr(av, "open", no_decoding)
    m2 = tmp_path / "m2"
    assert cli_main(["filter", str(work / "clips.jsonl"), "--config", str(tmp_path / "data.yaml"),
                     "--out", str(m2 / "kept.jsonl"), "--rejected", str(m2 / "rej.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["kept"], summary["rejected"]) == (2, 2)
    assert summary["rejected_by_reason"] == {"bandwidth": 1, "silence": 1}
    kept = read_manifest(tmp_path / "m2" / "kept.jsonl").rows
    original = read_manifest(dataset["out"] / "manifest.jsonl").rows
    assert [r["id"] for r in kept] == [r["id"] for r in original]
    for a, b in zip(kept, original):
        assert {k: v for k, v in a.items() if k != "video"} == {k: v for k, v in b.items() if k != "video"}
        # video paths were rebased to the new manifest's folder and still name the same files
        assert (tmp_path / "m2" / a["video"]).resolve() == (work / b["video"]).resolve()
    rejected = read_manifest(tmp_path / "m2" / "rej.jsonl").rows
    assert [r["reject_reasons"] for r in rejected] == [["bandwidth"], ["silence"]]

    # Other thresholds change the decisions, still without decoding.
    (tmp_path / "speech.yaml").write_text(
        "filters:\n  allowed_clip_types: [single_scene_speech]\n  min_bandwidth_hz: 1000\n  max_silence_ratio: null\n"
    )
    assert cli_main(["filter", str(work / "clips.jsonl"), "--config", str(tmp_path / "speech.yaml"),
                     "--out", str(tmp_path / "speech.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["kept"], summary["rejected_by_reason"]) == (1, {"clip_type": 3})
    (row,) = read_manifest(tmp_path / "speech.jsonl").rows
    assert row["clip_type"] == "single_scene_speech"


def test_filter_counts_manifest_rows_with_missing_fields(dataset, tmp_path, capsys):
    rows = read_manifest(dataset["out"] / "clips.jsonl").rows
    broken = [dict(rows[2]), {k: v for k, v in rows[3].items() if k != "caption"},
              {k: v for k, v in rows[0].items() if k != "sharpness"}, {**rows[1], "num_frames": "97"}]
    lines = [json.dumps(r) for r in broken] + ["not json at all"]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    assert cli_main(["filter", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "k.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 5 and summary["kept"] == 1
    assert summary["skipped_by_reason"] == {
        "bad_type:num_frames": 1, "invalid_json": 1, "missing_field:caption": 1, "missing_field:sharpness": 1,
    }


def test_cli_rejects_a_bad_config(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("filters:\n  max_silence_ratio: 1.5\n")
    (tmp_path / "m.jsonl").write_text("")
    assert cli_main(["filter", str(tmp_path / "m.jsonl"), "--config", str(tmp_path / "bad.yaml"),
                     "--out", str(tmp_path / "o.jsonl")]) == 2
    assert f"{tmp_path / 'bad.yaml'}: filters.max_silence_ratio=1.5 is invalid" in capsys.readouterr().err


def test_parallel_run_on_a_folder_matches_the_sequential_one(dataset, tmp_path):
    src = dataset["root"] / "src"
    out = src / "prepared"  # inside the input folder: its own clips must not be read back as inputs
    summary = prepare(src, out, from_dict(PrepareConfig, CONFIG), workers=2)
    assert summary["inputs"] == 5
    assert summary["videos_dropped_by_reason"] == {
        "corrupt": 1, "no_audio_stream": 1, "too_short": 1, "truncated": 1}
    rows = read_manifest(out / "clips.jsonl").rows
    sequential = long_rows(dataset)
    assert len(rows) == len(sequential)
    for a, b in zip(rows, sequential):
        assert {k: v for k, v in a.items() if k not in ("source", "caption", "caption_source", "reject_reasons",
                                                        "keep")} == \
               {k: v for k, v in b.items() if k not in ("source", "caption", "caption_source", "reject_reasons",
                                                        "keep")}
        assert "missing_caption" in a["reject_reasons"]  # no list captions and no sidecar .txt here
    assert prepare(src, out, from_dict(PrepareConfig, CONFIG))["inputs"] == 5  # a re-run skips OUT/clips


def test_captions_command_merges_and_rebases(dataset, tmp_path, capsys):
    rows = read_manifest(dataset["out"] / "manifest.jsonl").rows
    rows[0].update(visual_caption="A man stands by a blue wall.", transcript="Over here",
                   sound_caption="Footsteps echo.")
    write_manifest(dataset["out"] / "with_inputs.jsonl", rows)
    assert cli_main(["captions", str(dataset["out"] / "with_inputs.jsonl"), "--provider", "rules",
                     "--out", str(tmp_path / "captioned.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["caption_source"] == {"rules": 1, "unchanged": 1}
    merged = read_manifest(tmp_path / "captioned.jsonl", check_files=True)
    assert merged.skipped == []
    assert merged.rows[0]["caption"] == ('A man stands by a blue wall. The man says, "Over here."\n\n'
                                         "The audio shows footsteps echo.")
    assert merged.rows[1]["caption"] == rows[1]["caption"]
