"""Generated clips on disk. One clip = an mp4, its sidecar JSON and, for IT2VA, the first frame as a PNG we encoded
ourselves — never a copy of user bytes, never a user-chosen suffix.

* :func:`save_clip` is the one clip writer (app, CLI, Python API, arena): it measures the figures (A/V offset,
  loudness) and writes the files so that a crash or ``kill -9`` never leaves a half-written file under a served
  name and never an mp4 without its sidecar: everything goes to hidden temporaries first, then the first frame and
  the sidecar are renamed into place, the mp4 last.
* :func:`sweep` removes what an interrupted writer left (temporaries of dead processes, sidecars or frames whose
  mp4 never arrived) — run when a backend starts.
* :func:`prune` keeps the folder bounded: clips older than ``max_age_s`` go, then the oldest until the folder is
  under ``max_bytes``, so a public app cannot fill its disk.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mova.pipeline import GenerationResult

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "MOVA_DATA_DIR"
DEFAULT_DATA_DIR = "./data"
SPACES_DATA_DIR = Path("/data")  # where a Space mounts its persistent storage (or a storage bucket volume)
DEFAULT_MAX_GB = 20.0
DEFAULT_MAX_DAYS = 30.0
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(\.\w+)?$")  # ours and mova.media's temporaries
_SUFFIXES = (".mp4", ".json", ".first_frame.png")


def on_spaces(env: dict[str, str] | None = None) -> bool:
    """Whether this process runs on a Hugging Face Space (Spaces set ``SPACE_ID`` to ``owner/name``)."""
    return bool((os.environ if env is None else env).get("SPACE_ID"))


def resolve_data_dir(data_dir: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Path:
    """Where the app keeps what survives (clips, examples, the arena): ``data_dir`` if given, else
    ``$MOVA_DATA_DIR``, else on a Space the persistent volume at ``/data`` when one is mounted there (a writable
    folder), else ``./data``. Read at call time (never at import time), so tests and apps can set the variables
    late; the app, the backends, the arena and the CLI all call this, so they agree."""
    env = os.environ if env is None else env
    chosen = data_dir if data_dir not in (None, "") else env.get(DATA_DIR_ENV)
    if not chosen:
        spaces_volume = on_spaces(env) and SPACES_DATA_DIR.is_dir() and os.access(SPACES_DATA_DIR, os.W_OK)
        chosen = SPACES_DATA_DIR if spaces_volume else DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


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


@dataclass
class Clip:
    """A generated clip on disk with its figures: what the app, the CLI and the arena get back.

    ``av_offset_frames``: audio-visual offset (``mova.eval.av_offset``), video frames, positive = audio late;
    ``None`` when undefined (no motion or no onsets). ``loudness_lufs``: integrated loudness of the written audio,
    ``None`` for silence. ``timings``: seconds per pipeline stage, ``total``, ``save`` and ``wall`` (all of it).
    """

    video_path: str
    sidecar_path: str
    first_frame_path: str | None
    seed: int
    nfe: int
    timings: dict[str, float]
    av_offset_frames: float | None
    loudness_lufs: float | None
    fps: float
    num_frames: int
    height: int
    width: int
    sample_rate: int
    model: str = ""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def av_offset_ms(self) -> float | None:
        return None if self.av_offset_frames is None else 1000.0 * self.av_offset_frames / self.fps

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe and fit to show anyone: files by name within their folder, never a server path."""
        out = dataclasses.asdict(self)
        for key in ("video_path", "sidecar_path", "first_frame_path"):
            out[key] = None if out[key] is None else Path(out[key]).name
        out["av_offset_ms"] = self.av_offset_ms
        out["duration_s"] = self.duration_s
        return out


def new_stem(settings: Any) -> str:
    """A unique, sortable clip name: ``<UTC time>-<t2va|it2va>-<seed>-<random>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{settings.kind}-{settings.seed}-{uuid.uuid4().hex[:8]}"


def _temporary(path: Path) -> Path:
    """A hidden name beside ``path`` that :func:`sweep` recognises (it carries the writer's pid)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def save_clip(result: GenerationResult, folder: str | os.PathLike, stem: str | None = None, *,
              extra: dict[str, Any] | None = None) -> Clip:
    """The one clip writer (app, CLI, Python API, arena): ``<stem>.mp4`` (H.264 + AAC), ``<stem>.json`` (the
    :class:`Clip` as JSON, plus ``extra``) and for IT2VA ``<stem>.first_frame.png`` (the frame as conditioned,
    encoded here — never a copy of the user's file), all or nothing; the figures (A/V offset, loudness) measured
    on the clip. ``stem`` defaults to :func:`new_stem`."""
    from PIL import Image

    from mova import media
    from mova.eval import av_offset

    t0 = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or new_stem(result.settings)
    mp4, sidecar = folder / f"{stem}.mp4", folder / f"{stem}.json"
    frame = None if result.first_frame is None else folder / f"{stem}.first_frame.png"
    settings = result.settings.to_dict()
    settings["image"] = None if frame is None else frame.name
    timings = {k: round(float(v), 4) for k, v in result.timings.items()}
    clip = Clip(
        video_path=str(mp4), sidecar_path=str(sidecar), first_frame_path=None if frame is None else str(frame),
        seed=int(result.seed), nfe=int(result.nfe), timings=timings,
        av_offset_frames=_finite(av_offset(result.video, result.fps, result.audio, result.sample_rate)),
        loudness_lufs=_finite(media.integrated_loudness(result.audio, result.sample_rate)), fps=float(result.fps),
        num_frames=int(result.video.shape[0]), height=int(result.video.shape[1]), width=int(result.video.shape[2]),
        sample_rate=int(result.sample_rate), model=result.model, settings=settings, warnings=list(result.warnings),
    )
    temps: dict[Path, Path] = {}
    try:
        temps[mp4] = _temporary(mp4)
        media.write_mp4(temps[mp4], result.video, result.fps, result.audio, result.sample_rate)
        if frame is not None:
            temps[frame] = _temporary(frame)
            Image.fromarray(np.ascontiguousarray(result.first_frame, dtype=np.uint8)).save(temps[frame], format="PNG")
        timings["save"] = round(time.perf_counter() - t0, 4)
        timings["wall"] = round(float(timings.get("total", 0.0)) + timings["save"], 4)
        temps[sidecar] = _temporary(sidecar)
        temps[sidecar].write_text(json.dumps({**clip.to_dict(), **(extra or {})}, indent=2, ensure_ascii=False),
                                  encoding="utf-8")
        for target in (frame, sidecar, mp4):  # the mp4 last: it never exists without its sidecar
            if target is not None:
                os.replace(temps[target], target)
    except BaseException:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        raise
    return clip


def _finite(value: float) -> float | None:
    value = float(value)
    return round(value, 3) if math.isfinite(value) else None


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
