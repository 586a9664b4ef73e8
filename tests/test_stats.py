"""``Coordinator.stats()``: the namespace snapshot behind ``coordinator status`` (both
shells, Redis 6.2 and 7, single node and cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from coordinator import EmbeddedRedis
from coordinator.constants import DEFAULT_CONSUMER_GROUP as GROUP
from coordinator.local.cluster import EmbeddedCluster
from coordinator.local.embedded import server_kind
from tests.helpers import wait_until

pytestmark = pytest.mark.cluster


def _simulate_worker(client: Any, raw: redis.Redis, agent: str, consumer: str = "w1") -> str:
    """Create the worker's group on the agent's stream, read one entry without acking
    it (a worker that crashed mid-batch) and register a liveness key."""
    stream = client.keys.stream(client.keys.shard_of(agent))
    raw.xgroup_create(stream, GROUP, id="0")
    raw.xreadgroup(GROUP, consumer, {stream: ">"}, count=1)
    liveness = {"consumer": consumer, "pid": 4242, "host": "box", "heartbeat_at": "x"}
    raw.set(f"test:worker:{consumer}", json.dumps(liveness), ex=15)
    return stream


def test_stats_name_the_server_kind_and_version(
    client: Any, redis_server: EmbeddedRedis | EmbeddedCluster
) -> None:
    stats = client.stats()
    binary = (
        redis_server.nodes[0].binary
        if isinstance(redis_server, EmbeddedCluster)
        else redis_server.binary
    )
    assert stats.server_kind == server_kind(binary)
    assert stats.server_version == ".".join(map(str, redis_server.version))
    # Valkey also reports the Redis version it is compatible with.
    assert stats.redis_version[0] in "67"


def test_stats_of_a_busy_namespace(client: Any, raw: redis.Redis) -> None:
    s = client.start_session("agent-a")
    client.set_current_project("agent-a", "p1", s.session_id)
    client.set_current_project("agent-a", "p2", s.session_id)
    client.start_session("agent-b")
    client.start_session("short", ttl=0.05)
    wait_until(lambda: len(client.list_leases()) == 2, timeout=5)
    stream = _simulate_worker(client, raw, "agent-a")
    shard = client.keys.shard_of("agent-a")
    first_id = raw.xrange(stream, count=1)[0][0]
    dead = client.keys.dead_letters(shard)
    raw.xadd(dead, {"entry": "poison"})
    raw.xadd(dead, {"entry": "poison"})

    stats = client.stats()
    assert stats.namespace == "test"
    assert stats.shards == 16
    assert stats.redis_version[0] in "67"  # Valkey: the Redis version it matches (7.2)
    assert stats.redis_mode in ("standalone", "cluster")
    assert stats.redis_nodes == (3 if stats.redis_mode == "cluster" else 1)
    assert (stats.active_leases, stats.expired_unreaped) == (2, 1)
    by_shard = {st.shard: st for st in stats.streams}
    mine = by_shard[shard]
    assert mine.length == 3  # session_started, project_set, project_switched
    assert mine.group
    assert mine.consumers == 1
    assert mine.last_delivered_id == first_id
    assert (mine.lag, mine.lag_exact) == (2, True)
    assert mine.pending == 1
    assert mine.oldest_pending_id == first_id
    assert mine.oldest_pending_age is not None
    assert 0 <= mine.oldest_pending_age < 60
    assert mine.oldest_pending_idle is not None
    assert 0 <= mine.oldest_pending_idle < 60
    assert mine.dead_letters == 2
    others = [st for st in stats.streams if st.shard != shard]
    assert all(not st.group and st.lag is None and st.pending == 0 for st in others)
    assert stats.stream_length == 5
    assert (stats.lag, stats.pending, stats.dead_letters) == (2, 1, 2)
    [worker] = stats.workers
    assert (worker.consumer, worker.pending) == ("w1", 1)
    assert (worker.info["pid"], worker.info["host"]) == (4242, "box")
    assert worker.ttl is not None
    assert 0 < worker.ttl <= 15
    assert worker.idle is not None
    assert 0 <= worker.idle < 60

    data = stats.to_json()
    json.dumps(data)  # plain JSON types only
    assert data["workers_alive"] == 1
    assert data["workers"][0]["consumer"] == "w1"
    assert data["streams"][shard]["oldest_pending_age_seconds"] == mine.oldest_pending_age


def test_lag_beyond_the_scan_limit_is_a_lower_bound_on_redis_6(
    client: Any, raw: redis.Redis
) -> None:
    s = client.start_session("agent-a")
    for i in range(5):
        client.set_current_project("agent-a", f"p{i}", s.session_id)
    _simulate_worker(client, raw, "agent-a")  # 6 entries, 1 delivered
    shard = client.keys.shard_of("agent-a")
    exact = client.stats().streams[shard]
    assert (exact.lag, exact.lag_exact) == (5, True)
    bounded = client.stats(lag_scan_limit=2).streams[shard]
    reports_lag = "lag" in raw.xinfo_groups(client.keys.stream(shard))[0]
    if bounded.lag_exact:  # Redis 7 and Valkey report the lag themselves
        assert reports_lag
        assert bounded.lag == 5
    else:  # Redis 6.2: counted up to the limit
        assert not reports_lag
        assert bounded.lag == 2


def test_lag_after_deletions_is_counted(client: Any, raw: redis.Redis) -> None:
    s = client.start_session("agent-a")
    for i in range(3):
        client.set_current_project("agent-a", f"p{i}", s.session_id)
    stream = _simulate_worker(client, raw, "agent-a")  # 4 entries, 1 delivered
    # A deleted undelivered entry: Redis 7 stops reporting the lag, so it is counted.
    raw.xdel(stream, raw.xrange(stream)[2][0])
    shard = client.keys.shard_of("agent-a")
    stats = client.stats().streams[shard]
    assert (stats.lag, stats.lag_exact, stats.length) == (2, True, 3)
    # Everything delivered and acknowledged: nothing lags, nothing is pending.
    delivered = raw.xreadgroup(GROUP, "w1", {stream: ">"})
    raw.xack(stream, GROUP, raw.xrange(stream, count=1)[0][0])
    raw.xack(stream, GROUP, *[entry_id for entry_id, _ in delivered[0][1]])
    caught_up = client.stats().streams[shard]
    assert (caught_up.lag, caught_up.pending, caught_up.oldest_pending_id) == (0, 0, None)


def test_empty_namespace(client: Any) -> None:
    stats = client.stats()
    assert (stats.active_leases, stats.stream_length, stats.lag, stats.pending) == (0, 0, 0, 0)
    assert stats.workers == ()
    assert all(not st.group for st in stats.streams)
    assert stats.oldest_pending_age is None


def test_a_worker_is_a_consumer_with_a_liveness_key(client: Any, raw: redis.Redis) -> None:
    client.start_session("agent-a")
    client.start_session("agent-b")
    stream = _simulate_worker(client, raw, "agent-a", consumer="w1")
    other = client.keys.stream(client.keys.shard_of("agent-b"))
    if other != stream:
        raw.xgroup_create(other, GROUP, id="0")
    raw.xreadgroup(GROUP, "w1", {other: ">"})  # the same worker on a second shard
    raw.xreadgroup(GROUP, "crashed", {stream: ">"})  # a consumer whose key expired
    raw.set("test:worker:unregistered", "{}", ex=15)  # a key without a consumer yet
    raw.set("other:worker:w1", "{}", ex=15)  # another namespace's worker
    raw.persist("test:worker:w1")  # no TTL left to report
    raw.set("test:worker:crashed-too", "not json", ex=15)
    raw.xgroup_createconsumer(stream, GROUP, "crashed-too")
    workers = {w.consumer: w for w in client.stats().workers}
    assert workers["crashed-too"].info == {"raw": "not json"}
    worker = workers.pop("w1")
    assert list(workers) == ["crashed-too"]
    assert (worker.consumer, worker.ttl) == ("w1", None)
    assert worker.pending == (1 if other == stream else 2)


@pytest.mark.single_node
def test_stats_through_sentinel(redis_server: Any, tmp_path: Any, make_coordinator: Any) -> None:
    from coordinator.local.sentinel import EmbeddedSentinel

    with EmbeddedSentinel(tmp_path / "s", binary=redis_server.binary) as group:
        client = make_coordinator(group.url)
        client.start_session("agent-1")
        stats = client.stats()
        assert stats.redis_mode == "sentinel"
        assert stats.replicas is not None
        assert stats.replicas >= 1
        assert stats.active_leases == 1
        assert "sentinel" in stats.to_json()["redis_url"]


@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_a_stream_deleted_between_round_trips(client: Any, raw: redis.Redis, step: int) -> None:
    # status while a stream goes away (an operator's DEL, a flush): it counts as not
    # there, instead of failing with UnexpectedReply on the next round trip's error.
    from coordinator.stats import stats_plan

    client.start_session("agent-1")
    client.start_session("agent-2")
    stream = _simulate_worker(client, raw, "agent-1")
    mode = "cluster" if client.cluster else "standalone"

    def deleting_after(step: int) -> Any:
        inner = stats_plan(client.keys, mode=mode, redis_url="x")
        reply, sent = None, 0
        while True:
            try:
                call = inner.send(reply)
            except StopIteration as done:
                return done.value
            if sent == step:
                raw.delete(stream)
            reply = yield call
            sent += 1

    stats = client.execute(deleting_after(step))
    shard = client.keys.shard_of("agent-1")
    assert stats.streams[shard].length in (0, 1)
    assert stats.active_leases == 2
