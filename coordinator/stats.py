"""A snapshot of one namespace for operators (``coordinator status``) and metrics.

:func:`stats_plan` is a pure plan (see :mod:`coordinator.core`): it yields commands
and batches and receives their replies, so ``Coordinator.stats()`` and
``AsyncCoordinator.stats()`` drive the same code. Every command names one key (or
none), so it runs unchanged on Redis Cluster, where each shard stream may live on
its own node: nothing is sent that spans slots.

Consumer-group lag comes from ``XINFO GROUPS`` (``lag``) on Redis 7. Redis 6.2 has no
such field, and Redis 7 leaves it empty after deletions, so the plan then works it out
from the stream: zero when the group has read up to the last id, the whole length when
it has read nothing that is still in the stream, else by counting the entries after the
group's last delivered id, at most ``lag_scan_limit`` of them (``lag_exact`` says
whether the count is exact or a lower bound).

Workers are the group's consumers whose liveness key ``<ns>:worker:<consumer>`` exists
(``GET`` for its JSON value, ``PTTL``). Every command is one the ``coordinator-admin``
user of ``deploy/users.acl`` may run (no ``SCAN``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

from coordinator.calls import Batch, Command, Plan
from coordinator.constants import DEFAULT_CONSUMER_GROUP
from coordinator.keys import KeySpace
from coordinator.server import ServerFacts, every_node, server_facts, server_warnings, summary
from coordinator.timestamps import (
    ms_to_datetime,
    next_stream_id,
    stream_id_key,
    stream_id_ms,
    time_reply_ms,
)

#: How the shell reached Redis.
RedisMode: TypeAlias = Literal["standalone", "cluster", "sentinel"]

#: Most entries counted, per shard, to work out a lag Redis does not report.
DEFAULT_LAG_SCAN_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One shard's audit stream, its consumer group and its dead letters."""

    shard: int
    stream: str
    #: Entries in the stream (persisted ones are trimmed by the worker).
    length: int
    #: Whether the worker's consumer group exists on this stream yet.
    group: bool
    #: Consumers the group knows (live or not).
    consumers: int
    last_delivered_id: str | None
    #: Entries not yet delivered to the group (None when there is no group).
    lag: int | None
    #: False when ``lag`` is a lower bound (Redis 6.2, long backlog).
    lag_exact: bool
    #: Delivered to a consumer but not acknowledged.
    pending: int
    oldest_pending_id: str | None
    #: Server time minus the oldest pending entry's creation time (s).
    oldest_pending_age: float | None
    #: Time since the oldest pending entry was last delivered (s).
    oldest_pending_idle: float | None
    #: Entries in ``{ns:shard}:dead`` (the worker could not persist them).
    dead_letters: int
    #: Live leases of the shard's agents.
    active_leases: int


