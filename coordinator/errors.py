"""Exceptions raised by agent-coordinator.

Every exception derives from :class:`CoordinatorError`::

    CoordinatorError
    ├── InvalidInputError (also ValueError)   bad argument; nothing was sent or written
    │   └── RequestIdReusedError               a request id reused with other arguments
    ├── SessionLeaseExpired                   the session cannot act (reason says why)
    │   └── LegacySessionLeaseExpired          the same, worded as scribe_mcp (compat)
    ├── SessionAlreadyActive                  exclusive start refused: a live session exists
    ├── ConflictError                         expected_version did not match (carries current)
    │   └── LegacyConflictError                the same, worded as scribe_mcp (compat)
    ├── ReservationConflict                   resources held (or awaited) by others (carries them)
    ├── ReservationNotHeld                    renew: the reservation is released or lapsed
    ├── ReservationScopesNeeded               operations API: the session's end needs these scopes
    ├── ConfigurationError                    deployment mismatch, e.g. shard count
    │   ├── ShardCountMismatch
    │   ├── EvictionPolicyError                 Redis may evict keys (maxmemory-policy)
    │   ├── DurabilityUnsupported               wait_aof: the server cannot WAITAOF
    │   └── SinkAccessDenied                    the sink's database role lacks a privilege
    ├── AccessDenied                          Redis refused the credentials or an ACL rule
    ├── CoordinatorUnavailable                Redis (or the sink) could not be reached
    │   ├── ReplicationTimeout                durability mode: replicas did not acknowledge
    │   ├── FsyncTimeout                      wait_aof: the fsync was not confirmed in time
    │   ├── RedisOutOfMemory                  Redis at maxmemory refused a write
    │   └── SinkUnavailable                   the event sink could not be reached
    ├── SinkRefused                           the sink writer process refused a batch's data
    ├── UnexpectedReply                       a script answered something unknown (a bug)
    ├── WorkerFailed                          ``verify``: its worker could not drain
    ├── EmbeddedRedisError                    a local redis-server could not start or stop
    │   ├── DataDirInUse                       another server uses the data directory
    │   └── PortInUse                          another process listens on the port
    └── StackError                            the local stack could not start
        └── StackRunning                       a stack already runs in the data directory
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from coordinator.models import AgentProject, ReservationHolder

LeaseReason = Literal["no_active_session", "session_mismatch", "expired", "revoked", "superseded"]

LEASE_REASONS: tuple[LeaseReason, ...] = (
    "no_active_session",
    "session_mismatch",
    "expired",
    "revoked",
    "superseded",
)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for
    one-line logs and errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class CoordinatorError(Exception):
    """Root of every error raised by this package."""


class InvalidInputError(CoordinatorError, ValueError):
    """An argument is malformed or out of its documented limits; nothing was written.

    ``field`` names the offending argument.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid {field}: {message}")
        self.field = field


class RequestIdReusedError(InvalidInputError):
    """A ``request_id`` was sent again with different arguments; nothing was written."""

    def __init__(self, request_id: str) -> None:
        super().__init__("request_id", f"{request_id!r} was already used for a different write")
        self.request_id = request_id


class SessionLeaseExpired(CoordinatorError):
    """The session may not act: it ended, expired, was revoked or superseded, or is foreign.

    ``reason`` is one of ``no_active_session``, ``session_mismatch``, ``expired``,
    ``revoked``, ``superseded``.
    """

    def __init__(self, agent_id: str, session_id: str, reason: LeaseReason) -> None:
        super().__init__(f"session {session_id!r} of agent {agent_id!r} is not active: {reason}")
        self.agent_id = agent_id
        self.session_id = session_id
        self.reason: LeaseReason = reason


class SessionAlreadyActive(CoordinatorError):
    """``start_session(..., exclusive=True)`` found a live session of the agent."""

    def __init__(self, agent_id: str, expires_at: datetime) -> None:
        super().__init__(
            f"agent {agent_id!r} already has a live session (expires {expires_at.isoformat()})"
        )
        self.agent_id = agent_id
        self.expires_at = expires_at


class ConflictError(CoordinatorError):
    """``expected_version`` did not match; ``current`` is the stored record (or None)."""

    def __init__(self, agent_id: str, expected_version: int, current: AgentProject | None) -> None:
        actual = current.version if current is not None else 0
        super().__init__(
            f"version conflict for agent {agent_id!r}: expected {expected_version}, "
            f"current {actual}"
        )
        self.agent_id = agent_id
        self.expected_version = expected_version
        self.current = current

    @property
    def actual_version(self) -> int:
        """The stored version (0 when the agent has no record)."""
        return self.current.version if self.current is not None else 0


