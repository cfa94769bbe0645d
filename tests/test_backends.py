"""Backends: request validation, the local backend's outputs, the ZeroGPU duration model and decorator, start-up."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from mova.backends import ModelUnavailableError, resolve_model_folder
from mova.settings import GenerationSettings, ModelInfo
from mova.backends.durations import DeclaredCosts, DurationModel, MeasuredClip, fit_defaults
from mova.backends.zerogpu import ZeroGPUBackend
from mova.guidance import Guidance
from tests.test_app_support import FAST, app_checkpoint, streams, write_png

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# GenerationSettings
# ----------------------------------------------------------------------------------------------------------------


def test_settings_normalise_ui_values():
    r = GenerationSettings(prompt="rain", height=64.0, width=64, num_frames=9.0, fps=12, num_inference_steps=2.0,
                           seed=5.0, negative_prompt="  ", image="", lora="", video_shift="", text_scale=5)
    assert (r.height, r.num_frames, r.num_inference_steps, r.seed) == (64, 9, 2, 5)
    assert all(isinstance(v, int) for v in (r.height, r.num_frames, r.num_inference_steps, r.seed))
    assert r.negative_prompt is None and r.image is None and r.lora is None and r.video_shift is None
    assert r.guidance_config == Guidance("text", 5.0, 1.0) and r.kind == "t2va" and r.nfe == 4
    assert r.replace(guidance="dual").nfe == 6
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['guidance_mode'\]"):
        GenerationSettings.from_values({"prompt": "rain", "guidance_mode": "dual"})


@pytest.mark.parametrize("changes, field", [
    (dict(prompt=""), "prompt"),
    (dict(prompt=None), "prompt"),
    (dict(height=65), "height"),
    (dict(width=0), "width"),
    (dict(width=True), "width"),
    (dict(height=1280, width=1296), "height×width"),
    (dict(num_frames=10), "num_frames"),
    (dict(num_frames=9.5), "num_frames"),
    (dict(num_frames=2000), "num_frames"),
    (dict(fps=0), "fps"),
    (dict(fps=float("nan")), "fps"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(guidance="loud"), "guidance"),
    (dict(text_scale=-1), "text_scale"),
    (dict(bridge_scale=float("inf")), "bridge_scale"),
    (dict(video_shift=0), "video_shift"),
    (dict(audio_shift=-2), "audio_shift"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(loudness_lufs=3), "loudness_lufs"),
    (dict(lora_scale=5), "lora_scale"),
    (dict(image="/no/such/frame.png"), "image"),
    (dict(negative_prompt=3), "negative_prompt"),
])
def test_settings_validation_names_the_field(changes, field):
    values = dict(prompt="rain on a tin roof", **FAST)
    values.update(changes)
    with pytest.raises(ValueError) as err:
        GenerationSettings(**values)
    assert field in str(err.value)


def test_the_backend_check_decodes_the_first_frame(local, tmp_path):
    not_image = tmp_path / "frame.png"
    not_image.write_text("text")
    settings = GenerationSettings(prompt="rain", image=str(not_image), **FAST)  # exists: accepted here
    assert settings.kind == "it2va"
    with pytest.raises(ValueError, match="image"):
        local.check(settings)
    resolved = local.check(GenerationSettings(prompt="rain", image=str(write_png(tmp_path / "ok.png"))))
    assert (resolved.height, resolved.num_frames, resolved.num_inference_steps) == (64, 9, 2)  # the model's


# ----------------------------------------------------------------------------------------------------------------
# LocalBackend
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tiny_checkpoint, tmp_path_factory):
    from mova.backends.local import LocalBackend

    root = tmp_path_factory.mktemp("local")
    return LocalBackend(app_checkpoint(tiny_checkpoint, root), data_dir=root / "data")


def test_local_model_info(local):
    info = local.model_info()
    assert info.name == "tiny-app" and info.backend == "local" and not info.has_lora
    assert info.resolutions == ((64, 64),)
    assert (info.default_num_frames, info.default_fps, info.default_num_inference_steps) == (9, 12.0, 2)
    assert info.size_multiple == 16 and info.frame_multiple == 4 and info.default_shift == 5.0


def test_local_generate_writes_mp4_and_sidecar(local, tmp_path):
    stages = []
    frame = write_png(tmp_path / "frame.png")
    response = local.generate(GenerationSettings(prompt="a red ball bounces", image=str(frame), seed=3, **FAST),
                              progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert ("denoise", 2, 2) in stages and stages[-1] == ("encode", 1, 1)
    info = streams(response.video_path)
    assert (info["video_codec"], info["audio_codec"], info["frames"]) == ("h264", "aac", 9)
    assert Path(response.video_path).parent == local.data_dir / "outputs"
    sidecar = json.loads(Path(response.sidecar_path).read_text())
    assert sidecar["seed"] == 3 and sidecar["settings"]["prompt"] == "a red ball bounces"
    assert sidecar["model"] == "tiny-app"
    # the sidecar names files within the outputs folder, never a server path; the first frame is our own PNG
    outputs = local.data_dir / "outputs"
    assert sidecar["video_path"] == Path(response.video_path).name and (outputs / sidecar["video_path"]).is_file()
    assert sidecar["settings"]["image"].endswith(".first_frame.png") and "/" not in json.dumps(sidecar)
    with Image.open(outputs / sidecar["settings"]["image"]) as kept:
        assert (kept.format, kept.size) == ("PNG", (64, 64))
    assert sidecar["timings"]["wall"] == response.timings["wall"]
    assert response.nfe == 4 and response.timings["wall"] >= response.timings["total"] > 0
    assert response.loudness_lufs == pytest.approx(-16.0, abs=0.5)
    assert response.av_offset_frames is None or abs(response.av_offset_frames) <= 12


def test_local_generate_reports_the_seed_random_by_default(local):
    seeded = local.generate(GenerationSettings(prompt="rain", seed=42, **FAST))
    drawn = local.generate(GenerationSettings(prompt="rain", seed=None, **FAST))
    assert seeded.seed == 42 and seeded.settings["seed"] == 42
    assert isinstance(drawn.seed, int) and drawn.seed >= 0 and drawn.settings["seed"] == drawn.seed


def test_local_checks_model_limits(local):
    with pytest.raises(ValueError, match="lora"):
        local.generate(GenerationSettings(prompt="rain", lora="style", **FAST))
    with pytest.raises(ValueError, match="num_frames=13 .* at most 9"):
        local.generate(GenerationSettings(prompt="rain", **{**FAST, "num_frames": 13}))


def test_local_runs_one_job_at_a_time(local):
    active, peak = [0], [0]
    guard = threading.Lock()
    original = local.pipeline

    class Counting:
        def __getattr__(self, name):
            return getattr(original, name)

        def __call__(self, *args, **kwargs):
            with guard:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                return original(*args, **kwargs)
            finally:
                with guard:
                    active[0] -= 1

    local.pipeline = Counting()
    try:
        threads = [threading.Thread(target=local.generate, args=(GenerationSettings(prompt=f"rain {i}", **FAST),))
                   for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        local.pipeline = original
    assert peak[0] == 1


@pytest.fixture(scope="module")
def tiny_lora(tiny_checkpoint, tmp_path_factory):
    """A small non-zero adapter on the tiny model's first video expert, in the mova.lora file format."""
    lora = pytest.importorskip("mova.lora")
    import torch

    from mova.loading import load_components

    video_dit = load_components(tiny_checkpoint, names=["video_dit"])["video_dit"]
    spec = lora.LoRASpec(rank=2, alpha=2.0, components=("video_dit",))
    video_dit.add_adapter(spec.peft_config())
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in video_dit.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    state = {f"video_dit.{k}": v for k, v in video_dit.state_dict().items() if ".lora_" in k}
    return lora.save_lora(tmp_path_factory.mktemp("lora") / "style", state, spec)


