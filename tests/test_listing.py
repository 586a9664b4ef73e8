"""Lease listings decoded in bulk: a Lease built from our scripts' fields without
validation is the validated Lease, and the pipelined listing of every shard returns
exactly the leases that reading each agent's lease on its own returns."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from coordinator.calls import Ahead, Collect
from coordinator.keys import KeySpace
from coordinator.listing import FIELDS as LEASE_FIELDS
from coordinator.listing import SHARDS_IN_FLIGHT, leases_from, leases_plan, trusted_lease
from coordinator.models import Lease
from coordinator.scripts import digest, sources
from coordinator.timestamps import ms_to_datetime
from coordinator.validation import decode_metadata
from tests.helpers import wait_until

pytestmark = pytest.mark.cluster

FIELDS = [
    ("7-0123456789abcdef@agent-a", "1765000000123", "1765000001999", "1765000031999", "30000",
     '{"host": "h", "n": [1, 2]}'),
    ("1-00@a", "0", "1", "999", "1", None),
    ("12345678901-ff@x", "4102444799999", "4102444799999", "4102444800000", "3600000", "[1]"),
    ("3-ab@b", "1765000000500", "1765000000501", "1765000000502", "250", '"text"'),
    ("4-ab@b", "1765000000500", "1765000009999", "1765000039999", "30000", None),
    ("5-ab@b", "1765000000500", "1765000009999", "1765000039999", "30000", '{"a":\n"b"}'),
    ("6-ab@b", "3999999999000", "3999999999998", "4000000029998", "30000", None),
    ("7-ab@b", "1765000000000", "1765000000000", "1765000000000", "0", None),
    ("8-ab@b", "1765000009999", "1765000009999", "1765000000000", "30000", None),
    ("9-ab@b", "999", "1001", "1000", "30000", "{}"),
]  # fmt: skip


def validated_lease(agent: str, fields: Sequence[Any]) -> Lease:
    """The Lease of one agent's lease-hash fields through pydantic's validation (the
    oracle: independent of listing.py's decoding)."""
    sid, start, hb, exp, ttl, meta = fields
    return Lease(
        session_id=sid,
        agent_id=agent,
        fencing_token=int(sid.split("-")[0]),
        started_at=ms_to_datetime(start),
        last_heartbeat=ms_to_datetime(hb),
        expires_at=ms_to_datetime(exp),
        ttl=int(ttl) / 1000,
        metadata=decode_metadata(meta),
    )


@pytest.mark.parametrize("fields", FIELDS)
def test_a_trusted_lease_is_the_validated_lease(fields: tuple[Any, ...]) -> None:
    validated = validated_lease("agent-a", fields)
    trusted_lease("agent-a", *fields)  # the second one adds a known gap to a datetime
    fast = trusted_lease("agent-a", *fields)
    assert fast == validated
    assert validated == fast
    assert type(fast) is Lease
    assert fast.model_dump() == validated.model_dump()
    assert fast.model_dump_json() == validated.model_dump_json()
    assert json.loads(fast.model_dump_json()) == json.loads(validated.model_dump_json())
    assert fast.model_fields_set == validated.model_fields_set
    assert repr(fast) == repr(validated)
    if fields[5] is None:  # frozen: hashable by value (a metadata dict is not hashable)
        assert hash(fast) == hash(validated)
    assert pickle.loads(pickle.dumps(fast)) == validated
    assert fast.model_copy(update={"ttl": 1.0}) == validated.model_copy(update={"ttl": 1.0})
    with pytest.raises(Exception, match="frozen"):
        fast.ttl = 2.0  # type: ignore[misc]
    assert Lease.model_validate(fast.model_dump()) == fast


def packed(fields: tuple[Any, ...]) -> str:
    """A lease as ``read_leases`` returns it."""
    return "\n".join(value or "" for value in fields)


def test_lapsed_leases_are_left_out() -> None:
    (lease,) = leases_from(["agent-a", "agent-b"], [packed(FIELDS[0]), None])
    assert lease == trusted_lease("agent-a", *FIELDS[0])


def test_only_the_metadata_may_hold_a_newline() -> None:
    (lease,) = leases_from(["agent-a"], [packed(FIELDS[5])])
    assert lease.metadata == {"a": "b"}
    assert lease == trusted_lease("agent-a", *FIELDS[5])


def test_the_digest_is_the_sha_redis_py_runs_the_script_by() -> None:
    script = redis.Redis().register_script(sources()["read_leases"])
    assert digest("read_leases") == script.sha


# --- against real servers (and clusters) --------------------------------------------------


def one_by_one(client: Any, raw: redis.Redis, agents: list[str]) -> list[Lease]:
    """Each agent's lease read on its own: HMGET of its hash and pydantic's validation
    (not ``client.list_leases(agent)``, which builds it with the listing's decoder)."""
    leases = []
    for agent in agents:
        fields = raw.hmget(client.keys.lease(agent), *LEASE_FIELDS)
        if fields[0] is not None:
            leases.append(validated_lease(agent, fields))
    return leases


def by_agent(leases: list[Lease]) -> list[Lease]:
    ids = [lease.agent_id for lease in leases]
    assert len(ids) == len(set(ids)), "a lease listed twice"
    return sorted(leases, key=lambda lease: lease.agent_id)


def test_the_listing_is_the_leases_read_one_by_one(client: Any, raw: redis.Redis) -> None:
    agents = [f"agent-{i}" for i in range(120)] + ["агент 🤖", "a b"]
    metadata: list[dict[str, Any] | None] = [
        None, {"host": "h"}, {"nested": {"x": [1, 2.5, None]}, "note": "a\nb\u0000"}, {},
    ]  # fmt: skip
    sessions = {}
    for i, agent in enumerate(agents):
        sessions[agent] = client.start_session(agent, metadata[i % 4], ttl=30 + i % 3)
    for agent in agents[::5]:
        client.heartbeat_session(sessions[agent].session_id)
    expected = one_by_one(client, raw, agents)
    assert len(expected) == len(agents)
    for listing in (client.list_leases(), list(client.iter_leases(page_size=1)),
                    list(client.iter_leases(page_size=7))):  # fmt: skip
        assert by_agent(listing) == by_agent(expected)
        assert [x.model_dump_json() for x in by_agent(listing)] == [
            x.model_dump_json() for x in by_agent(expected)
        ]
    beat = {lease.agent_id: lease for lease in client.list_leases()}[agents[5]]
    assert beat.last_heartbeat > beat.started_at


def test_an_empty_namespace_lists_nothing(client: Any) -> None:
    assert client.list_leases() == []
    assert list(client.iter_leases(page_size=1)) == []


def test_leases_that_lapsed_but_await_the_reaper_are_left_out(
    client: Any, raw: redis.Redis
) -> None:
    live = [f"live-{i}" for i in range(20)]
    lapsed = [f"lapsed-{i}" for i in range(20)]
    for agent in live:
        client.start_session(agent, {"n": 1})
    for agent in lapsed:
        client.start_session(agent, ttl=0.05)
    keys = client.keys
    wait_until(lambda: not any(raw.exists(keys.lease(a)) for a in lapsed))
    # Still in the index: nothing reaped them.
    assert all(raw.zscore(keys.agent_keys(a).index, a) is not None for a in lapsed)
    assert by_agent(client.list_leases()) == by_agent(one_by_one(client, raw, live))
    assert client.cleanup_expired_sessions() == len(lapsed)
    assert by_agent(client.list_leases()) == by_agent(one_by_one(client, raw, live))


def test_more_shards_than_are_walked_at_once(make_client: Any, raw: redis.Redis) -> None:
    client = make_client(namespace="many", shards=4 * SHARDS_IN_FLIGHT + 3)
    agents = [f"agent-{i}" for i in range(300)]
    for agent in agents:
        client.start_session(agent)
    expected = by_agent(one_by_one(client, raw, agents))
    assert by_agent(client.list_leases()) == expected
    assert by_agent(list(client.iter_leases(page_size=2))) == expected


def test_a_listing_abandoned_half_way_leaves_the_client_working(make_client: Any) -> None:
    # iter_leases starts each round trip before the caller takes the page before it:
    # a caller that stops early leaves one in flight, which must harm nothing.
    client = make_client(namespace="abandon", shards=4)
    for i in range(40):
        client.start_session(f"agent-{i}")
    for _ in range(3):
        first = next(iter(client.iter_leases(page_size=2)))
        assert first.agent_id.startswith("agent-")
    assert len(client.list_leases()) == 40
    client.close()


@pytest.mark.single_node  # a client of the test's own, one node
# Python 3.12 warns that forking a process with threads may deadlock: what this tests.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_lists_leases_too(redis_url: str) -> None:
    # The synchronous client starts each listing round trip in a thread of a shared
    # pool; a child forked after a listing (a pre-forking server, say) must not wait
    # on the parent's threads, which it does not have.
    import multiprocessing

    from coordinator import Coordinator

    client = Coordinator.from_url(redis_url, namespace="fork")
    for i in range(20):
        client.start_session(f"agent-{i}")
    assert len(client.list_leases()) == 20

    def child() -> None:
        forked = Coordinator.from_url(redis_url, namespace="fork")
        assert len(forked.list_leases()) == 20
        forked.close()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(60)
    alive = process.is_alive()
    if alive:
        process.kill()
        process.join()
    client.close()
    assert not alive, "the forked child's listing hung"
    assert process.exitcode == 0


def test_a_flushed_script_cache_is_reloaded_mid_listing(client: Any, raw: redis.Redis) -> None:
    agents = [f"agent-{i}" for i in range(50)]
    for agent in agents:
        client.start_session(agent)
    expected = by_agent(one_by_one(client, raw, agents))
    leases = client.iter_leases(page_size=2)
    first = next(leases)
    raw.script_flush()
    assert by_agent([first, *leases]) == expected


@pytest.mark.parametrize(
    "raw", ['{"a": 1}', ' {"a": 1}', '{"a": 1} ', "[1]", '"x"', "1", "null", '{"k": "\\n"}']
)
def test_metadata_is_decoded_as_json_loads_does(raw: str) -> None:
    fields = ("1-00@a", "0", "1", "999", "1", raw)
    assert trusted_lease("a", *fields).metadata == decode_metadata(raw)


def test_metadata_that_is_not_json_fails_as_json_loads_does() -> None:
    with pytest.raises(json.JSONDecodeError):
        trusted_lease("a", "1-00@a", "0", "1", "999", "1", '{"a": 1} x')


def test_records_read_together_are_the_records_read_one_by_one(
    make_client: Any, raw: redis.Redis
) -> None:
    client = make_client(namespace="records", shards=2 * SHARDS_IN_FLIGHT)
    agents = [f"agent-{i}" for i in range(80)]
    for i, agent in enumerate(agents[:60]):
        s = client.start_session(agent)
        client.set_current_project(agent, f"proj {i} ✓", s.session_id)
        if i % 3 == 0:
            client.set_current_project(agent, None, s.session_id)  # cleared, version 2
        if i % 4 == 0:
            client.end_session(agent, s.session_id)
    asked = [*agents, agents[0], "never-seen", agents[59]]
    expected = [client.get_current_project(agent) for agent in asked]
    assert sum(record is None for record in expected) == 21
    assert client.get_current_projects(asked) == expected
    assert client.get_current_projects([]) == []
    raw.script_flush()
    assert client.get_current_projects(asked) == expected


def test_a_member_zscan_repeats_is_read_once() -> None:
    keys = KeySpace("t", 1)
    plan = leases_plan(keys, 2)

    def ahead(step: Any) -> Any:  # the plan starts a round trip, then collects it
        assert isinstance(step, Ahead)
        collect = plan.send("handle")
        assert isinstance(collect, Collect)
        assert collect.handle == "handle"
        return step.call

    (scan,) = ahead(plan.send(None)).commands
    assert (scan.method, scan.args) == ("zscan", (keys.index(0), 0))
    first = [("agent-a", 1.0), ("agent-b", 2.0)]
    read, scan = ahead(plan.send([(7, first)])).commands
    assert read.args[1:] == (2, keys.lease_in(0, "agent-a"), keys.lease_in(0, "agent-b"))
    assert scan.args == (keys.index(0), 7)
    a, b = (
        packed((f"{n}-00@agent-{x}", "5", "5", "9", "4", None)) for n, x in ((1, "a"), (2, "b"))
    )
    # The next round trip (agent-c's read) starts before agent-a and b are decoded.
    step = plan.send([[a, b], (0, [("agent-b", 2.0), ("agent-c", 3.0)])])
    assert isinstance(step, Ahead)
    (read,) = step.call.commands  # type: ignore[union-attr]
    assert read.args[1:] == (1, keys.lease_in(0, "agent-c"))
    emitted = plan.send("handle")
    assert [lease.agent_id for lease in emitted.items] == ["agent-a", "agent-b"]  # type: ignore[union-attr]
    assert isinstance(plan.send(None), Collect)
    with pytest.raises(StopIteration):  # agent-c lapsed meanwhile: nothing more
        plan.send([[None]])


def test_no_more_than_shards_in_flight_are_walked_at_once() -> None:
    # Every shard's index goes on for three pages of nothing: at no round trip are
    # more than SHARDS_IN_FLIGHT shards scanned, and every shard is walked to its end.
    shards = 2 * SHARDS_IN_FLIGHT + 5
    keys = KeySpace("t", shards)
    plan = leases_plan(keys, 10)
    left = dict.fromkeys(range(shards), 3)
    by_key = {keys.index(s): s for s in range(shards)}
    step = plan.send(None)
    while True:
        assert isinstance(step, Ahead)
        scans = step.call.commands  # type: ignore[union-attr]
        assert 0 < len(scans) <= SHARDS_IN_FLIGHT
        replies = []
        for scan in scans:
            shard = by_key[scan.args[0]]
            left[shard] -= 1
            replies.append((left[shard] or 0, []))
        assert isinstance(plan.send("handle"), Collect)
        try:
            step = plan.send(replies)
        except StopIteration:
            break
    assert set(left.values()) == {0}
