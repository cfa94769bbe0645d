"""Writing the demo world to disk (training sets) and drawing held-out evaluation prompts.

A dataset folder holds ``manifest.jsonl`` (one row per clip: caption, scene, seed, params, events, tracks and
paths relative to the folder), ``world.json`` (the config and arguments that reproduce it) and ``clips/``
with, per clip, an mp4 (H.264 + AAC, through ``mova.media.write_mp4``), the first frame as PNG (an
image-to-video input) and optionally a lossless ``.npz`` (``video`` uint8 [T, H, W, 3], ``audio`` float32 [N])
for training without decode loss.

Seeds: clip ``i`` of a split is generated from ``clip_seed(seed, i, split)``. The split occupies the top bits
of that integer, so training and held-out seeds are disjoint by construction (not just with high probability).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .scenes import SCENE_NAMES, generate_clip
from .world import Clip, Event, WorldConfig

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (done, total)

SPLITS = ("train", "held_out")
_SEED_BITS = 61  # the split index sits above these bits
EVAL_SCENES = ("bouncing_balls", "talking_face")
MANIFEST = "manifest.jsonl"


def clip_seed(seed: int, index: int, split: str = "train") -> int:
    """The integer seed of clip ``index`` of ``split`` in a world drawn with ``seed`` (a 63-bit int)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is invalid: expected one of {SPLITS}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed={seed!r}, index={index!r} are invalid: expected non-negative ints")
    hi, lo = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    mixed = ((int(hi) << 32) | int(lo)) & ((1 << _SEED_BITS) - 1)
    return (SPLITS.index(split) << _SEED_BITS) | mixed


def scene_for(index: int, scenes: Sequence[str]) -> str:
    """Scenes take turns, so any prefix of a dataset is balanced."""
    return scenes[index % len(scenes)]


def _check_scenes(scenes: Sequence[str]) -> tuple[str, ...]:
    scenes = tuple(scenes)
    bad = [s for s in scenes if s not in SCENE_NAMES]
    if not scenes or bad:
        raise ValueError(f"scenes={list(scenes)!r} is invalid: expected a non-empty list of names from {list(SCENE_NAMES)}")
    return scenes


# --- writing -------------------------------------------------------------------------------------------


def write_npz(path: str | os.PathLike, clip: Clip) -> Path:
    """Lossless arrays of a clip: ``video`` uint8 [T, H, W, 3], ``audio`` float32 [N], ``fps``, ``sample_rate``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, video=clip.video, audio=clip.audio, fps=np.float64(clip.fps),
                        sample_rate=np.int64(clip.sample_rate))
    return path


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(video uint8 [T, H, W, 3], audio float32 [N], fps, sample_rate) from :func:`write_npz`."""
    with np.load(path) as data:
        return data["video"], data["audio"], float(data["fps"]), int(data["sample_rate"])


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"could not write {path}")
    return path


def _write_clip(job: tuple[int, int, str, dict, str, bool, bool]) -> dict[str, Any]:
    """Generate and write one clip; returns its manifest row. Top-level so worker processes can run it."""
    index, seed, scene, config_dict, out_dir, save_mp4, save_npz = job
    clip = generate_clip(scene, seed, WorldConfig.from_dict(config_dict))
    out = Path(out_dir)
    stem = f"clips/{index:06d}"
    row: dict[str, Any] = {"id": f"{index:06d}", "index": index, **clip.metadata()}
    row["image_path"] = str(write_png(out / f"{stem}.png", clip.first_frame).relative_to(out))
    if save_mp4:
        from mova.media import write_mp4  # imported here: npz-only datasets need no video stack

        write_mp4(out / f"{stem}.mp4", clip.video, clip.fps, audio=clip.audio, sample_rate=clip.sample_rate)
        row["video_path"] = f"{stem}.mp4"
    if save_npz:
        row["npz_path"] = str(write_npz(out / f"{stem}.npz", clip).relative_to(out))
    return row


