"""The generation tabs — Image+Text → Video+Audio (IT2VA, with an optional last frame), Text → Video+Audio (T2VA) and
the modes' tabs (:data:`MODES`, built by ``ui.audio_to_video``, ``ui.video_to_audio``, ``ui.extend_retake``) — and
the request path every GPU event of the UI takes: form values → ``GenerationSettings`` → checked before the queue
(the event's validator) → the backend in a worker thread, with progress and cancellation through one callback →
the clip's figures.

Public API events: ``generate_i2va(image, prompt, ..., last_image, ...)``, ``generate_t2va(prompt, ...)`` and the
modes' ``generate_a2v(audio, ...)``, ``generate_v2a(video, ...)``, ``extend(extend, ..., num_windows)``,
``retake(retake, ..., retake_start, retake_end, retake_modality, strength)`` (:data:`MODES`); their parameters are
the settings' fields (``mova.settings``: ``num_frames``, ``fps``, ``num_inference_steps``, ``guidance``,
``text_scale``, ``bridge_scale``, ``seed``, …) plus ``randomize_seed``. They return the mp4, the seed used, the
figures (Markdown) and the details (JSON). All share the GPU queue (``concurrency_id="gpu"``); the CFG comparison
tab (``ui.cfg_compare``) uses the same path.

Run alone: ``build(backend, with_image=True).launch()``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import anyio
import gradio as gr

from mova import validation
from mova.backends import Backend, CostEstimate
from mova.backends.base import COST_PROMPT
from mova.settings import GenerationCancelled, GenerationSettings, ModelInfo, setting_fields
from ui.widgets import (
    NO_LORA,
    GenerationControls,
    clip_details,
    figures_markdown,
    render_controls,
    show_warnings,
)

logger = logging.getLogger(__name__)

GPU_CONCURRENCY_ID = "gpu"  # every event that runs the model queues under this id
GPU_QUEUE_MAX_WAITING = 64  # a new generation is refused while this many wait for the GPU
STAGE_LABELS = MappingProxyType({
    "denoise": "Denoising",
    "done": "Decoded video and audio",
    "encode": "Writing the mp4",
    "waiting for the GPU": "Waiting for the GPU",
})

TITLES = MappingProxyType({"it2va": "Image+Text → Video+Audio", "t2va": "Text → Video+Audio"})
API_NAMES = MappingProxyType({"it2va": "generate_i2va", "t2va": "generate_t2va", "a2v": "generate_a2v",
                              "v2a": "generate_v2a", "extend": "extend", "retake": "retake"})
API_SUMMARIES = MappingProxyType({
    "it2va": "Generate a video with synchronised audio (speech, sound effects, music) from a first frame and a text "
             "prompt with MOVA (IT2VA). Settings left empty take the model's defaults.",
    "t2va": "Generate a video with synchronised audio (speech, sound effects, music) from a text prompt alone with "
            "MOVA (T2VA: MOVA's white first frame). Settings left empty take the model's defaults.",
    "a2v": "Generate a video that moves with a given sound (audio → video): the sound is kept as given, the picture is "
           "generated from the prompt (and an optional first frame) to match it.",
    "v2a": "Generate the sound of a given video (video → audio, Foley): the frames are kept as given, the audio is "
           "generated from the prompt to match them.",
    "extend": "Continue a clip (an mp4 with sound) by num_windows windows of new frames and sound, joined without a "
              "seam.",
    "retake": "Generate a time span of a clip (an mp4 with sound) again, both modalities or one, keeping the rest.",
})
API_RETURNS = "the mp4 (H.264 video + AAC audio), the seed used, the clip's figures (Markdown: NFE, time, " \
              "audio-visual offset, loudness) and its details (JSON)"


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
    """API parameters whose control starts empty (an unset first frame, a setting left to the model): API callers
    may omit them (Gradio makes a parameter with an initial value optional by itself)."""
    return tuple(name for name, component in inputs.items() if getattr(component, "value", None) is None)


UI_PARAMETER_HELP = MappingProxyType({
    "image": "the first frame: an image file (PNG, JPEG or WebP) uploaded to this app",
    "randomize_seed": "true: draw a new seed (the one used is returned); false: use seed",
})


def api_docstring(summary: str, names: list[str], returns: str, help_text: dict[str, str] | None = None) -> str:
    """A Google-style docstring for an API handler: ``summary``, one ``Args`` line per parameter (the settings'
    help, the UI parameters' help, ``help_text``), ``returns``. Gradio reads it for the API page and the MCP tool's
    description and parameter descriptions (``gradio.utils.get_function_description``)."""
    declared = {name: spec.help for name, _, spec in setting_fields()}
    known = {**declared, **UI_PARAMETER_HELP, **(help_text or {})}
    args = [f"    {name}: {known.get(name, '')}".rstrip() for name in names]
    return "\n".join([summary, "", "Args:", *args, "", "Returns:", f"    {returns}"])


def mcp_tool(fn: Callable, name: str, doc: str) -> Callable:
    """Name and describe a handler as an MCP tool: Gradio's MCP server names a tool after the function and takes its
    description from the docstring."""
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


def not_an_mcp_tool(fn: Callable) -> Callable:
    """Keep a public API event out of the MCP server's tool list (arena votes are for people). Gradio 6.31 has no
    per-event switch: its ``list_tools`` skips a function whose ``_mcp_type`` is not ``"tool"``, the attribute its
    ``gr.mcp`` decorators set; tests/test_space.py checks the tool list, so a change there shows."""
    fn._mcp_type = "none"  # type: ignore[attr-defined]
    return fn


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
# Cost before Generate
# ----------------------------------------------------------------------------------------------------------------

COST_INPUTS = ("height", "width", "num_frames", "fps", "num_inference_steps", "guidance")  # what the cost reads


def cost_markdown(estimate: CostEstimate) -> str:
    """The line under the Generate button: the estimated time (against ZeroGPU's limit on a Space), the work
    relative to the default clip, and how the estimate was made."""
    work = f"{estimate.work_ratio:.2g}× the work of the default clip"
    if estimate.seconds is None:
        return f"**Cost:** {work} ({estimate.basis})."
    if estimate.limit_s is None:
        return f"**Estimated time:** ≈ {format_seconds(estimate.seconds)} · {work} ({estimate.basis})."
    head = f"**Estimated GPU time:** ≈ {format_seconds(estimate.seconds)}"
    if estimate.seconds > estimate.limit_s:
        return (f"{head}, more than the {format_seconds(estimate.limit_s)} a ZeroGPU task may take: lower "
                f"num_inference_steps, num_frames or the resolution · {work} ({estimate.basis}).")
    return f"{head} of the {format_seconds(estimate.limit_s)} a ZeroGPU task may take · {work} ({estimate.basis})."


def cost_text(backend: Backend, values: dict[str, Any]) -> str:
    """:func:`cost_markdown` for form values (API names; the prompt plays no part), or why there is none yet."""
    try:
        return cost_markdown(backend.estimate(GenerationSettings.from_values({**values, "prompt": COST_PROMPT})))
    except ValueError as exc:
        return f"**Cost:** not estimated: {public_message(str(exc))}"


# ----------------------------------------------------------------------------------------------------------------
# Form values → settings
# ----------------------------------------------------------------------------------------------------------------


UPLOADS = MappingProxyType({  # each media setting: what to upload, for the messages
    "image": "the first frame as a file (PNG, JPEG or WebP)", "last_image": "the last frame as a file (PNG, JPEG or "
    "WebP)", "audio": "a sound file (WAV, MP3, FLAC, or an MP4)", "video": "a video file (MP4, WebM, MOV)",
    "extend": "the clip to extend (an MP4 with sound)", "retake": "the clip to retake (an MP4 with sound)"})


def upload_path(value: Any, name: str = "image") -> str | None:
    """A media value as a path: events run with ``preprocess=False`` (so a bad upload reaches our own check and its
    clear message), which gives the uploaded file's FileData dict.

    Only a file in Gradio's upload folder is accepted — one a client uploaded to this app. A FileData (or a plain
    string) naming any other server path is refused, so the API can neither read server files nor test whether
    they exist. ``name``: the setting, for the message."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} is invalid: upload {UPLOADS[name]}")
    upload_folder = os.path.realpath(gr.utils.get_upload_folder())
    path = os.path.realpath(value)
    if os.path.commonpath([path, upload_folder]) != upload_folder or not os.path.isfile(path):
        raise ValueError(f"{name} is invalid: only a file uploaded to this app is accepted; upload {UPLOADS[name]}")
    return path


