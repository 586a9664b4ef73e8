"""Listing live leases at scale: µs per lease, beside a bare redis-py baseline.

    python bench/bench_listing.py                        # 10,000 and 100,000 leases
    python bench/bench_listing.py --sizes 10000 --rounds 3
    python bench/bench_listing.py --json out.json

One process, one throwaway redis-server (the system's Redis 7.0 when present), one
run. The fleet grows to each size (sessions of an hour, half with metadata, started
by an ``AsyncCoordinator`` with 200 tasks); at each size the variants run in turn,
interleaved, ``--rounds`` times, and the best round of each is reported (the
machine is shared: the minimum is the least disturbed):

* ``bare``: redis-py ZSCAN of each shard's lease index, then a pipeline of one
  HGETALL per member (decoded to dicts, no models): the baseline;
* ``list_leases``: ``Coordinator.list_leases()`` (``Lease`` models);
* ``list_leases_async``: ``AsyncCoordinator.list_leases()``;
* ``cli``: ``coordinator leases`` (the table, with each agent's project), in process;
* ``cli_json``: ``coordinator leases --json``.

Reported per variant: µs per lease and the ratio to ``bare`` in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner

from coordinator import AsyncCoordinator, Coordinator, EmbeddedRedis
from coordinator.cli.main import cli
from coordinator.local.embedded import system_binary

NAMESPACE = "bench"


async def grow(url: str, start: int, stop: int, namespace: str = NAMESPACE) -> None:
    """Start sessions ``agent-start`` .. ``agent-(stop-1)`` (an hour each, half with
    metadata) in ``namespace``; also used by callgrind_listing.py."""
    async with AsyncCoordinator.from_url(url, namespace=namespace) as client:
        gate = asyncio.Semaphore(200)

        async def one(i: int) -> None:
            async with gate:
                meta = {"host": f"host-{i % 50}", "pid": i} if i % 2 else None
                await client.start_session(f"agent-{i}", meta, ttl=3600)

        await asyncio.gather(*(one(i) for i in range(start, stop)))


def variants(url: str) -> dict[str, Callable[[], int]]:
    raw = redis.Redis.from_url(url, decode_responses=True)
    client = Coordinator.from_url(url, namespace=NAMESPACE)
    keys = client.keys
    runner = CliRunner()

    def bare() -> int:
        n = 0
        for shard in range(keys.shards):
            cursor: int = 0
            while True:
                cursor, members = raw.zscan(keys.index(shard), cursor, count=500)
                pipe = raw.pipeline(transaction=False)
                for agent, _ in members:
                    pipe.hgetall(keys.lease_in(shard, agent))
                n += sum(1 for fields in pipe.execute() if fields)
                if int(cursor) == 0:
                    break
        return n

    def listed() -> int:
        return len(client.list_leases())

    def listed_async() -> int:
        async def go() -> int:
            async with AsyncCoordinator.from_url(url, namespace=NAMESPACE) as aclient:
                await aclient.server_time()  # connected before the clock runs
                started = time.perf_counter()
                n = len(await aclient.list_leases())
                timings["list_leases_async"] = time.perf_counter() - started
                return n

        return asyncio.run(go())

    def command(*args: str) -> Callable[[], int]:
        def run() -> int:
            result = runner.invoke(cli, ["--redis-url", url, "--namespace", NAMESPACE, *args])
            assert result.exit_code == 0, result.output
            if "--json" in args:
                return len(json.loads(result.stdout))
            return len(result.stdout.splitlines()) - 1  # the header

        return run

    timings: dict[str, float] = {}
    listed_async.timings = timings  # type: ignore[attr-defined]
    return {
        "bare": bare,
        "list_leases": listed,
        "list_leases_async": listed_async,
        "cli": command("leases"),
        "cli_json": command("leases", "--json"),
    }


def measure(url: str, size: int, rounds: int) -> dict[str, Any]:
    runs = variants(url)
    inner: dict[str, float] = runs["list_leases_async"].timings  # type: ignore[attr-defined]
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            n = run()
            elapsed = inner.pop(name, None) or time.perf_counter() - started
            assert n == size, (name, n, size)
            best[name] = min(best.get(name, float("inf")), elapsed)
    report: dict[str, Any] = {"leases": size, "rounds": rounds}
    for name, seconds in best.items():
        report[name] = {
            "us_per_lease": round(seconds / size * 1e6, 2),
            "seconds": round(seconds, 3),
            "vs_bare": round(best["bare"] / seconds, 2),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report: dict[str, Any] = {"sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=0, unix_socket=False,
                               binary=system_binary())  # fmt: skip
        with server:
            with server.client(decode_responses=True) as r:
                report["redis"] = r.info("server")["redis_version"]
            have = 0
            for size in sorted(args.sizes):
                asyncio.run(grow(server.url, have, size))
                have = size
                result = measure(server.url, size, args.rounds)
                print(json.dumps(result), file=sys.stderr)
                report["sizes"].append(result)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
