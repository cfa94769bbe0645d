"""The demo world: procedurally generated audio-visual clips with captions and a ground-truth event timeline.

Four scenes (numpy + OpenCV only, deterministic from a seed): bouncing balls with an impact sound per floor
contact, a cartoon face whose mouth follows its babble, a pendulum ticking at its extremes, a passing car
with distance loss and Doppler. The demo checkpoint is trained on them, and generated clips are scored with
the pixel detectors of :mod:`train.demo_world.detectors` against the held-out prompts' ground truth.

    from train.demo_world import WorldConfig, generate_clip, generate_dataset, held_out_prompts
    clip = generate_clip("bouncing_balls", seed=3)      # Clip: video [T,H,W,3] uint8, audio [N] float32, ...
    generate_dataset("data/demo_world", n=1000, seed=0)  # mp4 + png (+ npz) and manifest.jsonl

Command line: ``python -m train.demo_world --out DIR --n 1000 --seed 0``.
"""

from .dataset import (HeldOutPrompt, clip_seed, generate_dataset, held_out_prompts, read_manifest, read_npz, write_npz,
                      write_prompt_set)
from .detectors import (ball_colours, ball_impacts_by_colour, detect_ball_impacts, detect_ticks_visual,
                        dominant_ball_colour, mouth_opening)
from .scenes import SCENE_NAMES, SCENES, bouncing_balls, generate_clip, passing_car, pendulum, talking_face
from .world import COLOUR_NAMES, PALETTE, Clip, Event, WorldConfig

__all__ = [
    "COLOUR_NAMES", "PALETTE", "SCENES", "SCENE_NAMES", "Clip", "Event", "HeldOutPrompt", "WorldConfig",
    "ball_colours", "ball_impacts_by_colour", "bouncing_balls", "clip_seed", "detect_ball_impacts",
    "detect_ticks_visual", "dominant_ball_colour", "generate_clip", "generate_dataset", "held_out_prompts",
    "mouth_opening", "passing_car", "pendulum", "read_manifest", "read_npz", "talking_face", "write_npz",
    "write_prompt_set",
]
