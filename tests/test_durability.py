"""Durability mode (``wait_replicas``): each script is followed by WAIT on its connection.

Run against real replicas: a primary with one replica, and a 3-master cluster with a
replica per master. A call returns only once the replicas hold its change; when they do
not acknowledge in time the caller gets ReplicationTimeout carrying the outcome.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from coordinator import (
    AsyncCoordinator,
    ConflictError,
    Coordinator,
    CoordinatorUnavailable,
    EmbeddedRedis,
    InvalidInputError,
    ReplicationTimeout,
    Settings,
)
from coordinator.keys import KeySpace
from coordinator.local.cluster import EmbeddedCluster
from coordinator.local.sentinel import EmbeddedSentinel
from tests.helpers import AsyncAsSync, snapshot

#: Many processes (or many generated cases): Redis 6.2 and Valkey in CI (conftest).
pytestmark = pytest.mark.slow

FAST = {"wait_timeout": 0.3, "socket_timeout": 5, "retry_attempts": 1}


@pytest.fixture(scope="module")
def replicated(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedSentinel]:
    """A primary and one replica (no sentinels) of the session's binary."""
    folder = tmp_path_factory.mktemp("replicated")
    with EmbeddedSentinel(folder, replicas=1, sentinels=0, binary=redis_server.binary) as group:
        yield group


@pytest.fixture
def primary(replicated: EmbeddedSentinel) -> Iterator[EmbeddedRedis]:
    node = replicated.primary
    with contextlib.closing(node.client()) as r:
        r.flushall()
        r.config_resetstat()
    yield node
    for replica in replicated.replicas:
        replica.resume()
    replicated.wait_replicated()


def _replica_client(group: EmbeddedSentinel) -> redis.Redis:
    return group.replicas[0].client(decode_responses=True)


def test_each_change_is_on_the_replica_when_the_call_returns(
    make_client: Any, replicated: EmbeddedSentinel, primary: EmbeddedRedis
) -> None:
    client = make_client(url=primary.url, wait_replicas=1, **FAST)
    keys = KeySpace("test", 16)
    with contextlib.closing(_replica_client(replicated)) as replica:
        s = client.start_session("agent-1")
        # No polling: WAIT returned only after the replica acknowledged the change.
        assert replica.hget(keys.lease("agent-1"), "sid") == s.session_id
        client.set_current_project("agent-1", "a", s.session_id)
        assert replica.hget(keys.agent("agent-1"), "p") == "a"
        renewed = client.heartbeat_session(s.session_id)
        deadline = int(renewed.expires_at.timestamp() * 1000)
        assert int(replica.hget(keys.lease("agent-1"), "exp") or 0) == deadline
        assert client.end_session("agent-1", s.session_id)
        assert not replica.exists(keys.lease("agent-1"))
        assert replica.xlen(keys.stream(keys.shard_of("agent-1"))) == 3


def test_too_few_acknowledgements_raise_with_the_outcome(
    make_client: Any, replicated: EmbeddedSentinel, primary: EmbeddedRedis
) -> None:
    client = make_client(url=primary.url, wait_replicas=1, **FAST)
    s = client.start_session("agent-1")
    replicated.replicas[0].pause()
    with pytest.raises(ReplicationTimeout) as info:
        client.set_current_project("agent-1", "a", s.session_id, request_id="r-1")
    short = info.value
    assert (short.wanted, short.acknowledged) == (1, 0)
    assert short.maybe_applied is True
    # The write did happen on the primary; the caller gets its result.
    assert short.result is not None
    assert short.result.version == 1
    assert short.error is None
    with pytest.raises(ReplicationTimeout) as conflict:
        client.set_current_project("agent-1", "b", s.session_id, expected_version=7)
    assert isinstance(conflict.value.error, ConflictError)
    assert conflict.value.error.actual_version == 1
    assert conflict.value.result is None
    # Once the replica is back, retrying with the request id returns the stored result
    # (nothing written twice) and is acknowledged this time.
    replicated.replicas[0].resume()
    replicated.wait_replicated()
    again = client.set_current_project("agent-1", "a", s.session_id, request_id="r-1")
    assert again == short.result


def test_more_replicas_than_exist_is_reported(
    make_client: Any, replicated: EmbeddedSentinel, primary: EmbeddedRedis
) -> None:
    client = make_client(url=primary.url, wait_replicas=2, **FAST)
    with pytest.raises(ReplicationTimeout) as info:
        client.start_session("agent-1")
    assert (info.value.wanted, info.value.acknowledged) == (2, 1)
    assert info.value.result is not None
    assert info.value.result.fencing_token == 1


