"""mova.eval: signal-level AV metrics on synthetic clips with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, sosfiltfilt

import mova.eval as ev
from mova import media

SR = 48000
FPS = 24
T = 96  # 4 s
FLASH_FRAMES = np.array([5, 17, 26, 41, 50, 66, 73, 88])  # irregular, so no lag but the true one lines up


def flash_video(events: np.ndarray = FLASH_FRAMES, T: int = T) -> np.ndarray:
    """A grey 48x64 clip where a bright square appears at each event frame and fades out over 8 frames."""
    video = np.full((T, 48, 64, 3), 30, np.uint8)
    for e in events:
        for d in range(8):
            if e + d < T:
                level = int(30 + 225 * (1 - d / 8))
                video[e + d, 12:36, 16:48] = np.maximum(video[e + d, 12:36, 16:48], level)
    return video


def click_audio(times_s: np.ndarray, seconds: float, noise: float = 0.003, seed: int = 0) -> np.ndarray:
    """Short decaying noise clicks (4 ms, ~1 ms decay) at the given times over white noise: float32 [N]."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    audio = noise * rng.standard_normal(n)
    length = int(0.004 * SR)
    for t in times_s:
        i = int(round(t * SR))
        if 0 <= i < n - length:
            audio[i : i + length] += rng.uniform(0.3, 0.8) * rng.standard_normal(length) * np.exp(
                -np.arange(length) / (0.001 * SR)
            )
    return audio.astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# Envelopes and AV offset
# --------------------------------------------------------------------------------------------------------------


