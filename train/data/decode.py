"""Streaming decode of long source videos with PyAV: stream facts, sampled frames, audio (frames at a fixed rate:
:class:`mova.media.FrameStream`, shared with the generation modes).

A source may be hours long, so nothing here holds a whole video: frames come one at a time (converted to the
clip frame rate by nearest timestamp, as FFmpeg's ``fps`` filter does), and the audio track is decoded once,
resampled to the clip rate, mixed to mono (channel mean, as :func:`mova.media.read_audio`) and spooled to a
float32 file that is memory-mapped for slicing.

Time origin: the video stream's start time (its first frame). Audio sample ``n`` of the track plays at
``(offset + n) / sample_rate`` seconds on that clock (``offset`` may be negative when the audio starts first).

Whole-file problems raise :class:`InputError` with a reason key (``missing_file``, ``corrupt``,
``no_video_stream``); damage found mid-stream stops decoding and is reported through an ``error`` attribute,
never as an exception.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from mova.media import FrameStream, display_rgb, stream_start_s

logger = logging.getLogger(__name__)

__all__ = [
    "InputError", "SourceInfo", "AudioTrack", "FrameStream", "inspect_source", "sample_frames", "decode_audio",
    "display_rgb",
]


class InputError(Exception):
    """A source that cannot be used at all; ``reason`` is a short key counted in the summary."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SourceInfo:
    """Container facts read without decoding. ``duration_s`` is the video stream's (else the container's)."""

    width: int
    height: int
    fps: float | None
    num_frames: int | None
    duration_s: float | None
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int | None


def _open(path: Path) -> Any:
    if not path.exists():
        raise InputError("missing_file", f"{str(path)!r} does not exist")
    if not path.is_file():
        raise InputError("missing_file", f"{str(path)!r} is not a regular file")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError("corrupt", f"{str(path)!r} cannot be opened as media ({exc})") from None


def inspect_source(path: str | os.PathLike[str]) -> SourceInfo:
    """Stream facts of ``path``; raises :class:`InputError` (missing_file, corrupt, no_video_stream)."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise InputError("no_video_stream", f"{str(path)!r} has no video stream")
        vs = container.streams.video[0]
        cc = vs.codec_context
        if not cc.width or not cc.height:
            raise InputError("corrupt", f"{str(path)!r}: the video stream has no frame size")
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        duration = None
        if vs.duration is not None and vs.time_base:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = float(container.duration) / av.time_base
        audio = container.streams.audio[0] if container.streams.audio else None
        return SourceInfo(
            width=int(cc.width),
            height=int(cc.height),
            fps=float(rate) if rate else None,
            num_frames=int(vs.frames) if vs.frames else None,
            duration_s=duration,
            has_audio=audio is not None,
            audio_sample_rate=(audio.codec_context.sample_rate or None) if audio is not None else None,
            audio_channels=(audio.codec_context.channels or None) if audio is not None else None,
        )


def sample_frames(path: str | os.PathLike[str], n: int, duration_s: float | None) -> list[np.ndarray]:
    """Up to ``n`` frames (:func:`display_rgb`) spread evenly over the video (seek to ``(i + 0.5) / n`` of the
    duration, decode to the first frame at or after it); ``n`` = 1 or an unknown duration takes the first frame.
    Decoding errors end the sampling early; the frames found so far are returned (possibly none)."""
    path = Path(path)
    frames: list[np.ndarray] = []
    with _open(path) as container:
        vs = container.streams.video[0]
        start = stream_start_s(vs) or 0.0
        if n == 1 or not duration_s or duration_s <= 0 or not vs.time_base:
            targets = [None]  # unknown length: the first frame only
        else:
            targets = [start + (i + 0.5) / n * duration_s for i in range(n)]
        for target in targets:
            try:
                if target is not None:
                    container.seek(int(target / vs.time_base), stream=vs, backward=True, any_frame=False)
                for frame in container.decode(vs):
                    if target is None or frame.time is None or frame.time >= target - 1e-3:
                        frames.append(display_rgb(frame))
                        break
            except (av.FFmpegError, OSError) as exc:
                logger.warning("%s: frame sampling stopped at %s s (%s)", path, target, exc)
                break
    return frames


class AudioTrack:
    """Mono float32 audio at ``sample_rate``, memory-mapped from a spool file; see the module docstring for
    ``offset``. ``error`` is set when decoding stopped on damage (the track then ends early)."""

    def __init__(self, samples: np.ndarray, sample_rate: int, offset: int, error: str | None) -> None:
        self.samples = samples
        self.sample_rate = sample_rate
        self.offset = offset
        self.error = error

    def window(self, start: int, length: int) -> tuple[np.ndarray, float]:
        """Samples ``[start, start + length)`` on the video clock, zero where the track has none, and the
        fraction of the window the track covered."""
        out = np.zeros(length, np.float32)
        lo = start - self.offset
        src_lo, src_hi = max(0, lo), min(self.samples.shape[0], lo + length)
        if src_hi <= src_lo:
            return out, 0.0
        out[src_lo - lo : src_hi - lo] = self.samples[src_lo:src_hi]
        return out, (src_hi - src_lo) / length


def decode_audio(path: str | os.PathLike[str], sample_rate: int, spool: str | os.PathLike[str]) -> AudioTrack:
    """Decode the first audio stream to mono ``sample_rate`` float32 in the file ``spool``.

    Trailing encoder padding (AAC's last frame) is trimmed to the last packet's ``pts + duration``, as
    :func:`mova.media.read_audio` does.
    """
    path, spool = Path(path), Path(spool)
    error = None
    written = 0
    first_s: float | None = None
    end_s: float | None = None
    with _open(path) as container, open(spool, "wb") as sink:
        vs = container.streams.video[0] if container.streams.video else None
        stream = container.streams.audio[0]
        video_start = (stream_start_s(vs) if vs is not None else None) or 0.0
        resampler = None

        def emit(frames: list[Any]) -> None:
            nonlocal written
            for out in frames:
                planar = out.to_ndarray().astype(np.float32, copy=False)  # [C, n]
                mono = planar.mean(axis=0) if planar.shape[0] > 1 else planar[0]
                sink.write(np.ascontiguousarray(mono, np.float32).tobytes())
                written += mono.shape[0]

        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.duration and packet.time_base:
                    end = float((packet.pts + packet.duration) * packet.time_base)
                    end_s = end if end_s is None else max(end_s, end)
                for frame in packet.decode():
                    if first_s is None and frame.time is not None:
                        first_s = float(frame.time)
                    if resampler is None:
                        resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=sample_rate)
                    emit(resampler.resample(frame))
        except (av.FFmpegError, OSError) as exc:
            error = f"audio decoding stopped after {written / sample_rate:.2f} s ({exc})"
            logger.warning("%s: %s", path, error)
        if resampler is not None:
            try:
                emit(resampler.resample(None))
            except (av.FFmpegError, ValueError) as exc:  # flushing after damage
                logger.debug("%s: resampler flush failed (%s)", path, exc)
    n = written
    if first_s is not None and end_s is not None and error is None:
        n_true = round((end_s - first_s) * sample_rate)
        if 0 < n_true < written:
            n = n_true
    samples = np.memmap(spool, dtype=np.float32, mode="r", shape=(n,)) if n else np.zeros(0, np.float32)
    offset = round(((first_s if first_s is not None else video_start) - video_start) * sample_rate)
    return AudioTrack(samples, sample_rate, offset, error)
