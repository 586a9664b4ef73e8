"""Auto-pipelining on a Redis Cluster: direct batches per master against redis-py's
cluster pipeline, in one run.

    python bench/bench_cluster_pipelining.py                 # 50 and 200 tasks, 3 rounds
    python bench/bench_cluster_pipelining.py --json out.json

One process, one throwaway 3-master cluster (the system redis-server when present,
persistence off). For each concurrency, one ``AsyncCoordinator`` shared by the tasks
runs ``set_current_project`` on each task's own live session, the variants interleaved
round by round:

* ``direct``: auto-pipelining as shipped (one batch per master, written and read on
  the node's connections);
* ``cluster_pipeline``: the same batches sent through redis-py's cluster pipeline
  (what auto-pipelining did before; switched by a private attribute, bench only);
* ``unpipelined``: ``auto_pipeline=False``.

Reported: ops/s per variant (median of the rounds) and the per-round ratios' medians.
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

from coordinator import AsyncCoordinator
from coordinator.local.cluster import EmbeddedCluster
from coordinator.local.embedded import system_binary

NAMESPACE = "bench-cpipe"


async def level(url: str, tasks: int, ops: int, rounds: int) -> dict[str, Any]:
    per_task = max(1, ops // tasks)
    options: dict[str, Any] = {"namespace": NAMESPACE, "lease_ttl": 3600}
    coord = AsyncCoordinator.from_url(url, max_connections=tasks + 8, **options)
    plain = AsyncCoordinator.from_url(url, auto_pipeline=False, **options)
    agents = [f"agent-{tasks}-{i}" for i in range(tasks)]
    sessions = [(await coord.start_session(a)).session_id for a in agents]
    await plain.server_time()
    pipeline = coord._bound[2].__self__  # the AutoPipeline (bench only)
    cluster = pipeline._cluster

    def body(client: AsyncCoordinator, direct: bool | None) -> Any:
        async def run() -> float:
            if direct is not None:
                pipeline._cluster = cluster if direct else None

            async def one(i: int) -> None:
                for _ in range(per_task):
                    await client.set_current_project(agents[i], "proj", sessions[i])

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(tasks)))
            return tasks * per_task / (time.perf_counter() - started)

        return run

    variants = {
        "direct": body(coord, True),
        "cluster_pipeline": body(coord, False),
        "unpipelined": body(plain, None),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            rates[name].append(await run())
    pipeline._cluster = cluster
    await coord.aclose()
    await plain.aclose()
    out: dict[str, Any] = {name: round(statistics.median(r)) for name, r in rates.items()}
    for base in ("cluster_pipeline", "unpipelined"):
        ratios = [a / b for a, b in zip(rates["direct"], rates[base], strict=True)]
        out[f"ratio_vs_{base}"] = round(statistics.median(ratios), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=10_000, help="calls per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report: dict[str, Any] = {"python": sys.version.split()[0], "ops": args.ops}
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedCluster(Path(tmp), binary=system_binary(), appendonly=False) as cluster,
    ):
        for tasks in (50, 200):
            report[f"tasks_{tasks}"] = asyncio.run(level(cluster.url, tasks, args.ops, args.rounds))
            print(f"{tasks} tasks: {report[f'tasks_{tasks}']}", file=sys.stderr)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
