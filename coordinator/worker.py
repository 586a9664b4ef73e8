"""The event worker: makes every shard's audit stream durable in the event sink.

One consumer group (``coordinator``) reads every shard stream of a namespace. A batch
is persisted with insert-or-ignore on the event's stream identity and only then
acknowledged, so a crash at any instant loses nothing (unacknowledged entries are
delivered again) and duplicates nothing (the sink ignores an identity it holds).

Around that loop the worker:

* re-reads its own pending entries at start, and periodically claims (``XAUTOCLAIM``)
  entries idle longer than ``claim_idle_ms`` from consumers that died;
* moves entries it cannot decode, that the sink refuses (found by splitting the
  failing batch), or that were delivered more than ``max_deliveries`` times to the
  shard's dead-letter stream, atomically with their acknowledgement;
* trims each stream up to its oldest unacknowledged entry, never further;
* reaps expired leases every ``reap_interval`` seconds;
* keeps a liveness key with a TTL (``coordinator worker --check``) and, optionally,
  serves Prometheus metrics, ``/healthz`` and ``/readyz``;
* watches the persisted audit for version and fencing-token regressions (possible
  after a failover lost acknowledged writes) and records each as an
  ``audit_anomaly`` event and a metric.

Redis and sink outages are retried with jittered backoff and bounded logging; the
worker never stops reading for good and never acknowledges what it did not persist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from coordinator import constants as C
from coordinator import validation
from coordinator.aio import AsyncCoordinator
from coordinator.collector import fewer_collections
from coordinator.errors import (
    AccessDenied,
    CoordinatorUnavailable,
    InvalidInputError,
    SinkUnavailable,
    first_line,
)
from coordinator.events import entry_row
from coordinator.metrics import MetricsServer, WorkerMetrics
from coordinator.models import EventType
from coordinator.settings import Settings
from coordinator.sinks import EventRow, Sink, sink_from_url
from coordinator.sinks.process import ProcessSink
from coordinator.sinks.sqlite import SQLiteSink
from coordinator.timestamps import stream_id_key

log = logging.getLogger("coordinator.worker")

try:  # redis[hiredis] is a dependency; tolerate an installation without it
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover
    _pack = None  # type: ignore[assignment]

#: The worker stores an audit_anomaly event raised for an entry of shard ``s`` under
#: shard ``ANOMALY_SHARD - s`` with the entry's stream id: unique, and raising it
#: again is ignored by the sink.
ANOMALY_SHARD: Final = -2
#: Event types whose ``actual_version`` is the record's new version.
_VERSIONED: Final = frozenset(
    {
        EventType.PROJECT_SET.value,
        EventType.PROJECT_SWITCHED.value,
        EventType.PROJECT_CLEARED.value,
        EventType.PROJECT_IMPORTED.value,
    }
)
_STARTED: Final = EventType.SESSION_STARTED.value
#: Seconds between repeated "still unavailable" log lines during an outage.
_OUTAGE_LOG_EVERY: Final = 30.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How the worker reads, retries and reports (every field has a safe default)."""

    #: Consumer name; stable names let a restarted worker re-read its own pending
    #: entries at once (default ``<host>-<pid>``, reclaimed after ``claim_idle_ms``).
    consumer: str | None = None
    group: str = C.DEFAULT_CONSUMER_GROUP
    #: Most entries read per stream per call (one batch is at most shards x batch).
    batch: int = 1000
    #: How long one read blocks when there is nothing new (ms).
    block_ms: int = 1000
    #: Entries pending this long on any consumer are claimed; keep it well above the
    #: slowest batch (ms).
    claim_idle_ms: int = 60_000
    #: Seconds between claim rounds.
    claim_interval: float = 5.0
    #: Deliveries after which an entry is dead-lettered instead of retried.
    max_deliveries: int = 5
    #: Seconds between reaper runs (0 disables reaping in this worker).
    reap_interval: float = 0.5
    #: Seconds between trims (and the pending / length gauges).
    trim_interval: float = 1.0
    #: TTL of the liveness key (s); refreshed every second.
    liveness_ttl: float = 15.0
    #: Drain everything there is, then exit.
    burst: bool = False
    metrics_host: str = "127.0.0.1"
    #: Serve ``/metrics``, ``/healthz``, ``/readyz`` here (0: a free port; None: off).
    metrics_port: int | None = None
    #: Upper bound of the backoff between retries during an outage (s).
    retry_cap: float = 5.0
    #: Agents whose last version and fencing token are remembered for the regression
    #: check (the first seen forgotten first).
    watch_agents: int = 200_000
    #: Write a SQLite sink named by URL from a child process (see sinks/process.py).
    sink_process: bool = True

    def __post_init__(self) -> None:
        for name in ("batch", "block_ms", "claim_idle_ms", "max_deliveries", "watch_agents"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidInputError(name, "must be a positive integer")
        for name in ("claim_interval", "trim_interval", "liveness_ttl", "retry_cap"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < 86400:
                raise InvalidInputError(name, "must be a positive number of seconds")
        if not isinstance(self.reap_interval, int | float) or not 0 <= self.reap_interval < 86400:
            raise InvalidInputError("reap_interval", "must be 0 (off) or a number of seconds")
        if self.consumer is not None:
            validation.worker_name("consumer", self.consumer)
        validation.worker_name("group", self.group)
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise InvalidInputError("metrics_port", "must be a TCP port")


def default_consumer() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return f"{host or 'worker'}-{os.getpid()}"


@dataclass
class RegressionWatch:
    """Remembers each agent's last persisted version and fencing token.

    Within one shard stream an agent's events are totally ordered, and accepted
    versions and tokens only rise; a later event that carries a lower one means
    acknowledged writes were lost (e.g. by an asynchronous failover).
    """

    capacity: int = 200_000
    #: agent -> (ms, seq) of its last event, highest version and fencing token seen
    seen: dict[str, tuple[int, int, int | None, int | None]] = field(default_factory=dict)

    def check(self, rows: Sequence[EventRow]) -> list[tuple[EventRow, str, str]]:
        """Rows that regress, with the kind and a description."""
        found: list[tuple[EventRow, str, str]] = []
        seen = self.seen
        get = seen.get
        for row in rows:
            if not row[12]:  # rejected attempts change nothing
                continue
            agent, etype, token = row[5], row[7], row[15]
            version = row[11] if etype in _VERSIONED else None
            prev = get(agent)
            if prev is None:
                seen[agent] = (row[3], row[4], version, token)
                continue
            ms, seq, last_version, last_token = prev
            if (row[3], row[4]) <= (ms, seq):  # a re-delivery (or older): nothing new
                continue
            if version is not None and last_version is not None:
                if version <= last_version:
                    found.append(
                        (row, "version_regression", f"version {version} after {last_version}")
                    )
                    version = last_version
            elif version is None:
                version = last_version
            if token is not None and last_token is not None:
                if token < last_token or (etype == _STARTED and token == last_token):
                    found.append(
                        (row, "fencing_regression", f"fencing token {token} after {last_token}")
                    )
                token = max(token, last_token)
            elif token is None:
                token = last_token
            seen[agent] = (row[3], row[4], version, token)
        # Forget the agents seen first (insertion order) beyond the capacity.
        for _ in range(len(seen) - self.capacity):
            del seen[next(iter(seen))]
        return found


def anomaly_row(row: EventRow, kind: str, description: str) -> EventRow:
    """The audit_anomaly event raised for a regressing row (see :data:`ANOMALY_SHARD`)."""
    meta = json.dumps({"kind": kind, "shard": row[1], "stream_id": row[2], "event": row[7]})
    return (
        row[0], ANOMALY_SHARD - row[1], row[2], row[3], row[4], row[5], row[6],
        EventType.AUDIT_ANOMALY.value, row[8], row[9], row[10], row[11], False,
        description, meta, row[15],
    )  # fmt: skip


#: A stream entry as read: shard, entry id, fields (a dict, the flat field/value list
#: of a raw reply, or None for an entry deleted while pending).
Entry: TypeAlias = tuple[int, str, "dict[str, str] | list[str] | None"]


class _Stopped(Exception):
    """The worker was asked to stop while it waited out an outage."""


class EventWorker:
    """Persists a namespace's audit streams to a sink. ``await run()`` until stopped."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink | None = None,
        options: WorkerOptions | None = None,
    ) -> None:
        self.options = options or WorkerOptions()
        # A blocking read must never hit the socket timeout (that would look like
        # an outage): keep the timeout well above the block time.
        floor = self.options.block_ms / 1000 + 5
        if settings.socket_timeout < floor:
            settings = Settings(**{**dict(settings), "socket_timeout": floor})
        self.settings = settings
        self.sink: Sink | ProcessSink
        if sink is None:
            if settings.sink_url is None:
                from coordinator.paths import default_sink_url

                sink = sink_from_url(default_sink_url())
            else:
                sink = sink_from_url(settings.sink_url.get_secret_value())
            # SQLite works in the calling process, holding the GIL while it binds rows:
            # a writer process of its own lets reading and writing use two cores.
            if self.options.sink_process and isinstance(sink, SQLiteSink):
                self.sink = ProcessSink(sink)
            else:
                self.sink = sink
        else:
            self.sink = sink
        self.coordinator = AsyncCoordinator(settings)
        self.keys = self.coordinator.keys
        self.namespace = self.keys.namespace
        self.consumer = self.options.consumer or default_consumer()
        self.group = self.options.group
        self.metrics = WorkerMetrics()
        self.watch = RegressionWatch(self.options.watch_agents)
        self.streams = {self.keys.stream(s): s for s in range(self.keys.shards)}
        self._stopping = asyncio.Event()
        self._rng = random.Random()
        self._client: Any = None
        self._started_at = datetime.now(UTC).isoformat()
        self._last_loop = 0.0
        self._redis_ok = False
        self._sink_ok = True
        self._due = {"claim": 0.0, "reap": 0.0, "trim": 0.0, "live": 0.0}
        self._outage_logged: dict[str, float] = {}
        self.server: MetricsServer | None = None
        self._inflight: asyncio.Future[None] | None = None  # the batch being written
        self._acking: asyncio.Future[None] | None = None  # the last batch's acknowledgement
        self._recovered = False
        self._registered = False

    # --- lifecycle -----------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish (persist and ack) the batch in hand, then return from :meth:`run`."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> WorkerMetrics:
        """Run until :meth:`request_stop` (or, in burst mode, until drained)."""
        if self.options.metrics_port is not None:
            self.server = MetricsServer(
                self.metrics, self.healthy, self.ready,
                self.options.metrics_host, self.options.metrics_port,
            )  # fmt: skip
            port = await self.server.start()
            log.info("metrics on http://%s:%s/metrics", self.options.metrics_host, port)
        log.info(
            "worker %s: namespace %r, %d shards, redis %s, sink %s",
            self.consumer, self.namespace, self.keys.shards,
            self.settings.safe_redis_url, self.sink.location,
        )  # fmt: skip
        maintenance = None if self.options.burst else asyncio.ensure_future(self._maintain())
        try:
            with fewer_collections():
                await self._loop()
        finally:
            if maintenance is not None:
                self.request_stop()
                await maintenance
            await self._shutdown()
        log.info("worker %s stopped: %s", self.consumer, self.metrics.summary())
        return self.metrics

    async def _loop(self) -> None:
        while not self.stopping:
            self._last_loop = time.monotonic()
            try:
                if self._client is None:
                    self._client = await self.coordinator.redis()
                    # Entries as flat field/value lists: building a dict per entry
                    # would cost a fifth of the worker's time (entry_row reads both).
                    self._client.set_response_callback("XREADGROUP", _raw_reply)
                    await self._ensure_groups()
                    self._redis_up()
                if not self._recovered:
                    await self._recover_own_pending()
                    self._recovered = True
                if self.options.burst:
                    await self._housekeeping()
                await self._claim_when_due()
                got = await self._read_new()
                if not got and self.options.burst and await self._drained():
                    return
            except _Stopped:
                break  # still settle the acknowledgements under way
            except (NoPermissionError, AuthenticationError) as exc:
                # Wrong credentials, or an ACL user without the worker's commands:
                # retrying cannot help. Exit; the supervisor restarts the worker.
                raise _access_denied(self.settings, exc) from None
            except ResponseError as exc:
                # NOGROUP, or (Redis 7) UNBLOCKED when the stream went while we waited.
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                # Redis restarted without its data, or someone deleted the group:
                # recreate it from the start (the sink ignores what it already has).
                log.warning("consumer group missing (%s); recreating it", exc)
                await self._ensure_groups()
            except (CoordinatorUnavailable, RedisError, RedisClusterException, OSError) as exc:
                if isinstance(exc, SinkUnavailable):
                    raise
                await self._redis_down(exc)
        # Asked to stop: finish the batch in hand (persist and ack it).
        try:
            await self._settle()
        except (_Stopped, CoordinatorUnavailable, RedisError, RedisClusterException, OSError):
            log.warning("the last batch stays pending; it is persisted on the next start")

    async def _shutdown(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self._client is not None:
            with suppress(RedisError, RedisClusterException, OSError):  # it expires anyway
                await self._client.delete(self.keys.worker(self.consumer))
        await self.coordinator.aclose()

    def healthy(self) -> bool:
        """The loop turned recently (a stuck worker fails its liveness probe)."""
        limit = max(10.0, 3 * self.options.block_ms / 1000)
        return time.monotonic() - self._last_loop < limit

    def ready(self) -> bool:
        """Registered (liveness key written), connected to Redis, and the sink accepts
        writes."""
        return self._registered and self._redis_ok and self._sink_ok and self.healthy()

    # --- reading -------------------------------------------------------------------

    async def _ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self._client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _read_new(self) -> bool:
        """Read one batch of new entries and start persisting it; False when there
        were none.

        The batch read before is being persisted meanwhile (the sink works in a
        thread): reading and decoding overlap with writing, and a batch is only
        acknowledged once the sink committed it.
        """
        block = None if self.options.burst or self._inflight else self.options.block_ms
        if self.coordinator.cluster:
            # One command per stream (each on the node owning it): never CROSSSLOT.
            pipe = self._client.pipeline(transaction=False)
            for stream in self.streams:
                pipe.xreadgroup(self.group, self.consumer, {stream: ">"}, self.options.batch)
            replies = [pair for reply in await pipe.execute() for pair in _stream_pairs(reply)]
            if not replies and block:
                await self._pause(min(block / 1000, 0.02))
        else:
            replies = await self._client.xreadgroup(
                self.group, self.consumer, dict.fromkeys(self.streams, ">"),
                self.options.batch, block,
            )  # fmt: skip
        entries = self._entries(replies)
        prepared = self._prepare(entries) if entries else None
        await self._settle_write()
        if prepared is not None:
            self._inflight = asyncio.ensure_future(self._complete(entries, *prepared))
        return bool(entries)

    async def _settle_write(self) -> None:
        """Wait for the batch being persisted, if any (its acknowledgement may still be
        under way); raise a failed acknowledgement's error as soon as it is known."""
        task, self._inflight = self._inflight, None
        if task is not None:
            await task
        if self._acking is not None and self._acking.done():
            acking, self._acking = self._acking, None
            acking.result()

    async def _settle(self) -> None:
        """Wait for the batch being persisted and for every acknowledgement."""
        try:
            await self._settle_write()
        finally:
            acking, self._acking = self._acking, None
            if acking is not None:
                await acking

    def _entries(self, replies: Any) -> list[Entry]:
        out: list[Entry] = []
        for stream, items in _stream_pairs(replies):
            shard = self.streams[stream]
            out += [(shard, entry_id, fields) for entry_id, fields in items]
        return out

    async def _recover_own_pending(self) -> None:
        """Entries delivered to this consumer name before a restart and never acked."""
        for stream, shard in self.streams.items():
            while not self.stopping:
                reply = await self._client.xreadgroup(
                    self.group, self.consumer, {stream: "0"}, self.options.batch
                )
                entries = self._entries(reply)
                if not entries:
                    break
                log.info("re-reading %d pending entries of shard %d", len(entries), shard)
                await self._handle_redelivered(shard, entries)

    async def _claim(self) -> None:
        """Take over entries idle too long on other (dead) consumers."""
        for stream, shard in self.streams.items():
            start = "0-0"
            while not self.stopping:
                reply = await self._client.xautoclaim(
                    stream, self.group, self.consumer, self.options.claim_idle_ms,
                    start, self.options.batch,
                )  # fmt: skip
                start, claimed = reply[0], reply[1]
                entries = [(shard, eid, fields) for eid, fields in claimed if eid is not None]
                if entries:
                    self.metrics.reclaimed += len(entries)
                    log.info("claimed %d idle entries of shard %d", len(entries), shard)
                    await self._handle_redelivered(shard, entries)
                if start in ("0-0", "0"):
                    break

    async def _handle_redelivered(self, shard: int, entries: list[Entry]) -> None:
        """Dead-letter entries delivered too often; handle the rest as usual."""
        ids = [eid for _, eid, _ in entries]
        low, high = min(ids, key=stream_id_key), max(ids, key=stream_id_key)
        details = await self._client.xpending_range(
            self.keys.stream(shard), self.group, low, high, len(ids) + 100, self.consumer
        )
        deliveries = {d["message_id"]: int(d["times_delivered"]) for d in details}
        keep = []
        for entry in entries:
            times = deliveries.get(entry[1], 0)
            if times > self.options.max_deliveries:
                await self._dead_letter(entry, f"delivered {times} times")
            else:
                keep.append(entry)
        if keep:
            await self._handle(keep)

    # --- persisting ----------------------------------------------------------------

    async def _handle(self, entries: list[Entry]) -> None:
        """Persist and acknowledge ``entries`` before returning (the callers read the
        pending list next)."""
        await self._settle()
        await self._complete(entries, *self._prepare(entries))
        await self._settle()

    def _prepare(self, entries: list[Entry]) -> tuple[list[EventRow], list[tuple[Entry, str]]]:
        """Decode a batch into sink rows, setting aside entries that cannot be."""
        self.metrics.read += len(entries)
        rows: list[EventRow] = []
        bad: list[tuple[Entry, str]] = []
        ns = self.namespace
        for entry in entries:
            shard, entry_id, fields = entry
            if fields is None:  # deleted from the stream while pending: nothing to keep
                bad.append((entry, "entry no longer exists"))
                continue
            try:
                rows.append(entry_row(ns, shard, entry_id, fields))
            except (KeyError, ValueError, TypeError) as exc:
                bad.append((entry, f"undecodable: {type(exc).__name__}: {exc}"))
        return rows, bad

    async def _complete(
        self, entries: list[Entry], rows: list[EventRow], bad: list[tuple[Entry, str]]
    ) -> None:
        """Persist a batch, then finish it in the background (:meth:`_acknowledge`): the
        next batch's write starts without waiting for this one's round trips."""
        started = time.perf_counter()
        refused = await self._persist(rows)
        if refused:
            by_id = {(e[0], e[1]): e for e in entries}
            for row, reason in refused:
                bad.append((by_id[(row[1], row[2])], reason))
            # Only what the sink holds counts for lag and the regression watch.
            dropped = {(row[1], row[2]) for row, _ in refused}
            rows = [row for row in rows if (row[1], row[2]) not in dropped]
        self.metrics.observe_lags(int(time.time() * 1000), (row[3] for row in rows))
        previous = self._acking
        self._acking = asyncio.ensure_future(
            self._acknowledge(previous, entries, rows, bad, started)
        )

    async def _acknowledge(
        self,
        previous: asyncio.Future[None] | None,
        entries: list[Entry],
        persisted: list[EventRow],
        bad: list[tuple[Entry, str]],
        started: float,
    ) -> None:
        """Watch the persisted rows for regressions, dead-letter what must be and
        acknowledge the rest. Each batch's turn comes after the one before (the watch
        needs stream order); acknowledging only ever follows the batch's own commit."""
        if previous is not None:
            await previous  # a failure stops the later ones too: they stay pending
        if persisted:
            await self._check_regressions(persisted)
        for entry, reason in bad:
            await self._dead_letter(entry, reason)
        await self._ack(entries, exclude={(e[0][0], e[0][1]) for e in bad})
        self.metrics.batches += 1
        self.metrics.batch_size.observe(len(entries))
        self.metrics.batch_duration.observe(time.perf_counter() - started)

    async def _persist(self, rows: list[EventRow]) -> list[tuple[EventRow, str]]:
        """Store rows; return those the sink refused (isolated by splitting)."""
        if not rows:
            return []
        attempt = 0
        while True:
            try:
                inserted = await asyncio.to_thread(self.sink.write, rows)
            except SinkUnavailable as exc:
                self.metrics.sink_errors += 1
                self._sink_ok = False
                self._log_outage("sink", exc)
                await self._pause(self._backoff(attempt))
                attempt += 1
                if self.stopping:
                    raise _Stopped from exc  # unacked entries stay pending for next time
                continue
            except Exception as exc:  # the data itself was refused
                if len(rows) == 1:
                    self.metrics.failed += 1
                    log.error("the sink refused an event: %s", exc)
                    return [(rows[0], f"refused by the sink: {type(exc).__name__}: {exc}")]
                mid = len(rows) // 2
                return await self._persist(rows[:mid]) + await self._persist(rows[mid:])
            if not self._sink_ok:
                self._sink_ok = True
                self._log_recovered("sink")
            self.metrics.persisted += inserted
            self.metrics.duplicates += len(rows) - inserted
            return []

    async def _ack(
        self,
        entries: Sequence[Entry],
        exclude: set[tuple[int, str]],
    ) -> None:
        by_shard: dict[int, list[str]] = {}
        for shard, entry_id, _ in entries:
            if (shard, entry_id) not in exclude:
                by_shard.setdefault(shard, []).append(entry_id)
        if not by_shard:
            return
        commands = [
            ("XACK", self.keys.stream(shard), self.group, *ids) for shard, ids in by_shard.items()
        ]
        if _pack is not None and not self.coordinator.cluster:
            await self._send_packed(commands)
            return
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        await pipe.execute()

    async def _send_packed(self, commands: list[tuple[str, ...]]) -> None:
        """Pipeline commands on one pooled connection, packed by hiredis (C): redis-py's
        asyncio connection packs in Python, which cost the worker about a sixth of its
        time for acknowledgements of thousands of ids."""
        assert _pack is not None
        pool = self._client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(b"".join(_pack(c) for c in commands))  # type: ignore[arg-type]
            for _ in commands:
                await conn.read_response()
        except BaseException:
            await conn.disconnect()  # a half-read reply must not reach the next user
            raise
        finally:
            await pool.release(conn)

    async def _dead_letter(self, entry: Entry, reason: str) -> None:
        shard, entry_id, fields = entry
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2], strict=False))
        op = self.coordinator._core.dead_letter(
            shard, self.group, entry_id, self.consumer, reason, fields
        )
        moved = await self.coordinator._run(op)  # internal: the worker is part of the package
        if moved:
            self.metrics.dead_lettered += 1
            log.warning("entry %s of shard %d dead-lettered: %s", entry_id, shard, reason)

    async def _check_regressions(self, rows: list[EventRow]) -> None:
        found = self.watch.check(rows)
        if not found:
            return
        anomalies = [anomaly_row(row, kind, text) for row, kind, text in found]
        for row, kind, text in found:
            log.error(
                "audit anomaly (%s) for agent %r at %s of shard %d: %s; acknowledged writes "
                "may have been lost (failover?)", kind, row[5], row[2], row[1], text,
            )  # fmt: skip
        self.metrics.anomalies += len(anomalies)
        await self._persist(anomalies)

    # --- housekeeping --------------------------------------------------------------

    async def _claim_when_due(self) -> None:
        now = time.monotonic()
        if now >= self._due["claim"]:
            self._due["claim"] = now + self.options.claim_interval
            await self._claim()

    async def _maintain(self) -> None:
        """Liveness, reaping and trimming beside the read loop (a task of their own, so
        their round trips never delay a read: they share no state with it)."""
        attempt = 0
        while not self.stopping:
            if self._client is not None:
                try:
                    await self._housekeeping()
                    attempt = 0
                except (CoordinatorUnavailable, RedisError, RedisClusterException, OSError):
                    attempt += 1  # the read loop reports the outage and reconnects
                    await self._pause(self._backoff(attempt))
            await self._pause(0.05)

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        due = self._due
        if now >= due["live"]:
            due["live"] = now + 1.0
            await self._beat()
        if self.options.reap_interval and now >= due["reap"]:
            due["reap"] = now + self.options.reap_interval
            self.metrics.reaped += await self.coordinator.cleanup_expired_sessions()
        if now >= due["trim"]:
            due["trim"] = now + self.options.trim_interval
            await self._trim()

    async def _beat(self) -> None:
        value = json.dumps(
            {
                "consumer": self.consumer,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": self._started_at,
                "heartbeat_at": datetime.now(UTC).isoformat(),
                "persisted": self.metrics.persisted,
            }
        )
        ttl = max(1, round(self.options.liveness_ttl))
        await self._client.set(self.keys.worker(self.consumer), value, ex=ttl)
        self._registered = True

    async def _trim(self) -> None:
        """Trim each stream below its oldest unacknowledged entry; refresh gauges."""
        pipe = self._client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, self.group)
            pipe.xlen(stream)
        replies = await pipe.execute()
        now_ms = int(time.time() * 1000)
        pending_total, oldest, length = 0, None, 0
        trims: list[tuple[str, str]] = []
        for i, stream in enumerate(self.streams):
            groups, pending, xlen = replies[3 * i : 3 * i + 3]
            mine = next((g for g in groups if g["name"] == self.group), None)
            if mine is None:
                continue
            length += int(xlen)
            delivered = mine["last-delivered-id"]
            ms, _, seq = delivered.partition("-")
            threshold = f"{ms}-{int(seq) + 1}"
            if pending["pending"]:
                pending_total += int(pending["pending"])
                low = pending["min"]
                if stream_id_key(low) < stream_id_key(threshold):
                    threshold = low
                age = now_ms - stream_id_key(low)[0]
                oldest = age if oldest is None else max(oldest, age)
            if threshold != "0-1":
                trims.append((stream, threshold))
        if trims:
            pipe = self._client.pipeline(transaction=False)
            for stream, threshold in trims:
                pipe.xtrim(stream, minid=threshold, approximate=False)
            trimmed = await pipe.execute()
            length -= sum(int(n) for n in trimmed)
        self.metrics.pending = pending_total
        self.metrics.oldest_pending_age = 0.0 if oldest is None else max(0, oldest) / 1000
        self.metrics.stream_length = length

    async def _drained(self) -> bool:
        """Burst mode: nothing new, nothing pending anywhere in the group."""
        await self._settle()
        await self._claim_everything()
        pipe = self._client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xpending(stream, self.group)
        if any(int(p["pending"]) for p in await pipe.execute()):
            return False
        await self._trim()
        return True

    async def _claim_everything(self) -> None:
        """Burst mode takes over entries pending on other consumers at once: a burst
        run is the only reader, so any pending entry belongs to a dead one."""
        for stream, shard in self.streams.items():
            reply = await self._client.xautoclaim(
                stream, self.group, self.consumer, 0, "0-0", self.options.batch
            )
            entries = [(shard, eid, fields) for eid, fields in reply[1] if eid is not None]
            if entries:
                self.metrics.reclaimed += len(entries)
                await self._handle_redelivered(shard, entries)

    # --- outages -------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Full jitter, doubling from 50 ms up to ``retry_cap``."""
        return self._rng.uniform(0, min(self.options.retry_cap, 0.05 * 2 ** min(attempt, 10)))

    async def _pause(self, seconds: float) -> None:
        """Sleep, waking early when asked to stop."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _redis_down(self, exc: BaseException) -> None:
        self.metrics.redis_errors += 1
        self._redis_ok = False
        self._log_outage("redis", exc)
        # The batch in hand stays pending; it is re-read (as our own) after reconnecting.
        with suppress(Exception):
            await self._settle()
        self._recovered = False
        self._registered = False
        # Drop the connection: a restarted server may have lost the group and scripts.
        self._client = None
        await self.coordinator.aclose()
        attempt = self._outage_attempts = getattr(self, "_outage_attempts", 0) + 1
        await self._pause(self._backoff(attempt))

    def _redis_up(self) -> None:
        self._outage_attempts = 0
        if not self._redis_ok:
            self._redis_ok = True
            self._log_recovered("redis")

    def _log_outage(self, what: str, exc: BaseException) -> None:
        """One line when an outage starts, then one every 30 s: bounded log volume."""
        now = time.monotonic()
        first = what not in self._outage_logged
        if first or now - self._outage_logged[what] >= _OUTAGE_LOG_EVERY:
            self._outage_logged[what] = now
            verb = "unavailable" if first else "still unavailable"
            log.warning("%s %s (retrying): %s", what, verb, _one_line(exc))

    def _log_recovered(self, what: str) -> None:
        if self._outage_logged.pop(what, None) is not None:
            log.info("%s available again; resuming", what)


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def _stream_pairs(reply: Any) -> list[tuple[str, Any]]:
    """``(stream, entries)`` pairs of an XREADGROUP reply in any of the shapes redis-py
    hands back: a list of pairs (RESP2), a dict (RESP3, and the cluster client)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(pair[0], pair[1]) for pair in reply]


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


