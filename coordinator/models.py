"""Public data models (pydantic v2, immutable).

Timestamps are timezone-aware UTC datetimes taken from the Redis server clock
(``TIME`` inside scripts, or the millisecond part of an audit stream id).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

from coordinator.timestamps import ms_to_datetime, stream_id_ms


class EventType(StrEnum):
    """Kinds of audit events. The first five are the original's names."""

    SESSION_STARTED = "session_started"
    PROJECT_SET = "project_set"
    #: A write that changed a non-empty project to a different one.
    PROJECT_SWITCHED = "project_switched"
    #: A write rejected because ``expected_version`` did not match.
    CONFLICT_DETECTED = "conflict_detected"
    SESSION_ENDED = "session_ended"
    #: ``project_name=None``: the project was cleared (still a versioned write).
    PROJECT_CLEARED = "project_cleared"
    #: The lease's TTL ran out without a heartbeat (emitted by the reaper).
    SESSION_EXPIRED = "session_expired"
    #: An operator revoked the session; ``error_message`` holds the reason.
    SESSION_REVOKED = "session_revoked"
    #: A new session of the same agent replaced a live one.
    SESSION_SUPERSEDED = "session_superseded"
    #: ``start_session(exclusive=True)`` refused because a live session exists.
    SESSION_REFUSED = "session_refused"
    #: A write from a dead, superseded, revoked or foreign session; ``error_message``
    #: holds the reason.
    WRITE_REJECTED = "write_rejected"
    #: Written by the worker when the persisted audit shows a version or fencing-token
    #: regression (possible after a failover that lost acknowledged writes).
    AUDIT_ANOMALY = "audit_anomaly"
    #: Recorded by an application through ``coordinator.compat``'s ``log_agent_event``;
    #: ``metadata["logged_type"]`` holds the application's own event type. Changes nothing.
    APP_EVENT = "app_event"
    #: A project record imported from the original by ``coordinator migrate-legacy``;
    #: ``metadata`` names the source and the original row.
    PROJECT_IMPORTED = "project_imported"
    #: Resources reserved; ``metadata`` holds scope, reservation id, resources, mode,
    #: the scope's fencing token and the deadline (ms).
    RESERVATION_GRANTED = "reservation_granted"
    #: A reservation refused; ``metadata["holders"]`` lists the conflicting holders.
    RESERVATION_REFUSED = "reservation_refused"
    #: Released by its holder, an operator (``error_message`` holds the reason) or
    #: because its session ended, was revoked or was superseded.
    RESERVATION_RELEASED = "reservation_released"
    #: The reservation's TTL, or its session's lease, ran out.
    RESERVATION_EXPIRED = "reservation_expired"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Session(_Model):
    """A session held by an agent: a lease with a TTL, renewed by heartbeats."""

    session_id: str
    agent_id: str
    #: Strictly increasing per agent, forever; a write carries the token of its session.
    fencing_token: int
    started_at: datetime
    last_heartbeat: datetime
    expires_at: datetime
    #: Lease length in seconds; each heartbeat moves ``expires_at`` this far ahead.
    ttl: float
    metadata: dict[str, Any] | None = None


class Lease(Session):
    """A live lease as listed by operators (same fields as :class:`Session`)."""


class AgentProject(_Model):
    """The versioned record of which project an agent is working on."""

    # updated_at is derived (see below): accept it back from model_dump() and ignore it.
    model_config = ConfigDict(frozen=True, extra="ignore")

    agent_id: str
    #: None after the project was cleared (the record and its version remain).
    project_name: str | None
    #: Increases by exactly one per successful write; never goes backwards.
    version: int
    #: The session that made the last write.
    session_id: str | None
    updated_by: str
    #: Stream id (``<ms>-<seq>``) of the audit event written with the last change, in
    #: the agent's shard stream. Records imported from the original carry ``<ms>-0``.
    event_id: str
    #: Fencing token of the session that made the last write.
    fencing_token: int | None = None

    # A property, not a stored field: building a datetime costs more than the rest of
    # decoding a write's reply, and most callers never read it.
    @computed_field  # type: ignore[prop-decorator]
    @property
    def updated_at(self) -> datetime:
        """Server time of the last write: the millisecond part of ``event_id``."""
        return ms_to_datetime(stream_id_ms(self.event_id))


class AgentEvent(_Model):
    """One audit event. Field names follow the original ``agent_project_events`` table."""

    agent_id: str
    session_id: str | None
    event_type: EventType
    from_project: str | None = None
    to_project: str | None = None
    expected_version: int | None = None
    actual_version: int | None = None
    success: bool
    error_message: str | None = None
    metadata: dict[str, Any] | None = None
    #: Server time of the event (the millisecond part of its stream id).
    created_at: datetime
    fencing_token: int | None = None
    #: Identity of the event: its shard and its id in that shard's audit stream.
    shard: int
    stream_id: str


class Reservation(_Model):
    """Resources of a scope held by a session (see ``reserve``)."""

    reservation_id: str
    scope: str
    #: As given to ``reserve`` (a trailing ``/`` marks a directory).
    resources: list[str]
    mode: Literal["exclusive", "shared"]
    #: Strictly increasing per scope, forever: storage can refuse a stale holder.
    fencing_token: int
    agent_id: str
    session_id: str
    granted_at: datetime
    expires_at: datetime
    #: Seconds each ``renew`` moves ``expires_at`` ahead by default.
    ttl: float
    reason: str | None = None


class ReservationHolder(_Model):
    """A reservation (or a queued claim, ``waiting``) that conflicts with a claim."""

    agent_id: str
    session_id: str
    #: None for a queued claim.
    reservation_id: str | None
    #: The holder's resources that conflict with the claim.
    resources: list[str]
    mode: Literal["exclusive", "shared"]
    #: Seconds until the reservation lapses unless renewed (None for a queued claim).
    expires_in: float | None
    waiting: bool = False
