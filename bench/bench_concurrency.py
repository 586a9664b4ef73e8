"""Throughput and latency under concurrency, against what the same Redis can do.

    python bench/bench_concurrency.py                # 3 interleaved rounds
    python bench/bench_concurrency.py --quick        # a short smoke run
    python bench/bench_concurrency.py --json out.json

One process, one throwaway redis-server (the system one when present, persistence off),
one run. For
each concurrency (1, 10, 50 and 200 tasks on one event loop) the rounds interleave:

* ``library``: one ``AsyncCoordinator`` shared by the tasks, ``set_current_project``
  on each task's own live session;
* ``library_unpipelined``: the same with ``auto_pipeline=False`` (each call sent on
  its own, as before auto-pipelining);
* ``bare_evalsha``: a bare ``redis.asyncio`` client running the same script with the
  same keys and arguments (``EVALSHA``), one call per task at a time;
* ``bare_pipeline``: the same calls, the tasks' concurrent calls batched into one
  ``redis.asyncio`` pipeline per turn (what auto-pipelining can reach);
* ``redis_benchmark``: ``redis-benchmark`` sending the same ``EVALSHA`` with ``-c 1``
  and ``-c 50`` (when the binary exists): the server's own ceiling. It runs in every
  round, after the Python variants, so its ratios compare figures of the same moment.

Reported: ops/s, p50/p99 latency per call (µs), and the library's ratios to each
baseline (per round, then the median). These machines are noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from coordinator import AsyncCoordinator, EmbeddedRedis
from coordinator.local.embedded import system_binary
from coordinator.scripts import sources

NAMESPACE = "bench-conc"
LEVELS = (1, 10, 50, 200)
#: ``redis-benchmark -c`` values run in every round of every level.
CLIENTS = (1, 50)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Body = Callable[[int], Awaitable[None]]


async def timed(tasks: int, per_task: int, call: Body) -> tuple[float, list[float]]:
    """Run ``tasks`` tasks doing ``per_task`` calls each; (ops/s, latencies in µs)."""
    latencies: list[float] = []

    async def worker(index: int) -> None:
        clock = time.perf_counter
        for _ in range(per_task):
            started = clock()
            await call(index)
            latencies.append((clock() - started) * 1e6)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    elapsed = time.perf_counter() - started
    return tasks * per_task / elapsed, latencies


async def level(
    url: str, tasks: int, ops: int, rounds: int, benchmark: RedisBenchmark | None
) -> dict[str, Any]:
    per_task = max(1, ops // tasks)
    coord = AsyncCoordinator.from_url(
        url, namespace=NAMESPACE, lease_ttl=3600, max_connections=tasks + 8
    )
    plain = AsyncCoordinator.from_url(
        url, namespace=NAMESPACE, lease_ttl=3600, max_connections=tasks + 8, auto_pipeline=False
    )
    agents = [f"agent-{tasks}-{i}" for i in range(tasks)]
    sessions = [(await coord.start_session(a)).session_id for a in agents]
    calls = [
        coord.operations.set_project(a, "proj", s, None, None).call
        for a, s in zip(agents, sessions, strict=True)
    ]
    bare = redis.asyncio.Redis.from_url(url, decode_responses=True, max_connections=tasks + 8)
    sha = await bare.script_load(sources()["set_project"])
    argv = [(len(c.keys), *c.keys, *c.args) for c in calls]  # type: ignore[union-attr]

    async def library(i: int) -> None:
        await coord.set_current_project(agents[i], "proj", sessions[i])

    async def library_unpipelined(i: int) -> None:
        await plain.set_current_project(agents[i], "proj", sessions[i])

    async def bare_evalsha(i: int) -> None:
        await bare.execute_command("EVALSHA", sha, *argv[i])

    # One pipeline per turn of the loop: every task's call of this turn joins the
    # batch being gathered; the first caller of a turn flushes it at the turn's end.
    pending: list[tuple[int, asyncio.Future[Any]]] = []
    loop = asyncio.get_running_loop()

    async def flush() -> None:
        batch = pending[:]
        pending.clear()
        pipe = bare.pipeline(transaction=False)
        for i, _ in batch:
            pipe.execute_command("EVALSHA", sha, *argv[i])
        replies = await pipe.execute(raise_on_error=False)
        for (_, future), reply in zip(batch, replies, strict=True):
            future.set_result(reply)

    async def bare_pipeline(i: int) -> None:
        future: asyncio.Future[Any] = loop.create_future()
        pending.append((i, future))
        if len(pending) == 1:
            loop.call_soon(lambda: asyncio.ensure_future(flush()))
        await future

    bodies: dict[str, Body] = {
        "library": library,
        "library_unpipelined": library_unpipelined,
        "bare_evalsha": bare_evalsha,
        "bare_pipeline": bare_pipeline,
    }
    for body in bodies.values():  # warm connections and caches
        await timed(tasks, 2, body)
    rates: dict[str, list[float]] = {name: [] for name in bodies}
    latencies: dict[str, list[float]] = {name: [] for name in bodies}
    server: dict[str, list[dict[str, Any]]] = {f"redis_benchmark_c{c}": [] for c in CLIENTS}
    for _ in range(rounds):
        for name, body in bodies.items():
            rate, samples = await timed(tasks, per_task, body)
            rates[name].append(rate)
            latencies[name] += samples
        if benchmark is not None:  # the server's ceiling, in the same round
            for clients in CLIENTS:
                server[f"redis_benchmark_c{clients}"].append(benchmark.run(clients, ops * 2))
        streams = [k async for k in bare.scan_iter(match=f"{{{NAMESPACE}:*}}:events")]
        if streams:
            await bare.delete(*streams)  # keep memory flat between rounds
    await coord.aclose()
    await plain.aclose()
    await bare.aclose()
    out: dict[str, Any] = {}
    for name in bodies:
        out[name] = {
            "ops_per_s": round(statistics.median(rates[name])),
            "p50_us": round(percentile(latencies[name], 0.5), 1),
            "p99_us": round(percentile(latencies[name], 0.99), 1),
        }
    for base in ("library_unpipelined", "bare_evalsha", "bare_pipeline"):
        ratios = [a / b for a, b in zip(rates["library"], rates[base], strict=True)]
        out[f"ratio_vs_{base}"] = round(statistics.median(ratios), 3)
    for name, runs in server.items():
        if not runs:
            continue
        out[name] = {
            "ops_per_s": round(statistics.median(r["ops_per_s"] for r in runs)),
            "p50_us": statistics.median(r["p50_us"] for r in runs),
            "p99_us": statistics.median(r["p99_us"] for r in runs),
        }
        ratios = [a / r["ops_per_s"] for a, r in zip(rates["library"], runs, strict=True)]
        out[f"ratio_vs_{name}"] = round(statistics.median(ratios), 3)
    return out


class RedisBenchmark:
    """``redis-benchmark`` sending the same ``EVALSHA`` as the library, on one agent's
    keys (one live session), to the bench's server."""

    def __init__(self, binary: str, host: str, port: int, argv: list[str]) -> None:
        self.binary, self.host, self.port, self.argv = binary, host, port, argv

    @classmethod
    async def prepare(cls, host: str, port: int) -> RedisBenchmark | None:
        binary = shutil.which("redis-benchmark")
        if binary is None:
            return None
        url = f"redis://{host}:{port}/0"
        async with AsyncCoordinator.from_url(url, namespace=NAMESPACE, lease_ttl=3600) as c:
            s = await c.start_session("agent-rb")
            call = c.operations.set_project("agent-rb", "proj", s.session_id, None, None).call
        async with redis.asyncio.Redis(host=host, port=port, decode_responses=True) as r:
            sha = await r.script_load(sources()["set_project"])
        keys = [str(len(call.keys)), *call.keys, *map(str, call.args)]  # type: ignore[union-attr]
        return cls(binary, host, port, ["EVALSHA", sha, *keys])

    def run(self, clients: int, requests: int) -> dict[str, Any]:
        result = subprocess.run(
            [self.binary, "-h", self.host, "-p", str(self.port), "-c", str(clients),
             "-n", str(requests), "--csv", *self.argv],
            capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip
        # CSV: "test","rps","avg_ms","min_ms","p50_ms","p95_ms","p99_ms","max_ms"
        rows = [line for line in result.stdout.splitlines() if line.startswith('"EVALSHA')]
        if not rows:
            raise RuntimeError(f"unparsed redis-benchmark output: {result.stdout[-200:]!r}")
        fields = [f.strip('"') for f in rows[-1].split(",")]
        out: dict[str, Any] = {"ops_per_s": round(float(fields[1])), "p50_us": 0.0, "p99_us": 0.0}
        if len(fields) >= 7:
            out["p50_us"] = round(float(fields[4]) * 1000, 1)
            out["p99_us"] = round(float(fields[6]) * 1000, 1)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=20_000, help="calls per body and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ops, rounds = (2_000, 1) if args.quick else (args.ops, args.rounds)
    binary = system_binary()
    report: dict[str, Any] = {"python": sys.version.split()[0], "ops": ops, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        # No persistence: this measures the client's cost per call, which an fsync per
        # write (the embedded default, appendfsync always) would hide behind the disk.
        server = EmbeddedRedis(
            Path(tmp), port=0, unix_socket=False, binary=binary, appendonly=False
        )
        with server:
            with server.client(decode_responses=True) as r:
                report["redis"] = r.info("server")["redis_version"]
            url = server.url
            benchmark = asyncio.run(RedisBenchmark.prepare("127.0.0.1", server.port or 0))
            if benchmark is None:
                report["redis_benchmark"] = {"skipped": "redis-benchmark not found"}
            for tasks in LEVELS:
                report[f"tasks_{tasks}"] = asyncio.run(level(url, tasks, ops, rounds, benchmark))
                print(f"{tasks} tasks: {report[f'tasks_{tasks}']}", file=sys.stderr)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
