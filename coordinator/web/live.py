"""Live data for the dashboard: one shared tail of the audit streams, fanned out to
every open page through small, bounded buffers.

However fast events arrive, a page never holds more than ``buffer`` of them: a
subscriber's buffer keeps the newest and counts what it dropped, and the page is sent
at most one message per ``interval`` (the events since the last one, coalesced). The
tail itself reads at most one batch per shard at a time. Nobody watching: no tail runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from coordinator.aio import AsyncCoordinator
from coordinator.errors import CoordinatorError
from coordinator.models import AgentEvent

log = logging.getLogger(__name__)

#: Seconds to wait before following the streams again after Redis failed.
RETRY_DELAY = 1.0


class Subscription:
    """One page's view of the tail: its filters and a bounded buffer of new events."""

    def __init__(self, agent: str | None, event_type: str | None, buffer: int) -> None:
        self.agent = agent
        self.event_type = event_type
        self._events: deque[AgentEvent] = deque(maxlen=buffer)
        self._dropped = 0
        self._ready = asyncio.Event()

    def offer(self, event: AgentEvent) -> None:
        if self.agent is not None and event.agent_id != self.agent:
            return
        if self.event_type is not None and event.event_type != self.event_type:
            return
        if len(self._events) == self._events.maxlen:
            self._dropped += 1
        self._events.append(event)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._events)

    async def take(self) -> tuple[list[AgentEvent], int]:
        """Wait for news; return the buffered events (oldest first) and how many older
        ones were dropped to keep the buffer bounded."""
        await self._ready.wait()
        self._ready.clear()
        events, dropped = list(self._events), self._dropped
        self._events.clear()
        self._dropped = 0
        return events, dropped


class EventHub:
    """Follows the audit streams while anybody subscribes; offers each new event to
    every subscription."""

    def __init__(self, client: AsyncCoordinator, *, buffer: int = 200) -> None:
        self._client = client
        self._buffer = buffer
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        #: Events read from the streams since the hub was made (for the benchmark).
        self.received = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    @asynccontextmanager
    async def subscribe(
        self, agent: str | None = None, event_type: str | None = None
    ) -> AsyncIterator[Subscription]:
        subscription = Subscription(agent, event_type, self._buffer)
        self._subscriptions.add(subscription)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow(), name="coordinator-web-tail")
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            if not self._subscriptions:
                await self.stop()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _follow(self) -> None:
        while True:
            try:
                async for event in self._client.follow_events():
                    self.received += 1
                    for subscription in self._subscriptions:
                        subscription.offer(event)
            except CoordinatorError as exc:
                log.warning("event tail interrupted (%s); following again in %ss", exc, RETRY_DELAY)
            except Exception:  # a bug must not leave every page waiting in silence
                log.exception("event tail failed; following again in %ss", RETRY_DELAY)
            await asyncio.sleep(RETRY_DELAY)