def generate_dataset(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    config: WorldConfig | None = None,
    scenes: Sequence[str] = SCENE_NAMES,
    *,
    save_mp4: bool = True,
    save_npz: bool = False,
    workers: int = 1,
    progress: ProgressFn | None = None,
) -> Path:
    """Write ``n`` clips of the demo world to ``out_dir`` and return the path of ``manifest.jsonl``.

    Args:
        out_dir: dataset folder (created; an existing manifest is overwritten).
        n: number of clips.
        seed: world seed; clip ``i`` uses ``clip_seed(seed, i, "train")`` and scene ``scenes[i % len(scenes)]``.
        config: resolution and clock (default ``WorldConfig()``).
        scenes: scene names to take turns between; a name listed k times gets k turns per round (a weighted mix).
        save_mp4: write ``clips/NNNNNN.mp4`` (H.264 + AAC at the world sample rate).
        save_npz: also write lossless ``clips/NNNNNN.npz``.
        workers: processes generating clips in parallel (rows stay in index order).
        progress: called as ``progress(done, n)`` after each clip.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid: expected a positive int")
    if not save_mp4 and not save_npz:
        raise ValueError("save_mp4=False and save_npz=False: nothing would be written; enable one of them")
    cfg = config or WorldConfig()
    scenes = _check_scenes(scenes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "world.json").write_text(json.dumps(
        {"seed": seed, "n": n, "scenes": list(scenes), "config": cfg.to_dict(), "split": "train"}, indent=2))
    jobs = [(i, clip_seed(seed, i), scene_for(i, scenes), cfg.to_dict(), str(out), save_mp4, save_npz)
            for i in range(n)]
    manifest = out / MANIFEST
    tmp = manifest.with_suffix(".jsonl.tmp")
    with open(tmp, "w") as fh:
        for done, row in enumerate(_run(jobs, workers), start=1):
            fh.write(json.dumps(row) + "\n")
            if progress is not None:
                progress(done, n)
    os.replace(tmp, manifest)
    logger.info("demo world: %d clips written to %s", n, out)
    return manifest


def _run(jobs: list, workers: int) -> Iterable[dict[str, Any]]:
    if workers <= 1:
        yield from map(_write_clip, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_write_clip, jobs, chunksize=4)


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``manifest.jsonl`` with ``*_path`` entries resolved to absolute paths."""
    path = Path(path)
    rows = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                for key in [k for k in row if k.endswith("_path")]:
                    row[key] = str((path.parent / row[key]).resolve())
                rows.append(row)
    return rows


# --- held-out prompts ----------------------------------------------------------------------------------


@dataclass
class HeldOutPrompt:
    """An evaluation prompt with its ground truth: the reference clip was never in a training set.

    ``caption`` is the text prompt, ``first_frame`` (uint8 [H, W, 3]) the image-to-video input, and
    ``clip.events`` / ``clip.tracks`` / ``clip.params`` the truth a generated clip is scored against.
    """

    prompt_id: str
    clip: Clip

    @property
    def caption(self) -> str:
        return self.clip.caption

    @property
    def first_frame(self) -> np.ndarray:
        return self.clip.first_frame

    @property
    def scene(self) -> str:
        return self.clip.scene

    @property
    def events(self) -> list[Event]:
        return self.clip.events

    def record(self) -> dict[str, Any]:
        return {"prompt_id": self.prompt_id, **self.clip.metadata()}


def held_out_prompts(
    n: int = 50,
    seed: int = 0,
    config: WorldConfig | None = None,
    scenes: Sequence[str] = EVAL_SCENES,
) -> list[HeldOutPrompt]:
    """``n`` evaluation prompts (default: bouncing balls and talking faces taking turns) from the held-out seed
    split, disjoint from every training seed of :func:`generate_dataset`."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid: expected a positive int")
    cfg = config or WorldConfig()
    scenes = _check_scenes(scenes)
    return [
        HeldOutPrompt(
            f"heldout-{seed}-{i:04d}", generate_clip(scene_for(i, scenes), clip_seed(seed, i, "held_out"), cfg)
        )
        for i in range(n)
    ]


def write_prompt_set(out_dir: str | os.PathLike, prompts: Sequence[HeldOutPrompt], *, save_npz: bool = False) -> Path:
    """Write prompts as ``prompts.jsonl`` plus one first-frame PNG each (and the reference clip as ``.npz`` if
    asked); returns the JSONL path. Paths in rows are relative to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "prompts.jsonl"
    with open(path, "w") as fh:
        for p in prompts:
            row = p.record()
            row["image_path"] = str(write_png(out / f"{p.prompt_id}.png", p.first_frame).relative_to(out))
            if save_npz:
                row["npz_path"] = str(write_npz(out / f"{p.prompt_id}.npz", p.clip).relative_to(out))
            fh.write(json.dumps(row) + "\n")
    return path
