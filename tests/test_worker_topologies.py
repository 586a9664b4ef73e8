"""The event worker and the admin CLI on a real 3-master Redis Cluster, and the worker
through a Sentinel failover.

Cluster: events of agents on every shard are persisted exactly once, every stream is
read from the master that owns it (no MOVED, no CROSSSLOT), and the read commands of
the CLI cover every node. Sentinel: a worker running across a primary crash resumes on
the promoted replica and persists every acknowledged event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from coordinator import Coordinator, EmbeddedRedis, Settings
from coordinator.cli.main import cli
from coordinator.keys import KeySpace
from coordinator.local.cluster import EmbeddedCluster
from coordinator.local.sentinel import EmbeddedSentinel
from coordinator.sinks import sink_from_url
from coordinator.worker import EventWorker, WorkerOptions
from tests.helpers import RunningWorker, wait_until

#: Many processes (or many generated cases): Redis 6.2 and Valkey in CI (conftest).
pytestmark = pytest.mark.slow

NAMESPACE = "test"
KEYS = KeySpace(NAMESPACE, 16)


def agents_on_every_shard(per_shard: int = 2) -> list[str]:
    found: dict[int, list[str]] = {}
    i = 0
    while any(len(found.get(s, [])) < per_shard for s in range(KEYS.shards)):
        agent = f"agent-{i}"
        found.setdefault(KEYS.shard_of(agent), []).append(agent)
        i += 1
    return [a for s in range(KEYS.shards) for a in found[s][:per_shard]]


def burst(url: str, sink_url: str, **options: Any) -> Any:
    """Run one worker in burst mode (drain everything, then return its metrics)."""
    settings = Settings.from_url(url, namespace=NAMESPACE, sink_url=sink_url)
    sink = sink_from_url(sink_url)
    try:
        worker = EventWorker(settings, sink, WorkerOptions(burst=True, **options))
        return asyncio.run(worker.run())
    finally:
        sink.close()


def node_stats(cluster: EmbeddedCluster) -> dict[int, tuple[int, int]]:
    """Per master: (XREADGROUP calls, stream commands rejected) since it started.

    A command sent to a node that does not own its key is rejected with MOVED (or ASK),
    so no rejected stream command means every stream was read, acknowledged and
    trimmed on the master that owns it. (Only stream commands: redis-py's asyncio
    cluster client sends its very first command, the namespace check, to a node of
    its choice and follows the MOVED.)"""
    out = {}
    for node in cluster.masters:
        with contextlib.closing(node.client(decode_responses=True)) as r:
            stats = r.info("commandstats")
        calls = int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))
        rejected = sum(
            int(v.get("rejected_calls", 0)) for k, v in stats.items() if k.startswith("cmdstat_x")
        )
        out[node.port or 0] = (calls, rejected)
    return out


@pytest.mark.cluster(only=True)
def test_the_worker_persists_every_shard_once_reading_each_stream_on_its_owner(
    redis_server: EmbeddedCluster, redis_url: str, raw: redis.RedisCluster, tmp_path: Path
) -> None:
    agents = agents_on_every_shard()
    with Coordinator.from_url(redis_url, namespace=NAMESPACE) as c:
        for agent in agents:
            s = c.start_session(agent)
            c.set_current_project(agent, "a", s.session_id)
            c.set_current_project(agent, "b", s.session_id)
    written = {
        (shard, entry_id)
        for shard in range(KEYS.shards)
        for entry_id, _ in raw.xrange(KEYS.stream(shard))
    }
    assert len(written) == 3 * len(agents)
    before = node_stats(redis_server)
    sink_url = f"sqlite:///{tmp_path / 'events.db'}"
    metrics = burst(redis_url, sink_url, consumer="w1", reap_interval=0)
    assert metrics.persisted == len(written)
    assert metrics.duplicates == 0
    after = node_stats(redis_server)
    for port, (calls, redirects) in after.items():
        assert calls > before[port][0], f"master {port} served no XREADGROUP"
        assert redirects == before[port][1], f"master {port} redirected a stream command"
    # Each shard's group on the node that owns the stream delivered its last entry.
    for shard in range(KEYS.shards):
        stream = KEYS.stream(shard)
        owner = redis_server.node_for_slot(redis.cluster.key_slot(stream.encode()))
        with contextlib.closing(owner.client(decode_responses=True)) as r:
            [group] = r.xinfo_groups(stream)
            assert group["pending"] == 0
            assert r.xlen(stream) == 0  # persisted, acknowledged, trimmed
    sink = sink_from_url(sink_url)
    try:
        rows = list(sink.events(NAMESPACE))
    finally:
        sink.close()
    assert {(e.shard, e.stream_id) for e in rows} == written
    assert len(rows) == len(written)
    assert {e.shard for e in rows} == set(range(KEYS.shards))
    # A second run finds nothing new and stores nothing twice.
    again = burst(redis_url, sink_url, consumer="w2", reap_interval=0)
    assert (again.persisted, again.duplicates) == (0, 0)


@pytest.mark.cluster(only=True)
def test_cli_read_commands_cover_every_node(
    redis_server: EmbeddedCluster, redis_url: str, tmp_path: Path
) -> None:
    agents = agents_on_every_shard(per_shard=1)
    sink_url = f"sqlite:///{tmp_path / 'events.db'}"
    with Coordinator.from_url(redis_url, namespace=NAMESPACE) as c:
        sessions = {agent: c.start_session(agent) for agent in agents}
        for agent in agents:
            c.set_current_project(agent, "p", sessions[agent].session_id)
        # Two thirds of the events persisted and trimmed, the rest still in the
        # streams: `events` must merge the sink with every node's stream tail.
        burst(redis_url, sink_url, consumer="w1", reap_interval=0)
        for agent in agents:
            c.set_current_project(agent, "q", sessions[agent].session_id)
    runner = CliRunner()
    base = ["--redis-url", redis_url, "--namespace", NAMESPACE, "--sink-url", sink_url]

    def run(*args: str) -> Any:
        result = runner.invoke(cli, [*base, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    leases = run("leases", "--json")
    assert sorted(lease["agent_id"] for lease in leases) == sorted(agents)
    events = run("events", "--json", "--limit", "1000")
    assert len(events) == 3 * len(agents)
    assert {e["shard"] for e in events} == set(range(KEYS.shards))
    if "status" in cli.commands:
        run("status", "--json")


# --- Sentinel ------------------------------------------------------------------------

#: Retries that span a failover (sentinels notice a dead primary after 1.5 s here).
RIDE_THROUGH = {
    "retry_attempts": 60,
    "retry_backoff": 0.05,
    "retry_backoff_cap": 0.5,
    "socket_timeout": 2,
    "connect_timeout": 1,
    "namespace": NAMESPACE,
}


@pytest.fixture
def group(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[EmbeddedSentinel]:
    with EmbeddedSentinel(tmp_path / "s", binary=redis_server.binary) as started:
        yield started


def test_the_worker_resumes_after_a_failover_and_persists_every_event(
    group: EmbeddedSentinel, tmp_path: Path
) -> None:
    sink_url = f"sqlite:///{tmp_path / 'events.db'}"
    writer = Coordinator.from_url(group.url, **RIDE_THROUGH)
    settings = Settings.from_url(group.url, sink_url=sink_url, **RIDE_THROUGH)
    reader = sink_from_url(sink_url)
    agents = [f"agent-{i}" for i in range(8)]
    try:
        worker = EventWorker(settings, None, WorkerOptions(consumer="w1", claim_idle_ms=500))
        with RunningWorker(worker):
            sessions = {a: writer.start_session(a) for a in agents}
            for agent in agents:
                writer.set_current_project(agent, "a", sessions[agent].session_id)
            wait_until(lambda: reader.count(NAMESPACE) == 2 * len(agents), timeout=30)
            # The replica has every event before the crash (what an asynchronous
            # failover can lose is in the README), though perhaps not the worker's
            # last acknowledgements: those entries are claimed and found persisted.
            group.wait_replicated(caught_up=True)
            old = group.kill_primary()
            # Writes issued while there is no primary ride through (request ids make
            # the retries safe); the worker meanwhile retries its reads.
            for agent in agents:
                writer.set_current_project(
                    agent, "b", sessions[agent].session_id, request_id=f"b-{agent}"
                )
            group.wait_promoted(old)
            for agent in agents:
                writer.set_current_project(agent, "c", sessions[agent].session_id)
            expected = 4 * len(agents)
            wait_until(lambda: reader.count(NAMESPACE) == expected, timeout=60)
        assert worker.metrics.redis_errors > 0  # it saw the outage and resumed
        events = list(reader.events(NAMESPACE))
        assert len(events) == expected
        assert len({(e.shard, e.stream_id) for e in events}) == expected
        versions = sorted(
            (e.agent_id, e.actual_version)
            for e in events
            if e.event_type.value != "session_started"
        )
        assert versions == sorted((a, v) for a in agents for v in (1, 2, 3))
        assert reader.count(NAMESPACE, event_type="audit_anomaly") == 0
    finally:
        writer.close()
        reader.close()
