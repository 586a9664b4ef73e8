"""What a keep-alive concludes about its lease (pure: no I/O, no clock of its own).

A :class:`Liveness` is fed what the keep-alive observed (a confirmed heartbeat, a
failed one, an audit event, the passing of time on a monotonic clock) and says which
state the lease is in:

- ``alive``: the last heartbeat was confirmed and its deadline lies ahead;
- ``jeopardy``: heartbeats are failing (Redis unreachable) but the last confirmed
  deadline has not passed yet: the lease may well still be held, nobody can tell;
- ``lost``: the deadline passed without a confirmed heartbeat, or Redis said the
  session is dead (ended, expired, revoked, superseded). Final: a lost lease never
  comes back.

Deadlines are local monotonic times, never the server's clock compared with ours: a
heartbeat sent at local time ``t`` moved the server's deadline to at least ``t + ttl``
(the server ran it after we sent it), so ``t + ttl`` is a deadline we may rely on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from coordinator.calls import Command, Op
from coordinator.errors import LeaseReason

#: Heartbeats per TTL when no interval is given (etcd and Consul clients use a third).
HEARTBEATS_PER_TTL: Final = 3
#: While heartbeats fail, try again this often (s), or sooner if the TTL is short.
JEOPARDY_RETRY: Final = 0.5
#: Longest wait of one blocking read of the audit stream (s); each wakes on any event.
WATCH_BLOCK: Final = 1.0
#: Most events one read of the audit stream returns.
WATCH_BATCH: Final = 200

#: Audit events that end a session, and the reason a later call of it would get.
DEATH_REASONS: Final[Mapping[str, LeaseReason]] = {
    "session_revoked": "revoked",
    "session_superseded": "superseded",
    "session_expired": "expired",
    "session_ended": "no_active_session",
}


class LeaseState(StrEnum):
    """What a keep-alive knows about its lease."""

    ALIVE = "alive"
    JEOPARDY = "jeopardy"
    LOST = "lost"


def default_interval(ttl: float) -> float:
    """Seconds between heartbeats of a lease of ``ttl`` seconds."""
    return ttl / HEARTBEATS_PER_TTL


def death_reason(fields: Mapping[str, Any], agent_id: str, session_id: str) -> LeaseReason | None:
    """The reason an audit event (raw stream fields) says ``session_id`` is dead, or None
    when it says nothing about it."""
    if fields.get("session_id") != session_id or fields.get("agent_id") != agent_id:
        return None
    return DEATH_REASONS.get(fields.get("event_type", ""))


@dataclass(slots=True)
class Liveness:
    """The state machine of one keep-alive. Every method takes the current monotonic
    time where it matters and returns True when the state changed."""

    ttl: float
    interval: float
    #: Monotonic time by which the lease surely still held at the last confirmation.
    deadline: float
    state: LeaseState = LeaseState.ALIVE
    reason: LeaseReason | None = None
    #: Why heartbeats are failing (jeopardy), for messages.
    error: str | None = None
    #: Monotonic time the last heartbeat was sent (confirmed or not).
    last_sent: float = 0.0

    @classmethod
    def confirmed_at(cls, sent: float, ttl: float, interval: float | None = None) -> Liveness:
        """The state after a first heartbeat sent at ``sent`` was confirmed."""
        every = default_interval(ttl) if interval is None else interval
        return cls(ttl=ttl, interval=every, deadline=sent + ttl, last_sent=sent)

    def next_heartbeat(self) -> float:
        """Monotonic time of the next heartbeat."""
        if self.state is LeaseState.JEOPARDY:
            return self.last_sent + min(JEOPARDY_RETRY, self.interval)
        return self.last_sent + self.interval

    def confirmed(self, sent: float, ttl: float) -> bool:
        """A heartbeat sent at ``sent`` was confirmed with lease length ``ttl``."""
        if self.state is LeaseState.LOST:
            return False
        self.ttl, self.deadline, self.error = ttl, max(self.deadline, sent + ttl), None
        return self._become(LeaseState.ALIVE)

    def failed(self, now: float, error: str) -> bool:
        """A heartbeat could not reach Redis (or got no answer)."""
        if self.state is LeaseState.LOST:
            return False
        self.error = error
        if now >= self.deadline:
            return self.dead("expired")
        return self._become(LeaseState.JEOPARDY)

    def tick(self, now: float) -> bool:
        """Time passed: a deadline gone by without a confirmation loses the lease."""
        if self.state is not LeaseState.LOST and now >= self.deadline:
            return self.dead("expired")
        return False

    def dead(self, reason: LeaseReason) -> bool:
        """Redis said the session is dead (a refused heartbeat, an audit event)."""
        if self.state is LeaseState.LOST:
            return False
        self.reason = reason
        return self._become(LeaseState.LOST)

    def _become(self, state: LeaseState) -> bool:
        changed = self.state is not state
        self.state = state
        return changed


def last_event_op(stream: str) -> Op[str]:
    """The id of the newest entry of ``stream`` (``0-0`` when empty): where watching for
    events about a session starts."""

    def decode(reply: Any) -> str:
        return str(reply[0][0]) if reply else "0-0"

    return Op(Command("xrevrange", (stream, "+", "-"), {"count": 1}), decode)


def watch_op(stream: str, after: str, block: float) -> Op[list[tuple[str, dict[str, Any]]]]:
    """Entries of ``stream`` after id ``after``, waiting up to ``block`` seconds for one."""

    def decode(reply: Any) -> list[tuple[str, dict[str, Any]]]:
        if not reply:
            return []
        # RESP2 answers [[stream, entries]]; RESP3 {stream: [entries]}.
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return [(str(entry_id), dict(fields or {})) for entry_id, fields in entries]

    kwargs = {"count": WATCH_BATCH, "block": max(1, int(block * 1000))}
    return Op(Command("xread", ({stream: after},), kwargs), decode)
