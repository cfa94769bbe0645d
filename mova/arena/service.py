"""``ArenaService``: the one object the arena and leaderboard UIs talk to.

It serves battles (two anonymous clips of one prompt), takes votes (revealing the names only then),
hands out media only from inside the pool directory, and builds the leaderboard. Per-user facts (the
current battle id) live with the caller (``gr.State``); the service keeps nothing per user in memory,
so one instance can serve every session and several processes can share one data directory.

Anonymity before the vote: every serve of a clip is a fresh copy under a random name, padded with random
bytes to a size that depends only on the prompt (``_serve``), so names, sizes, content hashes and container
metadata link no serve to an earlier one. What cannot be hidden is the coded video itself: a client that keeps
the decoded pictures (or the coded samples) of revealed battles recognises a clip it saw before; only a
pool much larger than what one client sees defeats that.

One client cannot move the leaderboard: limits per session, address and browser (``RateLimit``); a vote cast
before the clips could be watched is stored flagged; a client's votes beyond a small share of the total are
left out of the ratings (``CountingRules``), and the leaderboard says how many votes were left out and why.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from mova.arena import analysis, sampling
from mova.arena.identity import Identities, Voter, VoterIds
from mova.arena.clips import MIN_PADDING, anonymous_copy, padded_copy, remove_stale
from mova.arena.paths import arena_dir, resolve_in_pool
from mova.outputs import resolve_data_dir
from mova.arena.store import CHOICES, ArenaError, ArenaStore, PoolClip, Quota

logger = logging.getLogger(__name__)

POOL_DIR_KEY = "pool_dir"


@dataclass(frozen=True)
class RateLimit:
    """Limits over a sliding window per session, per client address (all its sessions and browsers) and per
    browser (the arena cookie: all its sessions); ``None`` = unlimited. Past a limit the request is refused
    with ``RateLimited`` and nothing is stored."""

    votes: int | None = 30
    battles: int | None = 60
    client_votes: int | None = 60
    client_battles: int | None = 120
    browser_votes: int | None = 30
    browser_battles: int | None = 60
    window_s: float = 60.0

    def quotas(self, ids: VoterIds, kind: Literal["votes", "battles"]) -> list[Quota]:
        """The quotas a request of ``kind`` from ``ids`` must stay within."""
        if kind not in ("votes", "battles"):
            raise ValueError(f"kind={kind!r} is not allowed; use 'votes' or 'battles'")
        limits = {"judge": (getattr(self, kind), ids.judge),
                  "client": (getattr(self, f"client_{kind}"), ids.client),
                  "browser": (getattr(self, f"browser_{kind}"), ids.browser)}
        return [Quota(scope, key, limit, self.window_s)  # type: ignore[arg-type]
                for scope, (limit, key) in limits.items() if limit and key]


@dataclass(frozen=True)
class CountingRules:
    """Which stored votes count in the ratings; the others stay stored, flagged or left out by the analysis.

    - ``min_view_s``: a vote cast sooner than this after its battle was served is stored flagged
      ``voted too fast`` (decided when the vote comes).
    - ``max_client_share``: a client's votes (one address; a session when the address is unknown) beyond this
      share of the votes counted are left out, in time order; ``client_floor`` votes of each client always count.
    """

    min_view_s: float = 5.0
    max_client_share: float | None = 0.01
    client_floor: int = 20


@dataclass(frozen=True)
class Battle:
    """What a voter may see before voting: no model names, media under fresh opaque file names."""

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
    counted: bool  # False when the vote is stored flagged (e.g. cast too fast)


class ArenaService:
    """Serve battles and take votes for one data directory.

    Args:
        data_dir: the data directory (default: ``$MOVA_DATA_DIR`` or ``./data``, read now).
        rate_limit: limits on votes and served battles per session, address and browser.
        counting: which stored votes count in the ratings.
        rng: side/pair randomness and padding lengths; defaults to ``random.SystemRandom`` (unpredictable,
            thread-safe).
        clock: seconds since the epoch (injectable for tests of the rate limit).
        busy_timeout_s: SQLite busy timeout per call.
        serve_ttl_s: served copies older than this are deleted (checked at most once a minute).
        size_jitter: served copies of a prompt's clips have the size of its largest clip plus a random
            0 … ``size_jitter`` - 1 bytes (plus the padding box's minimum).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        rate_limit: RateLimit = RateLimit(),
        counting: CountingRules = CountingRules(),
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 5.0,
        serve_ttl_s: float = 3600.0,
        size_jitter: int = 4096,
    ):
        if size_jitter < 1:
            raise ValueError(f"size_jitter={size_jitter} is not allowed; use 1 or more")
        self.data_dir = resolve_data_dir(data_dir)
        self.store = ArenaStore(arena_dir(self.data_dir) / "arena.sqlite3", busy_timeout_s=busy_timeout_s)
        self.media_dir = arena_dir(self.data_dir) / "media"  # served copies (the default serve folder)
        self.clean_dir = arena_dir(self.data_dir) / "clean"  # metadata-free copies, one per clip, never served
        self.rate_limit = rate_limit
        self.counting = counting
        self.serve_ttl_s = serve_ttl_s
        self.size_jitter = size_jitter
        self._rng = rng if rng is not None else random.SystemRandom()
        self._clock = clock
        salt = self.store.get_meta("judge_salt")
        assert salt is not None, "schema v1 writes judge_salt"
        self.identities = Identities(bytes.fromhex(salt))
        self._cleanup_lock = threading.Lock()
        self._last_cleanup: dict[Path, float] = {}  # serve folder -> when it was last cleaned (not per user)

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

    # who is voting

    def voter_ids(self, voter: Voter | str) -> VoterIds:
        """The pseudonymous ids of a voter (a bare string is a session with no address and no cookie)."""
        try:
            return self.identities.ids(voter if isinstance(voter, Voter) else Voter(session=voter))
        except ValueError as exc:
            raise ArenaError(str(exc)) from None

    def issue_cookie(self) -> str:
        """A new signed arena cookie value for a browser that has none (or a forged one)."""
        return self.identities.issue_cookie()

    def cookie_is_valid(self, value: str | None) -> bool:
        return self.identities.cookie_token(value) is not None

    # serving

    def next_battle(
        self,
        voter: Voter | str,
        category: str | None = None,
        *,
        prompt_set: str | None = None,
        serve_dir: Path | None = None,
    ) -> Battle:
        """Serve a new battle: same prompt, two different models, random sides, fresh unlinkable media.

        ``serve_dir`` is where the served copies go (default ``media_dir``); a UI passes its web server's
        cache folder so the files are served as written, without another copy.
        """
        ids = self.voter_ids(voter)
        candidates = self.store.candidates(category=category or None, prompt_set=prompt_set or None)
        if not candidates:
            where = f" in category {category!r}" if category else ""
            raise ArenaError(f"the arena pool has no clips{where}; add some with `python -m mova arena import`")
        left, right = sampling.choose_pair(
            candidates, self.store.pair_vote_counts(), self._rng, exclude=self.store.pairs_served_to(ids.judge)
        )
        now = self._clock()
        served = self.store.insert_battle(
            battle_id=secrets.token_hex(12), ids=ids, left=left, right=right, anonymous=True, now=now,
            quotas=self.rate_limit.quotas(ids, "battles"),
        )
        folder = self.media_dir if serve_dir is None else Path(serve_dir)
        left_path, right_path = self._serve(served.prompt_id, (served.left_clip, served.right_clip), folder)
        self._clean_served(folder)
        return Battle(id=served.id, prompt=served.prompt, category=served.category, left=left_path, right=right_path)

    def vote(self, voter: Voter | str, battle_id: str, choice: str) -> VoteResult:
        """Record a vote on a battle served to this session; returns the revealed model names.

        Refused (``RateLimited``) past a limit of the session, address or browser; stored but flagged when
        cast sooner than ``counting.min_view_s`` after the battle was served.
        """
        if choice not in CHOICES:
            raise ArenaError(f"choice={choice!r} is not allowed; use one of {', '.join(CHOICES)}")
        if not battle_id:
            raise ArenaError("no battle to vote on; press 'Next battle'")
        ids = self.voter_ids(voter)
        row = self.store.record_vote(
            ids=ids, battle_id=battle_id, choice=choice, now=self._clock(),
            quotas=self.rate_limit.quotas(ids, "votes"), min_view_s=self.counting.min_view_s,
        )
        return VoteResult(
            battle_id=battle_id, choice=choice, left_model=row["model_a"], right_model=row["model_b"],
            winner=row["winner"], counted=not row["flag"],
        )

    def _serve(self, prompt_id: str, clip_ids: tuple[int, int], folder: Path) -> tuple[Path, Path]:
        """Fresh copies of two clips of one prompt, both padded to one random size that does not depend on
        which clips they are: the prompt's largest clip plus random bytes."""
        clean = self._clean_copies(prompt_id, clip_ids)
        size = max(p.stat().st_size for p in clean.values()) + MIN_PADDING + self._rng.randrange(self.size_jitter)
        left, right = (
            padded_copy(clean[clip_id], folder / f"{secrets.token_hex(16)}{clean[clip_id].suffix}", size)
            for clip_id in clip_ids
        )
        return left, right

    def _clean_copies(self, prompt_id: str, needed: tuple[int, int]) -> dict[int, Path]:
        """Metadata-free copies of every active clip of a prompt (made once, kept in ``clean_dir``).

        All of them, not only the two served: the served size follows the largest. A clip that is missing
        from the pool is skipped unless it is one of ``needed``.
        """
        copies: dict[int, Path] = {}
        for clip in self.store.prompt_clips(prompt_id):
            try:
                copies[clip.clip_id] = self._clean_copy(clip)
            except ArenaError:
                if clip.clip_id in needed:
                    raise
                logger.warning("clip %d of prompt %r is missing from the pool directory", clip.clip_id, prompt_id)
        missing = [clip_id for clip_id in needed if clip_id not in copies]
        if missing:  # deactivated between choosing and serving
            raise ArenaError(f"clip {missing[0]} is no longer in the arena pool; load a new battle")
        return copies

    def _clean_copy(self, clip: PoolClip) -> Path:
        """The clip's metadata-free copy; made on first use from the pool file, which must lie inside the pool."""
        target = self.clean_dir / f"{clip.media_key}{Path(clip.path).suffix.lower()}"
        if target.is_file():  # checked and copied before: no path resolving per serve
            return target
        pool = self.pool_dir
        if pool is None:
            raise ArenaError("the arena has no pool directory; import clips first")
        source = resolve_in_pool(pool, clip.path)  # refuses `..` and symlinks leading out of the pool
        if not source.is_file():
            raise ArenaError(f"clip {clip.clip_id} is missing from the pool directory")
        return anonymous_copy(source, target)

    def _clean_served(self, folder: Path) -> None:
        """Delete served copies older than ``serve_ttl_s`` (at most once a minute per folder)."""
        now = time.time()
        with self._cleanup_lock:
            if now - self._last_cleanup.get(folder, 0.0) < 60.0:
                return
            self._last_cleanup[folder] = now
        removed = remove_stale(folder, self.serve_ttl_s, now=now)
        if removed:
            logger.info("removed %d served arena clips older than %.0f s from %s", removed, self.serve_ttl_s, folder)

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
        cleaned = analysis.clean_votes(
            votes, anonymous_only=anonymous_only, max_client_share=self.counting.max_client_share,
            client_floor=self.counting.client_floor,
        )
        return analysis.build_leaderboard(
            cleaned.votes, method=method, rounds=rounds, seed=seed, dropped=cleaned.dropped  # type: ignore[arg-type]
        )
