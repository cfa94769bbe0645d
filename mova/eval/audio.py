"""Audio quality signals: loudness, silence, bandwidth, clipping. Pure numpy/scipy, no model."""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import welch

from mova.media import _check_audio, _check_sample_rate, integrated_loudness

__all__ = ["integrated_loudness", "silence_ratio", "bandwidth_hz", "clipping_ratio"]

WELCH_SEGMENT = 4096  # samples per Welch segment (11.7 Hz bins at 48 kHz)


def silence_ratio(audio: np.ndarray, sample_rate: int, threshold_db: float = -50.0, frame_ms: float = 20) -> float:
    """Fraction of frames whose RMS level is below ``threshold_db`` dBFS.

    Args:
        audio: float ``[N]`` or ``[N, C]`` (RMS over all channels of a frame); sample_rate in Hz.
        threshold_db: level in dBFS (``20 log10(rms)``; a full-scale square wave is 0 dBFS, a full-scale sine
            -3 dBFS).
        frame_ms: non-overlapping frame length; a trailing partial frame is dropped unless it is the only one.

    Returns:
        ratio in [0, 1].
    """
    a = _check_audio(audio)
    sample_rate = _check_sample_rate(sample_rate)
    if not math.isfinite(frame_ms) or frame_ms <= 0:
        raise ValueError(f"frame_ms must be a positive number, got {frame_ms!r}")
    if a.shape[0] == 0:
        raise ValueError("audio must not be empty")
    frame = max(1, round(frame_ms * 1e-3 * sample_rate))
    n_frames = max(1, a.shape[0] // frame)
    used = a[: n_frames * frame] if a.shape[0] >= frame else a
    power = np.square(used, dtype=np.float64).reshape(n_frames, -1).mean(axis=1)  # [F]
    threshold_power = 10.0 ** (threshold_db / 10.0)
    return float(np.mean(power < threshold_power))


def bandwidth_hz(audio: np.ndarray, sample_rate: int, rolloff: float = 0.99) -> float:
    """Effective bandwidth: the frequency below which ``rolloff`` of the average spectral energy lies.

    Args:
        audio: float ``[N]`` or ``[N, C]`` (channels averaged); sample_rate in Hz; rolloff in (0, 1].

    Returns:
        Hz, from a Welch PSD (Hann, 4096-sample segments, 50 % overlap), linearly interpolated between bins;
        0.0 for silence. A 48 kHz file upsampled from 16 kHz reads about 8000.
    """
    a = _check_audio(audio).mean(axis=1)
    sample_rate = _check_sample_rate(sample_rate)
    if not math.isfinite(rolloff) or not 0 < rolloff <= 1:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff!r}")
    if a.shape[0] < 2 or not np.any(a):
        return 0.0
    freqs, psd = welch(a.astype(np.float64), fs=sample_rate, nperseg=min(WELCH_SEGMENT, a.shape[0]))
    cumulative = np.cumsum(psd)
    total = cumulative[-1]
    if total <= 0:
        return 0.0
    return float(np.interp(rolloff * total, cumulative, freqs))


def clipping_ratio(audio: np.ndarray, threshold: float = 0.999) -> float:
    """Fraction of samples (all channels) with ``|x| >= threshold`` (full scale is 1.0). Empty audio gives 0."""
    a = _check_audio(audio)
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    if a.size == 0:
        return 0.0
    return float(np.mean(np.abs(a) >= threshold))
