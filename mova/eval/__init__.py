"""Signal-level audio-visual metrics that need no model download.

Used by the demo-model evaluation and by training-data filters. All functions are pure: numpy arrays in,
numbers (or arrays) out. Conventions: video uint8 ``[T, H, W, 3]``, audio float ``[N]`` or ``[N, C]``; times in
seconds; offsets in video frames with positive = audio after video.
"""

from mova.eval.audio import bandwidth_hz, clipping_ratio, integrated_loudness, silence_ratio
from mova.eval.onsets import detect_motion_events, detect_onsets, nearest_offsets, onset_alignment, pick_peaks
from mova.eval.seams import Join, seam_figures
from mova.eval.sync import (audio_onset_envelope, av_correlation, av_offset, lagged_correlation, motion_energy,
                            peak_lag, spectral_flux)

__all__ = [
    "audio_onset_envelope", "motion_energy", "av_correlation", "av_offset", "lagged_correlation", "peak_lag",
    "spectral_flux", "detect_onsets", "detect_motion_events", "pick_peaks", "onset_alignment", "nearest_offsets",
    "Join", "seam_figures", "integrated_loudness", "silence_ratio", "bandwidth_hz", "clipping_ratio",
]