def test_motion_energy_values():
    video = np.zeros((4, 8, 8, 3), np.uint8)
    video[1] = 10  # +10 everywhere
    video[2] = 10
    video[3, :4] = 10  # top half stays at 10, bottom half drops to 0: mean change 5
    energy = ev.motion_energy(video)
    assert energy.shape == (4,) and energy.dtype == np.float32
    np.testing.assert_allclose(energy, [0.0, 10.0, 0.0, 5.0], atol=1e-4)
    # Colour weighting: a pure green change of 100 is a luma change of 58.7 (59 after 8-bit rounding).
    green = np.zeros((2, 4, 4, 3), np.uint8)
    green[1, ..., 1] = 100
    assert ev.motion_energy(green)[1] == pytest.approx(59.0, abs=1e-4)
    assert ev.motion_energy(green.astype(np.float32))[1] == pytest.approx(58.7, abs=1e-4)
    assert ev.motion_energy(np.zeros((3, 4, 4), np.uint8)).tolist() == [0.0, 0.0, 0.0]
    # The fast uint8 path and the chunked float path agree up to luma rounding.
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (40, 16, 24, 3), dtype=np.uint8)
    manual = np.abs(np.diff(noisy.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32), axis=0))
    np.testing.assert_allclose(ev.motion_energy(noisy.astype(np.float32))[1:], manual.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(ev.motion_energy(noisy)[1:], manual.mean(axis=(1, 2)), atol=0.5)
    with pytest.raises(ValueError, match="video"):
        ev.motion_energy(np.zeros((4, 8, 8, 2), np.uint8))


@pytest.mark.parametrize("phase", [0.0, 0.5])  # click exactly at the frame start, or mid-frame
def test_audio_onset_envelope_puts_clicks_in_their_frame(phase):
    frames = np.array([3, 10, 20])
    audio = click_audio((frames + phase) / FPS, 1.0)
    env = ev.audio_onset_envelope(audio, SR, FPS)
    assert env.shape == (24,) and env.dtype == np.float32
    top3 = np.sort(np.argsort(env)[-3:])
    assert top3.tolist() == frames.tolist()
    assert env[frames].min() > 5 * np.median(env)
    assert ev.audio_onset_envelope(audio, SR, FPS, num_frames=30).shape == (30,)
    assert ev.audio_onset_envelope(np.zeros(SR, np.float32), SR, FPS).max() == 0.0


@pytest.mark.parametrize("shift", [0, 3, -2])
@pytest.mark.parametrize("phase", [0.0, 0.5])
def test_av_offset_recovers_known_shift(shift, phase):
    video = flash_video()
    audio = click_audio((FLASH_FRAMES + shift + phase) / FPS, T / FPS, seed=shift + 10)
    offset = ev.av_offset(video, FPS, audio, SR)
    assert offset == pytest.approx(shift, abs=0.5)

    lags, corr = ev.av_correlation(video, FPS, audio, SR, max_offset_frames=12)
    assert lags.tolist() == list(range(-12, 13))
    assert lags[np.argmax(corr)] == shift and corr.max() > 0.5


def test_av_offset_with_stereo_noise_and_fractional_fps():
    fps = 12.5
    frames = np.array([3, 9, 14, 22, 27, 36, 41])
    video = flash_video(frames, T=48)
    clicks = click_audio((frames + 2) / fps, 48 / fps, noise=0.02, seed=5)
    stereo = np.stack([clicks, 0.5 * clicks], axis=1)
    assert ev.av_offset(video, fps, stereo, SR, max_offset_frames=6) == pytest.approx(2.0, abs=0.5)


def test_av_offset_undefined_without_motion_or_sound():
    still = np.full((T, 16, 16, 3), 80, np.uint8)
    assert np.isnan(ev.av_offset(still, FPS, click_audio(FLASH_FRAMES / FPS, T / FPS), SR))
    assert np.isnan(ev.av_offset(flash_video(), FPS, np.zeros(T * SR // FPS, np.float32), SR))
    with pytest.raises(ValueError, match="fps"):
        ev.av_offset(still, 0, np.zeros(100, np.float32), SR)
    with pytest.raises(ValueError, match="max_offset_frames"):
        ev.av_offset(still, FPS, np.zeros(100, np.float32), SR, max_offset_frames=-1)


# --------------------------------------------------------------------------------------------------------------
# Discrete events
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [0.001, 0.02, 0.05])
def test_detect_onsets_precision_recall_on_noisy_clicks(noise):
    rng = np.random.default_rng(7)
    times = np.cumsum(rng.uniform(0.12, 0.6, 20)) + 0.1  # 20 clicks at irregular times within ~8 s
    audio = click_audio(times, times[-1] + 0.5, noise=noise, seed=8)
    onsets = ev.detect_onsets(audio, SR)
    result = ev.onset_alignment(onsets, times, tolerance_s=0.02)
    assert result["recall"] >= 0.95 and result["precision"] >= 0.95
    # Timing is tight: the detector reports onsets within a few ms after the true time.
    assert 0.0 <= result["mean_offset_s"] <= 0.006
    assert ev.detect_onsets(np.zeros(SR, np.float32), SR).size == 0


@pytest.mark.parametrize("sensor_noise", [0.0, 5.0])
def test_detect_motion_events_finds_flashes(sensor_noise):
    video = flash_video()
    if sensor_noise:
        noise = np.random.default_rng(4).normal(0, sensor_noise, video.shape)
        video = np.clip(video + noise, 0, 255).astype(np.uint8)
    events = ev.detect_motion_events(video, FPS)
    np.testing.assert_allclose(events, FLASH_FRAMES / FPS)
    assert ev.detect_motion_events(np.zeros((10, 8, 8, 3), np.uint8), FPS).size == 0


def test_onsets_and_motion_events_align_end_to_end():
    audio = click_audio((FLASH_FRAMES + 0.25) / FPS, T / FPS, noise=0.01)
    res = ev.onset_alignment(ev.detect_onsets(audio, SR), ev.detect_motion_events(flash_video(), FPS), 0.5 / FPS)
    assert res["f1"] == 1.0 and res["num_matched"] == len(FLASH_FRAMES)
    assert res["mean_offset_s"] == pytest.approx(0.25 / FPS, abs=0.006)


def test_onset_alignment_counts_and_optimal_matching():
    # One visual event between two onsets: the nearer one is matched, not the first one.
    res = ev.onset_alignment([0.0, 1.0], [0.9], tolerance_s=1.0)
    assert res["matched"] == [(1.0, 0.9)]
    assert (res["precision"], res["recall"]) == (0.5, 1.0)
    assert res["f1"] == pytest.approx(2 / 3)
    assert res["mean_offset_s"] == pytest.approx(0.1)

    # Maximum number of pairs first: greedy-by-distance would pair 1.0-1.05 and leave 0.9 / 1.2 unmatched.
    res = ev.onset_alignment([0.9, 1.05], [1.0, 1.2], tolerance_s=0.16)
    assert res["num_matched"] == 2 and res["matched"] == [(0.9, 1.0), (1.05, 1.2)]

    res = ev.onset_alignment([0.1, 0.5, 2.0], [0.12, 0.48, 1.0, 3.0], tolerance_s=0.05)
    assert (res["num_matched"], res["num_audio"], res["num_visual"]) == (2, 3, 4)
    assert res["precision"] == pytest.approx(2 / 3) and res["recall"] == pytest.approx(0.5)
    assert res["mean_abs_offset_s"] == pytest.approx(0.02)

    empty = ev.onset_alignment([], [], 0.05)
    assert (empty["precision"], empty["recall"], empty["num_matched"]) == (1.0, 1.0, 0)
    none = ev.onset_alignment([], [1.0], 0.05)
    assert (none["precision"], none["recall"], none["f1"]) == (0.0, 0.0, 0.0) and np.isnan(none["mean_offset_s"])
    with pytest.raises(ValueError, match="tolerance_s"):
        ev.onset_alignment([1.0], [1.0], -0.1)


# --------------------------------------------------------------------------------------------------------------
# Audio quality
# --------------------------------------------------------------------------------------------------------------


def test_silence_ratio():
    rng = np.random.default_rng(0)
    half = np.concatenate([0.2 * rng.standard_normal(SR), 1e-4 * rng.standard_normal(SR)]).astype(np.float32)
    assert ev.silence_ratio(half, SR) == pytest.approx(0.5, abs=0.02)
    assert ev.silence_ratio(half, SR, threshold_db=-90.0) == 0.0  # the quiet half is at -80 dBFS
    assert ev.silence_ratio(np.stack([half, half], axis=1), SR, frame_ms=50) == pytest.approx(0.5, abs=0.05)
    assert ev.silence_ratio(np.zeros(SR, np.float32), SR) == 1.0
    quarter = np.concatenate([np.zeros(SR // 4), 0.1 * rng.standard_normal(3 * SR // 4)]).astype(np.float32)
    assert ev.silence_ratio(quarter, SR) == pytest.approx(0.25, abs=0.02)
    with pytest.raises(ValueError, match="frame_ms"):
        ev.silence_ratio(half, SR, frame_ms=0)


@pytest.mark.parametrize("cutoff", [2000.0, 4000.0, 8000.0, 12000.0])
def test_bandwidth_of_lowpassed_noise(cutoff):
    noise = np.random.default_rng(1).standard_normal(2 * SR)
    lowpassed = sosfiltfilt(butter(8, cutoff, fs=SR, output="sos"), noise).astype(np.float32) * 0.2
    assert ev.bandwidth_hz(lowpassed, SR) == pytest.approx(cutoff, rel=0.15)


def test_bandwidth_white_noise_and_silence():
    white = np.random.default_rng(2).standard_normal(SR).astype(np.float32) * 0.1
    assert ev.bandwidth_hz(white, SR) == pytest.approx(0.99 * SR / 2, rel=0.02)
    assert ev.bandwidth_hz(white, SR, rolloff=0.5) == pytest.approx(0.5 * SR / 2, rel=0.05)
    assert ev.bandwidth_hz(np.zeros(SR, np.float32), SR) == 0.0
    with pytest.raises(ValueError, match="rolloff"):
        ev.bandwidth_hz(white, SR, rolloff=1.5)


def test_clipping_ratio_and_loudness_reexport():
    x = np.linspace(-1.2, 1.2, 1000).astype(np.float32)
    expected = np.mean(np.abs(x) >= 0.999)
    assert ev.clipping_ratio(np.clip(x, -1, 1)) == pytest.approx(expected)
    assert ev.clipping_ratio(0.5 * x) == 0.0
    assert ev.integrated_loudness is media.integrated_loudness
    tone = (0.1 * np.sin(2 * np.pi * 1000 * np.arange(SR) / SR)).astype(np.float32)
    assert ev.integrated_loudness(tone, SR) == pytest.approx(-23.0, abs=0.2)  # 1 kHz at -20 dBFS peak


def test_lagged_correlation_finds_the_shift_of_a_signal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = np.roll(x, 4)  # y[k] = x[k - 4]: the signal comes 4 samples after the reference
    lags, corr = ev.lagged_correlation(x, y, 8)
    assert lags.tolist() == list(range(-8, 9)) and corr[lags == 4][0] == pytest.approx(1.0, abs=0.05)
    assert ev.peak_lag(lags, corr) == pytest.approx(4.0, abs=0.2)
    assert np.isnan(ev.peak_lag(lags, np.zeros_like(corr)))
    with pytest.raises(ValueError, match="same length"):
        ev.lagged_correlation(x, y[:-1], 3)
