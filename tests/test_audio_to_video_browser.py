"""A real Chromium drives the Audio → Video tab on the demo checkpoint: a missing, a too-short and a silent sound are
refused at once with the field named and nothing queued; a held-out demo-world sound gives a clip that plays with
an audio track (the given sound); the app keeps serving. Screenshots go to ``test-artifacts/``.

Needs Debian's chromium at /usr/bin/chromium and the playwright Python package (see tests/test_app_browser.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from mova import media
from tests.test_app_browser import TIMEOUT_MS, assert_has_audio, open_app, open_tab, wait_video
from tests.test_app_support import ARTIFACTS, chromium, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("a2v-browser")
    with running_app("demo", root / "data", arena=False) as (url, _):
        yield url, root


def refused(page, message: str) -> None:
    page.click("#a2v-generate")
    page.wait_for_function("(m) => document.body.innerText.includes(m)", arg=message, timeout=TIMEOUT_MS)
    assert page.locator("#a2v-video video").count() == 0


def upload(page, path) -> None:
    """Put ``path`` into the audio input (clearing what it holds: a filled input has no file field)."""
    field = page.locator("#a2v-audio input[type=file]")
    if not field.count():
        # (the validation message overlays the input; a user drops a new file on it, the test clicks Clear)
        page.locator("#a2v-audio [data-testid=waveform-Audio] button[aria-label='Clear']").first.dispatch_event("click")
    field.wait_for(state="attached", timeout=TIMEOUT_MS)
    field.set_input_files(str(path))
    page.locator("#a2v-audio button[aria-label='Clear']").first.wait_for(timeout=TIMEOUT_MS)


def test_audio_to_video_tab_in_browser(app):
    from train.demo_world import held_out_prompts

    url, root = app
    ARTIFACTS.mkdir(exist_ok=True)
    clip = held_out_prompts(1, scenes=["bouncing_balls"])[0].clip
    sound = media.write_wav(root / "balls.wav", clip.audio, clip.sample_rate)
    short = media.write_wav(root / "short.wav", clip.audio[:clip.sample_rate // 2], clip.sample_rate)
    silent = media.write_wav(root / "silent.wav", np.zeros(3 * clip.sample_rate, np.float32), clip.sample_rate)
    with chromium({"width": 1280, "height": 1000}, ("--autoplay-policy=no-user-gesture-required",)) as context:
        page, errors = open_app(context, url)
        open_tab(page, "Audio → Video")
        page.fill("#a2v-prompt textarea", clip.caption)

        # 1. Bad inputs: refused before the queue, the message on the input it names
        refused(page, "audio is missing")
        for path, message in ((short, "shorter than the 2.08 s"), (silent, "the sound is silent")):
            upload(page, path)
            refused(page, message)
        page.screenshot(path=str(ARTIFACTS / "app-a2v-invalid.png"), full_page=True)
        assert all("status of 422" in e for e in errors), errors  # the refusals themselves are the only lines
        errors.clear()

        # 2. A real sound: a clip that plays, with the given sound as its track
        upload(page, sound)
        page.click("#a2v-generate")
        state = wait_video(page, "#a2v-video video")
        assert_has_audio(page, state, root)
        page.wait_for_function("() => document.querySelector('#a2v-figures').innerText.includes('NFE')",
                               timeout=TIMEOUT_MS)
        page.screenshot(path=str(ARTIFACTS / "app-a2v.png"), full_page=True)
        served = root / f"served-{abs(hash(state['src']))}.mp4"
        track = media.read_mp4(served).audio
        n = min(len(track), len(clip.audio)) - 2048
        assert np.corrcoef(track[1024:n], clip.audio[1024:n])[0, 1] > 0.95  # AAC-coded, at 16 kHz

        # 3. The other tabs still answer
        for name in ("Video → Audio", "Extend & retake", "Image+Text → Video+Audio"):
            open_tab(page, name)
            page.wait_for_timeout(200)
        assert not errors, errors
