"""Clip files for the arena (PyAV only; no torch).

- ``anonymous_copy``: a pool clip remuxed once with the container and stream metadata dropped (a title or
  comment could name the model); kept, never served itself.
- ``padded_copy``: what one serve of a clip sends: that copy under a fresh name, padded to a given size with
  one box players skip (an mp4 ``free`` box, a WebM ``Void`` element) of random bytes, so no two serves share
  a name, a size or a content hash. A plain copy plus an append: no re-encoding.
- ``remove_stale``: age-based cleanup of the served copies.

Synthetic clips and pools for tests and benchmarks are in ``tests/arena_fixtures.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm")
MIN_PADDING = 16  # bytes: room for the smallest padding box of either container


def padding_box(suffix: str, size: int) -> bytes:
    """``size`` bytes that a player skips, filled with random bytes: an mp4 ``free`` box (ISO/IEC 14496-12
    allows it at the top level), or a WebM/Matroska ``Void`` element (ID 0xEC, 8-byte size field)."""
    if size < MIN_PADDING:
        raise ValueError(f"size={size} is not allowed; a padding box needs at least {MIN_PADDING} bytes")
    if suffix == ".mp4":
        if size > 0xFFFFFFFF:
            raise ValueError(f"size={size} is not allowed; an mp4 free box holds at most 4 GiB")
        return struct.pack(">I", size) + b"free" + os.urandom(size - 8)
    if suffix == ".webm":
        return b"\xec" + ((1 << 56) | (size - 9)).to_bytes(8, "big") + os.urandom(size - 9)
    raise ValueError(f"suffix={suffix!r} is not allowed; use one of {', '.join(VIDEO_SUFFIXES)}")


def padded_copy(source: Path, target: Path, size: int) -> Path:
    """Copy ``source`` to ``target`` (a fresh name) and append one padding box so the file has ``size`` bytes."""
    box = padding_box(source.suffix.lower(), size - source.stat().st_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    with target.open("ab") as handle:
        handle.write(box)
    return target


def remove_stale(folder: Path, max_age_s: float, *, now: float | None = None) -> int:
    """Delete the files directly in ``folder`` last modified more than ``max_age_s`` ago; returns how many."""
    cutoff = (time.time() if now is None else now) - max_age_s
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:  # another process cleaned it first
            continue
    return removed


def anonymous_copy(source: Path, target: Path) -> Path:
    """Write ``target`` once: ``source`` remuxed without metadata (packets copied, not re-encoded).

    Written to a temporary name and renamed, so concurrent callers never see a partial file. Falls back
    to a plain byte copy (with a warning) if the file cannot be remuxed.
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.{uuid.uuid4().hex}{target.suffix}")
    try:
        _remux_without_metadata(source, partial)
    except Exception as exc:  # noqa: BLE001 - any demux/mux failure: serve the bytes as they are
        logger.warning("could not remux %s without metadata (%s); serving a plain copy", source.name, exc)
        shutil.copyfile(source, partial)
    os.replace(partial, target)
    return target


def _remux_without_metadata(source: Path, target: Path) -> None:
    import av

    with av.open(str(source)) as inp:
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        if not streams:
            raise ValueError(f"{source.name} has no audio or video stream")
        fmt = "mp4" if target.suffix.lower() == ".mp4" else "webm"
        with av.open(str(target), "w", format=fmt) as out:
            mapping = {}
            for stream in streams:
                copy = out.add_stream_from_template(stream)
                copy.metadata.clear()
                mapping[stream.index] = copy
            out.metadata.clear()
            for packet in inp.demux(streams):
                if packet.dts is None:  # flush packet
                    continue
                packet.stream = mapping[packet.stream.index]
                out.mux(packet)