def image_path(value: Any) -> str | None:
    """:func:`upload_path` of a first frame."""
    return upload_path(value, "image")


def form_settings(values: dict[str, Any], *, image_required: bool | None = None,
                  required: tuple[str, ...] = ()) -> GenerationSettings:
    """Settings from form values (API names). ``image_required``: True for IT2VA (an image must be given), False
    for T2VA (an image is ignored), None when optional; ``required``: other media settings that must be given
    (the audio of Audio → Video, …). ``randomize_seed`` (true or false only) clears the seed; the adapter
    ``"none"`` is no adapter."""
    values = dict(values)
    for name in UPLOADS:
        if name in values:
            values[name] = upload_path(values[name], name)
    if image_required and values.get("image") is None:
        raise ValueError("image is missing: upload a first frame, or use the Text → Video+Audio tab")
    for name in required:
        if values.get(name) is None:
            raise ValueError(f"{name} is missing: upload {UPLOADS[name]}")
    if image_required is False:
        values["image"] = None
    if validation.boolean("randomize_seed", values.pop("randomize_seed", True)):
        values["seed"] = None
    if values.get("lora") == NO_LORA:
        values["lora"] = None
    return GenerationSettings.from_values(values)


# ----------------------------------------------------------------------------------------------------------------
# The tabs
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """A generation tab: its kind (``GenerationSettings.kind``), title, API name, the media it takes (``required``
    ones must be given), the mode settings laid out below its prompt and the advanced ones it leaves out."""

    kind: str
    title: str
    api_name: str
    media: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    main: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()
    button: str = "Generate"
    intro: str = ""


