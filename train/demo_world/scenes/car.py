"""Scene 4: a car passing the camera along a road, its engine heard with distance loss and Doppler shift.

The car moves at constant speed ``s`` along a straight road ``d`` metres in front of the camera and
microphone, passing closest at ``t_c``: its position is ``x(t) = direction * s * (t - t_c)`` metres. The
sound heard at time ``t`` left the car at the retarded time ``t_e``, ``t = t_e + r(t_e) / c`` with
``r = sqrt(x^2 + d^2)``; the engine's harmonic buzz is evaluated at ``t_e`` (which produces the Doppler
shift exactly, no approximation) and scaled by ``d / r`` (spherical spreading).
"""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from .. import draw, synth
from ..world import PALETTE, Clip, Event, WorldConfig, article, frame_of, make_rng, pick

SCENE = "passing_car"

CAR_COLOURS = MappingProxyType({**PALETTE, "silver": (176, 180, 186), "black": (30, 30, 34)})
SKY = MappingProxyType(
    {"blue": ((92, 150, 220), (176, 208, 236)), "overcast": ((150, 156, 166), (196, 200, 206)),
     "evening": ((70, 70, 130), (236, 150, 110))}
)
SPEED_MS = (7.0, 15.0)
DISTANCE_M = (2.5, 5.0)
RPM = (1500.0, 3600.0)
CYLINDERS = 4
CAR_LENGTH_M = 4.3
CAR_LENGTH = 0.42  # on-screen car length / frame width
GROUND_Y = 0.84  # wheels touch the road here (/ height)


def passing_car(
    seed: int | np.random.Generator,
    config: WorldConfig | None = None,
    *,
    direction: str | None = None,
    colour: str | None = None,
) -> Clip:
    """Generate a passing-car clip; ``direction`` is ``"left_to_right"`` or ``"right_to_left"``."""
    cfg = config or WorldConfig()
    rng, seed_int = make_rng(seed)
    direction = direction if direction is not None else pick(rng, ("left_to_right", "right_to_left"))
    if direction not in ("left_to_right", "right_to_left"):
        raise ValueError(f"direction={direction!r} is invalid: expected 'left_to_right' or 'right_to_left'")
    colour = colour if colour is not None else pick(rng, tuple(CAR_COLOURS))
    if colour not in CAR_COLOURS:
        raise ValueError(f"colour={colour!r} is invalid: expected one of {list(CAR_COLOURS)}")
    sign = 1.0 if direction == "left_to_right" else -1.0
    speed = rng.uniform(*SPEED_MS)
    dist = rng.uniform(*DISTANCE_M)
    rpm = rng.uniform(*RPM)
    t_c = rng.uniform(0.4, 0.6) * cfg.duration_s
    sky = pick(rng, tuple(SKY))

    H, W = cfg.height, cfg.width
    car_px = CAR_LENGTH * W
    m_per_px = CAR_LENGTH_M / car_px

    def x_m(t):
        return sign * speed * (np.asarray(t, dtype=np.float64) - t_c)

    # 1. Video: static landscape, the car translated per frame with turning wheels.
    background = _background(cfg, sky, rng)
    times = cfg.frame_times()
    car_x = W / 2 + x_m(times) / m_per_px
    video = np.empty((cfg.num_frames, H, W, 3), np.uint8)
    for f in range(cfg.num_frames):
        img = background.copy()
        wheel_angle = x_m(times[f]) / (0.1 * CAR_LENGTH_M)  # rolling without slip
        _draw_car(img, car_x[f], GROUND_Y * H, car_px, sign, CAR_COLOURS[colour], wheel_angle)
        video[f] = img

    # 2. Audio at the retarded time: harmonic engine buzz + tyre noise, 1/r spreading, Doppler by t_e.
    sr, n = cfg.sample_rate, cfg.num_samples
    t = np.arange(n) / sr
    t_e = t.copy()
    for _ in range(4):  # fixed point of t_e = t - r(t_e)/c; converges fast since s << c
        t_e = t - np.hypot(x_m(t_e), dist) / synth.SPEED_OF_SOUND
    gain = dist / np.hypot(x_m(t_e), dist)
    f_fire = rpm / 60.0 * CYLINDERS / 2.0
    wobble_hz = rng.uniform(0.3, 1.0)
    phase = 2 * np.pi * f_fire * (t_e + 0.015 / (2 * np.pi * wobble_hz) * np.sin(2 * np.pi * wobble_hz * t_e))
    engine = np.zeros(n)
    for k in range(1, int(min(40, 0.45 * sr / f_fire)) + 1):
        engine += (k ** -0.8) * (1.0 + 0.6 * rng.random()) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    engine /= np.std(engine) + 1e-9
    tyres = synth.band_noise(n, 300.0, 2500.0, sr, rng)
    tyres /= np.std(tyres) + 1e-9
    audio = 0.16 * gain * (engine + 0.25 * (speed / SPEED_MS[1]) * tyres)
    audio += synth.room_tone(n, cfg.audio_noise_level, sr, rng)

    # 3. Events (video time): front enters the frame, closest approach, rear leaves.
    half_span = (W / 2 + car_px / 2) * m_per_px / speed  # seconds from frame centre to fully off-screen
    events = []
    for kind, t_ev in (("enter", t_c - half_span), ("closest", t_c), ("exit", t_c + half_span)):
        if 0.0 <= t_ev < cfg.duration_s:
            attrs = {"audio_time_s": round(t_ev + math.hypot(x_m(t_ev), dist) / synth.SPEED_OF_SOUND, 6)}
            events.append(Event(float(t_ev), frame_of(t_ev, cfg.fps), kind, attrs))
    params = {
        "colour": colour, "direction": direction, "speed_m_s": speed, "distance_m": dist, "rpm": rpm,
        "engine_hz": f_fire, "closest_time_s": t_c, "sky": sky,
        "doppler_ratio": (synth.SPEED_OF_SOUND / (synth.SPEED_OF_SOUND - speed)) /
                         (synth.SPEED_OF_SOUND / (synth.SPEED_OF_SOUND + speed)),
    }
    return Clip(
        video=video, audio=synth.finish(audio), fps=cfg.fps, sample_rate=sr,
        caption=_caption(rng, colour, direction, speed, rpm), scene=SCENE, params=params, events=events,
        tracks={"car_x": car_x.tolist()}, seed=seed_int,
    )