@dataclass(frozen=True, slots=True)
class WorkerLiveness:
    """A live worker consumer: its liveness key ``<ns>:worker:<consumer>`` exists."""

    consumer: str
    #: Seconds the liveness key has left; the worker refreshes it every loop.
    ttl: float | None
    #: Seconds since the consumer last read or acknowledged, on its freshest stream.
    idle: float | None
    #: Entries delivered to it and not yet acknowledged, over all shards.
    pending: int
    #: The key's JSON value (consumer, pid, host, started_at, heartbeat_at).
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NamespaceStats:
    """What ``coordinator status`` shows; :meth:`to_json` is its stable JSON form."""

    namespace: str
    redis_url: str
    #: The Redis version the server is compatible with (``redis_version``; a Valkey
    #: server reports 7.2.4 here whatever its own version).
    redis_version: str
    #: ``redis`` or ``valkey`` (joined with "," should a cluster's nodes differ).
    server_kind: str
    #: The server's own version (Valkey's ``valkey_version``, Redis's ``redis_version``).
    server_version: str
    #: ``standalone``, ``cluster`` or ``sentinel`` (a primary found through Sentinel).
    redis_mode: str
    #: Primaries serving the namespace (1 unless a cluster).
    redis_nodes: int
    #: Replicas attached to the primary (None on a cluster: see each node).
    replicas: int | None
    server_time: datetime
    shards: int
    consumer_group: str
    #: Leases whose deadline is ahead of the server clock.
    active_leases: int
    #: Leases past their deadline that the reaper has not audited yet.
    expired_unreaped: int
    streams: Sequence[StreamStats]
    workers: Sequence[WorkerLiveness] = field(default_factory=tuple)
    #: What each server process says about itself (one per cluster node): kind,
    #: version, maxmemory policy, memory, persistence (see :mod:`coordinator.server`).
    servers: Sequence[ServerFacts] = field(default_factory=tuple)

    @property
    def server(self) -> ServerFacts | None:
        """The deployment in one :class:`ServerFacts` (a cluster's fullest node, its
        distinct policies joined)."""
        return summary(self.servers) if self.servers else None

    @property
    def warnings(self) -> list[str]:
        """Unsafe or unknown server settings, one line each (``status`` prints them)."""
        return server_warnings(self.servers)

    @property
    def lag(self) -> int:
        return sum(s.lag or 0 for s in self.streams)

    @property
    def lag_exact(self) -> bool:
        return all(s.lag_exact for s in self.streams)

    @property
    def pending(self) -> int:
        return sum(s.pending for s in self.streams)

    @property
    def dead_letters(self) -> int:
        return sum(s.dead_letters for s in self.streams)

    @property
    def stream_length(self) -> int:
        return sum(s.length for s in self.streams)

    @property
    def oldest_pending_age(self) -> float | None:
        ages = [s.oldest_pending_age for s in self.streams if s.oldest_pending_age is not None]
        return max(ages, default=None)

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of ``coordinator status --json``."""
        return {
            "namespace": self.namespace,
            "redis_url": self.redis_url,
            "redis_version": self.redis_version,
            "server_kind": self.server_kind,
            "server_version": self.server_version,
            "redis_mode": self.redis_mode,
            "redis_nodes": self.redis_nodes,
            "replicas": self.replicas,
            **_server_json(self.server),
            "servers": [f.to_json() for f in self.servers],
            "warnings": self.warnings,
            "server_time": _iso(self.server_time),
            "shards": self.shards,
            "consumer_group": self.consumer_group,
            "active_leases": self.active_leases,
            "expired_unreaped": self.expired_unreaped,
            "stream_length": self.stream_length,
            "lag": self.lag,
            "lag_exact": self.lag_exact,
            "pending": self.pending,
            "oldest_pending_age_seconds": self.oldest_pending_age,
            "dead_letters": self.dead_letters,
            "workers_alive": len(self.workers),
            "workers": [
                {
                    **w.info,
                    "consumer": w.consumer,
                    "ttl_seconds": w.ttl,
                    "idle_seconds": w.idle,
                    "pending": w.pending,
                }
                for w in self.workers
            ],
            "streams": [_stream_json(s) for s in self.streams],
        }


def _server_json(facts: ServerFacts | None) -> dict[str, Any]:
    """The deployment's server fields at the top level of ``status --json``."""
    data = (facts or server_facts(None)[0]).to_json()
    return {
        **{k: data[k] for k in ("maxmemory_policy", "eviction_safe", "used_memory", "maxmemory")},
        **{k: data[k] for k in ("aof_enabled", "appendfsync", "rdb_save", "persistent")},
    }


