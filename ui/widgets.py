"""Pieces shared by the generation tabs: controls built from the model's facts, the request they make, a progress
adapter, error handling, figures, examples and the session history.

Labels of technical controls are the contract words (``num_frames``, ``fps``, ``num_inference_steps``,
``text_scale``, ``bridge_scale``, ``seed``...), the same as the CLI flags and the API parameter names. Nothing here
imports torch: the UI talks to a :class:`mova.backends.Backend` only.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from types import MappingProxyType
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from mova import validation as check
from mova.backends import GenerationRequest, GenerationResponse, ModelInfo

logger = logging.getLogger(__name__)

GPU_CONCURRENCY_ID = "gpu"  # every event that runs the model queues under this id
GPU_QUEUE_MAX_WAITING = 64  # a new generation is refused while this many wait for the GPU
UI_MAX_SEED = 2**32 - 1  # seeds the browser shows exactly (JS numbers are exact up to 2**53)
MAX_UPLOAD = "25mb"  # launch(max_file_size=...): first frames larger than this are refused at upload
GUIDANCE_HELP = MappingProxyType({
    "none": "no CFG (NFE 1)",
    "text": "text CFG, the released MOVA behaviour (NFE 2)",
    "text+bridge": "text and bridge dropped together (NFE 2)",
    "dual": "dual CFG: s_B for the bridge, s_T for the text (NFE 3)",
})
STAGE_LABELS = MappingProxyType({
    "denoise": "Denoising",
    "done": "Decoded video and audio",
    "encode": "Writing the mp4",
    "waiting for the GPU": "Waiting for the GPU",
})
NO_LORA = "none"


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


_SERVER_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s'\"/,;:()]+)+/([^\s'\"/,;:()]+)")


def public_message(text: str) -> str:
    """``text`` with every absolute server path cut to its file name (``/tmp/gradio/ab12/x.png`` → ``x.png``)."""
    return _SERVER_PATH.sub(r"\1", text)


def user_errors(fn: Callable) -> Callable:
    """Turn a ValueError into a gr.Error with its text; any other failure into a short message (logged with its
    traceback on the server). The app keeps serving either way, and no message shows a server path."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as exc:
            raise gr.Error(public_message(str(exc)), title="Invalid input", print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - the boundary between the model and the user
            logger.exception("%s failed", getattr(fn, "__name__", "handler"))
            raise gr.Error(public_message(f"{type(exc).__name__}: {exc}. The app is still running; try again or "
                                          "change the settings."), title="Failed", print_exception=False) from None

    return wrapper


def gpu_validator(check: Callable[..., None], names: list[str]) -> Callable:
    """A Gradio ``validator=`` for a GPU event: runs ``check(**values)`` before the job is queued, so a bad value
    (from the browser or an API client) is refused at once with a message on the input it names, and refuses a new
    job while ``GPU_QUEUE_MAX_WAITING`` GPU jobs already wait. ``names``: the event's inputs, in order."""
    blocks = gr.context.Context.root_block  # the app being built; its queue exists once it is launched

    def validate(**values: Any) -> list[dict[str, Any]]:
        problem: tuple[str, str] | None = None
        waiting = waiting_gpu_jobs(blocks)
        if waiting >= GPU_QUEUE_MAX_WAITING:
            problem = (names[0], f"the GPU queue is full ({waiting} clips waiting): try again in a few minutes")
        else:
            try:
                check(**values)
            except ValueError as exc:
                message = public_message(str(exc))
                problem = (_field_of(message, names), message)
            except Exception as exc:  # noqa: BLE001 - never a traceback for the user
                logger.exception("validation failed")
                problem = (names[0], public_message(f"{type(exc).__name__}: {exc}"))
        return [gr.validate(problem is None or name != problem[0], problem[1] if problem and name == problem[0]
                            else "") for name in names]

    return validate


_FIELD_ALIASES = MappingProxyType({"mode": "guidance", "guidance_mode": "guidance", "this": "num_inference_steps"})


def _field_of(message: str, names: list[str]) -> str:
    """The input a validation message is about: its first word (``height=65 is …`` → ``height``), else the first."""
    word = re.match(r"[a-z_]+", message)
    name = _FIELD_ALIASES.get(word.group(0), word.group(0)) if word else ""
    return name if name in names else names[0]


def waiting_gpu_jobs(blocks: gr.Blocks | None) -> int:
    """Jobs waiting (not yet running) in the app's GPU queue group. Reads Gradio's queue, whose ``max_size``
    counts every group together (a full GPU queue would refuse arena votes too), so the GPU group gets its own
    bound here; the queue-bound test in tests/test_app_security.py fails if Gradio renames these attributes."""
    queue = getattr(blocks, "_queue", None)
    groups = getattr(queue, "event_queue_per_concurrency_id", None) or {}
    group = groups.get(GPU_CONCURRENCY_ID)
    return len(getattr(group, "queue", ())) if group is not None else 0


def with_api_signature(fn: Callable, names: list[str], optional: tuple[str, ...] = ()) -> Callable:
    """Give a ``(progress, **values)`` handler an explicit keyword signature, so the API page lists each parameter
    and ``optional`` ones (inputs whose component starts empty) default to ``None`` for API callers."""
    P = inspect.Parameter
    params = [P("progress", P.POSITIONAL_OR_KEYWORD, default=gr.Progress())]
    params += [P(name, P.KEYWORD_ONLY, default=None) if name in optional else P(name, P.KEYWORD_ONLY)
               for name in names]
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return fn


# ----------------------------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------------------------


class GradioProgress:
    """The pipeline's ``(stage, done, total)`` callback drawn on a ``gr.Progress`` bar, with the denoising step and
    an ETA. Picklable (a plain class holding the ``gr.Progress``), as ZeroGPU pickles a GPU task's arguments."""

    def __init__(self, progress: Any, prefix: str = "") -> None:
        self.progress = progress
        self.prefix = prefix
        self._denoise_start: float | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        label = STAGE_LABELS.get(stage, stage.capitalize())
        if stage == "denoise":
            now = time.monotonic()
            if self._denoise_start is None or done <= 1:
                self._denoise_start = now
                rate = None
            else:
                rate = (now - self._denoise_start) / max(done - 1, 1)
            eta = "" if rate is None else f" · ETA {format_seconds(rate * (total - done))}"
            desc = f"{self.prefix}Denoising step {done}/{total}{eta}"
        else:
            desc = f"{self.prefix}{label}"
        if self.progress is not None:
            self.progress((done, total), desc=desc, unit="steps" if stage == "denoise" else "")


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


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
    """The components of one generation form; :meth:`inputs` maps API parameter names to them."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    image: gr.Image | None
    resolution: gr.Dropdown
    height: gr.Number
    width: gr.Number
    num_frames: gr.Slider
    fps: gr.Slider
    num_inference_steps: gr.Slider
    guidance: gr.Radio | None
    text_scale: gr.Slider | None
    bridge_scale: gr.Slider | None
    video_shift: gr.Number
    audio_shift: gr.Number
    seed: gr.Number
    randomize_seed: gr.Checkbox
    loudness_lufs: gr.Number
    lora: gr.Dropdown
    lora_scale: gr.Slider

    def inputs(self) -> dict[str, gr.components.Component]:
        """API parameter name → component (``inputs_kwargs``); guidance controls only when the form has them."""
        names = ["image", "prompt", "negative_prompt", "height", "width", "num_frames", "fps", "num_inference_steps",
                 "guidance", "text_scale", "bridge_scale", "video_shift", "audio_shift", "seed", "randomize_seed",
                 "loudness_lufs", "lora", "lora_scale"]
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def render_controls(info: ModelInfo, prefix: str, *, with_image: bool, image_required: bool = True,
                    with_guidance: bool = True) -> GenerationControls:
    """Build the form inside the current layout. ``prefix`` makes elem_ids unique per tab (``it2va-prompt``)."""
    image = None
    if with_image:
        image = gr.Image(label="First frame" if image_required else "First frame (optional)", type="filepath",
                         sources=["upload", "clipboard"], height=240, elem_id=f"{prefix}-image")
    prompt = gr.Textbox(label="Prompt", lines=4, max_lines=12, elem_id=f"{prefix}-prompt",
                        placeholder='What is seen and heard: the scene, the motion, the sounds, dialogue in "quotes".')
    presets = [(resolution_label(h, w), resolution_value(h, w)) for h, w in info.resolutions]
    with gr.Row():
        resolution = gr.Dropdown(presets, value=presets[0][1], label="Resolution (height×width)",
                                 elem_id=f"{prefix}-resolution", scale=2)
        fps = gr.Slider(1, max(60, math.ceil(info.default_fps)), value=info.default_fps, step=1, label="fps",
                        elem_id=f"{prefix}-fps", scale=1)
    num_frames = gr.Slider(1, info.max_num_frames, value=info.default_num_frames, step=info.frame_multiple,
                           label="num_frames", info=f"{info.frame_multiple}k+1 frames",
                           elem_id=f"{prefix}-num-frames")
    duration = gr.Markdown(duration_text(info.default_num_frames, info.default_fps), elem_id=f"{prefix}-duration")
    num_inference_steps = gr.Slider(1, max(100, info.default_num_inference_steps),
                                    value=info.default_num_inference_steps, step=1, label="num_inference_steps",
                                    elem_id=f"{prefix}-steps")
    guidance = text_scale = bridge_scale = None
    if with_guidance:
        guidance, text_scale, bridge_scale = render_guidance(info, prefix)
    with gr.Row():
        seed = gr.Number(0, label="seed", precision=0, minimum=0, maximum=UI_MAX_SEED, elem_id=f"{prefix}-seed",
                         info="the seed used is written here after each run")
        randomize_seed = gr.Checkbox(True, label="randomize seed", elem_id=f"{prefix}-randomize-seed")
    with gr.Accordion("Advanced", open=False):
        negative_prompt = gr.Textbox("", label="Negative prompt", lines=2, elem_id=f"{prefix}-negative-prompt",
                                     placeholder="empty: the model's default negative prompt")
        with gr.Row():
            height = gr.Number(info.default_height, label="height", precision=0, step=info.size_multiple,
                               elem_id=f"{prefix}-height")
            width = gr.Number(info.default_width, label="width", precision=0, step=info.size_multiple,
                              elem_id=f"{prefix}-width")
        shift_hint = f"empty: the scheduler's ({info.default_shift:g})" if info.default_shift else "empty: default"
        with gr.Row():
            video_shift = gr.Number(None, label="video_shift", placeholder=shift_hint, elem_id=f"{prefix}-video-shift")
            audio_shift = gr.Number(None, label="audio_shift", placeholder=shift_hint, elem_id=f"{prefix}-audio-shift")
        loudness_lufs = gr.Number(-16.0, label="loudness_lufs", minimum=-70, maximum=0,
                                  info="integrated loudness target; empty: leave the audio as decoded",
                                  elem_id=f"{prefix}-loudness")
        with gr.Row(visible=info.has_lora):
            lora = gr.Dropdown([NO_LORA, *info.lora_adapters], value=NO_LORA, label="lora", elem_id=f"{prefix}-lora")
            lora_scale = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="lora_scale", elem_id=f"{prefix}-lora-scale")

    # Presets fill height/width; frames and fps show the clip length. Browser-only events, not part of the API.
    resolution.change(lambda value: parse_resolution(value), resolution, [height, width], queue=False,
                      api_visibility="private", show_progress="hidden")
    gr.on([num_frames.change, fps.change], duration_text, [num_frames, fps], duration, queue=False,
          api_visibility="private", show_progress="hidden")
    return GenerationControls(prompt, negative_prompt, image, resolution, height, width, num_frames, fps,
                              num_inference_steps, guidance, text_scale, bridge_scale, video_shift, audio_shift,
                              seed, randomize_seed, loudness_lufs, lora, lora_scale)


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
# Values → request
# ----------------------------------------------------------------------------------------------------------------


def image_path(value: Any) -> str | None:
    """A first-frame value as a path: events run with ``preprocess=False`` (so a non-image upload reaches our own
    check and its clear message), which gives the uploaded file's FileData dict.

    Only a file in Gradio's upload folder is accepted — one a client uploaded to this app. A FileData (or a plain
    string) naming any other server path is refused, so the API can neither read server files nor test whether
    they exist."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise ValueError("image is invalid: upload the first frame as a file (PNG, JPEG or WebP)")
    upload_folder = os.path.realpath(gr.utils.get_upload_folder())
    path = os.path.realpath(value)
    if os.path.commonpath([path, upload_folder]) != upload_folder or not os.path.isfile(path):
        raise ValueError("image is invalid: only a file uploaded to this app is accepted; upload the first frame")
    return path


