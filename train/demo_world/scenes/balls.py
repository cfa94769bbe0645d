"""Scene 1: one or two balls bouncing on a textured floor, seen from the side, with an impact sound per contact.

Physics is exact and analytic: a ball of bottom height ``z(t)`` falls under gravity ``g``, hits the floor
(``z = 0``) with speed ``v`` and rebounds with ``e * v`` (restitution ``e``); when the next hop would last less
than ``MIN_HOP_S`` the ball comes to rest (it keeps rolling sideways). Each contact at time ``t`` produces

- a modal impact sound (timbre by floor material, pitch by ball size, loudness by impact speed) whose first
  sample is ``round(t * sample_rate)``;
- a contact frame ``round(t * fps)`` that shows the ball squashed against the floor (the camera "catches" the
  contact, at most half a frame from the exact instant).
"""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np

from .. import draw, synth
from ..world import COLOUR_NAMES, PALETTE, Clip, Event, WorldConfig, article, frame_of, make_rng, pick, times_word

SCENE = "bouncing_balls"

RADIUS = MappingProxyType({"small": 0.075, "large": 0.12})  # radius / frame height
PITCH = MappingProxyType({"small": 1.45, "large": 0.8})  # multiplies the material's base frequency
PITCH_WORD = MappingProxyType({"small": "high", "large": "deep"})
FLOOR_COLOUR = MappingProxyType({"wood": (112, 94, 76), "metal": (118, 122, 128), "rubber": (46, 46, 50)})
FLOOR_WORD = MappingProxyType({"wood": "wooden", "metal": "metal", "rubber": "rubber"})
RESTITUTION = MappingProxyType({"wood": (0.6, 0.82), "metal": (0.65, 0.88), "rubber": (0.45, 0.7)})
SOUND_WORD = MappingProxyType({"wood": "knock", "metal": "metallic clang", "rubber": "thud"})
SOUND_ADJ = MappingProxyType({"wood": "sharp", "metal": "bright", "rubber": "dull"})
# Wall gradients (top, bottom): dark and desaturated so that palette colours stand out for the detectors.
WALLS = MappingProxyType(
    {"grey": ((58, 62, 70), (92, 96, 104)), "slate blue": ((44, 52, 72), (72, 82, 104)),
     "dark green": ((40, 58, 48), (66, 88, 74)), "brown": ((70, 58, 52), (100, 86, 78))})

FLOOR_LEVEL = 0.8  # floor line at this fraction of the frame height
GRAVITY = 7.0  # px/s^2 per pixel of frame height (a frame ~1.4 m tall under 9.8 m/s^2)
MIN_HOP_S = 0.3  # a rebound shorter than this ends in rest (keeps every contact visible at 12 fps)
MIN_EVENT_GAP_S = 0.15  # two balls never hit within this of each other (separable onsets)
EDGE_FRAMES = 2  # contacts are shown no earlier than frame 2 (the fall before them is visible)
MAX_TRIES = 200


