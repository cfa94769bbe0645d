"""Video → Audio tab: a video's frames kept as given (held clean; cropped, resized and retimed to the clip) while a
soundtrack is generated for them (``mova.modes``, kind ``v2a``).

Public API event: ``generate_v2a(video, prompt, ...)`` → the mp4 (carrying the given frames), the seed, the figures
and the details, on the GPU queue. Run alone: ``build(backend).launch()``.
"""

from __future__ import annotations

import gradio as gr

from mova.backends import Backend
from mova.settings import ModelInfo
from ui import generate

MODE = generate.MODES["v2a"]


def render(backend: Backend, info: ModelInfo | None = None, examples: list | None = None) -> generate.GenerateTab:
    return generate.render(backend, info, mode=MODE, examples=examples)


def build(backend: Backend) -> gr.Blocks:
    return generate.build(backend, mode=MODE)
