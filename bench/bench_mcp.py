"""``coordinator mcp`` over stdio, and how soon a keep-alive hears of a revoke or supersede.

    python bench/bench_mcp.py                        # 2,000 calls, 200 trials each
    python bench/bench_mcp.py --calls 300 --trials 100
    python bench/bench_mcp.py --json docs/bench-results/mcp.json

One process, one throwaway redis-server (Redis 7 from PATH if there, else the bundled one),
one run:

* **Tool-call latency.** ``set_project`` called through the MCP SDK's own stdio client
  on a ``coordinator mcp`` child process, beside the same write made directly with
  ``AsyncCoordinator.set_current_project`` in this process; rounds of 100 calls of each,
  interleaved. p50/p99 of each and the ratio of the medians.
* **Notice latency** (library): an ``AsyncKeepAlive`` with heartbeats too rare to matter
  holds a fresh session; another client revokes it (or starts a new session of the
  agent, superseding it). Measured: from just before the revoking call to the keep-alive's
  ``lost`` event (so it includes the revoke's own round trip).
* **Notice latency over MCP**: the same revoke, timed to the ``lease_lost`` log
  notification arriving at the MCP client (the server's keep-alive, the notification,
  the stdio hop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp_types import LoggingMessageNotificationParams

from coordinator import AsyncCoordinator, EmbeddedRedis
from coordinator.local.embedded import system_binary

ROOT = Path(__file__).resolve().parent.parent
ROUND = 100
#: Heartbeats too rare to matter: what the keep-alive notices comes from the stream.
RARE = 3600.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50_ms": round(statistics.median(values_ms), 3),
        "p99_ms": round(pct(values_ms, 0.99), 3),
        "max_ms": round(max(values_ms), 3),
    }


async def tool_latency(
    url: str, session: ClientSession, library: AsyncCoordinator, calls: int
) -> dict[str, Any]:
    await session.call_tool("start_session", {"agent_id": "bench-mcp"})
    lib_session = await library.start_session("bench-lib")
    for i in range(50):  # warm both paths (imports, schema cache, connections)
        await session.call_tool("set_project", {"project": f"w{i}"})
        await library.set_current_project("bench-lib", f"w{i}", lib_session.session_id)
    stdio: list[float] = []
    direct: list[float] = []
    done = 0
    while done < calls:
        for i in range(ROUND):
            t0 = time.perf_counter()
            result = await session.call_tool("set_project", {"project": f"p{i % 7}"})
            stdio.append((time.perf_counter() - t0) * 1000)
            assert not result.is_error, result
        for i in range(ROUND):
            t0 = time.perf_counter()
            await library.set_current_project("bench-lib", f"p{i % 7}", lib_session.session_id)
            direct.append((time.perf_counter() - t0) * 1000)
        done += ROUND
    out = {"stdio_set_project": summary(stdio), "library_set_current_project": summary(direct)}
    out["ratio_p50"] = round(statistics.median(stdio) / statistics.median(direct), 1)
    return out


async def notice_latency(url: str, trials: int, how: str) -> dict[str, Any]:
    async with (
        AsyncCoordinator.from_url(url, namespace="bench") as holder,
        AsyncCoordinator.from_url(url, namespace="bench") as operator,
    ):
        samples: list[float] = []
        for i in range(trials):
            agent = f"agent-{how}-{i % 10}"
            session = await holder.start_session(agent, ttl=3 * RARE)
            async with holder.keep_alive(session, interval=RARE) as ka:
                t0 = time.perf_counter()
                if how == "revoke":
                    await operator.revoke_session(agent, reason="bench")
                else:
                    await operator.start_session(agent)
                await asyncio.wait_for(ka.lost.wait(), 10)
                samples.append((time.perf_counter() - t0) * 1000)
                assert ka.reason == ("revoked" if how == "revoke" else "superseded")
        return summary(samples)


async def mcp_notice_latency(
    session: ClientSession, logs: list[tuple[float, Any]], operator: AsyncCoordinator, trials: int
) -> dict[str, Any]:
    samples: list[float] = []
    for _ in range(trials):
        result = await session.call_tool("start_session", {"agent_id": "bench-notice"})
        assert not result.is_error, result
        logs.clear()
        t0 = time.perf_counter()
        await operator.revoke_session("bench-notice", reason="bench")
        with anyio.fail_after(10):
            while not any(data.get("event") == "lease_lost" for _, data in logs):
                await anyio.sleep(0.0002)
        arrived = next(t for t, data in logs if data.get("event") == "lease_lost")
        samples.append((arrived - t0) * 1000)
    return summary(samples)


async def run(url: str, calls: int, trials: int, errlog: TextIO) -> dict[str, Any]:
    logs: list[tuple[float, Any]] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append((time.perf_counter(), params.data))

    env = {"COORDINATOR_REDIS_URL": url, "COORDINATOR_NAMESPACE": "bench", "PYTHONPATH": str(ROOT)}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "coordinator", "mcp"], env=env
    )
    results: dict[str, Any] = {}
    async with (
        stdio_client(params, errlog=errlog) as (read, write),
        ClientSession(read, write, logging_callback=on_log) as session,
        AsyncCoordinator.from_url(url, namespace="bench") as library,
    ):
        await session.initialize()
        results.update(await tool_latency(url, session, library, calls))
        results["notice_revoke_library"] = await notice_latency(url, trials, "revoke")
        results["notice_supersede_library"] = await notice_latency(url, trials, "supersede")
        results["notice_revoke_mcp"] = await mcp_notice_latency(session, logs, library, trials)
    return results


def main() -> None:
    logging.getLogger("coordinator").setLevel(logging.ERROR)  # a lost lease is the point here
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="set_project calls per path")
    parser.add_argument("--trials", type=int, default=200, help="notice trials per kind")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        binary = system_binary()
        server = EmbeddedRedis(Path(folder), port=0, appendonly=False, binary=binary)
        with server, open(os.devnull, "w") as errlog:  # the server's lease warnings
            results = anyio.run(run, server.url, args.calls, args.trials, errlog)
    results["redis"] = str(binary or "bundled")
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
