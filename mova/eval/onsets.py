"""Discrete events: audio onsets, visual motion events, and how well the two line up."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import median_filter
from scipy.optimize import linear_sum_assignment
from scipy.signal import find_peaks

from mova.eval.sync import _check_fps, motion_energy, spectral_flux

__all__ = ["pick_peaks", "detect_onsets", "detect_motion_events", "onset_alignment", "nearest_offsets"]


def pick_peaks(
    envelope: np.ndarray,
    rate: float,
    *,
    delta: float = 4.0,
    window_s: float = 0.5,
    min_interval_s: float = 0.05,
    min_relative: float = 0.05,
) -> np.ndarray:
    """Indices of peaks of a non-negative envelope with an adaptive threshold.

    A local maximum at n is kept when ``envelope[n] > median(envelope over window_s around n) + delta * s`` and
    ``envelope[n] >= min_relative * max(envelope)``, where ``s`` is the envelope's robust spread (1.4826 * median
    absolute deviation: the noise floor's scale, not inflated by the peaks; 0 when most values are equal, and
    then the ``min_relative`` floor does the work). Peaks closer than ``min_interval_s`` keep the larger one.

    Args:
        envelope: float ``[M]``; rate: envelope samples per second.

    Returns:
        int64 ``[K]`` sorted indices.
    """
    env = np.asarray(envelope, dtype=np.float64)
    if env.ndim != 1:
        raise ValueError(f"envelope must be 1-D [M], got shape {env.shape}")
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"rate must be a positive finite number, got {rate!r}")
    for name, value in (("delta", delta), ("window_s", window_s), ("min_interval_s", min_interval_s)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if env.shape[0] < 3 or not np.any(env > 0):
        return np.zeros(0, np.int64)
    size = max(3, int(round(window_s * rate)) | 1)
    local = median_filter(env, size=size, mode="mirror")
    spread = 1.4826 * float(np.median(np.abs(env - np.median(env))))  # robust noise scale; 0 on plateaus
    threshold = np.maximum(local + delta * spread, min_relative * float(env.max()))
    distance = max(1, int(round(min_interval_s * rate)))
    peaks, _ = find_peaks(np.pad(env, 1), height=np.pad(threshold, 1) + 1e-12, distance=distance)
    return (peaks - 1).astype(np.int64)


def detect_onsets(
    audio: np.ndarray,
    sample_rate: int,
    *,
    delta: float = 4.0,
    window_s: float = 0.5,
    min_interval_s: float = 0.05,
) -> np.ndarray:
    """Audio onset times in seconds: :func:`pick_peaks` on the spectral flux (2.5 ms hop).

    Args:
        audio: float ``[N]`` or ``[N, C]``; sample_rate in Hz; peak-picking parameters as in :func:`pick_peaks`.

    Returns:
        float64 ``[K]`` sorted onset times (s). Silence gives no onsets.
    """
    flux, times = spectral_flux(audio, sample_rate)
    if times.shape[0] < 2:
        return np.zeros(0)
    rate = 1.0 / float(times[1] - times[0])
    idx = pick_peaks(flux, rate, delta=delta, window_s=window_s, min_interval_s=min_interval_s)
    return times[idx].astype(np.float64)


def detect_motion_events(
    video: np.ndarray,
    fps: float,
    *,
    delta: float = 4.0,
    window_s: float = 1.0,
    min_interval_s: float = 0.1,
) -> np.ndarray:
    """Visual event times in seconds: peaks of :func:`motion_energy`.

    Args:
        video: ``[T, H, W, 3]`` or ``[T, H, W]``; fps: frames/s; peak-picking parameters as in :func:`pick_peaks`.

    Returns:
        float64 ``[K]``: ``k / fps`` for each peak frame k (the first frame that shows the change).
    """
    fps = _check_fps(fps)
    idx = pick_peaks(motion_energy(video), fps, delta=delta, window_s=window_s, min_interval_s=min_interval_s)
    return idx.astype(np.float64) / fps


def onset_alignment(
    audio_onsets_s: np.ndarray, visual_events_s: np.ndarray, tolerance_s: float
) -> dict[str, float | int | list[tuple[float, float]]]:
    """Match audio onsets to visual events one-to-one within ``tolerance_s``.

    The matching has the largest possible number of pairs and, among those, the smallest total |offset|
    (``scipy.optimize.linear_sum_assignment``). Visual events are the reference.

    Returns:
        dict with ``precision`` (matched / audio onsets), ``recall`` (matched / visual events), ``f1``,
        ``num_matched``, ``num_audio``, ``num_visual``, ``matched`` (list of ``(audio_s, visual_s)`` pairs sorted
        by time), ``mean_offset_s`` (mean audio - visual over the pairs, positive = audio late; nan without
        pairs) and ``mean_abs_offset_s``. With no audio onsets, precision is 1.0 if there are no visual events
        either, else 0.0; recall likewise.
    """
    if not math.isfinite(tolerance_s) or tolerance_s < 0:
        raise ValueError(f"tolerance_s must be a finite number >= 0, got {tolerance_s!r}")
    a = np.sort(np.asarray(audio_onsets_s, dtype=np.float64).ravel())
    v = np.sort(np.asarray(visual_events_s, dtype=np.float64).ravel())
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(v))):
        raise ValueError("audio_onsets_s and visual_events_s must hold finite times in seconds")
    pairs: list[tuple[float, float]] = []
    if a.size and v.size:
        dist = np.abs(a[:, None] - v[None, :])  # [A, V]
        feasible = dist <= tolerance_s + 1e-12
        # Infeasible pairs cost more than any set of feasible ones, so cardinality is maximised first.
        big = (tolerance_s + 1.0) * (min(a.size, v.size) + 1)
        rows, cols = linear_sum_assignment(np.where(feasible, dist, big))
        keep = feasible[rows, cols]
        pairs = sorted(zip(a[rows[keep]].tolist(), v[cols[keep]].tolist()))
    n = len(pairs)
    precision = n / a.size if a.size else (1.0 if v.size == 0 else 0.0)
    recall = n / v.size if v.size else (1.0 if a.size == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    offsets = np.array([pa - pv for pa, pv in pairs])
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "num_matched": n,
        "num_audio": int(a.size),
        "num_visual": int(v.size),
        "matched": pairs,
        "mean_offset_s": float(offsets.mean()) if n else float("nan"),
        "mean_abs_offset_s": float(np.abs(offsets).mean()) if n else float("nan"),
    }


def nearest_offsets(events_s: np.ndarray, reference_s: np.ndarray) -> np.ndarray:
    """For each reference event, the signed time to the nearest of ``events_s`` (``event − reference``, seconds;
    positive = the event comes after). float64 ``[R]``; NaN for every reference event when there are no events.

    Unlike :func:`onset_alignment` this is per reference event and not one-to-one: with events closer together than
    the offsets measured, a chance baseline (events of another clip) shows how much that flatters."""
    events = np.sort(np.asarray(events_s, np.float64).ravel())
    reference = np.asarray(reference_s, np.float64).ravel()
    if events.size == 0:
        return np.full(reference.shape, np.nan)
    right = np.clip(np.searchsorted(events, reference), 0, events.size - 1)
    left = np.clip(right - 1, 0, events.size - 1)
    candidates = np.stack([events[left] - reference, events[right] - reference])  # [2, R]
    return candidates[np.argmin(np.abs(candidates), axis=0), np.arange(reference.size)]
