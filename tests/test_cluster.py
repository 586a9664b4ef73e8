"""Redis Cluster: detection, seeds, listings across masters, NOSCRIPT and resharding.

The behaviour suites (sessions, projects, events, the NOSCRIPT test, parts of
validation and failures) also run on the cluster through the ``cluster`` marker; this
module covers what only a cluster has.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from coordinator import ConfigurationError, Coordinator
from coordinator.keys import KeySpace
from coordinator.local.cluster import EmbeddedCluster
from coordinator.scripts import sources
from tests.helpers import crossslot_errors, stream_entries, wait_until

pytestmark = pytest.mark.cluster(only=True)


def _slot_of_agent(agent: str, namespace: str = "test", shards: int = 16) -> int:
    return key_slot(KeySpace(namespace, shards).lease(agent).encode())


def _keys_per_master(cluster: EmbeddedCluster) -> list[int]:
    counts = []
    for node in cluster.masters:
        with contextlib.closing(node.client()) as r:
            counts.append(int(r.dbsize()))
    return counts


def test_any_node_url_is_detected_as_a_cluster(
    make_client: Any, redis_server: EmbeddedCluster
) -> None:
    sessions = {}
    for node in redis_server.masters:
        client = make_client(url=node.url)
        agent = f"agent-{node.port}"
        sessions[agent] = client.start_session(agent)
        assert client.cluster is True
    # Every entry point sees the same cluster-wide state.
    other = make_client(url=redis_server.masters[-1].url)
    assert {lease.agent_id for lease in other.list_leases()} == set(sessions)


def test_explicit_cluster_mode(
    make_client: Any, redis_server: EmbeddedCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    forced = make_client(cluster=True)
    s = forced.start_session("agent-1")
    assert forced.cluster is True
    monkeypatch.setenv("COORDINATOR_REDIS_CLUSTER", "1")
    from_env = make_client()
    assert from_env.settings.cluster is True
    assert from_env.heartbeat_session(s.session_id).session_id == s.session_id


def test_forcing_single_node_mode_on_a_cluster_is_a_configuration_error(
    make_client: Any, redis_server: EmbeddedCluster
) -> None:
    client = make_client(cluster=False)
    # An agent whose shard lives on another master than the URL's: MOVED is not followed.
    first = redis_server.masters[0]
    agent = next(
        a
        for a in (f"agent-{i}" for i in range(100))
        if redis_server.node_for_slot(_slot_of_agent(a)) is not first
    )
    with pytest.raises(ConfigurationError, match="cluster=True"):
        client.start_session(agent)


def test_multi_seed_urls(make_client: Any, redis_server: EmbeddedCluster) -> None:
    client = make_client(url=redis_server.seeds_url)
    s = client.start_session("agent-1")
    assert client.cluster is True
    # Seeds are alternatives: an unreachable first seed does not matter.
    ports = [str(n.port) for n in redis_server.masters]
    dead_first = f"redis://127.0.0.1:1,127.0.0.1:{ports[1]},127.0.0.1:{ports[2]}/0"
    other = make_client(url=dead_first)
    assert other.get_current_project("agent-1") is None
    assert other.heartbeat_session(s.session_id).session_id == s.session_id


def test_listings_events_and_reaping_cover_every_master(
    client: Any, redis_server: EmbeddedCluster, raw: redis.RedisCluster
) -> None:
    agents = [f"agent-{i}" for i in range(48)]
    sessions = [client.start_session(a) for a in agents]
    for agent, s in zip(agents, sessions, strict=True):
        client.set_current_project(agent, f"p-{agent}", s.session_id)
    # The shards really are spread over all three masters.
    assert all(count > 0 for count in _keys_per_master(redis_server))
    assert {lease.agent_id for lease in client.list_leases()} == set(agents)
    assert len(list(client.iter_leases(page_size=3))) == len(agents)
    started = client.get_agent_events(event_type="session_started", limit=1000)
    assert {e.agent_id for e in started} == set(agents)
    assert len(client.get_agent_events(limit=1000)) == len(stream_entries(raw)) == 2 * len(agents)
    records = client.get_current_projects(agents)
    assert [r.project_name for r in records] == [f"p-{a}" for a in agents]

    short = [f"short-{i}" for i in range(24)]
    for agent in short:
        client.start_session(agent, ttl=0.2)
    wait_until(lambda: {lease.agent_id for lease in client.list_leases()} == set(agents))
    assert client.cleanup_expired_sessions() == len(short)
    expired = client.get_agent_events(event_type="session_expired", limit=1000)
    assert {e.agent_id for e in expired} == set(short)


def test_noscript_on_one_node_is_recovered(client: Any, redis_server: EmbeddedCluster) -> None:
    s = client.start_session("agent-1")
    owner = redis_server.node_for_slot(_slot_of_agent("agent-1"))
    sha = hashlib.sha1(sources()["set_project"].encode()).hexdigest()
    with contextlib.closing(owner.client()) as r:
        r.script_flush()
        assert r.script_exists(sha) == [False]
        assert client.set_current_project("agent-1", "a", s.session_id).version == 1
        assert r.script_exists(sha) == [True]


def test_clients_follow_a_slot_moved_to_another_master(
    make_client: Any, redis_server: EmbeddedCluster
) -> None:
    client = make_client()
    s = client.start_session("agent-1")
    client.set_current_project("agent-1", "a", s.session_id)
    slot = _slot_of_agent("agent-1")
    source = redis_server.node_for_slot(slot)
    target = next(m for m in redis_server.masters if m is not source)
    # The clients cached the old owner; a resharding moves the slot with its keys.
    redis_server.move_slot(slot, target)
    assert redis_server.node_for_slot(slot) is target
    # A write that is never retried by us still lands: MOVED means "not executed here".
    assert client.set_current_project("agent-1", "b", s.session_id).version == 2
    assert client.start_session("agent-1").fencing_token == s.fencing_token + 1
    with contextlib.closing(target.client(decode_responses=True)) as r:
        assert r.hget(KeySpace("test", 16).agent("agent-1"), "p") == "b"
    # Moving it back leaves the session's cluster as it was for later tests.
    redis_server.move_slot(slot, source)


def test_the_crossslot_check_sees_crossslot_errors(redis_server: EmbeddedCluster) -> None:
    # The per-test CROSSSLOT assertion in conftest must be able to fail.
    node = redis_server.masters[0]
    with contextlib.closing(node.client(decode_responses=True)) as r:
        keys = [k for k in (f"k{i}" for i in range(50)) if key_slot(k.encode()) < 5461][:2]
        before = crossslot_errors(redis_server)
        with pytest.raises(redis.ResponseError, match="same slot"):
            r.execute_command("MSET", keys[0], 1, keys[1], 2)
        assert crossslot_errors(redis_server) == before + 1
        r.config_resetstat()
    assert crossslot_errors(redis_server) == 0


def test_coordinator_repr_names_the_cluster_without_secrets(redis_server: EmbeddedCluster) -> None:
    url = redis_server.seeds_url.replace("redis://", "redis://ops:pw-secret-1@")
    c = Coordinator.from_url(url)
    assert "pw-secret-1" not in repr(c)
    assert str(redis_server.masters[1].port) in repr(c)
