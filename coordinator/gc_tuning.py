"""Fewer runs of Python's cycle collector while the worker persists batches.

A batch of 16,000 entries makes about 50,000 lists and tuples (the parsed reply, the
rows), none in a cycle and all freed by reference counting. At Python's default first
threshold (700 allocations) that is some seventy collections a batch (50,000 / 700),
which rescan the batch each time they promote it (what that costs the worker:
docs/benchmarks.md, "Event worker"). The worker raises the threshold while it runs and
restores it afterwards; the collection itself still runs, only less
often, so cycles made elsewhere in the process are still freed.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

#: The first (youngest generation) threshold while a worker runs.
THRESHOLD: Final = 100_000

_lock = threading.Lock()
_users = 0
_saved: tuple[int, int, int] = (0, 0, 0)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the first threshold to :data:`THRESHOLD` (never lower it) until the last
    of any overlapping uses (workers in several threads or tasks) ends."""
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(max(THRESHOLD, _saved[0]), *_saved[1:])
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                gc.set_threshold(*_saved)
