"""MOVA Studio's Gradio UI: one module per tab, composed by :func:`build_app`.

    from ui import build_app, launch_options
    app = build_app(backend, arena_service)          # backend: a mova.backends.Backend
    app.launch(**launch_options(backend, arena_service))

Tabs: Image+Text → Video+Audio (``ui.generate``, with an optional last frame), Text → Video+Audio (``ui.generate``),
Audio → Video (``ui.audio_to_video``), Video → Audio (``ui.video_to_audio``), Extend & retake (``ui.extend_retake``),
Prompt rewriting (``ui.prompting``), CFG comparison (``ui.cfg_compare``); with an arena service, the Arena and
Leaderboard pages (``ui.arena``, routes ``/arena`` and ``/leaderboard``). Named API endpoints: ``/generate_i2va``,
``/generate_t2va``, ``/generate_a2v``, ``/generate_v2a``, ``/extend``, ``/retake``, ``/compare`` (GPU queue, one job
at a time), ``/describe``, ``/rewrite``, ``/first_frame_prompt``, and on the arena
page ``/next_battle``, ``/vote``.

This package never imports torch and holds no module-level mutable state: per-user data lives in ``gr.State``,
the model behind the backend object.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import gradio as gr

if TYPE_CHECKING:  # pragma: no cover
    from mova.arena.service import ArenaService
    from mova.backends import Backend

__all__ = ["build_app", "launch_options", "TAB_IDS", "QUEUE_MAX_SIZE"]

TAB_IDS = MappingProxyType({"it2va": "Image+Text → Video+Audio", "t2va": "Text → Video+Audio",
                           "a2v": "Audio → Video", "v2a": "Video → Audio", "extend_retake": "Extend & retake",
                           "prompting": "Prompt rewriting", "compare": "CFG comparison"})
# Gradio's max_size counts every queued event of the app together: kept far above the GPU group's own bound
# (ui.widgets.GPU_QUEUE_MAX_WAITING), so waiting generations never refuse an arena vote or a prompt rewrite.
QUEUE_MAX_SIZE = 1024
CACHE_CLEANUP = (3600, 86400)  # hourly, drop Gradio's cached copies older than a day (clips stay in outputs/)


def header_markdown(backend: Backend, arena: bool) -> str:
    info = backend.model_info()
    text = (f"# MOVA Studio\nJoint video + audio generation with MOVA · model **{info.name}** · backend "
            f"**{info.backend}** ({info.device}")
    text += f", offload {info.offload})" if info.offload != "none" else ")"
    if info.max_gpu_seconds:
        text += f" · at most {info.max_gpu_seconds:.0f} s of GPU per clip"
    if arena:
        text += " · [Arena](/arena) · [Leaderboard](/leaderboard)"
    return text


def build_app(backend: Backend, arena_service: ArenaService | None = None, *, examples: bool = True,
              prompt_provider: Any = None) -> gr.Blocks:
    """The whole app for ``backend``; can be built any number of times (no shared state between builds).
    ``prompt_provider``: the prompt-rewriting tab's (default: ``MOVA_PROMPT_PROVIDER``, else offline)."""
    from ui import audio_to_video, cfg_compare, extend_retake, generate, prompting, video_to_audio
    from ui.widgets import demo_world_examples, history_markdown

    info = backend.model_info()
    example_rows = demo_world_examples(backend.data_dir / "examples") if examples else []
    with gr.Blocks(title="MOVA Studio", delete_cache=CACHE_CLEANUP) as app:
        gr.Markdown(header_markdown(backend, arena_service is not None), elem_id="header")
        history = gr.State([])  # this session's clips
        with gr.Tabs(selected="it2va", elem_id="tabs") as tabs:
            with gr.Tab(TAB_IDS["it2va"], id="it2va", elem_id="tab-it2va"):
                it2va = generate.render(backend, info, with_image=True, examples=example_rows)
            with gr.Tab(TAB_IDS["t2va"], id="t2va", elem_id="tab-t2va"):
                t2va = generate.render(backend, info, with_image=False, examples=example_rows)
            with gr.Tab(TAB_IDS["a2v"], id="a2v", elem_id="tab-a2v"):
                a2v = audio_to_video.render(backend, info, examples=example_rows)
            with gr.Tab(TAB_IDS["v2a"], id="v2a", elem_id="tab-v2a"):
                v2a = video_to_audio.render(backend, info, examples=example_rows)
            with gr.Tab(TAB_IDS["extend_retake"], id="extend_retake", elem_id="tab-extend-retake"):
                extend, retake = extend_retake.render(backend, info, examples=example_rows)
            with gr.Tab(TAB_IDS["prompting"], id="prompting", elem_id="tab-prompting"):
                rewriting = prompting.render(prompt_provider)
            with gr.Tab(TAB_IDS["compare"], id="compare", elem_id="tab-compare"):
                cfg_compare.render(backend, info)
        with gr.Accordion("This session's clips", open=False):
            history_view = gr.Markdown(history_markdown([]), elem_id="history")

        for tab in (it2va, t2va, a2v, v2a, extend, retake):
            tab.done.success(_history_recorder(tab.kind), [history, tab.details], [history, history_view],
                             api_visibility="private", queue=False, show_progress="hidden")

        # "Send to generation": the rewritten prompt (else the raw one) and the first frame into a generation tab.
        rewriting.send_it2va.click(
            lambda text, raw, image: (text or raw, image, gr.Tabs(selected="it2va")),
            [rewriting.rewritten, rewriting.prompt, rewriting.image],
            [it2va.controls.prompt, it2va.controls.image, tabs],
            api_visibility="private", queue=False)
        rewriting.send_t2va.click(
            lambda text, raw: (text or raw, gr.Tabs(selected="t2va")), [rewriting.rewritten, rewriting.prompt],
            [t2va.controls.prompt, tabs], api_visibility="private", queue=False)
    app.queue(max_size=QUEUE_MAX_SIZE)
    if arena_service is not None:
        from ui.arena import add_arena_pages

        add_arena_pages(app, arena_service)
    return app


def _history_recorder(kind: str):
    from ui.widgets import add_to_history, history_markdown

    def record(history: list, details: dict | None) -> tuple[list, str]:
        entries = add_to_history(history, kind, details)
        return entries, history_markdown(entries)

    return record


def launch_options(backend: Backend, arena_service: ArenaService | None = None) -> dict[str, Any]:
    """``launch()`` arguments the app needs: the folders it serves files from, the upload size limit."""
    from ui.widgets import MAX_UPLOAD

    paths = list(backend.allowed_paths())
    if arena_service is not None:
        from ui.arena import allowed_paths

        paths += allowed_paths(arena_service)
    return {"allowed_paths": paths, "max_file_size": MAX_UPLOAD}
