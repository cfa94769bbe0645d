"""Arena database schema, versioned with ``PRAGMA user_version``.

``MIGRATIONS[i]`` upgrades a database at version ``i`` to ``i + 1``. To change the schema, append a
function (``ALTER TABLE``, new tables, data moves) and never edit one that has shipped: databases in the
field are at every released version.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable

logger = logging.getLogger(__name__)

_SCHEMA_V1 = (
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE models (
        id      INTEGER PRIMARY KEY,
        name    TEXT NOT NULL UNIQUE,
        created REAL NOT NULL
    )""",
    """CREATE TABLE prompts (
        id          TEXT PRIMARY KEY,              -- prompt_id from the manifest / sidecar
        text        TEXT NOT NULL,
        first_frame TEXT,                          -- path relative to the pool directory, or NULL (T2VA)
        category    TEXT NOT NULL DEFAULT '',
        prompt_set  TEXT NOT NULL DEFAULT '',
        created     REAL NOT NULL
    )""",
    """CREATE TABLE clips (
        id        INTEGER PRIMARY KEY,
        prompt_id TEXT NOT NULL REFERENCES prompts(id),
        model_id  INTEGER NOT NULL REFERENCES models(id),
        path      TEXT NOT NULL UNIQUE,            -- relative to the pool directory
        media_key TEXT NOT NULL UNIQUE,            -- opaque name the clip is served under
        settings  TEXT NOT NULL DEFAULT '{}',      -- generation settings, JSON object
        active    INTEGER NOT NULL DEFAULT 1,
        created   REAL NOT NULL
    )""",
    "CREATE INDEX clips_by_prompt ON clips(prompt_id, model_id)",
    """CREATE TABLE battles (
        id          TEXT PRIMARY KEY,              -- random, unguessable
        judge       TEXT NOT NULL,                 -- pseudonymous: HMAC(salt, session id)
        prompt_id   TEXT NOT NULL REFERENCES prompts(id),
        left_clip   INTEGER NOT NULL REFERENCES clips(id),
        right_clip  INTEGER NOT NULL REFERENCES clips(id),
        left_model  TEXT NOT NULL,
        right_model TEXT NOT NULL,
        anonymous   INTEGER NOT NULL,              -- 1 when the names were hidden while serving
        served      REAL NOT NULL,
        CHECK (left_model <> right_model)
    )""",
    "CREATE INDEX battles_by_judge ON battles(judge, served)",
    """CREATE TABLE votes (
        id        INTEGER PRIMARY KEY,
        battle_id TEXT NOT NULL UNIQUE REFERENCES battles(id),
        judge     TEXT NOT NULL,
        choice    TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'bothbad')),
        winner    TEXT NOT NULL,                   -- winning model name, or 'tie' / 'bothbad'
        model_a   TEXT NOT NULL,                   -- the model shown on the left (clip A)
        model_b   TEXT NOT NULL,                   -- the model shown on the right (clip B)
        prompt_id TEXT NOT NULL,
        anonymous INTEGER NOT NULL,                -- recorded when the vote is cast
        tstamp    REAL NOT NULL
    )""",
    "CREATE INDEX votes_by_judge ON votes(judge, tstamp)",
)


def _migrate_to_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    conn.execute("INSERT INTO meta(key, value) VALUES ('judge_salt', ?)", (secrets.token_hex(16),))


_SCHEMA_V2 = (
    # who asked, besides the session (``mova.arena.identity``): '' when unknown
    "ALTER TABLE battles ADD COLUMN client TEXT NOT NULL DEFAULT ''",   # HMAC of the address (IPv6: its /64)
    "ALTER TABLE battles ADD COLUMN browser TEXT NOT NULL DEFAULT ''",  # HMAC of the signed arena cookie
    "ALTER TABLE votes ADD COLUMN client TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE votes ADD COLUMN browser TEXT NOT NULL DEFAULT ''",
    # facts of the moment the vote came: when its battle was served, and whether it counts
    "ALTER TABLE votes ADD COLUMN served REAL",
    "ALTER TABLE votes ADD COLUMN flag TEXT NOT NULL DEFAULT ''",       # '' = counts; else why it does not
    "UPDATE votes SET served = (SELECT b.served FROM battles b WHERE b.id = votes.battle_id)",
    "CREATE INDEX battles_by_client ON battles(client, served)",
    "CREATE INDEX battles_by_browser ON battles(browser, served)",
    "CREATE INDEX votes_by_client ON votes(client, tstamp)",
    "CREATE INDEX votes_by_browser ON votes(browser, tstamp)",
)


def _migrate_to_v2(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V2:
        conn.execute(statement)


# MIGRATIONS[i] upgrades a database at user_version i to i + 1. Append, never edit a released entry.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migrate_to_v1, _migrate_to_v2)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database to ``SCHEMA_VERSION``; run inside the caller's write transaction, so each
    migration and its ``user_version`` bump are all or nothing (and two processes never race)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"arena database schema version {version} is newer than this code supports "
            f"({SCHEMA_VERSION}); upgrade MOVA Studio"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        logger.info("migrating arena database to schema version %d", target)
        MIGRATIONS[target - 1](conn)
        conn.execute(f"PRAGMA user_version = {target}")
