"""The served clip folder: all-or-nothing clip writes (a crash or kill -9 never leaves an mp4 without its sidecar,
nor a half-written file under a served name), leftovers swept at start-up, and a size/age bound."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from mova import outputs
from mova.outputs import OutputsPolicy

ROOT = Path(__file__).resolve().parents[1]


def clip(frames: int = 9, size: int = 32, first_frame: np.ndarray | None = None):
    """A GenerationResult of noise and a tone, as the pipeline would return it."""
    from mova.pipeline import GenerationResult
    from mova.settings import GenerationSettings

    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    audio = (0.1 * np.sin(np.arange(frames * 4000) / 7.0)).astype(np.float32)
    settings = GenerationSettings(prompt="a tone", seed=1, height=size, width=size, num_frames=frames, fps=12.0)
    return GenerationResult(video=video, audio=audio, sample_rate=48000, fps=12.0, seed=1, settings=settings,
                            nfe=4, timings={"total": 1.0}, first_frame=first_frame, model="m")


def test_save_clip_writes_the_three_files_under_their_names(tmp_path):
    files = outputs.save_clip(clip(first_frame=np.full((32, 32, 3), 200, np.uint8)), tmp_path, "c1",
                              extra={"prompt_id": "p1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1.first_frame.png", "c1.json", "c1.mp4"]
    sidecar = json.loads(Path(files.sidecar_path).read_text())
    assert sidecar["seed"] == 1 and sidecar["prompt_id"] == "p1" and sidecar["model"] == "m"
    assert sidecar["settings"]["image"] == "c1.first_frame.png" and sidecar["video_path"] == "c1.mp4"
    assert sidecar["timings"]["wall"] == pytest.approx(1.0 + sidecar["timings"]["save"])
    with av.open(files.video_path) as container:
        assert sum(1 for _ in container.decode(video=0)) == 9
    assert Path(files.first_frame_path).read_bytes().startswith(b"\x89PNG")


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):  # the mp4 is encoded, then the (malformed) first frame fails
        outputs.save_clip(clip(first_frame=np.zeros((2, 2, 7), np.uint8)), tmp_path, "c1")
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_leftovers_of_dead_writers_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    names = {
        f".a.mp4.{dead}.0123abcd.tmp.mp4": False,  # a dead writer's temporary: removed
        f"..a.mp4.{dead}.0123abcd.tmp.mp4.{dead}.89abcdef.tmp": False,  # mova.media's own, inside ours
        f".b.json.{os.getpid()}.0123abcd.tmp.json": True,  # a live writer's (this process): kept
        "c.json": False,  # a sidecar whose mp4 never arrived
        "c.first_frame.png": False,
        "d.mp4": True, "d.json": True,  # a whole clip
        "notes.txt": True,  # not ours
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = outputs.sweep(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, keep in names.items() if not keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, keep in names.items() if keep)


def test_kill_9_during_writes_leaves_whole_clips_and_sweepable_temporaries(tmp_path):
    """A writer killed at a random moment: every mp4 present has its sidecar; what remains besides whole clips
    is temporaries, and the start-up sweep removes them."""
    script = textwrap.dedent(f"""
        from mova import outputs
        from tests.test_outputs import clip
        result = clip(frames=49, size=128)
        result.first_frame = result.video[0]
        for i in range(1000):
            outputs.save_clip(result, {str(tmp_path)!r}, f"clip{{i:04d}}")
            print(i, flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "0"  # one whole clip written; kill in the middle of a later one
    time.sleep(0.37)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    names = {p.name for p in tmp_path.iterdir()}
    mp4s = {n[:-4] for n in names if n.endswith(".mp4") and not n.startswith(".")}
    assert mp4s and all(f"{stem}.json" in names and f"{stem}.first_frame.png" in names for stem in mp4s)
    outputs.sweep(tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(f"{stem}{suffix}" for stem in mp4s for suffix in (".mp4", ".json", ".first_frame.png"))


def test_prune_drops_old_clips_then_the_oldest_until_under_the_size(tmp_path):
    now = time.time()
    for i, age_days in enumerate([40, 10, 3, 2, 1]):
        for suffix, size in ((".mp4", 1000), (".json", 100)):
            path = tmp_path / f"clip{i}{suffix}"
            path.write_bytes(bytes(size))
            os.utime(path, (now - age_days * 86400, now - age_days * 86400))
    (tmp_path / "keep.txt").write_bytes(bytes(10_000))  # not a clip: never touched
    removed = outputs.prune(tmp_path, OutputsPolicy(max_bytes=2500, max_age_s=30 * 86400), now=now)
    assert removed == ["clip0", "clip1", "clip2"]  # 40 days: too old; then the oldest until ≤ 2500 bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip3.json", "clip3.mp4", "clip4.json", "clip4.mp4",
                                                         "keep.txt"]


def test_policy_from_env_names_a_bad_value():
    assert OutputsPolicy.from_env({"MOVA_OUTPUTS_MAX_GB": "0.5", "MOVA_OUTPUTS_MAX_DAYS": "2"}) == \
        OutputsPolicy(max_bytes=500_000_000, max_age_s=2 * 86400)
    with pytest.raises(ValueError, match="MOVA_OUTPUTS_MAX_GB='lots'"):
        OutputsPolicy.from_env({"MOVA_OUTPUTS_MAX_GB": "lots"})


def test_the_backend_keeps_its_outputs_within_the_policy(tmp_path, tiny_checkpoint, monkeypatch):
    from mova.backends.local import LocalBackend
    from mova.settings import GenerationSettings
    from tests.test_app_support import FAST, app_checkpoint

    monkeypatch.setenv("MOVA_OUTPUTS_MAX_GB", str(1e-9 * 1))  # 1 byte: only the newest clip survives
    folder = tmp_path / "data" / "outputs"
    folder.mkdir(parents=True)
    (folder / "old.json").write_text("{}")  # a leftover sidecar without its mp4, swept at start
    backend = LocalBackend(app_checkpoint(tiny_checkpoint, tmp_path), data_dir=tmp_path / "data")
    assert not (folder / "old.json").exists()
    first = backend.generate(GenerationSettings(prompt="rain", seed=1, **FAST))
    second = backend.generate(GenerationSettings(prompt="rain", seed=2, **FAST))
    assert not Path(first.video_path).exists() and Path(second.video_path).is_file()
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".mp4"]