def test_local_backend_offers_and_swaps_lora_adapters(tiny_checkpoint, tiny_lora, tmp_path):
    from mova.backends.local import LocalBackend
    from mova.lora import lora_layers

    backend = LocalBackend(app_checkpoint(tiny_checkpoint, tmp_path), data_dir=tmp_path / "data",
                           loras={"style": tiny_lora})
    info = backend.model_info()
    assert info.has_lora and info.lora_adapters == ("style",)
    video_dit = backend.pipeline.components["video_dit"]
    styled = backend.generate(GenerationSettings(prompt="rain", seed=1, lora="style", lora_scale=0.5, **FAST))
    assert lora_layers([video_dit]) and styled.settings["lora"] == "style" and styled.settings["lora_scale"] == 0.5
    plain = backend.generate(GenerationSettings(prompt="rain", seed=1, **FAST))
    assert not lora_layers([video_dit]) and plain.settings["lora"] is None  # unloaded for a request without one
    with pytest.raises(ValueError, match="loras"):
        LocalBackend(pipeline=backend.pipeline, data_dir=tmp_path / "data", loras={"gone": tmp_path / "nope"})


def test_model_names_are_folders_or_hub_repo_ids(tmp_path, monkeypatch):
    from mova.backends import load_pipeline
    from mova.hub import is_repo_id

    monkeypatch.chdir(tmp_path)
    assert is_repo_id("OpenMOSS-Team/MOVA-360p")
    (tmp_path / "ckpt" / "mova").mkdir(parents=True)
    for name in ("demo", "ckpt/mova", "./org/name", "/ckpt/MOVA-360p", "~/org/name", "a/b/c", "org/", "org--x/"):
        assert not is_repo_id(name), name  # an existing folder, a path, or not of the org/name form
    assert not is_repo_id("org/na..me")  # huggingface_hub refuses ".." in a repo id
    with pytest.raises(ModelUnavailableError, match="revision=.v1. is for Hub repo ids"):
        load_pipeline(tmp_path / "ckpt" / "mova", revision="v1")