async def run_worker(
    settings: Settings | None = None,
    sink: Sink | None = None,
    options: WorkerOptions | None = None,
) -> WorkerMetrics:
    """Run a worker until SIGTERM/SIGINT (or drained, with ``burst=True``).

    The first signal finishes the batch in hand; a second one exits at once.
    """
    import signal

    worker = EventWorker(settings or Settings.from_env(), sink, options)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if worker.stopping:
            log.warning("second signal: exiting now")
            os._exit(128 + signum)
        log.info("signal %d: finishing the batch in hand, then stopping", signum)
        worker.request_stop()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await worker.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        worker.sink.close()


async def worker_alive(settings: Settings, consumer: str | None = None) -> list[dict[str, Any]]:
    """Liveness records of the namespace's running workers (or of one consumer)."""
    async with AsyncCoordinator(settings) as coordinator:
        try:
            client = await coordinator.redis()
            if consumer is not None:
                keys = [coordinator.keys.worker(validation.worker_name("consumer", consumer))]
            else:
                # SCAN: the worker's ACL user may not have it (deploy/users.acl);
                # name the consumer to check with GET alone.
                pattern = coordinator.keys.worker("*")
                keys = [key async for key in client.scan_iter(match=pattern, count=500)]
            found = []
            for key in keys:
                value = await client.get(key)
                if value:
                    try:
                        found.append(json.loads(value))
                    except ValueError:
                        found.append({"key": key})
            return found
        except (NoPermissionError, AuthenticationError) as exc:
            raise _access_denied(settings, exc) from None
        except (RedisError, RedisClusterException, OSError) as exc:
            raise CoordinatorUnavailable(
                f"Redis at {settings.safe_redis_url} is unavailable: {_one_line(exc)}"
            ) from None


def _access_denied(settings: Settings, exc: BaseException) -> AccessDenied:
    return AccessDenied(f"Redis at {settings.safe_redis_url} refused access: {_one_line(exc)}")
