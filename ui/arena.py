"""Arena tab: watch two anonymous clips of one prompt, vote, then see which models made them.

``build(service)`` returns a Blocks that runs alone or is rendered into the app, best as its own page
(``add_arena_pages``), so it can be shared with voters without the generation UI. The layout wraps to
one column on a phone. Per-user data (the current battle id) lives in ``gr.State``; the service keeps
the rest in its database. Model names never reach the page before the vote: every serve of a clip is a
fresh file under a random name and of a random size, and the battle payload has no names.

Who votes is known by the session, the client address and a signed cookie the page sets on load
(``mova.arena.identity``); the service limits each of them and records them, pseudonymised, with each vote.

Public API events: ``next_battle(category)`` and ``vote(choice)``, with choice one of ``left``,
``right``, ``tie``, ``bothbad`` (the session's current battle is the one voted on). They run in their own
concurrency group (``CONCURRENCY_ID``), so a queue of generations never holds them up.

Run alone: ``python ui/arena.py --data-dir DIR`` (arena at ``/``, leaderboard at ``/leaderboard``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from mova.arena.identity import COOKIE_NAME, Voter  # light: no database, no media
from ui.generate import not_an_mcp_tool

if TYPE_CHECKING:
    from mova.arena.service import ArenaService

CHOICE_LABELS = {"left": "A is better", "right": "B is better", "tie": "Tie", "bothbad": "Both are bad"}
ALL_CATEGORIES = "All categories"
CONCURRENCY_ID = "arena"  # the arena's events share this group, apart from the GPU queue
CONCURRENCY_LIMIT = 16  # short SQLite transactions and a file copy each
SET_COOKIE_JS = (
    "(value) => { if (value) { document.cookie = '" + COOKIE_NAME + "=' + value + "
    "'; path=/; max-age=31536000; SameSite=Lax' + (location.protocol === 'https:' ? '; Secure' : ''); } }"
)
SERVE_FOLDER = "mova-arena"  # inside gradio's cache folder, where files are served without another copy
INTRO = (
    "## MOVA Arena\n"
    "Two clips made from the same prompt by two different models. Watch both **with sound**, then vote. "
    "The model names are shown after your vote."
)


def _voter(request: gr.Request | None) -> Voter:
    """The session, client address and arena cookie of a request."""
    if request is None or not request.session_hash:
        raise gr.Error("this event needs a browser or API session")
    client = getattr(request, "client", None)
    cookies = getattr(request, "cookies", None) or {}
    return Voter(session=request.session_hash, address=getattr(client, "host", None) or None,
                 cookie=cookies.get(COOKIE_NAME))


def build(service: ArenaService) -> gr.Blocks:
    """The arena page for ``service``; no module-level state, so it can be built any number of times."""
    with gr.Blocks(title="MOVA Arena") as demo:
        battle_id = gr.State(None)  # the battle on screen for this user
        cookie = gr.Textbox(visible=False)  # a new signed arena cookie for the page to set, or ""
        gr.Markdown(INTRO)
        categories = service.categories()  # refreshed on every page load; API callers may name newer ones
        category = gr.Dropdown([ALL_CATEGORIES, *categories], value=ALL_CATEGORIES, label="Category",
                               visible=len(categories) > 1, allow_custom_value=True, elem_id="arena-category")
        prompt = gr.Textbox(label="Prompt", interactive=False, lines=2, elem_id="arena-prompt")
        with gr.Row(equal_height=True):
            with gr.Column(min_width=280):
                clip_a = gr.Video(label="Clip A", interactive=False, elem_id="arena-clip-a")
            with gr.Column(min_width=280):
                clip_b = gr.Video(label="Clip B", interactive=False, elem_id="arena-clip-b")
        status = gr.Markdown(elem_id="arena-status")
        with gr.Row():
            vote_buttons = {
                choice: gr.Button(label, interactive=False, min_width=120, elem_id=f"arena-vote-{choice}")
                for choice, label in CHOICE_LABELS.items()
            }
        next_button = gr.Button("Next battle", variant="primary", elem_id="arena-next")
        with gr.Row(visible=False):  # inputs of the public `vote` API event
            api_choice = gr.Radio(list(CHOICE_LABELS), value="left", label="choice")
            api_vote = gr.Button("vote")

        battle_outputs = [battle_id, prompt, clip_a, clip_b, status, *vote_buttons.values()]
        serve_dir = Path(clip_a.GRADIO_CACHE) / SERVE_FOLDER
        arena_queue = {"concurrency_id": CONCURRENCY_ID, "concurrency_limit": CONCURRENCY_LIMIT}

        def buttons(interactive: bool) -> dict[Any, Any]:
            # a property update, not a new gr.Button: gradio builds one component per update either way
            return {button: gr.update(interactive=interactive) for button in vote_buttons.values()}

        def show_next(category_value: str | None, request: gr.Request) -> dict[Any, Any]:
            chosen = None if category_value in (None, "", ALL_CATEGORIES) else category_value
            try:
                battle = service.next_battle(_voter(request), chosen, serve_dir=serve_dir)
            except (ValueError, RuntimeError) as exc:  # user errors and "busy, try again"
                raise gr.Error(str(exc)) from None
            return {
                battle_id: battle.id,
                prompt: battle.prompt,
                clip_a: str(battle.left),
                clip_b: str(battle.right),
                status: "Watch both clips, then vote.",
                **buttons(True),
            }

        def on_load(request: gr.Request) -> dict[Any, Any]:
            categories = service.categories()
            update = {category: gr.Dropdown(choices=[ALL_CATEGORIES, *categories], visible=len(categories) > 1),
                      cookie: "" if service.cookie_is_valid(_voter(request).cookie) else service.issue_cookie()}
            try:
                return {**update, **show_next(ALL_CATEGORIES, request)}
            except gr.Error as exc:  # e.g. an empty pool: say so on the page instead of a toast
                return {**update, battle_id: None, prompt: "", clip_a: None, clip_b: None,
                        status: f"**The arena is not ready:** {exc.message}", **buttons(False)}

        def cast(battle: str | None, choice: str, request: gr.Request) -> dict[Any, Any]:
            try:
                result = service.vote(_voter(request), battle or "", choice)
            except (ValueError, RuntimeError) as exc:  # user errors and "busy, try again"
                raise gr.Error(str(exc)) from None
            note = "" if result.counted else (
                f" (Votes cast within {service.counting.min_view_s:g} s of loading the clips are not counted.)")
            return {
                status: (
                    f"Clip A: **{result.left_model}** · Clip B: **{result.right_model}** — "
                    f"you chose *{CHOICE_LABELS[choice]}*. Thank you! Press **Next battle** for another.{note}"
                ),
                **buttons(False),
            }

        def cast_as(choice: str):  # binds a button's choice; gradio injects `request` by annotation
            def cast_choice(battle: str | None, request: gr.Request) -> dict[Any, Any]:
                return cast(battle, choice, request)

            return cast_choice

        vote_outputs = [status, *vote_buttons.values()]
        not_an_mcp_tool(show_next)  # battles and votes are for people, not agents
        not_an_mcp_tool(cast)
        demo.load(on_load, None, [category, cookie, *battle_outputs], api_visibility="private", **arena_queue).then(
            None, [cookie], None, js=SET_COOKIE_JS, api_visibility="private", queue=False)
        gr.on([next_button.click, category.input], show_next, [category], battle_outputs, api_name="next_battle",
              **arena_queue)
        for choice, button in vote_buttons.items():
            button.click(cast_as(choice), [battle_id], vote_outputs, api_visibility="private", **arena_queue)
        api_vote.click(cast, [battle_id, api_choice], vote_outputs, api_name="vote", **arena_queue)
    return demo


def add_arena_pages(app: gr.Blocks, service: ArenaService, *, arena: str = "/arena",
                    leaderboard: str = "/leaderboard") -> None:
    """Add the arena and the leaderboard to ``app`` as their own pages (call outside ``with app:``).

    Separate pages keep the leaderboard's model names out of the arena page.
    """
    from ui import leaderboard as leaderboard_ui

    arena_page = build(service)
    board_page = leaderboard_ui.build(service)
    with app.route("Arena", arena):
        arena_page.render()
    with app.route("Leaderboard", leaderboard):
        board_page.render()


def allowed_paths(service: ArenaService) -> list[str]:
    """Pass to ``launch(allowed_paths=...)``: the service's default folder for served clips (the pages serve
    theirs from gradio's cache folder)."""
    return [str(service.media_dir)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MOVA arena on its own (arena at /, leaderboard at /leaderboard)")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $MOVA_DATA_DIR or ./data)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)

    from mova.arena.service import ArenaService
    from ui import leaderboard as leaderboard_ui

    service = ArenaService(args.data_dir)
    demo = build(service)
    board_page = leaderboard_ui.build(service)
    with demo.route("Leaderboard", "/leaderboard"):
        board_page.render()
    demo.queue().launch(
        server_name=args.host, server_port=args.port, allowed_paths=allowed_paths(service)
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python ui/arena.py` from anywhere
    main()
