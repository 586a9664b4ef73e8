"""The worker's consumer groups: created idempotently, and at ``maxmemory`` too.

``XGROUP CREATE`` needs memory, so a server that filled up refuses it even when the
group exists (Redis checks memory before looking). A group that exists is all the
worker needs: reading, acknowledging and trimming are allowed at the limit, and free
memory. A stream no worker ever read has no group and cannot get one there: it is
persisted by ``XRANGE`` and trimmed (only what the sink holds, up to the first entry
it cannot take, since dead-lettering needs memory too), then its group is created in
the memory that freed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from redis.exceptions import ResponseError

from coordinator.errors import RedisOutOfMemory
from coordinator.failures import error_code, out_of_memory
from coordinator.timestamps import next_stream_id

log = logging.getLogger("coordinator.worker")

#: Persists a stream's entries as read by ``XRANGE`` (shard, entries); returns the id
#: of the first entry it could not persist, None when it persisted all.
Store = Callable[[int, Sequence[tuple[str, Any]]], Awaitable[str | None]]


async def ensure_groups(
    client: Any, streams: Mapping[str, int], group: str, batch: int, store: Store, url: str
) -> None:
    """Create ``group`` on every stream (from the start) unless it exists. Raises
    RedisOutOfMemory when a group is missing and memory cannot be freed for it."""
    missing = []
    for stream in streams:
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if error_code(exc) == "BUSYGROUP":
                continue
            if not out_of_memory(exc):
                raise
            if not await has_group(client, stream, group):
                missing.append(stream)
    for stream in missing:  # all of them first: each frees part of what is needed
        await drain_ungrouped(client, stream, streams[stream], batch, store)
    for stream in missing:
        with suppress(ResponseError):  # BUSYGROUP, or out of memory still
            await client.xgroup_create(stream, group, id="0", mkstream=True)
        if not await has_group(client, stream, group):
            raise RedisOutOfMemory(
                f"Redis at {url} is out of memory: cannot create the consumer group of {stream}"
            )


async def has_group(client: Any, stream: str, group: str) -> bool:
    try:
        groups = await client.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return False
    return any(g["name"] == group for g in groups)  # decode_responses


async def drain_ungrouped(client: Any, stream: str, shard: int, batch: int, store: Store) -> None:
    """Persist and trim a stream without a group, batch by batch (see the module)."""
    while True:
        items = await client.xrange(stream, "-", "+", count=batch)
        if not items:
            return
        failed = await store(shard, items)
        keep = failed or next_stream_id(items[-1][0])
        removed = await client.xtrim(stream, minid=keep, approximate=False)
        log.warning("out of memory, %s has no group: persisted, trimmed %d", stream, removed)
        if failed:
            return
