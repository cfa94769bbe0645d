"""Arena store and service: schema, serving, one vote per battle, rate limit, concurrency, media safety."""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from mova.arena import AlreadyVoted, ArenaBusy, ArenaError, ArenaService, NotServed, RateLimit, RateLimited
from mova.arena.pool import import_source
from mova.arena.sampling import choose_pair
from mova.arena.schema import SCHEMA_VERSION
from mova.arena.store import ArenaStore, Candidate
from tests.arena_fixtures import schema_version, write_synthetic_pool

MODELS = ("zebra-model", "yak-model", "xenon-model", "walrus-model")


@pytest.fixture(scope="module")
def pool_manifest(tmp_path_factory) -> Path:
    """Real H.264 + AAC clips: 4 models x 3 prompts, two categories."""
    return write_synthetic_pool(tmp_path_factory.mktemp("pool"), MODELS, prompts=3, categories=("speech", "music"))


def make_service(tmp_path: Path, manifest: Path, **kwargs) -> ArenaService:
    service = ArenaService(tmp_path / "data", **kwargs)
    report = import_source(service, manifest)
    assert report.added == len(MODELS) * 3 and not report.rejected, report.summary()
    return service


def test_schema_is_versioned_and_wal(tmp_path):
    store = ArenaStore(tmp_path / "a.sqlite3")
    assert schema_version(store) == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "a.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "models", "prompts", "clips", "battles", "votes"} <= tables
    ArenaStore(tmp_path / "a.sqlite3")  # reopening migrates nothing and keeps the data
    assert store.get_meta("judge_salt") is not None

    with sqlite3.connect(tmp_path / "a.sqlite3") as conn:  # a database from a newer release
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ValueError, match="newer than this code supports"):
        ArenaStore(tmp_path / "a.sqlite3")


def test_migrations_upgrade_an_existing_database(tmp_path, monkeypatch):
    from mova.arena import schema

    store = ArenaStore(tmp_path / "a.sqlite3")
    store.set_meta("kept", "yes")

    def add_language(conn):  # a hypothetical v2: votes get a language column
        conn.execute("ALTER TABLE votes ADD COLUMN language TEXT NOT NULL DEFAULT ''")

    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, add_language))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    upgraded = ArenaStore(tmp_path / "a.sqlite3")
    assert schema_version(upgraded) == SCHEMA_VERSION + 1 and upgraded.get_meta("kept") == "yes"
    columns = upgraded.read(lambda c: [r[1] for r in c.execute("PRAGMA table_info(votes)")])
    assert "language" in columns


def test_battle_hides_names_and_vote_reveals_them(tmp_path, pool_manifest):
    service = make_service(tmp_path, pool_manifest)
    battle = service.next_battle("session-1")
    payload = json.dumps(asdict(battle), default=str)
    for model in MODELS:
        assert model not in payload  # no names in the battle, nor in the media file names
        assert model.encode() not in battle.left.read_bytes()
    assert battle.left.parent == service.media_dir and battle.left.is_file() and battle.right.is_file()

    result = service.vote("session-1", battle.id, "right")
    assert {result.left_model, result.right_model} <= set(MODELS)
    assert result.left_model != result.right_model
    assert result.winner == result.right_model

    with pytest.raises(AlreadyVoted):
        service.vote("session-1", battle.id, "left")
    with pytest.raises(NotServed, match="not served to this session"):
        service.vote("session-2", service.next_battle("session-1").id, "left")
    with pytest.raises(NotServed):
        service.vote("session-1", "no-such-battle", "left")
    with pytest.raises(ArenaError, match="choice="):
        service.vote("session-1", battle.id, "model_a")

    (row,) = service.store.vote_rows()
    assert row["choice"] == "right" and row["anonymous"] == 1
    assert row["judge"] != "session-1" and len(row["judge"]) == 20  # pseudonymous
    assert row["seconds_to_vote"] >= 0


def test_battles_pair_two_models_on_one_prompt_with_random_sides(tmp_path, pool_manifest):
    service = make_service(tmp_path, pool_manifest, rng=random.Random(0), rate_limit=RateLimit(None, None))
    clip_info = {
        c.clip_id: c for c in service.store.candidates()
    }
    sides = Counter()
    for i in range(200):
        battle = service.next_battle(f"s{i % 7}", category="speech" if i % 2 else None)
        row = service.store.read(lambda conn: conn.execute(
            "SELECT left_clip, right_clip, left_model, right_model FROM battles WHERE id = ?", (battle.id,)
        ).fetchone())
        left, right = clip_info[row[0]], clip_info[row[1]]
        assert left.prompt_id == right.prompt_id and left.model != right.model
        sides[(row[2], row[3])] += 1
    # every ordered model pair appears: sides are shuffled
    assert len(sides) == len(MODELS) * (len(MODELS) - 1)


def test_pairs_with_fewer_votes_are_favoured():
    clips = [Candidate(1, "p", "a"), Candidate(2, "p", "b"), Candidate(3, "p", "c")]
    votes = {(1, 2): 99, (1, 3): 0, (2, 3): 0}  # a-b has 99 votes; weights 1/100 vs 1 vs 1
    rng = random.Random(1)
    drawn = Counter(tuple(sorted(c.model for c in choose_pair(clips, votes, rng))) for _ in range(3000))
    assert drawn[("a", "b")] < 0.02 * 3000
    assert abs(drawn[("a", "c")] - drawn[("b", "c")]) < 0.1 * 3000
    with pytest.raises(ArenaError, match="two different models"):
        choose_pair([Candidate(1, "p", "a"), Candidate(2, "q", "b")], {}, rng)


