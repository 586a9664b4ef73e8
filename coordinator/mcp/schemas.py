"""Typed inputs and structured outputs of the MCP tools (their JSON Schemas are what
clients see as ``inputSchema`` / ``outputSchema``), and the body of an ``isError``
result. Values are checked by the library itself, so a bad value gets the library's
one-line message; these models only fix names and JSON types."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from coordinator.models import AgentEvent, AgentProject, Session


class ToolInput(BaseModel):
    """Arguments of a tool: unknown names are refused."""

    model_config = ConfigDict(extra="forbid")


class ToolOutput(BaseModel):
    """Structured result of a tool."""

    model_config = ConfigDict(extra="forbid")


# --- inputs ------------------------------------------------------------------------------


class StartSessionInput(ToolInput):
    agent_id: str = Field(description="Your agent id: 1-128 characters, no control characters.")
    metadata: dict[str, Any] | None = Field(
        default=None, description="Optional JSON object recorded with the session (<= 8 KiB)."
    )
    ttl_seconds: float | None = Field(
        default=None, description="Lease length; default the server's lease TTL (15 min)."
    )
    exclusive: bool = Field(
        default=False,
        description="Refuse (session_already_active) instead of superseding a live session.",
    )


class NoInput(ToolInput):
    pass


class AgentInput(ToolInput):
    agent_id: str | None = Field(
        default=None, description="Another agent's id; default: this connection's agent."
    )


class SetProjectInput(ToolInput):
    project: str = Field(description="Project name to record as this agent's current one.")
    expected_version: int | None = Field(
        default=None,
        description="Write only if the stored version is this (0: only if no record yet); "
        "omit to write unconditionally. On a conflict the error carries the current record.",
    )
    request_id: str | None = Field(
        default=None,
        description="Idempotency key: repeating a call with the same id returns the first "
        "result instead of writing twice (use it to retry after an 'unavailable' error).",
    )


class ClearProjectInput(ToolInput):
    expected_version: int | None = Field(
        default=None, description="Clear only if the stored version is this."
    )


class RecentEventsInput(ToolInput):
    agent_id: str | None = Field(default=None, description="Only this agent's events.")
    event_type: str | None = Field(
        default=None, description="Only this type, e.g. project_switched, session_revoked."
    )
    limit: int = Field(default=20, description="At most this many (1..10000), newest first.")
    since: datetime | None = Field(
        default=None, description="Only events at or after this time (ISO 8601)."
    )


# --- outputs -----------------------------------------------------------------------------

KeepAliveState = Literal["alive", "jeopardy", "lost", "none"]


class SessionOutput(ToolOutput):
    agent_id: str
    session_id: str
    fencing_token: int
    expires_at: datetime
    expires_in_seconds: float
    ttl_seconds: float
    keep_alive: KeepAliveState = Field(description="What this server's keep-alive knows.")


class EndSessionOutput(ToolOutput):
    ended: bool = Field(description="False when it was no longer the agent's live session.")
    agent_id: str
    session_id: str


class LeaseStatusOutput(ToolOutput):
    agent_id: str
    alive: bool = Field(description="Redis holds a live lease for the agent.")
    state: KeepAliveState = Field(
        description="This connection's keep-alive state for its own session; 'none' when "
        "this connection holds no session of the agent."
    )
    held_by_this_connection: bool
    session_id: str | None = None
    fencing_token: int | None = None
    expires_at: datetime | None = None
    expires_in_seconds: float | None = None
    reason: str | None = Field(default=None, description="Why this connection's lease was lost.")


class ProjectOutput(ToolOutput):
    agent_id: str
    project: str | None = Field(description="None: no project (never set, or cleared).")
    version: int = Field(description="0 when the agent never had a record.")
    session_id: str | None = None
    fencing_token: int | None = None
    updated_at: datetime | None = None


class LeaseOutput(ToolOutput):
    agent_id: str
    session_id: str
    fencing_token: int
    expires_at: datetime
    expires_in_seconds: float
    metadata: dict[str, Any] | None = None


class LeasesOutput(ToolOutput):
    leases: list[LeaseOutput]


class EventOutput(ToolOutput):
    agent_id: str
    session_id: str | None
    event_type: str
    from_project: str | None = None
    to_project: str | None = None
    expected_version: int | None = None
    actual_version: int | None = None
    success: bool
    error_message: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime
    fencing_token: int | None = None
    stream_id: str


class EventsOutput(ToolOutput):
    events: list[EventOutput]


class ErrorBody(ToolOutput):
    """The structured body of every ``isError`` result."""

    error: Literal[
        "invalid_input",
        "no_session",
        "session_lease_expired",
        "session_already_active",
        "conflict",
        "reservation_conflict",
        "reservation_not_held",
        "unavailable",
        "access_denied",
        "internal_error",
    ]
    message: str = Field(description="One line, the same the library raises.")
    agent_id: str | None = None
    session_id: str | None = None
    reason: str | None = Field(
        default=None,
        description="session_lease_expired: no_active_session, session_mismatch, expired, "
        "revoked or superseded.",
    )
    field: str | None = Field(default=None, description="invalid_input: the offending argument.")
    expected_version: int | None = None
    current: ProjectOutput | None = Field(
        default=None, description="conflict: the stored record, to re-plan without a read."
    )
    maybe_applied: bool | None = Field(
        default=None,
        description="unavailable: the write may have happened; retry it with the same request_id.",
    )
    expires_at: datetime | None = None
    lease_state: str | None = Field(
        default=None,
        description="A write that failed while this connection's lease is in jeopardy "
        "(heartbeats failing, not yet expired) says so here.",
    )
    holders: list[dict[str, Any]] | None = Field(
        default=None,
        description="reservation_conflict: every conflicting holder (agent_id, session_id, "
        "reservation_id, resources, mode, expires_in) and, with waiting true, earlier "
        "queued claims.",
    )


# --- conversions -------------------------------------------------------------------------


def seconds_until(moment: datetime, now: datetime) -> float:
    return round(max(0.0, (moment - now).total_seconds()), 3)


def session_output(session: Session, state: KeepAliveState) -> SessionOutput:
    """As of the session's last heartbeat (server time: no clock of ours involved)."""
    return SessionOutput(
        agent_id=session.agent_id,
        session_id=session.session_id,
        fencing_token=session.fencing_token,
        expires_at=session.expires_at,
        expires_in_seconds=seconds_until(session.expires_at, session.last_heartbeat),
        ttl_seconds=session.ttl,
        keep_alive=state,
    )


def project_output(agent_id: str, record: AgentProject | None) -> ProjectOutput:
    if record is None:
        return ProjectOutput(agent_id=agent_id, project=None, version=0)
    return ProjectOutput(
        agent_id=record.agent_id,
        project=record.project_name,
        version=record.version,
        session_id=record.session_id,
        fencing_token=record.fencing_token,
        updated_at=record.updated_at,
    )


def lease_output(lease: Session, now: datetime) -> LeaseOutput:
    return LeaseOutput(
        agent_id=lease.agent_id,
        session_id=lease.session_id,
        fencing_token=lease.fencing_token,
        expires_at=lease.expires_at,
        expires_in_seconds=seconds_until(lease.expires_at, now),
        metadata=lease.metadata,
    )


def event_output(event: AgentEvent) -> EventOutput:
    data = event.model_dump(exclude={"shard"})
    data["event_type"] = event.event_type.value
    return EventOutput(**data)
