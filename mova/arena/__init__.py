"""Arena: people vote between two anonymous clips of one prompt; ratings with confidence intervals.

Layout (one job per module; none of them imports torch or gradio):

- ``paths``       the arena folder and pool-path checks (no path traversal)
- ``identity``    who votes: pseudonymous session, address and signed-cookie ids
- ``store``       SQLite store (WAL, versioned schema, every write one transaction, retry on busy)
- ``pool``        importing clips from a manifest or a folder of generation results
- ``fill``        filling the pool with the local pipeline (imports ``mova`` lazily)
- ``sampling``    choosing the next pair (fewer votes favoured, sides shuffled)
- ``clips``       metadata-free clip copies, fresh padded copies per serve, stale-copy cleanup
- ``service``     ``ArenaService``: the one object the UI talks to (limits, counting rules, serving)
- ``ratings``     pure functions: Elo, Bradley–Terry, bootstrap CIs, ranks, win/tie/loss
- ``analysis``    cleaning and filtering vote rows, the leaderboard table
(the command line, ``python -m mova arena import | generate | export | ratings``, is ``mova.cli.arena``)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Lazy, so that `python -m mova` (which imports `mova.cli.arena` to build its parser) does not pay
# for pandas and scipy unless an arena command runs.
_LAZY = {
    **dict.fromkeys(("ArenaService", "Battle", "CountingRules", "RateLimit", "VoteResult"), "mova.arena.service"),
    **dict.fromkeys(("CHOICES", "AlreadyVoted", "ArenaBusy", "ArenaError", "ArenaStore", "NotServed", "RateLimited"),
                    "mova.arena.store"),
    "Voter": "mova.arena.identity",
    "resolve_data_dir": "mova.outputs",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from mova.outputs import resolve_data_dir
    from mova.arena.identity import Voter
    from mova.arena.service import ArenaService, Battle, CountingRules, RateLimit, VoteResult
    from mova.arena.store import CHOICES, AlreadyVoted, ArenaBusy, ArenaError, ArenaStore, NotServed, RateLimited


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mova.arena' has no attribute {name!r}")