def test_rate_limit_per_session(tmp_path, pool_manifest):
    now = [1000.0]
    service = make_service(tmp_path, pool_manifest, clock=lambda: now[0],
                           rate_limit=RateLimit(votes=3, battles=5, window_s=60))
    for _ in range(3):
        service.vote("fast", service.next_battle("fast").id, "tie")
    battle = service.next_battle("fast")
    with pytest.raises(RateLimited, match="at most 3 per 60 s"):
        service.vote("fast", battle.id, "tie")
    service.vote("other", service.next_battle("other").id, "tie")  # other sessions are not affected
    service.next_battle("fast")  # the 5th battle in the window
    with pytest.raises(RateLimited, match="too many battles"):
        service.next_battle("fast")
    now[0] += 61
    service.vote("fast", battle.id, "tie")  # the window has passed; the battle is still theirs


def test_media_is_served_only_from_inside_the_pool(tmp_path, pool_manifest):
    service = make_service(tmp_path, pool_manifest)
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not for voters")
    # tamper with the stored paths (as a broken or hostile import would); paths are UNIQUE, hence the id
    escape = os.path.relpath(secret, service.pool_dir)
    service.store.write(lambda conn: conn.execute("UPDATE clips SET path = id || '/../' || ?", (escape,)))
    with pytest.raises(ValueError, match="outside the pool directory"):
        service.next_battle("s")
    service.store.write(lambda conn: conn.execute("UPDATE clips SET path = ? || id", (f"{secret}.",)))
    with pytest.raises(ValueError, match="outside the pool directory"):
        service.next_battle("s")


def test_pool_directory_cannot_change(tmp_path, pool_manifest):
    service = make_service(tmp_path, pool_manifest)
    other = tmp_path / "other-pool"
    other.mkdir()
    with pytest.raises(ValueError, match="pool directory is"):
        import_source(service, pool_manifest, pool_dir=other)


def test_empty_pool_says_what_to_do(tmp_path):
    with pytest.raises(ArenaError, match="python -m mova arena import"):
        ArenaService(tmp_path / "data").next_battle("s")


def test_data_dir_comes_from_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVA_DATA_DIR", str(tmp_path / "env-data"))
    service = ArenaService()
    assert service.data_dir == (tmp_path / "env-data").resolve()
    assert (tmp_path / "env-data" / "arena" / "arena.sqlite3").is_file()


def test_writes_wait_out_a_held_lock_and_report_busy_only_after_max_wait(tmp_path, pool_manifest):
    service = make_service(tmp_path, pool_manifest, busy_timeout_s=0.01)  # SQLite gives up fast; we retry
    battle = service.next_battle("s")
    blocker = sqlite3.connect(service.store.path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock for 0.3 s
    threading.Timer(0.3, lambda: blocker.execute("COMMIT")).start()
    start = time.perf_counter()
    service.vote("s", battle.id, "left")
    assert time.perf_counter() - start >= 0.25

    service.store.max_wait_s = 0.2
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ArenaBusy, match="try again"):
            service.vote("s", service.next_battle("s").id, "left")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


@pytest.mark.slow
@pytest.mark.parametrize("busy_timeout_s", [5.0, 0.001], ids=["sqlite-waits", "store-retries"])
def test_concurrent_voters(tmp_path, pool_manifest, busy_timeout_s, caplog):
    """50 threads cast 2,000 votes on one database file; duplicates and unserved battles are refused.

    With a 1 ms busy timeout SQLite reports "database is locked" constantly, so the store's retry
    loop is what keeps it from reaching the voters.
    """
    service = make_service(tmp_path, pool_manifest, rate_limit=RateLimit(votes=None, battles=None),
                           busy_timeout_s=busy_timeout_s)
    n_threads, votes_each = 50, 40
    barrier = threading.Barrier(n_threads)
    lock = threading.Lock()
    accepted: list[str] = []
    refused = Counter()
    failures: list[BaseException] = []
    served: list[str] = []  # battle ids of every thread, to try voting on someone else's

    def voter(t: int) -> None:
        session = f"voter-{t}"
        rng = random.Random(t)
        barrier.wait()
        try:
            for i in range(votes_each):
                battle = service.next_battle(session)
                with lock:
                    served.append(battle.id)
                    foreign = rng.choice(served)
                service.vote(session, battle.id, rng.choice(("left", "right", "tie", "bothbad")))
                with lock:
                    accepted.append(battle.id)
                if i % 4 == 0:
                    try:
                        service.vote(session, battle.id, "left")
                    except AlreadyVoted:
                        with lock:
                            refused["duplicate"] += 1
                if i % 4 == 1 and foreign != battle.id:
                    try:
                        service.vote(session, foreign, "left")
                    except NotServed:
                        with lock:
                            refused["unserved"] += 1
                    except AlreadyVoted:  # our own earlier battle, picked at random
                        with lock:
                            refused["duplicate-own"] += 1
        except BaseException as exc:  # noqa: BLE001 - every error reaching a caller fails the test
            with lock:
                failures.append(exc)

    caplog.set_level(logging.DEBUG, logger="mova.arena.store")
    start = time.perf_counter()
    threads = [threading.Thread(target=voter, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start

    assert not failures, f"{len(failures)} errors reached callers, first: {failures[0]!r}"
    assert len(accepted) == n_threads * votes_each == 2000
    rows = service.store.vote_rows()
    stored = Counter(r["battle_id"] for r in rows)
    assert len(rows) == 2000 and set(stored) == set(accepted) and max(stored.values()) == 1
    assert refused["duplicate"] == n_threads * votes_each // 4
    assert refused["unserved"] > 0
    retries = sum("database busy" in r.getMessage() for r in caplog.records)
    if busy_timeout_s < 0.01:
        assert retries > 0, "the retry path was not exercised"
    print(f"2000 votes from {n_threads} threads in {elapsed:.1f} s; refused {dict(refused)}; {retries} retries")
