"""What the tabs are built from: the generation form derived from the settings' declarations (``mova.settings``),
the clip's figures, the demo-world examples and the session history. The request path a click takes (values →
settings → backend, errors, progress, cancellation) is ``ui.generate``'s.

Labels of technical controls are the settings' field names (``num_frames``, ``fps``, ``num_inference_steps``,
``text_scale``, ``bridge_scale``, ``seed``...), the same as the CLI flags and the API parameter names. Nothing here
imports torch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import gradio as gr

from mova.outputs import Clip
from mova.settings import ModelInfo, Setting, setting_fields

logger = logging.getLogger(__name__)

UI_MAX_SEED = 2**32 - 1  # seeds the browser shows exactly (JS numbers are exact up to 2**53)
MAX_UPLOAD = "25mb"  # launch(max_file_size=...): first frames larger than this are refused at upload
GUIDANCE_HELP = MappingProxyType({
    "none": "no CFG (NFE 1)",
    "text": "text CFG, the released MOVA behaviour (NFE 2)",
    "text+bridge": "text and bridge dropped together (NFE 2)",
    "dual": "dual CFG: s_B for the bridge, s_T for the text (NFE 3)",
})
NO_LORA = "none"
MODEL_DEFAULT_HINT = "empty: the model's default"


# ----------------------------------------------------------------------------------------------------------------
# Controls
# ----------------------------------------------------------------------------------------------------------------


def resolution_label(height: int, width: int) -> str:
    shape = "square" if height == width else ("landscape" if width > height else "portrait")
    return f"{height}×{width} ({shape})"


def resolution_value(height: int, width: int) -> str:
    return f"{height}x{width}"


def parse_resolution(value: str) -> tuple[int, int]:
    try:
        h, w = (int(part) for part in str(value).lower().split("x"))
    except ValueError:
        raise ValueError(f"resolution={value!r} is invalid: expected HEIGHTxWIDTH, e.g. 352x640") from None
    return h, w


def duration_text(num_frames: Any, fps: Any) -> str:
    try:
        seconds = float(num_frames) / float(fps)
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    return f"≈ {seconds:.2f} s of video and audio" if math.isfinite(seconds) else ""


@dataclass
class GenerationControls:
    """The components of one generation form: ``by_name`` maps each API parameter (the settings' field names, in
    their order, with the UI's ``randomize_seed`` after ``seed``) to its component."""

    by_name: dict[str, gr.components.Component]
    resolution: gr.Dropdown

    def __getattr__(self, name: str) -> Any:  # controls.prompt, controls.seed, …
        try:
            return self.__dict__["by_name"][name]
        except KeyError:
            raise AttributeError(name) from None

    def inputs(self) -> dict[str, gr.components.Component]:
        """API parameter name → component (``inputs_kwargs``)."""
        return dict(self.by_name)


MEDIA_LABELS = MappingProxyType({"image": "First frame", "last_image": "Last frame", "audio": "Audio",
                                  "video": "Video", "extend": "Clip to extend", "retake": "Clip to retake"})


def media_control(name: str, spec: Setting, prefix: str, required: bool) -> Any:
    """The upload control of a media setting (``Setting.media``): an image, an audio file or a video file."""
    label = MEDIA_LABELS.get(name, name) + ("" if required else " (optional)")
    elem_id = f"{prefix}-{name.replace('_', '-')}"
    if spec.media == "image":
        return gr.Image(label=label, type="filepath", sources=["upload", "clipboard"], height=240, elem_id=elem_id)
    if spec.media == "audio":
        return gr.Audio(label=label, type="filepath", sources=["upload"], elem_id=elem_id)
    return gr.Video(label=label, sources=["upload"], height=240, elem_id=elem_id)


def render_controls(info: ModelInfo, prefix: str, *, with_image: bool = False, image_required: bool = True,
                    with_guidance: bool = True, media: tuple[str, ...] = (), required: tuple[str, ...] = (),
                    main: tuple[str, ...] = (), hide: tuple[str, ...] = ()) -> GenerationControls:
    """Build the form inside the current layout. ``prefix`` makes elem_ids unique per tab (``it2va-prompt``).

    ``media``: the media settings the tab takes (uploads, in this order; ``with_image`` adds the first frame),
    ``required`` those that must be given; ``main``: mode settings laid out below the prompt (``retake_start``,
    ``num_windows``, …) instead of in the Advanced box; ``hide``: advanced settings the tab leaves out (their defaults
    apply). The main settings get a hand-made layout; every other
    setting (group ``"advanced"`` in ``mova.settings``) gets a plain control in the Advanced box from its
    declaration — label = its name, info = its help, its range — so a new setting needs no UI code."""
    decl = {name: spec for name, _, spec in setting_fields()}
    defaults = {name: default for name, default, _ in setting_fields()}
    c: dict[str, Any] = {}
    media = (("image",) if with_image else ()) + tuple(m for m in media if not (with_image and m == "image"))
    required = tuple(required) + (("image",) if with_image and image_required else ())
    if media:
        with gr.Row():
            for name in media:
                c[name] = media_control(name, decl[name], prefix, name in required)
    c["prompt"] = gr.Textbox(label="Prompt", lines=4, max_lines=12, elem_id=f"{prefix}-prompt",
                             placeholder=decl["prompt"].help[0].upper() + decl["prompt"].help[1:] + ".")
    presets = [(resolution_label(h, w), resolution_value(h, w)) for h, w in info.resolutions]
    with gr.Row():
        resolution = gr.Dropdown(presets, value=presets[0][1], label="Resolution (height×width)",
                                 elem_id=f"{prefix}-resolution", scale=2)
        c["fps"] = gr.Slider(1, max(60, math.ceil(info.default_fps)), value=info.default_fps, step=1, label="fps",
                             info=decl["fps"].help, elem_id=f"{prefix}-fps", scale=1)
    c["num_frames"] = gr.Slider(1, info.max_num_frames, value=info.default_num_frames, step=info.frame_multiple,
                                label="num_frames", info=decl["num_frames"].help, elem_id=f"{prefix}-num-frames")
    duration = gr.Markdown(duration_text(info.default_num_frames, info.default_fps), elem_id=f"{prefix}-duration")
    c["num_inference_steps"] = gr.Slider(1, max(100, info.default_num_inference_steps),
                                         value=info.default_num_inference_steps, step=1, label="num_inference_steps",
                                         info=decl["num_inference_steps"].help, elem_id=f"{prefix}-steps")
    if main:
        with gr.Row():
            for name in main:
                c[name] = generic_control(name, defaults[name], decl[name], info, prefix)
    if with_guidance:
        c["guidance"], c["text_scale"], c["bridge_scale"] = render_guidance(info, prefix)
    with gr.Row():
        seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=UI_MAX_SEED, elem_id=f"{prefix}-seed",
                         info="the seed used is written here after each run")
        randomize_seed = gr.Checkbox(True, label="randomize seed", elem_id=f"{prefix}-randomize-seed")
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            height = gr.Number(info.default_height, label="height", precision=0, step=info.size_multiple,
                               info=decl["height"].help, elem_id=f"{prefix}-height")
            width = gr.Number(info.default_width, label="width", precision=0, step=info.size_multiple,
                              info=decl["width"].help, elem_id=f"{prefix}-width")
        advanced = {}
        for name, default, spec in setting_fields():
            if spec.group == "advanced" and name not in ("lora", "lora_scale", *main, *hide):
                advanced[name] = generic_control(name, default, spec, info, prefix)
        with gr.Row(visible=info.has_lora):
            lora = gr.Dropdown([NO_LORA, *info.lora_adapters], value=NO_LORA, label="lora",
                               info=decl["lora"].help, elem_id=f"{prefix}-lora")
            lora_scale = gr.Slider(decl["lora_scale"].low, decl["lora_scale"].high, value=1.0, step=0.05,
                                   label="lora_scale", info=decl["lora_scale"].help, elem_id=f"{prefix}-lora-scale")
    c.update(advanced, height=height, width=width, seed=seed, lora=lora, lora_scale=lora_scale)

    # Presets fill height/width; frames and fps show the clip length. Browser-only events, not part of the API.
    resolution.change(lambda value: parse_resolution(value), resolution, [height, width], queue=False,
                      api_visibility="private", show_progress="hidden")
    gr.on([c["num_frames"].change, c["fps"].change], duration_text, [c["num_frames"], c["fps"]], duration,
          queue=False, api_visibility="private", show_progress="hidden")
    order = [name for name, _, _ in setting_fields() if name in c]
    by_name = {}
    for name in order:
        by_name[name] = c[name]
        if name == "seed":
            by_name["randomize_seed"] = randomize_seed
    return GenerationControls(by_name, resolution)


