"""CFG comparison tab: one prompt and one seed, 2–4 guidance settings side by side (text CFG, text+bridge, dual
with s_B / s_T), each clip with its NFE, time, audio-visual offset (``mova.eval.av_offset``) and loudness. The
optional first frame, last frame, audio (audio → video) or video (video → audio) compare a mode's guidance.

Public API event: ``compare(prompt, image, ..., enabled_1, guidance_1, text_scale_1, bridge_scale_1, ...,
enabled_4, ...)`` → four clips (``None`` where a setting is off), their figures, a summary table, the seed used and
the details (JSON list). It runs on the GPU queue (``concurrency_id="gpu"``), the clips one after another.

Run alone: ``build(backend).launch()``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import gradio as gr

from mova.backends import Backend
from mova.settings import GenerationSettings, ModelInfo
from ui.generate import (
    GPU_CONCURRENCY_ID,
    api_docstring,
    form_settings,
    gpu_validator,
    mcp_tool,
    optional_inputs,
    run_job,
    user_errors,
    with_api_signature,
)
from ui.widgets import (
    UI_MAX_SEED,
    GenerationControls,
    clip_details,
    figures_markdown,
    guidance_title,
    render_controls,
    render_guidance,
    show_warnings,
)

SLOTS = 4
MIN_SETTINGS = 2
# (enabled, mode, s_T, s_B): the released text CFG, text+bridge, the paper's dual CFG (s_B 3.5), a weaker text CFG.
DEFAULT_SETTINGS = (
    (True, "text", 5.0, 1.0),
    (True, "text+bridge", 5.0, 1.0),
    (True, "dual", 5.0, 3.5),
    (False, "text", 2.5, 1.0),
)
TABLE_HEADERS = ("setting", "guidance", "text_scale", "bridge_scale", "NFE", "time (s)", "A/V offset (frames)",
                 "loudness (LUFS)", "seed")


@dataclass
class SettingSlot:
    enabled: gr.Checkbox
    guidance: gr.Radio
    text_scale: gr.Slider
    bridge_scale: gr.Slider
    video: gr.Video
    figures: gr.Markdown


@dataclass
class CompareTab:
    controls: GenerationControls
    slots: list[SettingSlot]
    button: gr.Button
    table: gr.Dataframe
    details: gr.JSON


def slot_settings(base: GenerationSettings, values: dict[str, Any]) -> list[tuple[int, GenerationSettings]]:
    """(slot number, settings) for each enabled slot, all with ``base``'s prompt, sizes and seed."""
    chosen = []
    for k in range(1, SLOTS + 1):
        if values.get(f"enabled_{k}"):
            chosen.append((k, base.replace(guidance=values.get(f"guidance_{k}", "text"),
                                           text_scale=values.get(f"text_scale_{k}", 5.0),
                                           bridge_scale=values.get(f"bridge_scale_{k}", 1.0))))
    if not MIN_SETTINGS <= len(chosen) <= SLOTS:
        raise ValueError(f"enabled_1 … enabled_{SLOTS}: the comparison needs {MIN_SETTINGS} to {SLOTS} enabled "
                         f"settings, got {len(chosen)}")
    return chosen


