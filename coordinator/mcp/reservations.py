"""The MCP reservation tools: ``reserve``, ``release`` and ``list_reservations``.

They act with the connection's session, like the project writes; a conflict is an
``isError`` result whose body carries every holder (``reservation_conflict``), so a
model can decide what to do without another call.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from coordinator.mcp.schemas import ToolInput, ToolOutput, seconds_until
from coordinator.mcp.tools import ToolContext, tool
from coordinator.models import Reservation


class ReserveInput(ToolInput):
    scope: str = Field(description="The scope the resources belong to, e.g. the repository.")
    resources: list[str] = Field(
        description="Resource names (<= 512 characters each); '/'-separated names are paths, "
        "and a path conflicts with every path above or beneath it ('src/' holds 'src/a.py')."
    )
    mode: Literal["exclusive", "shared"] = Field(
        default="exclusive", description="shared holders coexist; exclusive conflicts with any."
    )
    ttl_seconds: float | None = Field(
        default=None, description="Lapses unless renewed; default your lease's TTL."
    )
    reason: str | None = Field(default=None, description="Why, shown to other agents.")
    wait_seconds: float | None = Field(
        default=None,
        description="Wait up to this long, in arrival order, instead of failing at once.",
    )
    request_id: str | None = Field(
        default=None, description="Idempotency key: a retry returns the first grant."
    )


class ReleaseInput(ToolInput):
    reservation_id: str = Field(description="The id reserve returned.")


class ListReservationsInput(ToolInput):
    scope: str | None = Field(default=None, description="Only this scope's reservations.")
    agent_id: str | None = Field(default=None, description="Only this agent's reservations.")


class ReservationOutput(ToolOutput):
    reservation_id: str
    scope: str
    resources: list[str]
    mode: Literal["exclusive", "shared"]
    fencing_token: int = Field(description="Strictly increasing per scope.")
    agent_id: str
    session_id: str
    expires_at: str
    expires_in_seconds: float
    reason: str | None = None


class ReleaseOutput(ToolOutput):
    released: bool = Field(description="False when you held no such reservation.")
    reservation_id: str


class ReservationsOutput(ToolOutput):
    reservations: list[ReservationOutput]


def reservation_output(reservation: Reservation) -> ReservationOutput:
    """As of the grant (server time: no clock of ours involved)."""
    return ReservationOutput(
        reservation_id=reservation.reservation_id,
        scope=reservation.scope,
        resources=reservation.resources,
        mode=reservation.mode,
        fencing_token=reservation.fencing_token,
        agent_id=reservation.agent_id,
        session_id=reservation.session_id,
        expires_at=reservation.expires_at.isoformat(),
        expires_in_seconds=seconds_until(reservation.expires_at, reservation.granted_at),
        reason=reservation.reason,
    )


@tool(
    "reserve",
    "Reserve files or other named resources of a scope for your session before changing "
    "them, all or nothing. A conflict is an error (reservation_conflict) listing every "
    "holder (agent, resources, mode, expires_in): pick other work or pass wait_seconds. "
    "Reservations end with your session; release them when done.",
    ReserveInput,
    ReservationOutput,
)
async def reserve(ctx: ToolContext, args: ReserveInput) -> ReservationOutput:
    session = ctx.holder.require()
    granted = await ctx.coordinator.reserve(
        session.agent_id,
        session.session_id,
        args.scope,
        args.resources,
        mode=args.mode,
        ttl=args.ttl_seconds,
        reason=args.reason,
        wait=args.wait_seconds,
        request_id=args.request_id,
    )
    return reservation_output(granted)


@tool(
    "release",
    "Release a reservation of your session (released: false if you no longer held it).",
    ReleaseInput,
    ReleaseOutput,
)
async def release(ctx: ToolContext, args: ReleaseInput) -> ReleaseOutput:
    session = ctx.holder.require()
    done = await ctx.coordinator.release(session.agent_id, session.session_id, args.reservation_id)
    return ReleaseOutput(released=done, reservation_id=args.reservation_id)


@tool(
    "list_reservations",
    "Live reservations (optionally of one scope or agent): who holds which resources, in "
    "which mode, until when.",
    ListReservationsInput,
    ReservationsOutput,
    read_only=True,
)
async def list_reservations(ctx: ToolContext, args: ListReservationsInput) -> ReservationsOutput:
    now = await ctx.coordinator.server_time()
    found = await ctx.coordinator.list_reservations(args.scope, args.agent_id)
    return ReservationsOutput(
        reservations=[
            reservation_output(r).model_copy(
                update={"expires_in_seconds": seconds_until(r.expires_at, now)}
            )
            for r in found
        ]
    )