def generic_control(name: str, default: Any, spec: Setting, info: ModelInfo, prefix: str) -> Any:
    """The control of a setting from its declaration alone: a textbox, a dropdown, a checkbox or a number box."""
    elem_id = f"{prefix}-{name.replace('_', '-')}"
    hint = None
    if spec.model_default:  # shown when the model has one (an empty Gradio number box reads as 0)
        default, hint = info.model_defaults().get(name, default), MODEL_DEFAULT_HINT
    if spec.choices:
        return gr.Dropdown(list(spec.choices), value=default, label=name, info=spec.help, elem_id=elem_id)
    if spec.kind is bool:
        return gr.Checkbox(bool(default), label=name, info=spec.help, elem_id=elem_id)
    if spec.kind is str:
        return gr.Textbox(default or "", label=name, info=spec.help, placeholder=hint, elem_id=elem_id)
    bounds = {} if default is None else dict(minimum=spec.low, maximum=spec.high)
    return gr.Number(default, label=name, info=spec.help, precision=0 if spec.kind is int else None, placeholder=hint,
                     elem_id=elem_id, **bounds)


def render_guidance(info: ModelInfo, prefix: str, *, mode: str | None = None, text_scale: float | None = None,
                    bridge_scale: float | None = None, label_suffix: str = "") -> tuple[gr.Radio, gr.Slider, gr.Slider]:
    """Guidance mode and its scales (s_T, s_B)."""
    default = info.default_guidance
    mode = mode or default.mode
    guidance = gr.Radio(list(info.guidance_modes), value=mode, label=f"guidance{label_suffix}",
                        info=GUIDANCE_HELP.get(mode, ""), elem_id=f"{prefix}-guidance")
    with gr.Row():
        text = gr.Slider(0.0, 15.0, value=default.text_scale if text_scale is None else text_scale, step=0.5,
                         label=f"text_scale{label_suffix}", info="s_T", elem_id=f"{prefix}-text-scale")
        bridge = gr.Slider(0.0, 10.0, value=default.bridge_scale if bridge_scale is None else bridge_scale, step=0.5,
                           label=f"bridge_scale{label_suffix}", info="s_B (dual only)",
                           interactive=mode == "dual", elem_id=f"{prefix}-bridge-scale")
    guidance.change(lambda m: (gr.Radio(info=GUIDANCE_HELP.get(m, "")), gr.Slider(interactive=m == "dual")),
                    guidance, [guidance, bridge], queue=False, api_visibility="private", show_progress="hidden")
    return guidance, text, bridge


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------