def optional_number(value: Any) -> Any:
    return None if value is None or value == "" else value


def make_request(values: dict[str, Any], *, image_required: bool | None = None, **overrides: Any) -> GenerationRequest:
    """A validated request from form values (API names). ``image_required``: True for IT2VA (an image must be
    given), False for T2VA (an image is ignored), None when optional (CFG comparison)."""
    image = image_path(values.get("image"))
    if image_required and image is None:
        raise ValueError("image is missing: upload a first frame, or use the Text → Video+Audio tab")
    if image_required is False:
        image = None
    lora = values.get("lora")
    fields = dict(
        prompt=values.get("prompt"),
        negative_prompt=values.get("negative_prompt"),
        image=image,
        height=values.get("height"),
        width=values.get("width"),
        num_frames=values.get("num_frames"),
        fps=values.get("fps"),
        num_inference_steps=values.get("num_inference_steps"),
        guidance_mode=values.get("guidance", "text"),
        text_scale=values.get("text_scale", 5.0),
        bridge_scale=values.get("bridge_scale", 1.0),
        video_shift=optional_number(values.get("video_shift")),
        audio_shift=optional_number(values.get("audio_shift")),
        seed=None if check.boolean("randomize_seed", values.get("randomize_seed", True))
        else optional_number(values.get("seed")),
        loudness_lufs=optional_number(values.get("loudness_lufs")),
        lora=None if lora in (None, "", NO_LORA) else lora,
        lora_scale=values.get("lora_scale", 1.0),
    )
    fields.update(overrides)
    return GenerationRequest(**fields)


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------


