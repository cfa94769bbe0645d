"""LocalBackend: the pipeline on this machine (CPU or one GPU, offload modes from flags), one job at a time.

The pipeline is loaded once, when the backend is built (in ``app.main()``, never at import). A lock serialises
generations: the UI queue already runs one GPU event at a time (``concurrency_limit=1``), and the lock keeps any
other caller (scripts, a second app on the same object) from running two jobs on one GPU.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mova.backends.base import Backend, ProgressFn, load_pipeline
from mova.settings import GenerationSettings, ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    from mova.pipeline import GenerationResult, MOVAPipeline

logger = logging.getLogger(__name__)


class LocalBackend(Backend):
    """Generate with a :class:`~mova.pipeline.MOVAPipeline` in this process.

    Args:
        model: ``"demo"``, a checkpoint folder (official layout) or a Hub repo id (``org/name``, through the
            Hugging Face cache; see :func:`~mova.backends.base.load_pipeline`). Ignored when ``pipeline`` is given.
        revision: the Hub commit, branch or tag of a repo id (default: ``main``).
        device, dtype, offload, quantization, memory: passed to ``MOVAPipeline.from_pretrained`` (offload
            ``none|model|sequential``; quantization ``fp8|int8|nf4``; memory a profile such as ``24gb``).
        data_dir: outputs go to ``<data_dir>/outputs`` (default ``$MOVA_DATA_DIR`` or ``./data``).
        loras: LoRA adapters the UI may pick, name → adapter folder (``mova.lora`` format), registered with the
            pipeline (``MOVAPipeline.register_lora``); the settings name one (or none) and its ``lora_scale``.
        pipeline: an already loaded pipeline (tests, notebooks).
        compile: ``auto``, ``on`` or ``off`` (``MOVAPipeline.apply_compile``; the app passes ``--compile``).

    Raises:
        ModelUnavailableError: the folder, the demo checkpoint or the Hub repo is not to be had.
    """

    name = "local"

    def __init__(self, model: str | os.PathLike = "demo", *, revision: str | None = None, device: str | None = None,
                 dtype: Any = None, offload: str | None = None, data_dir: str | os.PathLike | None = None,
                 loras: Mapping[str, str | os.PathLike] | None = None, pipeline: MOVAPipeline | None = None,
                 compile: str = "off", quantization: str | None = None, memory: str | None = None) -> None:
        super().__init__(data_dir=data_dir)
        if pipeline is None:
            pipeline = load_pipeline(model, revision=revision, device=device, dtype=dtype, offload=offload,
                                     quantization=quantization, memory=memory)
        pipeline.apply_compile(compile)
        self.pipeline = pipeline
        for name, path in (loras or {}).items():
            pipeline.register_lora(name, path)
        self._info = dataclasses.replace(pipeline.model_info(), backend=self.name)
        self._lock = threading.Lock()

    def model_info(self) -> ModelInfo:
        return self._info

    def _run(self, settings: GenerationSettings, progress: ProgressFn | None) -> GenerationResult:
        if progress is not None and self._lock.locked():
            progress("waiting for the GPU", 0, 1)
        with self._lock:
            return self.pipeline(settings, progress=progress)

    def close(self) -> None:
        self.pipeline = None  # type: ignore[assignment]