def format_offset(clip: Clip) -> str:
    if clip.av_offset_frames is None:
        return "n/a (no motion or no onsets)"
    return f"{clip.av_offset_frames:+.2f} frames ({clip.av_offset_ms:+.0f} ms)"


def format_loudness(clip: Clip) -> str:
    return "silent" if clip.loudness_lufs is None else f"{clip.loudness_lufs:.1f} LUFS"


def figures_markdown(clip: Clip, title: str | None = None) -> str:
    """One clip's figures: seed, NFE, time, audio-visual offset, loudness."""
    lines = [f"**{title}**"] if title else []
    lines += [
        f"- seed: `{clip.seed}`",
        f"- NFE: {clip.nfe}",
        f"- time: {clip.timings.get('wall', clip.timings.get('total', 0.0)):.1f} s "
        f"(denoise {clip.timings.get('denoise', 0.0):.1f} s)",
        f"- A/V offset: {format_offset(clip)}",
        f"- loudness: {format_loudness(clip)}",
        f"- {clip.height}×{clip.width}, {clip.num_frames} frames at {clip.fps:g} fps "
        f"({clip.duration_s:.2f} s)",
    ]
    lines += [f"- ⚠ {warning}" for warning in clip.warnings]
    return "\n".join(lines)


def show_warnings(clip: Clip) -> None:
    """Each of the clip's warnings (e.g. prompt text the model cannot read) as a toast in the browser."""
    for warning in clip.warnings:
        gr.Warning(warning)


