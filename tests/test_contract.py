"""The one generation contract: every door (Python API, CLI, gradio_client API, the browser UI, the arena) builds
the same ``GenerationSettings`` and writes through the same clip writer, so the same settings and seed give the
same mp4, byte for byte (on the demo model); Stop or a closed tab ends a running generation within one denoising
step and the next request runs normally; a setting's declaration reaches the form, the API and the CLI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gradio_client import Client

from tests.test_app_support import FAST, app_checkpoint, chromium, running_app

PROMPT = "A small red ball bounces twice on a wooden floor, each bounce a sharp knock."
SEED, STEPS = 5, 4


@pytest.mark.slow
@pytest.mark.browser
def test_every_door_writes_the_same_mp4(tmp_path):
    from mova import GenerationSettings, MOVAPipeline
    from mova.__main__ import main
    from mova.arena import ArenaService
    from mova.arena.fill import PromptItem, generate_pool, parse_model_spec

    files: dict[str, Path] = {}
    # 1. Python API
    pipe = MOVAPipeline.from_pretrained("demo")
    files["python"] = pipe(GenerationSettings(prompt=PROMPT, seed=SEED, num_inference_steps=STEPS)).save(
        tmp_path / "python.mp4")
    # 2. CLI
    assert main(["generate", "--prompt", PROMPT, "--seed", str(SEED), "--steps", str(STEPS),
                 "--out", str(tmp_path / "cli.mp4")]) == 0
    files["cli"] = tmp_path / "cli.mp4"
    # 3. the arena's pool generator
    service = ArenaService(tmp_path / "arena-data")
    generate_pool(service, [PromptItem("p1", PROMPT)], [parse_model_spec(f"demo=demo:num_inference_steps={STEPS}")],
                  seed=SEED)
    files["arena"] = service.pool_dir / "demo" / f"p1_seed{SEED}.mp4"
    # 4. the app, through gradio_client and through the browser
    with running_app(Path("demo"), tmp_path / "data") as (url, backend):
        video, *_ = Client(url, verbose=False).predict(prompt=PROMPT, seed=SEED, randomize_seed=False,
                                                       num_inference_steps=STEPS, api_name="/generate_t2va")
        files["gradio_client"] = Path(video)
        before = set(backend.outputs_dir.glob("*.mp4"))
        with chromium({"width": 1100, "height": 900}) as context:
            page = context.new_page()
            page.goto(url)
            page.get_by_role("tab", name="Text → Video+Audio", exact=True).click()
            page.fill("#t2va-prompt textarea", PROMPT)
            page.fill("#t2va-seed input", str(SEED))
            page.uncheck("#t2va-randomize-seed input")
            page.fill("#t2va-steps input[type=number]", str(STEPS))
            page.press("#t2va-steps input[type=number]", "Enter")
            page.click("#t2va-generate")
            page.wait_for_selector("#t2va-video video", timeout=120_000)
        (files["browser"],) = set(backend.outputs_dir.glob("*.mp4")) - before
    reference = files["python"].read_bytes()
    assert len(reference) > 1000
    for door, path in files.items():
        assert path.read_bytes() == reference, f"{door} wrote a different mp4"


@pytest.fixture
def slow_app(tiny_checkpoint, tmp_path):
    """(url, steps seen, outcomes): the app on the tiny model, each denoising step 0.3 s longer and recorded as
    (prompt, step, time), each generation's end recorded as (prompt, "done" or the exception's name)."""
    steps_seen: list = []
    outcomes: list = []
    with running_app(app_checkpoint(tiny_checkpoint, tmp_path), tmp_path / "data", arena=False) as (url, backend):
        original = backend.pipeline

        class Slow:
            def __getattr__(self, name):
                return getattr(original, name)

            def __call__(self, settings, progress=None, **kwargs):
                def report(stage, done, total):
                    if stage == "denoise":
                        steps_seen.append((settings.prompt, done, time.monotonic()))
                        time.sleep(0.3)
                    if progress is not None:
                        progress(stage, done, total)

                try:
                    result = original(settings, progress=report, **kwargs)
                except BaseException as exc:
                    outcomes.append((settings.prompt, type(exc).__name__))
                    raise
                outcomes.append((settings.prompt, "done"))
                return result

        backend.pipeline = Slow()
        try:
            yield url, steps_seen, outcomes
        finally:
            backend.pipeline = original


def wait_until(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_stop_ends_the_generation_within_one_step_and_the_next_request_runs(slow_app):
    url, steps_seen, outcomes = slow_app
    client = Client(url, verbose=False)
    job = client.submit(prompt="long", **{**FAST, "num_inference_steps": 40}, api_name="/generate_t2va")
    wait_until(lambda: len(steps_seen) >= 2)
    job.cancel()  # what the Stop button sends
    cancelled_at = time.monotonic()
    wait_until(lambda: outcomes)
    assert outcomes == [("long", "GenerationCancelled")]
    assert len([s for s in steps_seen if s[2] > cancelled_at]) <= 1  # the step running when Stop came, at most
    assert len(steps_seen) < 10
    video, *_ = client.predict(prompt="next", **FAST, api_name="/generate_t2va")  # the GPU is free again
    assert Path(video).is_file() and outcomes[-1] == ("next", "done")


@pytest.mark.browser
def test_closing_the_tab_ends_the_generation_within_one_step(slow_app):
    url, steps_seen, outcomes = slow_app
    with chromium({"width": 1100, "height": 900}) as context:
        page = context.new_page()
        page.goto(url)
        page.get_by_role("tab", name="Text → Video+Audio", exact=True).click()
        page.fill("#t2va-prompt textarea", "closed tab")
        page.fill("#t2va-steps input[type=number]", "40")
        page.press("#t2va-steps input[type=number]", "Enter")
        page.click("#t2va-generate")
        wait_until(lambda: len(steps_seen) >= 2)
        page.close()
        closed_at = time.monotonic()
    wait_until(lambda: outcomes)
    assert outcomes == [("closed tab", "GenerationCancelled")]
    assert len([s for s in steps_seen if s[2] > closed_at]) <= 2  # the step running, and at most one more
    video, *_ = Client(url, verbose=False).predict(prompt="next", **FAST, api_name="/generate_t2va")
    assert Path(video).is_file()


def test_a_declared_setting_reaches_the_form_the_api_and_the_cli(tiny_checkpoint, tmp_path):
    """bridge_strength is declared once (mova.settings): the Advanced box shows it, the API takes it, the CLI has
    the flag, an arena spec accepts it, and the pipeline runs with it."""
    from mova.__main__ import build_parser
    from mova.arena.fill import parse_model_spec

    parser = build_parser()
    args = parser.parse_args(["generate", "--prompt", "x", "--out", "x.mp4", "--bridge-strength", "0"])
    assert args.bridge_strength == 0.0
    assert parse_model_spec("ablation=demo:bridge_strength=0").settings == {"bridge_strength": 0.0}
    with running_app(app_checkpoint(tiny_checkpoint, tmp_path), tmp_path / "data", arena=False) as (url, backend):
        client = Client(url, verbose=False)
        api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate_t2va"]
        param = next(p for p in api["parameters"] if p["parameter_name"] == "bridge_strength")
        assert param["parameter_has_default"] and param["parameter_default"] == 1.0
        _, _, _, off = client.predict(prompt="x", bridge_strength=0, seed=1, randomize_seed=False, **FAST,
                                      api_name="/generate_t2va")
        _, _, _, on = client.predict(prompt="x", seed=1, randomize_seed=False, **FAST, api_name="/generate_t2va")
        assert off["settings"]["bridge_strength"] == 0.0 and on["settings"]["bridge_strength"] == 1.0
        with pytest.raises(ValueError, match=r"bridge_strength=-1 is invalid: expected a number in \[0, 1000\]"):
            client.predict(prompt="x", bridge_strength=-1, **FAST, api_name="/generate_t2va")
