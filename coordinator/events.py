"""Audit events as stored in the shard streams, and their decoding.

``lua/lib.lua`` (``audit()``) writes the fields in :data:`EVENT_FIELDS` order; an
empty string stands for None. The event's time is the millisecond part of its
stream id, so no field carries a timestamp.
"""

from __future__ import annotations

from typing import Any, Final

from coordinator.models import AgentEvent
from coordinator.timestamps import ms_to_datetime, stream_id_ms
from coordinator.validation import decode_metadata

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