def guidance_title(mode: str, text_scale: float, bridge_scale: float) -> str:
    if mode == "dual":
        return f"dual · s_B {bridge_scale:g} · s_T {text_scale:g}"
    if mode == "none":
        return "none"
    return f"{mode} · s_T {text_scale:g}"


def clip_details(clip: Clip) -> dict[str, Any]:
    """JSON-safe details for the API and the Details panel."""
    return json.loads(json.dumps(clip.to_dict(), default=str))


# ----------------------------------------------------------------------------------------------------------------
# Examples and history
# ----------------------------------------------------------------------------------------------------------------


def demo_world_examples(folder: Path, n: int = 4) -> list[dict[str, str]]:
    """Rows of demo-world held-out clips, written once under ``folder``: ``caption``, ``image`` (the first frame,
    PNG), ``audio`` (the clip's sound, WAV) and ``video`` (the clip with its sound, MP4) — the inputs of every
    generation tab's examples. Empty when the demo world (``train/``) is not present or fails."""
    manifest = folder / "examples.json"
    keys = ("image", "audio", "video")
    try:
        if manifest.is_file():
            rows = json.loads(manifest.read_text(encoding="utf-8"))
            if len(rows) >= n and all(Path(r.get(k, "")).is_file() for r in rows[:n] for k in keys):
                return rows[:n]
        from PIL import Image

        from mova import media
        from train.demo_world import held_out_prompts

        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for item in held_out_prompts(n):
            clip, stem = item.clip, folder / item.prompt_id
            Image.fromarray(item.first_frame).save(stem.with_suffix(".png"))
            media.write_wav(stem.with_suffix(".wav"), clip.audio, clip.sample_rate)
            media.write_mp4(stem.with_suffix(".mp4"), clip.video, clip.fps, clip.audio, clip.sample_rate)
            rows.append({"image": str(stem.with_suffix(".png")), "audio": str(stem.with_suffix(".wav")),
                         "video": str(stem.with_suffix(".mp4")), "caption": item.caption, "scene": item.scene})
        manifest.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        return rows
    except Exception as exc:  # noqa: BLE001 - examples are a convenience; the app works without them
        logger.warning("no demo-world examples: %s", exc)
        return []


def add_to_history(history: list[dict[str, Any]] | None, kind: str, details: dict[str, Any] | None) -> list:
    """A new list (never mutate State in place) with one entry per generated clip."""
    entries = list(history or [])
    if details and details.get("video_path"):
        settings = details.get("settings", {})
        entries.append({
            "time": time.strftime("%H:%M:%S"), "kind": kind, "prompt": str(settings.get("prompt", ""))[:80],
            "seed": details.get("seed"), "nfe": details.get("nfe"), "seconds": details.get("timings", {}).get("wall"),
            "file": Path(details["video_path"]).name,
        })
    return entries


def history_markdown(history: list[dict[str, Any]] | None) -> str:
    if not history:
        return "No clips yet in this session."
    rows = ["| time | tab | prompt | seed | NFE | s | file |", "|---|---|---|---|---|---|---|"]
    for e in reversed(history):
        prompt = e["prompt"].replace("|", "\\|")
        rows.append(f"| {e['time']} | {e['kind']} | {prompt} | {e['seed']} | {e['nfe']} | {e['seconds']} | "
                    f"{e['file']} |")
    return "\n".join(rows)
