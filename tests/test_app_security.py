"""The app under attack, driven through its raw HTTP API the way an attacker would (no gradio_client niceties):
server files cannot be read or probed through an image input, an HTML/GIF polyglot upload is never served back as
a page, every request has a cost ceiling checked before it is queued, a full GPU queue does not starve the other
endpoints, and no message shows a server path."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.test_app_support import FAST, app_checkpoint, running_app, write_png

SERVED_SUFFIXES = (".mp4", ".json", ".first_frame.png")


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("attacked")
    with running_app(app_checkpoint(tiny_checkpoint, root), root / "data") as (url, backend):
        yield url, backend, root


def api_parameters(url: str, api_name: str) -> list[str]:
    info = httpx.get(f"{url}/gradio_api/info", timeout=30).json()
    return [p["parameter_name"] for p in info["named_endpoints"][f"/{api_name}"]["parameters"]]


def call(url: str, api_name: str, **values) -> tuple[str, str]:
    """POST /gradio_api/call/<api_name> with every parameter in order, then read the event stream.
    Returns (outcome, text): outcome is ``refused`` (the POST itself was refused), ``error`` or ``complete``."""
    from mova.settings import setting_fields

    defaults = {name: default for name, default, _ in setting_fields()}  # every parameter, as a raw client must
    defaults.update(prompt="rain on a roof", text_scale=3.0, seed=1, randomize_seed=False, lora="none", **FAST)
    values = {**defaults, **values}
    data = [values[name] for name in api_parameters(url, api_name)]
    posted = httpx.post(f"{url}/gradio_api/call/{api_name}", json={"data": data}, timeout=60)
    if posted.status_code != 200:
        return "refused", posted.text
    event_id = posted.json()["event_id"]
    stream = httpx.get(f"{url}/gradio_api/call/{api_name}/{event_id}", timeout=120).text
    outcome = "complete" if "event: complete" in stream else "error"
    return outcome, stream


def upload(url: str, name: str, content: bytes) -> str:
    """POST /gradio_api/upload: the server path Gradio stored the file under."""
    response = httpx.post(f"{url}/gradio_api/upload", files={"files": (name, content)}, timeout=30)
    response.raise_for_status()
    return response.json()[0]


def served_files(backend) -> list[Path]:
    folder = backend.outputs_dir
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


# ----------------------------------------------------------------------------------------------------------------
# Server-file exfiltration and existence oracle
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_filedata", [
    lambda path: {"path": path},  # FileData without meta: Gradio passes it through untouched
    lambda path: {"path": path, "meta": {"_type": "gradio.FileData"}},  # with meta: Gradio's own check
    lambda path: path,  # a bare string
])
def test_a_server_path_as_first_frame_is_refused_and_nothing_is_copied(server, tmp_path, as_filedata):
    import gradio as gr

    url, backend, _ = server
    secret = write_png(tmp_path / "server-secret.png", colour=(1, 2, 3))  # a readable image outside the uploads
    before = served_files(backend)
    answers = []
    for path in (secret, tmp_path / "missing.png"):
        outcome, text = call(url, "generate_i2va", image=as_filedata(str(path)))
        assert outcome in ("refused", "error"), text
        for server_path in (str(backend.data_dir), gr.utils.get_upload_folder()):
            assert server_path not in text, text  # no path of ours in the answer
        answers.append(re.sub(r"input_value='[^']*'", "", text.replace(str(path), "PATH")))  # the sent value, echoed
    assert answers[0] == answers[1], answers  # the same answer whether the file exists or not: no oracle
    assert served_files(backend) == before  # no clip, and no copy of the file, was written


def test_describe_is_no_file_existence_oracle(server, tmp_path):
    url, _, _ = server
    exists = write_png(tmp_path / "exists.png")
    answers = []
    for path in (str(exists), str(tmp_path / "missing.png"), "/etc/passwd"):
        response = httpx.post(f"{url}/gradio_api/call/describe", json={"data": [{"path": path}]}, timeout=30)
        stream = httpx.get(f"{url}/gradio_api/call/describe/{response.json()['event_id']}", timeout=60).text
        assert "event: error" in stream and "Visual style" not in stream, stream
        answers.append(stream.replace(Path(path).name, "NAME"))
    assert answers[0] == answers[1] == answers[2], answers  # one answer, whether the file exists or not


# ----------------------------------------------------------------------------------------------------------------
# Stored XSS through an HTML/GIF polyglot
# ----------------------------------------------------------------------------------------------------------------


def polyglot() -> bytes:
    """A valid GIF that is also an HTML page (the script comes after the image data)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 140, 200)).save(buffer, format="GIF")
    return buffer.getvalue() + b"<html><body><script>document.title='pwned'</script></body></html>"


