"""MOVA training data (docs/model.md#data-pipeline): long videos -> fixed clips with measured, labelled, filtered manifest rows.

    python -m train.data prepare --input videos/ --out data/clips --config data.yaml
    python -m train.data filter data/clips/clips.jsonl --config stricter.yaml --out data/clips/stage2.jsonl
    python -m train.data captions data/clips/clips.jsonl --out data/clips/captioned.jsonl

Stages (one module each): :mod:`.cut` (fixed 193-frame / 24 fps clips with 48 kHz mono audio, streamed through
:mod:`.decode`), :mod:`.letterbox` (black bars, 16:9 / 9:16 fit), :mod:`.scenes` (hard cuts), :mod:`.vad`
(speech segments), :mod:`.labels` (the four clip types), :mod:`.filters` (measurements and thresholds),
:mod:`.captions` (caption merging), :mod:`.manifest` (JSONL schema), :mod:`.prepare` (the run and its
:class:`PrepareConfig`, read by ``train.yaml_config.load_config``). The trainer reads ``manifest.jsonl``; its row schema is in :mod:`.manifest`.
"""

from .captions import CaptionConfig, merge_captions, merge_row
from .cut import CutConfig, Drop, VideoCutter, clip_starts
from .filters import REJECT_REASONS, FilterConfig, MeasureConfig, apply_filters, filter_rows, measure_clip
from .labels import CLIP_TYPES, clip_type
from .letterbox import CropBox, FrameTransform, LetterboxConfig, detect_letterbox, plan_transform
from .manifest import REQUIRED_FIELDS, read_manifest, validate_row, write_manifest
from .prepare import PrepareConfig, analyze_clip, list_inputs, prepare, process_video
from .scenes import SceneConfig, detect_scene_cuts
from .vad import VADConfig, detect_speech

__all__ = [
    "CLIP_TYPES", "REJECT_REASONS", "REQUIRED_FIELDS", "CaptionConfig", "CropBox", "CutConfig",
    "Drop", "FilterConfig", "PrepareConfig", "FrameTransform", "LetterboxConfig", "MeasureConfig", "SceneConfig", "VADConfig",
    "VideoCutter", "analyze_clip", "apply_filters", "clip_starts", "clip_type", "detect_letterbox",
    "detect_scene_cuts", "detect_speech", "filter_rows", "list_inputs", "measure_clip",
    "merge_captions", "merge_row", "plan_transform", "prepare", "process_video", "read_manifest",
    "validate_row", "write_manifest",
]
