"""asyncio connections belong to the event loop that opened them.

An :class:`~coordinator.AsyncCoordinator` may be used from several event loops: one
after another (successive ``asyncio.run()`` calls, as test suites do) or side by side
(one loop per thread). It keeps one :class:`LoopLink` (client and direct node clients)
per loop, and these helpers make sure a link never outlives its loop:

* :func:`close_with_loop` registers an async generator with the running loop, which
  ``asyncio.run()`` (``loop.shutdown_asyncgens()``) finalizes before it closes the
  loop: the link's connections are closed properly, inside their own loop.
* :func:`release` frees the sockets of a link whose loop was closed without that step
  (``loop.close()`` on a hand-made loop): its transports can no longer be closed
  through the loop, so their sockets are closed directly.

The synchronous client has no loops: its generated copy keeps a single link, keyed by
None.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C")

#: The loop of a coordinator not bound to any yet (the sync client's loop is None).
UNBOUND: Any = object()
L = TypeVar("L")


class LoopLink(Generic[C]):
    """What one event loop owns: its client, the direct clients of cluster masters
    (durability mode) and the lock that serialises connecting. ``loop`` is None in
    the synchronous client."""

    __slots__ = ("client", "guard", "lock", "loop", "nodes", "owned", "send")

    def __init__(self, loop: asyncio.AbstractEventLoop | None, lock: Any) -> None:
        self.loop = loop
        self.lock = lock
        self.client: C | None = None
        #: How the hot path sends a command on ``client`` (it or an auto-pipeline).
        self.send: Any = None
        #: Whether the coordinator opened ``client`` (a caller-supplied one is theirs).
        self.owned = False
        self.nodes: dict[tuple[str, int], C] = {}
        self.guard: AsyncGenerator[None, None] | None = None

    def clients(self) -> list[C]:
        """The clients this link opened (not a caller-supplied one)."""
        mine = [self.client] if self.client is not None and self.owned else []
        return mine + list(self.nodes.values())


async def close_with_loop(
    close: Callable[[L], Awaitable[None]], link: L
) -> AsyncGenerator[None, None]:
    """Run ``close(link)`` inside the running loop when the loop shuts down its async
    generators (``asyncio.run()`` does, just before closing the loop).

    The caller must keep the returned generator: the loop holds it weakly."""

    async def guard() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with suppress(Exception):
                await close(link)

    agen = guard()
    await agen.__anext__()  # the first step registers it with the running loop
    return agen


def discard(link: LoopLink[Any], close: Callable[[LoopLink[Any]], Any]) -> None:
    """Let go of the link of another event loop: a running loop closes it itself
    (``close(link)`` is scheduled there); a closed one cannot, so its sockets are
    released here."""
    loop = link.loop
    if loop is None:
        return
    if not loop.is_closed():
        closing = close(link)
        try:
            asyncio.run_coroutine_threadsafe(closing, loop)
            return
        except RuntimeError:  # closed in the meantime
            closing.close()
    release(link.clients())
    link.client, link.nodes = None, {}


def release(clients: list[Any]) -> None:
    """Free the sockets of asyncio clients whose event loop is closed, without the
    loop (best effort; what cannot be reached is left to the garbage collector)."""
    for client in clients:
        for connection in _connections(client):
            writer = getattr(connection, "_writer", None)
            if writer is None:
                continue
            connection._writer = connection._reader = None
            _close_transport(writer.transport)


def _connections(client: Any) -> list[Any]:
    pools = [getattr(client, "connection_pool", None)]
    nodes_manager = getattr(client, "nodes_manager", None)  # a cluster client
    if nodes_manager is not None:
        pools = [
            *getattr(nodes_manager, "nodes_cache", {}).values(),
            *getattr(nodes_manager, "startup_nodes", {}).values(),
        ]
        nodes_manager.default_node = None  # what its aclose() leaves: nothing to close
    found: list[Any] = []
    for pool in pools:
        if pool is None:
            continue
        for name in ("_available_connections", "_in_use_connections", "_connections"):
            found += list(getattr(pool, name, ()) or ())
    return found


def _close_transport(transport: Any) -> None:
    # A closed loop can no longer run the transport's close; close what it holds.
    protocol = getattr(transport, "_ssl_protocol", None)
    if protocol is not None:  # TLS: the application transport wraps the socket's
        transport._closed = True
        transport = getattr(protocol, "_transport", None)
    sock = getattr(transport, "_sock", None)
    if sock is None:
        return
    transport._closing = True
    transport._sock = None
    try:
        sock.close()
    except OSError as exc:  # pragma: no cover - closing a socket hardly fails
        log.debug("closing a socket of a closed event loop failed: %s", exc)