def bouncing_balls(
    seed: int | np.random.Generator,
    config: WorldConfig | None = None,
    *,
    num_balls: int | None = None,
    colours: list[str] | None = None,
    sizes: list[str] | None = None,
    material: str | None = None,
    min_hop_s: float = MIN_HOP_S,
) -> Clip:
    """Generate a bouncing-ball clip. Keyword arguments fix a parameter instead of sampling it.

    Args:
        seed: int seed (or a Generator) — the clip is a pure function of it and ``config``.
        config: resolution and clock (default ``WorldConfig()``).
        num_balls: 1 or 2.
        colours: one palette colour name per ball (distinct).
        sizes: ``"small"`` or ``"large"`` per ball.
        material: floor material, one of ``wood``, ``metal``, ``rubber``.
        min_hop_s: a rebound shorter than this ends in rest (the world's timing: longer hops, fewer and sparser
            contacts; ``benchmarks/vae_contacts.py`` measures what the video VAE keeps of them).
    """
    if not min_hop_s > 0:
        raise ValueError(f"min_hop_s={min_hop_s!r} is invalid: expected seconds > 0")
    cfg = config or WorldConfig()
    rng, seed_int = make_rng(seed)
    n = num_balls if num_balls is not None else int(rng.choice([1, 2], p=[0.65, 0.35]))
    if n not in (1, 2):
        raise ValueError(f"num_balls={n!r} is invalid: expected 1 or 2")
    colours = list(colours) if colours is not None else [str(c) for c in rng.choice(COLOUR_NAMES, n, replace=False)]
    sizes = list(sizes) if sizes is not None else [pick(rng, tuple(RADIUS)) for _ in range(n)]
    material = material if material is not None else pick(rng, tuple(FLOOR_COLOUR))
    _check(colours, sizes, material, n)
    wall = pick(rng, tuple(WALLS))

    # 1. Physics: sample each ball until every contact is visible and the balls' contacts are separable.
    H, W = cfg.height, cfg.width
    floor_y = round(FLOOR_LEVEL * H)
    g = GRAVITY * H
    balls = _sample_balls(rng, cfg, colours, sizes, material, floor_y, g, min_hop_s)

    # 2. Video: background once, then balls (squashed on their contact frames) per frame.
    background = _background(rng, cfg, wall, material, floor_y)
    times = cfg.frame_times()
    video = np.empty((cfg.num_frames, H, W, 3), np.uint8)
    tracks: dict[str, list[float]] = {}
    states = [[_ball_state(b, t, cfg.fps, g) for t in times] for b in balls]
    for f in range(cfg.num_frames):
        img = background.copy()
        for b, st in zip(balls, states):
            _draw_shadow(img, st[f][0], st[f][1], b["radius_px"], floor_y, H, FLOOR_COLOUR[material])
        for b, st in zip(balls, states):
            x, z, squash = st[f]
            _draw_ball(img, x, z, squash, b["radius_px"], PALETTE[b["colour"]], floor_y)
        video[f] = img
    for i, (b, st) in enumerate(zip(balls, states)):
        tracks[f"ball{i}_x"] = [s[0] for s in st]
        tracks[f"ball{i}_bottom_y"] = [floor_y - s[1] for s in st]

    # 3. Audio: one modal impact per contact, placed sample-accurately, over room tone.
    audio = synth.room_tone(cfg.num_samples, cfg.audio_noise_level, cfg.sample_rate, rng)
    v_ref = math.sqrt(2 * g * (floor_y - 2 * max(b["radius_px"] for b in balls)))
    events = []
    for i, b in enumerate(balls):
        for t, v in b["impacts"]:
            loud = 0.6 * (0.35 + 0.65 * min(1.0, v / v_ref))
            sound = synth.modal_impact(material, PITCH[b["size"]], loud, cfg.sample_rate, rng)
            synth.add_at(audio, sound, t, cfg.sample_rate)
            events.append(Event(t, frame_of(t, cfg.fps), "impact", {
                "ball": i, "colour": b["colour"], "size": b["size"], "material": material,
                "speed": round(v / v_ref, 4),
            }))
    events.sort(key=lambda e: e.time_s)

    params = {
        "num_balls": n,
        "material": material,
        "wall": wall,
        "floor_y": floor_y,
        "gravity_px_s2": g,
        "balls": [{k: v for k, v in b.items() if k != "impacts"} for b in balls],
    }
    return Clip(
        video=video, audio=synth.finish(audio), fps=cfg.fps, sample_rate=cfg.sample_rate,
        caption=_caption(rng, balls, material), scene=SCENE, params=params, events=events, tracks=tracks,
        seed=seed_int,
    )


# --- physics -------------------------------------------------------------------------------------------


