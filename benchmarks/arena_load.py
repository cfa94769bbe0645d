"""Arena under load: N concurrent clients serve battles and vote through the raw HTTP API of a real app.

The app runs in a subprocess on 127.0.0.1 (the arena and leaderboard pages mounted into a Blocks app the way
``ui.build_app`` does, with gradio's queue defaults), over a synthetic pool. Each client is an asyncio task with
its own session and its own loopback source address (127.0.0.10, 127.0.0.11 …), so per-address limits see 50
clients, not one. A client loops: ``/next_battle`` → download both clips → ``/vote``, until the votes acknowledged
reach ``--votes`` or ``--time-limit-s`` passes. With ``--kill-at K`` the server is killed with SIGKILL once K votes
were acknowledged and started again on the same data directory; clients retry through the outage.

Counted at the end, from the database after the server stopped: votes acknowledged (the client got the revealed
names), stored, lost (acknowledged but not stored), duplicated (stored more often than sent), stored without an
acknowledgement (in flight at the kill), ``PRAGMA integrity_check``; latencies p50/p95/max of ``next_battle``,
``vote`` and the clip downloads.

Rate limits are off in the served app (the figure measures serving; the limits have their own tests in
``tests/test_arena_attacks.py``); the counting rules (minimum viewing time) stay on, so instant votes are stored
and flagged.

    python benchmarks/arena_load.py                          # 50 clients, 2,000 votes, kill -9 at 1,000
    python benchmarks/arena_load.py --code-root /tmp/old     # the same load against another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHOICES = ("left", "right", "tie", "bothbad")
MODELS = ("model-a", "model-b", "model-c", "model-d")


# --- the server ------------------------------------------------------------------------------------


def serve(data_dir: Path, port: int) -> None:
    """Run the arena pages as the app mounts them (blocks until killed)."""
    import gradio as gr

    from mova.arena.service import ArenaService, RateLimit
    from ui import arena as arena_ui

    no_limits = {f.name: None for f in dataclasses.fields(RateLimit) if f.name != "window_s"}
    service = ArenaService(data_dir, rate_limit=RateLimit(**no_limits))
    with gr.Blocks(title="MOVA Studio", analytics_enabled=False) as app:
        gr.Markdown("generation UI would be here")
    app.queue()
    arena_ui.add_arena_pages(app, service)
    app.launch(server_name="127.0.0.1", server_port=port, quiet=True, allowed_paths=arena_ui.allowed_paths(service))


def start_server(code_root: Path, data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(code_root), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, str(Path(__file__).resolve()), "serve", "--data-dir", str(data_dir), "--port", str(port)]
    with log.open("a") as handle:
        return subprocess.Popen(command, cwd=code_root, env=env, stdout=handle, stderr=subprocess.STDOUT)


def wait_until_up(port: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the arena server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the arena server did not listen on port {port} within {timeout_s:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the clients -----------------------------------------------------------------------------------


class Outage(Exception):
    """The server could not be reached, or the answer stream broke off."""


@dataclasses.dataclass
class Tally:
    target: int
    acknowledged: Counter = dataclasses.field(default_factory=Counter)  # session -> votes acknowledged
    in_flight: int = 0
    unknown: int = 0  # votes sent whose answer was lost (server killed mid-request)
    refused: Counter = dataclasses.field(default_factory=Counter)  # message -> count
    latency: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {"next_battle": [], "vote": [], "media": []})

    @property
    def total(self) -> int:
        return sum(self.acknowledged.values())


async def call(client, base: str, api: str, data: list, session: str) -> list:
    """One raw API call (POST, then read the event stream); raises ``Outage`` or ``RuntimeError``."""
    import httpx

    try:
        posted = await client.post(f"{base}/gradio_api/call/{api}", json={"data": data, "session_hash": session})
        posted.raise_for_status()
        event_id = posted.json()["event_id"]
        text = (await client.get(f"{base}/gradio_api/call/{api}/{event_id}")).text
    except (httpx.TransportError, httpx.HTTPStatusError, KeyError, ValueError) as exc:
        raise Outage(repr(exc)) from exc
    from tests.arena_fixtures import event_stream_result  # importable once run() has put this checkout on the path

    kind, payload = event_stream_result(text)
    if kind == "complete":
        return payload
    if kind == "error":
        raise RuntimeError(str((payload or {}).get("error") if isinstance(payload, dict) else payload))
    raise Outage(f"no result in the event stream of {api}")


async def voter(index: int, base: str, tally: Tally, deadline: float, think_s: float) -> None:
    import httpx

    session = f"load-{index:03d}-{random.getrandbits(32):08x}"
    transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{10 + index}")
    rng = random.Random(index)
    async with httpx.AsyncClient(transport=transport, timeout=60.0) as client:
        while time.monotonic() < deadline and tally.total + tally.in_flight < tally.target:
            try:
                start = time.perf_counter()
                outputs = await call(client, base, "next_battle", ["All categories"], session)
                tally.latency["next_battle"].append(time.perf_counter() - start)
                for clip in outputs[2:4]:
                    start = time.perf_counter()
                    try:
                        (await client.get(clip["url"])).raise_for_status()
                    except httpx.TransportError as exc:
                        raise Outage(repr(exc)) from exc
                    tally.latency["media"].append(time.perf_counter() - start)
                if think_s:
                    await asyncio.sleep(think_s)
                if tally.total + tally.in_flight >= tally.target:
                    break
                tally.in_flight += 1
                try:
                    start = time.perf_counter()
                    await call(client, base, "vote", [rng.choice(CHOICES)], session)
                    tally.latency["vote"].append(time.perf_counter() - start)
                    tally.acknowledged[session] += 1
                except Outage:
                    tally.unknown += 1
                    raise
                finally:
                    tally.in_flight -= 1
            except Outage:
                await asyncio.sleep(0.25)  # the server is down (killed); try a new battle when it is back
            except (RuntimeError, httpx.HTTPError) as exc:
                tally.refused[str(exc)[:120]] += 1


async def drive(base: str, clients: int, tally: Tally, deadline: float, think_s: float, kill) -> None:
    tasks = [asyncio.create_task(voter(i, base, tally, deadline, think_s)) for i in range(clients)]
    if kill is not None:
        tasks.append(asyncio.create_task(kill(tally)))
    await asyncio.gather(*tasks)


# --- counting --------------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * pick(0.95), 1), "max_ms": round(1000 * ordered[-1], 1)}


def count_stored(data_dir: Path, tally: Tally) -> dict[str, Any]:
    """Compare what the clients were told with what the database holds (server stopped)."""
    import hashlib
    import hmac

    path = data_dir / "arena" / "arena.sqlite3"
    with sqlite3.connect(path) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        salt = bytes.fromhex(conn.execute("SELECT value FROM meta WHERE key = 'judge_salt'").fetchone()[0])
        stored = Counter(dict(conn.execute("SELECT judge, COUNT(*) FROM votes GROUP BY judge").fetchall()))
        per_battle = conn.execute("SELECT COUNT(*) FROM votes GROUP BY battle_id HAVING COUNT(*) > 1").fetchall()
        columns = {r[1] for r in conn.execute("PRAGMA table_info(votes)")}
        flags = dict(conn.execute("SELECT flag, COUNT(*) FROM votes GROUP BY flag").fetchall()) \
            if "flag" in columns else {}
        battles = conn.execute("SELECT COUNT(*) FROM battles").fetchone()[0]
    lost = extra = 0
    for session, acked in tally.acknowledged.items():
        judge = hmac.new(salt, session.encode(), hashlib.sha256).hexdigest()[:20]
        lost += max(0, acked - stored.get(judge, 0))
        extra += max(0, stored.get(judge, 0) - acked)
    return {
        "acknowledged": tally.total, "stored": sum(stored.values()), "lost": lost,
        "duplicated": len(per_battle), "stored_without_acknowledgement": extra,
        "answer_lost_at_kill": tally.unknown, "battles_served": battles, "integrity_check": integrity,
        "flags": {(k or "counts"): v for k, v in flags.items()},
    }


# --- main ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    code_root = Path(args.code_root).resolve()
    sys.path.insert(0, str(code_root))
    sys.path.insert(1, str(ROOT))  # this checkout: tests/arena_fixtures.py builds the pool
    from mova.arena.pool import import_source
    from mova.arena.service import ArenaService
    from tests.arena_fixtures import write_synthetic_pool

    work = Path(tempfile.mkdtemp(prefix="arena-load-"))
    data_dir = work / "data"
    manifest = write_synthetic_pool(work / "pool", MODELS, prompts=args.prompts, seconds=args.clip_seconds)
    report = import_source(ArenaService(data_dir), manifest)
    port = free_port()
    log = work / "server.log"
    procs = [start_server(code_root, data_dir, port, log)]
    wait_until_up(port, procs[-1])
    base = f"http://127.0.0.1:{port}"
    tally = Tally(target=args.votes)
    kills: list[dict[str, float]] = []

    async def kill_and_restart(tally: Tally) -> None:
        while tally.total < args.kill_at and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if tally.total < args.kill_at:
            return
        os.kill(procs[-1].pid, signal.SIGKILL)
        procs[-1].wait()
        down = time.monotonic()
        procs.append(start_server(code_root, data_dir, port, log))
        await asyncio.to_thread(wait_until_up, port, procs[-1])
        kills.append({"at_votes": tally.total, "seconds_down": round(time.monotonic() - down, 1)})

    load_before = os.getloadavg()  # other work on the machine slows the server and the clients alike
    start = time.monotonic()
    deadline = start + args.time_limit_s
    try:
        asyncio.run(drive(base, args.clients, tally, deadline, args.think_s,
                          kill_and_restart if args.kill_at else None))
        wall = time.monotonic() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    counts = count_stored(data_dir, tally)
    served_files = sum(1 for p in (data_dir / "arena" / "media").rglob("*") if p.is_file()) \
        if (data_dir / "arena" / "media").exists() else 0
    return {
        "what": "arena load: concurrent clients serving battles and voting through the raw HTTP API",
        "command": "python benchmarks/arena_load.py " + " ".join(args.argv),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1m_before": round(load_before[0], 2)},
        "config": {"clients": args.clients, "votes": args.votes, "models": len(MODELS), "prompts": args.prompts,
                   "clip_seconds": args.clip_seconds, "think_s": args.think_s, "kill_at": args.kill_at,
                   "pool_clips": report.added, "rate_limits": "off (limits are tested in tests/test_arena_attacks.py)",
                   "code_root": "." if code_root == ROOT else str(code_root)},
        "result": {
            **counts, "kills": kills, "refused": dict(tally.refused), "wall_s": round(wall, 1),
            "votes_per_s": round(tally.total / wall, 1), "files_under_arena_media": served_files,
            "latency": {name: percentiles(values) for name, values in tally.latency.items()},
        },
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    server = sub.add_parser("serve", help="(internal) run the app")
    server.add_argument("--data-dir", required=True)
    server.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--votes", type=int, default=2000)
    parser.add_argument("--prompts", type=int, default=8, help="prompts in the synthetic pool (4 models each)")
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--think-s", type=float, default=0.0, help="pause between seeing a battle and voting")
    parser.add_argument("--kill-at", type=int, default=1000, help="kill -9 the server after this many votes (0: never)")
    parser.add_argument("--time-limit-s", type=float, default=300.0)
    parser.add_argument("--code-root", default=str(ROOT), help="the checkout whose app is driven")
    parser.add_argument("--before", default=None, help="a result JSON of an earlier run, kept as 'before'")
    parser.add_argument("--out", default=None, help="write the result JSON here")
    args = parser.parse_args(argv)
    if args.mode is None and not 0 < args.clients <= 200:
        parser.error(f"--clients={args.clients} is not allowed; use 1 to 200 (one loopback address each)")
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.mode == "serve":
        serve(Path(args.data_dir), args.port)
        return
    result = run(args)
    if args.before:
        before = json.loads(Path(args.before).read_text())
        result["before"] = {"config": before["config"], "result": before["result"]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
