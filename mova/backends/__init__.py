"""Backends: where and how a generation runs.

    from mova import GenerationSettings
    from mova.backends import LocalBackend
    backend = LocalBackend("demo", offload="model")              # loads the pipeline once
    clip = backend.generate(GenerationSettings(prompt="rain on a tin roof", height=352, width=640))
    clip.video_path, clip.seed, clip.av_offset_frames, clip.loudness_lufs

* :class:`LocalBackend` — this machine (CPU or one GPU, offload modes), one job at a time.
* :class:`ZeroGPUBackend` — a Hugging Face ZeroGPU Space: ``spaces.GPU`` with a per-request duration.
* ``DistributedBackend`` (``mova.backends.distributed``) — torchrun on a multi-GPU host.

Importing this package does not import torch; the concrete backends import the pipeline when built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mova.backends.base import (
    Backend,
    CostEstimate,
    ModelUnavailableError,
    ProgressFn,
    load_pipeline,
    resolve_model_folder,
)

_LAZY = {
    "LocalBackend": "mova.backends.local",
    "ZeroGPUBackend": "mova.backends.zerogpu",
    "DurationModel": "mova.backends.durations",
}

if TYPE_CHECKING:  # pragma: no cover
    from mova.backends.local import LocalBackend
    from mova.backends.durations import DurationModel
    from mova.backends.zerogpu import ZeroGPUBackend

__all__ = [
    "Backend",
    "CostEstimate",
    "DurationModel",
    "LocalBackend",
    "ModelUnavailableError",
    "ProgressFn",
    "ZeroGPUBackend",
    "load_pipeline",
    "resolve_model_folder",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mova.backends' has no attribute {name!r}")
