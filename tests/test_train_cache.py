"""Latent cache: what a good row becomes (the pipeline's own encoders and normalisation), and every kind of bad
row skipped with a logged reason, counted in the summary, never a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mova.media import write_mp4, write_wav
from train.cache import CacheSpec, LatentCache, build_cache
from train_helpers import GEOMETRY, demo_cache, demo_dataset, one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_checkpoint):
    return LatentCache(demo_cache(str(tmp_path_factory.getbasetemp()), str(tiny_checkpoint)))


def test_good_rows_match_the_pipeline_encoders(cache, tiny_checkpoint, tmp_path_factory):
    from mova import MOVAPipeline
    from mova.media import read_mp4
    from mova.pipeline import center_crop_resize
    from train.demo_world import read_manifest

    assert len(cache) == 12
    item = cache[0]
    assert item["video"].shape == (16, 3, 8, 8) and item["cond"].shape == (20, 3, 8, 8)
    assert item["audio"].shape == (8, 38)  # 0.75 s at 48 kHz = 36,000 samples -> ceil(36000/960) latent frames
    assert item["text"].shape == (512, 32) and item["fps"] == 12.0
    pipe = MOVAPipeline.from_pretrained(tiny_checkpoint, device="cpu")
    row = read_manifest(demo_dataset(str(tmp_path_factory.getbasetemp())))[0]
    media = read_mp4(row["video_path"])
    frame = center_crop_resize(media.video[0], 64, 64)
    torch.testing.assert_close(item["cond"], pipe.prepare_condition(frame, 64, 64, 9)[0], rtol=0, atol=0)
    text = pipe.encode_prompt([row["caption"]])[0]
    n = int((text.abs().sum(-1) > 0).sum())
    torch.testing.assert_close(item["text"], text, rtol=0, atol=0)
    assert n == cache.rows[0]["n_text"] and (item["text"][n:] == 0).all()
    # the first latent frame of the clip is the normalised first frame, like the condition's
    torch.testing.assert_close(item["video"][:, 0], item["cond"][4:, 0], rtol=1e-4, atol=1e-4)
    assert cache.null_text().shape == (512, 32) and int((cache.null_text().abs().sum(-1) > 0).sum()) == 1
    # the white-frame condition (image dropout) is the pipeline's text-only (T2VA) condition
    white = np.full((64, 64, 3), 255, np.uint8)
    torch.testing.assert_close(cache.white_cond(), pipe.prepare_condition(white, 64, 64, 9)[0], rtol=0, atol=0)


def test_independent_parts_cache_the_same_samples(cache, tiny_checkpoint, tmp_path, tmp_path_factory):
    """``python -m train cache --part I/N``: N independent processes (here in turn) split the rows; together they
    hold what one process caches (part 1 encodes its rows in a batch: equal to rounding)."""
    from train.__main__ import main

    rows = demo_dataset(str(tmp_path_factory.getbasetemp())).read_text().splitlines()[:3]
    root = demo_dataset(str(tmp_path_factory.getbasetemp())).parent
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({**json.loads(r), "video_path": str(root / json.loads(r)["video_path"])})
                                + "\n" for r in rows))
    out = tmp_path / "parts"
    geometry = ["--num-frames", "9", "--fps", "12", "--height", "64", "--width", "64", "--device", "cpu"]
    for part, batch in (("1/2", "4"), ("0/2", "1")):  # part 0 writes meta.json; the order does not matter
        assert main(["cache", "--manifest", str(manifest), "--model", str(tiny_checkpoint), "--out", str(out),
                     "--part", part, "--batch-size", batch, *geometry]) == 0
    assert sorted(p.name for p in out.glob("index-r*.jsonl")) == ["index-r000.jsonl", "index-r001.jsonl"]
    parts = LatentCache(out)
    assert [r["id"] for r in parts.rows] == [r["id"] for r in cache.rows[:3]]
    for i in range(3):
        for key in ("video", "cond", "audio", "text"):
            torch.testing.assert_close(parts[i][key], cache[i][key], rtol=1e-5, atol=1e-5)
    assert main(["cache", "--manifest", str(manifest), "--model", str(tiny_checkpoint), "--out", str(out),
                 "--part", "2/2", *geometry]) == 2  # I must be below N


def _write_bad_manifest(folder, good_rows):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    write_mp4(folder / "short.mp4", frames, 12.0, rng.uniform(-0.1, 0.1, 8000).astype(np.float32), 16000)
    frames = rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
    write_mp4(folder / "silent.mp4", frames, 12.0)  # no audio stream
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(rng.integers(0, 255, 4000, np.uint8)))
    write_wav(folder / "sound.wav", rng.uniform(-0.1, 0.1, 16000).astype(np.float32), 16000)
    np.savez(folder / "clip.npz", video=frames[:10], audio=rng.uniform(-0.1, 0.1, 20000).astype(np.float32),
             fps=np.float64(12.0), sample_rate=np.int64(16000))
    g0, g1 = good_rows
    lines = [
        json.dumps({"id": "good0", "caption": g0["caption"], "video_path": g0["video_path"]}),
        json.dumps({"id": "missing", "caption": "x", "video_path": "nowhere.mp4"}),
        json.dumps({"id": "corrupt", "caption": "x", "video_path": "corrupt.mp4"}),
        json.dumps({"id": "short", "caption": "x", "video_path": "short.mp4"}),
        json.dumps({"id": "silent", "caption": "x", "video_path": "silent.mp4"}),
        json.dumps({"id": "nocaption", "video_path": g1["video_path"]}),
        json.dumps({"caption": "no id", "video_path": g1["video_path"]}),
        json.dumps({"id": "nomedia", "caption": "x"}),
        "{not json",
        json.dumps({"id": "good0", "caption": "duplicate", "video_path": g1["video_path"]}),
        json.dumps({"id": "filtered", "caption": "x", "video_path": g1["video_path"], "keep": False}),
        json.dumps({"id": "audio_only", "caption": "a sound", "audio_path": "sound.wav"}),
        json.dumps({"id": "npz", "caption": "arrays", "npz_path": "clip.npz"}),
        json.dumps({"id": "late", "caption": "x", "video_path": g1["video_path"], "start_s": 1.9}),
    ]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n\n")
    return folder / "manifest.jsonl"


@pytest.mark.parametrize("batch_size", [1, 3])
def test_bad_rows_are_skipped_with_reasons(tmp_path, tmp_path_factory, tiny_checkpoint, caplog, batch_size):
    from train.demo_world import read_manifest

    rows = read_manifest(demo_dataset(str(tmp_path_factory.getbasetemp())))
    manifest = _write_bad_manifest(tmp_path, rows[:2])
    with caplog.at_level("WARNING", logger="train.cache"):
        summary = build_cache(manifest, tiny_checkpoint, tmp_path / "cache",
                              CacheSpec(**GEOMETRY, batch_size=batch_size), progress=False)
    assert summary.cached == 2 and summary.skipped == 12
    assert summary.reasons == {"missing file": 1, "corrupt video": 1, "clip too short": 2, "no audio stream": 1,
                               "missing field": 4, "invalid JSON": 1, "duplicate id": 1, "filtered out": 1}
    skipped = {r["line"]: r for r in map(json.loads, (tmp_path / "cache" / "skipped-r000.jsonl").open())}
    assert skipped[2]["kind"] == "missing file" and "nowhere.mp4" in skipped[2]["reason"]
    assert skipped[4]["kind"] == "clip too short" and "5 frames" in skipped[4]["reason"]
    assert skipped[14]["kind"] == "clip too short"  # start_s 1.9 s into a 2.08 s clip
    assert skipped[12]["reason"].startswith("missing field")  # audio-only row in a video cache
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 12
    cache = LatentCache(tmp_path / "cache")
    assert [r["id"] for r in cache.rows] == ["good0", "npz"]
    assert "skipped" in cache.summary() and "12" in cache.summary()

    # the same manifest cached as audio-only data: good0, the wav row and the npz row have their audio
    audio = build_cache(manifest, tiny_checkpoint, tmp_path / "audio", CacheSpec(**GEOMETRY, audio_only=True),
                        progress=False)
    assert audio.cached == 3 and "audio_only" in [r["id"] for r in LatentCache(tmp_path / "audio",
                                                                              require_video=False).rows]
    with pytest.raises(ValueError, match="no usable samples"):
        LatentCache(tmp_path / "audio")  # joint training needs video


def test_cache_refuses_other_settings_and_empty_results(tmp_path, tiny_checkpoint):
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "caption": "x", "video_path": "gone.mp4"}) + "\n")
    with pytest.raises(ValueError, match="no row .* could be cached"):
        build_cache(tmp_path / "m.jsonl", tiny_checkpoint, tmp_path / "c", CacheSpec(**GEOMETRY), progress=False)
    with pytest.raises(ValueError, match="different settings"):
        build_cache(tmp_path / "m.jsonl", tiny_checkpoint, tmp_path / "c", CacheSpec(**{**GEOMETRY, "fps": 24.0}),
                    progress=False)
    with pytest.raises(ValueError, match="not a latent cache"):
        LatentCache(tmp_path)


def test_cache_geometry_must_match_the_run(cache):
    cache.check(9, 12.0, 64, 64)
    with pytest.raises(ValueError, match=r"data\.fps=24\.0 does not match"):
        cache.check(9, 24.0, 64, 64)
