"""Scene 2: a cartoon face babbling speech-like syllables; its mouth opening follows the syllable envelope.

The audio is voiced babble: a glottal pulse train (low or high voice) through vowel formant resonators,
shaped by a syllable envelope ``env(t)`` in [0, 1] (3-6 syllables per second in phrases separated by
pauses). The mouth's opening on frame ``f`` is ``env(f / fps)`` exactly, so picture and sound share one
ground-truth curve (``tracks["mouth_open"]``).
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from .. import draw, synth
from ..world import Clip, Event, WorldConfig, frame_of, make_rng, pick

SCENE = "talking_face"

VOICE_F0 = MappingProxyType({"low": (95.0, 135.0), "high": (190.0, 260.0)})  # Hz
VOICE_WORD = MappingProxyType({"low": "a low, deep voice", "high": "a high-pitched voice"})
SKIN = MappingProxyType(
    {"pale": (240, 206, 180), "tan": (214, 168, 124), "brown": (160, 110, 74), "dark brown": (104, 68, 46)}
)
HAIR = MappingProxyType(
    {"black": (30, 26, 24), "brown": (92, 58, 34), "blond": (222, 190, 110), "red": (170, 64, 30),
     "grey": (150, 150, 152)}
)
EYES = MappingProxyType({"brown": (86, 52, 30), "blue": (50, 110, 190), "green": (60, 130, 70)})
BACKDROP = MappingProxyType(
    {"pale blue": (168, 192, 216), "mint green": (176, 212, 186), "lavender": (196, 184, 220),
     "light grey": (200, 200, 204)}
)
SHIRT = MappingProxyType(
    {"red": (190, 44, 44), "blue": (40, 80, 180), "green": (50, 140, 70), "yellow": (220, 190, 50),
     "white": (235, 235, 235), "black": (36, 36, 40)}
)

MOUTH_COLOUR = (70, 18, 28)
HEAD_RADIUS = 0.34  # / min(W, H)
MOUTH_CLOSED_BELOW = 0.04  # envelope below this draws a closed mouth (a line)
SYLLABLE_RATE_HZ = (3.0, 6.0)
PAUSE_S = (0.18, 0.45)


def talking_face(
    seed: int | np.random.Generator,
    config: WorldConfig | None = None,
    *,
    voice: str | None = None,
    syllable_rate: float | None = None,
) -> Clip:
    """Generate a talking-face clip.

    Args:
        seed: int seed (or a Generator).
        config: resolution and clock (default ``WorldConfig()``).
        voice: ``"low"`` or ``"high"`` (fixes the pitch range instead of sampling it).
        syllable_rate: syllables per second, within ``SYLLABLE_RATE_HZ``.
    """
    cfg = config or WorldConfig()
    rng, seed_int = make_rng(seed)
    voice = voice if voice is not None else pick(rng, tuple(VOICE_F0))
    if voice not in VOICE_F0:
        raise ValueError(f"voice={voice!r} is invalid: expected one of {list(VOICE_F0)}")
    rate = syllable_rate if syllable_rate is not None else rng.uniform(*SYLLABLE_RATE_HZ)
    if not SYLLABLE_RATE_HZ[0] <= rate <= SYLLABLE_RATE_HZ[1]:
        raise ValueError(f"syllable_rate={rate!r} is invalid: expected {SYLLABLE_RATE_HZ[0]}..{SYLLABLE_RATE_HZ[1]}")
    look = {
        "skin": pick(rng, tuple(SKIN)), "hair": pick(rng, tuple(HAIR)), "eyes": pick(rng, tuple(EYES)),
        "backdrop": pick(rng, tuple(BACKDROP)), "shirt": pick(rng, tuple(SHIRT)),
    }
    f0_mean = rng.uniform(*VOICE_F0[voice])

    # 1. Timeline: syllables (onset, duration, vowel, peak) in phrases separated by pauses.
    syllables = _syllables(rng, cfg.duration_s, rate)

    # 2. Envelope on the audio clock; the mouth samples it at frame times.
    sr, n = cfg.sample_rate, cfg.num_samples
    t_audio = np.arange(n) / sr
    env = np.zeros(n)
    for s in syllables:
        env = np.maximum(env, _syllable_envelope(t_audio, s))
    mouth = np.array([_envelope_at(syllables, t) for t in cfg.frame_times()])

    # 3. Audio: glottal source -> per-syllable vowel filter -> envelope, plus a consonant burst per onset.
    f0 = f0_mean * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.4, 0.9) * t_audio + rng.uniform(0, 6)))
    f0 *= 1.0 - 0.06 * t_audio / cfg.duration_s  # declination over the utterance
    source = synth.glottal_source(f0, sr, rng)
    voiced = np.zeros(n)
    for s in syllables:
        lo, hi = int(s["onset"] * sr), min(n, int(np.ceil((s["onset"] + s["duration"]) * sr)) + 1)
        if lo >= n:
            continue
        formants = tuple(f * (1.1 if voice == "high" else 1.0) for f in synth.VOWELS[s["vowel"]])
        seg = synth.vowel(source[max(0, lo - 400):hi], formants, sr)[min(lo, 400):]  # 25 ms of filter warm-up
        voiced[lo:hi] = seg / (np.std(seg) + 1e-9)
    audio = 0.22 * env * voiced
    for s in syllables:
        if s["consonant"]:
            burst_n = int(0.025 * sr)
            burst = synth.band_noise(burst_n, 2500.0, 6000.0, sr, rng) * np.hanning(burst_n)
            synth.add_at(audio, 0.05 * s["peak"] * burst / (np.std(burst) + 1e-9), s["onset"], sr)
    audio += synth.room_tone(n, cfg.audio_noise_level, sr, rng)

    # 4. Video: static face, slight sway, blinks; the mouth opens by the envelope.
    blinks = set(_blink_frames(rng, cfg))
    sway = rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * rng.uniform(0.3, 0.6) * cfg.frame_times() + rng.uniform(0, 6))
    video = np.empty((cfg.num_frames, cfg.height, cfg.width, 3), np.uint8)
    background = _background(cfg, look)
    for f in range(cfg.num_frames):
        img = background.copy()
        _draw_face(img, cfg, look, sway[f], mouth[f], f in blinks)
        video[f] = img

    events = [
        Event(s["onset"], frame_of(s["onset"], cfg.fps), "syllable",
              {"vowel": s["vowel"], "duration_s": round(s["duration"], 4), "peak": round(s["peak"], 4)})
        for s in syllables
    ]
    events += [Event(f / cfg.fps, f, "blink", {}) for f in sorted(blinks)]
    events.sort(key=lambda e: (e.time_s, e.kind))
    params = {
        "voice": voice, "f0_hz": f0_mean, "syllable_rate_hz": rate, "num_syllables": len(syllables),
        **look,
    }
    return Clip(
        video=video, audio=synth.finish(audio), fps=cfg.fps, sample_rate=sr,
        caption=_caption(rng, voice, rate, look), scene=SCENE, params=params, events=events,
        tracks={"mouth_open": [float(m) for m in mouth], "head_x": [cfg.width / 2 + float(s) for s in sway]},
        seed=seed_int,
    )


def _syllables(rng: np.random.Generator, duration: float, rate: float) -> list[dict]:
    out = []
    t = rng.uniform(0.0, 0.3)
    while True:
        for _ in range(int(rng.integers(2, 7))):  # one phrase
            dur = rng.uniform(0.8, 1.2) / rate
            if t + 0.5 * dur > duration:
                return out
            out.append({
                "onset": float(t), "duration": float(0.9 * dur), "vowel": pick(rng, tuple(synth.VOWELS)),
                "peak": float(rng.uniform(0.6, 1.0)), "consonant": bool(rng.random() < 0.5),
            })
            t += dur
        t += rng.uniform(*PAUSE_S)


def _syllable_envelope(t: np.ndarray | float, s: dict) -> np.ndarray:
    """Fast rise, slower fall: sin(pi * u^0.7)^2 over the syllable, scaled by its peak; 0 outside."""
    u = (np.asarray(t, dtype=np.float64) - s["onset"]) / s["duration"]
    inside = (u > 0) & (u < 1)
    return np.where(inside, s["peak"] * np.sin(np.pi * np.clip(u, 0, 1) ** 0.7) ** 2, 0.0)


def _envelope_at(syllables: list[dict], t: float) -> float:
    return float(max([float(_syllable_envelope(t, s)) for s in syllables], default=0.0))


def _blink_frames(rng: np.random.Generator, cfg: WorldConfig) -> list[int]:
    count = int(rng.integers(0, 3))
    return [int(f) for f in rng.choice(np.arange(1, cfg.num_frames), size=count, replace=False)]


def _geometry(cfg: WorldConfig) -> tuple[float, float, float]:
    r = HEAD_RADIUS * min(cfg.width, cfg.height)
    return cfg.width / 2, cfg.height * 0.46, r


def _background(cfg: WorldConfig, look: dict) -> np.ndarray:
    bd = BACKDROP[look["backdrop"]]
    img = draw.vertical_gradient(cfg.height, cfg.width, draw.shade(bd, 1.1), draw.shade(bd, 0.9))
    cx, cy, r = _geometry(cfg)
    shirt = SHIRT[look["shirt"]]
    draw.ellipse(img, cx, cfg.height * 1.05, 1.25 * r, 0.45 * cfg.height, shirt)  # shoulders
    return img


def _draw_face(img, cfg: WorldConfig, look: dict, sway: float, opening: float, blink: bool) -> None:
    cx, cy, r = _geometry(cfg)
    cx += sway
    skin = SKIN[look["skin"]]
    draw.ellipse(img, cx, cy + 0.95 * r, 0.35 * r, 0.3 * r, draw.shade(skin, 0.85))  # neck
    draw.ellipse(img, cx - r, cy + 0.05 * r, 0.16 * r, 0.22 * r, draw.shade(skin, 0.92))  # ears
    draw.ellipse(img, cx + r, cy + 0.05 * r, 0.16 * r, 0.22 * r, draw.shade(skin, 0.92))
    draw.ellipse(img, cx, cy, 0.95 * r, r, skin)  # head
    draw.ellipse(img, cx, cy - 0.45 * r, 0.98 * r, 0.6 * r, HAIR[look["hair"]], start=180, end=360)  # hair
    # eyes
    for side in (-1, 1):
        ex, ey = cx + side * 0.36 * r, cy - 0.12 * r
        if blink:
            draw.line(img, ex - 0.16 * r, ey, ex + 0.16 * r, ey, draw.shade(skin, 0.45))
        else:
            draw.ellipse(img, ex, ey, 0.17 * r, 0.13 * r, (250, 250, 250))
            draw.circle(img, ex, ey, 0.09 * r, EYES[look["eyes"]])
            draw.circle(img, ex, ey, 0.045 * r, (15, 15, 15))
    # nose
    draw.ellipse(img, cx, cy + 0.15 * r, 0.08 * r, 0.06 * r, draw.shade(skin, 0.82))
    # mouth: the upper lip stays put and the jaw drops; opening in [0, 1] -> height of a dark oval
    mx, top, mw = cx, cy + 0.37 * r, 0.32 * r
    if opening < MOUTH_CLOSED_BELOW:
        draw.line(img, mx - mw, top + 0.03 * r, mx + mw, top + 0.03 * r, MOUTH_COLOUR)
    else:
        half_height = 0.04 * r + 0.18 * r * opening
        draw.ellipse(img, mx, top + half_height, mw * (1.0 - 0.15 * opening), half_height, MOUTH_COLOUR)


def _caption(rng: np.random.Generator, voice: str, rate: float, look: dict) -> str:
    pace = "quickly" if rate > 4.5 else "slowly"
    who = f"a cartoon face with {look['skin']} skin and {look['hair']} hair"
    templates = (
        f"{who[0].upper()}{who[1:]} babbles {pace} in {VOICE_WORD[voice]}, its mouth opening on every syllable, "
        f"with short pauses between phrases.",
        f"In front of a {look['backdrop']} backdrop, {who} talks {pace} in {VOICE_WORD[voice]}; the mouth opens "
        f"and closes with each syllable.",
        f"{who[0].upper()}{who[1:]} wearing a {look['shirt']} shirt speaks nonsense syllables in "
        f"{VOICE_WORD[voice]}, lips moving in time with the sound.",
    )
    return pick(rng, templates)
