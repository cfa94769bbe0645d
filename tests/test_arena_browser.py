"""A real Chromium votes through the arena page: no names before the vote, names and leaderboard after.

Needs Debian's chromium at /usr/bin/chromium (``apt-get install -y chromium``) and the playwright Python
package (never ``playwright install``). Fails, not skips, when the browser is missing. Screenshots go
to ``test-artifacts/``.
"""

from __future__ import annotations

import pytest

from tests.test_app_support import ARENA_MODELS as MODELS
from tests.test_app_support import ARTIFACTS, chromium, running_arena

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser_context():
    with chromium({"width": 1100, "height": 900}) as context:
        yield context


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with running_arena(tmp_path_factory.mktemp("arena-browser"), prompts=2, seconds=1.0) as running:
        yield running


def names_in(text: str) -> list[str]:
    return [m for m in MODELS if m in text]


def test_arena_vote_in_browser(browser_context, app_url):
    app_url, service = app_url
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    responses: list[str] = []  # URLs the page fetched from the app's API (file names included)
    page.on("response", lambda r: responses.append(r.url) if "gradio_api" in r.url else None)

    # 1. the arena page loads a battle: two playable clips, vote buttons enabled, no names anywhere
    page.goto(f"{app_url}/arena")
    page.wait_for_selector("#arena-clip-a video", timeout=30_000)
    page.wait_for_selector("#arena-clip-b video", timeout=30_000)
    vote_a = page.get_by_role("button", name="A is better")
    page.wait_for_function("() => !document.querySelector('#arena-vote-left').disabled", timeout=15_000)
    page.wait_for_function("() => document.querySelector('#arena-clip-a video').readyState >= 1", timeout=15_000)
    before = page.content()
    assert not names_in(before), "model names in the page before the vote"
    assert "Clip A" in before and "Clip B" in before
    sources = page.eval_on_selector_all("video", "els => els.map(e => e.currentSrc || e.src)")
    assert len(sources) == 2 and not names_in(" ".join(sources))
    assert not names_in(" ".join(responses))
    page.screenshot(path=str(ARTIFACTS / "arena-before-vote.png"), full_page=True)
    # the served file, padded at its end, plays to its last frame
    ended = page.evaluate("""() => new Promise(done => {
        const v = document.querySelector('#arena-clip-a video');
        v.addEventListener('seeked', () => done({state: v.readyState, error: v.error && v.error.code}), {once: true});
        v.currentTime = Math.max(0, v.duration - 0.05);
    })""")
    assert ended["error"] is None and ended["state"] >= 2, ended
    # the page set a signed arena cookie
    page.wait_for_function("() => document.cookie.includes('mova_arena=')", timeout=15_000)
    cookie = next(c["value"] for c in browser_context.cookies() if c["name"] == "mova_arena")
    assert service.cookie_is_valid(cookie)

    # 2. vote (after watching: the battle is dated back a minute): names revealed, buttons disabled
    service.store.write(lambda conn: conn.execute("UPDATE battles SET served = served - 60"))
    vote_a.click()
    page.wait_for_function("() => document.querySelector('#arena-status')?.innerText?.includes('Clip A:')",
                           timeout=15_000)
    status = page.inner_text("#arena-status")
    assert len(names_in(status)) == 2 and "A is better" in status
    for choice in ("left", "right", "tie", "bothbad"):
        assert page.is_disabled(f"#arena-vote-{choice}")
    (row,) = service.store.vote_rows()
    assert row["browser"] and row["client"] and row["flag"] == ""  # the cookie came with the vote
    page.screenshot(path=str(ARTIFACTS / "arena-after-vote.png"), full_page=True)

    # 3. next battle: buttons back, names gone
    page.get_by_role("button", name="Next battle").click()
    page.wait_for_function("() => !document.querySelector('#arena-vote-left').disabled", timeout=15_000)
    assert not names_in(page.inner_text("#arena-status"))

    # 4. the leaderboard page counts the vote
    board = browser_context.new_page()
    board.goto(f"{app_url}/leaderboard")
    board.wait_for_function("() => document.querySelector('#leaderboard-summary')?.innerText?.includes('1 votes')",
                            timeout=30_000)
    table = board.inner_text("#leaderboard-table")
    assert len(names_in(table)) == 2, table
    assert board.query_selector("#leaderboard-plot svg") is not None
    board.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)
    assert not [e for e in errors if "Failed to load resource" not in e], errors


def test_arena_fits_a_phone(browser_context, app_url):
    app_url, _ = app_url
    page = browser_context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{app_url}/arena")
    page.wait_for_selector("#arena-clip-b video", timeout=30_000)
    a = page.locator("#arena-clip-a").bounding_box()
    b = page.locator("#arena-clip-b").bounding_box()
    assert a["width"] <= 390 and b["width"] <= 390
    assert b["y"] >= a["y"] + 0.9 * a["height"], "clips should stack in one column on a phone"
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390 + 1, f"page scrolls sideways ({width}px)"
    page.screenshot(path=str(ARTIFACTS / "arena-phone.png"), full_page=True)
