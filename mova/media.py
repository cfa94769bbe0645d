"""Media I/O for MOVA Studio: mp4 (H.264 + AAC) muxing and reading, WAV, images, loudness.

Used by the generation pipeline (``GenerationResult.save``), the app and the training data pipeline. This module
never imports torch: arrays are numpy, video goes through PyAV (bundled FFmpeg with libx264 + aac), audio files
through PyAV / soundfile, images through Pillow, loudness through pyloudnorm (ITU-R BS.1770-4).

Array conventions:

- video: uint8 ``[T, H, W, 3]`` RGB.
- audio: float32 ``[N]`` (mono) or ``[N, C]`` (channels last), nominal range [-1, 1].

Invalid arguments raise ``ValueError`` naming the argument, the value and what is allowed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyloudnorm
import soundfile as sf
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy.ndimage import minimum_filter1d
from scipy.signal import fftconvolve, firwin, resample_poly

logger = logging.getLogger(__name__)

__all__ = [
    "Media", "write_mp4", "write_wav", "read_mp4", "probe", "read_audio", "load_image", "center_crop_resize",
    "FrameStream", "display_rgb", "stream_start_s", "read_clip", "resample_audio", "normalize_loudness",
    "integrated_loudness", "DEFAULT_MAX_PIXELS", "atomic_path",
]

PathLike = str | os.PathLike[str]

# libx264 speed/size trade-off; "medium" is x264's own default. Generated clips are short, so quality wins.
X264_PRESET = "medium"
# x264's macroblock-tree rate control is off: with it, the libx264 that PyAV bundles reads heap memory it never wrote
# (the same frames gave a different file after the process had freed small buffers, e.g. after a generation; with
# MALLOC_PERTURB_ set the file was always the same), so one request could give different bytes and pixels from door to
# door. Off, every encode of the same frames is byte-identical; at crf 18 files grow ~2-2.4x and PSNR rises 0.4-0.5 dB.
X264_PARAMS = "mbtree=0"
# Sample rates the AAC (MPEG-4 audio) sampling-frequency table can signal directly.
AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
AAC_FRAME_SIZE = 1024  # samples per AAC-LC frame
AUDIO_LAYOUTS = {1: "mono", 2: "stereo"}
DEFAULT_MAX_PIXELS = 64_000_000

# Loudness: BS.1770 gating block (pyloudnorm's default), the absolute gate, oversampling for true peak.
LOUDNESS_BLOCK_S = 0.4
SILENCE_LUFS = -70.0
TRUE_PEAK_OVERSAMPLE = 4
TRUE_PEAK_ZERO_CROSSINGS = 16  # interpolation filter half-length, in input samples
LIMITER_WINDOW_S = 0.010  # look-ahead = release = 10 ms (the gain envelope spans +-20 ms around a peak)
LIMITER_MARGIN_DB = 0.1  # the limiter aims this far under the ceiling; a final trim guarantees the ceiling
LIMITER_MAX_ITERATIONS = 4


# --------------------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------------------


def _check_video(video: Any) -> np.ndarray:
    if not isinstance(video, np.ndarray) or video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        desc = f"{type(video).__name__} {getattr(video, 'dtype', '')} {tuple(getattr(video, 'shape', ()))}".strip()
        raise ValueError(f"video must be a uint8 numpy array [T, H, W, 3] (RGB), got {desc}")
    if min(video.shape[:3]) < 1:
        raise ValueError(f"video must have T, H, W >= 1, got shape {video.shape}")
    return video


def _check_audio(audio: Any, name: str = "audio") -> np.ndarray:
    """Returns float32 ``[N, C]`` (a view/copy of ``audio``); raises for non-float, wrong rank or non-finite."""
    if not isinstance(audio, np.ndarray) or not np.issubdtype(audio.dtype, np.floating) or audio.ndim not in (1, 2):
        desc = f"{type(audio).__name__} {getattr(audio, 'dtype', '')} {tuple(getattr(audio, 'shape', ()))}".strip()
        raise ValueError(f"{name} must be a floating-point numpy array [N] or [N, C], got {desc}")
    a = audio.astype(np.float32, copy=False)
    if a.ndim == 1:
        a = a[:, None]
    if a.shape[1] < 1:
        raise ValueError(f"{name} must have at least one channel, got shape {audio.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf; only finite samples are allowed")
    return a


def _check_sample_rate(sample_rate: Any, name: str = "sample_rate") -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"{name} must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def _fps_fraction(fps: Any) -> Fraction:
    """fps as an exact Fraction; NTSC-style rates (23.976, 29.97, 59.94, ...) snap to n*1000/1001."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction, np.integer, np.floating)):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if isinstance(fps, Fraction):
        frac = fps
    else:
        value = float(fps)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"fps must be a positive finite number, got {fps!r}")
        k = round(value * 1.001)
        if value != int(value) and abs(value - k * 1000 / 1001) < 5e-4:
            frac = Fraction(k * 1000, 1001)
        else:
            frac = Fraction(value).limit_denominator(1001)
    if frac <= 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    return frac