def render(backend: Backend, info: ModelInfo | None = None) -> CompareTab:
    info = info or backend.model_info()
    gr.Markdown("One prompt and one seed, generated with 2–4 guidance settings. Compare the clips and their "
                "figures: NFE (denoiser evaluations), time, audio-visual offset (positive = audio late) and loudness.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            controls = render_controls(info, "compare", media=("image", "last_image", "audio", "video"),
                                       with_guidance=False)
        with gr.Column(scale=1, min_width=320):
            slots_inputs = []
            for k, (enabled, mode, s_t, s_b) in enumerate(DEFAULT_SETTINGS, start=1):
                with gr.Group():
                    check = gr.Checkbox(enabled, label=f"Setting {k}", elem_id=f"compare-enabled-{k}")
                    guidance, text_scale, bridge_scale = render_guidance(
                        info, f"compare-{k}", mode=mode, text_scale=s_t, bridge_scale=s_b, label_suffix=f"_{k}")
                slots_inputs.append((check, guidance, text_scale, bridge_scale))
            with gr.Row():
                button = gr.Button("Compare", variant="primary", elem_id="compare-run", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="compare-stop", scale=1)
    slots: list[SettingSlot] = []
    with gr.Row(equal_height=False):
        for k, (check, guidance, text_scale, bridge_scale) in enumerate(slots_inputs, start=1):
            with gr.Column(min_width=220):
                video = gr.Video(label=f"Setting {k}", interactive=False, buttons=["download"],
                                 elem_id=f"compare-video-{k}")
                figures = gr.Markdown(label=f"figures_{k}", elem_id=f"compare-figures-{k}")
            slots.append(SettingSlot(check, guidance, text_scale, bridge_scale, video, figures))
    table = gr.Dataframe(headers=list(TABLE_HEADERS), label="Summary", interactive=False, elem_id="compare-table")
    with gr.Accordion("Details", open=False):
        details = gr.JSON(label="details", elem_id="compare-details")

    inputs: dict[str, Any] = dict(controls.inputs())
    for k, slot in enumerate(slots, start=1):
        inputs.update({f"enabled_{k}": slot.enabled, f"guidance_{k}": slot.guidance,
                       f"text_scale_{k}": slot.text_scale, f"bridge_scale_{k}": slot.bridge_scale})

    def plan(values: dict[str, Any]) -> list[tuple[int, GenerationSettings]]:
        slots_values = {k: values.pop(k) for k in list(values) if k.rsplit("_", 1)[-1].isdigit()}
        base = form_settings(values, image_required=None)
        if base.seed is None:  # one random seed shared by every setting
            base = base.replace(seed=random.SystemRandom().randrange(UI_MAX_SEED + 1))
        chosen = slot_settings(base, slots_values)
        for _, settings in chosen:
            backend.check(settings)
        return chosen

    def check(**values: Any) -> None:
        plan(values)

    @user_errors
    async def compare(progress: gr.Progress = gr.Progress(), **values: Any) -> dict:
        chosen = plan(values)

        def run_all(report) -> list:
            clips = []
            for i, (k, settings) in enumerate(chosen, start=1):
                title = guidance_title(settings.guidance, settings.text_scale, settings.bridge_scale)
                report.prefix = f"[{i}/{len(chosen)}] {title}: "
                clips.append((k, title, backend.generate(settings, report)))
            return clips

        clips = await run_job(run_all, progress)
        show_warnings(clips[0][2])  # the prompt is the same for every setting
        out: dict[Any, Any] = {}
        rows, all_details = [], []
        by_slot = {}
        for k, title, clip in clips:
            settings = dict(chosen)[k]
            by_slot[k] = (title, clip)
            rows.append([f"Setting {k}", settings.guidance, settings.text_scale, settings.bridge_scale, clip.nfe,
                         round(clip.timings.get("wall", 0.0), 2),
                         "n/a" if clip.av_offset_frames is None else round(clip.av_offset_frames, 2),
                         "silent" if clip.loudness_lufs is None else clip.loudness_lufs, clip.seed])
            all_details.append({"setting": k, **clip_details(clip)})
        for k, slot in enumerate(slots, start=1):  # plain values (a path, text), so API results stay simple
            if k in by_slot:
                title, clip = by_slot[k]
                out[slot.video] = clip.video_path
                out[slot.figures] = figures_markdown(clip, title=f"Setting {k}: {title}")
            else:
                out[slot.video] = None
                out[slot.figures] = f"*Setting {k} is off.*"
        out[table] = rows
        out[controls.seed] = chosen[0][1].seed
        out[details] = all_details
        return out

    with_api_signature(compare, list(inputs), optional=optional_inputs(inputs))
    slot_help = {}
    for k in range(1, len(slots) + 1):
        slot_help.update({f"enabled_{k}": f"generate with setting {k}", f"guidance_{k}": f"setting {k}'s guidance",
                          f"text_scale_{k}": f"setting {k}'s text_scale",
                          f"bridge_scale_{k}": f"setting {k}'s bridge_scale"})
    mcp_tool(compare, "compare", api_docstring(
        "Generate one prompt with one seed under 2 to 4 guidance settings (CFG modes and scales) side by side, to "
        "compare how guidance changes the video and its synchronised audio.", list(inputs),
        "one mp4 and its figures per setting (None and a note for a setting that is off), a summary table, the "
        "seed used and every clip's details (JSON)", slot_help))
    outputs = [*(s.video for s in slots), *(s.figures for s in slots), table, controls.seed, details]
    done = button.click(
        compare, inputs_kwargs=inputs, outputs=outputs, api_name="compare", preprocess=False,
        validator=gpu_validator(check, list(inputs)),
        concurrency_id=GPU_CONCURRENCY_ID, concurrency_limit=backend.concurrency_limit,
    )
    stop.click(None, cancels=[done], api_visibility="private", queue=False)
    return CompareTab(controls, slots, button, table, details)


def build(backend: Backend) -> gr.Blocks:
    with gr.Blocks(title="MOVA Studio · CFG comparison") as demo:
        render(backend)
    return demo
