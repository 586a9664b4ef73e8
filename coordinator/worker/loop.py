"""The event worker: makes every shard's audit stream durable in the event sink.

One consumer group (``coordinator``) reads every shard stream of a namespace. A batch
is persisted with insert-or-ignore on the event's stream identity and only then
acknowledged, so a crash at any instant loses nothing (unacknowledged entries are
delivered again) and duplicates nothing (the sink ignores an identity it holds).

Around that loop the worker:

* re-reads its own pending entries at start, and periodically claims (``XAUTOCLAIM``)
  entries idle longer than ``claim_idle_ms`` from consumers that died;
* moves entries it cannot decode or that the sink refuses (found by splitting the
  failing batch) to the shard's dead-letter stream, atomically with their
  acknowledgement; an entry delivered more than ``max_deliveries`` times (workers
  died holding it) is retried alone first, so a crash loop never dead-letters a good
  entry;
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
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from coordinator.aio import AsyncCoordinator
from coordinator.errors import (
    CoordinatorUnavailable,
    RedisOutOfMemory,
    SinkAccessDenied,
    SinkUnavailable,
    first_line,
)
from coordinator.events import EventRow, entry_row
from coordinator.failures import Backoff, error_code, out_of_memory
from coordinator.gc_tuning import fewer_collections
from coordinator.settings import Settings
from coordinator.sinks import Sink, sink_from_url
from coordinator.sinks.process import ProcessSink
from coordinator.sinks.sqlite import SQLiteSink
from coordinator.stats import oldest_pending_age, trim_point
from coordinator.timestamps import stream_id_key
from coordinator.worker.groups import ensure_groups
from coordinator.worker.metrics import MetricsServer, WorkerMetrics
from coordinator.worker.options import WorkerOptions, default_consumer
from coordinator.worker.watch import RegressionWatch, anomaly_row

log = logging.getLogger("coordinator.worker")

try:  # redis[hiredis] is a dependency; tolerate an installation without it
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover
    _pack = None  # type: ignore[assignment]

#: Seconds between repeated "still unavailable" log lines during an outage.
_OUTAGE_LOG_EVERY: Final = 30.0
#: ``--burst``: attempts to reach Redis before giving up (with the backoff, about 10 s).
BURST_REDIS_ATTEMPTS: Final = 8


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
        #: Outages: doubling from 50 ms up to ``retry_cap`` (the clients' backoff).
        self._retry_backoff = Backoff(0.05, self.options.retry_cap)
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
        # A sink that cannot be created stops the worker now, not retried as an outage.
        try:
            await asyncio.to_thread(self.sink.prepare)
        except SinkUnavailable as exc:  # a database still starting: the batches retry
            self._log_outage("sink", exc)
        background = []
        if not self.options.burst:
            background.append(asyncio.ensure_future(self._maintain()))
            if self.options.reap_interval:
                background.append(asyncio.ensure_future(self._reaper()))
                background.append(asyncio.ensure_future(self._reservation_reaper()))
        try:
            with fewer_collections():
                await self._loop()
        finally:
            if background:
                self.request_stop()
                await asyncio.gather(*background)
            await self._shutdown()
        log.info("worker %s stopped: %s", self.consumer, self.metrics.summary())
        return self.metrics

    async def _loop(self) -> None:
        while not self.stopping:
            self._last_loop = time.monotonic()
            try:
                if self._client is None:
                    self._client = await self.coordinator.redis()
                    # Entries as flat field/value lists: a dict per entry is a large
                    # share of the worker's time (entry_row reads both shapes).
                    self._client.set_response_callback("XREADGROUP", _raw_reply)
                    await self._ensure_groups()
                    self._redis_up()
                if not self._recovered:
                    await self._recover_own_pending()
                    self._recovered = True
                if self.options.burst:
                    await self._housekeeping(reap=True)
                await self._claim_when_due()
                got = await self._read_new()
                if not got and self.options.burst and await self._drained():
                    return
            except _Stopped:
                break  # still settle the acknowledgements under way
            except (NoPermissionError, AuthenticationError) as exc:
                # Wrong credentials, or an ACL user without the worker's commands:
                # retrying cannot help. Exit; the supervisor restarts the worker.
                raise self.coordinator.operations.failures.redis_error(exc) from None
            except ResponseError as exc:
                # NOGROUP, or (Redis 7) UNBLOCKED when the stream went while we waited.
                if error_code(exc) not in ("NOGROUP", "UNBLOCKED"):
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
        await ensure_groups(
            self._client, self.streams, self.group, self.options.batch,
            self._store_ungrouped, self.settings.safe_redis_url,
        )  # fmt: skip

    async def _store_ungrouped(self, shard: int, items: Sequence[tuple[str, Any]]) -> str | None:
        """Persist entries read without a group (:mod:`coordinator.worker.groups`);
        the id of the first one the sink could not take, or None."""
        rows, bad = self._prepare([(shard, entry_id, fields) for entry_id, fields in items])
        refused = await self._persist(rows)
        failed = {e[1] for e, _ in bad} | {row[2] for row, _ in refused}
        first = min(failed, key=stream_id_key) if failed else None
        kept = [r for r in rows if first is None or stream_id_key(r[2]) < stream_id_key(first)]
        if kept:
            await self._check_regressions(kept)
        return first

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
        """Entries delivered before (a worker died holding them). One delivered more
        than ``max_deliveries`` times is a suspect: it is retried alone (its own write
        and acknowledgement), so a good entry caught in a crash loop is persisted and
        only one that fails by itself (undecodable, refused by the sink) is
        dead-lettered. Stream order is kept (the regression watch relies on it)."""
        ids = [eid for _, eid, _ in entries]
        low, high = min(ids, key=stream_id_key), max(ids, key=stream_id_key)
        details = await self._client.xpending_range(
            self.keys.stream(shard), self.group, low, high, len(ids) + 100, self.consumer
        )
        deliveries = {d["message_id"]: int(d["times_delivered"]) for d in details}
        run: list[Entry] = []
        for entry in entries:
            times = deliveries.get(entry[1], 0)
            if times <= self.options.max_deliveries:
                run.append(entry)
                continue
            if run:
                await self._handle(run)
                run = []
            self.metrics.retried_alone += 1
            log.warning(
                "entry %s of shard %d delivered %d times: retrying it alone", entry[1], shard, times
            )
            await self._handle([entry], note=f"delivered {times} times")
        if run:
            await self._handle(run)

    # --- persisting ----------------------------------------------------------------

    async def _handle(self, entries: list[Entry], note: str = "") -> None:
        """Persist and acknowledge ``entries`` before returning (the callers read the
        pending list next); ``note`` prefixes the reason of what is dead-lettered."""
        await self._settle()
        await self._complete(entries, *self._prepare(entries), note=note)
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
        self,
        entries: list[Entry],
        rows: list[EventRow],
        bad: list[tuple[Entry, str]],
        note: str = "",
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
        if note:
            bad = [(entry, f"{note}; {reason}") for entry, reason in bad]
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
            except SinkAccessDenied:
                raise  # the sink's role lacks a privilege: no event is at fault
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
        op = self.coordinator.operations.dead_letter(
            shard, self.group, entry_id, self.consumer, reason, fields
        )
        try:
            moved = await self.coordinator.execute(op)
        except RedisOutOfMemory as exc:  # it stays pending (claimed later); the rest is acked
            self._log_outage("dead-lettering (out of memory)", exc)
            return
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

    async def _housekeeping(self, reap: bool = False) -> None:
        now = time.monotonic()
        due = self._due
        if now >= due["live"]:
            due["live"] = now + 1.0
            await self._beat()
        if reap and self.options.reap_interval and now >= due["reap"]:
            due["reap"] = now + self.options.reap_interval
            try:
                self.metrics.reaped += await self.coordinator.cleanup_expired_sessions()
                self.metrics.reservations_reaped += await self.coordinator.reap_reservations()
            except RedisOutOfMemory as exc:  # an expiry's audit event is a write
                self._log_outage("reaping (out of memory)", exc)
        if now >= due["trim"]:
            due["trim"] = now + self.options.trim_interval
            await self._trim()

    async def _reaper(self) -> None:
        """Reap each lapsed lease as its deadline passes: sleep until the next deadline
        the lease index holds (server clock), at most ``reap_interval``, so a lease
        started meanwhile with an earlier deadline waits no longer than that. When
        nothing is due this costs what polling every ``reap_interval`` did."""
        operations, attempt = self.coordinator.operations, 0
        while not self.stopping:
            if self._client is None:  # the read loop connects (and reports outages)
                await self._pause(0.05)
                continue
            try:
                reaped, wait = await self.coordinator.execute(operations.reap_due())
            except (CoordinatorUnavailable, RedisError, RedisClusterException, OSError):
                attempt += 1
                await self._pause(self._backoff(attempt))
                continue
            attempt = 0
            self.metrics.reaped += reaped
            cap = self.options.reap_interval
            # +1 ms: Redis expires a key once its clock is past the deadline, not at it.
            await self._pause(cap if wait is None else min(cap, wait + 0.001))

    async def _reservation_reaper(self) -> None:
        """Every ``reap_interval``: release lapsed reservations and those of sessions
        that ended, expired, were revoked or superseded (a reservation lives in its
        scope's slot, the session in its agent's: no script can see both on a cluster)."""
        operations, attempt = self.coordinator.operations, 0
        while not self.stopping:
            if self._client is None:
                await self._pause(0.05)
                continue
            try:
                released = await self.coordinator.execute(operations.reservations.reap())
            except (CoordinatorUnavailable, RedisError, RedisClusterException, OSError):
                attempt += 1
                await self._pause(self._backoff(attempt))
                continue
            attempt = 0
            self.metrics.reservations_reaped += released
            await self._pause(self.options.reap_interval)

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
        key = self.keys.worker(self.consumer)
        try:
            await self._client.set(key, value, ex=ttl)
        except ResponseError as exc:
            if not out_of_memory(exc):
                raise
            # At maxmemory SET is refused but EXPIRE is not: stay alive (with the
            # last value) while acknowledging and trimming free memory.
            if not await self._client.expire(key, ttl):
                self._log_outage("liveness key (out of memory)", exc)
                return
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
        pending_total, oldest, length = 0, 0.0, 0
        trims: list[tuple[str, str]] = []
        for i, stream in enumerate(self.streams):
            groups, pending, xlen = replies[3 * i : 3 * i + 3]
            mine = next((g for g in groups if g["name"] == self.group), None)
            if mine is None:
                continue
            length += int(xlen)
            pending_total += int(pending["pending"] or 0)
            oldest = max(oldest, oldest_pending_age(now_ms, pending) or 0.0)
            threshold = trim_point(mine["last-delivered-id"], pending)
            if threshold is not None:
                trims.append((stream, threshold))
        if trims:
            pipe = self._client.pipeline(transaction=False)
            for stream, threshold in trims:
                pipe.xtrim(stream, minid=threshold, approximate=False)
            trimmed = await pipe.execute()
            length -= sum(int(n) for n in trimmed)
        self.metrics.pending = pending_total
        self.metrics.oldest_pending_age = oldest
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
        return self._retry_backoff.delay(attempt, self._rng)

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
        if self.options.burst and attempt >= BURST_REDIS_ATTEMPTS:
            # A one-off drain (a cron job, CI) must end: exit 1 instead of waiting forever.
            raise CoordinatorUnavailable(
                f"{first_line(exc)} (--burst gave up after {attempt} attempts)"
            ) from None
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
            log.warning("%s %s (retrying): %s", what, verb, one_line(exc))

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


def one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"