def format_offset(response: GenerationResponse) -> str:
    if response.av_offset_frames is None:
        return "n/a (no motion or no onsets)"
    return f"{response.av_offset_frames:+.2f} frames ({response.av_offset_ms:+.0f} ms)"


def format_loudness(response: GenerationResponse) -> str:
    return "silent" if response.loudness_lufs is None else f"{response.loudness_lufs:.1f} LUFS"


def figures_markdown(response: GenerationResponse, title: str | None = None) -> str:
    """One clip's figures: seed, NFE, time, audio-visual offset, loudness."""
    lines = [f"**{title}**"] if title else []
    lines += [
        f"- seed: `{response.seed}`",
        f"- NFE: {response.nfe}",
        f"- time: {response.timings.get('wall', response.timings.get('total', 0.0)):.1f} s "
        f"(denoise {response.timings.get('denoise', 0.0):.1f} s)",
        f"- A/V offset: {format_offset(response)}",
        f"- loudness: {format_loudness(response)}",
        f"- {response.height}×{response.width}, {response.num_frames} frames at {response.fps:g} fps "
        f"({response.duration_s:.2f} s)",
    ]
    lines += [f"- ⚠ {warning}" for warning in response.warnings]
    return "\n".join(lines)


def show_warnings(response: GenerationResponse) -> None:
    """Each of the clip's warnings (e.g. prompt text the model cannot read) as a toast in the browser."""
    for warning in response.warnings:
        gr.Warning(warning)


