"""The MCP tools: one registry of name, description, input and output model and handler.

Adding a tool is one decorated coroutine anywhere that is imported before the server
starts (the server lists :data:`TOOLS` when a client asks)::

    @tool("my_tool", "What it does and when a model should call it.", MyInput, MyOutput)
    async def my_tool(ctx: ToolContext, args: MyInput) -> MyOutput: ...

Writes act with the session this connection holds (:class:`SessionHolder`). Expected
failures are not raised to the client: :func:`error_body` turns them into the
structured body of an ``isError`` result a model can re-plan from.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from coordinator.aio import AsyncCoordinator
from coordinator.errors import (
    AccessDenied,
    ConflictError,
    CoordinatorError,
    CoordinatorUnavailable,
    InvalidInputError,
    ReservationConflict,
    ReservationNotHeld,
    SessionAlreadyActive,
    SessionLeaseExpired,
)
from coordinator.mcp.holder import NoSession, SessionHolder
from coordinator.mcp.schemas import (
    AgentInput,
    ClearProjectInput,
    EndSessionOutput,
    ErrorBody,
    EventsOutput,
    LeasesOutput,
    LeaseStatusOutput,
    NoInput,
    ProjectOutput,
    RecentEventsInput,
    SessionOutput,
    SetProjectInput,
    StartSessionInput,
    ToolInput,
    ToolOutput,
    event_output,
    lease_output,
    project_output,
    seconds_until,
    session_output,
)

logger = logging.getLogger(__name__)

In = TypeVar("In", bound=ToolInput)
Out = TypeVar("Out", bound=ToolOutput)


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool handler works with: the connection's session holder."""

    holder: SessionHolder

    @property
    def coordinator(self) -> AsyncCoordinator:
        return self.holder.coordinator


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    input: type[ToolInput]
    output: type[ToolOutput]
    run: Callable[[ToolContext, Any], Awaitable[ToolOutput]]
    read_only: bool = False


#: Every tool the server offers, by name, in the order they were registered.
TOOLS: dict[str, ToolSpec] = {}


def tool(
    name: str,
    description: str,
    input: type[In],
    output: type[Out],
    *,
    read_only: bool = False,
) -> Callable[
    [Callable[[ToolContext, In], Awaitable[Out]]], Callable[[ToolContext, In], Awaitable[Out]]
]:
    """Register the decorated coroutine as the tool ``name``."""

    def register(
        run: Callable[[ToolContext, In], Awaitable[Out]],
    ) -> Callable[[ToolContext, In], Awaitable[Out]]:
        if name in TOOLS:
            raise ValueError(f"tool {name!r} is already registered")
        TOOLS[name] = ToolSpec(name, description, input, output, run, read_only)
        return run

    return register