def _stream_json(stats: StreamStats) -> dict[str, Any]:
    data = asdict(stats)
    data["oldest_pending_age_seconds"] = data.pop("oldest_pending_age")
    data["oldest_pending_idle_seconds"] = data.pop("oldest_pending_idle")
    return data


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stats_plan(
    keys: KeySpace,
    *,
    mode: RedisMode,
    redis_url: str,
    group: str = DEFAULT_CONSUMER_GROUP,
    lag_scan_limit: int = DEFAULT_LAG_SCAN_LIMIT,
) -> Plan[NamespaceStats]:
    """Read the namespace's state in a handful of pipelined round trips. ``mode`` is the
    deployment the shell connected to; ``redis_url`` names it (without a password)."""
    now_ms, server, nodes, replicas, servers = yield from _server_plan(mode == "cluster")
    shards = range(keys.shards)
    streams = [keys.stream(s) for s in shards]
    counts = yield from _counts_plan(keys, now_ms)
    exists = [c.exists for c in counts]
    groups = yield from _groups_plan([streams[s] for s in shards if exists[s]], group)
    grouped = {s: groups[streams[s]] for s in shards if streams[s] in groups}
    detail = yield from _detail_plan({s: streams[s] for s in grouped}, group)
    # A stream (or its group) deleted between two round trips counts as never grouped.
    grouped = {s: info for s, info in grouped.items() if s in detail}
    idle, lags = yield from _backlog_plan(streams, grouped, detail, counts, lag_scan_limit)
    workers = yield from _workers_plan(keys, detail)

    stream_stats = []
    for s in shards:
        info = grouped.get(s)
        pending_summary = detail[s][0] if s in detail else {}
        first = pending_summary.get("min")
        lag, exact = lags.get(s, (None, True))
        stream_stats.append(
            StreamStats(
                shard=s,
                stream=streams[s],
                length=counts[s].length,
                group=info is not None,
                consumers=int(info.get("consumers", 0)) if info else 0,
                last_delivered_id=_text(info["last-delivered-id"]) if info else None,
                lag=lag,
                lag_exact=exact,
                pending=int(pending_summary.get("pending") or 0),
                oldest_pending_id=_text(first) if first else None,
                oldest_pending_age=oldest_pending_age(now_ms, pending_summary),
                oldest_pending_idle=idle.get(s),
                dead_letters=counts[s].dead,
                active_leases=counts[s].live,
            )
        )
    return NamespaceStats(
        namespace=keys.namespace,
        redis_url=redis_url,
        redis_version=server.redis_version,
        server_kind=server.kind,
        server_version=server.version,
        redis_mode=mode,
        redis_nodes=nodes,
        replicas=replicas,
        server_time=ms_to_datetime(now_ms),
        shards=keys.shards,
        consumer_group=group,
        active_leases=sum(c.live for c in counts),
        expired_unreaped=sum(c.lapsed for c in counts),
        streams=tuple(stream_stats),
        workers=tuple(workers),
        servers=servers,
    )


# --- the pending backlog: shared with the worker's trimming -----------------------------


def oldest_pending_age(now_ms: int, pending_summary: Mapping[str, Any]) -> float | None:
    """Seconds since the oldest unacknowledged entry was written (``XPENDING`` summary)."""
    first = pending_summary.get("min")
    if not first:
        return None
    return max(0.0, (now_ms - stream_id_ms(_text(first))) / 1000)


def trim_point(last_delivered_id: str, pending_summary: Mapping[str, Any]) -> str | None:
    """The id the stream may be trimmed to (``XTRIM MINID``): everything below it was
    delivered and acknowledged, so persisted. None when nothing may go."""
    threshold = next_stream_id(last_delivered_id)
    low = pending_summary.get("min") if pending_summary.get("pending") else None
    if low and stream_id_key(_text(low)) < stream_id_key(threshold):
        threshold = _text(low)
    return None if threshold == "0-1" else threshold


# --- the plan's steps ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ShardCounts:
    live: int
    lapsed: int
    length: int
    exists: bool
    dead: int


def _server_plan(
    cluster: bool,
) -> Plan[tuple[int, ServerIdentity, int, int | None, tuple[ServerFacts, ...]]]:
    """Server time, kind and version, node count, (outside a cluster) connected
    replicas, and what each server says about itself in ``INFO`` (policy, memory,
    persistence). No ``CONFIG GET``: the shipped roles may not run it (it reveals
    secrets), so ``appendfsync`` and the RDB schedule stay unknown here."""
    now_ms = time_reply_ms((yield Command("time")))
    info = yield Command("info", (), every_node(cluster))
    server, nodes = _identity(info)
    facts = server_facts(info)
    replicas: int | None = None
    if cluster:
        nodes = _primaries((yield Command("cluster_slots")), nodes)
    else:
        replicas = int(info.get("connected_slaves", 0))
    return now_ms, server, nodes, replicas, facts


