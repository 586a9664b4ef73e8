"""Decoding lease listings in bulk: the replies of ``read_leases``.

A listing of 100,000 leases is decoded in Python, lease by lease, so this is where
its time goes. The values come from our own scripts (``start_session`` and
``heartbeat`` wrote them), so a :class:`~coordinator.models.Lease` is built without
running pydantic's validation: :func:`trusted_lease` stores exactly the values the
validator would have stored (the same types, the same fields set), so the result is
equal to, and serialises like, a validated one (``tests/test_listing.py`` proves it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from json import loads
from typing import Any, Final

from coordinator.models import Lease

#: Lease hash fields a listing reads, in this order (``LEASE_FIELDS`` in core).
FIELDS: Final = ("sid", "start", "hb", "exp", "ttl", "meta")
_WIDTH: Final = len(FIELDS)
_NAMES: Final = tuple(Lease.model_fields)
_new = object.__new__
_set = object.__setattr__
_fromtimestamp = datetime.fromtimestamp


def trusted_lease(
    agent: str, sid: str, start: str, heartbeat: str, deadline: str, ttl: str, meta: str | None
) -> Lease:
    """The :class:`Lease` of one agent's lease-hash fields (``FIELDS`` order), as
    written by our scripts: equal to ``Lease(...)`` of the same values, unvalidated."""
    lease = _new(Lease)
    _set(
        lease,
        "__dict__",
        {
            "session_id": sid,
            "agent_id": agent,
            "fencing_token": int(sid.partition("-")[0]),
            "started_at": _fromtimestamp(int(start) / 1000, UTC),
            "last_heartbeat": _fromtimestamp(int(heartbeat) / 1000, UTC),
            "expires_at": _fromtimestamp(int(deadline) / 1000, UTC),
            "ttl": int(ttl) / 1000,
            "metadata": _metadata(meta) if meta else None,
        },
    )
    _set(lease, "__pydantic_fields_set__", set(_NAMES))
    _set(lease, "__pydantic_extra__", None)
    _set(lease, "__pydantic_private__", None)
    return lease


def _metadata(raw: str) -> dict[str, Any]:
    # As validation.decode_metadata (and pydantic, which copies a dict it validates).
    value = loads(raw)
    return value if type(value) is dict else {"value": value}


def leases_from(agents: Sequence[str], reply: Sequence[Any]) -> list[Lease]:
    """The live leases of a ``read_leases`` reply (``FIELDS`` per agent, in order);
    an agent whose lease lapsed since the index was read is left out."""
    width = _WIDTH
    leases = []
    for i, agent in enumerate(agents):
        fields = reply[i * width : i * width + width]
        if fields[0]:
            leases.append(trusted_lease(agent, *fields))
    return leases
