"""Helpers shared by the app and arena tests (no tests here): a tiny checkpoint set up for the app, a running app
(in this process, or ``python app.py`` as a subprocess), a running arena page on a synthetic pool, Debian's Chromium
driven by Playwright.

The tiny checkpoint's ``model_index.json`` gets the app-facing keys (``resolutions``, ``default_height`` …) so the
UI's defaults are already the fast CPU settings: 64×64, 9 frames at 12 fps, 2 steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import av
import pytest

APP_DEFAULTS = {"default_height": 64, "default_width": 64, "default_num_frames": 9,
                "default_fps": 12.0, "default_num_inference_steps": 2}
FAST = dict(height=64, width=64, num_frames=9, fps=12, num_inference_steps=2)
ARENA_MODELS = ("zebra-model", "yak-model", "xenon-model")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--metrics-recording-only", "--mute-audio"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_checkpoint(tiny_checkpoint: Path, folder: Path) -> Path:
    """A copy of the session's tiny checkpoint with the app defaults in its model_index.json."""
    target = folder / "tiny-app"
    shutil.copytree(tiny_checkpoint, target)
    index_path = target / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update(APP_DEFAULTS)
    index_path.write_text(json.dumps(index, indent=2))
    return target


@contextmanager
def running_app(checkpoint: Path, data_dir: Path, *, arena: bool = True):
    """Yield (url, backend) for the full app served in this process on a free port."""
    from mova.arena import ArenaService
    from mova.backends.local import LocalBackend
    from ui import build_app, launch_options

    backend = LocalBackend(checkpoint, data_dir=data_dir)
    service = ArenaService(data_dir) if arena else None
    app = build_app(backend, service)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               **launch_options(backend, service))
    try:
        yield f"http://127.0.0.1:{port}", backend
    finally:
        app.close()


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Wait until ``url`` answers, failing with the process's output if it exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app exited early with code {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1.0)
    raise AssertionError("app did not come up")


@contextmanager
def app_process(args: list[str], env: dict[str, str] | None = None, *, timeout: float = 240.0):
    """Yield (url, process) for ``python app.py --port P ARGS`` started with ``env`` added to this environment
    (offline: ``HF_HUB_OFFLINE=1``); stopped with Ctrl-C (SIGINT) afterwards, killed if it does not stop."""
    port = free_port()
    cmd = [sys.executable, "app.py", "--port", str(port), *args]
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url, proc, timeout)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def running_arena(root: Path, **pool):
    """Yield (url, service): the arena and leaderboard pages, served in this process on a free port, over a
    synthetic pool of ``ARENA_MODELS`` (``pool``: ``write_synthetic_pool`` options)."""
    import gradio as gr

    from mova.arena import ArenaService
    from mova.arena.pool import import_source
    from tests.arena_fixtures import write_synthetic_pool
    from ui import arena as arena_ui

    service = ArenaService(root / "data")
    import_source(service, write_synthetic_pool(root / "pool", ARENA_MODELS, **pool))
    with gr.Blocks(title="MOVA Studio", analytics_enabled=False) as app:
        gr.Markdown("generation UI would be here")
    arena_ui.add_arena_pages(app, service)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       allowed_paths=arena_ui.allowed_paths(service))
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        app.close()


@contextmanager
def chromium(viewport: dict, extra_args: tuple[str, ...] = ()):
    """A Playwright browser context on Debian's Chromium (never a downloaded browser). Fails, not skips, when it
    is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get update && apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(tempfile.mkdtemp(), executable_path=CHROMIUM, headless=True,
                                                       args=[*CHROMIUM_ARGS, *extra_args], viewport=viewport)
        try:
            yield context
        finally:
            context.close()


def streams(path: str | Path) -> dict:
    """Codec names and decoded frame / sample counts of an mp4 (PyAV)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        info = {"video_codec": video.codec_context.name, "audio_codec": audio.codec_context.name,
                "width": video.codec_context.width, "height": video.codec_context.height}
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    info.update(frames=frames, samples=samples)
    return info


def write_png(path: Path, size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 60, 40)) -> Path:
    from PIL import Image

    Image.new("RGB", size, colour).save(path)
    return path
