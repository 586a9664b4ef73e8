"""Lease listings decoded in bulk: a Lease built from our scripts' fields without
validation is the validated Lease."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from coordinator.core import LEASE_FIELDS
from coordinator.listing import leases_from, trusted_lease
from coordinator.models import Lease
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


def test_lapsed_leases_are_left_out() -> None:
    lapsed = [None] * len(LEASE_FIELDS)
    (lease,) = leases_from(["agent-a", "agent-b"], [*FIELDS[0], *lapsed])
    assert lease == trusted_lease("agent-a", *FIELDS[0])
