"""The event worker on real Redis (6.2 and 7) with real SQLite and PostgreSQL sinks."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from coordinator import Coordinator, EmbeddedRedis, EventType, InvalidInputError, Settings
from coordinator.cli.main import cli
from coordinator.errors import SinkUnavailable
from coordinator.gc_tuning import THRESHOLD
from coordinator.keys import KeySpace
from coordinator.sinks import Sink, sink_from_url
from coordinator.worker import ANOMALY_SHARD, EventWorker, WorkerOptions
from tests.helpers import RunningWorker, stream_entries, wait_until

NS = "test"


@pytest.fixture
def sink(sink_url: str) -> Iterator[Sink]:
    with sink_from_url(sink_url) as s:
        yield s


@pytest.fixture
def sqlite_sink(tmp_path: Path) -> Iterator[Sink]:
    with sink_from_url(f"sqlite:///{tmp_path / 'events.db'}") as s:
        yield s


@pytest.fixture
def make_worker(redis_url: str) -> Callable[..., EventWorker]:
    def make(sink: Sink, **options: Any) -> EventWorker:
        settings = Settings.from_url(redis_url, namespace=NS)
        return EventWorker(settings, sink, WorkerOptions(**options))

    return make


def burst(make_worker: Callable[..., EventWorker], sink: Sink, **options: Any) -> Any:
    return asyncio.run(make_worker(sink, burst=True, **options).run())


def activity(client: Coordinator, agents: int = 20, switches: int = 3, prefix: str = "a") -> int:
    """Sessions and project switches of new agents on several shards; returns the
    events emitted."""
    for i in range(agents):
        agent = f"{prefix}-agent-{i}"
        session = client.start_session(agent)
        for v in range(switches):
            client.set_current_project(agent, f"p{v}", session.session_id)
    return agents * (1 + switches)


def persisted_ids(sink: Sink) -> list[tuple[int, str]]:
    return sorted((e.shard, e.stream_id) for e in sink.events(NS) if e.shard >= 0)


def stream_ids(raw: redis.Redis) -> list[tuple[int, str]]:
    keys = KeySpace(NS, 16)
    found = []
    for shard in range(16):
        found += [(shard, entry_id) for entry_id, _ in raw.xrange(keys.stream(shard))]
    return sorted(found)


def group_pending(raw: redis.Redis) -> int:
    keys = KeySpace(NS, 16)
    total = 0
    for shard in range(16):
        if raw.exists(keys.stream(shard)):
            total += int(raw.xpending(keys.stream(shard), "coordinator")["pending"])
    return total


def test_burst_persists_every_event_once_and_trims(
    redis_url: str, raw: redis.Redis, sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    client = Coordinator.from_url(redis_url, namespace=NS)
    emitted = activity(client)
    before = stream_ids(raw)
    assert len(before) == emitted
    metrics = burst(make_worker, sink)
    assert persisted_ids(sink) == before
    assert metrics.persisted == emitted
    assert metrics.duplicates == 0
    assert group_pending(raw) == 0
    assert stream_ids(raw) == []  # everything persisted was trimmed
    # A second run finds nothing and stores nothing twice.
    again = burst(make_worker, sink)
    assert again.read == 0
    assert sink.count(NS) == emitted
    client.close()


def test_a_batch_is_acknowledged_after_its_commit_while_the_next_one_is_written(
    redis_url: str, raw: redis.Redis, sqlite_sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    """Acknowledging batch k (a round trip) overlaps writing batch k+1, and never
    precedes batch k's own commit. Each acknowledgement here is held until the next
    batch's write has begun: a worker that waited for acknowledgements before writing
    again would never get there."""
    client = Coordinator.from_url(redis_url, namespace=NS)
    emitted = activity(client)
    client.close()
    worker = make_worker(sqlite_sink, burst=True, batch=1)  # at most 16 entries a read
    started: list[int] = []  # row count of each write, as it begins (in the write thread)
    write = sqlite_sink.write

    def recording_write(rows: Any) -> int:
        started.append(len(rows))
        return write(rows)

    sqlite_sink.write = recording_write  # type: ignore[method-assign]
    acked: list[int] = []
    ack = worker._ack
    collector = []

    async def held_ack(entries: Any, exclude: Any) -> None:
        batch = len(acked)
        deadline = asyncio.get_running_loop().time() + 20
        while len(started) <= batch + 1 and sum(started) < emitted:
            assert asyncio.get_running_loop().time() < deadline, "writes wait for acks"
            await asyncio.sleep(0.002)
        stored = {(e.shard, e.stream_id) for e in sqlite_sink.events(NS)}
        assert {(shard, eid) for shard, eid, _ in entries} <= stored  # committed first
        collector.append(gc.get_threshold()[0])
        acked.append(len(entries))
        await ack(entries, exclude)

    worker._ack = held_ack  # type: ignore[method-assign]
    thresholds = gc.get_threshold()
    metrics = asyncio.run(worker.run())
    assert metrics.persisted == emitted
    assert len(acked) == len(started) > 2
    assert group_pending(raw) == 0
    # The worker raised the collector's threshold while it ran, and put it back.
    assert set(collector) == {THRESHOLD}
    assert gc.get_threshold() == thresholds


def test_get_agent_events_merges_sink_and_unpersisted_tail(
    redis_url: str, raw: redis.Redis, sink_url: str, make_worker: Callable[..., EventWorker]
) -> None:
    client = Coordinator.from_url(redis_url, namespace=NS, sink_url=sink_url)
    session = client.start_session("agent-1")
    client.set_current_project("agent-1", "a", session.session_id)
    with sink_from_url(sink_url) as sink:
        burst(make_worker, sink)
    assert stream_ids(raw) == []  # persisted and trimmed: only the sink has them
    client.set_current_project("agent-1", "b", session.session_id)  # only in the stream
    events = client.get_agent_events("agent-1", limit=10)
    assert [e.event_type for e in events] == [
        EventType.PROJECT_SWITCHED, EventType.PROJECT_SET, EventType.SESSION_STARTED,
    ]  # fmt: skip
    # Persisted but not yet trimmed entries are in both places: still listed once.
    raw.xadd(KeySpace(NS, 16).stream(1), {"x": "1"})  # not for agent-1, ignored
    with sink_from_url(sink_url) as sink:
        sink.write_events(NS, events[:1])
    assert client.get_agent_events("agent-1", limit=10) == events
    assert client.get_agent_events("agent-1", limit=2) == events[:2]
    client.close()


def test_poison_and_refused_entries_go_to_dead_letters(
    redis_url: str, raw: redis.Redis, sqlite_sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    client = Coordinator.from_url(redis_url, namespace=NS)
    emitted = activity(client, agents=5, switches=1)
    keys = KeySpace(NS, 16)
    stream = keys.stream(3)
    poison = raw.xadd(stream, {"garbage": "yes"})
    good = dict(stream_entries(raw, NS)[0][1])
    # Decodes, but SQLite cannot store a 70-bit integer: found by splitting the batch.
    refused = raw.xadd(stream, {**good, "actual_version": str(2**70)})
    metrics = burst(make_worker, sqlite_sink)
    assert sqlite_sink.count(NS) == emitted
    assert metrics.dead_lettered == 2
    assert metrics.failed == 1
    dead = raw.xrange(keys.dead_letters(3))
    assert [d[1]["source_id"] for d in dead] == [poison, refused]
    assert dead[0][1]["field:garbage"] == "yes"
    assert "undecodable" in dead[0][1]["reason"]
    assert "refused" in dead[1][1]["reason"]
    assert group_pending(raw) == 0
    client.close()


def read_by_a_peer(redis_url: str, raw: redis.Redis, peer: str) -> tuple[Coordinator, Any, str]:
    """agent-1's session_started entry, read (not acked) by another consumer ``peer``;
    returns a client, the session and the agent's stream."""
    client = Coordinator.from_url(redis_url, namespace=NS)
    session = client.start_session("agent-1")
    keys = KeySpace(NS, 16)
    stream = keys.stream(keys.shard_of("agent-1"))
    raw.xgroup_create(stream, "coordinator", id="0")
    assert raw.xreadgroup("coordinator", peer, {stream: ">"})
    return client, session, stream


