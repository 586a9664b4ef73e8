"""The one session an MCP connection holds, kept alive for as long as it is held.

Each MCP client gets its own ``coordinator mcp`` process, so one holder per process:
``start`` begins (or takes over) the connection's session and puts it on an
:class:`~coordinator.keepalive.AsyncKeepAlive`; ``close`` (the client disconnected)
stops the keep-alive and ends the session unless it was already lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from coordinator.aio import AsyncCoordinator
from coordinator.errors import CoordinatorError
from coordinator.keepalive import AsyncKeepAlive
from coordinator.liveness import LeaseState
from coordinator.mcp.schemas import KeepAliveState
from coordinator.models import Session

logger = logging.getLogger(__name__)


class NoSession(CoordinatorError):
    """A write tool was called before ``start_session``."""

    def __init__(self) -> None:
        super().__init__("this connection holds no session: call start_session(agent_id) first")


class SessionHolder:
    """The connection's session and its keep-alive. ``on_change(keep_alive)`` is called
    on the event loop whenever the keep-alive's state changes."""

    def __init__(
        self,
        coordinator: AsyncCoordinator,
        *,
        on_change: Callable[[AsyncKeepAlive], object] | None = None,
    ) -> None:
        self.coordinator = coordinator
        self._on_change = on_change
        self._keep_alive: AsyncKeepAlive | None = None

    @property
    def keep_alive(self) -> AsyncKeepAlive | None:
        return self._keep_alive

    @property
    def session(self) -> Session | None:
        return None if self._keep_alive is None else self._keep_alive.session

    @property
    def state(self) -> LeaseState | None:
        return None if self._keep_alive is None else self._keep_alive.state

    def state_of(self, agent_id: str) -> KeepAliveState:
        """The keep-alive state if this connection holds ``agent_id``'s session, else
        ``none``."""
        session = self.session
        if session is None or session.agent_id != agent_id:
            return "none"
        return self._keep_alive.state.value if self._keep_alive is not None else "none"

    def agent_or(self, agent_id: str | None) -> str:
        """``agent_id``, or this connection's agent when None."""
        if agent_id is not None:
            return agent_id
        session = self.session
        if session is None:
            raise NoSession()
        return session.agent_id

    def require(self) -> Session:
        """The live session to write with. Raises NoSession, or SessionLeaseExpired
        (with the keep-alive's reason) once the lease is lost."""
        if self._keep_alive is None:
            raise NoSession()
        self._keep_alive.check()
        return self._keep_alive.session

    async def start(
        self,
        agent_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        ttl: float | None = None,
        exclusive: bool = False,
    ) -> Session:
        """Start a session and keep it alive. A session this connection held before is
        let go first (ended, when it belonged to another agent: a new session of the
        same agent supersedes it anyway)."""
        previous = self._keep_alive
        session = await self.coordinator.start_session(
            agent_id, metadata, ttl=ttl, exclusive=exclusive
        )
        if previous is not None:
            self._keep_alive = None
            await self._release(previous, end=previous.session.agent_id != agent_id)
        keep_alive = self.coordinator.keep_alive(session, on_change=self._changed)
        await keep_alive.start()
        self._keep_alive = keep_alive
        return keep_alive.session

    async def heartbeat(self) -> Session:
        """Extend the lease now (the keep-alive does this on its own)."""
        session = self.require()
        return await self.coordinator.heartbeat_session(session.session_id)

    async def end(self) -> tuple[Session, bool]:
        """End the connection's session; (the session, whether this call ended it)."""
        if self._keep_alive is None:
            raise NoSession()
        keep_alive, self._keep_alive = self._keep_alive, None
        session = keep_alive.session
        await keep_alive.stop()
        ended = await self.coordinator.end_session(session.agent_id, session.session_id)
        return session, ended

    async def close(self) -> None:
        """The client went away: stop the keep-alive and end the session if still held."""
        keep_alive, self._keep_alive = self._keep_alive, None
        if keep_alive is not None:
            await self._release(keep_alive, end=True)

    async def _release(self, keep_alive: AsyncKeepAlive, *, end: bool) -> None:
        await keep_alive.stop()
        if end and keep_alive.state is not LeaseState.LOST:
            session = keep_alive.session
            try:
                await self.coordinator.end_session(session.agent_id, session.session_id)
            except CoordinatorError as failure:
                logger.warning("could not end session %s: %s", session.session_id, failure)

    def _changed(self, keep_alive: AsyncKeepAlive) -> None:
        if keep_alive is self._keep_alive and self._on_change is not None:
            self._on_change(keep_alive)
