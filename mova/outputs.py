"""The clip folder an app serves (``<data_dir>/outputs``): one clip = an mp4, its sidecar JSON and, for IT2VA, the
first frame as a PNG we encoded ourselves — never a copy of user bytes, never a user-chosen suffix.

* :func:`save_clip` writes the files of one clip so that a crash or ``kill -9`` never leaves a half-written file
  under a served name and never an mp4 without its sidecar: everything goes to hidden temporaries first, then the
  first frame and the sidecar are renamed into place, the mp4 last.
* :func:`sweep` removes what an interrupted writer left (temporaries of dead processes, sidecars or frames whose
  mp4 never arrived) — run when a backend starts.
* :func:`prune` keeps the folder bounded: clips older than ``max_age_s`` go, then the oldest until the folder is
  under ``max_bytes``, so a public app cannot fill its disk.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_GB = 20.0
DEFAULT_MAX_DAYS = 30.0
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(\.\w+)?$")  # ours and mova.media's temporaries
_SUFFIXES = (".mp4", ".json", ".first_frame.png")


@dataclass(frozen=True)
class OutputsPolicy:
    """How much the clip folder may hold: ``max_bytes`` in all, no clip older than ``max_age_s`` (``None``: no
    limit). :meth:`from_env` reads ``MOVA_OUTPUTS_MAX_GB`` (default 20) and ``MOVA_OUTPUTS_MAX_DAYS`` (default 30)."""

    max_bytes: int | None = int(DEFAULT_MAX_GB * 1e9)
    max_age_s: float | None = DEFAULT_MAX_DAYS * 86400

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OutputsPolicy:
        env = os.environ if env is None else env
        gb = _positive(env, "MOVA_OUTPUTS_MAX_GB", DEFAULT_MAX_GB)
        days = _positive(env, "MOVA_OUTPUTS_MAX_DAYS", DEFAULT_MAX_DAYS)
        return cls(max_bytes=int(gb * 1e9), max_age_s=days * 86400)


def _positive(env: dict[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{key}={raw!r} is invalid: expected a positive number")
    return value


@dataclass(frozen=True)
class ClipFiles:
    mp4: Path
    sidecar: Path
    first_frame: Path | None


def clip_paths(folder: Path, stem: str, *, first_frame: bool) -> ClipFiles:
    return ClipFiles(folder / f"{stem}.mp4", folder / f"{stem}.json",
                     folder / f"{stem}.first_frame.png" if first_frame else None)


def _temporary(path: Path) -> Path:
    """A hidden name beside ``path`` that :func:`sweep` recognises (it carries the writer's pid)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def save_clip(folder: str | os.PathLike, stem: str, video: np.ndarray, fps: float, audio: np.ndarray,
              sample_rate: int, sidecar: dict[str, Any] | Callable[[], dict[str, Any]],
              first_frame: np.ndarray | None = None) -> ClipFiles:
    """Write ``<stem>.mp4`` (H.264 + AAC), ``<stem>.json`` and, when given, ``<stem>.first_frame.png`` (uint8
    [H, W, 3], encoded here) into ``folder``, all or nothing. ``sidecar`` may be a function, called once the mp4
    is encoded (so the figures it holds can include the encoding time). Returns the paths."""
    from PIL import Image

    from mova import media

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = clip_paths(folder, stem, first_frame=first_frame is not None)
    temps: dict[Path, Path] = {}
    try:
        temps[final.mp4] = _temporary(final.mp4)
        media.write_mp4(temps[final.mp4], video, fps, audio, sample_rate)
        if final.first_frame is not None:
            temps[final.first_frame] = _temporary(final.first_frame)
            Image.fromarray(np.ascontiguousarray(first_frame, dtype=np.uint8)).save(temps[final.first_frame],
                                                                                    format="PNG")
        data = sidecar() if callable(sidecar) else sidecar
        temps[final.sidecar] = _temporary(final.sidecar)
        temps[final.sidecar].write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        for target in (final.first_frame, final.sidecar, final.mp4):  # the mp4 last: it never lacks a sidecar
            if target is not None:
                os.replace(temps[target], target)
    except BaseException:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        raise
    return final


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _stem(name: str) -> str | None:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def sweep(folder: str | os.PathLike) -> list[Path]:
    """Remove the leftovers of interrupted writes in ``folder``: temporaries whose writer process is gone, and
    sidecars or first frames without their mp4. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    entries = [p for p in folder.iterdir() if p.is_file()]
    mp4_stems = {p.name[:-4] for p in entries if p.name.endswith(".mp4") and not p.name.startswith(".")}
    removed = []
    for path in entries:
        temp = _TEMP.match(path.name)
        if temp:
            orphan = not _pid_alive(int(temp["pid"]))
        else:
            stem = _stem(path.name)
            orphan = stem is not None and not path.name.endswith(".mp4") and stem not in mp4_stems
        if orphan:
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.info("outputs: removed %d leftover file(s) of interrupted writes in %s", len(removed), folder)
    return removed


def prune(folder: str | os.PathLike, policy: OutputsPolicy, *, keep: str | None = None,
          now: float | None = None) -> list[str]:
    """Delete whole clips (mp4, sidecar, first frame) older than ``policy.max_age_s``, then the oldest until the
    folder holds at most ``policy.max_bytes``; the clip ``keep`` (the one just written) stays. Returns the stems
    removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    clips: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        stem = None if path.name.startswith(".") else _stem(path.name)
        if stem is None or not path.is_file():
            continue
        clips.setdefault(stem, []).append(path)
    sized = []
    for stem, paths in clips.items():
        stats = [p.stat() for p in paths]
        sized.append((max(s.st_mtime for s in stats), sum(s.st_size for s in stats), stem))
    sized.sort()  # oldest first
    total = sum(size for _, size, _ in sized)
    removed = []
    for mtime, size, stem in sized:
        too_old = policy.max_age_s is not None and now - mtime > policy.max_age_s
        too_big = policy.max_bytes is not None and total > policy.max_bytes
        if stem == keep or not (too_old or too_big):
            continue
        for path in clips[stem]:
            path.unlink(missing_ok=True)
        total -= size
        removed.append(stem)
    if removed:
        logger.info("outputs: pruned %d clip(s) from %s (policy %s)", len(removed), folder, policy)
    return removed
