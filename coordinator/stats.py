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
from typing import Any, Final

from coordinator.connection import is_sentinel_url
from coordinator.constants import DEFAULT_CONSUMER_GROUP
from coordinator.core import Batch, Command, Plan
from coordinator.keys import KeySpace
from coordinator.settings import Settings
from coordinator.timestamps import ms_to_datetime, stream_id_ms

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
    redis_version: str
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
            "redis_mode": self.redis_mode,
            "redis_nodes": self.redis_nodes,
            "replicas": self.replicas,
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


def _stream_json(stats: StreamStats) -> dict[str, Any]:
    data = asdict(stats)
    data["oldest_pending_age_seconds"] = data.pop("oldest_pending_age")
    data["oldest_pending_idle_seconds"] = data.pop("oldest_pending_idle")
    return data


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stats_plan(
    settings: Settings,
    keys: KeySpace,
    *,
    cluster: bool,
    group: str = DEFAULT_CONSUMER_GROUP,
    lag_scan_limit: int = DEFAULT_LAG_SCAN_LIMIT,
) -> Plan[NamespaceStats]:
    """Read the namespace's state in a handful of pipelined round trips."""
    seconds, micros = yield Command("time")
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    server = yield Command("info", ("server",))
    version, nodes = _version(server)
    replicas: int | None = None
    if cluster:
        nodes = _primaries((yield Command("cluster_slots")), nodes)
    else:
        replication = yield Command("info", ("replication",))
        replicas = int(replication.get("connected_slaves", 0))
    mode = "cluster" if cluster else "standalone"
    if is_sentinel_url(settings.redis_url):
        mode = "sentinel"

    shards = range(keys.shards)
    streams = [keys.stream(s) for s in shards]
    per_shard = 5
    counts = yield Batch(
        tuple(
            command
            for s in shards
            for command in (
                Command("zcount", (keys.index(s), f"({now_ms}", "+inf")),
                Command("zcount", (keys.index(s), "-inf", now_ms)),
                Command("xlen", (streams[s],)),
                Command("exists", (streams[s],)),
                Command("xlen", (keys.dead_letters(s),)),
            )
        )
    )
    live = [int(counts[s * per_shard]) for s in shards]
    lapsed = [int(counts[s * per_shard + 1]) for s in shards]
    length = [int(counts[s * per_shard + 2]) for s in shards]
    exists = [bool(int(counts[s * per_shard + 3])) for s in shards]
    dead = [int(counts[s * per_shard + 4]) for s in shards]

    # XINFO GROUPS fails on a missing key: ask only streams that exist.
    present = [s for s in shards if exists[s]]
    groups: dict[int, Mapping[str, Any]] = {}
    if present:
        replies = yield Batch(tuple(Command("xinfo_groups", (streams[s],)) for s in present))
        for s, infos in zip(present, replies, strict=True):
            for info in infos:
                if _text(info.get("name")) == group:
                    groups[s] = info

    grouped = sorted(groups)
    detail: dict[int, tuple[Any, Any, Any]] = {}
    if grouped:
        replies = yield Batch(
            tuple(
                command
                for s in grouped
                for command in (
                    Command("xpending", (streams[s], group)),
                    Command("xinfo_consumers", (streams[s], group)),
                    Command("xinfo_stream", (streams[s],)),
                )
            )
        )
        for i, s in enumerate(grouped):
            detail[s] = (replies[3 * i], replies[3 * i + 1], replies[3 * i + 2])

    # Second look where needed: the oldest pending entry's idle time, and the backlog
    # after the last delivered id where Redis does not report the lag.
    lags: dict[int, tuple[int | None, bool]] = {}
    to_count: list[int] = []
    for s in grouped:
        lag = _reported_lag(groups[s], detail[s][2], length[s])
        if lag is None:
            to_count.append(s)
        else:
            lags[s] = (lag, True)
    oldest = [s for s in grouped if detail[s][0].get("min")]
    if oldest or to_count:
        replies = yield Batch(
            tuple(
                Command(
                    "xpending_range",
                    (streams[s], group),
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
            )
        )
        idle = {
            s: (float(r[0]["time_since_delivered"]) / 1000 if r else None)
            for s, r in zip(oldest, replies[: len(oldest)], strict=True)
        }
        for s, entries in zip(to_count, replies[len(oldest) :], strict=True):
            lags[s] = (min(len(entries), lag_scan_limit), len(entries) <= lag_scan_limit)
    else:
        idle = {}

    # Workers are the group's consumers whose liveness key exists. The keys are read
    # by the names XINFO CONSUMERS gives: no SCAN (it would list every namespace's
    # key names; the admin ACL user may not run it), and on a cluster the keys, which
    # carry no hash tag, are found on whichever node holds them.
    seen: dict[str, tuple[float | None, int]] = {}
    for s in grouped:
        for consumer in detail[s][1]:
            name = _text(consumer["name"])
            fresh = None if consumer.get("idle") is None else int(consumer["idle"]) / 1000
            before, before_pending = seen.get(name, (None, 0))
            if before is not None and (fresh is None or before < fresh):
                fresh = before
            seen[name] = (fresh, before_pending + int(consumer.get("pending") or 0))
    workers: list[WorkerLiveness] = []
    if seen:
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
        for i, name in enumerate(names):
            value, pttl = replies[2 * i], int(replies[2 * i + 1])
            if value is not None:  # no key: the consumer is gone (or not registered yet)
                last, pending = seen[name]
                ttl = pttl / 1000 if pttl >= 0 else None
                workers.append(WorkerLiveness(name, ttl, last, pending, _liveness(value)))

    stream_stats = []
    for s in shards:
        info = groups.get(s)
        pending_summary = detail[s][0] if s in detail else {}
        first = pending_summary.get("min")
        lag, exact = lags.get(s, (None, True))
        stream_stats.append(
            StreamStats(
                shard=s,
                stream=streams[s],
                length=length[s],
                group=info is not None,
                consumers=int(info.get("consumers", 0)) if info else 0,
                last_delivered_id=_text(info["last-delivered-id"]) if info else None,
                lag=lag,
                lag_exact=exact,
                pending=int(pending_summary.get("pending") or 0),
                oldest_pending_id=_text(first) if first else None,
                oldest_pending_age=(
                    max(0.0, (now_ms - stream_id_ms(_text(first))) / 1000) if first else None
                ),
                oldest_pending_idle=idle.get(s),
                dead_letters=dead[s],
                active_leases=live[s],
            )
        )
    return NamespaceStats(
        namespace=keys.namespace,
        redis_url=settings.safe_redis_url,
        redis_version=version,
        redis_mode=mode,
        redis_nodes=nodes,
        replicas=replicas,
        server_time=ms_to_datetime(now_ms),
        shards=keys.shards,
        consumer_group=group,
        active_leases=sum(live),
        expired_unreaped=sum(lapsed),
        streams=tuple(stream_stats),
        workers=tuple(workers),
    )


def _version(info: Mapping[str, Any]) -> tuple[str, int]:
    """Server version and node count from ``INFO server`` (should a cluster client
    answer with one section per node, their versions are joined if they differ)."""
    if "redis_version" in info:
        return str(info["redis_version"]), 1
    versions = sorted({str(section["redis_version"]) for section in info.values()})
    return ",".join(versions), len(info)


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
    delivered = _id(_text(group["last-delivered-id"]))
    if delivered >= _id(_text(stream.get("last-generated-id") or "0-0")):
        return 0
    first = stream.get("first-entry")
    if not first or delivered < _id(_text(first[0])):
        return length  # nothing still in the stream was delivered
    return None


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _liveness(value: Any) -> dict[str, Any]:
    """A liveness key's JSON object (an unparsable value is kept as ``raw``)."""
    try:
        data = json.loads(value)
    except ValueError:
        return {"raw": _text(value)}
    return data if isinstance(data, dict) else {"raw": data}