def _counts_plan(keys: KeySpace, now_ms: int) -> Plan[list[_ShardCounts]]:
    """Per shard: live and lapsed leases, stream length and existence, dead letters."""
    per_shard = 5
    replies = yield Batch(
        tuple(
            command
            for s in range(keys.shards)
            for command in (
                Command("zcount", (keys.index(s), f"({now_ms}", "+inf")),
                Command("zcount", (keys.index(s), "-inf", now_ms)),
                Command("xlen", (keys.stream(s),)),
                Command("exists", (keys.stream(s),)),
                Command("xlen", (keys.dead_letters(s),)),
            )
        )
    )
    return [
        _ShardCounts(int(live), int(lapsed), int(length), bool(int(exists)), int(dead))
        for live, lapsed, length, exists, dead in (
            replies[i : i + per_shard] for i in range(0, len(replies), per_shard)
        )
    ]


def _groups_plan(streams: Sequence[str], group: str) -> Plan[dict[str, Mapping[str, Any]]]:
    """``XINFO GROUPS`` entry of ``group`` per stream that has it. XINFO GROUPS fails on
    a missing key: ask only streams that exist."""
    if not streams:
        return {}
    replies = yield Batch(
        tuple(Command("xinfo_groups", (stream,)) for stream in streams), errors_in_place=True
    )
    found: dict[str, Mapping[str, Any]] = {}
    for stream, infos in zip(streams, replies, strict=True):
        if not _ok(infos):  # deleted since the length was read
            continue
        for info in infos:
            if _text(info.get("name")) == group:
                found[stream] = info
    return found


def _detail_plan(streams: Mapping[int, str], group: str) -> Plan[dict[int, tuple[Any, Any, Any]]]:
    """Per grouped shard: the pending summary, the consumers and ``XINFO STREAM``."""
    if not streams:
        return {}
    replies = yield Batch(
        tuple(
            command
            for stream in streams.values()
            for command in (
                Command("xpending", (stream, group)),
                Command("xinfo_consumers", (stream, group)),
                Command("xinfo_stream", (stream,)),
            )
        ),
        errors_in_place=True,
    )
    found = {s: tuple(replies[3 * i : 3 * i + 3]) for i, s in enumerate(streams)}
    return {s: reply for s, reply in found.items() if all(map(_ok, reply))}  # else gone meanwhile


def _backlog_plan(
    streams: Sequence[str],
    groups: Mapping[int, Mapping[str, Any]],
    detail: Mapping[int, tuple[Any, Any, Any]],
    counts: Sequence[_ShardCounts],
    lag_scan_limit: int,
) -> Plan[tuple[dict[int, float | None], dict[int, tuple[int | None, bool]]]]:
    """Second look where needed: the oldest pending entry's idle time, and the backlog
    after the last delivered id where Redis does not report the lag."""
    lags: dict[int, tuple[int | None, bool]] = {}
    to_count: list[int] = []
    for s in groups:
        lag = _reported_lag(groups[s], detail[s][2], counts[s].length)
        if lag is None:
            to_count.append(s)
        else:
            lags[s] = (lag, True)
    oldest = [s for s in groups if detail[s][0].get("min")]
    if not oldest and not to_count:
        return {}, lags
    replies = yield Batch(
        tuple(
            Command(
                "xpending_range",
                (streams[s], _group_name(groups[s])),
                {"min": detail[s][0]["min"], "max": detail[s][0]["min"], "count": 1},
            )
            for s in oldest
        )
        + tuple(
            Command(
                "xrange",
                (streams[s], "(" + _text(groups[s]["last-delivered-id"]), "+"),
                {"count": lag_scan_limit + 1},
            )
            for s in to_count
        ),
        errors_in_place=True,
    )
    idle = {
        s: (float(r[0]["time_since_delivered"]) / 1000 if r and _ok(r) else None)
        for s, r in zip(oldest, replies[: len(oldest)], strict=True)
    }
    for s, entries in zip(to_count, replies[len(oldest) :], strict=True):
        if not _ok(entries):  # the stream went meanwhile
            lags[s] = (None, False)
            continue
        lags[s] = (min(len(entries), lag_scan_limit), len(entries) <= lag_scan_limit)
    return idle, lags


