"""The Backend ABC: where and how a generation runs. The settings (``mova.settings``), the model's limits
(``ModelInfo``, from the pipeline) and the clip writer (``mova.outputs``) live elsewhere; a backend places the job.

Nothing here imports torch: the UI holds a backend and calls :meth:`Backend.check` (before the queue) and
:meth:`Backend.generate`; the concrete backends (``local``, ``zerogpu``, ``distributed``) load the pipeline.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mova import outputs
from mova.outputs import Clip, OutputsPolicy, resolve_data_dir
from mova.settings import GenerationSettings, ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    from mova.pipeline import GenerationResult

logger = logging.getLogger(__name__)

__all__ = ["Backend", "ModelUnavailableError", "ProgressFn", "resolve_model_folder"]

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total), the pipeline's callback type


class ModelUnavailableError(RuntimeError):
    """The requested checkpoint cannot be loaded (missing folder, missing demo checkpoint). ``str`` says what to
    pass instead, for a start-up message."""


class Backend(abc.ABC):
    """Subclasses implement :meth:`model_info` and :meth:`_run` (one pipeline call for resolved, checked settings,
    returning a ``GenerationResult``). :meth:`generate` checks, runs and writes the clip under
    ``<data_dir>/outputs`` (kept within its :class:`~mova.outputs.OutputsPolicy`). ``concurrency_limit`` is how
    many GPU jobs the UI may run at once with this backend."""

    name: str = "backend"
    concurrency_limit: int = 1

    def __init__(self, *, data_dir: str | os.PathLike | None = None) -> None:
        self.data_dir = resolve_data_dir(data_dir)
        self.outputs_policy = OutputsPolicy.from_env()
        outputs.sweep(self.outputs_dir)

    @abc.abstractmethod
    def model_info(self) -> ModelInfo:
        """The model's defaults, presets and ceilings, with this backend's placement."""

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    def allowed_paths(self) -> list[str]:
        """Folders the web server may serve files from (generated clips, example first frames)."""
        return [str(self.outputs_dir), str(self.data_dir / "examples")]

    def check(self, settings: GenerationSettings) -> GenerationSettings:
        """The settings resolved with the model's defaults, refused (``ValueError`` naming the field) when the model
        should not run them; the media inputs (first and last frame, audio, video, a clip to extend or retake) are
        decoded and checked here (``mova.modes.read_inputs``), so a bad file fails before any queue."""
        if not isinstance(settings, GenerationSettings):
            raise ValueError(f"settings must be a GenerationSettings, got {type(settings).__name__}")
        info = self.model_info()
        resolved = info.check(settings)
        from mova import modes

        modes.read_inputs(resolved, info.sample_rate, info.frame_multiple)
        return resolved

    def generate(self, settings: GenerationSettings, progress: ProgressFn | None = None) -> Clip:
        """Generate and write ``<data_dir>/outputs/<stem>.mp4`` with its sidecar (and first frame). The app has
        called :meth:`check` before queueing; the pipeline checks the settings again for every other caller."""
        if not isinstance(settings, GenerationSettings):
            raise ValueError(f"settings must be a GenerationSettings, got {type(settings).__name__}")
        result = self._run(settings, progress)
        if progress is not None:
            progress("encode", 0, 1)
        clip = outputs.save_clip(result, self.outputs_dir)
        outputs.prune(self.outputs_dir, self.outputs_policy, keep=Path(clip.video_path).stem)
        if progress is not None:
            progress("encode", 1, 1)
        logger.info("%s %s seed=%d nfe=%d in %.1f s -> %s", self.name, result.settings.kind, clip.seed, clip.nfe,
                    clip.timings["wall"], clip.video_path)
        return clip

    @abc.abstractmethod
    def _run(self, settings: GenerationSettings, progress: ProgressFn | None) -> GenerationResult:
        """One pipeline call for checked settings."""

    def close(self) -> None:
        """Release the model (tests, reloads)."""


def resolve_model_folder(model: str | os.PathLike) -> Path:
    """The local folder of ``"demo"``, a checkpoint folder or a Hub repo id (``mova.hub``; fetched into the HF cache).
    ModelUnavailableError when there is none or it holds no ``model_index.json``, with what to pass instead."""
    from mova.hub import resolve_checkpoint

    try:
        folder = resolve_checkpoint(model)
    except ValueError as exc:
        raise ModelUnavailableError(f"{exc}. Pass a MOVA checkpoint folder or Hub repo id with --model or MOVA_MODEL, "
                                    "or --model demo for the shipped demo checkpoint.") from None
    if not (folder / "model_index.json").is_file():
        what = "does not exist" if not folder.exists() else "has no model_index.json"
        raise ModelUnavailableError(
            f"model folder {str(folder)!r} {what}. Pass a MOVA checkpoint folder (official layout, with "
            "model_index.json) or a Hub repo id (org/name) with --model or MOVA_MODEL, or --model demo for the "
            "shipped demo checkpoint.")
    return folder
