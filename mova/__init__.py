"""MOVA Studio: joint video + audio generation with the MOVA dual-tower model.

The public API is imported lazily so that light sub-packages (``mova.arena``, ``mova.prompting``,
``mova.media``) can be used by the UI without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "MOVAPipeline": "mova.pipeline",
    "GenerationResult": "mova.pipeline",
    "Guidance": "mova.guidance",
}

__all__ = ["MOVAPipeline", "GenerationResult", "Guidance", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from mova.guidance import Guidance
    from mova.pipeline import GenerationResult, MOVAPipeline


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mova' has no attribute {name!r}")
