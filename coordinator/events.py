"""Audit events as stored in the shard streams, and their decoding.

``lua/lib.lua`` (``audit()``) writes the fields in :data:`EVENT_FIELDS` order; an
empty string stands for None. The event's time is the millisecond part of its
stream id, so no field carries a timestamp.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from coordinator.models import AgentEvent, EventType
from coordinator.timestamps import ms_to_datetime, stream_id_ms
from coordinator.validation import decode_metadata

if TYPE_CHECKING:
    from coordinator.sinks.base import EventRow

#: Field order of every audit entry (must match ``audit()`` in lua/lib.lua).
EVENT_FIELDS: Final = (
    "event_type",
    "agent_id",
    "session_id",
    "fencing_token",
    "from_project",
    "to_project",
    "expected_version",
    "actual_version",
    "success",
    "error_message",
    "metadata",
)


def _opt_int(value: str | None) -> int | None:
    return int(value) if value else None


def decode_entry(shard: int, stream_id: str, fields: dict[str, Any]) -> AgentEvent:
    """Turn one stream entry into an :class:`AgentEvent`.

    Raises ``KeyError``/``ValueError`` (pydantic's ``ValidationError`` is one) for an
    entry that is not a well-formed event; the worker dead-letters those.
    """
    return AgentEvent(
        agent_id=fields["agent_id"],
        session_id=fields["session_id"] or None,
        event_type=fields["event_type"],
        from_project=fields["from_project"] or None,
        to_project=fields["to_project"] or None,
        expected_version=_opt_int(fields["expected_version"]),
        actual_version=_opt_int(fields["actual_version"]),
        success=fields["success"] == "1",
        error_message=fields["error_message"] or None,
        metadata=decode_metadata(fields["metadata"]),
        created_at=ms_to_datetime(stream_id_ms(stream_id)),
        fencing_token=_opt_int(fields["fencing_token"]),
        shard=shard,
        stream_id=stream_id,
    )


def matches(fields: dict[str, Any], agent_id: str | None, event_type: str | None) -> bool:
    """Cheap filter on raw fields, before decoding."""
    return (agent_id is None or fields.get("agent_id") == agent_id) and (
        event_type is None or fields.get("event_type") == event_type
    )


_EVENT_TYPES: Final = frozenset(t.value for t in EventType)
_FIELD_LIST: Final = list(EVENT_FIELDS)


def entry_row(
    namespace: str, shard: int, stream_id: str, fields: dict[str, Any] | list[Any]
) -> EventRow:
    """The sink row of one stream entry, checked without building a model.

    ``fields`` is a dict or the flat field/value list of a raw reply. The worker
    persists tens of thousands of entries a second; this is the only per-entry Python
    it runs. Raises ``KeyError``/``ValueError``/``TypeError`` for an entry that is not
    a well-formed event (the worker dead-letters it).
    """
    if type(fields) is list:
        if fields[0::2] == _FIELD_LIST:  # as audit() writes them: read by position
            values = fields[1::2]
        else:
            pairs = dict(zip(fields[0::2], fields[1::2], strict=True))
            values = [pairs[name] for name in EVENT_FIELDS]
    else:
        values = [fields[name] for name in EVENT_FIELDS]  # type: ignore[call-overload]
    (etype, agent, session, token, from_p, to_p, expected, actual, success, error,
     metadata) = values  # fmt: skip
    if etype not in _EVENT_TYPES:
        raise ValueError(f"unknown event type {etype!r}")
    if not agent:
        raise ValueError("empty agent_id")
    if success != "1" and success != "0":
        raise ValueError(f"bad success flag {success!r}")
    metadata = metadata or None
    if metadata is not None and type(json.loads(metadata)) is not dict:
        raise ValueError("metadata is not a JSON object")
    ms, _, seq = stream_id.partition("-")
    return (
        namespace,
        shard,
        stream_id,
        int(ms),
        int(seq),
        agent,
        session or None,
        etype,
        from_p or None,
        to_p or None,
        _opt_int(expected),
        _opt_int(actual),
        success == "1",
        error or None,
        metadata,
        _opt_int(token),
    )
