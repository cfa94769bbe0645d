"""The ``prepare`` run: source videos -> clips -> labels and measurements -> filters -> manifests.

For each source video (in input order; in parallel with ``workers > 1``):

1. cut (:mod:`.cut`): letterbox detection over sampled frames, audio decoded once to 48 kHz mono, frames
   streamed at the clip rate through the crop/fit/resize transform, fixed windows;
2. per clip: scene cuts (:mod:`.scenes`), speech segments (:mod:`.vad`), the clip type (:mod:`.labels`), the
   measurements (:func:`.filters.measure_clip`), the filter decision (:func:`.filters.apply_filters`);
3. the clip mp4 (``mova.media.write_mp4``: H.264 + AAC) under ``OUT/clips/``.

Output folder::

    clips/<id>.mp4     every measured clip (rejected ones too, so new thresholds can be tried without decoding)
    clips.jsonl        every measured clip, with ``keep`` and ``reject_reasons``
    manifest.jsonl     the kept clips only: what the trainer reads
    dropped.jsonl      sources and windows that produced no clip, with reason and detail
    summary.json       counts: inputs, videos used, drops by reason, kept, rejections by reason

Nothing a source does stops the run: every failure becomes a counted, logged drop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mova.media import write_mp4

from .captions import CaptionConfig
from .cut import CutConfig, Drop, VideoCutter, Window
from .decode import InputError
from .filters import FilterConfig, MeasureConfig, apply_filters, measure_clip
from .letterbox import LetterboxConfig
from .labels import clip_type
from .manifest import write_manifest
from .scenes import SceneConfig, detect_scene_cuts
from .vad import VADConfig, detect_speech, speech_duration

logger = logging.getLogger(__name__)

__all__ = ["PrepareConfig", "SourceEntry", "VideoResult", "list_inputs", "analyze_clip", "process_video", "prepare", "clip_id"]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv")
CLIPS_DIR = "clips"
ALL_CLIPS = "clips.jsonl"
MANIFEST = "manifest.jsonl"
DROPPED = "dropped.jsonl"
SUMMARY = "summary.json"


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """All stages of ``prepare``, one section each (see each section's class for its fields); loaded from YAML by
    ``train.yaml_config.load_config``, any section or key left out takes its default:

        cut:        {num_frames: 193, fps: 24, stride_frames: null, sample_rate: 48000, width: 1280, height: 720}
        letterbox:  {threshold: 24, samples: 16, fit: auto, max_crop_fraction: 0.25}
        scenes:     {min_content: 15, adaptive_ratio: 3, min_hist_distance: 0.2, min_scene_s: 0.5}
        vad:        {energy_floor_db: -45, max_flatness: 0.3, min_periodicity: 0.6, min_total_speech_s: 1.0}
        measure:    {silence_threshold_db: -50, bandwidth_rolloff: 0.99, av_max_offset_frames: 12}
        filters:    {max_silence_ratio: 0.5, min_bandwidth_hz: 4000, min_loudness_lufs: -40, ...}
        captions:   {provider: auto}
    """

    cut: CutConfig = field(default_factory=CutConfig)
    letterbox: LetterboxConfig = field(default_factory=LetterboxConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)


ProgressFn = Callable[[int, int, str], None]  # (done, total, message)


@dataclass(frozen=True)
class SourceEntry:
    """One input video: its resolved ``path``, the text it was given as, and an optional video-level caption
    (from a JSONL list's ``caption`` field or a sidecar ``<video>.txt``) copied to every clip."""

    path: Path
    given: str
    caption: str | None = None


@dataclass
class VideoResult:
    """What one source produced: clip rows (filter decision included) and drops (whole video or windows)."""

    index: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------


def _sidecar_caption(path: Path) -> str | None:
    side = path.with_suffix(".txt")
    if side.is_file():
        text = side.read_text(encoding="utf-8", errors="replace").strip()
        return text or None
    return None


def list_inputs(source: str | os.PathLike[str]) -> tuple[list[SourceEntry], list[Drop]]:
    """Input videos from a folder (recursive, by extension, sorted), a list file (one path per line, ``#``
    comments), a JSONL list (``{"path": ..., "caption": ...}`` per line) or a single video file. Relative
    paths in a list are relative to the list's folder. Unreadable list lines and repeated paths become drops
    (``bad_input_row``, ``duplicate_input``); missing files stay in the list and are dropped when processed.

    Raises:
        ValueError: when ``source`` does not exist.
    """
    src = Path(source)
    entries: list[SourceEntry] = []
    drops: list[Drop] = []
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        entries = [SourceEntry(p, str(p), _sidecar_caption(p)) for p in files]
    elif src.is_file() and src.suffix.lower() in VIDEO_EXTENSIONS:
        entries = [SourceEntry(src, str(src), _sidecar_caption(src))]
    elif src.is_file():
        for number, line in enumerate(src.read_text(encoding="utf-8").splitlines(), start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            caption = None
            if src.suffix.lower() == ".jsonl" or text.startswith("{"):
                try:
                    item = json.loads(text)
                    given = item["path"]
                    caption = item.get("caption")
                    if not isinstance(given, str) or (caption is not None and not isinstance(caption, str)):
                        raise TypeError("path and caption must be strings")
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                    drops.append(Drop(f"{src}:{number}", "bad_input_row", f"line {number}: {exc}"))
                    continue
            else:
                given = text
            p = Path(given)
            if not p.is_absolute():
                p = src.parent / p
            entries.append(SourceEntry(p, given, caption or _sidecar_caption(p)))
    else:
        raise ValueError(f"input: {str(src)!r} does not exist; give a folder, a list file or a video file")
    unique: list[SourceEntry] = []
    seen: set[Path] = set()
    for entry in entries:
        key = entry.path.resolve()
        if key in seen:
            drops.append(Drop(entry.given, "duplicate_input", "listed more than once"))
            continue
        seen.add(key)
        unique.append(entry)
    return unique, drops


def clip_id(path: Path, clip_index: int) -> str:
    """``<stem>-<8 hex of the resolved path>-<clip index>``: readable, unique across same-named files."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:60] or "video"
    digest = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}-{clip_index:04d}"


# --------------------------------------------------------------------------------------------------------------
# One clip, one video
# --------------------------------------------------------------------------------------------------------------


def analyze_clip(
    video: np.ndarray, fps: float, audio: np.ndarray | None, sample_rate: int, cfg: PrepareConfig
) -> dict[str, Any]:
    """Labels and measurements of one clip (uint8 RGB ``[T, H, W, 3]``, mono float32 ``[N]`` or None)."""
    cuts = detect_scene_cuts(video, fps, cfg.scenes)
    segments = detect_speech(audio, sample_rate, cfg.vad) if audio is not None else []
    speech_s = speech_duration(segments)
    duration = video.shape[0] / fps
    row: dict[str, Any] = {
        "scene_cuts_s": [round(int(k) / fps, 4) for k in cuts],
        "num_scenes": int(len(cuts) + 1),
        "speech_segments": [[s, e] for s, e in segments],
        "speech_s": round(speech_s, 3),
        "speech_ratio": round(speech_s / duration, 4),
        "clip_type": clip_type(len(cuts) + 1, speech_s, cfg.vad.min_total_speech_s),
    }
    row.update(measure_clip(video, fps, audio, sample_rate, cfg.measure))
    return row


def _clip_row(entry: SourceEntry, cutter: VideoCutter, window: Window, cfg: PrepareConfig) -> dict[str, Any]:
    cut, tf = cfg.cut, cutter.transform
    cid = clip_id(entry.path, window.clip_index)
    row: dict[str, Any] = {
        "id": cid,
        "video": f"{CLIPS_DIR}/{cid}.mp4",
        "caption": entry.caption or "",
        "num_frames": cut.num_frames,
        "fps": cut.fps,
        "sample_rate": cut.sample_rate,
        "width": tf.width,
        "height": tf.height,
        "aspect": tf.aspect,
        "duration_s": round(cut.duration_s, 4),
        "has_audio": window.audio is not None,
        "source": entry.given,
        "clip_index": window.clip_index,
        "start_frame": window.start_frame,
        "source_start_s": window.start_s,
        "source_end_s": round(window.start_s + cut.duration_s, 4),
        "source_width": cutter.display_size[0],
        "source_height": cutter.display_size[1],
        "letterbox_box": tf.bars.as_list(),
        "crop_box": tf.crop.as_list(),
        "pad": list(tf.pad),
        "audio_coverage": window.audio_coverage,
    }
    if entry.caption:
        row["caption_source"] = "input"
    row.update(analyze_clip(window.video, cut.fps, window.audio, cut.sample_rate, cfg))
    reasons = apply_filters(row, cfg.filters)
    row["keep"] = not reasons
    row["reject_reasons"] = reasons
    return row


def process_video(index: int, entry: SourceEntry, cfg: PrepareConfig, out_dir: Path) -> VideoResult:
    """Cut, analyse, filter and write the clips of one source. Never raises: failures become drops."""
    result = VideoResult(index)
    out_dir = Path(out_dir)
    tmp_dir = out_dir / ".tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    cutter = VideoCutter(entry.path, cfg.cut, cfg.letterbox, tmp_dir)
    try:
        with cutter:
            for window in cutter.windows():
                row = _clip_row(entry, cutter, window, cfg)
                write_mp4(out_dir / row["video"], window.video, cfg.cut.fps, window.audio, cfg.cut.sample_rate,
                          crf=cfg.cut.crf)
                result.rows.append(row)
    except InputError as exc:
        result.drops.append(Drop(entry.given, exc.reason, exc.detail))
    except Exception as exc:  # a bug or an unforeseen file: log it, count it, go on with the next video
        logger.exception("%s: unexpected error", entry.given)
        result.drops.append(Drop(entry.given, "error", f"{type(exc).__name__}: {exc}"))
    for drop in cutter.drops:
        drop.source = entry.given
    result.drops.extend(cutter.drops)
    for drop in result.drops:
        where = "" if drop.clip_index is None else f" clip {drop.clip_index} ({drop.start_s} s)"
        level = logging.DEBUG if drop.reason == "partial_tail" else logging.INFO  # every video has a tail
        logger.log(level, "%s%s dropped: %s (%s)", drop.source, where, drop.reason, drop.detail)
    return result


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------


def _summarize(n_inputs: int, results: list[VideoResult], input_drops: list[Drop], elapsed: float) -> dict:
    video_drops = Counter(d.reason for d in input_drops)
    window_drops: Counter = Counter()
    rows = [row for r in results for row in r.rows]
    for r in results:
        for d in r.drops:
            (window_drops if d.clip_index is not None else video_drops)[d.reason] += 1
    rejected = Counter(reason for row in rows for reason in row["reject_reasons"])
    kept = sum(row["keep"] for row in rows)
    return {
        "inputs": n_inputs,
        "videos_used": sum(1 for r in results if r.rows),
        "videos_dropped": sum(video_drops.values()),
        "videos_dropped_by_reason": dict(sorted(video_drops.items())),
        "windows_dropped_by_reason": dict(sorted(window_drops.items())),
        "clips": len(rows),
        "kept": kept,
        "rejected": len(rows) - kept,
        "rejected_by_reason": dict(sorted(rejected.items())),
        "clip_types_kept": dict(sorted(Counter(r["clip_type"] for r in rows if r["keep"]).items())),
        "elapsed_s": round(elapsed, 2),
    }


def prepare(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: PrepareConfig | None = None,
    *,
    workers: int = 1,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the pipeline over ``source`` (see :func:`list_inputs`) into ``out_dir``; returns the summary.

    Raises:
        ValueError: only for a missing ``source`` or a bad ``workers``; per-video problems are drops.
    """
    cfg = cfg or PrepareConfig()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: {workers!r} is not allowed; expected an integer >= 1")
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries, input_drops = list_inputs(source)
    own = [e for e in entries if out.resolve() in e.path.resolve().parents]
    if own:  # re-running into a folder that is also the input: never cut our own clips again
        logger.info("skipping %d files inside the output folder %s", len(own), out)
        entries = [e for e in entries if e not in own]
    total = len(entries) + len(input_drops)
    results: list[VideoResult] = []

    def report(result: VideoResult) -> None:
        results.append(result)
        if progress is not None:
            name = entries[result.index].path.name
            kept = sum(r["keep"] for r in result.rows)
            what = f"{len(result.rows)} clips, {kept} kept"
            whole = [d.reason for d in result.drops if d.clip_index is None]
            if whole:
                what = f"dropped ({whole[0]})"
            progress(len(results), len(entries), f"{name}: {what}")

    if workers == 1 or len(entries) <= 1:
        for i, entry in enumerate(entries):
            report(process_video(i, entry, cfg, out))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(process_video, i, entry, cfg, out): i for i, entry in enumerate(entries)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # a worker that died (e.g. a decoder crash) takes only its video
                    logger.error("%s: worker failed (%s)", entries[i].given, exc)
                    result = VideoResult(i, drops=[Drop(entries[i].given, "error", f"worker failed: {exc}")])
                report(result)
    results.sort(key=lambda r: r.index)
    try:
        (out / ".tmp").rmdir()
    except OSError:
        pass

    rows = [row for r in results for row in r.rows]
    write_manifest(out / ALL_CLIPS, rows)
    write_manifest(out / MANIFEST, [row for row in rows if row["keep"]])
    drops = input_drops + [d for r in results for d in r.drops]
    write_manifest(out / DROPPED, [d.as_row() for d in drops])
    summary = _summarize(total, results, input_drops, time.perf_counter() - start)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
