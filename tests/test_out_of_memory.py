"""A server at ``maxmemory`` (``noeviction``) does not lock everyone out (issue 18, item 3).

Redis refuses every write at the limit. New clients must still connect (namespace
setup reads its record and writes only when it is missing), reads, ``status``,
``leases`` and ``events`` keep working, a refused write raises RedisOutOfMemory with
nothing written and no advice to change a policy that is already right, and a newly
started worker drains the backlog, whose acknowledging and trimming frees the memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from coordinator import Coordinator, EmbeddedRedis, RedisOutOfMemory
from coordinator.cli.main import cli
from coordinator.local.cluster import EmbeddedCluster
from coordinator.sinks import sink_from_url
from coordinator.worker import EventWorker, WorkerOptions
from tests.helpers import snapshot

NS = "test"


@pytest.fixture
def fill(redis_server: EmbeddedRedis, raw: redis.Redis) -> Iterator[Callable[..., None]]:
    """``fill(headroom)`` sets maxmemory ``headroom`` bytes below what the server uses
    now (default: 1 byte, far below): every write that needs memory is refused. The
    limit is lifted afterwards."""

    def at_limit(headroom: int | None = None) -> None:
        used = int(raw.info("memory")["used_memory"])
        raw.config_set("maxmemory", 1 if headroom is None else used - headroom)
        with pytest.raises(redis.OutOfMemoryError):
            raw.set("probe", "x")

    yield at_limit
    raw.config_set("maxmemory", 0)


def test_a_full_server_serves_new_clients_reads_and_refuses_writes_cleanly(
    make_client: Callable[..., Any], fill: Callable[[], None], raw: redis.Redis
) -> None:
    writer = make_client()
    session = writer.start_session("agent-1")
    writer.set_current_project("agent-1", "p", session.session_id)
    fill()
    before = snapshot(raw)

    reader = make_client()  # connects after the server filled up
    assert reader.get_current_project("agent-1").version == 1
    assert [lease.agent_id for lease in reader.list_leases()] == ["agent-1"]
    assert [e.event_type for e in reader.get_agent_events("agent-1")][:2] == [
        "project_set", "session_started",
    ]  # fmt: skip
    assert reader.stats().active_leases == 1
    # A namespace never used before: nothing recorded, nothing to disagree with.
    assert make_client(namespace="fresh").get_current_project("agent-1") is None

    for write in (
        lambda: reader.set_current_project("agent-1", "q", session.session_id),
        lambda: reader.start_session("agent-2"),
    ):
        with pytest.raises(RedisOutOfMemory) as info:
            write()
        message = str(info.value)
        assert "out of memory" in message
        assert "nothing was written" in message
        assert "policy" not in message
        assert "noeviction" not in message
        assert info.value.maybe_applied is False
    assert snapshot(raw) == before
    # A heartbeat's first write only moves the lease's expiry, which Redis allows at
    # the limit (a script is refused at its first write or not at all): leases do not
    # lapse because memory is full.
    assert reader.heartbeat_session(session.session_id).expires_at >= session.expires_at
    assert reader.end_session("agent-1", session.session_id) is True  # its first write: DEL


@pytest.mark.slow
def test_on_a_full_server_the_cli_reads_and_a_new_worker_frees_memory(
    redis_url: str, fill: Callable[[], None], raw: redis.Redis, tmp_path: Path
) -> None:
    sink_url = f"sqlite:///{tmp_path / 'events.db'}"
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(
            cli, ["--redis-url", redis_url, "--namespace", NS, "--sink-url", sink_url, *args]
        )

    # A worker ran once (it created the consumer groups), then stopped; a backlog
    # grew until the server was full.
    assert run("worker", "--burst").exit_code == 0
    with Coordinator.from_url(redis_url, namespace=NS) as client:
        sessions = {}
        for i in range(200):
            s = client.start_session(f"agent-{i}")
            sessions[s.agent_id] = s.session_id
            for n in range(9):
                client.set_current_project(f"agent-{i}", f"p{n}", s.session_id)
    streams = [client.keys.stream(s) for s in range(client.keys.shards)]
    assert sum(raw.xlen(stream) for stream in streams) == 2000
    backlog = sum(int(raw.memory_usage(stream, samples=0) or 0) for stream in streams)
    fill()

    status = run("status", "--json")
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert data["stream_length"] == 2000
    assert data["lag"] == 2000
    assert any("of maxmemory" in w for w in data["warnings"])
    health = run("health", "--json")
    assert health.exit_code == 1
    checks = {c["name"]: c["ok"] for c in json.loads(health.stdout)["checks"]}
    assert checks["redis"] is True
    assert checks["memory"] is False
    assert run("leases", "--json").exit_code == 0
    assert run("events", "--limit", "5").exit_code == 0
    # Revoking only deletes (Redis allows that at the limit); a project write is refused.
    assert run("lease", "revoke", "agent-1", "--reason", "full", "--yes").exit_code == 0
    refused = run("project", "set", "agent-2", "q", "--session", sessions["agent-2"])
    assert refused.exit_code == 1
    assert "Traceback" not in refused.output
    assert "out of memory" in refused.stderr
    assert "policy" not in refused.stderr

    # Just over the limit, by less than the backlog holds: trimming it frees enough.
    fill(backlog // 4)
    drained = run("worker", "--burst")  # connects, persists, acks and trims
    assert drained.exit_code == 0, drained.output
    with sink_from_url(sink_url) as sink:
        assert sink.count(NS) == 2001  # and the revoke's event
    assert sum(raw.xlen(client.keys.stream(s)) for s in range(client.keys.shards)) == 0
    # The trim freed what the backlog held: writes are accepted again.
    with Coordinator.from_url(redis_url, namespace=NS) as client:
        assert client.start_session("agent-0").fencing_token == 2


def test_the_worker_keeps_acknowledging_at_maxmemory(
    redis_url: str, fill: Callable[[], None], raw: redis.Redis, tmp_path: Path
) -> None:
    """A running worker whose liveness SET is refused keeps its key alive with EXPIRE,
    and its reads, acknowledgements and trims go on."""
    import asyncio

    with Coordinator.from_url(redis_url, namespace=NS) as client:
        s = client.start_session("agent-1")
        client.set_current_project("agent-1", "p", s.session_id)
        keys = client.keys
    worker = EventWorker(
        Coordinator.from_url(redis_url, namespace=NS).settings,
        sink_from_url(f"sqlite:///{tmp_path / 'w.db'}"),
        WorkerOptions(consumer="w1", burst=True, reap_interval=0.01),
    )
    raw.set(keys.worker("w1"), "{}", ex=5)
    for shard in range(keys.shards):
        raw.xgroup_create(keys.stream(shard), "coordinator", id="0", mkstream=True)
    fill()
    metrics = asyncio.run(worker.run())
    worker.sink.close()
    assert metrics.persisted == 2
    assert raw.xlen(keys.stream(keys.shard_of("agent-1"))) == 0


@pytest.mark.cluster(only=True)
def test_a_full_cluster_serves_new_clients_and_reads(
    make_client: Callable[..., Any], redis_server: EmbeddedCluster
) -> None:
    writer = make_client()
    session = writer.start_session("agent-1")
    writer.set_current_project("agent-1", "p", session.session_id)
    for node in redis_server.nodes:
        with node.client() as r:
            r.config_set("maxmemory", 1)
    try:
        reader = make_client()  # detects the cluster, reads the namespace record
        assert reader.get_current_project("agent-1").version == 1
        assert [lease.agent_id for lease in reader.list_leases()] == ["agent-1"]
        stats = reader.stats()
        assert stats.active_leases == 1
        assert len(stats.servers) == len(redis_server.nodes)
        assert any("of maxmemory" in w for w in stats.warnings)
        with pytest.raises(RedisOutOfMemory):
            reader.set_current_project("agent-1", "q", session.session_id)
        assert reader.get_current_project("agent-1").project_name == "p"
    finally:
        for node in redis_server.nodes:
            with node.client() as r:
                r.config_set("maxmemory", 0)


@pytest.mark.slow
def test_a_first_worker_drains_a_full_server_that_has_no_consumer_groups(
    redis_url: str, fill: Callable[..., None], raw: redis.Redis, tmp_path: Path
) -> None:
    """No worker ever ran, the streams filled the server: the groups cannot be created
    (XGROUP CREATE needs memory), so the worker persists the streams by XRANGE and
    trims them, then creates the groups in the memory it freed."""
    with Coordinator.from_url(redis_url, namespace=NS) as client:
        for i in range(100):
            s = client.start_session(f"agent-{i}")
            for n in range(9):
                client.set_current_project(f"agent-{i}", f"p{n}", s.session_id)
        streams = [client.keys.stream(s) for s in range(client.keys.shards)]
    backlog = sum(int(raw.memory_usage(stream, samples=0) or 0) for stream in streams)
    fill(backlog // 4)
    with pytest.raises(redis.OutOfMemoryError):
        raw.xgroup_create(streams[0], "coordinator", id="0")
    sink_url = f"sqlite:///{tmp_path / 'events.db'}"
    drained = CliRunner().invoke(
        cli,
        ["--redis-url", redis_url, "--namespace", NS, "--sink-url", sink_url, "worker", "--burst"],
    )
    assert drained.exit_code == 0, drained.output
    with sink_from_url(sink_url) as sink:
        assert sink.count(NS) == 1000
        assert sink.count(NS, "audit_anomaly") == 0
    assert sum(raw.xlen(stream) for stream in streams) == 0
    assert all(raw.xinfo_groups(stream) for stream in streams)
    with Coordinator.from_url(redis_url, namespace=NS) as client:
        assert client.start_session("agent-0").fencing_token == 2  # writes work again
