"""Calls: what the pure core asks the I/O shells to execute.

An operation is an :class:`Op` (one call and the decoder of its reply); an operation
that needs several round trips is a :data:`Plan`, a generator that yields calls and
receives their replies (a :data:`StreamPlan` also yields :class:`Emit` items). The
shells (``aio.py`` and the generated ``client.py``) run them; ``execute`` is their
public seam for operations built elsewhere in the package.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

T = TypeVar("T")

# Plain slotted dataclasses, immutable by convention: a frozen dataclass's __init__
# costs about a microsecond more, and these are built on every call.


@dataclass(slots=True)
class Script:
    """Run a registered Lua script (``EVALSHA``, loading it on ``NOSCRIPT``)."""

    name: str
    keys: tuple[str, ...]
    args: tuple[str | int, ...]
    #: Safe to send again after a connection failure (idempotent).
    retry: bool = False
    #: An error reply (not an outage) is handed to the plan as the reply instead of
    #: raised: the plan decides what it means (see :class:`Command`).
    optional: bool = False


@dataclass(slots=True)
class Command:
    """Call a redis-py client method by name (so sync, async and cluster all work)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    retry: bool = True
    #: The server may refuse it harmlessly (an ACL without ``CONFIG``, a server without
    #: ``INFO``, a write at ``maxmemory``): an error reply becomes the reply (the
    #: exception object) instead of raising; outages still raise.
    optional: bool = False


@dataclass(slots=True)
class Batch:
    """Read-only commands sent in one pipeline (non-transactional, cluster-aware)."""

    commands: tuple[Command, ...]
    retry: bool = True
    #: Error replies (a key deleted since the plan's last round trip, say) come back
    #: in place of their reply instead of failing the whole batch.
    errors_in_place: bool = False


@dataclass(slots=True)
class Sleep:
    """Wait before the next step of a plan (``time.sleep`` / ``asyncio.sleep``)."""

    seconds: float
    retry: bool = True


@dataclass(slots=True)
class Offload:
    """Blocking work outside Redis (an event sink query): run in a thread by the
    asyncio shell, inline by the synchronous one."""

    run: Callable[[], Any]
    retry: bool = False


@dataclass(slots=True)
class Ahead:
    """Start ``call`` and go on at once: the reply is a handle for :class:`Collect`.
    The plan works (decodes the last replies) while Redis answers this one; the asyncio
    shell runs it as a task, the synchronous one in a thread. Only read-only calls."""

    call: Script | Command | Batch
    retry: bool = True


@dataclass(slots=True)
class Collect:
    """The reply of a call started by :class:`Ahead` (its error, raised)."""

    handle: Any
    retry: bool = True


Call: TypeAlias = Script | Command | Batch | Sleep | Offload | Ahead | Collect


@dataclass(slots=True)
class Emit(Generic[T]):
    """Items a streaming plan hands to its caller."""

    items: Sequence[T]


@dataclass(slots=True)
class Op(Generic[T]):
    """A single round trip: one call and the decoder of its reply."""

    call: Call
    decode: Callable[[Any], T]


Plan: TypeAlias = Generator[Call, Any, T]
StreamPlan: TypeAlias = Generator["Call | Emit[T]", Any, None]
