"""Contract tests of the event sinks, run against SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coordinator import AgentEvent, EventType, InvalidInputError
from coordinator.errors import ConfigurationError, SinkUnavailable
from coordinator.sinks import EventRow, Sink, event_row, sink_from_url

T0 = 1_800_000_000_000  # ms


def row(i: int, *, shard: int = 0, agent: str = "a", ns: str = "ns", **over: Any) -> EventRow:
    base: dict[str, Any] = {
        "namespace": ns, "shard": shard, "stream_id": f"{T0 + i}-0", "created_ms": T0 + i,
        "stream_seq": 0, "agent_id": agent, "session_id": f"1-{'0' * 16}@{agent}",
        "event_type": "project_set", "from_project": None, "to_project": f"p{i}",
        "expected_version": None, "actual_version": i, "success": True, "error_message": None,
        "metadata": None, "fencing_token": 1,
    }  # fmt: skip
    base.update(over)
    return tuple(base.values())  # type: ignore[return-value]


@pytest.fixture
def sink(sink_url: str) -> Iterator[Sink]:
    with sink_from_url(sink_url) as s:
        yield s


def test_write_ignores_an_identity_already_stored(sink: Sink) -> None:
    assert sink.write([row(1), row(2)]) == 2
    # A re-delivered entry (same namespace, shard, stream id) is not stored twice...
    assert sink.write([row(2), row(3)]) == 1
    # ...but the same stream id in another shard or namespace is another event.
    assert sink.write([row(2, shard=1), row(2, ns="other")]) == 2
    assert sink.count("ns") == 4
    assert sink.count("other") == 1


def test_query_filters_and_orders_newest_first(sink: Sink) -> None:
    rows = [row(i, shard=i % 3, agent=f"a{i % 2}") for i in range(10)]
    rows.append(row(5, shard=5, agent="a1", event_type="conflict_detected", success=False))
    sink.write(rows)
    newest = sink.query("ns", limit=3)
    assert [(e.stream_id, e.shard) for e in newest] == [
        (f"{T0 + 9}-0", 0), (f"{T0 + 8}-0", 2), (f"{T0 + 7}-0", 1),
    ]  # fmt: skip
    assert {e.agent_id for e in sink.query("ns", agent_id="a0", limit=100)} == {"a0"}
    assert len(sink.query("ns", agent_id="a0", limit=100)) == 5
    conflicts = sink.query("ns", event_type="conflict_detected")
    assert [(e.success, e.event_type) for e in conflicts] == [(False, EventType.CONFLICT_DETECTED)]
    # Equal times across shards: the higher shard first, deterministically.
    same_ms = sink.query("ns", since=_at(5), until=_at(5))
    assert [e.shard for e in same_ms] == [5, 2]
    window = sink.query("ns", since=_at(3), until=_at(6), limit=100)
    assert sorted(int(e.stream_id.split("-")[0]) - T0 for e in window) == [3, 4, 5, 5, 6]


def test_events_round_trip_every_field(sink: Sink) -> None:
    event = AgentEvent(
        agent_id="agent-ü", session_id="7-0123456789abcdef@agent-ü",
        event_type=EventType.CONFLICT_DETECTED, from_project="old", to_project="new",
        expected_version=3, actual_version=4, success=False, error_message="version mismatch",
        metadata={"k": [1, "ü"], "n": None}, created_at=_at(42), fencing_token=7, shard=3,
        stream_id=f"{T0 + 42}-5",
    )  # fmt: skip
    assert sink.write_events("ns", [event]) == 1
    assert sink.query("ns") == [event]
    assert event_row("ns", event)[14] == json.dumps(event.metadata, separators=(",", ":"))


def test_events_streams_everything_oldest_first_in_pages(sink: Sink) -> None:
    rows = [row(i // 2, shard=i % 2, stream_seq=0) for i in range(23)]
    sink.write(rows)
    seen = list(sink.events("ns", page=4))
    assert len(seen) == 23
    keys = [(e.created_at, e.shard) for e in seen]
    assert keys == sorted(keys)
    assert sink.counts_by_type("ns") == {"project_set": 23}
    assert sink.count("ns", event_type="session_started") == 0


def test_schema_creation_is_idempotent(sink_url: str) -> None:
    with sink_from_url(sink_url) as first:
        first.write([row(1)])
    with sink_from_url(sink_url) as second:  # opens the existing table as it is
        assert second.write([row(1), row(2)]) == 1
        assert second.count("ns") == 2


def test_refuses_a_table_with_the_original_schema(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE agent_project_events (id INTEGER PRIMARY KEY, agent_id TEXT, "
            "event_type TEXT, created_at TEXT)"
        )
    with sink_from_url(f"sqlite:///{path}") as sink, pytest.raises(ConfigurationError) as info:
        sink.count("ns")
    assert "migrate-legacy" in str(info.value)


def test_an_unreachable_database_is_a_typed_error(tmp_path: Path, postgres_available: None) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for url in (
        f"sqlite:///{blocker}/events.db",
        "postgresql://postgres:secret@127.0.0.1:1/test",
    ):
        with sink_from_url(url) as sink, pytest.raises(SinkUnavailable) as info:
            sink.write([row(1)])
        assert info.value.maybe_applied
        assert "secret" not in str(info.value)


@pytest.mark.parametrize("url", ["mysql://x/y", "sqlite://relative.db", "sqlite:///", "", 42])
def test_bad_sink_urls_are_rejected(url: Any) -> None:
    with pytest.raises(InvalidInputError):
        sink_from_url(url)


def test_bad_query_arguments_are_rejected(sink: Sink) -> None:
    for kwargs in (
        {"agent_id": "bad\x00id"},
        {"event_type": "nope"},
        {"limit": 0},
        {"since": "yesterday"},
        {"until": datetime(1960, 1, 1, tzinfo=UTC)},
    ):
        with pytest.raises(InvalidInputError):
            sink.query("ns", **kwargs)


def _at(i: int) -> datetime:
    return datetime.fromtimestamp((T0 + i) / 1000, tz=UTC)


def test_a_process_sink_writes_through_its_child_and_survives_its_death(tmp_path: Path) -> None:
    from coordinator.errors import SinkRefused
    from coordinator.sinks.process import ProcessSink

    url = f"sqlite:///{tmp_path / 'events.db'}"
    sink = ProcessSink(sink_from_url(url))
    try:
        assert sink.write([row(1), row(2)]) == 2
        assert sink.write([row(2), row(3)]) == 1  # insert-or-ignore, in the child
        assert sink.count("ns") == 3  # reads stay in this process
        child = sink._child
        assert child is not None
        child.kill()
        child.wait()
        assert sink.write([row(4)]) == 1  # a dead child is noticed and replaced
        replaced = sink._child
        assert replaced is not None
        assert replaced.pid != child.pid
        # Dying during a request (seen as alive when the batch was sent) is an outage.
        replaced.kill()
        replaced.wait()
        replaced.poll = lambda: None  # type: ignore[method-assign]
        with pytest.raises(SinkUnavailable) as info:
            sink.write([row(6)])
        assert info.value.maybe_applied
        assert sink.write([row(6)]) == 1  # and the next write starts a new child
        with pytest.raises(SinkRefused):  # the data, not an outage: the worker splits
            sink.write([row(5, actual_version=2**70)])
        assert sink.count("ns") == 5
        # Every kind of value crosses to the child unchanged (rows travel as marshal).
        event = AgentEvent(
            agent_id="agent-ü", session_id=None, event_type=EventType.CONFLICT_DETECTED,
            from_project="old", to_project=None, expected_version=3, actual_version=None,
            success=False, error_message="version ✗", metadata={"k": [1, "ü"], "n": None},
            created_at=_at(42), fencing_token=2**62, shard=15, stream_id=f"{T0 + 42}-9",
        )  # fmt: skip
        assert sink.write([event_row("other", event)]) == 1
        assert sink.query("other") == [event]
    finally:
        sink.close()
    assert sink._child is None


def test_reads_never_create_a_sqlite_sink(tmp_path: Path) -> None:
    # A mistyped path in a read command left an empty database (and its directory).
    path = tmp_path / "typo" / "sub" / "events.db"
    with sink_from_url(f"sqlite:///{path}") as sink:
        assert sink.query("ns") == []
        assert sink.count("ns") == 0
        assert list(sink.events("ns")) == []
        assert not (tmp_path / "typo").exists()
        # Once a worker has created it, the same sink reads what it holds.
        with sink_from_url(f"sqlite:///{path}") as writer:
            writer.prepare()
            writer.write([row(1)])
        assert sink.count("ns") == 1


def test_a_sink_that_cannot_be_created_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with sink_from_url(f"sqlite:///{blocker / 'events.db'}") as sink:
        with pytest.raises(ConfigurationError) as info:
            sink.prepare()
        assert "cannot be created: a file is in the way" in str(info.value)


def test_reads_never_create_a_postgres_sink(postgres_url: str) -> None:
    # A read command against a database without the tables created them.
    import psycopg

    def tables() -> set[str]:
        with psycopg.connect(postgres_url) as conn:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
            }

    with sink_from_url(postgres_url) as sink:
        assert sink.query("ns") == []
        assert sink.count("ns") == 0
        assert list(sink.events("ns")) == []
        assert sink.counts_by_type("ns") == {}
        assert tables() == set()
        # Once a worker has created it, the same sink reads what it holds.
        with sink_from_url(postgres_url) as writer:
            writer.prepare()
            writer.write([row(1)])
            written = writer.query("ns")
        assert sink.count("ns") == 1
        assert sink.query("ns") == written
        # And it still writes (its own connection, the schema checked).
        assert sink.write([row(2)]) == 1
        assert sink.count("ns") == 2
