"""The whole app served in-process on the tiny checkpoint, called through gradio_client like an API user.

Every endpoint returns files PyAV decodes (H.264 + AAC); bad input gives a clear message and the app keeps
serving; two concurrent requests both complete, in order; the UI package never imports torch.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.test_app_support import FAST, app_checkpoint, running_app, streams, write_png

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = {"/generate_i2va", "/generate_t2va", "/generate_a2v", "/generate_v2a", "/extend", "/retake", "/compare",
             "/describe", "/rewrite", "/first_frame_prompt"}


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    with running_app(app_checkpoint(tiny_checkpoint, root), root / "data") as (url, backend):
        yield url, backend, root


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


@pytest.fixture(scope="module")
def frame(server):
    return write_png(server[2] / "frame.png")


def assert_playable(path: str, frames: int = 9) -> None:
    info = streams(path)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac", info
    assert info["frames"] == frames and info["samples"] > 0, info
    assert (info["width"], info["height"]) == (64, 64)


def test_ui_never_imports_torch():
    code = "import sys, ui, ui.generate, ui.cfg_compare, ui.prompting, ui.widgets, ui.arena, ui.audio_to_video, " \
           "ui.video_to_audio, ui.extend_retake, mova.modes, mova.eval; " \
           "assert 'torch' not in sys.modules, 'ui imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_progress_adapter_shows_steps_and_eta_and_pickles():
    import pickle

    from ui.generate import GradioProgress

    calls = []

    class Recorder:  # stands in for gr.Progress
        def __call__(self, progress, desc=None, unit="steps"):
            calls.append((progress, desc))

    adapter = GradioProgress(Recorder(), prefix="[1/2] text: ")
    for step in (1, 2, 3):
        adapter("denoise", step, 3)
    adapter("encode", 0, 1)
    assert calls[0] == ((1, 3), "[1/2] text: Denoising step 1/3")
    assert calls[2][1].startswith("[1/2] text: Denoising step 3/3 · ETA ")
    assert calls[3] == ((0, 1), "[1/2] text: Writing the mp4")
    import gradio as gr

    pickle.dumps(GradioProgress(gr.Progress()))  # ZeroGPU pickles a GPU task's arguments


def test_tabs_build_alone_and_the_app_builds_twice(server):
    import gradio as gr

    from ui import audio_to_video, build_app, cfg_compare, extend_retake, generate, prompting, video_to_audio

    backend = server[1]
    demos = [generate.build(backend, with_image=True), generate.build(backend, with_image=False),
             audio_to_video.build(backend), video_to_audio.build(backend), extend_retake.build(backend),
             prompting.build(), cfg_compare.build(backend), build_app(backend, examples=False),
             build_app(backend, examples=False)]
    assert all(isinstance(demo, gr.Blocks) for demo in demos)


def test_named_endpoints(client, server):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert ENDPOINTS <= set(api), set(api)
    from mova.settings import setting_fields

    def parameters(route):
        return [p["parameter_name"] for p in api[route]["parameters"]]

    # the settings' fields, in order, less the mode inputs each tab lays out only where they belong
    modes = {"image", "last_image", "audio", "video", "extend", "retake", "retake_start", "retake_end",
             "retake_modality", "strength"}
    fields = [name for name, _, _ in setting_fields() if name not in modes]
    t2va = parameters("/generate_t2va")
    assert t2va == [*fields[:fields.index("seed") + 1], "randomize_seed", *fields[fields.index("seed") + 1:]]
    assert t2va[:14] == ["prompt", "negative_prompt", "height", "width", "num_frames", "fps", "num_inference_steps",
                         "guidance", "text_scale", "bridge_scale", "video_shift", "audio_shift", "seed",
                         "randomize_seed"]  # the contract words API clients already use keep their places
    # the mode inputs come after the settings API clients already use, so positional calls keep working
    after = t2va.index("num_windows")  # the mode inputs are declared before num_windows and crossfade
    assert parameters("/generate_i2va") == ["image", *t2va[:after], "last_image", *t2va[after:]]
    assert parameters("/generate_a2v") == ["image", *t2va[:after], "audio", *t2va[after:]]
    assert parameters("/generate_v2a") == [*t2va[:after], "video", *t2va[after:]]
    assert parameters("/extend") == [*t2va[:after], "extend", *t2va[after:]]  # num_windows, crossfade in place
    assert parameters("/retake") == [*t2va[:after], "retake", "retake_start", "retake_end", "retake_modality",
                                     "strength"]  # a retake is one window
    for route in ("/", "/arena", "/leaderboard"):
        assert httpx.get(server[0] + route, timeout=30).status_code == 200


def test_generate_t2va(client, server):
    video, seed, figures, details = client.predict(prompt="thunder rolls over the sea", seed=7, randomize_seed=False,
                                                   **FAST, api_name="/generate_t2va")
    assert_playable(video)
    assert seed == 7 and details["seed"] == 7 and details["nfe"] == 2 * 2
    assert "NFE" in figures and "A/V offset" in figures and "loudness" in figures
    outputs = server[1].outputs_dir  # details name files in the outputs folder, never by a server path
    assert (outputs / details["sidecar_path"]).is_file() and details["settings"]["image"] is None


def test_unreadable_prompt_is_flagged_in_the_figures(client):
    _, _, figures, details = client.predict(prompt="一个红球弹跳", seed=3, randomize_seed=False, **FAST,
                                            api_name="/generate_t2va")
    assert "⚠" in figures and "every character became <unk>" in figures
    assert details["warnings"] and "<unk>" in details["warnings"][0]


def test_generate_t2va_random_seed_is_reported(client):
    _, seed, _, details = client.predict(prompt="a dog barks twice", randomize_seed=True, **FAST,
                                         api_name="/generate_t2va")
    assert isinstance(seed, (int, float)) and int(seed) == details["seed"]


def test_generate_i2va(client, server, frame):
    video, seed, figures, details = client.predict(image=handle_file(str(frame)), prompt="a red ball bounces",
                                                   guidance="dual", bridge_scale=3.5, **FAST,
                                                   api_name="/generate_i2va")
    assert_playable(video)
    assert details["nfe"] == 3 * 2 and details["settings"]["guidance"] == "dual"
    assert (server[1].outputs_dir / details["settings"]["image"]).is_file()


def test_compare(client, frame):
    out = client.predict(prompt="a pendulum ticks", image=None, seed=11, randomize_seed=False, **FAST,
                         enabled_3=False, api_name="/compare")
    videos, figures, table, seed, details = out[:4], out[4:8], out[8], out[9], out[10]
    assert [v is not None for v in videos] == [True, True, False, False]
    for video in videos[:2]:
        assert_playable(video)
    assert seed == 11 and [d["seed"] for d in details] == [11, 11]
    assert [d["nfe"] for d in details] == [4, 4]
    assert all("A/V offset" in f and "loudness" in f for f in figures[:2])
    assert len(table["data"]) == 2


@pytest.fixture(scope="module")
def media_files(server):
    """A 1 s tone (WAV), a silent WAV, a 9-frame clip with sound and one without (MP4), 64×64 at 12 fps."""
    import numpy as np

    from mova import media

    folder, rate = server[2], 48000
    t = np.arange(rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (t * 8 % 1 < 0.2)).astype(np.float32)
    frames = np.full((9, 64, 64, 3), 70, np.uint8)
    for k in range(9):
        frames[k, 30:40, 4 + 6 * k:14 + 6 * k] = (230, 40, 40)
    return {"tone": str(media.write_wav(folder / "tone.wav", tone, rate)),
            "short": str(media.write_wav(folder / "short.wav", tone[:rate // 4], rate)),
            "silent": str(media.write_wav(folder / "silent.wav", np.zeros(rate, np.float32), rate)),
            "clip": str(media.write_mp4(folder / "clip.mp4", frames, 12.0, tone[:36000], rate)),
            "no_sound": str(media.write_mp4(folder / "nosound.mp4", frames, 12.0))}


def test_audio_to_video_and_video_to_audio(client, server, media_files):
    video, _, figures, details = client.predict(audio=handle_file(media_files["tone"]), prompt="a drum", seed=2,
                                                randomize_seed=False, **FAST, api_name="/generate_a2v")
    assert_playable(video)
    assert details["settings"]["audio"] == "tone.wav" and "A/V offset" in figures  # a name, never a server path
    video, *_, details = client.predict(video=handle_file(media_files["clip"]), prompt="a red square slides",
                                        **FAST, api_name="/generate_v2a")
    assert_playable(video)
    assert details["settings"]["video"] == "clip.mp4"


def test_extend_and_retake(client, media_files):
    video, *_, details = client.predict(extend=handle_file(media_files["clip"]), prompt="a red square slides",
                                        num_windows=2, **FAST, api_name="/extend")
    assert_playable(video, frames=9 + 2 * 9)
    video, *_, details = client.predict(retake=handle_file(media_files["clip"]), prompt="a red square slides",
                                        retake_start=0.25, retake_end=0.5, retake_modality="audio", **FAST,
                                        api_name="/retake")
    assert_playable(video)
    assert details["settings"]["retake_modality"] == "audio"


def test_compare_a_modes_guidance(client, media_files):
    out = client.predict(prompt="a drum", audio=handle_file(media_files["tone"]), seed=5, randomize_seed=False,
                         **FAST, enabled_3=False, api_name="/compare")
    videos, details = out[:2], out[10]
    for video in videos:
        assert_playable(video)
    assert [d["settings"]["audio"] for d in details] == ["tone.wav", "tone.wav"]
    assert [d["settings"]["guidance"] for d in details] == ["text", "text+bridge"]


@pytest.mark.parametrize("inputs, api_name, words", [
    (dict(), "/generate_a2v", ["audio is missing"]),
    (dict(audio="short"), "/generate_a2v", ["audio is invalid", "0.25 s long, shorter than the 0.75 s"]),
    (dict(audio="silent"), "/generate_a2v", ["audio is invalid", "silent"]),
    (dict(extend="no_sound"), "/extend", ["extend is invalid", "no sound"]),
    (dict(retake="clip", retake_start=0.5, retake_end=2.0), "/retake", ["retake_end=2 is outside the clip"]),
    (dict(retake="clip", retake_start=0.6, retake_end=0.3), "/retake", ["retake_start=0.6", "before retake_end"]),
    (dict(video="no_sound", num_windows=2), "/generate_v2a", ["video is invalid", "shorter than the clip"]),
])
def test_bad_mode_inputs_give_a_message(client, media_files, inputs, api_name, words):
    files = {k: handle_file(media_files[v]) if k in ("audio", "video", "extend", "retake") else v
             for k, v in inputs.items()}
    with pytest.raises(ValueError) as err:  # refused before the queue, naming the field
        client.predict(**{**FAST, "prompt": "a drum", **files}, api_name=api_name)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert "Traceback" not in str(err.value)


def test_prompting_endpoints(client, frame):
    description, notes = client.predict(image=handle_file(str(frame)), api_name="/describe")
    assert "Visual style" in description and "offline" in notes
    text, notes = client.predict(prompt='A man looks up and says "We did it."', description=description,
                                 language="English", api_name="/rewrite")
    assert '"We did it."' in text and "The audio shows" in text
    image_prompt, _ = client.predict(prompt="a cat on a piano", aspect="9:16", api_name="/first_frame_prompt")
    assert image_prompt.strip()


@pytest.mark.parametrize("kwargs, api_name, words", [
    (dict(prompt="rain", height=65), "/generate_t2va", ["height=65", "multiple of 16"]),
    (dict(prompt="rain", width=2048, height=2048), "/generate_t2va", ["too large"]),
    (dict(prompt="   "), "/generate_t2va", ["prompt is empty"]),
    (dict(prompt="rain", num_frames=10), "/generate_t2va", ["num_frames"]),
    (dict(prompt="rain", guidance="louder"), "/generate_t2va", ["guidance='louder'"]),
    (dict(prompt="rain", image=None), "/generate_i2va", ["image is missing"]),
    (dict(prompt="rain", enabled_2=False, enabled_3=False), "/compare", ["needs 2 to 4"]),
])
def test_bad_input_gives_a_message(client, kwargs, api_name, words):
    with pytest.raises(ValueError) as err:  # refused before the queue (gradio_client: ValidationError)
        client.predict(**{**FAST, **kwargs}, api_name=api_name)
    for word in words:
        assert word in str(err.value), str(err.value)
    assert "Traceback" not in str(err.value)


def test_bad_uploads_give_a_message_and_the_app_keeps_serving(client, server, tmp_path):
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        client.predict(image=handle_file(str(not_image)), prompt="rain", **FAST, api_name="/generate_i2va")
    with pytest.raises(AppError, match="not a readable image"):
        client.predict(image=handle_file(str(not_image)), api_name="/describe")
    with pytest.raises(AppError, match="prompt"):
        client.predict(prompt="  ", description="", language="English", api_name="/rewrite")
    huge_pixels = write_png(tmp_path / "huge.png", size=(9000, 5000), colour=(0, 0, 0))  # small file, 45 MP
    with pytest.raises(ValueError, match="max_pixels"):
        client.predict(image=handle_file(str(huge_pixels)), prompt="rain", **FAST, api_name="/generate_i2va")
    huge_file = tmp_path / "huge-file.png"
    huge_file.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(26 * 1024 * 1024))
    with pytest.raises(Exception, match="maximum file size"):
        client.predict(image=handle_file(str(huge_file)), prompt="rain", **FAST, api_name="/generate_i2va")
    video, *_ = client.predict(prompt="after the errors", **FAST, api_name="/generate_t2va")
    assert_playable(video)


def test_two_concurrent_requests_complete_in_order(server):
    """Two users at once: the second waits in the queue (its position is reported), then runs after the first."""
    from gradio_client.utils import Status

    url, backend, _ = server
    runs: list[tuple[str, float, float]] = []
    original = backend.pipeline

    class Slow:  # the real pipeline, made slow enough that the second request must queue
        def __getattr__(self, name):
            return getattr(original, name)

        def __call__(self, settings, **kwargs):
            start = time.monotonic()
            time.sleep(1.0)
            result = original(settings, **kwargs)
            runs.append((settings.prompt, start, time.monotonic()))
            return result

    backend.pipeline = Slow()
    try:
        first = Client(url, verbose=False).submit(prompt="request 0", **FAST, api_name="/generate_t2va")
        deadline = time.monotonic() + 30
        while first.status().code not in (Status.PROCESSING, Status.PROGRESS) and time.monotonic() < deadline:
            time.sleep(0.02)
        second = Client(url, verbose=False).submit(prompt="request 1", **FAST, api_name="/generate_t2va")
        queued = []
        while not second.done() and time.monotonic() < deadline:
            status = second.status()
            if status.code == Status.IN_QUEUE:
                queued.append(status.rank)
            time.sleep(0.02)
        results = [first.result(timeout=60), second.result(timeout=60)]
    finally:
        backend.pipeline = original

    for i, (video, seed, figures, details) in enumerate(results):
        assert_playable(video)
        assert details["settings"]["prompt"] == f"request {i}"
    assert [prompt for prompt, _, _ in runs] == ["request 0", "request 1"]
    assert runs[1][1] >= runs[0][2], runs  # one GPU job at a time
    assert queued and queued[0] is not None, queued  # the waiting request saw its queue position
