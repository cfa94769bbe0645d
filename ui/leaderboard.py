"""Leaderboard tab: ratings with 95% bootstrap intervals, ranks, a plot and the win/tie/loss matrix.

``build(service)`` returns a Blocks that runs alone or is rendered into the app. The table is filled
when the page loads and on Refresh (public API event ``leaderboard(category, method)``), never at build
time, so no model name sits in the page configuration.

Run alone: ``python ui/leaderboard.py --data-dir DIR``.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from ui.generate import not_an_mcp_tool

if TYPE_CHECKING:
    import pandas as pd

    from mova.arena.service import ArenaService

ALL_CATEGORIES = "All categories"
METHODS = [("Bradley–Terry", "bt"), ("Elo (online)", "elo")]
TABLE_HEADERS = ["Rank", "Model", "Rating", "95% CI", "Votes", "Win rate"]
FEW_VOTES = 50  # below this the summary warns that the intervals are rough
CONCURRENCY_ID = "leaderboard"  # apart from the GPU queue and from the arena's votes (a bootstrap takes a while)
CONCURRENCY_LIMIT = 4


def format_table(table: pd.DataFrame) -> list[list[Any]]:
    """Rows for display: rating rounded, CI as ``lower – upper``, win rate in percent."""
    return [
        [int(row.rank), row.model, round(float(row.rating)), f"{row.lower:.0f} – {row.upper:.0f}", int(row.votes),
         "" if math.isnan(row.win_rate) else f"{100 * row.win_rate:.0f}%"]
        for row in table.itertuples(index=False)
    ]


def format_matrix(matrix: dict[str, pd.DataFrame]) -> list[list[Any]]:
    """Row model vs column model as ``win% / tie% / loss% (n)``."""
    if not matrix:
        return []
    models = list(matrix["count"].index)
    rows = []
    for a in models:
        cells: list[Any] = [a]
        for b in models:
            n = int(matrix["count"].loc[a, b])
            cells.append(
                "—" if a == b or n == 0 else
                f"{100 * matrix['win'].loc[a, b]:.0f} / {100 * matrix['tie'].loc[a, b]:.0f} / "
                f"{100 * matrix['loss'].loc[a, b]:.0f} ({n})"
            )
        rows.append(cells)
    return rows


def ci_plot_svg(table: pd.DataFrame, *, width: int = 640, row_height: int = 28) -> str:
    """A horizontal interval plot (rating dot, 95% CI whisker per model) as inline SVG, best first."""
    if table.empty:
        return ""
    left, right, top = 150, 20, 24
    height = top + row_height * len(table) + 24
    low, high = float(table["lower"].min()), float(table["upper"].max())
    pad = max(10.0, 0.05 * (high - low))
    low, high = low - pad, high + pad

    def x(value: float) -> float:
        return left + (value - low) / (high - low) * (width - left - right)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="ratings with 95% intervals" style="max-width:{width}px;font:12px sans-serif">'
    ]
    step = _tick_step(high - low)
    tick = math.ceil(low / step) * step
    while tick <= high:
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top - 6}" x2="{x(tick):.1f}" y2="{height - 20}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{x(tick):.1f}" y="{height - 6}" text-anchor="middle" fill="#666">{tick:.0f}</text>')
        tick += step
    for i, row in enumerate(table.itertuples(index=False)):
        y = top + row_height * i + row_height / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="currentColor">'
                     f"{html.escape(str(row.model))}</text>")
        parts.append(f'<line x1="{x(row.lower):.1f}" y1="{y:.1f}" x2="{x(row.upper):.1f}" y2="{y:.1f}" '
                     'stroke="#4f46e5" stroke-width="2"/>')
        parts.append(f'<circle cx="{x(row.rating):.1f}" cy="{y:.1f}" r="4" fill="#4f46e5"/>')
    parts.append("</svg>")
    return "".join(parts)


def _tick_step(span: float) -> float:
    raw = span / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def build(service: ArenaService, *, rounds: int = 200, seed: int = 0) -> gr.Blocks:
    """The leaderboard page for ``service`` (``rounds`` bootstrap resamples, seeded)."""
    with gr.Blocks(title="MOVA Arena leaderboard") as demo:
        gr.Markdown("## Arena leaderboard\nRatings from anonymous votes, with 95% bootstrap intervals. "
                    "Models whose intervals overlap share a rank.")
        with gr.Row():
            category = gr.Dropdown([ALL_CATEGORIES, *service.categories()], value=ALL_CATEGORIES, label="Category",
                                   allow_custom_value=True, min_width=200)
            method = gr.Radio(METHODS, value="bt", label="Method", min_width=200)
            refresh = gr.Button("Refresh", min_width=120, elem_id="leaderboard-refresh")
        summary = gr.Markdown(elem_id="leaderboard-summary")
        table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, label="Ratings",
                             elem_id="leaderboard-table")
        plot = gr.HTML(elem_id="leaderboard-plot", js_on_load=None)
        matrix = gr.Dataframe(interactive=False, wrap=True, label="Win / tie / loss % (row vs column)",
                              elem_id="leaderboard-matrix")

        def show(category_value: str | None, method_value: str) -> dict[Any, Any]:
            chosen = None if category_value in (None, "", ALL_CATEGORIES) else category_value
            try:
                board = service.leaderboard(category=chosen, method=method_value, rounds=rounds, seed=seed)
            except (ValueError, RuntimeError) as exc:
                raise gr.Error(str(exc)) from None
            text = f"**{board.n_votes} votes**" + (f" in *{chosen}*" if chosen else "")
            if board.dropped:
                reasons = ", ".join(f"{n} {why}" for why, n in sorted(board.dropped.items()))
                text += f" · {sum(board.dropped.values())} left out of the ratings ({reasons})"
            if board.n_votes == 0:
                text = "No votes yet." if not board.dropped else text
            elif board.n_votes < FEW_VOTES:
                text += f" · with fewer than {FEW_VOTES} votes the ratings and intervals are rough"
            models = list(board.matrix["count"].index) if board.matrix else []
            return {
                summary: text,
                table: gr.Dataframe(value=format_table(board.table), headers=TABLE_HEADERS),
                plot: ci_plot_svg(board.table),
                matrix: gr.Dataframe(value=format_matrix(board.matrix), headers=["Model", *models]),
            }

        def on_load(category_value: str | None, method_value: str) -> dict[Any, Any]:
            choices = [ALL_CATEGORIES, *service.categories()]
            return {category: gr.Dropdown(choices=choices), **show(category_value, method_value)}

        outputs = [summary, table, plot, matrix]
        not_an_mcp_tool(show)  # the arena's pages stay out of the MCP server
        queue = {"concurrency_id": CONCURRENCY_ID, "concurrency_limit": CONCURRENCY_LIMIT}
        demo.load(on_load, [category, method], [category, *outputs], api_visibility="private", **queue)
        gr.on([refresh.click, category.input, method.input], show, [category, method], outputs,
              api_name="leaderboard", **queue)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MOVA arena leaderboard on its own")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $MOVA_DATA_DIR or ./data)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)

    from mova.arena.service import ArenaService

    build(ArenaService(args.data_dir)).queue().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python ui/leaderboard.py` from anywhere
    main()