def _workers_plan(
    keys: KeySpace, detail: Mapping[int, tuple[Any, Any, Any]]
) -> Plan[list[WorkerLiveness]]:
    """Workers are the group's consumers whose liveness key exists. The keys are read
    by the names XINFO CONSUMERS gives: no SCAN (it would list every namespace's key
    names; the admin ACL user may not run it), and on a cluster the keys, which carry
    no hash tag, are found on whichever node holds them."""
    seen: dict[str, tuple[float | None, int]] = {}
    for _pending, consumers, _stream in detail.values():
        for consumer in consumers:
            name = _text(consumer["name"])
            fresh = None if consumer.get("idle") is None else int(consumer["idle"]) / 1000
            before, before_pending = seen.get(name, (None, 0))
            if before is not None and (fresh is None or before < fresh):
                fresh = before
            seen[name] = (fresh, before_pending + int(consumer.get("pending") or 0))
    if not seen:
        return []
    names = sorted(seen)
    replies = yield Batch(
        tuple(
            command
            for name in names
            for command in (
                Command("get", (keys.worker(name),)),
                Command("pttl", (keys.worker(name),)),
            )
        )
    )
    workers: list[WorkerLiveness] = []
    for i, name in enumerate(names):
        value, pttl = replies[2 * i], int(replies[2 * i + 1])
        if value is not None:  # no key: the consumer is gone (or not registered yet)
            last, pending = seen[name]
            ttl = pttl / 1000 if pttl >= 0 else None
            workers.append(WorkerLiveness(name, ttl, last, pending, _liveness(value)))
    return workers


def _ok(reply: Any) -> bool:
    """Not an error reply of a batch sent with ``errors_in_place``."""
    return not isinstance(reply, Exception)


def _group_name(info: Mapping[str, Any]) -> str:
    return _text(info["name"])


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """Which server answers: ``kind`` ``redis`` or ``valkey``, its own ``version``, and
    the Redis version it is compatible with (``redis_version``: 7.2.4 on Valkey)."""

    kind: str
    version: str
    redis_version: str


def server_identity(info: Mapping[str, Any]) -> ServerIdentity:
    """The identity in one node's ``INFO server`` section. Valkey names itself in
    ``server_name`` (as in ``HELLO``) and reports its own version as
    ``valkey_version``; Redis (which sets no ``server_name`` before 8) in
    ``redis_version``."""
    facts = server_facts(info)[0]  # the one parser of kind and version
    return ServerIdentity(facts.kind, facts.version, str(info.get("redis_version", "unknown")))


def _identity(info: Mapping[str, Any]) -> tuple[ServerIdentity, int]:
    """Server identity and node count from ``INFO server`` (should a cluster client
    answer with one section per node, differing values are joined with ",")."""
    if "redis_version" in info:
        return server_identity(info), 1
    each = [server_identity(section) for section in info.values()]
    return (
        ServerIdentity(
            ",".join(sorted({i.kind for i in each})),
            ",".join(sorted({i.version for i in each})),
            ",".join(sorted({i.redis_version for i in each})),
        ),
        len(info),
    )


def _primaries(slots: Any, default: int) -> int:
    """Masters serving slots, from a cluster client's parsed ``CLUSTER SLOTS``."""
    if isinstance(slots, Mapping):
        return len({tuple(v["primary"]) for v in slots.values() if "primary" in v}) or default
    return default


def _reported_lag(group: Mapping[str, Any], stream: Mapping[str, Any], length: int) -> int | None:
    """The group's lag when Redis reports it or it follows from the ids alone."""
    lag = group.get("lag")
    if lag is not None:
        return int(lag)
    delivered = stream_id_key(_text(group["last-delivered-id"]))
    if delivered >= stream_id_key(_text(stream.get("last-generated-id") or "0-0")):
        return 0
    first = stream.get("first-entry")
    if not first or delivered < stream_id_key(_text(first[0])):
        return length  # nothing still in the stream was delivered
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _liveness(value: Any) -> dict[str, Any]:
    """A liveness key's JSON object (an unparsable value is kept as ``raw``)."""
    try:
        data = json.loads(value)
    except ValueError:
        return {"raw": _text(value)}
    return data if isinstance(data, dict) else {"raw": data}
