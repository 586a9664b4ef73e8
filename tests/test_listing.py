"""Lease listings decoded in bulk: a Lease built from our scripts' fields without
validation is the validated Lease, and ``scan_leases`` reads one page of a shard."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
import redis

from coordinator.core import LEASE_FIELDS
from coordinator.listing import leases_from, scanned_leases, trusted_lease
from coordinator.models import Lease
from coordinator.scripts import sources
from coordinator.timestamps import ms_to_datetime
from coordinator.validation import decode_metadata

pytestmark = pytest.mark.cluster

FIELDS = [
    ("7-0123456789abcdef@agent-a", "1765000000123", "1765000001999", "1765000031999", "30000",
     '{"host": "h", "n": [1, 2]}'),
    ("1-00@a", "0", "1", "999", "1", None),
    ("12345678901-ff@x", "4102444799999", "4102444799999", "4102444800000", "3600000", "[1]"),
    ("3-ab@b", "1765000000500", "1765000000501", "1765000000502", "250", '"text"'),
]  # fmt: skip


@pytest.mark.parametrize("fields", FIELDS)
def test_a_trusted_lease_is_the_validated_lease(fields: tuple[Any, ...]) -> None:
    sid, start, hb, exp, ttl, meta = fields
    validated = Lease(
        session_id=sid,
        agent_id="agent-a",
        fencing_token=int(sid.split("-")[0]),
        started_at=ms_to_datetime(start),
        last_heartbeat=ms_to_datetime(hb),
        expires_at=ms_to_datetime(exp),
        ttl=int(ttl) / 1000,
        metadata=decode_metadata(meta),
    )
    fast = trusted_lease("agent-a", *fields)
    assert fast == validated
    assert validated == fast
    assert type(fast) is Lease
    assert fast.model_dump() == validated.model_dump()
    assert fast.model_dump_json() == validated.model_dump_json()
    assert json.loads(fast.model_dump_json()) == json.loads(validated.model_dump_json())
    assert fast.model_fields_set == validated.model_fields_set
    assert repr(fast) == repr(validated)
    if meta is None:  # frozen: hashable by value (a metadata dict is not hashable)
        assert hash(fast) == hash(validated)
    assert pickle.loads(pickle.dumps(fast)) == validated
    assert fast.model_copy(update={"ttl": 1.0}) == validated.model_copy(update={"ttl": 1.0})
    with pytest.raises(Exception, match="frozen"):
        fast.ttl = 2.0  # type: ignore[misc]
    assert Lease.model_validate(fast.model_dump()) == fast


def test_lapsed_and_repeated_members_are_left_out() -> None:
    live = ["agent-a", *FIELDS[0]]
    other = ["agent-b", *FIELDS[1]]
    seen: set[str] = {"agent-b"}
    cursor, leases = scanned_leases(["17", *live, *other], seen)
    assert cursor == 17
    assert [lease.agent_id for lease in leases] == ["agent-a"]
    assert seen == {"agent-a", "agent-b"}
    lapsed = [None] * len(LEASE_FIELDS)
    (lease,) = leases_from(["agent-a", "agent-b"], [*FIELDS[0], *lapsed])
    assert lease == trusted_lease("agent-a", *FIELDS[0])


def test_scan_leases_reads_only_keys_of_the_index_slot(client: Any, raw: redis.Redis) -> None:
    client.start_session("agent-1", metadata={"k": 1})
    keys = client.keys
    shard = next(s for s in range(keys.shards) if raw.zcard(keys.index(s)))
    script = raw.register_script(sources()["scan_leases"])
    index = keys.index(shard)
    reply = script(keys=[index], args=[0, 500, keys.lease_in(shard, ""), *LEASE_FIELDS])
    cursor, (lease,) = scanned_leases(reply, set())
    assert cursor == 0
    assert lease == client.list_leases("agent-1")[0]
    # A prefix outside the index's slot is refused before anything is read.
    foreign = keys.lease_in(shard, "").replace("}", "x}", 1)
    with pytest.raises(redis.ResponseError, match="not in the index slot"):
        script(keys=[index], args=[0, 500, foreign, *LEASE_FIELDS])
    # A member whose lease hash is gone (lapsed, not yet reaped) is not listed.
    raw.delete(keys.lease_in(shard, "agent-1"))
    assert script(keys=[index], args=[0, 500, keys.lease_in(shard, ""), *LEASE_FIELDS]) == ["0"]
    assert client.list_leases() == []
