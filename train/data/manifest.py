"""The clip manifest: JSONL, one clip per line, with every measured value; schema checks on read.

Row schema (``prepare`` writes all of these; readers need only :data:`REQUIRED_FIELDS`):

=====================  ===========================================================================================
``id``                 unique clip id, ``<source stem>-<8 hex of the source path>-<clip index, 4 digits>``
``video``              the clip mp4 (H.264 + AAC), relative to the manifest's folder
``caption``            the training caption ("" until captions are merged; the ``missing_caption`` filter)
``num_frames``         frames in the clip (193 by default)
``fps``                clip frame rate
``sample_rate``        clip audio rate (48000); audio is mono
``width``/``height``   clip size in pixels; ``aspect`` "16:9" or "9:16"
``duration_s``         ``num_frames / fps``
``has_audio``          false only for clips kept from sources without audio (``cut.missing_audio: keep``)
``source``             the source video path as given; ``clip_index``, ``start_frame`` (at ``fps``),
                       ``source_start_s``, ``source_end_s`` locate the clip in it (no ``start_s`` key on purpose:
                       ``train/cache.py`` reads ``start_s`` as an offset inside ``video``, and clips start at 0)
``source_width/height``  source frame size; ``crop_box`` [x, y, w, h] the source pixels the clip shows
                       (bars removed, aspect-cropped); ``letterbox_box`` [x, y, w, h] the detected content box;
                       ``pad`` [top, bottom, left, right] black pixels added around the crop (aspect padding)
``scene_cuts_s``       hard cuts, seconds from the clip start; ``num_scenes`` = cuts + 1
``speech_segments``    [[start_s, end_s], ...] from the clip start; ``speech_s`` their total;
                       ``speech_ratio`` = speech_s / duration_s
``clip_type``          single_scene_speech | single_scene_nonspeech | multi_scene_speech | multi_scene_nonspeech
``silence_ratio``      fraction of 20 ms frames under -50 dBFS (``measure`` section)
``bandwidth_hz``       99 % spectral roll-off; ``loudness_lufs`` BS.1770 (null = silence); ``clipping_ratio``
``sharpness``          variance of the Laplacian of the luma; ``brightness`` mean luma; ``motion`` mean
                       absolute luma frame difference (0..255)
``av_sync_score``      peak onset/motion correlation; ``av_offset_frames`` its lag (null = undefined)
``audio_coverage``     fraction of the clip's samples the source audio supplied
``visual_caption``, ``transcript``, ``sound_caption``  caption inputs when known; ``caption_source``
``keep``               the filter decision; ``reject_reasons`` the filters that failed (empty when kept)
=====================  ===========================================================================================

Reading never raises for a bad row: it is skipped with a reason (``invalid_json``, ``not_an_object``,
``missing_field:<name>``, ``bad_type:<name>``, ``bad_value:<name>``, ``duplicate_id``, ``missing_file``) and
logged; the caller counts them.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mova.media import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "REQUIRED_FIELDS", "OPTIONAL_FIELDS", "Skipped", "ManifestRead", "validate_row", "read_manifest", "write_manifest",
    "rebase_rows",
]

_NUMBER = (int, float)
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {"id": (str,), "video": (str,), "caption": (str,), "num_frames": (int,),
                                                  "fps": _NUMBER, "sample_rate": (int,)}
# Checked when present; None is allowed for all of them.
OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {
    "width": (int,), "height": (int,), "duration_s": _NUMBER, "has_audio": (bool,), "aspect": (str,),
    "source": (str,), "clip_index": (int,), "start_frame": (int,), "source_start_s": _NUMBER,
    "source_end_s": _NUMBER, "crop_box": (list,), "letterbox_box": (list,), "pad": (list,),
    "scene_cuts_s": (list,), "num_scenes": (int,), "speech_segments": (list,), "speech_s": _NUMBER,
    "speech_ratio": _NUMBER, "clip_type": (str,), "silence_ratio": _NUMBER, "bandwidth_hz": _NUMBER,
    "loudness_lufs": _NUMBER, "clipping_ratio": _NUMBER, "sharpness": _NUMBER, "brightness": _NUMBER,
    "motion": _NUMBER, "av_sync_score": _NUMBER, "av_offset_frames": _NUMBER, "audio_coverage": _NUMBER,
    "visual_caption": (str,), "transcript": (str,), "sound_caption": (str,), "caption_source": (str,),
    "keep": (bool,), "reject_reasons": (list,),
}
_POSITIVE = ("num_frames", "fps", "sample_rate", "width", "height")


@dataclass(frozen=True)
class Skipped:
    """A manifest line that was not read: 1-based ``line``, ``reason`` key, human ``detail``."""

    line: int
    reason: str
    detail: str


@dataclass
class ManifestRead:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(s.reason for s in self.skipped).items()))


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def validate_row(
    row: Any, required: Mapping[str, tuple[type, ...]] | Sequence[str] = REQUIRED_FIELDS
) -> tuple[str, str] | None:
    """``(reason, detail)`` when ``row`` breaks the schema, else None.

    Args:
        required: field names (or names -> allowed types) that must be present and non-null; the types of
            :data:`REQUIRED_FIELDS` and :data:`OPTIONAL_FIELDS` are checked wherever those fields appear.
    """
    if not isinstance(row, dict):
        return "not_an_object", f"a line holds {type(row).__name__}, not a JSON object"
    for name in required:
        if name not in row or row[name] is None:
            return f"missing_field:{name}", f"field {name!r} is missing or null"
    types = {**OPTIONAL_FIELDS, **REQUIRED_FIELDS}
    if isinstance(required, Mapping):
        types.update(required)
    for name, allowed in types.items():
        if name in row and row[name] is not None and not _type_ok(row[name], allowed):
            expected = "/".join(t.__name__ for t in allowed)
            return f"bad_type:{name}", f"field {name!r} is {row[name]!r}; expected {expected}"
    for name in _POSITIVE:
        if name in row and row[name] is not None and row[name] <= 0:
            return f"bad_value:{name}", f"field {name!r} is {row[name]!r}; expected > 0"
    if not str(row.get("id", "x")).strip():
        return "bad_value:id", "field 'id' is empty"
    if "video" in row and not str(row["video"]).strip():
        return "bad_value:video", "field 'video' is empty"
    return None


def read_manifest(
    path: str | os.PathLike[str],
    *,
    required: Mapping[str, tuple[type, ...]] | Sequence[str] = REQUIRED_FIELDS,
    check_files: bool = False,
) -> ManifestRead:
    """Read a JSONL manifest; bad rows are skipped with a reason (and logged), never raised.

    Args:
        required: see :func:`validate_row`.
        check_files: also skip rows whose ``video`` (relative to the manifest folder) does not exist
            (reason ``missing_file``); a ``stat`` per row, no decoding.

    Raises:
        ValueError: when ``path`` itself is missing or unreadable.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"manifest: {str(p)!r} is not a file")
    result = ManifestRead()
    seen: set[str] = set()
    with open(p, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                result.skipped.append(Skipped(number, "invalid_json", str(exc)))
                continue
            problem = validate_row(row, required)
            if problem is None and "id" in row:
                if row["id"] in seen:
                    problem = ("duplicate_id", f"id {row['id']!r} appears earlier in the file")
                else:
                    seen.add(row["id"])
            if problem is None and check_files and "video" in row and not (p.parent / row["video"]).is_file():
                problem = ("missing_file", f"{row['video']!r} does not exist next to the manifest")
            if problem is not None:
                result.skipped.append(Skipped(number, *problem))
                continue
            result.rows.append(row)
    for s in result.skipped:
        logger.warning("%s:%d skipped (%s): %s", p, s.line, s.reason, s.detail)
    return result


def _plain(value: Any) -> Any:
    """JSON-safe value: numpy scalars/arrays to Python, tuples to lists, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_manifest(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as strict JSON Lines (UTF-8, no NaN/Infinity), atomically (temp file + rename)."""
    p = Path(path)
    with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(_plain(row), ensure_ascii=False, allow_nan=False) + "\n")
    return p


def rebase_rows(rows: Iterable[Mapping[str, Any]], src_dir: Path, dst_dir: Path) -> list[dict[str, Any]]:
    """Copies of ``rows`` whose relative ``video`` paths point to the same files from ``dst_dir``."""
    src_dir, dst_dir = Path(src_dir).resolve(), Path(dst_dir).resolve()
    out = []
    for row in rows:
        row = dict(row)
        video = row.get("video")
        if isinstance(video, str) and video and not os.path.isabs(video) and src_dir != dst_dir:
            row["video"] = Path(os.path.relpath(src_dir / video, dst_dir)).as_posix()
        out.append(row)
    return out