def input_error(exc: ValidationError) -> ErrorBody:
    """One line for arguments of the wrong name or JSON type."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "arguments"
    return ErrorBody(error="invalid_input", message=f"invalid {field}: {first['msg']}", field=field)


def error_body(exc: Exception) -> ErrorBody:
    """The ``isError`` body of an expected failure (anything else is ``internal_error``)."""
    if isinstance(exc, ValidationError):
        return input_error(exc)
    if isinstance(exc, InvalidInputError):
        return ErrorBody(error="invalid_input", message=str(exc), field=exc.field)
    if isinstance(exc, NoSession):
        return ErrorBody(error="no_session", message=str(exc))
    if isinstance(exc, SessionLeaseExpired):
        return ErrorBody(
            error="session_lease_expired",
            message=str(exc),
            agent_id=exc.agent_id,
            session_id=exc.session_id,
            reason=exc.reason,
        )
    if isinstance(exc, SessionAlreadyActive):
        return ErrorBody(
            error="session_already_active",
            message=str(exc),
            agent_id=exc.agent_id,
            expires_at=exc.expires_at,
        )
    if isinstance(exc, ConflictError):
        return ErrorBody(
            error="conflict",
            message=str(exc),
            agent_id=exc.agent_id,
            expected_version=exc.expected_version,
            current=project_output(exc.agent_id, exc.current),
        )
    if isinstance(exc, ReservationConflict):
        return ErrorBody(
            error="reservation_conflict",
            message=str(exc),
            holders=[h.model_dump() for h in (*exc.holders, *exc.waiting)],
        )
    if isinstance(exc, ReservationNotHeld):
        return ErrorBody(error="reservation_not_held", message=str(exc))
    if isinstance(exc, CoordinatorUnavailable):
        return ErrorBody(error="unavailable", message=str(exc), maybe_applied=exc.maybe_applied)
    if isinstance(exc, AccessDenied):
        return ErrorBody(error="access_denied", message=str(exc))
    if isinstance(exc, CoordinatorError):
        return ErrorBody(error="internal_error", message=str(exc))
    logger.exception("tool failed unexpectedly")
    return ErrorBody(error="internal_error", message=f"{type(exc).__name__}: {exc}")


# --- sessions ----------------------------------------------------------------------------


@tool(
    "start_session",
    "Start your session as agent_id: a lease that this server keeps alive for as long as "
    "this connection lasts and ends when it closes. Call it once before any write. A live "
    "session of the same agent elsewhere is superseded (it can no longer write) unless "
    "exclusive is true, which fails with session_already_active instead.",
    StartSessionInput,
    SessionOutput,
)
async def start_session(ctx: ToolContext, args: StartSessionInput) -> SessionOutput:
    session = await ctx.holder.start(
        args.agent_id, args.metadata, ttl=args.ttl_seconds, exclusive=args.exclusive
    )
    return session_output(session, ctx.holder.state_of(session.agent_id))


@tool(
    "heartbeat",
    "Extend your session's lease now. Rarely needed: this server heartbeats on its own and "
    "tells you (a log message, and an error from the next write) if the lease is lost.",
    NoInput,
    SessionOutput,
)
async def heartbeat(ctx: ToolContext, args: NoInput) -> SessionOutput:
    session = await ctx.holder.heartbeat()
    return session_output(session, ctx.holder.state_of(session.agent_id))


@tool(
    "end_session",
    "End your session (it also ends when this connection closes). Writes need a new "
    "start_session afterwards.",
    NoInput,
    EndSessionOutput,
)
async def end_session(ctx: ToolContext, args: NoInput) -> EndSessionOutput:
    session, ended = await ctx.holder.end()
    return EndSessionOutput(ended=ended, agent_id=session.agent_id, session_id=session.session_id)


@tool(
    "lease_status",
    "Whether an agent (default: you) holds a live lease, its fencing token and expiry, and "
    "what this server's keep-alive knows about your own lease (alive, jeopardy: Redis "
    "unreachable but the lease not yet expired, or lost, with the reason).",
    AgentInput,
    LeaseStatusOutput,
    read_only=True,
)
async def lease_status(ctx: ToolContext, args: AgentInput) -> LeaseStatusOutput:
    agent = ctx.holder.agent_or(args.agent_id)
    leases = await ctx.coordinator.list_leases(agent)
    held = ctx.holder.session
    keep_alive = ctx.holder.keep_alive
    state = ctx.holder.state_of(agent)
    reason = keep_alive.reason if keep_alive is not None and state != "none" else None
    if not leases:
        return LeaseStatusOutput(
            agent_id=agent,
            alive=False,
            state=state,
            held_by_this_connection=False,
            reason=reason,
        )
    lease = leases[0]
    now = await ctx.coordinator.server_time()
    return LeaseStatusOutput(
        agent_id=agent,
        alive=True,
        state=state,
        held_by_this_connection=held is not None and held.session_id == lease.session_id,
        session_id=lease.session_id,
        fencing_token=lease.fencing_token,
        expires_at=lease.expires_at,
        expires_in_seconds=seconds_until(lease.expires_at, now),
        reason=reason,
    )


@tool(
    "list_leases",
    "Every agent that currently holds a live lease, with fencing tokens and expiries.",
    NoInput,
    LeasesOutput,
    read_only=True,
)
async def list_leases(ctx: ToolContext, args: NoInput) -> LeasesOutput:
    leases = await ctx.coordinator.list_leases()
    now = await ctx.coordinator.server_time()
    return LeasesOutput(leases=[lease_output(lease, now) for lease in leases])


# --- project records ---------------------------------------------------------------------


@tool(
    "get_project",
    "The project an agent (default: you) is working on, with the record's version: pass "
    "that version as expected_version to set_project to change it safely.",
    AgentInput,
    ProjectOutput,
    read_only=True,
)
async def get_project(ctx: ToolContext, args: AgentInput) -> ProjectOutput:
    agent = ctx.holder.agent_or(args.agent_id)
    return project_output(agent, await ctx.coordinator.get_current_project(agent))


@tool(
    "set_project",
    "Record the project you are working on (needs your session). With expected_version the "
    "write happens only if the stored version still matches; otherwise the error is a "
    "conflict carrying the current record, so re-read nothing and decide again.",
    SetProjectInput,
    ProjectOutput,
)
async def set_project(ctx: ToolContext, args: SetProjectInput) -> ProjectOutput:
    session = ctx.holder.require()
    record = await ctx.coordinator.set_current_project(
        session.agent_id,
        args.project,
        session.session_id,
        args.expected_version,
        request_id=args.request_id,
    )
    return project_output(session.agent_id, record)


@tool(
    "clear_project",
    "Record that you are working on no project (a versioned write like set_project).",
    ClearProjectInput,
    ProjectOutput,
)
async def clear_project(ctx: ToolContext, args: ClearProjectInput) -> ProjectOutput:
    session = ctx.holder.require()
    record = await ctx.coordinator.set_current_project(
        session.agent_id, None, session.session_id, args.expected_version
    )
    return project_output(session.agent_id, record)


# --- events ------------------------------------------------------------------------------


@tool(
    "recent_events",
    "The audit trail, newest first: sessions started, ended, expired, revoked or "
    "superseded, projects set or switched, conflicts. Filter by agent_id (omit for all "
    "agents), event_type, since.",
    RecentEventsInput,
    EventsOutput,
    read_only=True,
)
async def recent_events(ctx: ToolContext, args: RecentEventsInput) -> EventsOutput:
    events = await ctx.coordinator.get_agent_events(
        args.agent_id, args.event_type, args.limit, since=args.since
    )
    return EventsOutput(events=[event_output(event) for event in events])
