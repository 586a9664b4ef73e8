"""Live data for the dashboard: one shared tail of the audit streams, fanned out to
every open page through small, bounded buffers.

However fast events arrive, a page never holds more than ``buffer`` of them: a
subscriber's buffer keeps the newest raw entries and counts what it dropped, and the
page is sent at most one message per interval (the events since the last one,
coalesced). Entries are decoded only when a page takes them, so an event that is
dropped costs a filter check and nothing more. The tail reads at most ``BATCH`` entries
per shard per round trip. Nobody watching: no tail runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

from coordinator.aio import AsyncCoordinator
from coordinator.calls import Batch, Command, Op
from coordinator.errors import CoordinatorError
from coordinator.events import decode_entry, matches
from coordinator.models import AgentEvent
from coordinator.timestamps import stream_id_key

log = logging.getLogger(__name__)

#: Seconds to wait before following the streams again after Redis failed.
RETRY_DELAY: Final = 1.0
#: Seconds between reads when nothing new arrived.
POLL_INTERVAL: Final = 0.2
#: Most entries read per shard per round trip.
BATCH: Final = 500

#: A stream entry as read: shard, stream id, fields.
Entry = tuple[int, str, dict[str, Any]]


class Subscription:
    """One page's view of the tail: its filters and a bounded buffer of new entries."""

    def __init__(self, agent: str | None, event_type: str | None, buffer: int) -> None:
        self.agent = agent
        self.event_type = event_type
        self._entries: deque[Entry] = deque(maxlen=buffer)
        self._dropped = 0
        self._ready = asyncio.Event()

    def offer(self, entries: Sequence[Entry]) -> None:
        """New entries, oldest first; those beyond the buffer push the oldest out."""
        size = self._entries.maxlen or 0
        before = len(self._entries)
        added = 0
        for entry in entries:
            if matches(entry[2], self.agent, self.event_type):
                self._entries.append(entry)
                added += 1
        if added:
            self._dropped += max(0, before + added - size)
            self._ready.set()

    def __len__(self) -> int:
        return len(self._entries)

    async def take(self) -> tuple[list[AgentEvent], int]:
        """Wait for news; return the buffered events (oldest first, decoded now) and how
        many older ones were dropped to keep the buffer bounded. An entry that is not a
        well-formed event (the worker dead-letters those) is left out."""
        await self._ready.wait()
        self._ready.clear()
        entries, dropped = list(self._entries), self._dropped
        self._entries.clear()
        self._dropped = 0
        events = []
        for shard, stream_id, fields in entries:
            try:
                events.append(decode_entry(shard, stream_id, fields))
            except (KeyError, ValueError, TypeError):
                continue
        return events, dropped


class EventHub:
    """Follows every shard's audit stream while anybody subscribes; offers each batch of
    new entries to every subscription."""

    def __init__(self, client: AsyncCoordinator, *, buffer: int = 200) -> None:
        self._client = client
        self._buffer = buffer
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        #: Entries read from the streams since the hub was made.
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
            started = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._follow(started), name="coordinator-web-tail")
            # Subscribed means: what is written from now on arrives.
            await asyncio.wait({started, self._task}, return_when=asyncio.FIRST_COMPLETED)
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

    async def _follow(self, started: asyncio.Future[None]) -> None:
        while True:
            try:
                await self._tail(started)
            except CoordinatorError as exc:
                log.warning("event tail interrupted (%s); following again in %ss", exc, RETRY_DELAY)
            except Exception:  # a bug must not leave every page waiting in silence
                log.exception("event tail failed; following again in %ss", RETRY_DELAY)
            if not started.done():
                started.set_result(None)
            await asyncio.sleep(RETRY_DELAY)

    async def _tail(self, started: asyncio.Future[None]) -> None:
        keys = self._client.keys
        streams = [keys.stream(shard) for shard in range(keys.shards)]
        newest = await self._client.execute(
            Op(
                Batch(tuple(Command("xrevrange", (s, "+", "-"), {"count": 1}) for s in streams)),
                list,
            )
        )
        last = [entries[0][0] if entries else "0-0" for entries in newest]
        if not started.done():
            started.set_result(None)
        while True:
            reads = tuple(
                Command("xrange", (s, "(" + last[i], "+"), {"count": BATCH})
                for i, s in enumerate(streams)
            )
            replies = await self._client.execute(Op(Batch(reads), list))
            fresh: list[Entry] = []
            for shard, entries in enumerate(replies):
                if entries:
                    last[shard] = entries[-1][0]
                    fresh.extend((shard, stream_id, fields) for stream_id, fields in entries)
            if not fresh:
                await asyncio.sleep(POLL_INTERVAL)
                continue
            fresh.sort(key=lambda entry: (stream_id_key(entry[1]), entry[0]))
            self.received += len(fresh)
            for subscription in self._subscriptions:
                subscription.offer(fresh)
