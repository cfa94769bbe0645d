"""Audio building blocks of the demo world: modal impacts, clicks, voiced babble, engine buzz, room tone.

All functions return float32/float64 mono arrays at the given sample rate and draw randomness only from the
``rng`` they are given. Onsets are sample-accurate: :func:`add_at` places a sound's first sample exactly at
``round(time_s * sample_rate)``.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
from scipy import signal

# Modal recipes per floor material: (frequency ratios, decay times in s, relative amplitudes,
# base frequency in Hz, noise-burst level). Wood: a short inharmonic knock; metal: a brighter, longer
# clang with bar-like partials (1, 2.76, 5.40, 8.93); rubber: a low, heavily damped thud.
MATERIALS: MappingProxyType[str, dict] = MappingProxyType(
    {
        "wood": {"ratios": (1.0, 2.57, 4.21), "decays": (0.050, 0.028, 0.016), "amps": (1.0, 0.55, 0.3),
                 "base_hz": 520.0, "noise": 0.35, "description": "a sharp wooden knock"},
        "metal": {"ratios": (1.0, 2.76, 5.40, 8.93), "decays": (0.12, 0.09, 0.06, 0.04),
                  "amps": (1.0, 0.7, 0.45, 0.3), "base_hz": 880.0, "noise": 0.2,
                  "description": "a bright metallic clang"},
        "rubber": {"ratios": (1.0, 1.63), "decays": (0.022, 0.012), "amps": (1.0, 0.35),
                   "base_hz": 170.0, "noise": 0.25, "description": "a dull rubbery thud"},
    }
)

# Vowel formants (F1, F2, F3) in Hz, adult-average values (Peterson & Barney, 1952).
VOWELS: MappingProxyType[str, tuple[float, float, float]] = MappingProxyType(
    {"a": (730.0, 1090.0, 2440.0), "e": (530.0, 1840.0, 2480.0), "i": (300.0, 2250.0, 3000.0),
     "o": (570.0, 840.0, 2410.0), "u": (320.0, 900.0, 2300.0)})
FORMANT_BANDWIDTHS = (90.0, 110.0, 170.0)

SPEED_OF_SOUND = 343.0  # m/s, air at 20 °C


def add_at(buffer: np.ndarray, sound: np.ndarray, time_s: float, sample_rate: int) -> int:
    """Mix ``sound`` into ``buffer`` starting exactly at sample ``round(time_s * sample_rate)``; clipped at
    the buffer's end. Returns the start sample."""
    start = int(np.floor(time_s * sample_rate + 0.5))
    if start >= len(buffer) or start + len(sound) <= 0:
        return start
    lo = max(0, -start)
    hi = min(len(sound), len(buffer) - start)
    buffer[start + lo : start + hi] += sound[lo:hi]
    return start


def _attack_ramp(n: int, sample_rate: int, attack_s: float = 0.0003) -> np.ndarray:
    """[n] gain that rises over ``attack_s`` (a few samples) to avoid a digital step, then stays at 1."""
    ramp = np.ones(n)
    k = max(1, int(round(attack_s * sample_rate)))
    ramp[:k] = np.linspace(1.0 / k, 1.0, k)
    return ramp


