"""Throughput, lag and memory of the event worker.

    python bench/bench_worker.py                    # 200k events, SQLite and PostgreSQL
    python bench/bench_worker.py --events 20000 --lag-seconds 3   # a short run
    python bench/bench_worker.py --repeat 5 --json docs/bench-results/worker.json

Against a throwaway redis-server started here (the system Redis 7 if present):

* the bare consumer rate: ``XREADGROUP`` (COUNT 1000 over the 16 shard streams) plus
  ``XACK`` and nothing else, measured in the same run as the baseline;
* one worker in burst mode persisting N events into SQLite, then PostgreSQL
  (``--pg-url``), in events/s and as a ratio to the bare rate;
* with ``--repeat R``, R runs per sink, each after its own baseline run; every run is
  reported with the median and the slowest, since one run on a shared machine says
  little;
* end-to-end lag (entry id time to persistence) at a steady producer rate
  (default 5k events/s, through the coordinator's own ``set_current_project`` in a
  separate process);
* Redis ``used_memory`` and the streams' own bytes (``MEMORY USAGE``) before the
  load, with N unconsumed events, and after the worker caught up (trimmed back). The
  rest of ``used_memory`` that stays is the script cache the worker loaded.

Events are loaded with pipelined ``XADD`` in exactly the fields the Lua scripts write
(loading 200k through the client would time the client, not the worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from coordinator import Coordinator, EmbeddedRedis, Settings
from coordinator.keys import KeySpace
from coordinator.local.embedded import system_binary
from coordinator.sinks import sink_from_url
from coordinator.sinks.process import ProcessSink
from coordinator.worker import EventWorker, WorkerOptions

NS = "bench"
SHARDS = 16


def load(r: redis.Redis, n: int) -> None:
    keys = KeySpace(NS, SHARDS)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        agent = f"agent-{i % 1000}"
        pipe.xadd(
            keys.stream(keys.shard_of(agent)),
            {
                "event_type": "project_switched", "agent_id": agent,
                "session_id": f"1-0123456789abcdef@{agent}", "fencing_token": "1",
                "from_project": "alpha", "to_project": "beta", "expected_version": "",
                "actual_version": str(i), "success": "1", "error_message": "",
                "metadata": "",
            },
        )  # fmt: skip
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def reset(r: redis.Redis) -> None:
    r.flushall()
    keys = KeySpace(NS, SHARDS)
    for shard in range(SHARDS):
        r.xgroup_create(keys.stream(shard), "coordinator", id="0", mkstream=True)


def bare_rate(r: redis.Redis, n: int) -> float:
    streams = dict.fromkeys(KeySpace(NS, SHARDS).streams(), ">")
    got, start = 0, time.perf_counter()
    while got < n:
        reply = r.xreadgroup("coordinator", "bare", streams, 1000)
        pipe = r.pipeline(transaction=False)
        for stream, entries in reply:
            got += len(entries)
            pipe.xack(stream, "coordinator", *(e[0] for e in entries))
        pipe.execute()
    return n / (time.perf_counter() - start)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def worker_rate(r: redis.Redis, url: str, sink_url: str, n: int) -> dict[str, Any]:
    """One burst run over ``n`` loaded events: its rate, and the CPU each process spent
    per event (on 2 cores the three share, the sum is what bounds the rate)."""
    with sink_from_url(sink_url) as sink:
        sink.ping()  # schema created outside the timing
        # The sink as `coordinator worker` opens it (SQLite: in a writer process).
        worker = EventWorker(
            Settings.from_url(url, namespace=NS, sink_url=sink_url),
            None,
            WorkerOptions(burst=True, reap_interval=0, consumer="bench"),
        )
        writer = None
        if isinstance(worker.sink, ProcessSink):
            worker.sink.start()  # not timed: the writer process's start-up
            assert worker.sink._child is not None
            writer = worker.sink._child.pid
        cpu = {"redis": redis_cpu(r), "worker": time.process_time()}
        if writer is not None:
            cpu["writer"] = process_cpu(writer)
        start = time.perf_counter()
        metrics = asyncio.run(worker.run())
        seconds = time.perf_counter() - start
        cpu["redis"] = redis_cpu(r) - cpu["redis"]
        cpu["worker"] = time.process_time() - cpu["worker"]
        if writer is not None:
            cpu["writer"] = process_cpu(writer) - cpu["writer"]
        worker.sink.close()
        assert metrics.persisted == n, metrics.summary()
        assert sink.count(NS) == n
    return {
        "events": n,
        "seconds": round(seconds, 2),
        "events_per_s": round(n / seconds),
        "cpu_us_per_event": {name: round(t / n * 1e6, 2) for name, t in cpu.items()},
    }


def produce(url: str, rate: int, seconds: float, out: Any) -> None:
    """In its own process (not competing with the worker for the GIL): ``rate``
    ``set_current_project`` calls a second for ``seconds``; sends back how many."""
    produced = 0
    with Coordinator.from_url(url, namespace=NS) as client:
        sessions = [client.start_session(f"lag-{i}") for i in range(100)]
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate)
            while produced < due:
                s = sessions[produced % 100]
                client.set_current_project(s.agent_id, f"p{produced}", s.session_id)
                produced += 1
            time.sleep(0.001)
        out.send((produced, produced / (time.perf_counter() - start)))


def lag(url: str, sink_url: str, rate: int, seconds: float) -> dict[str, Any]:
    """Producer process at ``rate`` writes/s through the client; the worker's exact lags."""
    samples: list[float] = []
    with sink_from_url(sink_url) as sink:
        worker = EventWorker(
            Settings.from_url(url, namespace=NS),
            sink,
            WorkerOptions(block_ms=1000, consumer="lag", reap_interval=0.5),
        )
        original = worker.metrics.observe_lags

        def record(now_ms: int, created: Any) -> None:
            created = list(created)
            samples.extend((now_ms - ms) / 1000 for ms in created)
            original(now_ms, created)

        worker.metrics.observe_lags = record  # type: ignore[method-assign]
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(),))
        thread.start()
        receive, send = multiprocessing.Pipe(duplex=False)
        producer = multiprocessing.get_context("spawn").Process(
            target=produce, args=(url, rate, seconds, send)
        )
        producer.start()
        produced, achieved = receive.recv()
        producer.join()
        deadline = time.monotonic() + 30
        while sink.count(NS) < produced + 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        loop.call_soon_threadsafe(worker.request_stop)
        thread.join()
        loop.close()
    samples.sort()
    return {
        "target_rate": rate,
        "achieved_rate": round(achieved),
        "events": len(samples),
        "p50_ms": round(1000 * samples[len(samples) // 2], 1),
        "p99_ms": round(1000 * samples[int(len(samples) * 0.99)], 1),
        "max_ms": round(1000 * samples[-1], 1),
        "mean_ms": round(1000 * statistics.fmean(samples), 1),
    }


def summary(runs: list[dict[str, Any]], bare: list[float]) -> dict[str, Any]:
    """Every run of one sink, each with its baseline and its ratio to it."""
    for run, baseline in zip(runs, bare, strict=True):
        run["bare_per_s"] = round(baseline)
        run["ratio_to_bare"] = round(run["events_per_s"] / baseline, 2)
    rates = [run["events_per_s"] for run in runs]
    return {
        "events_per_s": round(statistics.median(rates)),
        "slowest_events_per_s": min(rates),
        "ratio_to_bare": round(statistics.median(r["ratio_to_bare"] for r in runs), 2),
        "runs": runs,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--lag-rate", type=int, default=5000)
    parser.add_argument("--lag-seconds", type=float, default=20)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    n = opts.events
    report: dict[str, Any] = {"events": n, "rounds": opts.repeat}
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(
            Path(tmp) / "redis", binary=system_binary(), port=0, appendonly=False
        ) as server,
    ):
        r = server.client(decode_responses=True)
        report["redis"] = r.info("server")["redis_version"]
        reset(r)
        streams = KeySpace(NS, SHARDS).streams()

        def stream_bytes() -> int:
            return sum(int(r.memory_usage(s) or 0) for s in streams)

        memory = {"baseline": r.info("memory")["used_memory"], "streams_baseline": stream_bytes()}
        load(r, n)
        memory["loaded"] = r.info("memory")["used_memory"]
        memory["streams_loaded"] = stream_bytes()

        schemas: list[str] = []

        def sink_url(name: str) -> str:
            """A new SQLite file or PostgreSQL schema: every run starts empty."""
            label = f"bench_{uuid.uuid4().hex[:8]}"
            if name == "sqlite":
                return f"sqlite:///{Path(tmp) / f'{label}.db'}"
            schemas.append(label)
            import psycopg

            with psycopg.connect(opts.pg_url, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schemas[-1]}")
            return f"{opts.pg_url}?options=-csearch_path%3D{schemas[-1]}"

        # Every SQLite round before any PostgreSQL one: after 200k inserts the
        # PostgreSQL server works on in the background (autovacuum), which took
        # 5-10 % off the SQLite runs that followed. Each run has its own baseline.
        bare: dict[str, list[float]] = {}
        runs: dict[str, list[dict[str, Any]]] = {}
        try:
            for name in ("sqlite", "postgres") if opts.pg_url else ("sqlite",):
                for round_ in range(opts.repeat):
                    reset(r)
                    load(r, n)
                    bare.setdefault(name, []).append(bare_rate(r, n))
                    reset(r)
                    load(r, n)
                    runs.setdefault(name, []).append(worker_rate(r, server.url, sink_url(name), n))
                    if name == "sqlite" and round_ == 0:
                        memory["after_worker"] = r.info("memory")["used_memory"]
                        memory["streams_after_worker"] = stream_bytes()
                        memory["stream_entries_left"] = sum(r.xlen(s) for s in streams)
                    print(
                        f"{name} round {round_ + 1}: bare {bare[name][-1]:,.0f}/s, "
                        f"worker {runs[name][-1]['events_per_s']:,}/s",
                        file=sys.stderr,
                    )
            reset(r)
            report["lag"] = lag(
                server.url, f"sqlite:///{Path(tmp) / 'lag.db'}", opts.lag_rate, opts.lag_seconds
            )
        finally:
            if opts.pg_url:
                import psycopg

                with psycopg.connect(opts.pg_url, autocommit=True) as conn:
                    for schema in schemas:
                        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        every_bare = [b for rates in bare.values() for b in rates]
        report["bare_xreadgroup_xack_per_s"] = round(statistics.median(every_bare))
        for name, sink_runs in runs.items():
            report[f"worker_{name}"] = summary(sink_runs, bare[name])
        memory["bytes_per_in_flight_event"] = round((memory["loaded"] - memory["baseline"]) / n)
        report["memory"] = memory
        r.close()
    text = json.dumps(report, indent=2)
    print(text)
    if opts.json:
        opts.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
