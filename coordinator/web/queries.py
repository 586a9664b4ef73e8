"""What the dashboard's pages show, read through the clients' public seam.

The leases page reads one page of the lease index at a time: ``ZCOUNT`` of every shard's
index (one pipelined round trip) tells which shards the page falls in, ``ZRANGE`` reads
just those members with their deadlines, one ``read_leases`` script per shard reads
their leases and one pipeline of ``read_records`` scripts their project records. So a
page costs the same few round trips with 10 or 100,000 leases. An index member whose
lease hash is gone lapsed and awaits the reaper: it is listed too, marked expired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator.aio import AsyncCoordinator
from coordinator.calls import Batch, Command, Plan, Script
from coordinator.core import record_from
from coordinator.keys import KeySpace
from coordinator.listing import leases_from, records_plan
from coordinator.models import AgentEvent, AgentProject, EventType, Lease, Reservation
from coordinator.shapes import iso
from coordinator.timestamps import ms_to_datetime, time_reply_ms
from coordinator.validation import agent_id as valid_agent_id

#: Event types that change (or import) an agent's project record: its timeline.
PROJECT_EVENTS = frozenset(
    {
        EventType.PROJECT_SET,
        EventType.PROJECT_SWITCHED,
        EventType.PROJECT_CLEARED,
        EventType.PROJECT_IMPORTED,
    }
)
#: Event types that end a session, and the word the agent page shows for each.
SESSION_ENDINGS = {
    EventType.SESSION_ENDED: "ended",
    EventType.SESSION_EXPIRED: "expired",
    EventType.SESSION_REVOKED: "revoked",
    EventType.SESSION_SUPERSEDED: "superseded",
}


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """One member of the lease index: a live lease, or a lapsed one (``lease`` None)
    that the reaper has not audited yet."""

    agent_id: str
    #: The deadline the index holds (the lease's ``expires_at`` while it lives).
    deadline: datetime
    lease: Lease | None
    record: AgentProject | None


@dataclass(frozen=True, slots=True)
class LeasePage:
    now: datetime
    #: 0-based page number and its size.
    page: int
    page_size: int
    #: Members of the index (live leases plus lapsed ones awaiting the reaper).
    total: int
    rows: Sequence[LeaseRow]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def lease_page_plan(
    keys: KeySpace, page: int, page_size: int, agent: str | None = None
) -> Plan[LeasePage]:
    """One page of the lease index, in shard order and by deadline within a shard."""
    now = ms_to_datetime(time_reply_ms((yield Command("time"))))
    picked: list[tuple[int, list[tuple[str, float]]]] = []
    if agent is not None:
        agent = valid_agent_id(agent)
        shard = keys.shard_of(agent)
        score = yield Command("zscore", (keys.index(shard), agent))
        if score is not None:
            picked.append((shard, [(agent, float(score))]))
        total = len(picked)
    else:
        # ZCOUNT, not ZCARD: the shipped admin role may run it (coordinator status does).
        sizes = yield Batch(
            tuple(Command("zcount", (keys.index(s), "-inf", "+inf")) for s in range(keys.shards))
        )
        total = sum(int(n) for n in sizes)
        wanted: list[tuple[int, int, int]] = []
        skip, left = page * page_size, page_size
        for shard, size in enumerate(int(n) for n in sizes):
            if left == 0:
                break
            if skip >= size:
                skip -= size
                continue
            take = min(size - skip, left)
            wanted.append((shard, skip, skip + take - 1))
            skip, left = 0, left - take
        if wanted:
            ranges = yield Batch(
                tuple(
                    Command("zrange", (keys.index(s), a, b), {"withscores": True})
                    for s, a, b in wanted
                )
            )
            picked = [
                (s, [(str(m), float(sc)) for m, sc in members])
                for (s, _, _), members in zip(wanted, ranges, strict=True)
            ]
    rows: list[LeaseRow] = []
    agents = [a for _, members in picked for a, _ in members]
    records = yield from records_plan(keys, agents, record_from)
    index = 0
    for shard, members in picked:
        names = [a for a, _ in members]
        reply = yield Script(
            "read_leases", tuple(keys.lease_in(shard, a) for a in names), (), retry=True
        )
        live = {lease.agent_id: lease for lease in leases_from(names, reply)}
        for name, score in members:
            rows.append(
                LeaseRow(
                    agent_id=name,
                    deadline=ms_to_datetime(score),
                    lease=live.get(name),
                    record=records[index],
                )
            )
            index += 1
    return LeasePage(now=now, page=page, page_size=page_size, total=total, rows=rows)


async def lease_page(
    client: AsyncCoordinator, page: int, page_size: int, agent: str | None = None
) -> LeasePage:
    """Raises InvalidInputError for a malformed agent id."""
    return await client.execute(lease_page_plan(client.keys, page, page_size, agent))


# --- one agent ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A session of the agent, put together from its audit events."""

    session_id: str
    fencing_token: int | None
    started_at: datetime | None
    #: ``live``, ``ended``, ``expired``, ``revoked``, ``superseded`` or ``unknown``.
    state: str
    ended_at: datetime | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "fencing_token": self.fencing_token,
            "started_at": iso(self.started_at) or None,
            "state": self.state,
            "ended_at": iso(self.ended_at) or None,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class AgentView:
    agent_id: str
    now: datetime
    lease: Lease | None
    record: AgentProject | None
    #: Project changes, newest first.
    timeline: Sequence[AgentEvent]
    sessions: Sequence[SessionSummary]
    #: Every event read (newest first), timeline and sessions come from these.
    events: Sequence[AgentEvent] = field(default_factory=tuple)
    #: Reservations held by the live session.
    reservations: Sequence[Reservation] = field(default_factory=tuple)


