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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mova.backends.base import (
    Backend,
    ModelInfo,
    ProgressFn,
    model_info_from_pipeline,
    resolve_model_folder,
)
from mova.backends.request import GenerationRequest

if TYPE_CHECKING:  # pragma: no cover
    from mova.lora import LoadedLoRA
    from mova.pipeline import GenerationResult, MOVAPipeline

logger = logging.getLogger(__name__)


class LocalBackend(Backend):
    """Generate with a :class:`~mova.pipeline.MOVAPipeline` in this process.

    Args:
        model: ``"demo"`` or a checkpoint folder (official layout). Ignored when ``pipeline`` is given.
        device, dtype, offload: passed to ``MOVAPipeline.from_pretrained`` (offload ``none|model|sequential``).
        data_dir: outputs go to ``<data_dir>/outputs`` (default ``$MOVA_DATA_DIR`` or ``./data``).
        prompt_provider: for describe/rewrite (``None``: ``MOVA_PROMPT_PROVIDER`` or offline).
        loras: LoRA adapters the UI may pick, name → adapter folder (``mova.lora`` format). A request names one
            (or none) and its ``lora_scale``; the adapter is loaded on first use and swapped under the job lock.
        pipeline: an already loaded pipeline (tests, notebooks).

    Raises:
        ModelUnavailableError: the folder (or the demo checkpoint) is missing.
    """

    name = "local"

    def __init__(self, model: str | os.PathLike = "demo", *, device: str | None = None, dtype: Any = None,
                 offload: str = "none", data_dir: str | os.PathLike | None = None,
                 prompt_provider: Any = None, loras: Mapping[str, str | os.PathLike] | None = None,
                 pipeline: MOVAPipeline | None = None) -> None:
        super().__init__(data_dir=data_dir, prompt_provider=prompt_provider)
        if pipeline is None:
            from mova.pipeline import MOVAPipeline

            folder = resolve_model_folder(model)
            logger.info("loading %s (device=%s, dtype=%s, offload=%s)", folder, device, dtype, offload)
            pipeline = MOVAPipeline.from_pretrained(folder if os.fspath(model) != "demo" else "demo",
                                                    device=device, dtype=dtype, offload=offload)
        self.pipeline = pipeline
        self._lora_paths = _check_loras(loras or {})
        info = model_info_from_pipeline(pipeline, backend=self.name, name=_model_name(model, pipeline))
        self._info = dataclasses.replace(info, lora_adapters=(*info.lora_adapters, *self._lora_paths))
        self._lock = threading.Lock()
        self._lora: LoadedLoRA | None = None  # the adapter in the model now (changed only under the lock)
        self._lora_name: str | None = None

    def model_info(self) -> ModelInfo:
        return self._info

    def _run(self, request: GenerationRequest, progress: ProgressFn | None) -> GenerationResult:
        if progress is not None and self._lock.locked():
            progress("waiting for the GPU", 0, 1)
        with self._lock:
            self._use_lora(request.lora, request.lora_scale)
            return self.pipeline(**self._pipeline_kwargs(request), progress=progress)

    def _use_lora(self, name: str | None, scale: float) -> None:
        """Make ``name`` (or no adapter) the one in the model, at ``scale``. Called with the lock held."""
        if name == self._lora_name:
            if self._lora is not None and self._lora.scale != scale:
                self._lora.set_scale(scale)
            return
        if self._lora is not None:
            self._lora.unload()
            self._lora, self._lora_name = None, None
        if name is not None:
            if name not in self._lora_paths:
                raise ValueError(f"lora={name!r} is invalid: allowed adapters are {sorted(self._lora_paths)}")
            from mova.lora import load_lora

            self._lora = load_lora(self.pipeline, self._lora_paths[name], scale=scale)
            self._lora_name = name

    def close(self) -> None:
        self.pipeline = None  # type: ignore[assignment]


def _check_loras(loras: Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    """name → adapter folder or .safetensors file; ValueError naming ``loras`` when one is missing."""
    out = {}
    for name, path in loras.items():
        path = Path(path).expanduser()
        if not str(name).strip() or not path.exists():
            raise ValueError(f"loras: adapter {name!r} at {str(path)!r} does not exist")
        out[str(name)] = path
    return out


def _model_name(model: str | os.PathLike, pipeline: MOVAPipeline) -> str:
    """``demo``, or the checkpoint folder's name (``MOVA-360p``)."""
    source = pipeline.name or os.fspath(model)
    return source if source == "demo" else os.path.basename(os.path.normpath(source)) or source