class ReservationConflict(CoordinatorError):
    """A reservation was refused: ``holders`` are every live reservation that conflicts
    with the claim (agent, resources, mode, expires_in), ``waiting`` the earlier
    queued claims it would overtake. Nothing was reserved; the refusal is audited."""

    def __init__(
        self,
        scope: str,
        resources: tuple[str, ...] | list[str],
        holders: list[ReservationHolder],
        waiting: list[ReservationHolder] | None = None,
    ) -> None:
        waiting = waiting or []
        shown = "; ".join(
            f"{h.agent_id} holds {', '.join(h.resources)} ({h.mode}"
            + (f", expires in {h.expires_in:.1f} s)" if h.expires_in is not None else ")")
            for h in holders[:5]
        )
        if len(holders) > 5:
            shown += f"; and {len(holders) - 5} more"
        if waiting:
            shown += ("; " if shown else "") + f"{len(waiting)} earlier claim(s) waiting"
        super().__init__(f"reservation refused in scope {scope!r}: {shown}")
        self.scope = scope
        self.resources = list(resources)
        self.holders = holders
        self.waiting = waiting


class ReservationNotHeld(CoordinatorError):
    """The reservation is not held by this session any more (released, expired or
    never granted); nothing was changed."""

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"reservation {reservation_id!r} is not held")
        self.reservation_id = reservation_id


class ReservationScopesNeeded(CoordinatorError):
    """An operation that ends an agent's session (built with ``operations``) was not
    given every scope of the agent's shard it holds reservations in; nothing was
    changed. Build it again with ``scopes`` added and run it again (the clients'
    ``start_session``, ``end_session`` and ``revoke_session`` do this themselves)."""

    def __init__(self, agent_id: str, scopes: list[str]) -> None:
        super().__init__(
            f"agent {agent_id!r} holds reservations in scopes not given: {', '.join(scopes)}"
        )
        self.agent_id = agent_id
        self.scopes = scopes


class ConfigurationError(CoordinatorError):
    """The client's configuration disagrees with what the deployment recorded."""


class SinkAccessDenied(ConfigurationError):
    """The event sink's database role lacks a privilege the operation needs (for
    example creating the table, which deploy/postgres-roles.sql leaves to the owner).
    Not an outage: retrying cannot help, so the worker stops instead of retrying."""

    def __init__(self, location: str, detail: str) -> None:
        self.location = location
        self.detail = detail
        super().__init__(f"event sink {location} refused access: {detail}")


class ShardCountMismatch(ConfigurationError):
    """The namespace was created with another shard count; a shard count never changes."""

    def __init__(self, namespace: str, configured: int, recorded: int) -> None:
        super().__init__(
            f"namespace {namespace!r} uses {recorded} shards but this client is configured "
            f"with {configured}; set shards={recorded} (COORDINATOR_SHARDS={recorded})"
        )
        self.namespace = namespace
        self.configured = configured
        self.recorded = recorded


class EvictionPolicyError(ConfigurationError):
    """Redis runs with a ``maxmemory-policy`` that may evict keys: leases, fencing
    counters, records and audit entries would vanish silently. Refused on connect
    unless ``allow_eviction`` (``COORDINATOR_ALLOW_EVICTION=1``) accepts the risk."""

    def __init__(self, where: str, policy: str) -> None:
        super().__init__(
            f"Redis at {where} runs with maxmemory-policy {policy}, which may evict leases, "
            "fencing counters and project records and so lose acknowledged writes; set "
            "maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in "
            "redis.conf), or accept the risk with allow_eviction=True "
            "(COORDINATOR_ALLOW_EVICTION=1)"
        )
        self.where = where
        self.policy = policy


class DurabilityUnsupported(ConfigurationError):
    """``wait_aof`` is on but the server cannot confirm fsyncs: it has no ``WAITAOF``
    (Redis before 7.2), its append-only file is off, or it is a replica.

    Raised when the client connects, before anything is sent (``applied`` False). If the
    server changed under a running client (a failover to such a server, ``CONFIG SET
    appendonly no``), it is raised after a call whose change *was* applied (``applied``
    True, with the call's ``result`` or ``error`` as in :class:`ReplicationTimeout`).
    """

    def __init__(self, safe_url: str, detail: str, *, applied: bool = False) -> None:
        super().__init__(
            f"wait_aof is on but Redis at {safe_url} cannot confirm fsyncs ({detail}); it "
            "needs WAITAOF (Redis >= 7.2 or Valkey) on a primary with appendonly yes, or "
            "turn wait_aof off (COORDINATOR_WAIT_AOF=0) and run appendfsync always"
        )
        self.detail = detail
        self.applied = applied
        #: The script's raw reply (the shells decode it into ``result`` / ``error``).
        self.reply: object = None
        self.result: object = None
        self.error: CoordinatorError | None = None


class AccessDenied(CoordinatorError):
    """Redis refused the credentials, or an ACL rule forbids the command or key."""


class CoordinatorUnavailable(CoordinatorError):
    """Redis (or the event sink) could not be reached or refused to serve.

    ``maybe_applied`` is True when a write may have reached the server before the
    failure, so its outcome is unknown; retry it with the same ``request_id``.
    """

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