def test_entries_of_a_dead_consumer_are_claimed_or_retried_alone(
    redis_url: str, raw: redis.Redis, sqlite_sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    client, session, stream = read_by_a_peer(redis_url, raw, "dead-one")
    keys = KeySpace(NS, 16)
    # A consumer that read the entry (above) and died before acking it...
    client.set_current_project("agent-1", "p", session.session_id)
    # ...and a good entry delivered too often (workers in a crash loop held it).
    raw.xreadgroup("coordinator", "dead-two", {stream: ">"})
    for _ in range(5):
        raw.xclaim(stream, "coordinator", "dead-two", 0, [stream_entries(raw, NS)[1][0]])
    metrics = burst(make_worker, sqlite_sink, claim_idle_ms=1, max_deliveries=3)
    assert metrics.reclaimed == 2
    assert metrics.retried_alone == 1
    # Retried alone, it was persisted: a crash loop never dead-letters a good entry.
    assert [e.event_type for e in sqlite_sink.query(NS)] == [
        EventType.PROJECT_SET,
        EventType.SESSION_STARTED,
    ]
    assert metrics.dead_lettered == 0
    assert raw.xlen(keys.dead_letters(keys.shard_of("agent-1"))) == 0
    assert group_pending(raw) == 0
    client.close()


@pytest.mark.parametrize("earlier", [2, 3])
def test_an_entry_is_retried_alone_after_exactly_max_deliveries(
    redis_url: str,
    raw: redis.Redis,
    sqlite_sink: Sink,
    make_worker: Callable[..., EventWorker],
    earlier: int,
) -> None:
    client, _, stream = read_by_a_peer(redis_url, raw, "dead")
    good = dict(raw.xrange(stream)[0][1])
    # The sink refuses this one (SQLite cannot store a 70-bit integer).
    refused = raw.xadd(stream, {**good, "actual_version": str(2**70)})
    raw.xreadgroup("coordinator", "dead", {stream: ">"})
    for _ in range(earlier - 1):  # delivered `earlier` times in all before the worker
        raw.xclaim(stream, "coordinator", "dead", 0, [e[0] for e in raw.xrange(stream)])
    metrics = burst(make_worker, sqlite_sink, claim_idle_ms=1, max_deliveries=3)
    # The worker's claim is delivery earlier + 1: past 3 only when earlier is 3.
    assert metrics.retried_alone == (2 if earlier == 3 else 0)
    assert [e.event_type for e in sqlite_sink.query(NS)] == [EventType.SESSION_STARTED]
    dead = raw.xrange(KeySpace(NS, 16).dead_letters(KeySpace(NS, 16).shard_of("agent-1")))
    assert [d[1]["source_id"] for d in dead] == [refused]
    reason = dead[0][1]["reason"]
    assert reason.startswith("delivered 4 times; refused") == (earlier == 3), reason
    assert group_pending(raw) == 0
    client.close()


def test_trimming_never_drops_unacknowledged_entries(
    redis_url: str, raw: redis.Redis, sqlite_sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    client, session, stream = read_by_a_peer(redis_url, raw, "slow-peer")
    held = raw.xrange(stream)[0][0]  # the peer's entry, in flight
    for v in range(5):
        client.set_current_project("agent-1", f"p{v}", session.session_id)
    worker = make_worker(sqlite_sink, trim_interval=0.05, claim_idle_ms=600_000)
    running = RunningWorker(worker)
    try:
        wait_until(lambda: sqlite_sink.count(NS) == 5)
        wait_until(lambda: worker.metrics.pending == 1 and worker.metrics.stream_length == 6)
        # The peer's entry is unacknowledged: it and everything after it stay.
        assert raw.xrange(stream)[0][0] == held
        raw.xack(stream, "coordinator", held)
        wait_until(lambda: raw.xlen(stream) == 0)
    finally:
        running.stop()
    assert sqlite_sink.count(NS) == 5  # the peer's entry was its to persist
    client.close()


def test_two_workers_share_the_load_without_duplicates(
    redis_url: str, raw: redis.Redis, sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    client = Coordinator.from_url(redis_url, namespace=NS)
    workers = [make_worker(sink, consumer=f"w{i}", batch=20, block_ms=50) for i in range(2)]
    running = [RunningWorker(w) for w in workers]
    try:
        emitted = activity(client, agents=100, switches=4)
        wait_until(lambda: sink.count(NS) == emitted, timeout=30)
    finally:
        for r in running:
            r.stop()
    assert all(w.metrics.persisted > 0 for w in workers)
    assert sum(w.metrics.persisted for w in workers) == emitted
    assert len(persisted_ids(sink)) == emitted
    client.close()


def test_reaper_turns_an_expired_lease_into_an_event(
    redis_url: str, sqlite_sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    client = Coordinator.from_url(redis_url, namespace=NS)
    running = RunningWorker(make_worker(sqlite_sink, reap_interval=0.1, block_ms=50))
    try:
        client.start_session("short-lived", ttl=0.3)
        wait_until(lambda: sqlite_sink.count(NS, event_type="session_expired") == 1, timeout=10)
    finally:
        running.stop()
    assert client.list_leases() == []
    client.close()


def test_reaper_wakes_at_the_next_deadline_not_the_interval(
    redis_url: str, sqlite_sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    # reap_interval is only the longest sleep: a known deadline wakes the reaper.
    client = Coordinator.from_url(redis_url, namespace=NS)
    client.start_session("lasting", ttl=3600)
    for i in range(3):
        client.start_session(f"soon-{i}", ttl=1 + i / 2)
    running = RunningWorker(make_worker(sqlite_sink, reap_interval=600, block_ms=50))
    try:
        wait_until(lambda: sqlite_sink.count(NS, event_type="session_expired") == 3, timeout=20)
    finally:
        running.stop()
    assert [lease.agent_id for lease in client.list_leases()] == ["lasting"]
    client.close()


def test_sink_outage_pauses_and_resumes(
    redis_url: str, raw: redis.Redis, tmp_path: Path, make_worker: Callable[..., EventWorker]
) -> None:
    path = tmp_path / "events.db"
    sink = sink_from_url(f"sqlite:///{path}")
    sink.ping()  # create the file and schema
    sink.busy_timeout = 0.05  # type: ignore[attr-defined]
    client = Coordinator.from_url(redis_url, namespace=NS)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the database is unavailable for writing
    # Written before the worker starts, so its first read holds them all.
    emitted = activity(client, agents=5, switches=1)
    worker = make_worker(sink, block_ms=50, retry_cap=0.2)
    running = RunningWorker(worker)
    try:
        wait_until(lambda: worker.metrics.sink_errors >= 3)
        assert not worker.ready()
        assert group_pending(raw) == emitted
        blocker.execute("COMMIT")
        wait_until(lambda: sink.count(NS) == emitted)
        wait_until(worker.ready)
    finally:
        blocker.close()
        running.stop()
    assert group_pending(raw) == 0
    sink.close()
    client.close()


def test_stopping_during_a_sink_outage_still_acknowledges_the_batch_before(
    redis_url: str, raw: redis.Redis, sqlite_sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    """The first batch is committed and its acknowledgement is under way when the sink
    fails for the next one and the worker is asked to stop: it acknowledges the first
    before it shuts down, and leaves the second pending."""
    client = Coordinator.from_url(redis_url, namespace=NS)
    emitted = activity(client)
    client.close()
    worker = make_worker(sqlite_sink, burst=True, batch=1, retry_cap=0.05)
    write = sqlite_sink.write
    written: list[int] = []
    loop: asyncio.AbstractEventLoop | None = None

    def failing_after_one(rows: Any) -> int:
        if written:
            assert loop is not None
            loop.call_soon_threadsafe(worker.request_stop)
            raise SinkUnavailable("sink down", maybe_applied=False)
        written.append(write(rows))
        return written[0]

    sqlite_sink.write = failing_after_one  # type: ignore[method-assign]
    ack = worker._ack

    async def ack_once_stopping(entries: Any, exclude: Any) -> None:
        while not worker.stopping:  # held until the stop was asked for
            await asyncio.sleep(0.002)
        await ack(entries, exclude)

    worker._ack = ack_once_stopping  # type: ignore[method-assign]
    shutdown = worker._shutdown
    acking_at_shutdown: list[object] = []

    async def recording_shutdown() -> None:
        acking_at_shutdown.append(worker._acking)
        await shutdown()

    worker._shutdown = recording_shutdown  # type: ignore[method-assign]

    async def main() -> Any:
        nonlocal loop
        loop = asyncio.get_running_loop()
        return await worker.run()

    metrics = asyncio.run(main())
    assert acking_at_shutdown == [None]  # nothing left running behind the shutdown
    assert written
    assert metrics.persisted == written[0]
    assert sqlite_sink.count(NS) == written[0]
    # Read but not persisted: pending for the next start; the first batch: acknowledged.
    assert group_pending(raw) == metrics.read - written[0] > 0
    assert metrics.read < emitted


# A connection the restart broke can be collected unclosed after the worker stops (seen
# in 1 run of 4; not yet traced): a leak in a test that kills the server, not lost data.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_redis_restart_and_a_lost_group_are_survived(
    redis_server: Any, tmp_path: Path, sqlite_sink: Sink
) -> None:
    if not isinstance(redis_server, EmbeddedRedis):
        pytest.skip("restarts a single server")
    with EmbeddedRedis(tmp_path / "redis", binary=redis_server.binary, port=0) as server:
        settings = Settings.from_url(server.url, namespace=NS)
        worker = EventWorker(settings, sqlite_sink, WorkerOptions(block_ms=50, retry_cap=0.2))
        running = RunningWorker(worker)
        client = Coordinator(settings)
        try:
            first = activity(client, agents=5, switches=1)
            wait_until(lambda: sqlite_sink.count(NS) == first)
            server.restart()  # append-only file: data and group come back
            second = activity(client, agents=5, switches=2, prefix="b")
            wait_until(lambda: sqlite_sink.count(NS) == first + second, timeout=30)
            with server.client(decode_responses=True) as r:
                r.flushall()  # the group (and everything) is gone
            client.close()
            client = Coordinator(settings)
            third = activity(client, agents=3, switches=0, prefix="b")
            wait_until(lambda: len(persisted_ids(sqlite_sink)) == first + second + third)
            # (No count of Redis errors: a restart between two reads is not one.)
            # Losing the data restarted b-agents' fencing tokens: the watch says so.
            wait_until(lambda: sqlite_sink.count(NS, event_type="audit_anomaly") == 3)
        finally:
            running.stop()
            client.close()


def test_regressions_in_the_persisted_audit_raise_anomalies(
    redis_url: str, raw: redis.Redis, sqlite_sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    client = Coordinator.from_url(redis_url, namespace=NS)
    session = client.start_session("agent-1")
    worker = make_worker(sqlite_sink, block_ms=50)
    running = RunningWorker(worker)
    try:
        for v in range(3):
            client.set_current_project("agent-1", f"p{v}", session.session_id)
        wait_until(lambda: sqlite_sink.count(NS) == 4)
        # As after a failover that lost the last write: version 3 is accepted again,
        # and a session starts with a fencing token already used.
        stream = KeySpace(NS, 16).stream(KeySpace(NS, 16).shard_of("agent-1"))
        fields = {
            "event_type": "project_switched", "agent_id": "agent-1",
            "session_id": session.session_id, "fencing_token": "1", "from_project": "p1",
            "to_project": "again", "expected_version": "", "actual_version": "3",
            "success": "1", "error_message": "", "metadata": "",
        }  # fmt: skip
        raw.xadd(stream, fields)
        raw.xadd(stream, {**fields, "event_type": "session_started", "actual_version": ""})
        wait_until(lambda: sqlite_sink.count(NS, event_type="audit_anomaly") == 2)
    finally:
        running.stop()
    assert worker.metrics.anomalies == 2
    found = sqlite_sink.query(NS, event_type="audit_anomaly")
    shard = KeySpace(NS, 16).shard_of("agent-1")
    assert {a.shard for a in found} == {ANOMALY_SHARD - shard}
    assert sorted(a.error_message or "" for a in found) == [
        "fencing token 1 after 1", "version 3 after 3",
    ]  # fmt: skip
    assert {a.metadata["kind"] for a in found if a.metadata} == {
        "version_regression", "fencing_regression",
    }  # fmt: skip
    client.close()


def test_metrics_health_and_liveness_check(
    redis_url: str, sqlite_sink: Sink, make_worker: Callable[..., EventWorker]
) -> None:
    runner = CliRunner()
    check = ["--redis-url", redis_url, "--namespace", NS, "worker", "--check"]
    assert runner.invoke(cli, check).exit_code == 1
    worker = make_worker(sqlite_sink, metrics_port=0, block_ms=50, consumer="probe")
    running = RunningWorker(worker)
    try:
        wait_until(lambda: worker.server is not None and worker.server.port != 0)
        assert worker.server is not None
        base = f"http://127.0.0.1:{worker.server.port}"
        wait_until(lambda: _get(base + "/readyz")[0] == 200)
        client = Coordinator.from_url(redis_url, namespace=NS)
        emitted = activity(client, agents=3, switches=1)
        wait_until(lambda: sqlite_sink.count(NS) == emitted)
        status, body = _get(base + "/metrics")
        assert status == 200
        assert f"coordinator_worker_events_persisted_total {float(emitted)}" in body
        assert "coordinator_worker_lag_seconds_bucket" in body
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/nope")[0] == 404
        result = runner.invoke(cli, check)
        assert result.exit_code == 0
        assert "probe" in result.output
        client.close()
    finally:
        running.stop()
    assert runner.invoke(cli, check).exit_code == 1  # the key goes with the worker


@pytest.mark.parametrize(
    "options",
    [{"batch": 0}, {"block_ms": -1}, {"consumer": "bad name"}, {"reap_interval": -1},
     {"metrics_port": 70000}, {"claim_interval": 0}],
)  # fmt: skip
def test_bad_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        WorkerOptions(**options)


def test_cli_rejects_bad_options_with_exit_2(redis_url: str) -> None:
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, "worker", "--batch", "0"])
    assert result.exit_code == 2


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_the_compat_adapter_lists_persisted_events(
    redis_url: str, raw: redis.Redis, sink_url: str, make_worker: Callable[..., EventWorker]
) -> None:
    from coordinator.compat import AgentContextManager

    async def scenario() -> list[dict[str, Any]]:
        manager = AgentContextManager.from_url(redis_url, namespace=NS, sink_url=sink_url)
        try:
            sid = await manager.start_session("agent-1")
            await manager.set_current_project("agent-1", "a", sid)
            with sink_from_url(sink_url) as sink:
                await make_worker(sink, burst=True).run()
            assert stream_ids(raw) == []  # only the sink has them now
            await manager.set_current_project("agent-1", "b", sid)
            return await manager.get_agent_events("agent-1")
        finally:
            await manager.aclose()

    events = asyncio.run(scenario())
    assert [e["event_type"] for e in events] == [
        "project_switched", "project_set", "session_started",
    ]  # fmt: skip


def test_reads_of_the_streams_skip_an_entry_that_is_not_an_event(
    redis_url: str, raw: redis.Redis
) -> None:
    # The worker dead-letters such an entry; until it does, readers must not fail on it.
    client = Coordinator.from_url(redis_url, namespace=NS)
    client.start_session("agent-1")
    raw.xadd(KeySpace(NS, 16).stream(3), {"garbage": "yes"})
    assert [e.event_type for e in client.get_agent_events()] == [EventType.SESSION_STARTED]
    client.close()


def test_burst_gives_up_when_redis_is_unreachable(sqlite_sink: Sink) -> None:
    # A one-off drain (cron, CI) used to wait for Redis forever.
    from coordinator import CoordinatorUnavailable
    from coordinator.processes import free_port

    settings = Settings.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace=NS)
    worker = EventWorker(settings, sqlite_sink, WorkerOptions(burst=True, retry_cap=0.05))
    with pytest.raises(CoordinatorUnavailable) as info:
        asyncio.run(worker.run())
    assert "--burst gave up after 8 attempts" in str(info.value)


def test_cli_burst_against_no_redis_exits_1_in_one_line(tmp_path: Path) -> None:
    from coordinator.processes import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(
        cli, ["--redis-url", url, "--sink-url", f"sqlite:///{tmp_path / 'e.db'}", "worker",
              "--burst", "--log-level", "error"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "gave up" in result.output
    assert "Traceback" not in result.output


def test_a_sink_that_cannot_be_created_stops_the_worker_at_start(
    redis_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(
        cli, ["--redis-url", redis_url, "--namespace", NS, "--sink-url",
              f"sqlite:///{blocker / 'events.db'}", "worker", "--log-level", "error"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "cannot be created: a file is in the way" in result.output
    assert "Traceback" not in result.output


def test_a_consumer_name_a_running_worker_uses_is_refused(redis_url: str, raw: redis.Redis) -> None:
    import json
    import socket
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        value = {"consumer": "twin", "pid": holder.pid, "host": socket.gethostname()}
        raw.set(f"{NS}:worker:twin", json.dumps(value), ex=30)
        result = CliRunner().invoke(
            cli, ["--redis-url", redis_url, "--namespace", NS, "worker", "--consumer", "twin",
                  "--burst", "--log-level", "error"],
        )  # fmt: skip
        assert result.exit_code == 1, result.output
        assert f"consumer name 'twin' is in use by a running worker (pid {holder.pid})" in (
            result.output
        )
    finally:
        holder.kill()
        holder.wait()
    # Its holder gone (a crash), the name is free again at once.
    result = CliRunner().invoke(
        cli, ["--redis-url", redis_url, "--namespace", NS, "worker", "--consumer", "twin",
              "--burst", "--log-level", "error"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