def _background(cfg: WorldConfig, sky: str, rng: np.random.Generator) -> np.ndarray:
    H, W = cfg.height, cfg.width
    top, horizon = SKY[sky]
    img = draw.vertical_gradient(H, W, top, horizon)
    # distant hills, grass verge, road with a dashed centre line, near verge
    hills = [(x, H * (0.5 - 0.06 * math.sin(x / W * 6.3 + rng.uniform(0, 6)))) for x in np.linspace(0, W, 9)]
    draw.polygon(img, hills + [(W, 0.66 * H), (0, 0.66 * H)], (84, 120, 78))
    draw.rect(img, 0, 0.6 * H, W, 0.66 * H, (98, 140, 84))
    draw.rect(img, 0, 0.66 * H, W, 0.92 * H, (86, 88, 92))
    dash = W / 6
    for x in np.arange(rng.uniform(0, dash), W, dash):
        draw.rect(img, x, 0.785 * H, x + 0.45 * dash, 0.8 * H, (220, 220, 210))
    draw.rect(img, 0, 0.92 * H, W, H, (92, 134, 80))
    return img


def _draw_car(img, x: float, ground: float, length: float, sign: float, colour, wheel_angle: float) -> None:
    L = length

    def px(u: float) -> float:  # u in car lengths along the travel direction (front = +0.5)
        return x + sign * u * L

    body_top, body_bottom = ground - 0.3 * L, ground - 0.09 * L
    draw.polygon(img, [(px(-0.5), body_bottom), (px(0.5), body_bottom), (px(0.5), body_top + 0.04 * L),
                       (px(0.46), body_top), (px(-0.48), body_top)], colour)
    draw.polygon(img, [(px(-0.3), body_top), (px(0.22), body_top), (px(0.1), body_top - 0.17 * L),
                       (px(-0.2), body_top - 0.17 * L)], colour)  # cabin
    draw.polygon(img, [(px(-0.26), body_top - 0.01 * L), (px(0.18), body_top - 0.01 * L),
                       (px(0.08), body_top - 0.14 * L), (px(-0.17), body_top - 0.14 * L)], (150, 180, 200))
    draw.circle(img, px(0.47), body_top + 0.07 * L, 0.03 * L, (250, 230, 120))  # headlight
    for u in (-0.3, 0.3):
        cx, cy, r = px(u), ground - 0.1 * L, 0.1 * L
        draw.circle(img, cx, cy, r, (24, 24, 26))
        draw.circle(img, cx, cy, 0.5 * r, (150, 150, 155))
        a = sign * wheel_angle
        draw.line(img, cx, cy, cx + 0.5 * r * math.cos(a), cy + 0.5 * r * math.sin(a), (60, 60, 64))


def _caption(rng: np.random.Generator, colour: str, direction: str, speed: float, rpm: float) -> str:
    name = f"{colour} car"
    way = "from left to right" if direction == "left_to_right" else "from right to left"
    pace = "slowly" if speed < 10.0 else "quickly"
    engine = "a low engine rumble" if rpm < 2400 else "a higher-pitched engine buzz"
    templates = (
        f"{article(name).capitalize()} {name} drives {pace} {way} along a country road; {engine} grows louder as it "
        f"approaches and fades as it leaves, the pitch dropping as it passes.",
        f"{article(name).capitalize()} {name} passes the camera {way}, {engine} rising and falling with a Doppler "
        f"drop in pitch.",
    )
    return pick(rng, templates)
