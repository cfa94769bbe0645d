"""Arena and leaderboard pages served in-process: the HTTP API never shows model names before a vote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from mova.arena import ArenaService
from mova.arena.identity import Voter
from tests.test_app_support import ARENA_MODELS as MODELS
from tests.arena_fixtures import session_call as call
from tests.test_app_support import running_arena
from ui import arena as arena_ui
from ui import leaderboard as leaderboard_ui

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_arena(tmp_path_factory.mktemp("arena-ui"), prompts=2, categories=("speech", "music")) as running:
        yield running


def test_pages_and_api_hide_names_until_the_vote(server):
    base, service = server
    for page in ("/arena", "/leaderboard", "/"):
        html = httpx.get(base + page).text
        assert not [m for m in MODELS if m in html], page

    raw, outputs = call(base, "next_battle", ["All categories"], session="voter-1")
    assert not [m for m in MODELS if m in raw]
    _state, prompt, clip_a, clip_b, status = outputs[:5]  # gr.State is sent as null
    assert prompt.startswith("synthetic scene") and clip_a["url"] and clip_b["url"]
    assert clip_a["orig_name"] != clip_b["orig_name"]
    video = httpx.get(clip_a["url"])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert not [m for m in MODELS if m.encode() in video.content]

    judge = service.voter_ids("voter-1").judge  # the voter watched for a minute before voting
    service.store.write(lambda conn: conn.execute("UPDATE battles SET served = served - 60 WHERE judge = ?", (judge,)))
    raw, outputs = call(base, "vote", ["right"], session="voter-1")
    revealed = [m for m in MODELS if m in raw]
    assert len(revealed) == 2 and "you chose *B is better*" in outputs[0]

    with pytest.raises(RuntimeError, match="already has your vote"):
        call(base, "vote", ["left"], session="voter-1")
    with pytest.raises(RuntimeError, match="not served to this session|no battle"):
        call(base, "vote", ["left"], session="voter-2")  # never served a battle

    (row,) = [r for r in service.store.vote_rows() if r["judge"] == judge]
    assert row["flag"] == "" and row["client"] == service.voter_ids(Voter("voter-1", "127.0.0.1")).client

    _, board = call(base, "leaderboard", ["All categories", "bt"], session="viewer")
    assert "1 votes" in board[0]
    assert {row[1] for row in board[1]["value"]["data"]} == set(revealed)
    assert "<svg" in board[2]


def test_gradio_client_round_trip(server):
    base, _ = server
    client = Client(base + "/", verbose=False)
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/next_battle", "/vote", "/leaderboard"} <= set(endpoints)
    prompt, video_a, video_b, _ = client.predict("speech", api_name="/next_battle")
    assert prompt and video_a.endswith(".mp4") and video_b.endswith(".mp4")
    status = client.predict("tie", api_name="/vote")
    assert "Clip A: **" in status and "*Tie*" in status


def test_blocks_build_twice_without_shared_state(tmp_path):
    service = ArenaService(tmp_path / "data")
    one, two = arena_ui.build(service), arena_ui.build(service)
    assert one is not two
    assert leaderboard_ui.build(service) is not leaderboard_ui.build(service)


def test_arena_modules_do_not_import_torch():
    code = ("import sys, mova.arena, mova.cli.arena, mova.arena.pool, mova.arena.fill, ui.arena, ui.leaderboard; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_plot_and_table_formatting():
    import pandas as pd

    table = pd.DataFrame({"rank": [1, 2], "model": ["a<b", "c"], "rating": [1050.0, 950.0], "lower": [1000.0, 900.0],
                          "upper": [1100.0, 990.0], "votes": [10, 10], "wins": [6, 4], "ties": [0, 0],
                          "losses": [4, 6], "win_rate": [0.6, 0.4]})
    svg = leaderboard_ui.ci_plot_svg(table)
    assert svg.startswith("<svg") and "a&lt;b" in svg and svg.count("<circle") == 2
    assert leaderboard_ui.format_table(table)[0] == [1, "a<b", 1050, "1000 – 1100", 10, "60%"]
    assert leaderboard_ui.ci_plot_svg(table.iloc[:0]) == ""


def test_every_serve_gets_a_fresh_name_url_and_size(server):
    base, service = server
    session = "collector"
    served = []  # (url, size) per clip, in serving order
    for _ in range(8):  # 16 serves of 6 clips: clips repeat
        _, outputs = call(base, "next_battle", ["All categories"], session=session)
        sizes = [len(httpx.get(clip["url"]).content) for clip in outputs[2:4]]
        assert sizes[0] == sizes[1]  # both sides of a battle have one size
        served += [(clip["url"], size) for clip, size in zip(outputs[2:4], sizes)]
    urls = [url for url, _ in served]
    names = [url.rsplit("/", 1)[1] for url in urls]
    assert len(set(urls)) == len(set(names)) == 16 and all(arena_ui.SERVE_FOLDER in url for url in urls)
    clips = service.store.read(lambda conn: conn.execute(
        "SELECT left_clip, right_clip FROM battles WHERE judge = ? ORDER BY served, rowid",
        (service.voter_ids(session).judge,)).fetchall())
    by_clip: dict[int, set[int]] = {}
    for clip_id, (_, size) in zip([c for pair in clips for c in pair], served):
        by_clip.setdefault(clip_id, set()).add(size)
    repeated = [sizes for clip_id, sizes in by_clip.items() if len(sizes) > 1]
    assert repeated, by_clip  # a clip served again came with another size


def test_arena_events_answer_while_generations_queue(tmp_path):
    """64 generations wait in the GPU group; the arena and leaderboard events have their own groups and answer."""
    import threading

    import gradio as gr

    from mova.arena.pool import import_source
    from tests.arena_fixtures import write_synthetic_pool
    from tests.test_app_support import free_port

    service = ArenaService(tmp_path / "data")
    import_source(service, write_synthetic_pool(tmp_path / "pool", MODELS, prompts=1, seconds=0.5))
    release = threading.Event()
    with gr.Blocks(analytics_enabled=False) as app:
        text = gr.Textbox()

        def generate(value: str) -> str:
            release.wait(60)
            return value

        text.submit(generate, text, text, api_name="generate", concurrency_id="gpu", concurrency_limit=1)
    app.queue(max_size=1000)
    arena_ui.add_arena_pages(app, service)
    groups = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in app.fns.values() if fn.api_name}
    assert groups["next_battle"] == groups["vote"] == (arena_ui.CONCURRENCY_ID, arena_ui.CONCURRENCY_LIMIT)
    assert groups["leaderboard"] == (leaderboard_ui.CONCURRENCY_ID, leaderboard_ui.CONCURRENCY_LIMIT)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               allowed_paths=arena_ui.allowed_paths(service))
    base = f"http://127.0.0.1:{port}"
    try:
        for i in range(64):
            posted = httpx.post(f"{base}/gradio_api/call/generate", json={"data": [f"g{i}"], "session_hash": f"g{i}"})
            assert posted.status_code == 200, posted.text
        _, outputs = call(base, "next_battle", ["All categories"], session="judge")
        assert outputs[2]["url"]
        _, outputs = call(base, "vote", ["tie"], session="judge")
        assert "Clip A: **" in outputs[0]
        _, board = call(base, "leaderboard", ["All categories", "bt"], session="viewer")
        assert "left out of the ratings (1 voted too fast)" in board[0]
        assert not release.is_set()  # every generation was still queued or running meanwhile
    finally:
        release.set()
        app.close()