def test_durability_mode_costs_nothing_when_off(make_client: Any, primary: EmbeddedRedis) -> None:
    def waits() -> int:
        with contextlib.closing(primary.client(decode_responses=True)) as r:
            return int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))

    plain = make_client(url=primary.url)
    s = plain.start_session("agent-1")
    plain.set_current_project("agent-1", "a", s.session_id)
    plain.heartbeat_session(s.session_id)
    assert waits() == 0
    durable = make_client(url=primary.url, wait_replicas=1, **FAST)
    durable.set_current_project("agent-1", "b", s.session_id)
    durable.heartbeat_session(s.session_id)
    # One WAIT per state change (the namespace check at connect changes nothing).
    assert waits() == 2


def test_wait_timeout_must_be_shorter_than_the_socket_timeout() -> None:
    with pytest.raises(InvalidInputError, match="wait_timeout"):
        Settings(wait_replicas=1, wait_timeout=5, socket_timeout=5)
    assert Settings(wait_replicas=0, wait_timeout=9, socket_timeout=5).wait_timeout == 9


def test_a_primary_refusing_writes_without_replicas_is_retried_safely(
    make_client: Any, tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    with EmbeddedRedis(tmp_path / "r", port=0, binary=redis_server.binary) as server:
        client = make_client(url=server.url, retry_attempts=2, retry_backoff=0.01)
        s = client.start_session("agent-1")
        with contextlib.closing(server.client(decode_responses=True)) as r:
            r.config_set("min-replicas-to-write", 1)
            before = snapshot(r)
            with pytest.raises(CoordinatorUnavailable) as info:
                client.set_current_project("agent-1", "a", s.session_id)
            # NOREPLICAS rejects the script at its first write: it certainly did not run.
            assert info.value.maybe_applied is False
            assert "NOREPLICAS" in str(info.value)
            assert snapshot(r) == before
            r.config_set("min-replicas-to-write", 0)
        assert client.set_current_project("agent-1", "a", s.session_id).version == 1


# --- cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicated_cluster(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedCluster]:
    folder = tmp_path_factory.mktemp("replicated-cluster")
    with EmbeddedCluster(
        folder, replicas=1, binary=redis_server.binary, appendonly=False
    ) as cluster:
        yield cluster


@pytest.fixture
def cluster(replicated_cluster: EmbeddedCluster) -> Iterator[EmbeddedCluster]:
    replicated_cluster.flushall()
    yield replicated_cluster
    for node in replicated_cluster.nodes:
        node.resume()
    replicated_cluster.wait_healthy()


def _agent_on(cluster: EmbeddedCluster, master: EmbeddedRedis, namespace: str = "test") -> str:
    keys = KeySpace(namespace, 16)
    return next(
        agent
        for agent in (f"agent-{i}" for i in range(1000))
        if cluster.node_for_slot(key_slot(keys.agent(agent).encode())) is master
    )


def _replica_reader(cluster: EmbeddedCluster, master: EmbeddedRedis) -> redis.Redis:
    r = cluster.replica_of(master).client(decode_responses=True)
    r.execute_command("READONLY")  # a cluster replica serves reads only after READONLY
    return r


def test_cluster_changes_reach_each_masters_replica(
    make_client: Any, cluster: EmbeddedCluster
) -> None:
    client = make_client(url=cluster.url, wait_replicas=1, **FAST)
    keys = KeySpace("test", 16)
    for master in cluster.masters:
        agent = _agent_on(cluster, master)
        s = client.start_session(agent)
        client.set_current_project(agent, f"p-{agent}", s.session_id)
        with contextlib.closing(_replica_reader(cluster, master)) as r:
            assert r.hget(keys.agent(agent), "p") == f"p-{agent}"
    assert client.cluster is True


def test_cluster_replication_timeout_names_the_outcome(
    make_client: Any, cluster: EmbeddedCluster
) -> None:
    client = make_client(url=cluster.url, wait_replicas=1, **FAST)
    master = cluster.masters[1]
    agent = _agent_on(cluster, master)
    s = client.start_session(agent)
    cluster.replica_of(master).pause()
    with pytest.raises(ReplicationTimeout) as info:
        client.set_current_project(agent, "a", s.session_id)
    assert info.value.acknowledged == 0
    assert info.value.result is not None
    assert info.value.result.version == 1
    # Agents of the other masters are unaffected.
    other = _agent_on(cluster, cluster.masters[2])
    assert client.start_session(other).fencing_token == 1


def test_cluster_durable_writes_follow_moved_and_ask(
    make_client: Any, cluster: EmbeddedCluster
) -> None:
    client = make_client(url=cluster.url, wait_replicas=1, **FAST)
    keys = KeySpace("test", 16)
    source, target = cluster.masters[0], cluster.masters[1]
    agent = _agent_on(cluster, source)
    slot = key_slot(keys.agent(agent).encode())
    s = client.start_session(agent)  # the client now maps the slot to the source
    # MOVED: the slot (with its keys) now lives on the target.
    cluster.move_slot(slot, target)
    assert client.set_current_project(agent, "a", s.session_id).version == 1
    with contextlib.closing(_replica_reader(cluster, target)) as r:
        assert r.hget(keys.agent(agent), "p") == "a"
    # ASK: half-way through a migration, once the agent's keys have moved to the
    # importing node, the source redirects and the script runs there after ASKING.
    s2 = client.start_session(_agent_on(cluster, source))
    slot2 = key_slot(keys.agent(s2.agent_id).encode())
    fresh = next(
        a for a in (f"fresh-{i}" for i in range(5000)) if key_slot(keys.agent(a).encode()) == slot2
    )
    with contextlib.closing(source.client()) as src, contextlib.closing(target.client()) as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot2, "IMPORTING", cluster.node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot2, "MIGRATING", cluster.node_id(target))
        moving = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot2, 100)
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *moving)
        record = client.set_current_project(s2.agent_id, "b", s2.session_id)
        assert record.version == 1

        def on_target(*command: Any) -> Any:
            # The importing node serves the slot only to a connection that said ASKING.
            pipe = dst.pipeline(transaction=False)
            pipe.execute_command("ASKING")
            pipe.execute_command(*command)
            return pipe.execute()[1]

        assert on_target("HGET", keys.agent(s2.agent_id), "p") == b"b"

        # A new agent's keys exist on neither node yet: Redis answers TRYAGAIN to a
        # multi-key script in a migrating slot; it did not run, so nothing is unknown.
        def state() -> tuple[Any, ...]:
            count = ("CLUSTER", "COUNTKEYSINSLOT", slot2)
            stream = keys.stream(keys.shard_of(fresh))
            return (
                src.execute_command(*count),
                dst.execute_command(*count),
                on_target("XLEN", stream),
            )

        before = state()
        with pytest.raises(CoordinatorUnavailable) as info:
            client.start_session(fresh)
        assert info.value.maybe_applied is False
        assert state() == before
    cluster.move_slot(slot2, target)  # completes the migration
    assert client.start_session(fresh).fencing_token == 1
    cluster.move_slot(slot2, source)
    cluster.move_slot(slot, source)