def _impacts(z0: float, vz0: float, e: float, g: float, t_end: float,
             min_hop_s: float = MIN_HOP_S) -> tuple[list[tuple[float, float]], float]:
    """Contacts ``[(time, impact speed)]`` up to ``t_end`` and the time the ball comes to rest (inf if not)."""
    v = math.sqrt(vz0 * vz0 + 2 * g * z0)
    t = (vz0 + v) / g
    out = []
    while t < t_end:
        out.append((t, v))
        v *= e
        hop = 2 * v / g
        if hop < min_hop_s:
            return out, t
        t += hop
    return out, math.inf


def _sample_balls(rng, cfg, colours, sizes, material, floor_y, g, min_hop_s: float = MIN_HOP_S) -> list[dict]:
    H, W, n = cfg.height, cfg.width, len(colours)
    T, fps = cfg.num_frames, cfg.fps
    t_first = (EDGE_FRAMES - 0.5) / fps  # earliest contact: shown on frame >= EDGE_FRAMES
    t_shown = (T - 0.5) / fps  # contacts after this are not on any frame ...
    t_quiet = (T + 1.0) / fps  # ... so none may happen before this either (heard but unseen / ambiguous)
    for _ in range(MAX_TRIES):
        balls = []
        for i, (colour, size) in enumerate(zip(colours, sizes)):
            r = RADIUS[size] * H
            z_max = floor_y - 2 * r - 2  # highest bottom position that keeps the ball in frame
            v_max = math.sqrt(2 * g * z_max)
            z0 = rng.uniform(0.35, 1.0) * z_max
            vz0 = rng.uniform(-0.4, 0.5) * v_max
            e = rng.uniform(*RESTITUTION[material])
            lanes = [(r + 2, W - r - 2)] if n == 1 else [(r + 2, W / 2 - r - 1), (W / 2 + r + 1, W - r - 2)]
            lo, hi = lanes[i]  # two balls keep to their own half of the floor
            x0 = rng.uniform(lo, hi)
            x1 = float(np.clip(x0 + rng.uniform(-0.2, 0.2) * W, lo, hi))
            impacts, rest = _impacts(z0, vz0, e, g, t_quiet, min_hop_s)
            balls.append({
                "colour": colour, "size": size, "radius_px": r, "restitution": e, "x0": x0,
                "vx": (x1 - x0) / cfg.duration_s, "z0": z0, "vz0": vz0, "rest_time_s": rest,
                "peak_z": z0 + max(vz0, 0.0) ** 2 / (2 * g), "z_max": z_max, "impacts": impacts,
            })
        if _valid(balls, t_first, t_shown, t_quiet):
            for b in balls:
                b["impacts"] = [(t, v) for t, v in b["impacts"] if t < t_shown]
                b["num_bounces"] = len(b["impacts"])
                b["rest_time_s"] = b["rest_time_s"] if b["rest_time_s"] < t_shown else None
            return balls
    raise RuntimeError("bouncing_balls: no valid trajectory found; the clip is too short for a contact")


def _valid(balls, t_first, t_shown, t_quiet) -> bool:
    all_times = []
    for b in balls:
        if b["peak_z"] > b["z_max"]:
            return False
        times = [t for t, _ in b["impacts"]]
        if not times or times[0] < t_first or times[0] >= t_shown:
            return False
        if any(t_shown <= t < t_quiet for t in times):
            return False
        all_times += [t for t in times if t < t_shown]
    all_times.sort()
    return all(b - a >= MIN_EVENT_GAP_S for a, b in zip(all_times, all_times[1:]))


def _ball_state(ball: dict, t: float, fps: float, g: float) -> tuple[float, float, float]:
    """(x, z, squash) at time t; on a contact frame z = 0 and squash > 0."""
    x = ball["x0"] + ball["vx"] * t
    impacts = ball["impacts"]
    f = frame_of(t, fps)
    for ti, v in impacts:
        if frame_of(ti, fps) == f:
            return x, 0.0, 0.12 + 0.18 * min(1.0, v / math.sqrt(2 * g * ball["z_max"]))
    rest = ball["rest_time_s"]
    if rest is not None and t >= rest:
        return x, 0.0, 0.0
    previous = [(ti, v) for ti, v in impacts if ti <= t]
    if not previous:
        z = ball["z0"] + ball["vz0"] * t - 0.5 * g * t * t
    else:
        ti, v = previous[-1]
        u, dt = ball["restitution"] * v, t - ti
        z = u * dt - 0.5 * g * dt * dt
    return x, max(0.0, z), 0.0


