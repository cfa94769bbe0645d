"""Clip-type labels from scene cuts and voice activity: the paper's four clip types (docs/model.md#data-pipeline)."""

from __future__ import annotations

__all__ = ["CLIP_TYPES", "clip_type"]

CLIP_TYPES = ("single_scene_speech", "single_scene_nonspeech", "multi_scene_speech", "multi_scene_nonspeech")


def clip_type(num_scenes: int, speech_s: float, min_total_speech_s: float = 1.0) -> str:
    """``{single,multi}_scene_{speech,nonspeech}``: multi-scene with at least one hard cut, speech with at least
    ``min_total_speech_s`` seconds of detected speech."""
    if num_scenes < 1:
        raise ValueError(f"num_scenes: {num_scenes!r} is not allowed; expected an integer >= 1")
    scenes = "single_scene" if num_scenes == 1 else "multi_scene"
    speech = "speech" if speech_s >= min_total_speech_s else "nonspeech"
    return f"{scenes}_{speech}"
