"""Audio-visual synchrony from signals alone: onset envelopes, motion energy, AV offset.

No model, no download: the audio side is spectral flux, the video side is mean absolute frame difference, and the
offset is the lag that maximises their normalised cross-correlation at the video frame rate.

Time conventions: video frame ``k`` is shown during ``[k / fps, (k + 1) / fps)``; an audio event at ``t`` seconds
belongs to frame ``floor(t * fps)``. A lag ``L > 0`` means the audio comes ``L`` frames after the video.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from mova.media import _check_audio, _check_sample_rate

__all__ = [
    "spectral_flux", "audio_onset_envelope", "motion_energy", "av_correlation", "av_offset", "lagged_correlation",
    "peak_lag",
]

FLUX_WINDOW_S = 0.01  # STFT window, rounded to the nearest power of two (512 samples at 48 kHz); short = sharp timing
FLUX_HOP_S = 0.0025  # STFT hop, 2.5 ms: well under one video frame (41.7 ms at 24 fps)
FLUX_LOG_GAMMA = 1000.0  # log compression log1p(gamma * |X|) of the normalised magnitude
MOTION_CHUNK_FRAMES = 16  # float input: frames converted at a time in motion_energy (bounds memory)
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma


def _check_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    return float(fps)


def _check_video_array(video: np.ndarray) -> np.ndarray:
    if not isinstance(video, np.ndarray) or video.ndim not in (3, 4) or (video.ndim == 4 and video.shape[-1] != 3):
        shape = getattr(video, "shape", None)
        raise ValueError(f"video must be a numpy array [T, H, W, 3] (RGB) or [T, H, W] (grey), got shape {shape}")
    if not (np.issubdtype(video.dtype, np.integer) or np.issubdtype(video.dtype, np.floating)):
        raise ValueError(f"video must have an integer or float dtype, got {video.dtype}")
    return video


def spectral_flux(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral-flux onset strength at the STFT hop rate.

    Args:
        audio: float ``[N]`` or ``[N, C]`` (channels are averaged), sample_rate in Hz.

    Returns:
        ``(flux [M], times_s [M])``: half-wave-rectified frame-to-frame increase of the log-compressed magnitude
        spectrum, summed over frequency (unitless, >= 0), and the time each value refers to. Hann window of about
        10 ms, 2.5 ms hop, frame m centred on ``m * hop``; ``flux[m]`` compares frames ``m - 1`` and ``m``. Frames
        that reach past either end of the signal get flux 0 (the start of a noisy signal is not an onset), so
        onsets in the first and last ~5 ms are not seen. Stamps are calibrated so the flux peak of
        an impulsive onset at ``t`` is stamped in ``[t, t + 5 ms]``: an event at a frame start stays in its
        frame.
    """
    a = _check_audio(audio).mean(axis=1)
    sample_rate = _check_sample_rate(sample_rate)
    n_fft = 1 << max(4, round(math.log2(FLUX_WINDOW_S * sample_rate)))
    hop = max(1, round(FLUX_HOP_S * sample_rate))
    n = a.shape[0]
    num = n // hop + 1
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0)
    # 1. Frames centred on m * hop (zero padding at both ends).
    padded = np.pad(a, (n_fft // 2, n_fft // 2 + hop))
    idx = np.arange(num)[:, None] * hop + np.arange(n_fft)[None, :]  # [M, n_fft]
    window = np.hanning(n_fft + 2)[1:-1].astype(np.float32)
    frames = padded[idx] * window
    # 2. Log-compressed magnitude, normalised so a full-scale sinusoid has magnitude 0.5.
    mag = np.abs(np.fft.rfft(frames, axis=1)) / window.sum()
    comp = np.log1p(FLUX_LOG_GAMMA * mag)
    # 3. Half-wave rectified difference, summed over frequency.
    flux = np.zeros(num, np.float32)
    flux[1:] = np.maximum(comp[1:] - comp[:-1], 0.0).sum(axis=1)
    # Frames reaching into the padding see the signal start / end as an edge, not an onset: no flux there.
    centres = np.arange(num) * hop
    flux[(centres < n_fft // 2) | (centres + n_fft // 2 > n)] = 0.0
    # Log compression makes an onset register as soon as it enters the window (before the frame centre); the
    # stamp is shifted by n_fft/4 + hop/2, measured so impulses land in [t, t + 5 ms] (16-48 kHz, clean or noisy).
    times = (np.arange(num) * hop + n_fft / 4 + hop / 2) / sample_rate
    return flux, times


def audio_onset_envelope(
    audio: np.ndarray, sample_rate: int, fps: float, *, num_frames: int | None = None
) -> np.ndarray:
    """Spectral-flux onset strength resampled to the video frame rate.

    Args:
        audio: float ``[N]`` or ``[N, C]``; sample_rate in Hz; fps: video frames per second.
        num_frames: length T of the result; default ``ceil(N / sample_rate * fps)``.

    Returns:
        float32 ``[T]``: value k is the maximum flux stamped in ``[k / fps, (k + 1) / fps)`` (0 if none).
    """
    fps = _check_fps(fps)
    flux, times = spectral_flux(audio, sample_rate)
    if num_frames is None:
        num_frames = math.ceil(_check_audio(audio).shape[0] / sample_rate * fps - 1e-9)
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 0:
        raise ValueError(f"num_frames must be a non-negative integer, got {num_frames!r}")
    env = np.zeros(int(num_frames), np.float32)
    k = np.floor(times * fps + 1e-9).astype(np.int64)
    keep = (k >= 0) & (k < num_frames)
    np.maximum.at(env, k[keep], flux[keep])
    return env


def motion_energy(video: np.ndarray) -> np.ndarray:
    """Mean absolute difference of consecutive grayscale (BT.601 luma) frames.

    Args:
        video: ``[T, H, W, 3]`` RGB or ``[T, H, W]`` grey, any integer or float dtype (uint8: 0..255). uint8 RGB
            goes through OpenCV's 8-bit luma (rounded to integers; ~20x faster than float), other inputs are
            converted in float32.

    Returns:
        float32 ``[T]`` in the input's pixel units; ``energy[0] = 0``, ``energy[k] = mean |Y_k - Y_{k-1}|``.
    """
    video = _check_video_array(video)
    T = video.shape[0]
    energy = np.zeros(T, np.float32)
    if video.dtype == np.uint8:
        prev = None
        for k in range(T):
            frame = video[k]
            grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
            if prev is not None:
                energy[k] = cv2.absdiff(grey, prev).mean()
            prev = grey
        return energy
    prev_f = None
    for start in range(0, T, MOTION_CHUNK_FRAMES):
        chunk = video[start : start + MOTION_CHUNK_FRAMES].astype(np.float32)
        grey_f = chunk @ LUMA_WEIGHTS if chunk.ndim == 4 else chunk  # [t, H, W]
        if prev_f is not None:
            grey_f = np.concatenate([prev_f[None], grey_f])
        diffs = np.abs(np.diff(grey_f, axis=0)).mean(axis=(1, 2))
        first = start if prev_f is not None else start + 1
        energy[first : first + diffs.shape[0]] = diffs
        prev_f = grey_f[-1]
    return energy


def av_correlation(
    video: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int, max_offset_frames: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlation of the audio onset envelope and the motion energy over frame lags.

    Returns:
        ``(lags [2L+1] int, corr [2L+1] float64)``: ``corr[i]`` is the Pearson correlation of ``motion[k]`` and
        ``onset[k + lags[i]]`` over the frames where both exist (0 where one side is constant there). ``L`` is
        ``max_offset_frames`` capped at ``T - 2`` so every lag overlaps at least two frames.
    """
    fps = _check_fps(fps)
    if isinstance(max_offset_frames, bool) or not isinstance(max_offset_frames, (int, np.integer)):
        raise ValueError(f"max_offset_frames must be a non-negative integer, got {max_offset_frames!r}")
    if max_offset_frames < 0:
        raise ValueError(f"max_offset_frames must be >= 0, got {max_offset_frames}")
    motion = motion_energy(video).astype(np.float64)
    T = motion.shape[0]
    onset = audio_onset_envelope(audio, sample_rate, fps, num_frames=T).astype(np.float64)
    return lagged_correlation(motion, onset, max_offset_frames)


def lagged_correlation(reference: np.ndarray, signal: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of ``reference[k]`` with ``signal[k + lag]`` for every lag in ``[-L, L]``.

    Args:
        reference, signal: float ``[T]`` sampled on the same clock (e.g. a visual track and an audio envelope at
            the video frame rate). max_lag: L, capped at ``T - 2`` so every lag overlaps at least two samples.

    Returns:
        ``(lags [2L+1] int, corr [2L+1] float64)``, 0 where one side is constant over the overlap.
    """
    reference = np.asarray(reference, np.float64).ravel()
    signal = np.asarray(signal, np.float64).ravel()
    if reference.shape != signal.shape:
        raise ValueError(f"reference and signal must have the same length, got {reference.shape} and {signal.shape}")
    if isinstance(max_lag, bool) or not isinstance(max_lag, (int, np.integer)) or max_lag < 0:
        raise ValueError(f"max_lag must be a non-negative integer, got {max_lag!r}")
    T = reference.shape[0]
    max_lag = int(min(max_lag, max(T - 2, 0)))
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.zeros(lags.shape[0])
    for i, lag in enumerate(lags):
        v = reference[max(0, -lag) : T - max(0, lag)]
        a = signal[max(0, lag) : T - max(0, -lag)]
        v = v - v.mean()
        a = a - a.mean()
        denom = math.sqrt(float(v @ v) * float(a @ a))
        corr[i] = float(v @ a) / denom if denom > 1e-12 else 0.0
    return lags, corr


def av_offset(
    video: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int, max_offset_frames: int = 12
) -> float:
    """Audio-visual offset in video frames: the lag maximising :func:`av_correlation`.

    Args:
        video: ``[T, H, W, 3]`` (or ``[T, H, W]``); fps: frames/s; audio: float ``[N]`` or ``[N, C]`` covering the
            same span; sample_rate: Hz; max_offset_frames: largest |lag| searched.

    Returns:
        lag in frames, positive when the audio lags (comes after) the video; sub-frame by parabolic interpolation
        of the correlation peak. ``nan`` when either envelope is constant (no motion or no onsets: the offset is
        undefined). Divide by ``fps`` for seconds.
    """
    return peak_lag(*av_correlation(video, fps, audio, sample_rate, max_offset_frames))


def peak_lag(lags: np.ndarray, corr: np.ndarray) -> float:
    """The lag of the correlation maximum, sub-sample by parabolic interpolation; ``nan`` if ``corr`` is all 0.
    Equal maxima (one visual event against several sounds fits several lags equally) resolve to the smallest |lag|:
    with no evidence for a larger offset, none is claimed."""
    if not np.any(corr):
        return float("nan")
    ties = np.flatnonzero(corr >= corr.max() - 1e-9)
    i = int(ties[np.argmin(np.abs(lags[ties]))])
    offset = float(lags[i])
    if 0 < i < corr.shape[0] - 1:
        y0, y1, y2 = corr[i - 1], corr[i], corr[i + 1]
        curvature = y0 - 2.0 * y1 + y2
        if curvature < 0:
            offset += float(np.clip(0.5 * (y0 - y2) / curvature, -0.5, 0.5))
    return offset
