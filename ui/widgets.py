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
import threading
import time
from collections.abc import Callable
from types import MappingProxyType
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import gradio as gr

from mova import validation as check
from mova.outputs import Clip
from mova.settings import GenerationCancelled, GenerationSettings, ModelInfo, Setting, setting_fields

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
MODEL_DEFAULT_HINT = "empty: the model's default"


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


_SERVER_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s'\"/,;:()]+)+/([^\s'\"/,;:()]+)")


def public_message(text: str) -> str:
    """``text`` with every absolute server path cut to its file name (``/tmp/gradio/ab12/x.png`` → ``x.png``)."""
    return _SERVER_PATH.sub(r"\1", text)


def user_errors(fn: Callable) -> Callable:
    """Turn a ValueError into a gr.Error with its text; any other failure into a short message (logged with its
    traceback on the server). The app keeps serving either way, and no message shows a server path. Works on
    plain and ``async`` handlers."""

    def translate(exc: Exception) -> gr.Error:
        if isinstance(exc, GenerationCancelled):
            return gr.Error("Stopped: the generation was ended before its last step.", title="Stopped",
                            print_exception=False)
        if isinstance(exc, ValueError):
            return gr.Error(public_message(str(exc)), title="Invalid input", print_exception=False)
        logger.error("%s failed", getattr(fn, "__name__", "handler"), exc_info=exc)
        return gr.Error(public_message(f"{type(exc).__name__}: {exc}. The app is still running; try again or change "
                                       "the settings."), title="Failed", print_exception=False)

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - the boundary between the model and the user
                raise translate(exc) from None

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary between the model and the user
            raise translate(exc) from None

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


def _field_of(message: str, names: list[str]) -> str:
    """The input a validation message is about: its first word (``height=65 is …`` → ``height``), else the first."""
    word = re.match(r"[a-z_]+", message)
    return word.group(0) if word and word.group(0) in names else names[0]


def waiting_gpu_jobs(blocks: gr.Blocks | None) -> int:
    """Jobs waiting (not yet running) in the app's GPU queue group. Reads Gradio's queue, whose ``max_size``
    counts every group together (a full GPU queue would refuse arena votes too), so the GPU group gets its own
    bound here; the queue-bound test in tests/test_app_security.py fails if Gradio renames these attributes."""
    queue = getattr(blocks, "_queue", None)
    groups = getattr(queue, "event_queue_per_concurrency_id", None) or {}
    group = groups.get(GPU_CONCURRENCY_ID)
    return len(getattr(group, "queue", ())) if group is not None else 0


def optional_inputs(inputs: dict[str, Any]) -> tuple[str, ...]:
    """API parameters whose control starts empty (an unset first frame, a shift left to the model): API callers
    may omit them (Gradio makes a parameter with an initial value optional by itself)."""
    return tuple(name for name, component in inputs.items() if getattr(component, "value", None) is None)


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


class Cancellation:
    """Whether the user ended a running job: pressed Stop (the event's task is cancelled, :meth:`set`) or closed the
    tab (Gradio marks the running event no longer alive). Built inside the event handler."""

    def __init__(self) -> None:
        from gradio.context import LocalContext

        self._set = threading.Event()
        self._blocks = LocalContext.blocks.get(None)
        self._event_id = LocalContext.event_id.get(None)

    def set(self) -> None:
        self._set.set()

    def __call__(self) -> bool:
        if self._set.is_set():
            return True
        events = getattr(getattr(self._blocks, "_queue", None), "event_ids_to_events", None) or {}
        event = events.get(self._event_id)
        return event is not None and not getattr(event, "alive", True)


class GradioProgress:
    """The pipeline's ``(stage, done, total)`` callback drawn on a ``gr.Progress`` bar, with the denoising step and
    an ETA; it raises ``GenerationCancelled`` once ``cancelled()`` is true, which ends the generation at that step.
    Picklable, as ZeroGPU pickles a GPU task's arguments (the cancellation stays behind: a forked worker cannot
    see the browser)."""

    def __init__(self, progress: Any, prefix: str = "", cancelled: Callable[[], bool] | None = None) -> None:
        self.progress = progress
        self.prefix = prefix
        self.cancelled = cancelled
        self._denoise_start: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "cancelled": None}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.cancelled is not None and self.cancelled():
            raise GenerationCancelled(f"stopped by the user at {stage} {done}/{total}")
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


async def run_job(job: Callable[[GradioProgress], Any], progress: Any, prefix: str = "") -> Any:
    """Run ``job(report)`` in a worker thread and wait for it. When the user presses Stop the wait ends at once and
    the job's progress callback raises at its next step (the job frees the GPU within one denoising step); when the
    tab is closed the same happens at the next step."""
    cancellation = Cancellation()
    report = GradioProgress(progress, prefix, cancelled=cancellation)
    try:
        return await anyio.to_thread.run_sync(job, report, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        cancellation.set()
        raise


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


def render_controls(info: ModelInfo, prefix: str, *, with_image: bool, image_required: bool = True,
                    with_guidance: bool = True) -> GenerationControls:
    """Build the form inside the current layout. ``prefix`` makes elem_ids unique per tab (``it2va-prompt``).

    The main settings get a hand-made layout; every other setting (group ``"advanced"`` in ``mova.settings``) gets
    a plain control in the Advanced box from its declaration — label = its name, info = its help, its range — so
    a new setting needs no UI code."""
    decl = {name: spec for name, _, spec in setting_fields()}
    c: dict[str, Any] = {}
    if with_image:
        c["image"] = gr.Image(label="First frame" if image_required else "First frame (optional)", type="filepath",
                              sources=["upload", "clipboard"], height=240, elem_id=f"{prefix}-image")
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
            if spec.group == "advanced" and name not in ("lora", "lora_scale"):
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
    hint = MODEL_DEFAULT_HINT if spec.model_default else None
    if spec.choices:
        return gr.Dropdown(list(spec.choices), value=default, label=name, info=spec.help, elem_id=elem_id)
    if spec.kind is bool:
        return gr.Checkbox(bool(default), label=name, info=spec.help, elem_id=elem_id)
    if spec.kind is str:
        return gr.Textbox(default or "", label=name, info=spec.help, placeholder=hint, elem_id=elem_id)
    if name in ("video_shift", "audio_shift") and info.default_shift:
        hint = f"empty: the scheduler's ({info.default_shift:g})"
    return gr.Number(default, label=name, info=spec.help, minimum=spec.low, maximum=spec.high,
                     precision=0 if spec.kind is int else None, placeholder=hint, elem_id=elem_id)


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


def form_settings(values: dict[str, Any], *, image_required: bool | None = None) -> GenerationSettings:
    """Settings from form values (API names). ``image_required``: True for IT2VA (an image must be given), False
    for T2VA (an image is ignored), None when optional (CFG comparison). ``randomize_seed`` (true or false only)
    clears the seed; the adapter ``"none"`` is no adapter."""
    values = dict(values)
    image = image_path(values.pop("image", None))
    if image_required and image is None:
        raise ValueError("image is missing: upload a first frame, or use the Text → Video+Audio tab")
    if check.boolean("randomize_seed", values.pop("randomize_seed", True)):
        values["seed"] = None
    if values.get("lora") == NO_LORA:
        values["lora"] = None
    return GenerationSettings.from_values({**values, "image": None if image_required is False else image})


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
