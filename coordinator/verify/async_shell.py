"""Verify clients driven through :class:`~coordinator.aio.AsyncCoordinator`.

``coordinator verify --shell async``: one process runs several clients (``--tasks``)
over ONE ``AsyncCoordinator`` on one event loop, so their calls are concurrent tasks
on that loop and go out auto-pipelined (``auto_pipeline``, on by default) the way an
asyncio application's would. Each client keeps its own thread of control (the
recorded, blocking workload of :mod:`coordinator.verify.workload`): every call it
makes becomes a task on the shared loop, and the thread waits for its result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

from coordinator.aio import AsyncCoordinator
from coordinator.keys import KeySpace
from coordinator.verify.workload import Client, ClientPlan, connect_options


class AsyncShell:
    """The blocking methods the workload calls, each run as a task on ``loop``
    through the shared asynchronous client (results and exceptions unchanged)."""

    def __init__(self, client: AsyncCoordinator, loop: asyncio.AbstractEventLoop) -> None:
        self._client, self._loop = client, loop

    @property
    def keys(self) -> KeySpace:
        """The client's key layout (pure: no call to run on the loop)."""
        return self._client.keys

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop).result()

        return call


def run_async_clients(plans: Sequence[ClientPlan], ready: Any, go: Any) -> None:
    """Process entry point: one loop and one ``AsyncCoordinator`` for all ``plans``,
    each plan a client of its own (its own history file and process index)."""
    first = plans[0]
    loop = asyncio.new_event_loop()
    looping = threading.Thread(target=loop.run_forever, name="verify-loop", daemon=True)
    looping.start()
    client = AsyncCoordinator.from_url(
        first.redis_url,
        password=first.password,
        namespace=first.namespace,
        lease_ttl=first.lease_ttl,
        **connect_options(),
    )
    shell = AsyncShell(client, loop)
    try:
        shell.server_time()  # connect (and load the scripts) before the clock runs
        ready.put(first.index)
        go.wait()
        failures: list[BaseException] = []
        threads = [
            threading.Thread(
                target=_run_one, args=(plan, shell, failures), name=f"client-{plan.index}"
            )
            for plan in plans
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]  # as a lone client's would: the process exits non-zero
    finally:
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        looping.join()
        loop.close()


def _run_one(plan: ClientPlan, shell: Any, failures: list[BaseException]) -> None:
    try:
        if plan.reservations:
            from coordinator.verify.reservations import ReservationClient

            ReservationClient(plan, shell).run()
        else:
            Client(plan, shell).run()
    except BaseException as exc:  # reported by the process, after the others finish
        failures.append(exc)
