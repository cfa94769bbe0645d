"""Image+Text → Video+Audio (IT2VA) and Text → Video+Audio (T2VA) tabs: one form and one handler, parameterised
by ``with_image``.

Public API events: ``generate_i2va(image, prompt, ...)`` and ``generate_t2va(prompt, ...)``; parameters are the
contract words (``num_frames``, ``fps``, ``num_inference_steps``, ``guidance``, ``text_scale``, ``bridge_scale``,
``video_shift``, ``audio_shift``, ``seed``, ``randomize_seed``, ``loudness_lufs``...). They return the mp4, the seed
used, the figures (Markdown) and the details (JSON). Both share the GPU queue (``concurrency_id="gpu"``).

Run alone: ``build(backend, with_image=True).launch()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import gradio as gr

from mova.backends import Backend
from mova.settings import ModelInfo
from ui.widgets import (
    GPU_CONCURRENCY_ID,
    GenerationControls,
    clip_details,
    figures_markdown,
    form_settings,
    gpu_validator,
    optional_inputs,
    render_controls,
    run_job,
    show_warnings,
    user_errors,
    with_api_signature,
)

TITLES = MappingProxyType({"it2va": "Image+Text → Video+Audio", "t2va": "Text → Video+Audio"})
API_NAMES = MappingProxyType({"it2va": "generate_i2va", "t2va": "generate_t2va"})


@dataclass
class GenerateTab:
    kind: str  # "it2va" | "t2va"
    controls: GenerationControls
    button: gr.Button
    video: gr.Video
    figures: gr.Markdown
    details: gr.JSON
    done: Any  # the generate event's dependency, for chaining (session history)


def render(backend: Backend, info: ModelInfo | None = None, *, with_image: bool,
           examples: list[tuple[str, str]] | None = None) -> GenerateTab:
    """Build the tab's form and output inside the current layout and wire its events."""
    info = info or backend.model_info()
    kind = "it2va" if with_image else "t2va"
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            controls = render_controls(info, kind, with_image=with_image)
            with gr.Row():
                button = gr.Button("Generate", variant="primary", elem_id=f"{kind}-generate", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id=f"{kind}-stop", scale=1)
        with gr.Column(scale=1, min_width=320):
            video = gr.Video(label="video", interactive=False, buttons=["download"], elem_id=f"{kind}-video")
            figures = gr.Markdown(label="figures", elem_id=f"{kind}-figures")
            with gr.Accordion("Details", open=False):
                details = gr.JSON(label="details", elem_id=f"{kind}-details")
    if examples:
        if with_image:
            gr.Examples([[image, caption] for image, caption in examples], [controls.image, controls.prompt],
                        label="Examples from the demo world", cache_examples=False)
        else:
            gr.Examples([[caption] for _, caption in examples], [controls.prompt],
                        label="Examples from the demo world", cache_examples=False)

    def check(**values: Any) -> None:
        """Run before the job is queued (the event's validator): a bad value never waits behind a GPU job."""
        backend.check(form_settings(values, image_required=with_image))

    @user_errors
    async def generate(progress: gr.Progress = gr.Progress(), **values: Any) -> dict:
        settings = form_settings(values, image_required=with_image)
        clip = await run_job(lambda report: backend.generate(settings, report), progress)
        show_warnings(clip)
        return {video: clip.video_path, controls.seed: clip.seed, figures: figures_markdown(clip),
                details: clip_details(clip)}

    inputs = controls.inputs()
    with_api_signature(generate, list(inputs), optional=optional_inputs(inputs))
    # preprocess=False: the first frame arrives as its uploaded file, so a non-image gets our clear message.
    done = button.click(
        generate, inputs_kwargs=inputs, outputs=[video, controls.seed, figures, details], api_name=API_NAMES[kind],
        preprocess=False, validator=gpu_validator(check, list(inputs)),
        concurrency_id=GPU_CONCURRENCY_ID, concurrency_limit=backend.concurrency_limit,
    )
    stop.click(None, cancels=[done], api_visibility="private", queue=False)
    return GenerateTab(kind, controls, button, video, figures, details, done)


def build(backend: Backend, *, with_image: bool) -> gr.Blocks:
    """The tab as an app of its own."""
    kind = "it2va" if with_image else "t2va"
    with gr.Blocks(title=f"MOVA Studio · {TITLES[kind]}") as demo:
        render(backend, with_image=with_image)
    return demo
