"""Calls started ahead of a plan's own work (:class:`coordinator.calls.Ahead`).

The asyncio shell runs one as a task of the running loop, the synchronous shell in a
thread of a small shared pool; either way the plan collects the reply (or the error)
later, and a reply nobody collects (a listing abandoned half way) is dropped quietly.
"""

from __future__ import annotations

import os
from asyncio import Future, ensure_future
from collections.abc import Callable, Coroutine
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from threading import Lock
from typing import Any

_pool: ThreadPoolExecutor | None = None
_lock = Lock()


def _forget_pool() -> None:
    # A forked child has none of the parent's threads, but the pool's bookkeeping says
    # one idle thread waits: it would queue work that never runs. Start afresh.
    global _pool, _lock
    _pool, _lock = None, Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _quiet(future: Any) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: no "exception was never retrieved" warning


def ahead(work: Coroutine[Any, Any, Any]) -> Future[Any]:
    """Run ``work`` as a task of the running loop."""
    task = ensure_future(work)
    task.add_done_callback(_quiet)
    return task


def ahead_in_thread(run: Callable[..., Any], *args: Any) -> ThreadFuture[Any]:
    """Run ``run(*args)`` in a thread of the shared pool."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="coordinator-ahead")
    future = _pool.submit(run, *args)
    future.add_done_callback(_quiet)
    return future
