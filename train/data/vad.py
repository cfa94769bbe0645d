"""Voice-activity detection from frame energy and spectral shape; no model.

The audio is resampled to ``analysis_rate`` (16 kHz) and cut into ``frame_ms`` frames every ``hop_ms``. A frame
is voiced when all three hold:

1. energy: its level (dBFS, ``10 log10 mean x^2``) exceeds ``energy_floor_db`` and lies within
   ``dynamic_range_db`` of the clip's loud level (95th percentile of frame levels), so a quiet bed under loud
   speech does not count while a clip of nothing but speech still does;
2. speech band: at least ``min_band_ratio`` of its energy lies in 80–4000 Hz (voiced speech: the fundamental,
   F1 and F2; rumble and hiss fall outside);
3. spectral flatness (geometric over arithmetic mean of the 100–4000 Hz power spectrum) at most
   ``max_flatness``: voiced speech is harmonic (flatness near 0), noise is flat (white noise reads ~0.56);
4. periodicity at least ``min_periodicity``: the highest local peak of the normalised autocorrelation at pitch
   lags (60–500 Hz; Boersma's window-corrected autocorrelation) — voiced speech repeats every glottal period,
   coloured noise only decays (a peak at the lag range's edge does not count).

Frame decisions are smoothed by a running majority over ``smooth_ms``; voiced frames become segments: gaps
shorter than ``max_gap_s`` are bridged (syllable and word breaks), segments shorter than ``min_speech_s`` are
dropped, and so are segments whose level barely varies (standard deviation under ``min_modulation_db``):
speech rises and falls with its syllables, a steady tone or hum does not. Music with a singing-like spectrum can
still pass; the paper confirms speech with an audio classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import resample_poly

from ..yaml_config import check_number, check_order

__all__ = ["VADConfig", "frame_features", "detect_speech", "speech_duration"]

SPEECH_BAND_HZ = (80.0, 4000.0)
FLATNESS_BAND_HZ = (100.0, 4000.0)
LOUD_PERCENTILE = 95.0
PITCH_RANGE_HZ = (60.0, 500.0)
POWER_EPS = 1e-12


@dataclass(frozen=True, kw_only=True)
class VADConfig:
    """Voice-activity thresholds (see the module docstring).

    Args:
        analysis_rate: audio is resampled to this rate (Hz) for analysis.
        frame_ms, hop_ms: analysis frame length and hop.
        energy_floor_db: absolute level (dBFS) a voiced frame must exceed.
        dynamic_range_db: voiced frames lie within this of the clip's loud level (dB).
        min_band_ratio: minimum fraction of frame energy in 80–4000 Hz.
        max_flatness: maximum spectral flatness (0..1) in 100–4000 Hz.
        min_periodicity: minimum autocorrelation peak (0..1) at pitch lags.
        smooth_ms: running-majority window over the frame decisions.
        max_gap_s: pauses shorter than this inside speech are bridged.
        min_speech_s: shorter segments are dropped.
        min_modulation_db: a segment's frame levels must vary at least this much (standard deviation, dB).
        min_total_speech_s: a clip counts as a speech clip (for its type label) with at least this much speech.
    """

    analysis_rate: int = 16000
    frame_ms: float = 25.0
    hop_ms: float = 10.0
    energy_floor_db: float = -45.0
    dynamic_range_db: float = 30.0
    min_band_ratio: float = 0.6
    max_flatness: float = 0.3
    min_periodicity: float = 0.6
    smooth_ms: float = 50.0
    max_gap_s: float = 0.3
    min_speech_s: float = 0.2
    min_modulation_db: float = 2.0
    min_total_speech_s: float = 1.0

    def __post_init__(self) -> None:
        check_number("analysis_rate", self.analysis_rate, lo=8000, integer=True)
        check_number("frame_ms", self.frame_ms, lo=1, hi=200)
        check_number("hop_ms", self.hop_ms, lo=1, hi=200)
        check_order("hop_ms", self.hop_ms, "frame_ms", self.frame_ms)
        check_number("energy_floor_db", self.energy_floor_db, lo=-120, hi=0)
        check_number("dynamic_range_db", self.dynamic_range_db, lo=0)
        check_number("min_band_ratio", self.min_band_ratio, lo=0, hi=1)
        check_number("max_flatness", self.max_flatness, lo=0, hi=1)
        check_number("min_periodicity", self.min_periodicity, lo=0, hi=1)
        check_number("smooth_ms", self.smooth_ms, lo=0, hi=1000)
        check_number("max_gap_s", self.max_gap_s, lo=0)
        check_number("min_speech_s", self.min_speech_s, lo=0)
        check_number("min_modulation_db", self.min_modulation_db, lo=0)
        check_number("min_total_speech_s", self.min_total_speech_s, lo=0)


@dataclass(frozen=True)
class Features:
    """Per-frame VAD features; frame ``i`` is centred at ``times[i]`` seconds."""

    times: np.ndarray  # [F]
    level_db: np.ndarray  # [F]
    band_ratio: np.ndarray  # [F]
    flatness: np.ndarray  # [F]
    periodicity: np.ndarray  # [F]
    hop_s: float


def frame_features(audio: np.ndarray, sample_rate: int, cfg: VADConfig | None = None) -> Features:
    """Level, speech-band ratio and spectral flatness per analysis frame of mono (or channel-mixed) audio."""
    cfg = cfg or VADConfig()
    a = mono(audio, "audio")
    check_number("sample_rate", sample_rate, lo=1, integer=True)
    rate = cfg.analysis_rate
    if sample_rate != rate:
        g = math.gcd(rate, sample_rate)
        a = resample_poly(a, rate // g, sample_rate // g)
    win = max(16, round(cfg.frame_ms * 1e-3 * rate))
    hop = max(1, round(cfg.hop_ms * 1e-3 * rate))
    n_frames = 0 if a.shape[0] < win else 1 + (a.shape[0] - win) // hop
    if n_frames == 0:
        empty = np.zeros(0)
        return Features(empty, empty, empty, empty, empty, hop / rate)
    idx = np.arange(n_frames)[:, None] * hop + np.arange(win)[None, :]  # [F, win]
    frames = a[idx]
    level_db = 10.0 * np.log10(np.mean(frames**2, axis=1) + POWER_EPS)
    n_fft = 1 << (win - 1).bit_length()
    window = np.hanning(win)
    power = np.abs(np.fft.rfft(frames * window, n=n_fft, axis=1)) ** 2  # [F, n_fft/2+1]
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    band = (freqs >= SPEECH_BAND_HZ[0]) & (freqs <= SPEECH_BAND_HZ[1])
    band_ratio = power[:, band].sum(axis=1) / (power[:, 1:].sum(axis=1) + POWER_EPS)
    flat_band = (freqs >= FLATNESS_BAND_HZ[0]) & (freqs <= FLATNESS_BAND_HZ[1])
    p = power[:, flat_band] + POWER_EPS
    flatness = np.exp(np.mean(np.log(p), axis=1)) / np.mean(p, axis=1)
    periodicity = _periodicity(frames * window, window, n_fft, rate)
    times = (np.arange(n_frames) * hop + win / 2) / rate
    return Features(times, level_db, band_ratio, flatness, periodicity, hop / rate)


def _periodicity(windowed: np.ndarray, window: np.ndarray, n_fft: int, rate: int) -> np.ndarray:
    """Highest interior local maximum of the window-corrected normalised autocorrelation over pitch lags."""
    win = window.shape[0]
    n = 1 << (2 * win - 1).bit_length()  # no circular wrap
    r = np.fft.irfft(np.abs(np.fft.rfft(windowed, n=n, axis=1)) ** 2, n=n, axis=1)[:, :win]  # [F, win]
    rw = np.fft.irfft(np.abs(np.fft.rfft(window, n=n)) ** 2, n=n)[:win]
    lo = max(2, int(rate / PITCH_RANGE_HZ[1]))
    hi = min(win - 2, int(rate / PITCH_RANGE_HZ[0]))
    if hi <= lo:
        return np.zeros(windowed.shape[0])
    rn = (r[:, lo - 1 : hi + 2] / (r[:, :1] + POWER_EPS)) / (rw[lo - 1 : hi + 2] / rw[0])
    mid = rn[:, 1:-1]
    peak = (mid >= rn[:, :-2]) & (mid >= rn[:, 2:])
    return np.clip(np.where(peak, mid, 0.0).max(axis=1), 0.0, 1.0)


def mono(audio: np.ndarray, name: str) -> np.ndarray:
    """float ``[N]`` or ``[N, C]`` -> float64 ``[N]`` (channel mean); raises ValueError naming ``name``."""
    if not isinstance(audio, np.ndarray) or audio.ndim not in (1, 2) or not np.issubdtype(audio.dtype, np.floating):
        desc = f"{type(audio).__name__} {getattr(audio, 'dtype', '')} {getattr(audio, 'shape', '')}"
        raise ValueError(f"{name}: {desc} is not allowed; expected a float array [N] or [N, C]")
    a = audio.astype(np.float64)
    return a.mean(axis=1) if a.ndim == 2 else a


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` index runs of True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def detect_speech(audio: np.ndarray, sample_rate: int, cfg: VADConfig | None = None) -> list[tuple[float, float]]:
    """Speech segments ``[(start_s, end_s), ...]`` (sorted, disjoint, within ``[0, duration]``)."""
    cfg = cfg or VADConfig()
    duration = mono(audio, "audio").shape[0] / sample_rate
    f = frame_features(audio, sample_rate, cfg)
    if f.times.size == 0:
        return []
    # 1. Frame decisions.
    loud = float(np.percentile(f.level_db, LOUD_PERCENTILE))
    threshold = max(cfg.energy_floor_db, loud - cfg.dynamic_range_db)
    voiced = ((f.level_db > threshold) & (f.band_ratio >= cfg.min_band_ratio) & (f.flatness <= cfg.max_flatness)
              & (f.periodicity >= cfg.min_periodicity))
    smooth = int(round(cfg.smooth_ms * 1e-3 / f.hop_s)) | 1
    if smooth > 1:
        voiced = median_filter(voiced.astype(np.uint8), size=smooth, mode="nearest").astype(bool)
    # 2. Bridge short gaps, then drop short or steady segments.
    merged: list[list[int]] = []
    for lo, hi in _runs(voiced):
        if merged and (f.times[lo] - f.times[merged[-1][1] - 1]) - f.hop_s < cfg.max_gap_s:
            merged[-1][1] = hi
        else:
            merged.append([lo, hi])
    segments = []
    half = f.hop_s / 2
    for lo, hi in merged:
        start = max(0.0, float(f.times[lo]) - half)
        end = min(duration, float(f.times[hi - 1]) + half)
        if end - start >= cfg.min_speech_s and float(np.std(f.level_db[lo:hi])) >= cfg.min_modulation_db:
            segments.append((round(start, 3), round(end, 3)))
    return segments


def speech_duration(segments: list[tuple[float, float]] | list[list[float]]) -> float:
    """Total seconds covered by disjoint segments."""
    return float(sum(e - s for s, e in segments))
