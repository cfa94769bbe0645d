"""ZeroGPUBackend: generation on a Hugging Face ZeroGPU Space (``spaces.GPU`` with a duration per request).

ZeroGPU conventions (https://huggingface.co/docs/hub/spaces-zerogpu):

* ``import spaces`` comes before anything touches CUDA, and the model is loaded to ``"cuda"`` at start-up in the
  main process (``spaces`` defers the real transfer); the Space's entry ``app.py`` builds this backend in
  ``main()``, which a Gradio Space runs at start-up.
* Only the function wrapped by ``spaces.GPU`` holds a GPU. It runs in a forked worker: its arguments and result are
  pickled, so they are resolved :class:`~mova.settings.GenerationSettings`, a picklable progress callable and a
  ``GenerationResult``
  (numpy arrays). Muxing the mp4 and measuring the clip happen after, off the GPU.
* ``duration`` may be a function of the same arguments: :class:`~mova.backends.durations.DurationModel` estimates
  the seconds stage by stage from measured whole-clip figures (``benchmarks/results/clip_time_h200.json``, declared
  costs without it), clamped to the Space's limit. A request estimated above the limit is refused before it is
  scheduled, with what to lower.

* On ZeroGPU the denoiser's repeated blocks are compiled ahead of time at start-up for the default request
  (``mova.backends.aot``, one ``spaces.GPU`` task), and run eager for other shapes or where AoT cannot run.

With ``SPACES_ZERO_GPU`` unset ``spaces.GPU`` returns the function unchanged, so this backend also runs (slowly,
without the GPU scheduler) anywhere, which is how it is tested.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any

from mova.backends.base import Backend, CostEstimate, ProgressFn, load_pipeline
from mova.backends.durations import DurationModel, fit_defaults
from mova.settings import GenerationSettings, ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    from mova.pipeline import GenerationResult, MOVAPipeline

logger = logging.getLogger(__name__)

class ZeroGPUBackend(Backend):
    """Generate inside ``spaces.GPU(duration=DurationModel)``; the model is loaded when the backend is built.

    Args:
        model: ``"demo"``, a checkpoint folder or a Hub repo id (``org/name``; on a Space, preloaded into the
            Hugging Face cache by the README's ``preload_from_hub``). Ignored when ``pipeline`` is given.
        revision: the Hub commit, branch or tag of a repo id (default: ``main``).
        device: default ``"cuda"`` on ZeroGPU (``spaces`` makes that work before a GPU is attached), else the
            pipeline's default (CUDA when available, else CPU), so the same Space code runs on other hardware.
        durations: the duration model (default :meth:`DurationModel.from_env`), scaled to the denoiser this
            backend runs (:meth:`DurationModel.for_denoiser`: compiled when AoT went through, eager otherwise).
        aot: compile the denoiser's repeated blocks ahead of time for the default request (``mova.backends.aot``;
            default: on ZeroGPU); where it cannot run the pipeline stays eager and the reason is logged and kept in
            ``self.aot``.
        loras: LoRA adapters offered by name (``MOVAPipeline.register_lora``).
        pipeline: an already loaded pipeline (tests).
    """

    name = "zerogpu"

    def __init__(self, model: str | os.PathLike = "demo", *, revision: str | None = None, device: str | None = None,
                 data_dir: Any = None,
                 durations: DurationModel | None = None, loras: Any = None, aot: bool | None = None,
                 pipeline: MOVAPipeline | None = None) -> None:
        import spaces  # before torch touches CUDA (ZeroGPU patches torch on import)
        from spaces.config import Config

        if device is None and Config.zero_gpu:
            device = "cuda"
        super().__init__(data_dir=data_dir)
        if pipeline is None:
            pipeline = load_pipeline(model, revision=revision, device=device)
        self.pipeline = pipeline
        for name, path in (loras or {}).items():  # loaded in the GPU worker when asked for, like any other backend
            pipeline.register_lora(name, path)
        from mova.attention import _fa3_available

        aot, fa3 = (Config.zero_gpu if aot is None else aot), _fa3_available()
        durations = durations or DurationModel.from_env()
        info = dataclasses.replace(pipeline.model_info(), backend=self.name)
        # the defaults are fitted for the compiled denoiser AoT should give, and fitted again if it does not
        self.durations = durations.for_denoiser(compiled=aot, fa3=fa3)
        self._info = fit_defaults(info, self.durations)
        self.aot = None
        if aot:
            from mova.backends import aot as aot_compile

            gpu_task = spaces.GPU(duration=aot_compile.COMPILE_TASK_S) if Config.zero_gpu else None
            default = self._info.resolve(GenerationSettings(prompt="ahead-of-time compile", seed=0))
            self.aot = aot_compile.prepare(pipeline, default, gpu_task=gpu_task)
            if not self.aot.compiled:
                self.durations = durations.for_denoiser(compiled=False, fa3=fa3)
                self._info = fit_defaults(info, self.durations)
        # Inert (returns the bound method itself) unless SPACES_ZERO_GPU is set.
        self._gpu_call = spaces.GPU(duration=self.durations)(self._gpu_generate)

    def model_info(self) -> ModelInfo:
        return self._info

    def check(self, settings: GenerationSettings) -> GenerationSettings:
        resolved = super().check(settings)
        needed = self.durations.estimate_settings(resolved)
        if needed > self.durations.max_s:
            raise ValueError(
                f"this request needs about {needed:.0f} s of GPU time, more than the {self.durations.max_s:.0f} s a "
                f"ZeroGPU task may take: lower num_inference_steps (now {resolved.num_inference_steps}), num_frames "
                f"(now {resolved.num_frames}) or the resolution (now {resolved.height}×{resolved.width})")
        return resolved

    def estimate(self, settings: GenerationSettings) -> CostEstimate:
        """The GPU seconds the duration model gives ``settings`` (margin included) against ZeroGPU's task limit."""
        resolved = self.model_info().check(settings)
        d = self.durations
        basis = ("stage times measured on an H200" if d.measured else "declared costs") + \
            f", ×{d.slice_factor:g} for a ZeroGPU slice"
        if d.denoise_factor != 1.0:
            basis += f", denoising ×{d.denoise_factor:.2f} for this Space's denoiser (measured against the figures')"
        return CostEstimate(self.durations.estimate_settings(resolved), basis, limit_s=self.durations.max_s,
                            work_ratio=self.work_ratio(resolved))

    def _run(self, settings: GenerationSettings, progress: ProgressFn | None) -> GenerationResult:
        return self._gpu_call(self._info.resolve(settings), progress)  # resolved: the duration model reads sizes

    def _gpu_generate(self, settings: GenerationSettings, progress: ProgressFn | None = None) -> GenerationResult:
        """The GPU task (a forked worker on ZeroGPU). A ValueError becomes a gr.Error there, since the worker
        reports other exceptions by class name only."""
        try:
            return self.pipeline(settings, progress=progress)
        except ValueError as exc:
            from spaces.config import Config

            if not Config.zero_gpu:
                raise
            import gradio as gr

            raise gr.Error(str(exc), print_exception=False) from None

    def close(self) -> None:
        self.pipeline = None  # type: ignore[assignment]