def guidance_title(mode: str, text_scale: float, bridge_scale: float) -> str:
    if mode == "dual":
        return f"dual · s_B {bridge_scale:g} · s_T {text_scale:g}"
    if mode == "none":
        return "none"
    return f"{mode} · s_T {text_scale:g}"


def response_details(response: GenerationResponse) -> dict[str, Any]:
    """JSON-safe details for the API and the Details panel."""
    return json.loads(json.dumps(response.to_dict(), default=str))


# ----------------------------------------------------------------------------------------------------------------
# Examples and history
# ----------------------------------------------------------------------------------------------------------------


def demo_world_examples(folder: Path, n: int = 4) -> list[tuple[str, str]]:
    """(first-frame PNG, caption) pairs from the demo world's held-out prompts, written once under ``folder``.
    Empty when the demo world (``train/``) is not present or fails."""
    manifest = folder / "examples.json"
    try:
        if manifest.is_file():
            rows = json.loads(manifest.read_text(encoding="utf-8"))
            if len(rows) >= n and all(Path(r["image"]).is_file() for r in rows[:n]):
                return [(r["image"], r["caption"]) for r in rows[:n]]
        from PIL import Image

        from train.demo_world import held_out_prompts

        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for item in held_out_prompts(n):
            path = folder / f"{item.prompt_id}.png"
            Image.fromarray(item.first_frame).save(path)
            rows.append({"image": str(path), "caption": item.caption, "scene": item.scene})
        manifest.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        return [(r["image"], r["caption"]) for r in rows]
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