def sessions_of(events: Sequence[AgentEvent], live: Lease | None) -> list[SessionSummary]:
    """The agent's sessions, newest first, from its events (newest first)."""
    found: dict[str, dict[str, Any]] = {}
    for event in reversed(events):  # oldest first: the last word on a session wins
        sid = event.session_id
        if not sid:
            continue
        entry = found.setdefault(
            sid,
            {"session_id": sid, "fencing_token": event.fencing_token, "started_at": None,
             "state": "unknown"},
        )  # fmt: skip
        if event.event_type is EventType.SESSION_STARTED:
            entry.update(started_at=event.created_at, state="started")
        elif event.event_type in SESSION_ENDINGS:
            entry.update(
                state=SESSION_ENDINGS[event.event_type],
                ended_at=event.created_at,
                reason=event.error_message,
            )
    summaries = []
    for entry in found.values():
        if live is not None and entry["session_id"] == live.session_id:
            entry.update(state="live", started_at=live.started_at)
        elif entry["state"] == "started":
            entry["state"] = "unknown"  # lapsed or ended beyond the events read
        summaries.append(SessionSummary(**entry))
    summaries.sort(key=lambda s: s.fencing_token or 0, reverse=True)
    return summaries


async def agent_view(client: AsyncCoordinator, agent: str, limit: int = 200) -> AgentView:
    """The agent's lease, record, project timeline and sessions (from the sink and the
    stream tail, at most ``limit`` events). Raises InvalidInputError."""
    agent = valid_agent_id(agent)
    now = await client.server_time()
    leases = await client.list_leases(agent)
    lease = leases[0] if leases else None
    record = await client.get_current_project(agent)
    held = []
    if lease is not None:
        held = [
            r for r in await client.list_reservations(agent_id=agent)
            if r.session_id == lease.session_id
        ]  # fmt: skip
    events = await client.get_agent_events(agent_id=agent, limit=limit)
    timeline = [e for e in events if e.event_type in PROJECT_EVENTS and e.success]
    return AgentView(
        agent_id=agent,
        now=now,
        lease=lease,
        record=record,
        timeline=timeline,
        sessions=sessions_of(events, lease),
        events=events,
        reservations=held,
    )
