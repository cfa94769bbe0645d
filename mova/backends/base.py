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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mova import outputs
from mova.backends.durations import DurationModel
from mova.outputs import Clip, OutputsPolicy, resolve_data_dir
from mova.settings import GenerationSettings, ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    from mova.pipeline import GenerationResult, MOVAPipeline

logger = logging.getLogger(__name__)

__all__ = ["Backend", "CostEstimate", "ModelUnavailableError", "ProgressFn", "load_pipeline",
           "resolve_model_folder"]

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total), the pipeline's callback type
COST_PROMPT = "cost estimate"  # settings built only to estimate a cost carry this prompt (the cost ignores it)


@dataclass(frozen=True)
class CostEstimate:
    """What a request will cost before it runs. ``seconds``: the estimate (``None`` while there is no basis for
    one); ``basis``: how it was made, in words for the user; ``limit_s``: the most one request may take (ZeroGPU's
    task limit; ``None`` for no limit); ``work_ratio``: height × width × num_frames × steps × NFE relative to the
    model's default request."""

    seconds: float | None
    basis: str
    limit_s: float | None = None
    work_ratio: float = 1.0


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
        self._last_clip: DurationModel | None = None  # stage times of the latest clip here, for estimates

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
        self._last_clip = DurationModel.from_result(result.settings, result.timings)
        if progress is not None:
            progress("encode", 0, 1)
        clip = outputs.save_clip(result, self.outputs_dir)
        outputs.prune(self.outputs_dir, self.outputs_policy, keep=Path(clip.video_path).stem)
        if progress is not None:
            progress("encode", 1, 1)
        logger.info("%s %s seed=%d nfe=%d in %.1f s -> %s", self.name, result.settings.kind, clip.seed, clip.nfe,
                    clip.timings["wall"], clip.video_path)
        return clip

    def estimate(self, settings: GenerationSettings) -> CostEstimate:
        """What ``settings`` (resolved with the model's defaults here) will cost: on this machine, the latest clip's
        stage times scaled to the request (:meth:`DurationModel.from_result`); before any clip, only the work
        relative to the default request. Raises ValueError for settings the model refuses."""
        resolved = self.model_info().check(settings)
        ratio = self.work_ratio(resolved)
        measured = self._last_clip
        if measured is None:
            return CostEstimate(None, "no clip has been timed on this machine yet", work_ratio=ratio)
        return CostEstimate(measured.estimate_settings(resolved), "scaled from the latest clip on this machine",
                            work_ratio=ratio)

    def work_ratio(self, resolved: GenerationSettings) -> float:
        """height × width × num_frames × steps × NFE of ``resolved`` over the model's default request's."""
        default = self.model_info().resolve(GenerationSettings(prompt=COST_PROMPT))

        def work(s: GenerationSettings) -> float:
            return float(s.height * s.width * s.num_frames * s.nfe)

        return work(resolved) / work(default)

    @abc.abstractmethod
    def _run(self, settings: GenerationSettings, progress: ProgressFn | None) -> GenerationResult:
        """One pipeline call for checked settings."""

    def close(self) -> None:
        """Release the model (tests, reloads)."""


def resolve_model_folder(model: str | os.PathLike, revision: str | None = None) -> Path:
    """The local folder of ``"demo"``, a checkpoint folder or a Hub repo id (``mova.hub``; fetched into the HF cache,
    only the cache with ``HF_HUB_OFFLINE=1``). ModelUnavailableError when there is none or it holds no
    ``model_index.json``, with what to pass instead."""
    from mova.hub import resolve_checkpoint

    try:
        folder = resolve_checkpoint(model, revision=revision)
    except ValueError as exc:
        raise _unavailable(exc) from None
    if not (folder / "model_index.json").is_file():
        what = "does not exist" if not folder.exists() else "has no model_index.json"
        raise ModelUnavailableError(
            f"model folder {str(folder)!r} {what}. Pass a MOVA checkpoint folder (official layout, with "
            "model_index.json) or a Hub repo id (org/name) with --model or MOVA_MODEL, or --model demo for the "
            "shipped demo checkpoint.")
    return folder


def _unavailable(exc: Exception) -> ModelUnavailableError:
    return ModelUnavailableError(f"{exc}. Pass a MOVA checkpoint folder or Hub repo id with --model or MOVA_MODEL, "
                                 "or --model demo for the shipped demo checkpoint.")


def load_pipeline(model: str | os.PathLike = "demo", *, revision: str | None = None, dtype: Any = None,
                  **kwargs: Any) -> MOVAPipeline:
    """``MOVAPipeline.from_pretrained`` for what a user named: ``"demo"``, a checkpoint folder (first checked by
    :func:`resolve_model_folder`), or a Hub repo id at ``revision`` (resolved once, by the pipeline) (``kwargs``:
    device, offload).

    Raises:
        ModelUnavailableError: a missing folder or demo checkpoint, or a repo the Hub (or, offline, the cache)
            cannot give, with what to pass instead.
    """
    from mova.hub import ModelNotFound, is_repo_id
    from mova.pipeline import MOVAPipeline

    if not is_repo_id(os.fspath(model)):
        resolve_model_folder(model, revision)
    logger.info("loading %s (%s)", os.fspath(model), _placement({"dtype": dtype, **kwargs}))
    try:
        return MOVAPipeline.from_pretrained(model, revision=revision, torch_dtype=dtype, **kwargs)
    except ModelNotFound as exc:
        raise _unavailable(exc) from None


def _placement(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items() if v is not None) or "default placement"
