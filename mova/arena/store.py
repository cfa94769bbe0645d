"""SQLite store for the arena: pool (models, prompts, clips), battles served and votes.

One database file, ``<data_dir>/arena/arena.sqlite3``, in WAL mode so readers never wait for the writer.

- Every write is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so two writers
  never deadlock on a read-then-write upgrade, and ``busy_timeout`` makes the second one wait.
- A write that still meets "database is locked" (a long checkpoint, another process) is retried with
  jittered backoff until ``max_wait_s``; after that the caller gets ``ArenaBusy`` ("try again"), never
  a raw ``sqlite3.OperationalError``.
- The schema is versioned with ``PRAGMA user_version`` and migrated on open (``schema.migrate``).
- Each thread keeps one connection (``threading.local`` on the store instance): reopening per call would
  make every close of the last connection checkpoint and delete the WAL. The store is safe to share
  between threads, and several processes can use one file.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from mova.arena.identity import VoterIds
from mova.arena.schema import migrate

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A vote is cast for a side of the screen; the model-level winner is derived from the battle.
CHOICES: tuple[str, ...] = ("left", "right", "tie", "bothbad")
RESERVED_MODEL_NAMES = frozenset({"tie", "bothbad", ""})

_SQLITE_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED

# A limit counts rows of one session (judge), one client address or one browser (arena cookie).
Scope = Literal["judge", "client", "browser"]
SCOPE_WORDS: dict[str, str] = {"judge": "session", "client": "address", "browser": "browser"}
TOO_FAST = "voted too fast"  # the flag of a vote cast sooner after serving than the minimum viewing time


class ArenaError(ValueError):
    """A request the arena refuses; the message is meant for the user."""


class NotServed(ArenaError):
    """The battle does not exist or was served to another session."""


class AlreadyVoted(ArenaError):
    """The battle already has a vote (one vote per battle)."""


class RateLimited(ArenaError):
    """This session sent too many requests in the rate-limit window."""


class ArenaBusy(RuntimeError):
    """The database stayed locked for longer than the store is willing to wait."""


# --- rows -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipRow:
    """One clip to add to the pool (paths relative to the pool directory)."""

    prompt_id: str
    prompt: str
    model: str
    path: str
    first_frame: str | None = None
    category: str = ""
    prompt_set: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """An active clip that can be served."""

    clip_id: int
    prompt_id: str
    model: str


@dataclass(frozen=True)
class Quota:
    """At most ``limit`` rows in ``window_s`` seconds for one value (``key``) of ``scope``; an empty key
    (the fact is unknown) is not limited."""

    scope: Scope
    key: str
    limit: int
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.scope not in get_args(Scope):
            raise ValueError(f"scope={self.scope!r} is not allowed; use one of {', '.join(get_args(Scope))}")
        if self.limit < 1 or self.window_s <= 0:
            raise ValueError(f"limit={self.limit}, window_s={self.window_s}: use a limit >= 1 and a window > 0")


@dataclass(frozen=True)
class PoolClip:
    """An active clip with where it lives (path relative to the pool)."""

    clip_id: int
    path: str
    media_key: str


@dataclass(frozen=True)
class ServedBattle:
    id: str
    prompt_id: str
    prompt: str
    category: str
    left_clip: int
    right_clip: int
    left_media_key: str
    right_media_key: str


# --- the store ------------------------------------------------------------------------------------


class ArenaStore:
    """The arena database. Safe to share between threads; every method opens its own connection.

    Args:
        path: the SQLite file (created with its folder if missing).
        busy_timeout_s: how long one SQLite call waits for a lock before reporting busy.
        max_wait_s: how long a write keeps retrying after busy reports before raising ``ArenaBusy``.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0, max_wait_s: float = 60.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.max_wait_s = max_wait_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # this thread's connection
        self._init_database()

    # connections and transactions

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=True)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable in WAL mode except on power loss
        return conn

    def _retrying(self, op: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.max_wait_s
        delay = 0.005
        while True:
            try:
                return op()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if time.monotonic() > deadline:
                    raise ArenaBusy("the arena database is busy; please try again in a moment") from exc
                logger.debug("database busy, retrying in %.3f s", delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one ``BEGIN IMMEDIATE`` transaction; commit, or roll back on error."""

        def attempt() -> T:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self._retrying(attempt)

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one read transaction (a consistent snapshot)."""

        def attempt() -> T:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

        return self._retrying(attempt)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Every row of one query, read in one transaction."""
        return self.read(lambda conn: conn.execute(sql, params).fetchall())

    def _init_database(self) -> None:
        def set_wal() -> None:
            with closing(self._connect()) as conn:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    logger.warning("SQLite refused WAL mode for %s (mode %s)", self.path, mode)

        self._retrying(set_wal)
        self.write(migrate)

    # meta

    def get_meta(self, key: str) -> str | None:
        row = self.read(lambda conn: conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.write(lambda conn: conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value)))

    # pool

    def add_clips(self, rows: Sequence[ClipRow], *, now: float | None = None) -> list[str]:
        """Add clips in one transaction. Returns one outcome per row: ``"added"``, ``"duplicate"``
        (the path is already in the pool), or a rejection reason."""
        now = time.time() if now is None else now
        return self.write(lambda conn: [_add_clip(conn, row, now) for row in rows])

    def candidates(self, *, category: str | None = None, prompt_set: str | None = None) -> list[Candidate]:
        """Active clips, optionally of one category / prompt set."""
        sql = (
            "SELECT c.id, c.prompt_id, m.name FROM clips c JOIN models m ON m.id = c.model_id "
            "JOIN prompts p ON p.id = c.prompt_id WHERE c.active = 1"
        )
        params: list[Any] = []
        if category:
            sql += " AND p.category = ?"
            params.append(category)
        if prompt_set:
            sql += " AND p.prompt_set = ?"
            params.append(prompt_set)
        return [Candidate(clip_id=r[0], prompt_id=r[1], model=r[2]) for r in self.rows(sql, params)]

    def pair_vote_counts(self) -> dict[tuple[int, int], int]:
        """Votes per unordered clip pair, keyed ``(smaller clip id, larger clip id)``."""
        rows = self.rows("SELECT MIN(b.left_clip, b.right_clip), MAX(b.left_clip, b.right_clip), COUNT(*) "
                         "FROM votes v JOIN battles b ON b.id = v.battle_id GROUP BY 1, 2")
        return {(r[0], r[1]): r[2] for r in rows}

    def pairs_served_to(self, judge: str) -> set[tuple[int, int]]:
        rows = self.rows("SELECT MIN(left_clip, right_clip), MAX(left_clip, right_clip) FROM battles WHERE judge = ?",
                         (judge,))
        return {(r[0], r[1]) for r in rows}

    def prompt_clips(self, prompt_id: str) -> list[PoolClip]:
        """The active clips of one prompt."""
        rows = self.rows("SELECT id, path, media_key FROM clips WHERE prompt_id = ? AND active = 1 ORDER BY id",
                         (prompt_id,))
        return [PoolClip(clip_id=r[0], path=r[1], media_key=r[2]) for r in rows]

    def categories(self) -> list[str]:
        rows = self.rows("SELECT DISTINCT p.category FROM prompts p JOIN clips c ON c.prompt_id = p.id "
                         "WHERE c.active = 1 AND p.category <> '' ORDER BY 1")
        return [r[0] for r in rows]

    def counts(self) -> dict[str, int]:
        return self.read(lambda conn: {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                                       for table in ("models", "prompts", "clips", "battles", "votes")})

    # battles and votes

    def insert_battle(
        self,
        *,
        battle_id: str,
        ids: VoterIds,
        left: Candidate,
        right: Candidate,
        anonymous: bool,
        now: float,
        quotas: Sequence[Quota] = (),
    ) -> ServedBattle:
        """Record a served battle (refused with ``RateLimited`` past a quota) and return what the page may show."""
        if left.prompt_id != right.prompt_id or left.model == right.model:
            raise ValueError("a battle needs two clips of one prompt from two different models")

        def insert(conn: sqlite3.Connection) -> ServedBattle:
            for quota in quotas:
                _check_quota(conn, quota, now, table="battles", time_column="served", advice="please slow down")
            conn.execute(
                "INSERT INTO battles(id, judge, client, browser, prompt_id, left_clip, right_clip, left_model, "
                "right_model, anonymous, served) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (battle_id, ids.judge, ids.client, ids.browser, left.prompt_id, left.clip_id, right.clip_id,
                 left.model, right.model, int(anonymous), now),
            )
            row = conn.execute(
                "SELECT p.text, p.category, l.media_key, r.media_key FROM prompts p, clips l, clips r "
                "WHERE p.id = ? AND l.id = ? AND r.id = ?",
                (left.prompt_id, left.clip_id, right.clip_id),
            ).fetchone()
            return ServedBattle(
                id=battle_id, prompt_id=left.prompt_id, prompt=row[0], category=row[1],
                left_clip=left.clip_id, right_clip=right.clip_id, left_media_key=row[2], right_media_key=row[3],
            )

        return self.write(insert)

    def record_vote(
        self,
        *,
        ids: VoterIds,
        battle_id: str,
        choice: str,
        now: float,
        quotas: Sequence[Quota] = (),
        min_view_s: float = 0.0,
    ) -> dict[str, Any]:
        """Store one vote; returns the stored row. Raises ``NotServed``, ``AlreadyVoted``, ``RateLimited``.

        A vote cast less than ``min_view_s`` after its battle was served is stored with ``flag = TOO_FAST``:
        kept, but left out of the ratings.
        """
        if choice not in CHOICES:
            raise ArenaError(f"choice={choice!r} is not allowed; use one of {', '.join(CHOICES)}")

        def record(conn: sqlite3.Connection) -> dict[str, Any]:
            battle = conn.execute(
                "SELECT judge, prompt_id, left_model, right_model, anonymous, served FROM battles WHERE id = ?",
                (battle_id,),
            ).fetchone()
            # one message for "unknown" and "someone else's": do not confirm that a battle id exists
            if battle is None or battle["judge"] != ids.judge:
                raise NotServed(f"battle {battle_id!r} was not served to this session; load a new battle")
            if conn.execute("SELECT 1 FROM votes WHERE battle_id = ?", (battle_id,)).fetchone():
                raise AlreadyVoted("this battle already has your vote; press 'Next battle' for a new one")
            for quota in quotas:
                _check_quota(conn, quota, now, table="votes", time_column="tstamp",
                             advice="please take a moment with the clips")
            winner = {"left": battle["left_model"], "right": battle["right_model"]}.get(choice, choice)
            row = {
                "battle_id": battle_id, "judge": ids.judge, "client": ids.client, "browser": ids.browser,
                "choice": choice, "winner": winner, "model_a": battle["left_model"], "model_b": battle["right_model"],
                "prompt_id": battle["prompt_id"], "anonymous": battle["anonymous"], "served": battle["served"],
                "tstamp": now, "flag": TOO_FAST if now - battle["served"] < min_view_s else "",
            }
            try:
                conn.execute(
                    "INSERT INTO votes(battle_id, judge, client, browser, choice, winner, model_a, model_b, prompt_id, "
                    "anonymous, served, tstamp, flag) VALUES (:battle_id, :judge, :client, :browser, :choice, "
                    ":winner, :model_a, :model_b, :prompt_id, :anonymous, :served, :tstamp, :flag)",
                    row,
                )
            except sqlite3.IntegrityError as exc:  # the UNIQUE(battle_id) backstop
                raise AlreadyVoted("this battle already has a vote") from exc
            return row

        return self.write(record)

    def vote_rows(self) -> list[dict[str, Any]]:
        """Every vote (flagged ones too) with its prompt's category and prompt set and the seconds from serving
        to voting."""
        rows = self.rows(
            "SELECT v.id AS vote_id, v.battle_id, v.prompt_id, p.category, p.prompt_set, v.model_a, v.model_b, "
            "v.choice, v.winner, v.judge, v.client, v.browser, v.anonymous, v.served, v.tstamp, v.flag, "
            "v.tstamp - COALESCE(v.served, b.served) AS seconds_to_vote "
            "FROM votes v JOIN battles b ON b.id = v.battle_id JOIN prompts p ON p.id = v.prompt_id "
            "ORDER BY v.tstamp, v.id")
        return [dict(r) for r in rows]


# --- helpers --------------------------------------------------------------------------------------


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _SQLITE_BUSY_CODES:
        return True
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _check_quota(conn: sqlite3.Connection, quota: Quota, now: float, *, table: str, time_column: str,
                 advice: str) -> None:
    """Raise ``RateLimited`` when ``quota.key`` already has ``quota.limit`` rows of ``table`` in the window."""
    if not quota.key:
        return
    # scope, table and column come from fixed allow-lists, never from a request
    used = conn.execute(
        f"SELECT COUNT(*) FROM {table} WHERE {quota.scope} = ? AND {time_column} > ?",
        (quota.key, now - quota.window_s),
    ).fetchone()[0]
    if used >= quota.limit:
        noun = "votes" if table == "votes" else "battles"
        raise RateLimited(
            f"too many {noun}: at most {quota.limit} per {quota.window_s:g} s per {SCOPE_WORDS[quota.scope]}; {advice}"
        )


def _add_clip(conn: sqlite3.Connection, row: ClipRow, now: float) -> str:
    if row.model in RESERVED_MODEL_NAMES:
        return f"model name {row.model!r} is reserved"
    if conn.execute("SELECT 1 FROM clips WHERE path = ?", (row.path,)).fetchone():
        return "duplicate"
    prompt = conn.execute(
        "SELECT text, first_frame, category, prompt_set FROM prompts WHERE id = ?", (row.prompt_id,)
    ).fetchone()
    if prompt is None:
        conn.execute(
            "INSERT INTO prompts(id, text, first_frame, category, prompt_set, created) VALUES (?, ?, ?, ?, ?, ?)",
            (row.prompt_id, row.prompt, row.first_frame, row.category, row.prompt_set, now),
        )
    elif prompt["text"] != row.prompt:
        return f"prompt_id {row.prompt_id!r} is already in the pool with a different prompt text"
    elif row.category and prompt["category"] and prompt["category"] != row.category:
        return f"prompt_id {row.prompt_id!r} is already in category {prompt['category']!r}, not {row.category!r}"
    conn.execute("INSERT OR IGNORE INTO models(name, created) VALUES (?, ?)", (row.model, now))
    model_id = conn.execute("SELECT id FROM models WHERE name = ?", (row.model,)).fetchone()[0]
    conn.execute(
        "INSERT INTO clips(prompt_id, model_id, path, media_key, settings, created) VALUES (?, ?, ?, ?, ?, ?)",
        (row.prompt_id, model_id, row.path, secrets.token_hex(12), json.dumps(row.settings, sort_keys=True), now),
    )
    return "added"