MODES = MappingProxyType({
    "it2va": Mode("it2va", TITLES["it2va"], API_NAMES["it2va"], ("image", "last_image"), ("image",)),
    "t2va": Mode("t2va", TITLES["t2va"], API_NAMES["t2va"]),
    "a2v": Mode("a2v", "Audio → Video", API_NAMES["a2v"], ("audio", "image"), ("audio",),
                intro="Bring a sound (speech, music, effects): it is kept as given and a picture is generated to "
                      "move with it, from the prompt and an optional first frame."),
    "v2a": Mode("v2a", "Video → Audio", API_NAMES["v2a"], ("video",), ("video",),
                intro="Bring a video: its frames are kept (cropped, resized and retimed to the clip) and a "
                      "soundtrack is generated for them."),
    "extend": Mode("extend", "Extend", API_NAMES["extend"], ("extend",), ("extend",), ("num_windows", "crossfade"),
                   "Extend",
                   intro="Continue a clip with its sound: each window adds num_frames new frames, starting from the "
                         "clip's last frames and the sound under them."),
    "retake": Mode("retake", "Retake", API_NAMES["retake"], ("retake",), ("retake",),
                   ("retake_start", "retake_end", "retake_modality", "strength"), ("num_windows", "crossfade"),
                   "Retake",
                   intro="Generate a span of a clip again — picture, sound or both — and keep the rest as it is; "
                         "a strength below 1 makes a variation of the span."),
})


@dataclass
class GenerateTab:
    kind: str  # a Mode's kind
    controls: GenerationControls
    button: gr.Button
    video: gr.Video
    figures: gr.Markdown
    details: gr.JSON
    done: Any  # the generate event's dependency, for chaining (session history)
    cost: gr.Markdown  # the estimated cost of the current settings, under the button


