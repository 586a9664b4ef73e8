"""Auto-pipelining for the asyncio client: concurrent calls share one round trip.

Fifty tasks sharing one ``AsyncCoordinator`` each send an ``EVALSHA`` and wait for its
reply; Redis answers them in a few microseconds each, so the time goes to the client's
per-call overhead and to one socket write and read per call. ioredis'
``enableAutoPipelining`` and Go's rueidis gather the calls issued in the same event-loop
turn and write them together; this does the same on top of redis-py's pipeline (which
also routes a cluster batch to each slot's master, one pipeline per node).

How a batch forms: the first caller of a loop turn becomes its *leader*; it yields once
(``sleep(0)``), which runs every task already ready in that turn, and each of those
that calls in joins the batch instead of sending. A leader that finds itself alone sends
its call as before, so a lone caller pays one loop iteration and nothing else: there is
no timer. A batch is sent by a task of its own, so a caller cancelled while it waits
never strands the others. While a batch is in flight the next turn's calls form the
next batch, on another connection of the pool.

What each caller gets back is exactly what a lone call would have produced: its own
reply, or its own error reply raised (``NOSCRIPT``, a script's refusal, an ACL denial),
handled by the caller's usual recovery. A connection failure fails every call of the
batch with that error; the caller's recovery then decides, as for a lone call, whether
the write may have been applied (any call of a batch that reached the wire may have).
"""

from __future__ import annotations

from asyncio import CancelledError, Future, Task, get_running_loop, sleep
from typing import Any

from coordinator.connection import AsyncRedisClient

_Entry = tuple[tuple[Any, ...], "Future[Any]"]


class AutoPipeline:
    """Sends the calls made by concurrent tasks of one event loop together."""

    __slots__ = ("_gathering", "_sending", "client")

    def __init__(self, client: AsyncRedisClient) -> None:
        self.client = client
        #: The batch the current loop turn's leader is gathering, if any.
        self._gathering: list[_Entry] | None = None
        #: Batches on the wire (held so the loop does not drop their tasks).
        self._sending: set[Task[None]] = set()

    async def execute_command(self, *args: Any) -> Any:
        """Send one command (in a batch when other tasks call in the same turn) and
        return its reply; raise its error reply or the batch's connection error."""
        batch = self._gathering
        if batch is not None:
            future: Future[Any] = get_running_loop().create_future()
            batch.append((args, future))
            return await future
        batch = self._gathering = []
        try:
            await sleep(0)  # let the tasks ready in this turn join
        except CancelledError:
            self._gathering = None
            if batch:
                self._send(batch)
            raise
        self._gathering = None
        if not batch:
            return await self.client.execute_command(*args)
        own: Future[Any] = get_running_loop().create_future()
        batch.insert(0, (args, own))  # the leader called first
        self._send(batch)
        return await own

    def _send(self, batch: list[_Entry]) -> None:
        task = get_running_loop().create_task(self._pipeline(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _pipeline(self, batch: list[_Entry]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for args, _ in batch:
            pipe.execute_command(*args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except CancelledError:  # the loop is shutting down
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