def test_cluster_master_failover_is_followed(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    ride_through = {"retry_attempts": 60, "retry_backoff": 0.05, "retry_backoff_cap": 0.5}
    with EmbeddedCluster(
        tmp_path / "c", replicas=1, binary=redis_server.binary, appendonly=False,
        node_timeout_ms=2000,
    ) as cluster:  # fmt: skip
        plain = Coordinator.from_url(cluster.url, namespace="t", **ride_through)
        plain_async = AsyncAsSync(
            AsyncCoordinator.from_url(cluster.url, namespace="t", **ride_through)
        )
        durable = AsyncAsSync(
            AsyncCoordinator.from_url(
                cluster.url, namespace="t", wait_replicas=1, wait_timeout=0.3, **ride_through
            )
        )
        try:
            master = cluster.masters[1]
            agent = _agent_on(cluster, master, namespace="t")
            s = plain.start_session(agent)
            # Acknowledged by the master's replica before the master dies.
            assert durable.set_current_project(agent, "a", s.session_id).version == 1
            replica = cluster.replica_of(master)
            master.kill()
            # Retry-safe calls wait for the replica's promotion and reach it.
            assert plain_async.get_current_project(agent).version == 1
            assert plain.heartbeat_session(s.session_id).session_id == s.session_id
            slot = key_slot(KeySpace("t", 16).agent(agent).encode())
            assert cluster.node_for_slot(slot) is replica
            # Durability mode (direct connections to masters) follows too; the promoted
            # master has no replica left, so the change is applied but reported as not
            # acknowledged.
            with pytest.raises(ReplicationTimeout) as info:
                durable.set_current_project(agent, "b", s.session_id, request_id="r-1")
            assert info.value.acknowledged == 0
            assert info.value.result is not None
            assert info.value.result.version == 2
        finally:
            plain.close()
            plain_async.close()
            durable.close()
