"""Extend & retake tab: continue a clip with its sound by ``num_windows`` windows (``extend``), or generate a span
of it again — picture, sound or both, partly re-noised with ``strength`` < 1 — keeping the rest (``retake``)
(``mova.modes``). Two inner tabs, one event each.

Public API events: ``extend(extend, prompt, ..., num_windows, crossfade)`` and ``retake(retake, prompt, ...,
retake_start, retake_end, retake_modality, strength)`` → the mp4, the seed, the figures and the details, on the GPU
queue. Run alone: ``build(backend).launch()``.
"""

from __future__ import annotations

import gradio as gr

from mova.backends import Backend
from mova.settings import ModelInfo
from ui import generate

MODES = (generate.MODES["extend"], generate.MODES["retake"])


def render(backend: Backend, info: ModelInfo | None = None,
           examples: list | None = None) -> tuple[generate.GenerateTab, ...]:
    tabs = []
    with gr.Tabs(elem_id="extend-retake-tabs"):
        for mode in MODES:
            with gr.Tab(mode.title, id=mode.kind, elem_id=f"tab-{mode.kind}"):
                tabs.append(generate.render(backend, info, mode=mode, examples=examples))
    return tuple(tabs)


def build(backend: Backend) -> gr.Blocks:
    with gr.Blocks(title="MOVA Studio · Extend & retake") as demo:
        render(backend)
    return demo
