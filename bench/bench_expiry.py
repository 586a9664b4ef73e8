"""How soon a lapsed lease becomes its ``session_expired`` event, and what it costs.

    python bench/bench_expiry.py                 # 1,000 leases per mode
    python bench/bench_expiry.py --leases 200    # shorter
    python bench/bench_expiry.py --json out.json

One process, one throwaway redis-server, one run, two reapers in turn:

* ``deadline``: the event worker's reaper (``coordinator worker``), which sleeps until
  the next deadline in the lease index (at most ``reap_interval``, 0.5 s);
* ``poll``: what the worker did before, ``cleanup_expired_sessions()`` every 0.5 s.

Each mode starts ``--leases`` sessions with TTLs spread over 1 to 6 s and records each
deadline (the server's, from ``Session.expires_at``); the event's time is its stream id
(server clock too). Reported: p50/p99/max of event time minus deadline, and the Redis
commands the reaper sends per second while nothing expires (``INFO commandstats``:
``TIME`` and the lease-index reads, so the worker's other work is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from coordinator import Coordinator, EmbeddedRedis, Settings
from coordinator.local.embedded import system_binary
from coordinator.sinks import sink_from_url
from coordinator.timestamps import datetime_to_ms, stream_id_ms
from coordinator.worker import EventWorker, WorkerOptions

POLL_INTERVAL = 0.5


class Reaper:
    """Either reaper, running in a thread until ``stop()``."""

    def __init__(self, mode: str, url: str, namespace: str, sink_url: str) -> None:
        self.mode, self.url, self.namespace, self.sink_url = mode, url, namespace, sink_url
        self.stopping = threading.Event()
        self.worker: EventWorker | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        if self.mode == "poll":
            # As the worker scheduled it: a pass every POLL_INTERVAL from the last start.
            with Coordinator.from_url(self.url, namespace=self.namespace) as client:
                due = time.monotonic()
                while not self.stopping.wait(max(0.0, due - time.monotonic())):
                    due = time.monotonic() + POLL_INTERVAL
                    client.cleanup_expired_sessions()
            return
        settings = Settings.from_url(self.url, namespace=self.namespace)
        options = WorkerOptions(reap_interval=POLL_INTERVAL, block_ms=100, sink_process=False)
        self.worker = EventWorker(settings, sink_from_url(self.sink_url), options)
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.worker.run())
        self.loop.close()

    def stop(self) -> None:
        self.stopping.set()
        if self.worker is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.worker.request_stop)
        self.thread.join(30)
        if self.worker is not None:
            self.worker.sink.close()


#: The reapers' commands, the lease reaper's and the reservation reaper's (the worker's
#: reads, acks and trims are not reaping).
REAPER_COMMANDS = (
    "cmdstat_time", "cmdstat_zrange", "cmdstat_zrangebyscore", "cmdstat_exists",
    "cmdstat_hgetall",
)  # fmt: skip


def commands(raw: redis.Redis) -> int:
    stats = raw.info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in REAPER_COMMANDS)


def run_mode(mode: str, url: str, leases: int, idle: float, folder: Path) -> dict[str, Any]:
    namespace = f"exp-{mode}"
    raw = redis.Redis.from_url(url, decode_responses=True)
    sink_url = f"sqlite:///{folder / (mode + '.db')}"
    # The worker trims what it persisted: read events from its sink and the stream.
    client = Coordinator.from_url(url, namespace=namespace, sink_url=sink_url)
    reaper = Reaper(mode, url, namespace, sink_url)
    try:
        # Idle cost: a few far-off leases, nothing due.
        for i in range(10):
            client.start_session(f"far-{i}", ttl=3600)
        time.sleep(1.0)  # let the reaper settle into its rhythm
        before = commands(raw)
        time.sleep(idle)
        idle_rate = (commands(raw) - before) / idle
        deadlines: dict[str, int] = {}
        for i in range(leases):
            session = client.start_session(f"agent-{i}", ttl=1 + 5 * i / leases)
            deadlines[session.session_id] = datetime_to_ms(session.expires_at)
        wanted = set(deadlines)
        seen: dict[str, int] = {}
        end = time.monotonic() + 60
        while wanted - set(seen) and time.monotonic() < end:
            for event in client.get_agent_events(event_type="session_expired", limit=1000):
                if event.session_id in wanted:
                    seen[event.session_id] = stream_id_ms(event.stream_id)
            time.sleep(0.2)
    finally:
        reaper.stop()
        client.close()
        raw.close()
    delays = sorted(seen[s] - deadlines[s] for s in seen)
    return {
        "leases": leases,
        "events": len(delays),
        "p50_ms": statistics.median(delays) if delays else None,
        "p99_ms": delays[min(len(delays) - 1, int(0.99 * len(delays)))] if delays else None,
        "max_ms": delays[-1] if delays else None,
        "idle_commands_per_s": round(idle_rate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=0, unix_socket=False,
                               binary=system_binary())  # fmt: skip
        with server:
            with server.client(decode_responses=True) as r:
                report["redis"] = r.info("server")["redis_version"]
            for mode in ("deadline", "poll"):
                report[mode] = run_mode(mode, server.url, args.leases, args.idle, Path(tmp))
                print(f"{mode}: {report[mode]}", file=sys.stderr)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
