"""Audio → Video tab: a sound kept as given (held clean, t = 0) while the picture is generated to move with it, from
the prompt and an optional first frame (``mova.modes``, kind ``a2v``).

Public API event: ``generate_a2v(audio, prompt, ..., image, ...)`` → the mp4 (carrying the given sound), the seed,
the figures and the details, on the GPU queue. Run alone: ``build(backend).launch()``.
"""

from __future__ import annotations

import gradio as gr

from mova.backends import Backend
from mova.settings import ModelInfo
from ui import generate

MODE = generate.MODES["a2v"]


def render(backend: Backend, info: ModelInfo | None = None, examples: list | None = None) -> generate.GenerateTab:
    return generate.render(backend, info, mode=MODE, examples=examples)


def build(backend: Backend) -> gr.Blocks:
    return generate.build(backend, mode=MODE)