def test_missing_model_says_what_to_pass(tmp_path):
    with pytest.raises(ModelUnavailableError, match="--model"):
        resolve_model_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="model_index.json"):
        resolve_model_folder(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------------------------
# ZeroGPU
# ----------------------------------------------------------------------------------------------------------------


def info_for(resolutions, frames=193, steps=50, fps=24.0) -> ModelInfo:
    return ModelInfo(name="m", backend="zerogpu", resolutions=resolutions, default_num_frames=frames,
                     max_num_frames=frames, default_fps=fps, default_num_inference_steps=steps)


def test_duration_grows_with_steps_frames_resolution_and_nfe():
    d = DurationModel()
    base = dict(height=352, width=640, num_frames=97, num_inference_steps=20, nfe_per_step=2)
    e0 = d.estimate(**base)
    assert d.estimate(**{**base, "num_inference_steps": 21}) > e0
    assert d.estimate(**{**base, "num_frames": 101}) > e0
    assert d.estimate(**{**base, "height": 368}) > e0 and d.estimate(**{**base, "width": 656}) > e0
    assert d.estimate(**{**base, "nfe_per_step": 3}) > e0
    previous = 0
    for steps in range(1, 60):  # the clamped duration never decreases and stays in [min_s, max_s]
        seconds = d(GenerationSettings(prompt="x", height=352, width=640, num_frames=97, num_inference_steps=steps))
        assert d.min_s <= seconds <= d.max_s and seconds >= previous and isinstance(seconds, int)
        previous = seconds


def test_duration_matches_the_measured_step_times():
    d = DurationModel(declared=DeclaredCosts(text_and_encode_s=0.0, decode_s_per_mpixel_frame=0.0), slice_factor=1.0,
                      margin=1.0)
    # benchmarks/results/step_time_{360p,720p}_h200.json: text CFG (NFE 2), 193 frames, one step
    assert d.estimate(352, 640, 193, 1, 2) == pytest.approx(11.12, rel=0.02)
    assert d.estimate(720, 1280, 193, 1, 2) == pytest.approx(112.5, rel=0.02)


@pytest.mark.parametrize("resolutions, frames, steps", [
    (((352, 640), (640, 352)), 193, 50),  # MOVA-360p
    (((720, 1280), (1280, 720)), 193, 50),  # MOVA-720p
    (((64, 64),), 9, 2),  # a tiny demo-sized model
])
def test_default_settings_fit_the_space_limit(resolutions, frames, steps):
    d = DurationModel()
    fitted = fit_defaults(info_for(resolutions, frames, steps), d)
    estimate = d.estimate(fitted.default_height, fitted.default_width, fitted.default_num_frames,
                          fitted.default_num_inference_steps, fitted.default_guidance.nfe)
    assert estimate <= d.max_s and fitted.max_gpu_seconds == d.max_s
    assert (fitted.default_num_frames - 1) % 4 == 0 and fitted.default_num_frames >= 1
    assert fitted.default_num_inference_steps >= min(steps, 20)
    if frames == 9:
        assert (fitted.default_num_frames, fitted.default_num_inference_steps) == (9, 2)  # nothing to cut


def test_max_duration_from_env(monkeypatch):
    monkeypatch.setenv("MOVA_ZEROGPU_MAX_DURATION", "120")
    assert DurationModel.from_env().max_s == 120
    monkeypatch.setenv("MOVA_ZEROGPU_MAX_DURATION", "soon")
    with pytest.raises(ValueError, match="MOVA_ZEROGPU_MAX_DURATION"):
        DurationModel.from_env()


def test_spaces_gpu_is_inert_without_zero_gpu():
    import spaces
    from spaces.config import Config

    assert not Config.zero_gpu  # SPACES_ZERO_GPU is unset in tests

    def task(request, progress=None):
        return request

    assert spaces.GPU(duration=DurationModel())(task) is task


def test_zerogpu_backend_runs_inert_on_cpu(local, tmp_path):
    backend = ZeroGPUBackend(pipeline=local.pipeline, data_dir=tmp_path / "data")
    assert backend._gpu_call == backend._gpu_generate and not hasattr(backend._gpu_call, "zerogpu")
    info = backend.model_info()
    assert info.backend == "zerogpu" and info.max_gpu_seconds == backend.durations.max_s
    response = backend.generate(GenerationSettings(prompt="rain", seed=1, **FAST))
    assert streams(response.video_path)["audio_codec"] == "aac"
    too_long = GenerationSettings(prompt="rain", height=64, width=64, num_frames=9, fps=12, num_inference_steps=1000)
    small = ZeroGPUBackend(pipeline=local.pipeline, data_dir=tmp_path / "data", durations=DurationModel(max_s=20))
    with pytest.raises(ValueError, match="num_inference_steps"):
        small.generate(too_long)


def test_zerogpu_duration_env_unset_in_subprocess():
    code = ("import os; os.environ.pop('SPACES_ZERO_GPU', None)\n"
            "import spaces\n"
            "from mova.backends.zerogpu import DurationModel\n"
            "f = lambda request, progress=None: 1\n"
            "assert spaces.GPU(duration=DurationModel())(f) is f\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# ----------------------------------------------------------------------------------------------------------------
# app.py
# ----------------------------------------------------------------------------------------------------------------


def run_app(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    full_env.pop("SPACE_ID", None)
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=full_env)


def test_app_refuses_a_missing_model_with_a_message(tmp_path):
    result = run_app("--model", str(tmp_path / "missing"), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert "--model" in result.stderr and "Traceback" not in result.stderr


def test_python_app_py_serves_the_demo_checkpoint(tmp_path):
    """README's first command: ``python app.py`` with no model argument comes up on the shipped demo checkpoint and
    generates a clip at its defaults (64×64, 25 frames at 12 fps) for an API caller."""
    import os
    import time
    import urllib.request

    from gradio_client import Client

    from tests.test_app_support import free_port, streams

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    env.pop("MOVA_MODEL", None)
    env.pop("SPACE_ID", None)
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data-dir", str(tmp_path / "data")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, f"app.py exited with {proc.returncode}: {proc.stdout.read()[-3000:]}"
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "app.py did not come up"
                time.sleep(1.0)
        client = Client(url, verbose=False)
        video, seed, _, details = client.predict(prompt="A small red ball bounces twice on a wooden floor.", seed=1,
                                                 randomize_seed=False, api_name="/generate_t2va")
        info = streams(video)
        assert (info["width"], info["height"], info["frames"]) == (64, 64, 25), info
        assert info["audio_codec"] == "aac" and info["samples"] > 0
        assert details["model"] == "demo" and details["settings"]["num_inference_steps"] == 25
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_importing_app_loads_nothing():
    code = "import sys, app; assert 'torch' not in sys.modules and 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_app_args_and_env(tmp_path, monkeypatch):
    import app

    args = app.parse_args([], env={"MOVA_MODEL": "/ckpt", "MOVA_REVISION": "v1"})
    assert (args.model, args.revision, args.data_dir, args.offload, args.host, args.port, args.mcp) == (
        "/ckpt", "v1", None, None, "127.0.0.1", 7860, False)  # offload unset: the memory profile's, else none
    assert app.parse_args(["--mcp"], env={}).mcp and not app.parse_args(["--no-mcp"], env={"SPACE_ID": "a/b"}).mcp
    assert app.parse_args([], env={"SPACE_ID": "someone/mova-studio"}).mcp  # on by default on a Space
    assert not app.parse_args([], env={"SPACE_ID": "someone/mova-studio", "MOVA_MCP": "0"}).mcp
    assert app.parse_args([], env={"MOVA_MCP": "true"}).mcp
    with pytest.raises(SystemExit):
        app.parse_args([], env={"MOVA_MCP": "maybe"})
    args = app.parse_args(["--model", "demo", "--offload", "model", "--port", "7861", "--share",
                           "--lora", "/adapters/style", "--lora", "ink=/adapters/ink-v2"], env={})
    assert (args.model, args.offload, args.port, args.share, args.data_dir) == ("demo", "model", 7861, True, None)
    assert args.loras == {"style": "/adapters/style", "ink": "/adapters/ink-v2"}
    with pytest.raises(SystemExit):
        app.parse_args(["--offload", "disk"], env={})


def test_app_on_a_space_uses_the_zerogpu_backend(tiny_checkpoint, tmp_path, monkeypatch):
    import app

    monkeypatch.setenv("SPACE_ID", "someone/mova-studio")
    args = app.parse_args(["--model", str(tiny_checkpoint), "--data-dir", str(tmp_path / "data")], env={})
    backend = app.build_backend(args)
    assert isinstance(backend, ZeroGPUBackend) and backend.model_info().device == "cpu"  # inert: not on ZeroGPU
    assert backend.data_dir == (tmp_path / "data").resolve()


def test_model_index_may_set_the_cost_ceilings(tiny_checkpoint, tmp_path):
    from mova import MOVAPipeline

    folder = app_checkpoint(tiny_checkpoint, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "max_duration_s": 0.5, "max_work": 1e6}))
    info = MOVAPipeline.from_pretrained(folder, device="cpu").model_info()
    assert (info.max_duration_s, info.max_work, info.max_pixels) == (0.5, 1e6, 64 * 64)
    with pytest.raises(ValueError, match=r"9 / 12 = 0.8 s is too long: at most 0.5 s"):
        info.check(GenerationSettings(prompt="x", num_frames=9, fps=12))
    with pytest.raises(ValueError, match=r"too much work for tiny-app at this size and length: .* = 1.23e\+06, at most 1e\+06"):
        info.check(GenerationSettings(prompt="x", num_frames=5, fps=12, num_inference_steps=30))
    (folder / "model_index.json").write_text(json.dumps({**index, "max_pixels": "big"}))
    with pytest.raises(ValueError, match=r"model_index.json.*max_pixels='big' is invalid"):
        MOVAPipeline.from_pretrained(folder, device="cpu")


def test_model_defaults_fill_unset_settings_and_shifts_only_when_the_model_has_one():
    settings = GenerationSettings(prompt="rain", height=64)
    fixed = info_for(((64, 64),), frames=9, steps=2, fps=12.0)
    fixed = ModelInfo(**{**fixed.__dict__, "default_shift": 3.0})
    resolved = fixed.resolve(settings)
    assert (resolved.num_frames, resolved.fps, resolved.num_inference_steps) == (9, 12.0, 2)
    assert (resolved.video_shift, resolved.audio_shift, resolved.negative_prompt) == (3.0, 3.0, None)
    exponential = info_for(((64, 64),), frames=9, steps=2, fps=12.0)  # default_shift None: no single value
    assert exponential.resolve(settings).video_shift is None
    assert exponential.resolve(settings.replace(video_shift=2.0)).video_shift == 2.0


def test_the_cost_of_a_request_is_estimated_before_it_runs(local, tmp_path):
    from mova.backends.local import LocalBackend
    from ui.generate import cost_markdown

    backend = LocalBackend(pipeline=local.pipeline, data_dir=tmp_path / "data")
    settings = GenerationSettings(prompt="rain", seed=1, **FAST)  # the app checkpoint's default request
    first = backend.estimate(settings)
    assert first.seconds is None and first.work_ratio == pytest.approx(1.0) and first.limit_s is None
    assert cost_markdown(first).startswith("**Cost:** 1× the work of the default clip (no clip has been timed")
    clip = backend.generate(settings)
    again = backend.estimate(settings)
    stages = sum(clip.timings[k] for k in ("text", "condition", "denoise", "decode"))
    assert again.seconds == pytest.approx(stages, rel=1e-3)  # the same request: the latest clip's stage times
    longer = backend.estimate(settings.replace(num_inference_steps=4, guidance="dual"))
    assert longer.work_ratio == pytest.approx(2 * 3 / 2) and longer.seconds > again.seconds
    with pytest.raises(ValueError, match="height=72 is invalid"):
        backend.estimate(settings.replace(height=72))  # the model's limits apply to estimates too

    zero = ZeroGPUBackend(pipeline=local.pipeline, data_dir=tmp_path / "data", durations=DurationModel(max_s=10))
    costly = zero.estimate(settings)  # the declared fixed costs alone exceed 10 s
    assert costly.limit_s == 10 and costly.seconds == pytest.approx(zero.durations.estimate_settings(
        zero.model_info().resolve(settings))) and costly.seconds > 10
    text = cost_markdown(costly)
    assert "more than the 0:10 a ZeroGPU task may take" in text and "declared costs" in text
