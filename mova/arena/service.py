"""``ArenaService``: the one object the arena and leaderboard UIs talk to.

It serves battles (two anonymous clips of one prompt), takes votes (revealing the names only then),
hands out media only from inside the pool directory, and builds the leaderboard. Per-user facts (the
current battle id) live with the caller (``gr.State``); the service keeps nothing per user in memory,
so one instance can serve every session and several processes can share one data directory.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mova.arena import analysis, sampling
from mova.arena.media import anonymous_copy
from mova.arena.paths import arena_dir, resolve_data_dir, resolve_in_pool
from mova.arena.store import CHOICES, ArenaError, ArenaStore

POOL_DIR_KEY = "pool_dir"


@dataclass(frozen=True)
class RateLimit:
    """Per-session limits, counted in the store over a sliding window (``None`` = unlimited)."""

    votes: int | None = 30
    battles: int | None = 60
    window_s: float = 60.0


@dataclass(frozen=True)
class Battle:
    """What a voter may see before voting: no model names, media under opaque file names."""

    id: str
    prompt: str
    category: str
    left: Path  # clip A
    right: Path  # clip B


@dataclass(frozen=True)
class VoteResult:
    battle_id: str
    choice: str
    left_model: str  # clip A
    right_model: str  # clip B
    winner: str  # the winning model, or "tie" / "bothbad"


class ArenaService:
    """Serve battles and take votes for one data directory.

    Args:
        data_dir: the data directory (default: ``$MOVA_DATA_DIR`` or ``./data``, read now).
        rate_limit: per-session limits on votes and served battles.
        rng: side/pair randomness; defaults to ``random.SystemRandom`` (unpredictable, thread-safe).
        clock: seconds since the epoch (injectable for tests of the rate limit).
        busy_timeout_s: SQLite busy timeout per call.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        rate_limit: RateLimit = RateLimit(),
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
    ):
        self.data_dir = resolve_data_dir(data_dir)
        self.store = ArenaStore(arena_dir(self.data_dir) / "arena.sqlite3", busy_timeout_s=busy_timeout_s)
        self.media_dir = arena_dir(self.data_dir) / "media"
        self.rate_limit = rate_limit
        self._rng = rng if rng is not None else random.SystemRandom()
        self._clock = clock
        salt = self.store.get_meta("judge_salt")
        assert salt is not None, "schema v1 writes judge_salt"
        self._salt = bytes.fromhex(salt)

    # pool

    @property
    def pool_dir(self) -> Path | None:
        """The pool directory recorded by the first import (relative to the data dir when inside it)."""
        value = self.store.get_meta(POOL_DIR_KEY)
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() else (self.data_dir / path).resolve()

    def default_pool_dir(self) -> Path:
        return arena_dir(self.data_dir) / "pool"

    def set_pool_dir(self, pool_dir: str | Path) -> Path:
        """Record the pool directory; refuse to change it once clips were imported from another one."""
        pool = Path(pool_dir).expanduser().resolve()
        current = self.pool_dir
        if current is not None and current != pool:
            raise ValueError(
                f"pool={str(pool)!r}: this arena's pool directory is {str(current)!r}; "
                "import into that directory or use another data directory"
            )
        if current is None:
            value = str(pool.relative_to(self.data_dir)) if pool.is_relative_to(self.data_dir) else str(pool)
            self.store.set_meta(POOL_DIR_KEY, value)
        return pool

    def categories(self) -> list[str]:
        return self.store.categories()

    # serving

    def judge_id(self, session_id: str) -> str:
        """Pseudonymous judge id: HMAC-SHA256 of the session id with this arena's secret salt."""
        if not session_id:
            raise ArenaError("a session id is required to take part in the arena")
        return hmac.new(self._salt, session_id.encode(), hashlib.sha256).hexdigest()[:20]

    def next_battle(self, session_id: str, category: str | None = None, *, prompt_set: str | None = None) -> Battle:
        """Serve a new battle to this session: same prompt, two different models, random sides."""
        judge = self.judge_id(session_id)
        candidates = self.store.candidates(category=category or None, prompt_set=prompt_set or None)
        if not candidates:
            where = f" in category {category!r}" if category else ""
            raise ArenaError(f"the arena pool has no clips{where}; add some with `python -m mova arena import`")
        left, right = sampling.choose_pair(
            candidates, self.store.pair_vote_counts(), self._rng, exclude=self.store.pairs_served_to(judge)
        )
        served = self.store.insert_battle(
            battle_id=secrets.token_hex(12), judge=judge, left=left, right=right, anonymous=True,
            now=self._clock(), max_per_window=self.rate_limit.battles, window_s=self.rate_limit.window_s,
        )
        return Battle(
            id=served.id, prompt=served.prompt, category=served.category,
            left=self._media(served.left_clip), right=self._media(served.right_clip),
        )

    def vote(self, session_id: str, battle_id: str, choice: str) -> VoteResult:
        """Record this session's vote on a battle it was served; returns the revealed model names."""
        if choice not in CHOICES:
            raise ArenaError(f"choice={choice!r} is not allowed; use one of {', '.join(CHOICES)}")
        if not battle_id:
            raise ArenaError("no battle to vote on; press 'Next battle'")
        row = self.store.record_vote(
            judge=self.judge_id(session_id), battle_id=battle_id, choice=choice, now=self._clock(),
            max_per_window=self.rate_limit.votes, window_s=self.rate_limit.window_s,
        )
        return VoteResult(
            battle_id=battle_id, choice=choice, left_model=row["model_a"], right_model=row["model_b"],
            winner=row["winner"],
        )

    def _media(self, clip_id: int) -> Path:
        """The file a voter receives for a clip: inside the pool, copied under an opaque name."""
        pool = self.pool_dir
        if pool is None:
            raise ArenaError("the arena has no pool directory; import clips first")
        relative, media_key = self.store.clip_path(clip_id)
        source = resolve_in_pool(pool, relative)  # refuses `..` and symlinks leading out of the pool
        if not source.is_file():
            raise ArenaError(f"clip {clip_id} is missing from the pool directory")
        return anonymous_copy(source, self.media_dir / f"{media_key}{source.suffix.lower()}")

    # votes and ratings

    def votes(self) -> pd.DataFrame:
        return analysis.votes_frame(self.store.vote_rows())

    def leaderboard(
        self,
        *,
        category: str | None = None,
        prompt_set: str | None = None,
        method: str = "bt",
        rounds: int = 200,
        seed: int = 0,
        anonymous_only: bool = True,
    ) -> analysis.Leaderboard:
        votes = analysis.filter_votes(self.votes(), category=category, prompt_set=prompt_set)
        cleaned = analysis.clean_votes(votes, anonymous_only=anonymous_only)
        return analysis.build_leaderboard(
            cleaned.votes, method=method, rounds=rounds, seed=seed, dropped=cleaned.dropped  # type: ignore[arg-type]
        )
