"""Listing live leases at scale: the plan that walks the lease index, and the bulk
decoding of what ``read_leases`` returns.

A listing of 100,000 leases spends its time lease by lease, in the server's script
and in the client's decoding, so both are kept lean:

* each shard's index is walked with ``ZSCAN`` (it returns every member present for
  the whole walk at least once, however the set changes meanwhile; a walk by rank or
  by deadline can skip one); up to :data:`SHARDS_IN_FLIGHT` shards are walked at once,
  and every round trip is one pipeline holding each walking shard's next ``ZSCAN``
  and one ``read_leases`` per page read by the previous round trip, so the server
  reads a page while the client parses the replies of the ones before;
* ``read_leases`` returns each lease as one string (its fields joined by newlines),
  so the client parses one reply element per lease instead of six;
* a :class:`~coordinator.models.Lease` is built without running pydantic's
  validation: the values come from our own scripts (``start_session`` and
  ``heartbeat`` wrote them), and :func:`trusted_lease` stores exactly the values the
  validator would have stored (the same types, the same fields set), so the result
  is equal to, and serialises like, a validated one (``tests/test_listing.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from json import JSONDecoder, loads
from operator import itemgetter
from typing import Any, Final, TypeVar

from pydantic import BaseModel

from coordinator.calls import Ahead, Batch, Collect, Command, Emit, Plan, Script, StreamPlan
from coordinator.keys import KeySpace
from coordinator.models import Lease
from coordinator.scripts import digest

T = TypeVar("T")

#: Lease hash fields a listing reads, in this order (``LEASE_FIELDS`` in core); the
#: order ``read_leases`` joins them in.
FIELDS: Final = ("sid", "start", "hb", "exp", "ttl", "meta")
#: Shards whose index is walked at the same time (each round trip reads one page of
#: each): at most this many pages of leases are in flight.
SHARDS_IN_FLIGHT: Final = 16

_new = object.__new__
_fromtimestamp = datetime.fromtimestamp
_NAMES: Final = tuple(Lease.model_fields)
_FIELDS_SET: Final = set(_NAMES)
# The slots pydantic's own model_construct fills, set through their descriptors.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_member = itemgetter(0)  # of a (member, score) pair of ZSCAN
_scan = JSONDecoder().scan_once  # type: ignore[attr-defined]
#: Below this many ms since the epoch (the year 2096) ``fromtimestamp(ms / 1000)`` is
#: exact to the millisecond, so a datetime plus a whole number of ms is the same value.
_EXACT_BELOW: Final = 4_000_000_000_000
#: Deadline minus last heartbeat (ms; the lease's TTL as a rule) -> that timedelta.
_gaps: dict[int, timedelta] = {}
#: A lease's TTL field (ms) -> its TTL in seconds.
_ttls: dict[str, float] = {}


def leases_from(agents: Sequence[str], reply: Sequence[str | None]) -> list[Lease]:
    """The live leases of a ``read_leases`` reply (one string per agent, in order, its
    fields joined by newlines; None where the lease lapsed since the index was read)."""
    leases: list[Lease] = []
    append = leases.append
    gaps, seconds = _gaps, _ttls
    for agent, packed in zip(agents, reply, strict=True):
        if not packed:
            continue
        sid, start, heartbeat, deadline, ttl, meta = packed.split("\n", 5)
        started_ms = int(start)
        started = _fromtimestamp(started_ms / 1000, UTC)
        if heartbeat == start:  # no heartbeat yet: the same instant
            beat_ms, beat = started_ms, started
        else:
            beat_ms = int(heartbeat)
            beat = _fromtimestamp(beat_ms / 1000, UTC)
        deadline_ms = int(deadline)
        gap = gaps.get(deadline_ms - beat_ms)
        if gap is not None and deadline_ms < _EXACT_BELOW:
            expires = beat + gap
        else:
            expires = _fromtimestamp(deadline_ms / 1000, UTC)
            _remember_gap(deadline_ms - beat_ms)
        lease = _new(Lease)
        _set_dict(
            lease,
            {
                "session_id": sid,
                "agent_id": agent,
                "fencing_token": int(sid.partition("-")[0]),
                "started_at": started,
                "last_heartbeat": beat,
                "expires_at": expires,
                "ttl": seconds[ttl] if ttl in seconds else _seconds(ttl),
                "metadata": _metadata(meta) if meta else None,
            },
        )
        _set_fields(lease, _FIELDS_SET.copy())
        _set_extra(lease, None)
        _set_private(lease, None)
        append(lease)
    return leases


def trusted_lease(
    agent: str, sid: str, start: str, heartbeat: str, deadline: str, ttl: str, meta: str | None
) -> Lease:
    """The :class:`Lease` of one agent's lease-hash fields (``FIELDS`` order), as
    written by our scripts: equal to ``Lease(...)`` of the same values, unvalidated."""
    fields = (sid, start, heartbeat, deadline, ttl, meta or "")
    (lease,) = leases_from([agent], ["\n".join(fields)])
    return lease


def _seconds(ttl: str) -> float:
    value = int(ttl) / 1000
    if len(_ttls) < 4096:  # bounded: a fleet has a handful of TTLs
        _ttls[ttl] = value
    return value


def _remember_gap(ms: int) -> None:
    if ms >= 0 and len(_gaps) < 4096:  # bounded: a fleet has a handful of TTLs
        _gaps[ms] = timedelta(milliseconds=ms)


def _metadata(raw: str) -> dict[str, Any]:
    # As validation.decode_metadata, which is json.loads (and pydantic copies the dict
    # it validates); scan_once skips loads' Python wrapper around the same C scanner.
    try:
        value, end = _scan(raw, 0)
    except StopIteration:
        value, end = None, -1
    if end != len(raw):  # leading or trailing white space, or not JSON: as loads does
        value = loads(raw)
    return value if type(value) is dict else {"value": value}


#: A round trip of the listing: the pages it reads, their reads, the scans, their shards.
_Flight = tuple[list[tuple[int, list[str]]], list[Command], list[Command], list[int]]


def leases_plan(keys: KeySpace, page_size: int) -> StreamPlan[Lease]:
    """Every live lease of every shard, ``page_size`` index members per shard and
    round trip (never all in memory: at most :data:`SHARDS_IN_FLIGHT` pages).

    Each round trip is one pipeline: every walking shard's next ``ZSCAN`` and a
    ``read_leases`` of each page the last one found. It is started ahead
    (:class:`Ahead`) before the last replies are decoded, so Redis reads the next
    pages while the client builds the leases of these."""
    shards: Iterator[int] = iter(range(keys.shards))
    cursors: dict[int, int | str] = {}  # walking shard -> its ZSCAN cursor
    seen: dict[int, set[str]] = {}  # ZSCAN may repeat members while the set rehashes
    sha = digest("read_leases")
    handle: Any = None  # the round trip in flight, and what it asked for:
    flight: _Flight | None = None

    def fill() -> None:  # walk more shards while there is room and any are left
        while len(cursors) < SHARDS_IN_FLIGHT:
            shard = next(shards, None)
            if shard is None:
                return
            cursors[shard], seen[shard] = 0, set()

    fill()
    while True:
        replies: Any = None
        if flight is not None:
            replies = yield Collect(handle)
        done, flight = flight, None
        pages: list[tuple[int, list[str]]] = []  # what the next round trip reads
        if done is not None:
            # The scans first (cheap): they say what the next round trip reads.
            _, reads, scans, scanned = done
            for shard, scan, reply in zip(scanned, scans, replies[len(reads) :], strict=True):
                if isinstance(reply, Exception):
                    reply = yield scan
                cursor, members = reply
                known = seen[shard]
                agents = list(map(_member, members))
                if not known.isdisjoint(agents):
                    agents = [m for m in agents if m not in known]
                if agents:
                    known.update(agents)
                    pages.append((shard, agents))
                if int(cursor) == 0:
                    del cursors[shard], seen[shard]
                else:
                    cursors[shard] = cursor
            fill()  # finished shards make room for more
        if pages or cursors:
            reads = [_read(keys, shard, agents, sha) for shard, agents in pages]
            walking = list(cursors.items())
            scans = [
                Command("zscan", (keys.index(shard), cursor), {"count": page_size})
                for shard, cursor in walking
            ]
            handle = yield Ahead(Batch((*reads, *scans), errors_in_place=True))
            flight = (pages, reads, scans, [shard for shard, _ in walking])
        if done is not None:
            read_pages, reads, _, _ = done
            for (_, agents), read, reply in zip(
                read_pages, reads, replies[: len(reads)], strict=True
            ):
                if isinstance(reply, Exception):
                    # NOSCRIPT, or a failure: once more on its own, with the shell's
                    # script loading, retries and error mapping.
                    reply = yield Script("read_leases", read.args[2:], (), retry=True)
                live = leases_from(agents, reply)
                if live:
                    yield Emit(live)
        if flight is None:
            return


def records_plan(
    keys: KeySpace, agents: Sequence[str], decode: Callable[[str, Sequence[str]], T | None]
) -> Plan[list[T | None]]:
    """The project records of ``agents`` (``decode(agent, fields)`` of each, None for an
    agent without one): one ``read_records`` per shard, all in one pipeline."""
    by_shard: dict[int, list[int]] = {}
    for i, agent in enumerate(agents):
        by_shard.setdefault(keys.shard_of(agent), []).append(i)
    sha = digest("read_records")
    reads = [
        (shard, tuple(keys.agent_in(shard, agents[i]) for i in places))
        for shard, places in by_shard.items()
    ]
    replies = (
        (
            yield Batch(
                tuple(Command("evalsha", (sha, len(k), *k)) for _, k in reads), errors_in_place=True
            )
        )
        if reads
        else []
    )
    records: list[T | None] = [None] * len(agents)
    for (_, agent_keys), places, reply in zip(reads, by_shard.values(), replies, strict=True):
        if isinstance(reply, Exception):  # NOSCRIPT or a failure: alone, as in leases_plan
            reply = yield Script("read_records", agent_keys, (), retry=True)
        for i, packed in zip(places, reply, strict=True):
            if packed:
                records[i] = decode(agents[i], packed.split("\n"))
    return records


def _read(keys: KeySpace, shard: int, agents: list[str], sha: str) -> Command:
    # Every key declared (DESIGN.md: no key names built inside Lua). EVALSHA as a
    # pipelined command; a NOSCRIPT reply is retried as a Script (see leases_plan).
    prefix = keys.lease_in(shard, "")
    return Command("evalsha", (sha, len(agents), *[prefix + a for a in agents]))