def render(backend: Backend, info: ModelInfo | None = None, *, with_image: bool | None = None,
           mode: Mode | None = None, examples: list[dict[str, str]] | None = None) -> GenerateTab:
    """Build a generation tab's form and output inside the current layout and wire its event. ``mode`` (one of
    :data:`MODES`), or ``with_image`` for IT2VA / T2VA; ``examples``: demo-world rows (``ui.widgets``)."""
    info = info or backend.model_info()
    mode = mode or MODES["it2va" if with_image else "t2va"]
    kind = mode.kind
    image_required = True if "image" in mode.required else False if "image" not in mode.media else None
    if mode.intro:
        gr.Markdown(mode.intro, elem_id=f"{kind}-intro")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            controls = render_controls(info, kind, media=mode.media, required=mode.required, main=mode.main,
                                       hide=mode.hide)
            with gr.Row():
                button = gr.Button(mode.button, variant="primary", elem_id=f"{kind}-generate", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id=f"{kind}-stop", scale=1)
            cost_names = [name for name in COST_INPUTS if name in controls.by_name]
            cost = gr.Markdown(cost_text(backend, {name: controls.by_name[name].value for name in cost_names}),
                               elem_id=f"{kind}-cost")
        with gr.Column(scale=1, min_width=320):
            video = gr.Video(label="video", interactive=False, buttons=["download"], elem_id=f"{kind}-video")
            figures = gr.Markdown(label="figures", elem_id=f"{kind}-figures")
            with gr.Accordion("Details", open=False):
                details = gr.JSON(label="details", elem_id=f"{kind}-details")
    if examples:
        source = {"image": "image", "audio": "audio", "video": "video", "extend": "video", "retake": "video"}
        columns = [name for name in mode.media if name in source] + ["prompt"]
        gr.Examples([[row[source.get(c, "caption")] for c in columns] for row in examples],
                    [getattr(controls, c) for c in columns], label="Examples from the demo world",
                    cache_examples=False)

    def check(**values: Any) -> None:
        """Run before the job is queued (the event's validator): a bad value never waits behind a GPU job."""
        backend.check(form_settings(values, image_required=image_required, required=mode.required))

    @user_errors
    async def generate(progress: gr.Progress = gr.Progress(), **values: Any) -> dict:
        settings = form_settings(values, image_required=image_required, required=mode.required)
        clip = await run_job(lambda report: backend.generate(settings, report), progress)
        show_warnings(clip)
        return {video: clip.video_path, controls.seed: clip.seed, figures: figures_markdown(clip),
                details: clip_details(clip)}

    inputs = controls.inputs()
    with_api_signature(generate, list(inputs), optional=optional_inputs(inputs))
    mcp_tool(generate, API_NAMES[kind], api_docstring(API_SUMMARIES[kind], list(inputs), API_RETURNS))
    # preprocess=False: uploads arrive as their files, so a bad one gets our clear message.
    done = button.click(
        generate, inputs_kwargs=inputs, outputs=[video, controls.seed, figures, details], api_name=mode.api_name,
        preprocess=False, validator=gpu_validator(check, list(inputs)),
        concurrency_id=GPU_CONCURRENCY_ID, concurrency_limit=backend.concurrency_limit,
    )
    stop.click(None, cancels=[done], api_visibility="private", queue=False)

    def update_cost(*values: Any) -> str:
        return cost_text(backend, dict(zip(cost_names, values)))

    # Updated as the settings change, and after each clip (a local estimate is scaled from the latest clip).
    cost_inputs = [controls.by_name[name] for name in cost_names]
    cost_events = dict(api_visibility="private", queue=False, show_progress="hidden")
    gr.on([component.change for component in cost_inputs], update_cost, cost_inputs, cost, **cost_events)
    done.then(update_cost, cost_inputs, cost, **cost_events)
    return GenerateTab(kind, controls, button, video, figures, details, done, cost)


def build(backend: Backend, *, with_image: bool | None = None, mode: Mode | None = None) -> gr.Blocks:
    """The tab as an app of its own."""
    mode = mode or MODES["it2va" if with_image else "t2va"]
    with gr.Blocks(title=f"MOVA Studio · {mode.title}") as demo:
        render(backend, with_image=with_image, mode=mode)
    return demo