class ReplicationTimeout(CoordinatorUnavailable):
    """Durability mode: the call ran on the primary but fewer replicas than required
    acknowledged it in time, so a failover now could lose it.

    ``result`` is what the call returned on the primary (e.g. the written
    ``AgentProject``), or ``error`` the exception it raised there (e.g. a
    ``ConflictError``: its audit event is what was not acknowledged). Retrying a
    write with the same ``request_id`` returns the stored outcome and waits again.
    """

    def __init__(
        self,
        wanted: int,
        acknowledged: int,
        *,
        reply: object = None,
        result: object = None,
        error: CoordinatorError | None = None,
    ) -> None:
        super().__init__(
            f"the change was applied on the primary but acknowledged by {acknowledged} of "
            f"{wanted} required replicas",
            maybe_applied=True,
        )
        self.wanted = wanted
        self.acknowledged = acknowledged
        #: The script's raw reply (the shells decode it into ``result`` / ``error``).
        self.reply = reply
        self.result = result
        self.error = error


class RedisOutOfMemory(CoordinatorUnavailable):
    """Redis reached ``maxmemory`` and refused a write; nothing was written.

    Reads keep working, and so does the worker, whose acknowledging and trimming of
    the audit streams frees memory. Retry once memory is free again.
    """


class FsyncTimeout(CoordinatorUnavailable):
    """``wait_aof``: the call ran but the server did not confirm within ``wait_timeout``
    that its change is fsynced to the append-only file (a slow or failing disk), so a
    crash now could lose it. ``result`` / ``error`` as in :class:`ReplicationTimeout`;
    retrying a write with the same ``request_id`` returns the stored outcome and waits
    again.
    """

    def __init__(self, *, reply: object = None) -> None:
        super().__init__(
            "the change was applied but its fsync to the append-only file was not "
            "confirmed in time (wait_timeout)",
            maybe_applied=True,
        )
        self.reply = reply
        self.result: object = None
        self.error: CoordinatorError | None = None


class SinkUnavailable(CoordinatorUnavailable):
    """The event sink (SQLite or PostgreSQL) could not be reached or refused a write.

    Nothing is lost: the worker acknowledges stream entries only after the sink
    committed them, so it retries with backoff and resumes where it stopped.
    """


class UnexpectedReply(CoordinatorError):
    """A script returned a code this client does not know (mismatched versions or a bug)."""


class SinkRefused(CoordinatorError):
    """The sink writer process refused a batch's data (not an outage): the worker
    splits the batch to find the entries to dead-letter."""


class WorkerFailed(CoordinatorError):
    """``coordinator verify``: its worker could not drain the streams."""


class EmbeddedRedisError(CoordinatorError):
    """The embedded server could not be found, started or stopped."""


class DataDirInUse(EmbeddedRedisError):
    """Another server (or manager) already uses this data directory."""

    def __init__(self, data_dir: Path, detail: str) -> None:
        super().__init__(f"data directory {data_dir} is in use: {detail}")
        self.data_dir = data_dir


class PortInUse(EmbeddedRedisError):
    """The TCP port the embedded server should listen on is taken by another process."""

    def __init__(self, port: int, detail: str = "") -> None:
        tail = f" ({detail})" if detail else ""
        super().__init__(f"port {port} is already in use by another process{tail}")
        self.port = port


class _Located(Protocol):
    @property
    def redis_url(self) -> str: ...
    @property
    def pid(self) -> int: ...


class StackError(CoordinatorError):
    """The local stack could not start or lost a component."""


class StackRunning(StackError):
    """A stack already runs in this data directory."""

    def __init__(self, data_dir: Path, info: _Located | None) -> None:
        where = f" at {info.redis_url} (pid {info.pid})" if info else ""
        super().__init__(f"a stack already runs in {data_dir}{where}")
        self.data_dir = data_dir
        self.info = info


# --- scribe_mcp's own exceptions (coordinator.compat raises these) -------------------

_LEASE_MESSAGES: Final[Mapping[str, str]] = {
    "no_active_session": "No active session for agent {}",
    "session_mismatch": "Session ID mismatch for agent {}",
    "expired": "Session lease expired for agent {}",
    "revoked": "Session lease revoked for agent {}",
    "superseded": "Session superseded by a newer session of agent {}",
}


class LegacySessionLeaseExpired(SessionLeaseExpired):
    """scribe_mcp's exception as ``coordinator.compat`` raises it (also a
    :class:`SessionLeaseExpired`), with the original's messages."""

    def __init__(self, agent_id: str, session_id: str, reason: LeaseReason) -> None:
        super().__init__(agent_id, session_id, reason)
        # A heartbeat names no agent: a session id never minted here tells none either.
        message = _LEASE_MESSAGES[reason].format(agent_id) if agent_id else None
        self.args = (message or f"No active session with id {session_id}",)


class LegacyConflictError(ConflictError):
    """scribe_mcp's exception as ``coordinator.compat`` raises it (also a
    :class:`ConflictError`); ``current`` holds the stored record."""

    def __init__(self, agent_id: str, expected_version: int, current: AgentProject | None) -> None:
        super().__init__(agent_id, expected_version, current)
        self.args = (
            f"Version conflict for agent {agent_id}: expected version {expected_version}, "
            f"current version {self.actual_version}",
        )