@pytest.mark.parametrize("name", ["frame.html", "frame.svg", "frame.gif"])
def test_a_polyglot_upload_is_kept_as_a_png_we_encoded(server, name):
    url, backend, _ = server
    uploaded = upload(url, name, polyglot())
    before = set(served_files(backend))
    outcome, text = call(url, "generate_i2va", image={"path": uploaded, "meta": {"_type": "gradio.FileData"}})
    assert outcome == "complete", text
    new = sorted(set(served_files(backend)) - before)
    assert len(new) == 3, new  # the mp4, its sidecar and the first frame
    for path in new:
        assert path.name.endswith(SERVED_SUFFIXES), path  # never a user-chosen suffix
        assert b"<script>" not in path.read_bytes()
        served = httpx.get(f"{url}/gradio_api/file={path}", timeout=30)
        assert served.status_code == 200
        kind = served.headers["content-type"]
        assert "html" not in kind and "svg" not in kind, (path, kind)
    frame = next(p for p in new if p.name.endswith(".first_frame.png"))
    assert frame.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(frame) as image:
        assert image.format == "PNG" and image.size == (64, 64)
    details = json.loads(text.split("data:", 1)[1].strip())[3]
    assert details["settings"]["image"] == frame.name and "/" not in details["video_path"]


# ----------------------------------------------------------------------------------------------------------------
# Cost ceilings, checked before the queue
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, words", [
    (dict(fps=1e-300), ["fps=1e-300", "[1, 240]"]),
    (dict(fps=0.01), ["fps=0.01"]),
    (dict(num_frames=9, fps=1), ["too long", "at most"]),  # 9 s of audio from a model trained on 0.75 s
    (dict(height=1280, width=1280, num_inference_steps=1), ["1280×1280", "too large", "64×64"]),
    (dict(num_inference_steps=1000, guidance="dual"), ["too much work", "num_inference_steps"]),
    (dict(text_scale=1e30), ["text_scale=1e+30", "[0, 100]"]),
    (dict(prompt="\u200b\u200d\x00"), ["prompt is empty"]),
    (dict(randomize_seed="false"), ["randomize_seed='false'", "true or false"]),
])
def test_costly_or_broken_requests_are_refused_before_the_queue(server, values, words):
    url, backend, _ = server
    calls = []
    original = backend.pipeline
    backend.pipeline = lambda *args, **kwargs: calls.append(args)  # must never be reached
    try:
        start = time.monotonic()
        outcome, text = call(url, "generate_t2va", **values)
    finally:
        backend.pipeline = original
    assert outcome == "refused" and not calls, text  # the POST itself is refused (HTTP 422): nothing was queued
    assert time.monotonic() - start < 10
    for word in words:
        assert word in text, text
    assert "Traceback" not in text


def test_a_full_gpu_queue_refuses_new_clips_and_starves_nothing_else(server, monkeypatch):
    """While the GPU runs one job and the GPU group's waiting room is full, another generation is refused at once
    and the prompting endpoints still answer at once."""
    import ui.generate

    url, backend, _ = server
    monkeypatch.setattr(ui.generate, "GPU_QUEUE_MAX_WAITING", 3)
    running, release = threading.Event(), threading.Event()
    original = backend.pipeline

    class Blocked:
        def __getattr__(self, name):
            return getattr(original, name)

        def __call__(self, *args, **kwargs):
            running.set()
            release.wait(60)
            return original(*args, **kwargs)

    def queue_size() -> int:
        return httpx.get(f"{url}/gradio_api/queue/status", timeout=10).json()["queue_size"]

    backend.pipeline = Blocked()
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(call(url, "generate_t2va")[0])) for _ in range(4)]
    try:
        threads[0].start()
        assert running.wait(30)  # the first job holds the GPU
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 30
        while queue_size() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queue_size() == 3  # three wait behind it
        outcome, text = call(url, "generate_t2va")
        assert outcome == "refused" and "GPU queue is full (3 clips waiting)" in text, text
        start = time.monotonic()
        outcome, text = call(url, "rewrite", prompt="a dog barks", description="", language="English")
        assert outcome == "complete" and time.monotonic() - start < 5, text
    finally:
        release.set()
        for thread in threads:
            thread.join(120)
        backend.pipeline = original
    assert results == ["complete"] * 4
