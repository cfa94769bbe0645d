"""MOVA Studio: joint video + audio generation with the MOVA dual-tower model.

The public API is imported lazily so that light sub-packages (``mova.arena``, ``mova.prompting``,
``mova.media``) can be used by the UI without importing torch.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "MOVAPipeline": "mova.pipeline",
    "GenerationResult": "mova.pipeline",
    "GenerationSettings": "mova.settings",
    "GenerationCancelled": "mova.settings",
    "ModelInfo": "mova.settings",
    "Guidance": "mova.guidance",
    "Clip": "mova.outputs",
    "save_clip": "mova.outputs",
}

__all__ = ["MOVAPipeline", "GenerationResult", "GenerationSettings", "GenerationCancelled", "ModelInfo", "Guidance",
           "Clip", "save_clip", "configure_logging", "__version__"]

# Libraries whose warnings are about features MOVA never uses. bitsandbytes is imported by diffusers' quantizers
# and, on CPUs with AVX512-BF16, warns on every run that the optional `kernels` package for its 4-bit CPU matmul
# is missing.
QUIET_LOGGERS = ("bitsandbytes",)


def configure_logging(level: str = "INFO", fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """Logging for the command line and the app: ``level`` for ours, errors only from :data:`QUIET_LOGGERS`
    (everything at ``DEBUG``)."""
    logging.basicConfig(level=level, format=fmt)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.ERROR)

if TYPE_CHECKING:  # pragma: no cover
    from mova.guidance import Guidance
    from mova.outputs import Clip, save_clip
    from mova.pipeline import GenerationResult, MOVAPipeline
    from mova.settings import GenerationCancelled, GenerationSettings, ModelInfo


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mova' has no attribute {name!r}")