# --- drawing -------------------------------------------------------------------------------------------


def _background(rng, cfg, wall, material, floor_y) -> np.ndarray:
    H, W = cfg.height, cfg.width
    top, bottom = WALLS[wall]
    img = draw.vertical_gradient(H, W, top, bottom)
    texture = {"wood": draw.wood_texture, "metal": draw.metal_texture, "rubber": draw.rubber_texture}[material]
    img[floor_y:] = texture(H - floor_y, W, FLOOR_COLOUR[material], rng)
    img[floor_y] = draw.shade(FLOOR_COLOUR[material], 1.15)  # the floor's lit front edge
    return img


def _draw_shadow(img, x, z, r, floor_y, H, floor_colour) -> None:
    spread = 1.0 - 0.5 * min(1.0, z / (0.6 * H))
    draw.ellipse(img, x, floor_y + 0.2 * r, r * spread, 0.25 * r, draw.shade(floor_colour, 0.55))


def _draw_ball(img, x, z, squash, r, colour, floor_y) -> None:
    ax, ay = r * (1 + squash), r * (1 - squash)
    cy = floor_y - ay - z
    draw.ellipse(img, x, cy, ax, ay, colour)
    draw.ellipse(img, x - 0.35 * ax, cy - 0.35 * ay, 0.3 * ax, 0.3 * ay, draw.shade(colour, 1.3))


# --- caption -------------------------------------------------------------------------------------------


def _caption(rng, balls: list[dict], material: str) -> str:
    floor = FLOOR_WORD[material]
    sound = f"{SOUND_ADJ[material]} {SOUND_WORD[material]}"
    if len(balls) == 1:
        b = balls[0]
        name = f"{b['size']} {b['colour']} ball"
        bounces = times_word(b["num_bounces"])
        pitch = PITCH_WORD[b["size"]]
        templates = (
            f"{article(name).capitalize()} {name} bounces {bounces} on a {floor} floor, each bounce a {sound}.",
            f"{article(name).capitalize()} {name} drops onto a {floor} floor and bounces {bounces}; every impact "
            f"is a {pitch}, {sound}.",
            f"On a {floor} floor, {article(name)} {name} bounces {bounces}, each landing heard as a {pitch}, {sound}.",
        )
        caption = pick(rng, templates)
        if b["rest_time_s"] is not None:
            caption = caption[:-1] + ", then comes to rest."
        return caption
    a, b = balls
    names = " and ".join(
        f"{article(x['size'])} {x['size']} {x['colour']} ball on the {side}" for x, side in ((a, "left"), (b, "right"))
    )
    counts = ", ".join(f"the {x['colour']} one {times_word(x['num_bounces'])}" for x in (a, b))
    templates = (
        f"{names[0].upper()}{names[1:]} bounce on a {floor} floor: {counts}, each bounce a {sound}.",
        f"Two balls bounce on a {floor} floor, {names}: {counts}; every impact is a {sound}.",
    )
    return pick(rng, templates)


def _check(colours, sizes, material, n) -> None:
    if len(colours) != n or len(set(colours)) != n or any(c not in PALETTE for c in colours):
        raise ValueError(f"colours={colours!r} is invalid: expected {n} distinct names from {list(PALETTE)}")
    if len(sizes) != n or any(s not in RADIUS for s in sizes):
        raise ValueError(f"sizes={sizes!r} is invalid: expected {n} values from {list(RADIUS)}")
    if material not in FLOOR_COLOUR:
        raise ValueError(f"material={material!r} is invalid: expected one of {list(FLOOR_COLOUR)}")
