"""Backends: how the app reaches a MOVA model.

    from mova.backends import GenerationRequest, LocalBackend
    backend = LocalBackend("demo", offload="model")              # loads the pipeline once
    response = backend.generate(GenerationRequest(prompt="rain on a tin roof", height=352, width=640))
    response.video_path, response.seed, response.av_offset_frames, response.loudness_lufs

* :class:`LocalBackend` — this machine (CPU or one GPU, offload modes), one job at a time.
* :class:`ZeroGPUBackend` — a Hugging Face ZeroGPU Space: ``spaces.GPU`` with a per-request duration.

Importing this package does not import torch; the concrete backends import the pipeline when built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mova.backends.base import (
    Backend,
    GenerationResponse,
    ModelInfo,
    ModelUnavailableError,
    ProgressFn,
    resolve_data_dir,
    resolve_model_folder,
)
from mova.backends.request import MAX_SEED, GenerationRequest

_LAZY = {
    "LocalBackend": "mova.backends.local",
    "ZeroGPUBackend": "mova.backends.zerogpu",
    "DurationModel": "mova.backends.zerogpu",
}

if TYPE_CHECKING:  # pragma: no cover
    from mova.backends.local import LocalBackend
    from mova.backends.zerogpu import DurationModel, ZeroGPUBackend

__all__ = [
    "MAX_SEED",
    "Backend",
    "DurationModel",
    "GenerationRequest",
    "GenerationResponse",
    "LocalBackend",
    "ModelInfo",
    "ModelUnavailableError",
    "ProgressFn",
    "ZeroGPUBackend",
    "resolve_data_dir",
    "resolve_model_folder",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mova.backends' has no attribute {name!r}")
