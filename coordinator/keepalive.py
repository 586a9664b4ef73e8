"""Keep-alives: hold a session's lease and say at once when it is in danger or gone.

:class:`AsyncKeepAlive` (an async context manager, two tasks on the caller's loop) and
:class:`KeepAlive` (a context manager whose work runs in a background thread) heartbeat
a session at a fraction of its TTL and watch the agent's shard of the audit stream
with a blocking ``XREAD``, so a revoke, a supersede or an end by another process is
noticed as soon as its event is appended, not at the next heartbeat. What the
observations mean is decided by :class:`coordinator.liveness.Liveness` (pure).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

from coordinator import validation
from coordinator.errors import (
    CoordinatorError,
    InvalidInputError,
    LeaseReason,
    SessionLeaseExpired,
)
from coordinator.liveness import (
    JEOPARDY_RETRY,
    WATCH_BLOCK,
    LeaseState,
    Liveness,
    death_reason,
    last_event_op,
    watch_op,
)
from coordinator.models import Session

if TYPE_CHECKING:
    from coordinator.aio import AsyncCoordinator
    from coordinator.client import Coordinator

logger = logging.getLogger(__name__)

#: How long stop() waits for the cancelled tasks (s).
STOP_GRACE = 0.1

#: A monotonic clock in seconds (injectable for tests).
Clock = Callable[[], float]


def _interval(value: float | None) -> float | None:
    if value is None:
        return None
    return validation.ttl_seconds(value, "interval")


class AsyncKeepAlive:
    """Keeps one session alive on the running event loop (see
    :meth:`AsyncCoordinator.keep_alive`)."""

    def __init__(
        self,
        coordinator: AsyncCoordinator,
        session: Session,
        *,
        interval: float | None = None,
        on_change: Callable[[AsyncKeepAlive], object] | None = None,
        end_on_exit: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(session, Session):
            raise InvalidInputError("session", "must be a Session returned by start_session")
        self._coordinator = coordinator
        self._session = session
        self._interval = _interval(interval)
        self._on_change = on_change
        self._end_on_exit = end_on_exit
        self._clock = clock
        self._liveness: Liveness | None = None
        self._lost: asyncio.Event | None = None
        #: Wakes the heartbeat task early: the lease was lost, or the stream watch
        #: failed and a heartbeat should tell at once whether Redis is reachable.
        self._wake: asyncio.Event | None = None
        self._urgent = False
        #: Set by stop(): the tasks end even if a library swallows their cancellation.
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(agent_id={self._session.agent_id!r}, "
            f"session_id={self._session.session_id!r}, state={self.state.value!r})"
        )

    # --- what the holder reads --------------------------------------------------------

    @property
    def session(self) -> Session:
        """The session as of its last confirmed heartbeat."""
        return self._session

    @property
    def state(self) -> LeaseState:
        """``alive``, ``jeopardy`` (heartbeats failing, deadline not passed) or ``lost``."""
        return LeaseState.ALIVE if self._liveness is None else self._liveness.state

    @property
    def reason(self) -> LeaseReason | None:
        """Once lost: why (the ``SessionLeaseExpired`` reason), else None."""
        return None if self._liveness is None else self._liveness.reason

    @property
    def error(self) -> str | None:
        """In jeopardy: why heartbeats are failing."""
        return None if self._liveness is None else self._liveness.error

    @property
    def lost(self) -> asyncio.Event:
        """Set once the lease is lost (``await keep_alive.lost.wait()``)."""
        if self._lost is None:
            self._lost = asyncio.Event()
        return self._lost

    def check(self) -> None:
        """Raise SessionLeaseExpired (with the reason) once the lease is lost."""
        if self.state is LeaseState.LOST:
            s = self._session
            raise SessionLeaseExpired(s.agent_id, s.session_id, self.reason or "expired")

    # --- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> AsyncKeepAlive:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Confirm the lease with a first heartbeat and start watching it. A session
        already dead leaves the keep-alive ``lost``. Raises CoordinatorUnavailable when
        Redis cannot confirm anything."""
        if self._liveness is not None:
            raise RuntimeError("this keep-alive was already started")
        self.lost  # noqa: B018 - bind the event to the running loop
        self._wake = asyncio.Event()
        stream = self._coordinator.keys.agent_keys(self._session.agent_id).stream
        after = await self._coordinator.execute(last_event_op(stream))
        sent = self._clock()
        try:
            session = await self._coordinator.heartbeat_session(self._session.session_id)
        except SessionLeaseExpired as dead:
            self._liveness = Liveness(ttl=self._session.ttl, interval=1.0, deadline=sent)
            self._changed(self._liveness.dead(dead.reason))
            return
        self._session = session
        self._liveness = Liveness.confirmed_at(sent, session.ttl, self._interval)
        self._tasks = [
            asyncio.create_task(self._beat(self._liveness)),
            asyncio.create_task(self._watch(self._liveness, stream, after)),
        ]

    async def stop(self) -> None:
        """Stop heartbeating; with ``end_on_exit`` also end the session (unless lost).

        The session is ended before the tasks are stopped, so it cannot lapse in
        between; what the tasks observe once stopping is no longer reported."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        try:
            if (
                self._end_on_exit
                and self._liveness is not None
                and self.state is not LeaseState.LOST
            ):
                s = self._session
                await self._coordinator.end_session(s.agent_id, s.session_id)
        finally:
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                task.cancel()
            if tasks:
                # A read whose cancellation redis-py swallows still ends within
                # WATCH_BLOCK (the task checks _stopping); do not wait for it here.
                await asyncio.wait(tasks, timeout=STOP_GRACE)

    # --- the two tasks ----------------------------------------------------------------

    async def _beat(self, liveness: Liveness) -> None:
        woken = self._wake
        assert woken is not None
        while liveness.state is not LeaseState.LOST and not self._stopping:
            wake = min(liveness.next_heartbeat(), liveness.deadline)
            if not self._urgent:
                with suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), max(0.0, wake - self._clock()))
            woken.clear()
            if self._stopping:
                return
            now = self._clock()
            if self._changed(liveness.tick(now)):
                continue
            if not self._urgent and now < liveness.next_heartbeat():
                continue
            self._urgent = False
            liveness.last_sent = now
            try:
                session = await asyncio.wait_for(
                    self._coordinator.heartbeat_session(self._session.session_id),
                    max(0.001, liveness.deadline - now),
                )
            except SessionLeaseExpired as dead:
                if not self._stopping:
                    self._changed(liveness.dead(dead.reason))
            except TimeoutError:
                self._changed(liveness.failed(self._clock(), "no answer before the deadline"))
            except CoordinatorError as failure:
                self._changed(liveness.failed(self._clock(), str(failure)))
            else:
                self._session = session
                self._changed(liveness.confirmed(now, session.ttl))
                await self._renew_reservations()

    async def _renew_reservations(self) -> None:
        """Renew the session's reservations with its lease (each by its own ttl). A
        failure is logged, not fatal: the lease is what the keep-alive holds."""
        try:
            await self._coordinator.renew_reservations(
                self._session.agent_id, self._session.session_id
            )
        except CoordinatorError as failure:
            logger.warning(
                "keep-alive of %s: renewing reservations failed: %s",
                self._session.session_id,
                failure,
            )

    async def _watch(self, liveness: Liveness, stream: str, after: str) -> None:
        block = min(WATCH_BLOCK, self._coordinator.settings.socket_timeout / 2)
        agent, sid = self._session.agent_id, self._session.session_id
        # Ends at stop() even when the cancellation of a blocked read is swallowed (a
        # cancel racing redis-py's read timeout): each read lasts at most ``block``.
        while liveness.state is not LeaseState.LOST and not self._stopping:
            try:
                entries = await self._coordinator.execute(watch_op(stream, after, block))
            except CoordinatorError as failure:
                # The heartbeats judge an outage: ask for one now rather than at the
                # next interval, so jeopardy is known within a second or so.
                logger.debug("keep-alive of %s: audit stream unreadable: %s", agent, failure)
                if liveness.state is LeaseState.ALIVE and self._wake is not None:
                    self._urgent = True
                    self._wake.set()
                await asyncio.sleep(JEOPARDY_RETRY)
                continue
            if self._stopping:
                return
            for entry_id, fields in entries:
                after = entry_id
                reason = death_reason(fields, agent, sid)
                if reason is not None:
                    self._changed(liveness.dead(reason))
                    return

    def _changed(self, changed: bool) -> bool:
        if not changed:
            return False
        s = self._session
        if self.state is LeaseState.LOST:
            self.lost.set()
            if self._wake is not None:
                self._wake.set()
            logger.warning("lease of %s (%s) lost: %s", s.agent_id, s.session_id, self.reason)
        elif self.state is LeaseState.JEOPARDY:
            logger.warning("lease of %s (%s) in jeopardy: %s", s.agent_id, s.session_id, self.error)
        else:
            logger.info("lease of %s (%s) alive again", s.agent_id, s.session_id)
        if self._on_change is not None:
            try:
                self._on_change(self)
            except Exception:
                logger.exception("on_change callback of the keep-alive of %s failed", s.agent_id)
        return True


class KeepAlive:
    """Keeps one session alive from a background thread (see
    :meth:`Coordinator.keep_alive`). The thread runs an :class:`AsyncKeepAlive` on its
    own event loop, with its own connections made from the coordinator's settings."""

    def __init__(
        self,
        coordinator: Coordinator,
        session: Session,
        *,
        interval: float | None = None,
        on_change: Callable[[KeepAlive], object] | None = None,
        end_on_exit: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(session, Session):
            raise InvalidInputError("session", "must be a Session returned by start_session")
        self._settings = coordinator.settings
        self._session = session
        self._options: dict[str, Any] = {
            "interval": _interval(interval),
            "end_on_exit": end_on_exit,
            "clock": clock,
        }
        self._on_change = on_change
        self._inner: AsyncKeepAlive | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        #: Set once the lease is lost (``keep_alive.lost.wait(timeout)``).
        self.lost = threading.Event()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(agent_id={self._session.agent_id!r}, "
            f"session_id={self._session.session_id!r}, state={self.state.value!r})"
        )

    @property
    def session(self) -> Session:
        """The session as of its last confirmed heartbeat."""
        return self._session if self._inner is None else self._inner.session

    @property
    def state(self) -> LeaseState:
        """``alive``, ``jeopardy`` (heartbeats failing, deadline not passed) or ``lost``."""
        return LeaseState.ALIVE if self._inner is None else self._inner.state

    @property
    def reason(self) -> LeaseReason | None:
        """Once lost: why (the ``SessionLeaseExpired`` reason), else None."""
        return None if self._inner is None else self._inner.reason

    @property
    def error(self) -> str | None:
        """In jeopardy: why heartbeats are failing."""
        return None if self._inner is None else self._inner.error

    def check(self) -> None:
        """Raise SessionLeaseExpired (with the reason) once the lease is lost."""
        if self._inner is not None:
            self._inner.check()

    def __enter__(self) -> KeepAlive:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the thread and wait for the first heartbeat (see AsyncKeepAlive.start)."""
        if self._thread is not None:
            raise RuntimeError("this keep-alive was already started")
        name = f"keep-alive {self._session.agent_id}"
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def stop(self) -> None:
        """Stop the thread; with ``end_on_exit`` also end the session (unless lost)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        with suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stop.set)
        thread.join()
        if self._failure is not None:
            raise self._failure

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        from coordinator.aio import AsyncCoordinator

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with AsyncCoordinator(self._settings) as coordinator:
            inner = AsyncKeepAlive(
                coordinator, self._session, on_change=self._changed, **self._options
            )
            try:
                await inner.start()
            except BaseException as failure:
                self._failure = failure
                self._ready.set()
                return
            self._inner = inner
            if inner.state is LeaseState.LOST:
                self.lost.set()
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                try:
                    await inner.stop()
                except BaseException as failure:
                    self._failure = failure

    def _changed(self, inner: AsyncKeepAlive) -> None:
        if self._inner is None:
            self._inner = inner
        if inner.state is LeaseState.LOST:
            self.lost.set()
        if self._on_change is not None:
            self._on_change(self)
