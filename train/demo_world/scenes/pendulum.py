"""Scene 3: a pendulum swinging at a steady tempo, ticking at each extreme of its swing.

The angle is ``theta(t) = side0 * A * cos(pi * (t - t0) / beat)``: it reaches an extreme every beat
(``beat = 60 / bpm`` seconds), alternately left and right, and each extreme is a tick (higher on the left,
lower on the right) whose first sample lands on the extreme's exact time.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from .. import draw, synth
from ..world import Clip, Event, WorldConfig, article, frame_of, make_rng, pick

SCENE = "pendulum"

BOB = MappingProxyType(
    {"brass": (196, 156, 58), "silver": (196, 198, 204), "copper": (184, 104, 60), "red": (200, 44, 44),
     "blue": (44, 84, 200), "black": (34, 34, 38)}
)
WALL = MappingProxyType(
    {"cream": ((206, 196, 172), (178, 168, 146)), "grey": ((150, 152, 158), (112, 114, 120)),
     "dark green": ((62, 84, 70), (40, 58, 48)), "navy": ((48, 56, 88), (30, 36, 60))}
)
BPM_RANGE = (60.0, 150.0)
AMPLITUDE_DEG = (18.0, 32.0)
PIVOT_Y = 0.1  # / height
ROD = 0.62  # rod length / height
BOB_RADIUS = 0.085  # / height
TICK_HZ = (1500.0, 2600.0)


def pendulum(
    seed: int | np.random.Generator,
    config: WorldConfig | None = None,
    *,
    bpm: float | None = None,
) -> Clip:
    """Generate a pendulum clip; ``bpm`` (ticks per minute, one per extreme) fixes the tempo."""
    cfg = config or WorldConfig()
    rng, seed_int = make_rng(seed)
    bpm = float(bpm) if bpm is not None else float(rng.integers(int(BPM_RANGE[0]), int(BPM_RANGE[1]) + 1))
    if not BPM_RANGE[0] <= bpm <= BPM_RANGE[1]:
        raise ValueError(f"bpm={bpm!r} is invalid: expected {BPM_RANGE[0]:g}..{BPM_RANGE[1]:g}")
    bob_name = pick(rng, tuple(BOB))
    wall = pick(rng, tuple(WALL))
    amplitude = math.radians(rng.uniform(*AMPLITUDE_DEG))
    side0 = pick(rng, (-1, 1))
    beat = 60.0 / bpm

    # 1. Phase: the first extreme t0 lies within the first beat, and extremes repeat every beat; none lies
    #    within a frame and a half of the clip's start or two frames of its end (each tick is visible as a
    #    turning point with frames on both sides).
    T, fps = cfg.num_frames, cfg.fps
    for _ in range(100):
        t0 = rng.uniform(1.5 / fps, beat)
        extremes = np.arange(t0, cfg.duration_s, beat)
        if not np.any(extremes > (T - 2.0) / fps):
            break
    else:  # pragma: no cover - a beat shorter than 2.5 frames cannot satisfy this; tempo range prevents it
        raise RuntimeError("pendulum: no phase keeps the ticks away from the clip's ends")

    def angle(t: np.ndarray) -> np.ndarray:
        return side0 * amplitude * np.cos(np.pi * (t - t0) / beat)

    # 2. Video.
    H, W = cfg.height, cfg.width
    px, py, rod, rb = W / 2, PIVOT_Y * H, ROD * H, BOB_RADIUS * H
    top, bottom = WALL[wall]
    background = draw.vertical_gradient(H, W, top, bottom)
    draw.rect(background, 0, 0, W, py + 0.03 * H, (96, 66, 40))  # wooden beam holding the pivot
    theta = angle(cfg.frame_times())
    bob_x, bob_y = px + rod * np.sin(theta), py + rod * np.cos(theta)
    video = np.empty((T, H, W, 3), np.uint8)
    colour = BOB[bob_name]
    for f in range(T):
        img = background.copy()
        draw.line(img, px, py, bob_x[f], bob_y[f], (60, 60, 64))
        draw.circle(img, px, py, max(1.0, 0.03 * H), (40, 40, 40))
        draw.circle(img, bob_x[f], bob_y[f], rb, colour)
        draw.circle(img, bob_x[f] - 0.3 * rb, bob_y[f] - 0.3 * rb, 0.3 * rb, draw.shade(colour, 1.35))
        video[f] = img

    # 3. Audio: a tick at every extreme, alternating high (left) and low (right).
    sr = cfg.sample_rate
    tick_hz = rng.uniform(*TICK_HZ)
    audio = synth.room_tone(cfg.num_samples, cfg.audio_noise_level, sr, rng)
    events = []
    for k, t in enumerate(extremes):
        side = "left" if side0 * (-1) ** k < 0 else "right"
        freq = tick_hz if side == "left" else 0.8 * tick_hz
        synth.add_at(audio, synth.click(freq, 0.5, sr, rng), t, sr)
        events.append(Event(float(t), frame_of(t, fps), "tick", {"side": side, "beat": k}))

    params = {"bpm": bpm, "bob": bob_name, "wall": wall, "amplitude_deg": math.degrees(amplitude),
              "first_tick_s": t0, "start_side": "left" if side0 < 0 else "right", "tick_hz": tick_hz}
    return Clip(
        video=video, audio=synth.finish(audio), fps=fps, sample_rate=sr,
        caption=_caption(rng, bob_name, bpm), scene=SCENE, params=params, events=events,
        tracks={"angle_deg": np.degrees(theta).tolist(), "bob_x": bob_x.tolist(), "bob_y": bob_y.tolist()},
        seed=seed_int,
    )


def _caption(rng: np.random.Generator, bob: str, bpm: float) -> str:
    name = f"{bob} pendulum"
    tempo = f"{bpm:.0f} beats per minute"
    templates = (
        f"{article(name).capitalize()} {name} swings from side to side, ticking at each end of its swing at {tempo}.",
        f"A metronome-like {name} swings left and right at {tempo}, a crisp tick at every turn.",
        f"{article(name).capitalize()} {name} hangs from a wooden beam and swings steadily, clicking at both extremes, "
        f"{tempo}.",
    )
    return pick(rng, templates)