def _check_existing_file(path: PathLike, name: str = "path") -> Path:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{name}: file not found: {str(p)!r}")
    if not p.is_file():
        raise ValueError(f"{name}: not a regular file: {str(p)!r}")
    return p


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary name beside ``path`` to write to (same filesystem, so ``os.replace`` is atomic): moved onto
    ``path`` when the block ends, removed when it raises, so no reader ever sees a half-written file. Parent folders
    are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def write_mp4(
    path: PathLike,
    video: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 48000,
    *,
    crf: int = 18,
) -> Path:
    """Write an mp4 that browsers play: H.264 (libx264, yuv420p, BT.709) + AAC-LC, ``movflags=+faststart``; the same
    frames and sound always give the same bytes (see ``X264_PARAMS``).

    Args:
        path: output file; parent directories are created. Written atomically (temp file in the same directory,
            then ``os.replace``), so a crash never leaves a half-written file at ``path``.
        video: uint8 ``[T, H, W, 3]`` RGB. yuv420p needs even sizes, so an odd H or W is padded to the next even
            size by replicating the last row / column (logged as a warning); the file is then ``H+1`` / ``W+1``.
        fps: frames per second, > 0; may be fractional (12.5, 23.976 -> 24000/1001). Stored as an exact
            Fraction time base, frame ``k`` has pts ``k``.
        audio: optional float ``[N]`` (mono) or ``[N, C]`` with C in {1, 2}, range [-1, 1] (clipped). Audio
            longer than the video (``T / fps`` seconds) is trimmed to it; shorter audio is written as is.
        sample_rate: audio rate in Hz, one of the AAC rates (48000 by default).
        crf: libx264 constant rate factor, 0 (lossless) .. 51; 18 is visually near-lossless.

    Returns:
        the output path.
    """
    path = Path(path)
    video = _check_video(video)
    fps_frac = _fps_fraction(fps)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in [0, 51], got {crf!r}")
    a = None
    if audio is not None:
        sample_rate = _check_sample_rate(sample_rate)
        if sample_rate not in AAC_SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of the AAC rates {AAC_SAMPLE_RATES}, got {sample_rate}")
        a = _check_audio(audio)
        if a.shape[1] not in AUDIO_LAYOUTS:
            raise ValueError(f"audio must have 1 or 2 channels, got {a.shape[1]} (shape {audio.shape})")
        max_samples = round(video.shape[0] / fps_frac * sample_rate)
        if a.shape[0] > max_samples:
            a = a[:max_samples]
        a = np.clip(a, -1.0, 1.0)

    T, H, W, _ = video.shape
    pad_h, pad_w = H % 2, W % 2
    if pad_h or pad_w:
        logger.warning(
            "video: %dx%d (HxW) padded to %dx%d by edge replication (H.264 yuv420p needs even sizes)",
            H, W, H + pad_h, W + pad_w,
        )

    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            # 1. Video stream: exact rational frame rate, BT.709 limited range, tagged so players agree.
            vstream = container.add_stream("libx264", rate=fps_frac)
            vstream.width, vstream.height = W + pad_w, H + pad_h
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": str(int(crf)), "preset": X264_PRESET, "x264-params": X264_PARAMS}
            vcc = vstream.codec_context
            vcc.time_base = 1 / fps_frac
            vcc.colorspace, vcc.color_primaries, vcc.color_trc, vcc.color_range = 1, 1, 1, 1  # BT.709, MPEG
            # 2. Audio stream: AAC-LC, fed in 1024-sample frames with pts = sample offset.
            astream = None
            if a is not None:
                astream = container.add_stream("aac", rate=sample_rate)
                astream.layout = AUDIO_LAYOUTS[a.shape[1]]
                astream.format = "fltp"
            # 3. Encode, interleaved: after video frame k, the audio up to (k + 1) / fps, so the file's chunks
            #    alternate and a browser streaming it never has to jump far ahead for the audio.
            planar = np.ascontiguousarray(a.T) if a is not None else None  # [C, N]
            audio_pos = 0

            def encode_audio_until(end_sample: int) -> None:
                nonlocal audio_pos
                while astream is not None and planar is not None and audio_pos < min(end_sample, planar.shape[1]):
                    chunk = np.ascontiguousarray(planar[:, audio_pos : audio_pos + AAC_FRAME_SIZE])
                    aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=astream.layout.name)
                    aframe.sample_rate = sample_rate
                    aframe.pts = audio_pos
                    aframe.time_base = Fraction(1, sample_rate)
                    container.mux(astream.encode(aframe))
                    audio_pos += chunk.shape[1]

            for k in range(T):
                frame_rgb = video[k]
                if pad_h or pad_w:
                    frame_rgb = np.pad(frame_rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
                frame = frame.reformat(
                    format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
                )
                frame.pts = k
                frame.time_base = vcc.time_base
                container.mux(vstream.encode(frame))
                encode_audio_until(round((k + 1) / fps_frac * sample_rate))
            # 4. Flush both encoders.
            container.mux(vstream.encode(None))
            if astream is not None:
                encode_audio_until(planar.shape[1])
                container.mux(astream.encode(None))
    return path


def resample_audio(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """float ``[N]`` (or ``[N, C]``, along axis 0) from ``rate`` to ``target`` Hz by polyphase filtering
    (``scipy.signal.resample_poly`` with the reduced ratio); float32."""
    rate, target = _check_sample_rate(rate, "rate"), _check_sample_rate(target, "target")
    if rate == target:
        return np.asarray(audio, np.float32)
    g = math.gcd(rate, target)
    return resample_poly(np.asarray(audio), target // g, rate // g, axis=0).astype(np.float32)


def write_wav(path: PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit PCM WAV atomically. ``audio``: float ``[N]`` or ``[N, C]``, clipped to [-1, 1]."""
    path = Path(path)
    a = _check_audio(audio)
    sample_rate = _check_sample_rate(sample_rate)
    data = np.clip(a, -1.0, 1.0)
    if audio.ndim == 1:
        data = data[:, 0]
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype="PCM_16", format="WAV")
    return path


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Media:
    """Decoded contents of a media file.

    Attributes:
        video: uint8 ``[T, H, W, 3]`` RGB, or None without a video stream.
        fps: average frame rate (frames/s), or None.
        audio: float32 ``[N]``, mixed to mono (mean of the channels), or None without an audio stream.
        audio_channels: channel count of the audio stream before mixing, or None.
        sample_rate: audio rate in Hz, or None.
        video_codec / audio_codec: FFmpeg codec names ("h264", "aac", ...), or None.
        duration_s: container duration in seconds (longest stream), or None if unknown.
        source_size: (height, width) of the frames as shown (:func:`read_clip` resizes them), or None.
    """

    video: np.ndarray | None
    fps: float | None
    audio: np.ndarray | None
    audio_channels: int | None
    sample_rate: int | None
    video_codec: str | None
    audio_codec: str | None
    duration_s: float | None
    source_size: tuple[int, int] | None = None


def _open_input(path: PathLike) -> Any:
    p = _check_existing_file(path)
    try:
        return av.open(str(p), mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"path: cannot open {str(p)!r} as a media file ({exc})") from exc


def _container_duration(container: Any) -> float | None:
    if container.duration is not None:
        return float(container.duration) / av.time_base
    durations = [
        float(s.duration * s.time_base) for s in container.streams if s.duration is not None and s.time_base
    ]
    return max(durations) if durations else None


class _AudioCollector:
    """Accumulates decoded audio frames as float32 planar ``[C, N]``, optionally resampled.

    Decoders emit whole codec frames (AAC: 1024 samples), so the last frame carries encoder padding; packet
    ``pts + duration`` tells where the stream really ends, and :meth:`result` trims to it.
    """

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self.resampler: Any = None
        self.chunks: list[np.ndarray] = []
        self.first_pts_s: float | None = None
        self.end_s: float | None = None
        self.out_rate: int | None = None

    def packet(self, packet: Any) -> None:
        if packet.pts is not None and packet.duration and packet.time_base:
            end = float((packet.pts + packet.duration) * packet.time_base)
            self.end_s = end if self.end_s is None else max(self.end_s, end)
        for frame in packet.decode():
            self._frame(frame)

    def _frame(self, frame: Any) -> None:
        if self.first_pts_s is None and frame.pts is not None and frame.time_base:
            self.first_pts_s = float(frame.pts * frame.time_base)
        if self.resampler is None:
            self.out_rate = self.rate or frame.sample_rate
            self.resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=self.out_rate)
        for out in self.resampler.resample(frame):
            self.chunks.append(out.to_ndarray())

    def decoded_s(self) -> float:
        """Seconds of audio collected so far."""
        return sum(c.shape[1] for c in self.chunks) / self.out_rate if self.out_rate else 0.0

    def result(self) -> tuple[np.ndarray, int] | None:
        if self.resampler is None:
            return None
        for out in self.resampler.resample(None):
            self.chunks.append(out.to_ndarray())
        data = np.concatenate(self.chunks, axis=1).astype(np.float32, copy=False)  # [C, N]
        if self.end_s is not None and self.first_pts_s is not None:
            n_true = round((self.end_s - self.first_pts_s) * self.out_rate)
            if 0 < n_true < data.shape[1]:
                data = data[:, :n_true]
        return data, int(self.out_rate)


def read_mp4(path: PathLike) -> Media:
    """Decode the first video and first audio stream of ``path`` (any container PyAV opens).

    Video frames are converted to RGB with the stream's own colour tags. Audio is mixed to mono (channel mean)
    and trimmed to the packets' end (drops the AAC padding of the last frame).
    """
    with _open_input(path) as container:
        vstream = container.streams.video[0] if container.streams.video else None
        astream = container.streams.audio[0] if container.streams.audio else None
        if vstream is None and astream is None:
            raise ValueError(f"path: {str(path)!r} has neither a video nor an audio stream")
        frames: list[np.ndarray] = []
        collector = _AudioCollector(None) if astream is not None else None
        streams = [s for s in (vstream, astream) if s is not None]
        try:
            for packet in container.demux(*streams):
                if packet.stream is vstream:
                    frames.extend(f.to_ndarray(format="rgb24") for f in packet.decode())
                elif collector is not None:
                    collector.packet(packet)
        except av.FFmpegError as exc:
            raise ValueError(f"path: failed to decode {str(path)!r} ({exc})") from exc

        video = np.stack(frames) if frames else None
        fps = None
        if vstream is not None:
            rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
            fps = float(rate) if rate else None
        audio = channels = sr = None
        decoded = collector.result() if collector is not None else None
        if decoded is not None:
            planar, sr = decoded
            channels = planar.shape[0]
            audio = planar.mean(axis=0).astype(np.float32) if channels > 1 else planar[0].copy()
        return Media(
            video=video,
            fps=fps,
            audio=audio,
            audio_channels=channels,
            sample_rate=sr,
            video_codec=vstream.codec_context.name if vstream is not None else None,
            audio_codec=astream.codec_context.name if astream is not None else None,
            duration_s=_container_duration(container),
        )


# --------------------------------------------------------------------------------------------------------------
# Frames at a clip's rate and size (streaming)
# --------------------------------------------------------------------------------------------------------------

# A stream that decodes this much shorter than its header says is treated as damaged (FrameStream.error).
SHORTFALL_S = 1.0
SHORTFALL_FRACTION = 0.02


def stream_start_s(stream: Any) -> float | None:
    """A stream's start time in seconds (its first frame), or None when the container does not say."""
    if stream.start_time is not None and stream.time_base:
        return float(stream.start_time * stream.time_base)
    return None


def display_rgb(frame: Any) -> np.ndarray:
    """A decoded frame as shown: uint8 RGB ``[H, W, 3]`` turned by its display-matrix rotation (phone videos
    store portrait footage as landscape frames plus a rotation)."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4  # counter-clockwise quarter turns
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def center_crop_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``[H0, W0, 3]`` → ``[height, width, 3]``: centre-crop to the target aspect ratio, then resize (bicubic)
    (docs/model.md#image-conditioning)."""
    h_img, w_img = image.shape[:2]
    if h_img / w_img < height / width:  # too wide: keep the full height
        keep = int((h_img / height) * width)
        left = (w_img - keep) // 2
        image = image[:, left:left + keep]
    else:  # too tall: keep the full width
        keep = int((w_img / width) * height)
        top = (h_img - keep) // 2
        image = image[top:top + keep]
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.Resampling.BICUBIC))


class FrameStream:
    """Iterate ``(j, frame)`` at ``fps``: output frame ``j`` (time ``j / fps`` on the video clock) is the source
    frame whose timestamp is nearest. ``convert`` maps each used source frame (:func:`display_rgb`) to the clip
    frame; a source frame repeated by the rate conversion is converted once.

    After iteration, ``error`` holds the damage message (None otherwise): decoding stopped on an error, or ended
    more than ``max(1 s, 2 %)`` short of ``declared_duration_s`` (a file cut at a packet boundary decodes
    cleanly but ends early). ``source_frames`` is the number of frames decoded.
    """

    def __init__(
        self, path: str | os.PathLike[str], fps: float, convert: Any, declared_duration_s: float | None = None
    ) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        self.convert = convert
        self.declared_duration_s = declared_duration_s
        self.error: str | None = None
        self.source_frames = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        j = 0  # next output frame
        prev: tuple[float, Any] | None = None  # (time, av frame) not yet fully emitted
        cache: tuple[int, np.ndarray] | None = None  # (source index, converted)
        src_step = None

        def converted(index: int, frame: Any) -> np.ndarray:
            nonlocal cache
            if cache is None or cache[0] != index:
                cache = (index, self.convert(display_rgb(frame)))
            return cache[1]

        with _open_input(self.path) as container:
            vs = container.streams.video[0]
            vs.thread_type = "SLICE"  # frame threading ("AUTO"/"FRAME") hides decoding errors of damaged files
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            src_step = 1.0 / float(rate) if rate else 1.0 / self.fps
            origin = stream_start_s(vs)  # the same origin decode_audio measures the audio offset from
            index = -1
            try:
                for frame in container.decode(vs):
                    index += 1
                    self.source_frames += 1
                    t_abs = frame.time if frame.time is not None else index * src_step
                    if origin is None:
                        origin = float(t_abs)
                    t = float(t_abs) - origin
                    if prev is not None:
                        if t <= prev[0]:  # duplicate / non-increasing timestamp: keep the later frame
                            prev = (prev[0], (index, frame))
                            continue
                        mid = 0.5 * (prev[0] + t)
                        while j / self.fps < mid - 1e-9:
                            yield j, converted(*prev[1])
                            j += 1
                    prev = (t, (index, frame))
            except (av.FFmpegError, OSError) as exc:
                self.error = f"video decoding stopped after {self.source_frames} frames ({exc})"
                logger.warning("%s: %s", self.path, self.error)
            if prev is not None and self.error is None and self.declared_duration_s:
                decoded = prev[0] + src_step
                if decoded < self.declared_duration_s - max(SHORTFALL_S, SHORTFALL_FRACTION * self.declared_duration_s):
                    self.error = f"decoded {decoded:.2f} s of the declared {self.declared_duration_s:.2f} s"
                    logger.warning("%s: %s", self.path, self.error)
            if prev is not None:
                end = prev[0] + 0.5 * src_step
                while j / self.fps < end - 1e-9:
                    yield j, converted(*prev[1])
                    j += 1


def read_clip(path: PathLike, *, fps: float, height: int, width: int, sample_rate: int,
              max_seconds: float | None = None) -> Media:
    """A clip conformed to a generation's geometry, holding no more than it returns.

    The first video stream at ``fps`` (nearest frame in time, :class:`FrameStream`), each frame turned as shown,
    centre-cropped and resized to ``height × width`` (:func:`center_crop_resize`); the first audio stream mixed to
    mono and resampled to ``sample_rate``; both cut at ``max_seconds``. ``source_size`` is the frames' shown size
    before resizing. A file without a video stream gives ``video=None``, without an audio stream ``audio=None``.
    """
    sizes: list[tuple[int, int]] = []

    def convert(frame: np.ndarray) -> np.ndarray:
        if not sizes:
            sizes.append(frame.shape[:2])
        return center_crop_resize(frame, height, width)

    info = probe(path)
    frames: list[np.ndarray] = []
    if info.get("video_codec") is not None:
        limit = None if max_seconds is None else int(math.floor(max_seconds * fps + 1e-9))
        stream = FrameStream(path, fps, convert, info.get("video_duration_s"))
        for j, frame in stream:
            if limit is not None and j >= limit:
                break
            frames.append(frame)
        if stream.error is not None and not frames:
            raise ValueError(f"path: failed to decode {str(path)!r} ({stream.error})")
    audio = None
    if info.get("audio_codec") is not None:
        audio, _ = read_audio(path, sample_rate=sample_rate, max_seconds=max_seconds)
    return Media(video=np.stack(frames) if frames else None, fps=float(fps), audio=audio,
                 audio_channels=info.get("audio_channels"), sample_rate=int(sample_rate) if audio is not None else None,
                 video_codec=info.get("video_codec"), audio_codec=info.get("audio_codec"),
                 duration_s=info.get("duration_s"), source_size=sizes[0] if sizes else None)


def probe(path: PathLike) -> dict[str, Any]:
    """Stream information without decoding frames.

    Returns a flat dict; keys are None where the file has no such stream or the container does not say:
    ``format_name``, ``duration_s``, ``bit_rate``; video: ``video_codec``, ``width``, ``height``, ``num_frames``
    (from the container index; None if unknown), ``fps``, ``pix_fmt``, ``video_duration_s``; audio:
    ``audio_codec``, ``sample_rate``, ``audio_channels``, ``audio_duration_s``.
    """
    info: dict[str, Any] = dict.fromkeys(("video_codec", "width", "height", "num_frames", "fps", "pix_fmt",
                                          "video_duration_s", "audio_codec", "sample_rate", "audio_channels",
                                          "audio_duration_s"))
    with _open_input(path) as container:
        info["format_name"] = container.format.name
        info["duration_s"] = _container_duration(container)
        info["bit_rate"] = container.bit_rate or None
        if container.streams.video:
            vs = container.streams.video[0]
            cc = vs.codec_context
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            info.update(
                video_codec=cc.name,
                width=cc.width,
                height=cc.height,
                num_frames=int(vs.frames) if vs.frames else None,
                fps=float(rate) if rate else None,
                pix_fmt=cc.pix_fmt,
                video_duration_s=float(vs.duration * vs.time_base) if vs.duration is not None else None,
            )
        if container.streams.audio:
            aus = container.streams.audio[0]
            cc = aus.codec_context
            info.update(
                audio_codec=cc.name,
                sample_rate=cc.sample_rate or None,
                audio_channels=cc.channels or None,
                audio_duration_s=float(aus.duration * aus.time_base) if aus.duration is not None else None,
            )
    return info


def read_audio(path: PathLike, sample_rate: int | None = None, mono: bool = True,
               max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read the first audio stream of any container PyAV opens (wav, flac, mp3, mp4, ...).

    Args:
        sample_rate: resample to this rate (PyAV ``AudioResampler``, i.e. libswresample); None keeps the file's.
        mono: True mixes channels to mono (mean) and returns ``[N]``; False returns ``[N, C]``.
        max_seconds: stop decoding after this much audio (an hour-long upload is never held whole) and cut to it.

    Returns:
        ``(audio float32, sample_rate)``.
    """
    if sample_rate is not None:
        sample_rate = _check_sample_rate(sample_rate)
    with _open_input(path) as container:
        if not container.streams.audio:
            raise ValueError(f"path: {str(path)!r} has no audio stream")
        stream = container.streams.audio[0]
        collector = _AudioCollector(sample_rate)
        try:
            for packet in container.demux(stream):
                collector.packet(packet)
                if max_seconds is not None and collector.decoded_s() > max_seconds + 1.0:
                    break
        except av.FFmpegError as exc:
            raise ValueError(f"path: failed to decode audio of {str(path)!r} ({exc})") from exc
        decoded = collector.result()
        if decoded is not None and max_seconds is not None:
            decoded = (decoded[0][:, :int(round(max_seconds * decoded[1]))], decoded[1])
    if decoded is None:
        channels = stream.codec_context.channels or 1
        rate = sample_rate or stream.codec_context.sample_rate
        empty = np.zeros((0,) if mono else (0, channels), np.float32)
        return empty, int(rate)
    planar, rate = decoded
    if mono:
        return (planar.mean(axis=0) if planar.shape[0] > 1 else planar[0]).astype(np.float32), rate
    return np.ascontiguousarray(planar.T), rate


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 ``[H, W, 3]``; transparency is composited onto white."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and arr.max() > 255.0:  # 16-bit grey (PNG/TIFF) -> 8 bit
            arr = arr / 257.0
        grey = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode == "La":  # premultiplied grey + alpha: PIL converts it only to LA
        im = im.convert("LA")
    has_alpha = "A" in im.getbands() or "a" in im.getbands() or (im.mode == "P" and "transparency" in im.info)
    try:
        if has_alpha:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, rgba)
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except ValueError as exc:
        raise ValueError(f"image: cannot convert PIL mode {im.mode!r} to RGB ({exc})") from exc


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0):
            raise ValueError("image: a float array must hold finite values in [0, 1]")
        arr = np.round(arr * 255.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"image: a numpy array must be uint8, bool or float in [0, 1], got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image: a numpy array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {arr.shape}")
    if arr.shape[2] == 3:
        return np.ascontiguousarray(arr)
    alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
    rgb = arr[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _check_image_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"image: zero-size image ({width}x{height})")
    if width * height > max_pixels:
        raise ValueError(
            f"image: {width}x{height} = {width * height} pixels exceeds the limit of max_pixels={max_pixels}"
        )


def load_image(source: PathLike | Image.Image | np.ndarray, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load an image as uint8 RGB ``[H, W, 3]``.

    Args:
        source: a file path, a ``PIL.Image.Image`` or a numpy array (uint8 / bool, or float in [0, 1];
            ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]``).
        max_pixels: images with more pixels are refused. For files the size is read from the header (PIL opens
            lazily) and checked before any pixel is decoded; PIL's own decompression-bomb limit also applies.

    Grayscale, palette, CMYK, 16-bit and YCbCr images are converted to RGB; alpha (RGBA, LA, PA, palette
    transparency) is composited onto white. EXIF orientation is applied for files and PIL images.

    Raises:
        ValueError naming ``image``: missing file, not an image / undecodable, zero-size, too many pixels,
        unsupported array dtype or shape.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_image_size(source.shape[1], source.shape[0], max_pixels)
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        _check_image_size(source.width, source.height, max_pixels)
        return _pil_to_rgb(ImageOps.exif_transpose(source))
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"image must be a file path, a PIL.Image or a numpy array, got {type(source).__name__}")

    p = _check_existing_file(source, name="image")
    try:
        with warnings.catch_warnings():
            # We apply our own max_pixels limit; PIL's DecompressionBombWarning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:  # lazy: reads the header only
                _check_image_size(im.width, im.height, max_pixels)
                im.load()
                return _pil_to_rgb(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image: {str(p)!r} is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ValueError(f"image: {str(p)!r} is not a readable image file") from exc
    except (OSError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"image: {str(p)!r} could not be decoded ({exc})") from exc


# --------------------------------------------------------------------------------------------------------------
# Loudness
# --------------------------------------------------------------------------------------------------------------


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """BS.1770-4 integrated (gated) loudness in LUFS, via pyloudnorm.

    Args:
        audio: float ``[N]`` or ``[N, C]`` with C <= 5 (L, R, C, Ls, Rs).
    Returns:
        LUFS, or ``-inf`` for silence (all blocks under the -70 LUFS gate) or audio shorter than one 0.4 s block.
    """
    a = _check_audio(audio)
    sample_rate = _check_sample_rate(sample_rate)
    if a.shape[1] > 5:
        raise ValueError(f"audio must have at most 5 channels for BS.1770 loudness, got {a.shape[1]}")
    if a.shape[0] < LOUDNESS_BLOCK_S * sample_rate:
        return float("-inf")
    meter = pyloudnorm.Meter(sample_rate, block_size=LOUDNESS_BLOCK_S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(meter.integrated_loudness(a.astype(np.float64)))
    return value if math.isfinite(value) else float("-inf")


def _short_loudness(a: np.ndarray) -> float:
    """Fallback for clips under one gating block: BS.1770's formula without K-weighting or gating,
    ``-0.691 + 10 log10(sum_c mean(x_c^2))`` (a 1 kHz tone reads the same as with the full meter)."""
    power = float(np.sum(np.mean(np.square(a, dtype=np.float64), axis=0)))
    return -0.691 + 10.0 * math.log10(power) if power > 0 else float("-inf")


def _oversampled_peak(a: np.ndarray) -> np.ndarray:
    """Per-sample true-peak estimate ``[N]``: max |x| over channels, the sample itself and the 4x-oversampled
    points between it and the next sample.

    Interpolation is ``resample_poly`` with a windowed-sinc FIR of 16 zero crossings per side (Kaiser beta 6,
    cut-off at the original Nyquist): closer to ideal band-limited reconstruction than scipy's default filter,
    which reads broadband transients up to ~1 dB low.
    """
    n = a.shape[0]
    up_factor = TRUE_PEAK_OVERSAMPLE
    fir = firwin(2 * TRUE_PEAK_ZERO_CROSSINGS * up_factor + 1, 1.0 / up_factor, window=("kaiser", 6.0))
    up = resample_poly(a.astype(np.float64), up_factor, 1, axis=0, window=fir)[: n * up_factor]
    peak = np.abs(up).reshape(n, TRUE_PEAK_OVERSAMPLE, -1).max(axis=(1, 2))
    return np.maximum(peak, np.abs(a).max(axis=1))


def _limiter_gain(peak: np.ndarray, ceiling: float, window: int) -> np.ndarray:
    """Smooth gain envelope ``g [N]`` with ``g[n] * peak[n] <= ceiling`` for every n.

    Look-ahead limiter done offline: the required gain ``min(1, ceiling / peak)`` goes through a sliding minimum
    over ``2w+1`` samples, then a normalised Hann window of the same length. Every value the Hann window averages
    for sample n is a minimum over a window containing n, so the smoothed gain never exceeds the required gain
    at n; the envelope ramps down ``w`` samples ahead of a peak and back up ``w`` samples after it.
    """
    required = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    if np.all(required >= 1.0):
        return np.ones_like(required)
    size = 2 * window + 1
    held = minimum_filter1d(required, size=size, mode="nearest")
    kernel = np.hanning(size + 2)[1:-1]
    kernel /= kernel.sum()
    padded = np.pad(held, window, mode="edge")
    gain = fftconvolve(padded, kernel, mode="valid")
    return np.minimum(np.clip(gain, 0.0, 1.0), required)  # min() only removes FFT round-off


def normalize_loudness(
    audio: np.ndarray,
    sample_rate: int,
    target_lufs: float = -16.0,
    true_peak_db: float = -1.0,
) -> np.ndarray:
    """Normalise to ``target_lufs`` integrated loudness with a true-peak ceiling of ``true_peak_db`` dBTP.

    1. Measure BS.1770 integrated loudness (pyloudnorm) and apply the gain to reach the target.
    2. Estimate the true peak by 4x oversampling. If it is over the ceiling, apply a look-ahead soft limiter: a
       smooth gain envelope (10 ms look-ahead, 10 ms release, Hann-shaped) that pulls only the regions around
       the peaks down, then re-measure and re-apply make-up gain (up to 4 rounds) so the loudness stays at the
       target for typical material (within +-0.5 LU) while no sample and no 4x-oversampled point exceeds the
       ceiling. If the limiter cannot reach the target (extremely dense, peaky material), loudness ends below
       the target rather than violating the ceiling; a final plain gain trim guarantees the ceiling.

    Audio whose loudness is -inf or under -70 LUFS (silence, near-silence) is returned unchanged (as float32).
    Audio shorter than one 0.4 s block cannot be gated: it is measured with the ungated, unweighted
    ``-0.691 + 10 log10(mean square)`` formula instead, then goes through the same gain and true-peak steps.

    Args:
        audio: float ``[N]`` or ``[N, C]`` (C <= 5), finite.
        sample_rate: Hz, > 0.
        target_lufs: target integrated loudness, finite and < 0 (-16 streaming/web, -23 EBU R128 broadcast).
        true_peak_db: ceiling in dBTP, finite and <= 0.

    Returns:
        float32 array of the input's shape; always finite.
    """
    a = _check_audio(audio)
    sample_rate = _check_sample_rate(sample_rate)
    if not isinstance(target_lufs, (int, float, np.number)) or not math.isfinite(target_lufs) or target_lufs >= 0:
        raise ValueError(f"target_lufs must be a finite number < 0 (LUFS), got {target_lufs!r}")
    if not isinstance(true_peak_db, (int, float, np.number)) or not math.isfinite(true_peak_db) or true_peak_db > 0:
        raise ValueError(f"true_peak_db must be a finite number <= 0 (dBTP), got {true_peak_db!r}")
    if a.shape[1] > 5:
        raise ValueError(f"audio must have at most 5 channels for BS.1770 loudness, got {a.shape[1]}")
    out_shape = audio.shape
    if a.shape[0] == 0:
        return np.zeros(out_shape, np.float32)

    short = a.shape[0] < LOUDNESS_BLOCK_S * sample_rate

    def measure(x: np.ndarray) -> float:
        return _short_loudness(x) if short else integrated_loudness(x, sample_rate)

    loudness = measure(a)
    if not math.isfinite(loudness) or loudness < SILENCE_LUFS:
        return a.reshape(out_shape).copy()

    x = a.astype(np.float64) * 10.0 ** ((target_lufs - loudness) / 20.0)
    ceiling = 10.0 ** (true_peak_db / 20.0)
    aim = ceiling * 10.0 ** (-LIMITER_MARGIN_DB / 20.0)
    window = max(1, round(LIMITER_WINDOW_S * sample_rate))
    for round_ in range(LIMITER_MAX_ITERATIONS):
        peak = _oversampled_peak(x)
        if peak.max() <= aim:
            break
        x = x * _limiter_gain(peak, aim, window)[:, None]
        if round_ == LIMITER_MAX_ITERATIONS - 1:
            break
        now = measure(x)
        if not math.isfinite(now) or abs(target_lufs - now) < 0.05:
            break
        x = x * 10.0 ** ((target_lufs - now) / 20.0)  # make-up gain; the next round limits its new peaks
    # Guarantee: plain gain trim if any sample or oversampled point is still above the ceiling.
    top = float(_oversampled_peak(x).max())
    if top > aim:
        x = x * (aim / top)
    y = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    return y.reshape(out_shape)
