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

Reported: the median pairs/s of the rounds and the ratio to the Lock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from coordinator import Coordinator, EmbeddedRedis
from coordinator.constants import DEFAULT_SHARDS


def agent_for(scope: str, same_slot: bool) -> str:
    def shard(name: str) -> int:
        return zlib.crc32(name.encode()) % DEFAULT_SHARDS

    return next(
        f"agent-{i}" for i in range(1000) if (shard(f"agent-{i}") == shard(scope)) == same_slot
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
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.pairs = 2, 200

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
        coord.close()
        raw.close()

    baseline = statistics.median(rates["redis-py Lock"])
    result: dict[str, Any] = {}
    print(f"{'contender':<45} {'pairs/s':>9} {'vs Lock':>8}")
    for name, samples in rates.items():
        median = statistics.median(samples)
        result[name] = {"pairs_per_s": round(median), "ratio": round(median / baseline, 3)}
        print(f"{name:<45} {median:>9.0f} {median / baseline:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


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
