"""Cutting a long source video into fixed-length clips with their audio.

A clip is ``num_frames`` frames at ``fps`` (default 193 at 24 fps = 8.04 s, MOVA's training length) plus the
matching ``round(num_frames * sample_rate / fps)`` mono samples at ``sample_rate`` (48 kHz). Clip ``k`` starts
at output frame ``k * stride_frames`` (``stride_frames`` = ``num_frames`` means back to back; smaller overlaps,
larger leaves gaps). Each frame goes through the video's :class:`~train.data.letterbox.FrameTransform`
(bars cropped, aspect fitted, resized) as it is decoded, so memory holds a few clips at the target size
(the clip being filled, its stacked copy, and one held back for the truncation check: about 1.6 GB at
193 x 1280 x 720).

What cannot become a clip is reported, never raised, as a :class:`Drop` with a reason:

- whole video: ``missing_file``, ``corrupt`` (cannot be opened, or no frame decodes), ``no_video_stream``,
  ``no_audio_stream`` (with ``missing_audio="drop"``), ``too_short`` (not one full clip), ``truncated``
  (damaged before one clip), ``resolution_change`` (the frame size changes mid-stream; clips before it stay);
- per window: ``partial_tail`` (the frames after the last full clip), ``audio_incomplete`` (the audio track
  covers less than ``min_audio_coverage`` of the clip), ``truncated`` (the clip ends within
  ``truncation_margin_s`` of where decoding hit damage; the last frames before damage may be corrupt).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .decode import AudioTrack, FrameStream, InputError, SourceInfo, decode_audio, inspect_source, sample_frames
from .letterbox import CropBox, FrameTransform, LetterboxConfig, detect_letterbox, luma, plan_transform
from ..yaml_config import check_choice, check_number, fail

logger = logging.getLogger(__name__)

__all__ = ["CutConfig", "Drop", "Window", "VideoCutter", "clip_starts", "AAC_SAMPLE_RATES"]

AAC_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
MISSING_AUDIO = ("drop", "keep")


@dataclass(frozen=True, kw_only=True)
class CutConfig:
    """Clip format and cutting.

    Args:
        num_frames: frames per clip (193 = 4 * 48 + 1, the video VAE's 4k + 1).
        fps: clip frame rate; sources at other rates are converted by nearest timestamp.
        stride_frames: frames between clip starts; None = ``num_frames`` (no overlap, no gap).
        sample_rate: clip audio rate (Hz, an AAC rate); mono.
        width, height: the landscape clip size (even); 9:16 clips are ``height x width``.
        missing_audio: ``"drop"`` videos without an audio stream, or ``"keep"`` their clips with
            ``has_audio: false`` (an mp4 without audio; audio measures null, audio filters skipped).
        min_audio_coverage: minimum fraction of a clip's samples the audio track must supply (the rest is
            zero-filled); below it the window is dropped as ``audio_incomplete``.
        truncation_margin_s: after decoding damage, clips ending this close to it are dropped.
        crf: libx264 quality of the written clips (0 lossless .. 51; 18 near-lossless).
    """

    num_frames: int = 193
    fps: float = 24.0
    stride_frames: int | None = None
    sample_rate: int = 48000
    width: int = 1280
    height: int = 720
    missing_audio: Literal["drop", "keep"] = "drop"
    min_audio_coverage: float = 0.99
    truncation_margin_s: float = 1.0
    crf: int = 18

    def __post_init__(self) -> None:
        check_number("num_frames", self.num_frames, lo=2, integer=True)
        check_number("fps", self.fps, lo=0, lo_open=True, hi=240)
        check_number("stride_frames", self.stride_frames, lo=1, integer=True, optional=True)
        check_choice("sample_rate", self.sample_rate, AAC_SAMPLE_RATES)
        for name in ("width", "height"):
            value = getattr(self, name)
            check_number(name, value, lo=16, hi=8192, integer=True)
            if value % 2:
                fail(name, value, "an even size (H.264 yuv420p)")
        check_choice("missing_audio", self.missing_audio, MISSING_AUDIO)
        check_number("min_audio_coverage", self.min_audio_coverage, lo=0, hi=1)
        check_number("truncation_margin_s", self.truncation_margin_s, lo=0)
        check_number("crf", self.crf, lo=0, hi=51, integer=True)

    @property
    def stride(self) -> int:
        return self.stride_frames if self.stride_frames is not None else self.num_frames

    @property
    def num_samples(self) -> int:
        """Audio samples per clip."""
        return round(self.num_frames * self.sample_rate / self.fps)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def clip_starts(total_frames: int, num_frames: int, stride: int) -> list[int]:
    """Start frames of the full clips in ``total_frames`` frames: ``0, stride, 2*stride, …``."""
    if total_frames < num_frames:
        return []
    return list(range(0, total_frames - num_frames + 1, stride))


@dataclass
class Drop:
    """Something that did not become a clip: ``reason`` (a summary key) and a human-readable ``detail``;
    ``clip_index`` / ``start_s`` locate a dropped window (None for a whole video)."""

    source: str
    reason: str
    detail: str
    clip_index: int | None = None
    start_s: float | None = None

    def as_row(self) -> dict:
        row = {"source": self.source, "reason": self.reason, "detail": self.detail}
        if self.clip_index is not None:
            row.update(clip_index=self.clip_index, start_s=self.start_s)
        return row


@dataclass
class Window:
    """One clip: ``video`` uint8 ``[num_frames, H, W, 3]``, ``audio`` float32 ``[num_samples]`` (None without
    an audio stream), starting at output frame ``start_frame`` (``start_s`` seconds) of the source."""

    clip_index: int
    start_frame: int
    start_s: float
    video: np.ndarray
    audio: np.ndarray | None
    audio_coverage: float | None


@dataclass
class VideoCutter:
    """Cut one source video (see the module docstring).

    Usage::

        with VideoCutter(path, cut_cfg, letterbox_cfg) as cutter:   # raises InputError for unusable files
            for window in cutter.windows():
                ...
        cutter.drops  # window-level drops (partial_tail, audio_incomplete, truncated)
    """

    path: Path
    cut: CutConfig
    letterbox: LetterboxConfig
    tmp_dir: str | os.PathLike[str] | None = None
    info: SourceInfo | None = field(default=None, init=False)
    transform: FrameTransform | None = field(default=None, init=False)
    audio: AudioTrack | None = field(default=None, init=False)
    drops: list[Drop] = field(default_factory=list, init=False)
    display_size: tuple[int, int] | None = field(default=None, init=False)
    _spool: str | None = field(default=None, init=False)

    def __enter__(self) -> VideoCutter:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # 1. Streams, letterbox and audio -------------------------------------------------------------------------

    def open(self) -> None:
        self.path = Path(self.path)
        self.info = info = inspect_source(self.path)
        if info.duration_s is not None and info.duration_s * self.cut.fps < self.cut.num_frames - 0.5:
            raise InputError("too_short",
                             f"{info.duration_s:.2f} s is shorter than one clip ({self.cut.duration_s:.2f} s)")
        if not info.has_audio and self.cut.missing_audio == "drop":
            raise InputError("no_audio_stream", "the file has no audio stream (cut.missing_audio is 'drop')")
        self.transform = self._plan(info)
        if info.has_audio:
            fd, self._spool = tempfile.mkstemp(prefix="mova-audio-", suffix=".f32", dir=self.tmp_dir)
            os.close(fd)
            self.audio = decode_audio(self.path, self.cut.sample_rate, self._spool)

    def _plan(self, info: SourceInfo) -> FrameTransform:
        n = self.letterbox.samples if self.letterbox.enabled else 1
        frames = sample_frames(self.path, n, info.duration_s)
        if not frames and n > 1:
            frames = sample_frames(self.path, 1, None)
        if not frames:
            raise InputError("corrupt", "no video frame could be decoded")
        # Sizes as displayed (after any rotation the file asks for).
        self.display_size = (frames[0].shape[1], frames[0].shape[0])
        frames = [f for f in frames if f.shape == frames[0].shape]
        w, h = self.display_size
        bars = CropBox(0, 0, w, h)
        if self.letterbox.enabled:
            bars = detect_letterbox(luma(np.stack(frames)), self.letterbox.threshold,
                                    self.letterbox.min_content_fraction)
        return plan_transform(w, h, bars, self.letterbox, self.cut.width, self.cut.height)

    def close(self) -> None:
        if self.audio is not None:
            self.audio.samples = np.zeros(0, np.float32)  # release the memory map before deleting its file
        if self._spool is not None:
            Path(self._spool).unlink(missing_ok=True)
            self._spool = None

    # 2. Streaming windows --------------------------------------------------------------------------------------

    def windows(self) -> Iterator[Window]:
        """Full clips in order; window drops go to ``self.drops``. Raises :class:`InputError` (after the clips
        it could make) when no full clip came out or the frame size changed."""
        cfg = self.cut
        N, stride, fps = cfg.num_frames, cfg.stride, cfg.fps
        stream = FrameStream(self.path, fps, self._convert, self.info.duration_s)
        buffer: deque[np.ndarray] = deque()  # frames from buffer_start on
        buffer_start = 0
        next_start = 0
        clip_index = 0
        pending: list[Window] = []  # held back until we know decoding did not hit damage right after them
        last_frame = -1
        for j, frame in stream:
            last_frame = j
            if j >= next_start:
                buffer.append(frame)
            else:
                buffer_start = j + 1  # a gap between clips (stride > num_frames)
            if j == next_start + N - 1:
                video = np.stack(list(buffer)[next_start - buffer_start : next_start - buffer_start + N])
                window = self._window(clip_index, next_start, video)
                clip_index += 1
                next_start += stride
                while buffer and buffer_start < next_start:
                    buffer.popleft()
                    buffer_start += 1
                if window is not None:
                    pending.append(window)
            # Release windows that end far enough before the newest decoded frame.
            while pending and (j + 1 - (pending[0].start_frame + N)) / fps >= cfg.truncation_margin_s:
                yield pending.pop(0)
        for window in pending:
            if stream.error is not None:
                self.drops.append(Drop(str(self.path), "truncated", f"clip ends within {cfg.truncation_margin_s} s "
                                       f"of damage ({stream.error})", window.clip_index, window.start_s))
            else:
                yield window
        tail = last_frame + 1 - next_start
        if clip_index > 0 and stream.error is not None:
            self.drops.append(Drop(str(self.path), "truncated", f"the rest of the video is lost ({stream.error})",
                                   clip_index, round(next_start / fps, 4)))
        elif clip_index > 0 and 0 < tail < N:
            self.drops.append(Drop(str(self.path), "partial_tail", f"{tail} frames after the last full clip",
                                   clip_index, round(next_start / fps, 4)))
        if clip_index == 0:
            reason = "truncated" if stream.error is not None else "too_short"
            detail = stream.error or f"{last_frame + 1} frames at {fps:g} fps, fewer than one clip ({N})"
            raise InputError(reason, detail)

    def _convert(self, frame: np.ndarray) -> np.ndarray:
        w, h = self.display_size
        if frame.shape[:2] != (h, w):
            raise InputError("resolution_change", f"a frame of {frame.shape[1]}x{frame.shape[0]} in a {w}x{h} video")
        return self.transform.apply(frame)

    def _window(self, clip_index: int, start_frame: int, video: np.ndarray) -> Window | None:
        cfg = self.cut
        start_s = start_frame / cfg.fps
        audio = coverage = None
        if self.audio is not None:
            a0 = round(start_frame * cfg.sample_rate / cfg.fps)
            audio, coverage = self.audio.window(a0, cfg.num_samples)
            if coverage < cfg.min_audio_coverage:
                self.drops.append(Drop(str(self.path), "audio_incomplete",
                                       f"the audio track covers {coverage:.1%} of the clip",
                                       clip_index, round(start_s, 4)))
                return None
        return Window(clip_index, start_frame, round(start_s, 4), video, audio,
                      None if coverage is None else round(coverage, 4))