def modal_impact(
    material: str,
    pitch_scale: float,
    amplitude: float,
    sample_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """A struck-object sound: decaying partials of ``MATERIALS[material]`` plus a short noise burst.

    The partials start in cosine phase, so the energy is there from the first sample (a sharp onset).
    ``pitch_scale`` multiplies the material's base frequency (small balls > 1, large balls < 1).
    Returns float64 [n] lasting five of the longest decay times.
    """
    recipe = MATERIALS[material]
    n = int(5 * max(recipe["decays"]) * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    f0 = recipe["base_hz"] * pitch_scale * (1.0 + 0.03 * rng.standard_normal())
    nyquist = sample_rate / 2
    for ratio, decay, amp in zip(recipe["ratios"], recipe["decays"], recipe["amps"]):
        freq = f0 * ratio * (1.0 + 0.01 * rng.standard_normal())
        if freq >= 0.9 * nyquist:
            continue
        out += amp * np.cos(2 * np.pi * freq * t + 0.3 * rng.standard_normal()) * np.exp(-t / decay)
    burst_n = int(0.004 * sample_rate)
    burst = rng.standard_normal(burst_n) * np.exp(-np.arange(burst_n) / (0.0008 * sample_rate))
    out[:burst_n] += recipe["noise"] * burst
    out *= _attack_ramp(n, sample_rate)
    return amplitude * out / np.max(np.abs(out))


def click(freq_hz: float, amplitude: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A woodblock-like tick: a resonance at ``freq_hz`` decaying in ~8 ms over a 2 ms noise burst."""
    n = int(0.05 * sample_rate)
    t = np.arange(n) / sample_rate
    tone = np.cos(2 * np.pi * freq_hz * t) * np.exp(-t / 0.008)
    tone += 0.5 * np.cos(2 * np.pi * 2.3 * freq_hz * t) * np.exp(-t / 0.004)
    burst_n = int(0.002 * sample_rate)
    tone[:burst_n] += 0.4 * rng.standard_normal(burst_n) * np.linspace(1.0, 0.0, burst_n)
    tone *= _attack_ramp(n, sample_rate)
    return amplitude * tone / np.max(np.abs(tone))


def resonator(x: np.ndarray, freq: float, bandwidth: float, sample_rate: int) -> np.ndarray:
    """Two-pole resonator (unity gain at ``freq``), the classic formant filter."""
    r = np.exp(-np.pi * bandwidth / sample_rate)
    theta = 2 * np.pi * freq / sample_rate
    a = [1.0, -2 * r * np.cos(theta), r * r]
    gain = abs(np.polyval(a[::-1], np.exp(-1j * theta)))  # |A(e^{jθ})| so the peak has gain 1
    return signal.lfilter([gain], a, x)


def glottal_source(f0: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Voiced excitation for an f0 contour (Hz, [n]): one impulse per glottal period, with 1 % jitter,
    shaped by a two-pole low-pass (the -12 dB/octave tilt of the glottal flow)."""
    jitter = 1.0 + 0.01 * rng.standard_normal(len(f0))
    phase = np.cumsum(f0 * jitter) / sample_rate
    pulses = np.zeros(len(f0))
    pulses[1:][np.diff(np.floor(phase)) > 0] = 1.0
    tilt = signal.lfilter([1.0], [1.0, -1.9, 0.9025], pulses)  # double pole at 0.95
    return tilt - tilt.mean()


def vowel(source: np.ndarray, formants: tuple[float, ...], sample_rate: int) -> np.ndarray:
    """Parallel formant filter bank (F1 strongest) followed by lip radiation (first difference)."""
    out = np.zeros_like(source)
    for freq, bw, gain in zip(formants, FORMANT_BANDWIDTHS, (1.0, 0.6, 0.3)):
        if freq < 0.45 * sample_rate:
            out += gain * resonator(source, freq, bw, sample_rate)
    return np.diff(out, prepend=0.0)


def band_noise(n: int, low_hz: float, high_hz: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """White noise band-passed to [low_hz, high_hz] (2nd-order Butterworth)."""
    nyquist = sample_rate / 2
    high = min(high_hz, 0.95 * nyquist)
    sos = signal.butter(2, [low_hz / nyquist, high / nyquist], btype="band", output="sos")
    return signal.sosfilt(sos, rng.standard_normal(n))


def room_tone(n: int, level: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Faint low-passed noise with RMS ``level`` (what a quiet room sounds like)."""
    if level <= 0:
        return np.zeros(n)
    sos = signal.butter(1, 2000.0 / (sample_rate / 2), output="sos")
    noise = signal.sosfilt(sos, rng.standard_normal(n))
    return level * noise / (np.std(noise) + 1e-12)


def finish(audio: np.ndarray, peak: float = 0.95) -> np.ndarray:
    """float32 in [-1, 1]: scaled down only if the mix would exceed ``peak`` (loudness stays meaningful)."""
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    if top > peak:
        audio = audio * (peak / top)
    return audio.astype(np.float32)
