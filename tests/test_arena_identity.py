"""Who votes: signed cookies, client addresses, limits across sessions, vote-time flags, the share cap, schema v2."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from mova.arena import analysis
from mova.arena.identity import Identities, Voter, network_key
from mova.arena.pool import import_source
from mova.arena.schema import MIGRATIONS, SCHEMA_VERSION
from mova.arena.service import ArenaService, CountingRules, RateLimit
from mova.arena.store import ArenaStore, Quota, RateLimited
from tests.arena_fixtures import schema_version, write_synthetic_pool

SALT = bytes(range(16))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_synthetic_pool(tmp_path_factory.mktemp("pool"), ("m1", "m2", "m3"), prompts=2, seconds=0.5)


def service_at(tmp_path: Path, manifest: Path, now: list[float], **kwargs) -> ArenaService:
    service = ArenaService(tmp_path / "data", clock=lambda: now[0], **kwargs)
    assert import_source(service, manifest).added == 6
    return service


def test_cookies_are_signed_and_ids_are_pseudonymous():
    ids = Identities(SALT)
    cookie = ids.issue_cookie()
    token, signature = cookie.split(".")
    assert ids.cookie_token(cookie) == token and len(token) == 32
    forged = f"{'0' * 32}.{signature}"
    for bad in (None, "", "abc", forged, cookie + "x", f"{token}.{'0' * 32}", cookie.replace(".", "..")):
        assert ids.cookie_token(bad) is None, bad
    assert Identities(bytes(16)).cookie_token(cookie) is None  # another arena's secret

    one = ids.ids(Voter("s1", "192.0.2.7", cookie))
    two = ids.ids(Voter("s2", "192.0.2.7", forged))
    assert one.client == two.client and one.judge != two.judge
    assert one.browser and two.browser == "" and cookie not in one.browser and "192.0.2.7" not in one.client
    assert ids.ids(Voter("s1")).client == "" and ids.ids(Voter("s1")).judge == one.judge
    with pytest.raises(ValueError, match="session id is required"):
        ids.judge("")


def test_an_ipv6_client_is_its_slash_64():
    assert network_key("2001:db8:1:2:aaaa::1") == network_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert network_key("2001:db8:1:3::1") != network_key("2001:db8:1:2::1")
    assert network_key("::ffff:192.0.2.1") == "192.0.2.1" and network_key(" 192.0.2.1 ") == "192.0.2.1"
    assert network_key("testclient") == "testclient"


def test_limits_hold_across_sessions_per_address_and_per_browser(tmp_path, manifest):
    now = [1000.0]
    service = service_at(tmp_path, manifest, now, rate_limit=RateLimit(
        votes=None, battles=None, client_votes=3, client_battles=None, browser_votes=2, browser_battles=None))
    now_voting = lambda voter: service.vote(voter, service.next_battle(voter).id, "tie")  # noqa: E731
    for s in range(3):  # three fresh sessions from one address: the address allows 3 votes a minute
        now_voting(Voter(f"fresh-{s}", "198.51.100.1"))
    with pytest.raises(RateLimited, match="at most 3 per 60 s per address"):
        now_voting(Voter("fresh-4", "198.51.100.1"))
    now_voting(Voter("fresh-5", "198.51.100.2"))  # another address is not affected

    cookie = service.issue_cookie()  # one browser hopping addresses and sessions: 2 votes a minute
    now_voting(Voter("b-1", "203.0.113.1", cookie))
    now_voting(Voter("b-2", "203.0.113.2", cookie))
    with pytest.raises(RateLimited, match="per browser"):
        now_voting(Voter("b-3", "203.0.113.3", cookie))
    now[0] += 61
    now_voting(Voter("fresh-4", "198.51.100.1"))  # the window has passed
    with pytest.raises(ValueError, match="scope='ip' is not allowed"):
        Quota("ip", "k", 1)  # type: ignore[arg-type]


def test_a_vote_records_who_and_when_and_whether_it_counts(tmp_path, manifest):
    now = [5000.0]
    service = service_at(tmp_path, manifest, now, counting=CountingRules(min_view_s=5.0))
    cookie = service.issue_cookie()
    voter = Voter("s", "192.0.2.9", cookie)
    fast = service.next_battle(voter)
    now[0] += 2.0
    assert service.vote(voter, fast.id, "left").counted is False
    slow = service.next_battle(voter)
    now[0] += 6.0
    assert service.vote(voter, slow.id, "right").counted is True
    rows = {r["battle_id"]: r for r in service.store.vote_rows()}
    ids = service.voter_ids(voter)
    assert rows[fast.id]["flag"] == "voted too fast" and rows[slow.id]["flag"] == ""
    assert rows[fast.id]["served"] == 5000.0 and rows[fast.id]["tstamp"] == 5002.0
    assert rows[slow.id]["seconds_to_vote"] == pytest.approx(6.0)
    assert {r["client"] for r in rows.values()} == {ids.client} and {r["browser"] for r in rows.values()} == {ids.browser}
    board = service.leaderboard(rounds=5)
    assert board.n_votes == 1 and board.dropped == {"voted too fast": 1}


def test_over_client_share_keeps_each_clients_first_votes():
    rows = [{"client": "a", "judge": "j1", "tstamp": t} for t in range(10)]  # one address, 10 votes
    rows += [{"client": "", "judge": f"j{t}", "tstamp": 100 + t} for t in range(10)]  # 10 sessions, no address
    rows += [{"client": "", "judge": "j-heavy", "tstamp": 200 + t} for t in range(5)]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # row order must not matter
    mask = analysis.over_client_share(frame, 0.1, floor=2)  # 25 votes: each client keeps max(2, 2) = 2
    over = frame[mask]
    assert sorted(over[over["client"] == "a"]["tstamp"]) == list(range(2, 10))
    assert sorted(over[over["judge"] == "j-heavy"]["tstamp"]) == [202, 203, 204]
    assert len(over) == 8 + 3
    assert not analysis.over_client_share(frame, 0.5, floor=0).any()  # 12 each: nobody is over
    with pytest.raises(ValueError, match="client_floor=-1"):
        analysis.over_client_share(frame, 0.1, floor=-1)


def test_schema_v1_votes_are_upgraded_in_place(tmp_path):
    path = tmp_path / "a.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO models(id, name, created) VALUES (1, 'a', 0), (2, 'b', 0)")
    conn.execute("INSERT INTO prompts(id, text, created) VALUES ('p', 'x', 0)")
    conn.execute("INSERT INTO clips(id, prompt_id, model_id, path, media_key, created) VALUES "
                 "(1, 'p', 1, 'a.mp4', 'k1', 0), (2, 'p', 2, 'b.mp4', 'k2', 0)")
    conn.execute("INSERT INTO battles VALUES ('b1', 'j', 'p', 1, 2, 'a', 'b', 1, 10.0)")
    conn.execute("INSERT INTO votes(battle_id, judge, choice, winner, model_a, model_b, prompt_id, anonymous, tstamp) "
                 "VALUES ('b1', 'j', 'left', 'a', 'a', 'b', 'p', 1, 12.5)")
    conn.close()
    store = ArenaStore(path)
    assert schema_version(store) == SCHEMA_VERSION == 2
    (row,) = store.vote_rows()
    assert (row["served"], row["flag"], row["client"], row["browser"], row["seconds_to_vote"]) == (10.0, "", "", "", 2.5)
