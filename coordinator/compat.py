"""Drop-in replacement for scribe_mcp's ``AgentContextManager``.

Switch by changing one import::

    # from scribe_mcp.state.agent_manager import AgentContextManager, SessionLeaseExpired
    from coordinator.compat import AgentContextManager, SessionLeaseExpired

The method names, arguments and return shapes are the original's: session ids as
``str``, project records and events as dicts with the original keys and timestamp
strings, ``None`` from ``heartbeat_session``/``end_session``/``log_agent_event``. It is
backed by :class:`~coordinator.AsyncCoordinator`, so every process connected to the
same Redis and namespace shares the sessions, records and events. Where the original
was wrong the adapter is right; ``docs/compat.md`` lists every difference and why.

``ConflictError`` and ``SessionLeaseExpired`` here subclass the package's own, so
``except coordinator.ConflictError`` and ``except coordinator.compat.ConflictError``
both work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Final

from coordinator import errors, validation
from coordinator.aio import AsyncCoordinator
from coordinator.client import Coordinator
from coordinator.errors import InvalidInputError
from coordinator.models import AgentEvent, AgentProject

__all__ = [
    "EVENT_KEYS",
    "RECORD_KEYS",
    "STALE_SESSION_REASON_EXPIRED",
    "STALE_SESSION_REASON_MISMATCH",
    "STALE_SESSION_REASON_NO_ACTIVE",
    "AgentContextManager",
    "ConflictError",
    "SessionLeaseExpired",
    "get_agent_context_manager",
    "init_agent_context_manager",
]

#: ``SessionLeaseExpired.reason`` values under the original's constant names. The
#: original's expired reason read ``session_lease_expired``; here it is ``expired``, and
#: ``revoked`` and ``superseded`` are new.
STALE_SESSION_REASON_NO_ACTIVE: Final = "no_active_session"
STALE_SESSION_REASON_MISMATCH: Final = "session_mismatch"
STALE_SESSION_REASON_EXPIRED: Final = "expired"

#: Keys of a project record dict (the original's ``agent_projects`` columns).
RECORD_KEYS: Final = (
    "agent_id",
    "project_name",
    "version",
    "updated_at",
    "updated_by",
    "session_id",
)
#: Keys of an event dict (the original's ``agent_project_events`` columns).
EVENT_KEYS: Final = (
    "id",
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
    "created_at",
)

SessionLeaseExpired = errors.LegacySessionLeaseExpired
ConflictError = errors.LegacyConflictError


@contextmanager
def _original_errors(agent_id: object, session_id: object) -> Iterator[None]:
    """Raise the original's exception classes. A session id this system never minted
    (the original's UUIDs, say) is what it is here: not an active session."""
    try:
        yield
    except errors.ConflictError as exc:
        raise ConflictError(exc.agent_id, exc.expected_version, exc.current) from None
    except errors.SessionLeaseExpired as exc:
        raise SessionLeaseExpired(exc.agent_id, exc.session_id, exc.reason) from None
    except InvalidInputError as exc:
        if exc.field != "session_id" or not isinstance(session_id, str):
            raise
        agent = agent_id if isinstance(agent_id, str) else ""
        raise SessionLeaseExpired(agent, session_id, "no_active_session") from None


# --- the original's shapes ------------------------------------------------------------


def sql_timestamp(value: datetime) -> str:
    """The original's ``updated_at`` form (SQLite ``CURRENT_TIMESTAMP``: UTC, seconds)."""
    return value.strftime("%Y-%m-%d %H:%M:%S")


def record_dict(record: AgentProject) -> dict[str, Any]:
    """A project record as the original's ``get_current_project`` returned it."""
    return {
        "agent_id": record.agent_id,
        "project_name": record.project_name,
        "version": record.version,
        "updated_at": sql_timestamp(record.updated_at),
        "updated_by": record.updated_by,
        "session_id": record.session_id,
    }


def event_dict(event: AgentEvent) -> dict[str, Any]:
    """An event as the original's ``get_agent_events`` returned it (an
    ``agent_project_events`` row). ``id`` is the event's identity here:
    ``<shard>:<stream id>``. Columns the original declared NOT NULL are never None."""
    return {
        "id": f"{event.shard}:{event.stream_id}",
        "agent_id": event.agent_id,
        "session_id": event.session_id or "",
        "event_type": event.event_type.value,
        "from_project": event.from_project,
        "to_project": event.to_project or "",
        "expected_version": event.expected_version,
        "actual_version": event.actual_version,
        "success": event.success,
        "error_message": event.error_message,
        # The original stored json.dumps(metadata or {}) and returned that text.
        "metadata": json.dumps(event.metadata or {}),
        "created_at": event.created_at.isoformat(),
    }


def _start_arguments(metadata: object, session_id: object) -> tuple[Any, str | None]:
    """Accept ``(metadata)``, ``(metadata, session_id=...)`` and the newer original's
    positional ``(session_id, metadata)``; returns (metadata, caller's session id)."""
    if isinstance(metadata, str):
        metadata, session_id = session_id, metadata
    elif metadata is None and isinstance(session_id, Mapping):
        metadata, session_id = session_id, None
    if session_id is not None and not isinstance(session_id, str):
        raise InvalidInputError("session_id", f"must be a string, not {type(session_id).__name__}")
    return metadata, session_id or None


# --- the adapter ----------------------------------------------------------------------


class AgentContextManager:
    """The original's agent context manager, on Redis (asyncio, like the original).

    ``AgentContextManager(coordinator)`` uses an :class:`AsyncCoordinator`;
    ``AgentContextManager.from_url(url, namespace=...)`` makes one. The original's
    ``AgentContextManager(storage, state_manager)`` also works: both are kept as
    attributes for code that reads them but never used (Redis is the only truth, and
    the original's JSON mirroring wrote nothing); the coordinator then comes from
    ``url``/``overrides`` or the ``COORDINATOR_*`` environment variables.
    """

    def __init__(
        self,
        storage: Any = None,
        state_manager: Any = None,
        *,
        coordinator: AsyncCoordinator | None = None,
        url: str | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(storage, AsyncCoordinator) and coordinator is None:
            storage, coordinator = None, storage
        if isinstance(storage, Coordinator) or isinstance(coordinator, Coordinator):
            raise InvalidInputError(
                "coordinator",
                "must be an AsyncCoordinator: the adapter is asyncio, like the original",
            )
        if coordinator is not None and (url is not None or overrides):
            raise InvalidInputError("coordinator", "give a coordinator or settings, not both")
        #: Whether this adapter made its coordinator (and so closes it in aclose()).
        self._owned = coordinator is None
        if coordinator is None:
            coordinator = (
                AsyncCoordinator.from_url(url, **overrides)
                if url is not None
                else AsyncCoordinator(**overrides)
            )
        self.coordinator = coordinator
        #: The original's constructor arguments, kept for callers that read them; unused.
        self.storage = storage
        self.state_manager = state_manager

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> AgentContextManager:
        """An adapter with its own coordinator on ``url`` (``namespace=`` etc. as for
        :meth:`AsyncCoordinator.from_url`); ``aclose()`` closes it."""
        return cls(url=url, **overrides)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.coordinator!r})"

    async def __aenter__(self) -> AgentContextManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the coordinator if this adapter made it (a supplied one is the caller's)."""
        if self._owned:
            await self.coordinator.aclose()

    # --- the original's methods ----------------------------------------------------------

    async def start_session(
        self,
        agent_id: str,
        metadata: Mapping[str, Any] | str | None = None,
        session_id: str | Mapping[str, Any] | None = None,
    ) -> str:
        """Start a session (a lease of the coordinator's ``lease_ttl``, 15 minutes by
        default) and return its id. A live session of the agent is superseded.

        Takes the original's call forms ``(agent_id, metadata)`` and the newer
        ``(agent_id, session_id, metadata)``. A caller's ``session_id`` cannot become
        the id (ids are minted with the fencing token); it is kept in the session's
        metadata as ``client_session_id``. Use the returned id.
        Raises InvalidInputError, CoordinatorUnavailable.
        """
        meta, client_sid = _start_arguments(metadata, session_id)
        if client_sid is not None:
            validation.metadata(meta)  # a non-mapping gets the usual error, not a TypeError
            meta = {**(meta or {}), "client_session_id": client_sid}
        session = await self.coordinator.start_session(agent_id, meta)
        return session.session_id

    async def set_current_project(
        self,
        agent_id: str,
        project_name: str | None,
        session_id: str,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        """Compare-and-set the agent's project with its live session; returns the record.

        ``expected_version``: None writes unconditionally, N only if the stored version
        is N, 0 only if the agent has no record. ``project_name=None`` clears.
        Raises SessionLeaseExpired, ConflictError (with ``current``),
        InvalidInputError, CoordinatorUnavailable.
        """
        with _original_errors(agent_id, session_id):
            record = await self.coordinator.set_current_project(
                agent_id, project_name, session_id, expected_version
            )
        return record_dict(record)

    async def get_current_project(self, agent_id: str) -> dict[str, Any] | None:
        """The agent's record (``project_name`` None once cleared), or None."""
        record = await self.coordinator.get_current_project(agent_id)
        return None if record is None else record_dict(record)

    async def heartbeat_session(self, session_id: str) -> None:
        """Extend the session's lease. Raises SessionLeaseExpired when it is not alive
        (the original silently did nothing)."""
        with _original_errors(None, session_id):
            await self.coordinator.heartbeat_session(session_id)

    async def end_session(self, agent_id: str, session_id: str) -> None:
        """End the session (audited once). Ending a session that is not the agent's
        live one does nothing, as in the original."""
        try:
            await self.coordinator.end_session(agent_id, session_id)
        except InvalidInputError as exc:
            # A session id never minted here names no session, so there is nothing to end.
            if exc.field != "session_id" or not isinstance(session_id, str):
                raise

    async def cleanup_expired_sessions(self) -> int:
        """Audit every lapsed lease of every process as ``session_expired``; returns how
        many this call reaped."""
        return await self.coordinator.cleanup_expired_sessions()

    async def log_agent_event(
        self,
        agent_id: str,
        session_id: str,
        event_type: str,
        to_project: str,
        from_project: str | None = None,
        expected_version: int | None = None,
        actual_version: int | None = None,
        success: bool = True,
        error_message: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record an application event in the audit stream, atomically.

        It is stored as type ``app_event`` with ``event_type`` in its metadata
        (``logged_type``): an application reports, it cannot forge the coordinator's own
        events. ``session_id`` may be empty; otherwise it must be one of the agent's ids.
        Raises InvalidInputError, CoordinatorUnavailable (the original swallowed errors).
        """
        coordinator = self.coordinator
        op = coordinator.operations.log_event(
            agent_id,
            session_id,
            event_type,
            to_project,
            from_project,
            expected_version,
            actual_version,
            success,
            error_message,
            metadata,
        )
        await coordinator.execute(op)

    async def get_agent_events(
        self,
        agent_id: str | None = None,
        event_type: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest-first events as the original's dicts, optionally filtered.

        Raises InvalidInputError (e.g. an unknown event type), CoordinatorUnavailable.
        """
        events = await self.coordinator.get_agent_events(
            agent_id or None, event_type or None, limit
        )
        return [event_dict(e) for e in events]


# --- the original's module functions --------------------------------------------------

_agent_context_manager: AgentContextManager | None = None


def get_agent_context_manager() -> AgentContextManager:
    """The instance made by :func:`init_agent_context_manager`; RuntimeError before."""
    if _agent_context_manager is None:
        raise RuntimeError(
            "AgentContextManager not initialized. Call init_agent_context_manager first."
        )
    return _agent_context_manager


def init_agent_context_manager(
    storage: Any = None,
    state_manager: Any = None,
    *,
    coordinator: AsyncCoordinator | None = None,
    url: str | None = None,
    **overrides: Any,
) -> AgentContextManager:
    """Make the process-wide adapter and return it. Takes the original's
    ``(storage, state_manager)`` (kept, unused) and ours: a ``coordinator``, or ``url``
    and settings overrides such as ``namespace``; without them the ``COORDINATOR_*``
    environment variables configure the connection. A previous instance is replaced,
    not closed."""
    global _agent_context_manager
    _agent_context_manager = AgentContextManager(
        storage, state_manager, coordinator=coordinator, url=url, **overrides
    )
    return _agent_context_manager
