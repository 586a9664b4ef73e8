"""Audit events as stored in the shard streams, and their decoding.

``lua/lib.lua`` (``audit()``) writes the fields in :data:`EVENT_FIELDS` order; an
empty string stands for None. The event's time is the millisecond part of its
stream id, so no field carries a timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, TypeAlias

from coordinator.models import AgentEvent, EventType
from coordinator.timestamps import ms_to_datetime, stream_id_key

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


#: Imported history (``coordinator migrate-legacy``) has no stream: it is stored under
#: this shard, with ``stream_id`` ``<created_ms>-<legacy id>``.
LEGACY_SHARD: Final = -1

#: Columns written by :meth:`Sink.write`, in :data:`EventRow` order (``created_at`` is
#: computed by the database from ``created_ms``).
ROW_COLUMNS: Final = (
    "namespace",
    "shard",
    "stream_id",
    "created_ms",
    "stream_seq",
    "agent_id",
    "session_id",
    "event_type",
    "from_project",
    "to_project",
    "expected_version",
    "actual_version",
    "success",
    "error_message",
    "metadata",
    "fencing_token",
)
#: namespace, shard, stream_id, created_ms, stream_seq, agent_id, session_id,
#: event_type, from_project, to_project, expected_version, actual_version, success,
#: error_message, metadata (JSON text or None), fencing_token.
EventRow: TypeAlias = tuple[
    str, int, str, int, int, str, "str | None", str, "str | None", "str | None",
    "int | None", "int | None", bool, "str | None", "str | None", "int | None",
]  # fmt: skip

#: Positions in an :data:`EventRow`. Rows stay plain tuples on the hot path (the
#: worker builds tens of thousands a second); these name the slots for readers.
ROW_NAMESPACE: Final = 0
ROW_SHARD: Final = 1
ROW_STREAM_ID: Final = 2
ROW_CREATED_MS: Final = 3
ROW_STREAM_SEQ: Final = 4
ROW_AGENT_ID: Final = 5
ROW_SESSION_ID: Final = 6
ROW_EVENT_TYPE: Final = 7
ROW_FROM_PROJECT: Final = 8
ROW_TO_PROJECT: Final = 9
ROW_EXPECTED_VERSION: Final = 10
ROW_ACTUAL_VERSION: Final = 11
ROW_SUCCESS: Final = 12
ROW_ERROR_MESSAGE: Final = 13
ROW_METADATA: Final = 14
ROW_FENCING_TOKEN: Final = 15


def event_row(namespace: str, event: AgentEvent) -> EventRow:
    """The row of an already decoded event (the worker builds rows straight from
    stream fields instead, see :func:`coordinator.events.entry_row`)."""
    ms, seq = stream_id_key(event.stream_id)
    return (
        namespace,
        event.shard,
        event.stream_id,
        ms,
        seq,
        event.agent_id,
        event.session_id,
        event.event_type.value,
        event.from_project,
        event.to_project,
        event.expected_version,
        event.actual_version,
        event.success,
        event.error_message,
        None if event.metadata is None else json.dumps(event.metadata, separators=(",", ":")),
        event.fencing_token,
    )


def row_event(row: Sequence[Any]) -> AgentEvent:
    """The event of a row in :data:`ROW_COLUMNS` order without its namespace (as read
    back from the table, or an :data:`EventRow` minus its first item)."""
    (shard, stream_id, created_ms, _seq, agent, session, etype, from_p, to_p, expected,
     actual, success, error, metadata, token) = row  # fmt: skip
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return AgentEvent(
        agent_id=agent,
        session_id=session,
        event_type=etype,
        from_project=from_p,
        to_project=to_p,
        expected_version=expected,
        actual_version=actual,
        success=bool(success),
        error_message=error,
        metadata=metadata,
        created_at=ms_to_datetime(created_ms),
        fencing_token=token,
        shard=shard,
        stream_id=stream_id,
    )


def _opt_int(value: str | None) -> int | None:
    return int(value) if value else None


def decode_entry(shard: int, stream_id: str, fields: dict[str, Any]) -> AgentEvent:
    """Turn one stream entry into an :class:`AgentEvent` (checked as the worker checks
    it: :func:`entry_row`). Raises ``KeyError``/``ValueError``/``TypeError`` for an entry
    that is not a well-formed event; the worker dead-letters those."""
    return row_event(entry_row("", shard, stream_id, fields)[1:])


def matching_events(
    shard: int,
    entries: Sequence[tuple[str, dict[str, Any]]],
    agent_id: str | None,
    event_type: str | None,
) -> list[AgentEvent]:
    """The entries of one shard that match the filters, decoded. An entry that is not a
    well-formed event is left out: readers must not fail on what the worker is about to
    dead-letter."""
    found = []
    for stream_id, fields in entries:
        if matches(fields, agent_id, event_type):
            try:
                found.append(decode_entry(shard, stream_id, fields))
            except (KeyError, ValueError, TypeError):
                continue
    return found


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
    ms, seq = stream_id_key(stream_id)
    return (
        namespace,
        shard,
        stream_id,
        ms,
        seq,
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
