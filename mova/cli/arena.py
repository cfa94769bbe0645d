"""``python -m mova arena import | generate | export | ratings``.

``register(subparsers)`` adds the ``arena`` command; each sub-command's ``func(args)`` returns an exit
code and raises ValueError for user errors (the dispatcher prints them as one line).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None, help="data directory (default: $MOVA_DATA_DIR or ./data)")

    arena = subparsers.add_parser("arena", help="pairwise human preference arena: pool, votes, ratings")
    sub = arena.add_subparsers(dest="arena_command", metavar="ARENA_COMMAND", required=True)

    p = sub.add_parser("import", parents=[common], help="add clips from a manifest (.jsonl/.csv) or a results folder")
    p.add_argument("source", help="manifest file or folder of *.mp4 with sidecar .json")
    p.add_argument("--pool", default=None, help="pool directory the clips must lie in (default: the arena's, "
                                               "else the manifest's folder / the folder)")
    p.add_argument("--dry-run", action="store_true", help="check every row, add nothing")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("generate", parents=[common], help="fill the pool with the local pipeline")
    p.add_argument("--prompts", required=True, help="prompts file: .jsonl/.csv (prompt_id, prompt, ...) or .txt")
    p.add_argument("--model", action="append", required=True, metavar="NAME=DIR_OR_demo[:k=v,...]",
                   help="a model or setting to compare; repeat for each")
    p.add_argument("--pool", default=None, help="pool directory (default: the arena's, else DATA_DIR/arena/pool)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first prompt (prompt i uses seed + i)")
    p.add_argument("--overwrite", action="store_true", help="regenerate clips that already exist")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", parents=[common], help="write votes (and ratings) to CSV or JSONL")
    p.add_argument("--votes", default=None, help="output file for votes: .csv or .jsonl")
    p.add_argument("--ratings", default=None, help="output file for the leaderboard: .csv or .jsonl")
    _rating_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ratings", parents=[common], help="print the leaderboard")
    _rating_options(p)
    p.set_defaults(func=cmd_ratings)


def _rating_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=("bt", "elo"), default="bt", help="Bradley–Terry (default) or online Elo")
    p.add_argument("--category", default=None, help="only prompts of this category")
    p.add_argument("--prompt-set", default=None, help="only prompts of this prompt set")
    p.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds for the 95%% intervals")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--include-named", action="store_true", help="also count votes cast with names visible")


def _service(args: argparse.Namespace):
    from mova.arena.service import ArenaService

    return ArenaService(args.data_dir)


def cmd_import(args: argparse.Namespace) -> int:
    from mova.arena.pool import import_source

    report = import_source(_service(args), args.source, pool_dir=args.pool, dry_run=args.dry_run)
    print(report.summary())
    return 1 if report.rejected else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from mova.arena.fill import generate_pool, parse_model_spec, read_prompts

    models = [parse_model_spec(text) for text in args.model]
    reports = generate_pool(
        _service(args), read_prompts(args.prompts), models, pool_dir=args.pool, seed=args.seed,
        overwrite=args.overwrite,
    )
    for report in reports:
        print(report.summary())
    return 1 if any(r.rejected for r in reports) else 0


def _leaderboard(args: argparse.Namespace, service):
    return service.leaderboard(
        category=args.category, prompt_set=args.prompt_set, method=args.method, rounds=args.rounds,
        seed=args.seed, anonymous_only=not args.include_named,
    )


def cmd_ratings(args: argparse.Namespace) -> int:
    board = _leaderboard(args, _service(args))
    if board.n_votes == 0:
        print("no votes yet" + (f" (dropped: {board.dropped})" if board.dropped else ""))
        return 0
    table = board.table.copy()
    print(f"{'Bradley–Terry' if board.method == 'bt' else 'Elo'} ratings, {board.n_votes} votes, "
          f"95% bootstrap intervals ({args.rounds} rounds, seed {args.seed})")
    if board.dropped:
        print("dropped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(board.dropped.items())))
    print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if not args.votes and not args.ratings:
        raise ValueError("export needs --votes FILE and/or --ratings FILE (.csv or .jsonl)")
    service = _service(args)
    if args.votes:
        votes = service.votes()
        _write_table(votes, Path(args.votes))
        print(f"wrote {len(votes)} votes to {args.votes}")
    if args.ratings:
        board = _leaderboard(args, service)
        _write_table(board.table, Path(args.ratings))
        print(f"wrote {len(board.table)} ratings to {args.ratings}")
    return 0


def _write_table(frame: "pd.DataFrame", path: Path) -> None:
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        with path.open("w", encoding="utf-8") as handle:
            for record in frame.astype(object).where(frame.notna(), None).to_dict(orient="records"):
                handle.write(json.dumps(record, default=str) + "\n")
    else:
        raise ValueError(f"output {str(path)!r}: suffix {suffix!r} is not allowed; use .csv or .jsonl")
