"""Reservations: reserve+release pairs per second, beside redis-py's ``Lock``.

    python bench/bench_reservations.py            # 5 interleaved rounds of 500 pairs
    python bench/bench_reservations.py --quick    # a short smoke run
    python bench/bench_reservations.py --json out.json

One throwaway redis-server (TCP loopback), one synchronous connection each, in one
process and one run, rounds interleaved so a noisy neighbour hits every contender:

* ``Coordinator.reserve`` + ``release`` of 1 and of 10 resources, with the agent's lease
  in the scope's slot (the script checks it) and in another slot (the lease is read
  first: one more round trip);
* redis-py ``Lock`` acquire + release (``SET NX PX`` + a Lua release), the baseline: a
  lock of one name, without fencing, audit, path conflicts or a session tie.

Reported: the median pairs/s of the rounds and the ratio to the Lock. Then what a
session's end costs when it releases reservations in the same script (a scope of the
agent's own shard): ``end_session`` latency with no reservation, with one and with 10
such reservations ended by the client that granted them (one round trip), and with
one ended by another client (the script names the scope, the client sends it again:
two round trips), interleaved trial by trial. Then, with an event worker running
(default ``reap_interval`` 0.5 s): the time from ``end_session`` (by another client than
the one that reserved, which would release it at once) returning to the session's
reservation in a scope of another shard being gone, released by the worker's reaper
(nobody claims the resource meanwhile), over ``--trials`` sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from coordinator import Coordinator, EmbeddedRedis, Settings
from coordinator.constants import DEFAULT_SHARDS
from coordinator.sinks import sink_from_url
from coordinator.worker import EventWorker, WorkerOptions


def _shard(name: str) -> int:
    return zlib.crc32(name.encode()) % DEFAULT_SHARDS


def agent_for(scope: str, same_slot: bool) -> str:
    return next(
        f"agent-{i}" for i in range(1000) if (_shard(f"agent-{i}") == _shard(scope)) == same_slot
    )


def timed(pairs: int, body: Callable[[], None]) -> float:
    start = time.perf_counter()
    for _ in range(pairs):
        body()
    return pairs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.pairs, args.trials = 2, 200, 5

    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis(Path(folder), port=0) as server:
        coord = Coordinator.from_url(server.url, namespace="bench", lease_ttl=3600)
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        lock = raw.lock("bench:lock", timeout=60)
        contenders: dict[str, Callable[[], None]] = {"redis-py Lock": lambda: _lock_pair(lock)}
        for same in (True, False):
            agent = agent_for("proj", same)
            sid = coord.start_session(agent).session_id
            where = "lease in scope slot" if same else "lease in another slot"
            for count in (1, 10):
                names = [f"src/file{i}.py" for i in range(count)]
                contenders[f"reserve+release {count:>2} ({where})"] = _pair(
                    coord, agent, sid, names
                )
        for body in contenders.values():  # warm up
            timed(max(20, args.pairs // 10), body)
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, body in contenders.items():
                rates[name].append(timed(args.pairs, body))
        end_costs = session_end_costs(server.url, args.trials * 10)
        release_delays = reaper_delays(server.url, Path(folder), args.trials)
        coord.close()
        raw.close()

    baseline = statistics.median(rates["redis-py Lock"])
    result: dict[str, Any] = {}
    print(f"{'contender':<45} {'pairs/s':>9} {'vs Lock':>8}")
    for name, samples in rates.items():
        median = statistics.median(samples)
        result[name] = {"pairs_per_s": round(median), "ratio": round(median / baseline, 3)}
        print(f"{name:<45} {median:>9.0f} {median / baseline:>8.2f}")
    base = statistics.median(end_costs["no reservation"])
    print(f"{'end_session':<45} {'p50 µs':>9} {'p99 µs':>8} {'vs none':>8}")
    for name, samples in end_costs.items():
        ordered = sorted(samples)
        p50 = statistics.median(ordered)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        result[f"end_session, {name} (s)"] = {
            "trials": len(ordered), "p50": round(p50, 6), "p99": round(p99, 6),
            "ratio_p50": round(p50 / base, 3),
        }  # fmt: skip
        print(f"{name:<45} {p50 * 1e6:>9.0f} {p99 * 1e6:>8.0f} {p50 / base:>8.2f}")
    ordered = sorted(release_delays)
    p50, worst = statistics.median(ordered), ordered[-1]
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    result["end_session -> released by the reaper (s)"] = {
        "trials": len(ordered), "p50": round(p50, 3), "p99": round(p99, 3), "max": round(worst, 3),
    }  # fmt: skip
    print(
        f"end_session -> reservation released by the worker: {len(ordered)} trials, "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def session_end_costs(url: str, trials: int) -> dict[str, list[float]]:
    """Seconds ``end_session`` takes, by what the session holds in scopes of its agent's
    shard (released by the same script); cases interleaved trial by trial."""
    coord = Coordinator.from_url(url, namespace="bench-end", lease_ttl=3600)
    other = Coordinator.from_url(url, namespace="bench-end")
    agent = "ender"
    near = [f"near-{i}" for i in range(1000) if _shard(f"near-{i}") == _shard(agent)][:10]
    cases: dict[str, tuple[Coordinator, list[str]]] = {
        "no reservation": (coord, []),
        "1 in the agent's shard": (coord, near[:1]),
        "10 in the agent's shard": (coord, near),
        "1 in the agent's shard, other client": (other, near[:1]),
    }
    costs: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(trials):
            for name, (ender, scopes) in cases.items():
                session = coord.start_session(agent)
                for scope in scopes:
                    coord.reserve(agent, session.session_id, scope, ["src/"])
                start = time.perf_counter()
                ender.end_session(agent, session.session_id)
                costs[name].append(time.perf_counter() - start)
        assert not coord.list_reservations(agent_id=agent)
    finally:
        coord.close()
        other.close()
    return costs


def reaper_delays(url: str, folder: Path, trials: int) -> list[float]:
    """Seconds from end_session returning to its reservation being gone (the worker's
    reaper releases it; nothing else touches the scope)."""
    settings = Settings.from_url(url, namespace="bench")
    sink = sink_from_url(f"sqlite:///{folder / 'events.db'}")
    worker = EventWorker(settings, sink, WorkerOptions(block_ms=50))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(),), daemon=True)
    thread.start()
    coord = Coordinator.from_url(url, namespace="bench", lease_ttl=3600)
    # Ended by another client: the one that granted it would release it at once.
    ender = Coordinator.from_url(url, namespace="bench")
    delays = []
    try:
        for i in range(trials):
            # A scope of another shard than the agent's: the end cannot release it.
            agent = next(
                f"reaped-{i}-{j}"
                for j in range(100)
                if _shard(f"reaped-{i}-{j}") != _shard("reaped")
            )
            session = coord.start_session(agent)
            coord.reserve(agent, session.session_id, "reaped", ["src/"])
            ender.end_session(agent, session.session_id)
            start = time.perf_counter()
            while coord.list_reservations("reaped"):
                time.sleep(0.001)
            delays.append(time.perf_counter() - start)
    finally:
        loop.call_soon_threadsafe(worker.request_stop)
        thread.join(30)
        sink.close()
        coord.close()
        ender.close()
    return delays


def _lock_pair(lock: Any) -> None:
    lock.acquire(blocking=False)
    lock.release()


def _pair(coord: Coordinator, agent: str, sid: str, names: list[str]) -> Callable[[], None]:
    def body() -> None:
        held = coord.reserve(agent, sid, "proj", names)
        coord.release(agent, sid, held.reservation_id)

    return body


if __name__ == "__main__":
    main()
