"""The drop-in adapter: the original AgentContextManager's documented behaviour, its
return shapes and exceptions, and the corrected behaviour where the original was wrong."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
import redis

import coordinator
from coordinator import AsyncCoordinator, Coordinator, EventType, InvalidInputError, compat
from coordinator.compat import (
    EVENT_KEYS,
    RECORD_KEYS,
    AgentContextManager,
    ConflictError,
    SessionLeaseExpired,
)
from coordinator.timestamps import stream_id_ms
from tests.helpers import snapshot, stream_entries, wait_until

T = TypeVar("T")
Run = Callable[[Awaitable[T]], T]

#: A session id of the original (a UUID), which this system never minted.
LEGACY_SID = "3f2b8c1e-9d4a-4e6b-8f1a-2c3d4e5f6a7b"
SQL_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def make_acm(redis_url: str, run: Run[Any]) -> Iterator[Callable[..., AgentContextManager]]:
    made: list[AgentContextManager] = []

    def make(**overrides: Any) -> AgentContextManager:
        overrides.setdefault("namespace", "test")
        overrides.setdefault("lease_ttl", 30)
        manager = AgentContextManager.from_url(redis_url, **overrides)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        run(manager.aclose())


@pytest.fixture
def acm(make_acm: Callable[..., AgentContextManager]) -> AgentContextManager:
    return make_acm()


@pytest.fixture
def coord(redis_url: str) -> Iterator[Coordinator]:
    """The same namespace seen through the package's own synchronous client."""
    client = Coordinator.from_url(redis_url, namespace="test")
    yield client
    client.close()


def event_types(raw: redis.Redis) -> list[str]:
    return [e["event_type"] for _, e in stream_entries(raw)]


# --- the surface ------------------------------------------------------------------------


def test_method_names_and_parameters_are_the_originals() -> None:
    expected = {
        "start_session": ["agent_id", "metadata", "session_id"],
        "set_current_project": ["agent_id", "project_name", "session_id", "expected_version"],
        "get_current_project": ["agent_id"],
        "heartbeat_session": ["session_id"],
        "end_session": ["agent_id", "session_id"],
        "cleanup_expired_sessions": [],
        "log_agent_event": [
            "agent_id",
            "session_id",
            "event_type",
            "to_project",
            "from_project",
            "expected_version",
            "actual_version",
            "success",
            "error_message",
            "metadata",
        ],
        "get_agent_events": ["agent_id", "event_type", "limit"],
    }
    for name, params in expected.items():
        method = getattr(AgentContextManager, name)
        assert inspect.iscoroutinefunction(method), name
        assert list(inspect.signature(method).parameters)[1:] == params, name
    defaults = inspect.signature(AgentContextManager.get_agent_events).parameters
    assert defaults["limit"].default == 50


def test_exceptions_are_subclasses_of_ours() -> None:
    assert issubclass(compat.ConflictError, coordinator.ConflictError)
    assert issubclass(compat.SessionLeaseExpired, coordinator.SessionLeaseExpired)
    assert compat.STALE_SESSION_REASON_NO_ACTIVE == "no_active_session"
    assert compat.STALE_SESSION_REASON_MISMATCH == "session_mismatch"
    assert compat.STALE_SESSION_REASON_EXPIRED == "expired"


# --- sessions ---------------------------------------------------------------------------


def test_start_session_returns_a_shared_session_id(
    run: Run[Any], acm: AgentContextManager, coord: Coordinator
) -> None:
    sid = run(acm.start_session("agent-1", {"host": "a"}))
    assert isinstance(sid, str)
    [lease] = coord.list_leases()
    assert (lease.session_id, lease.agent_id, lease.metadata) == (sid, "agent-1", {"host": "a"})
    # The lease is the original's 15 minutes unless the coordinator says otherwise.
    assert lease.ttl == 30
    [event] = run(acm.get_agent_events("agent-1"))
    assert event["event_type"] == "session_started"
    assert event["session_id"] == sid
    assert json.loads(event["metadata"]) == {"host": "a"}


def test_start_session_takes_every_call_form_of_the_original(
    run: Run[Any], acm: AgentContextManager, coord: Coordinator
) -> None:
    def metadata_of(sid: str) -> Any:
        [lease] = coord.list_leases(sid.rpartition("@")[2])
        assert lease.session_id == sid
        return lease.metadata

    assert metadata_of(run(acm.start_session("a"))) is None
    assert metadata_of(run(acm.start_session("b", {"k": 1}))) == {"k": 1}
    # The newer original's positional (agent_id, session_id, metadata): the caller's id
    # is recorded, and the minted id is returned.
    stable = run(acm.start_session("c", "stable-1"))
    assert stable != "stable-1"
    assert re.fullmatch(r"\d+-[0-9a-f]{16}@c", stable)
    assert metadata_of(stable) == {"client_session_id": "stable-1"}
    sid = run(acm.start_session("d", "stable-2", {"k": 2}))
    assert metadata_of(sid) == {"k": 2, "client_session_id": "stable-2"}
    assert metadata_of(run(acm.start_session("e", None, {"k": 3}))) == {"k": 3}
    sid = run(acm.start_session("f", session_id="s", metadata={"k": 4}))
    assert metadata_of(sid) == {"k": 4, "client_session_id": "s"}
    assert metadata_of(run(acm.start_session("g", session_id=""))) is None


def test_start_session_rejects_bad_input_and_writes_nothing(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis
) -> None:
    run(acm.get_current_project("warm-up"))
    before = snapshot(raw)
    for kwargs in (
        {"metadata": [1]},
        {"metadata": [1], "session_id": "s"},
        {"session_id": 5},
        {"metadata": {"k": float("nan")}},
    ):
        with pytest.raises(InvalidInputError):
            run(acm.start_session("agent-1", **kwargs))
    with pytest.raises(ValueError, match="agent_id"):
        run(acm.start_session(" padded "))
    assert snapshot(raw) == before


def test_heartbeat_returns_none_and_extends_the_lease(
    run: Run[Any], acm: AgentContextManager, coord: Coordinator
) -> None:
    sid = run(acm.start_session("agent-1"))
    [before] = coord.list_leases()
    wait_until(lambda: coord.server_time() > before.last_heartbeat + timedelta(milliseconds=5))
    assert run(acm.heartbeat_session(sid)) is None
    [after] = coord.list_leases()
    assert after.expires_at > before.expires_at
    assert after.last_heartbeat > before.last_heartbeat


def test_heartbeat_of_a_dead_session_raises(run: Run[Any], acm: AgentContextManager) -> None:
    # The original silently did nothing (and could even extend a lapsed lease).
    sid = run(acm.start_session("agent-1"))
    run(acm.end_session("agent-1", sid))
    with pytest.raises(SessionLeaseExpired) as info:
        run(acm.heartbeat_session(sid))
    assert (info.value.agent_id, info.value.reason) == ("agent-1", "no_active_session")
    with pytest.raises(coordinator.SessionLeaseExpired) as ours:
        run(acm.heartbeat_session(LEGACY_SID))
    assert ours.value.reason == "no_active_session"
    assert ours.value.session_id == LEGACY_SID
    assert str(ours.value) == f"No active session with id {LEGACY_SID}"


def test_end_session_returns_none_and_is_audited_once(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis
) -> None:
    sid = run(acm.start_session("agent-1"))
    assert run(acm.end_session("agent-1", sid)) is None
    assert run(acm.end_session("agent-1", sid)) is None
    assert event_types(raw) == ["session_started", "session_ended"]
    with pytest.raises(SessionLeaseExpired):
        run(acm.set_current_project("agent-1", "p", sid))


def test_end_session_of_another_session_ends_nothing(
    run: Run[Any], acm: AgentContextManager, coord: Coordinator, raw: redis.Redis
) -> None:
    other = run(acm.start_session("agent-2"))
    run(acm.start_session("agent-1"))
    before = snapshot(raw)
    # The original logged session_ended for these anyway.
    assert run(acm.end_session("agent-1", other)) is None
    assert run(acm.end_session("agent-1", LEGACY_SID)) is None
    assert run(acm.end_session("agent-1", "1-0000000000000000@agent-1")) is None
    assert snapshot(raw) == before
    assert {lease.agent_id for lease in coord.list_leases()} == {"agent-1", "agent-2"}
    with pytest.raises(InvalidInputError):
        run(acm.end_session("", other))


def test_cleanup_counts_the_sessions_of_every_process(
    run: Run[Any], make_acm: Callable[..., AgentContextManager], raw: redis.Redis
) -> None:
    starter = make_acm(lease_ttl=0.1)
    for agent in ("a", "b", "c"):
        run(starter.start_session(agent))
    reaper = make_acm()  # another instance: the original's per-process dict saw nothing
    wait_until(lambda: not reaper_leases(run, reaper), timeout=5)
    assert run(reaper.cleanup_expired_sessions()) == 3
    assert run(starter.cleanup_expired_sessions()) == 0
    expired = run(reaper.get_agent_events(event_type="session_expired"))
    assert sorted(e["agent_id"] for e in expired) == ["a", "b", "c"]
    assert all(e["success"] is True and e["error_message"] == "lease expired" for e in expired)


def reaper_leases(run: Run[Any], manager: AgentContextManager) -> list[Any]:
    leases: list[Any] = run(manager.coordinator.list_leases())
    return leases


def test_an_expired_lease_cannot_write(
    run: Run[Any], make_acm: Callable[..., AgentContextManager], raw: redis.Redis
) -> None:
    short = make_acm(lease_ttl=0.1)
    sid = run(short.start_session("agent-1"))
    wait_until(lambda: not reaper_leases(run, short), timeout=5)
    with pytest.raises(SessionLeaseExpired) as info:
        run(short.set_current_project("agent-1", "p", sid))
    assert info.value.reason == compat.STALE_SESSION_REASON_EXPIRED
    assert str(info.value) == "Session lease expired for agent agent-1"
    assert run(short.get_current_project("agent-1")) is None
    assert event_types(raw) == ["session_started", "session_expired", "write_rejected"]


# --- project records --------------------------------------------------------------------


def test_set_and_get_return_the_original_record_shape(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis
) -> None:
    assert run(acm.get_current_project("agent-1")) is None
    sid = run(acm.start_session("agent-1"))
    record = run(acm.set_current_project("agent-1", "proj-a", sid))
    assert tuple(record) == RECORD_KEYS
    assert record["agent_id"] == "agent-1"
    assert record["project_name"] == "proj-a"
    assert record["version"] == 1
    assert record["updated_by"] == "agent-1"
    assert record["session_id"] == sid
    # SQLite's CURRENT_TIMESTAMP form, from the server clock: the write's event time.
    assert SQL_TIMESTAMP.fullmatch(record["updated_at"])
    write_id = stream_entries(raw)[-1][0]
    written = datetime.fromtimestamp(stream_id_ms(write_id) // 1000, tz=UTC)
    assert record["updated_at"] == written.strftime("%Y-%m-%d %H:%M:%S")
    assert run(acm.get_current_project("agent-1")) == record


def test_versions_and_the_event_of_each_write(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis
) -> None:
    sid = run(acm.start_session("agent-1"))
    writes = ["p1", "p1", "p2", None, "p3"]
    versions = [run(acm.set_current_project("agent-1", p, sid))["version"] for p in writes]
    assert versions == [1, 2, 3, 4, 5]
    events = [e for _, e in stream_entries(raw)][1:]
    assert [(e["event_type"], e["from_project"], e["to_project"]) for e in events] == [
        ("project_set", "", "p1"),
        ("project_set", "p1", "p1"),  # the same project again is not a switch
        ("project_switched", "p1", "p2"),
        # The original logged a clear as a switch to None, which its NOT NULL
        # to_project column refused: the event was lost.
        ("project_cleared", "p2", ""),
        ("project_set", "", "p3"),  # after a clear there is nothing to switch from
    ]


def test_clearing_keeps_the_record_and_its_version(run: Run[Any], acm: AgentContextManager) -> None:
    sid = run(acm.start_session("agent-1"))
    run(acm.set_current_project("agent-1", "p1", sid))
    cleared = run(acm.set_current_project("agent-1", None, sid, expected_version=1))
    assert (cleared["project_name"], cleared["version"]) == (None, 2)
    assert run(acm.get_current_project("agent-1")) == cleared


@pytest.mark.parametrize("caught", [compat.ConflictError, coordinator.ConflictError])
def test_stale_expected_version_is_a_conflict(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis, caught: type[Exception]
) -> None:
    sid = run(acm.start_session("agent-1"))
    run(acm.set_current_project("agent-1", "a", sid))
    run(acm.set_current_project("agent-1", "b", sid))
    with pytest.raises(caught) as info:
        run(acm.set_current_project("agent-1", "c", sid, expected_version=1))
    exc = info.value
    assert isinstance(exc, ConflictError)
    assert str(exc) == "Version conflict for agent agent-1: expected version 1, current version 2"
    assert exc.current is not None
    assert (exc.current.project_name, exc.current.version) == ("b", 2)
    assert run(acm.get_current_project("agent-1"))["project_name"] == "b"
    [conflict] = run(acm.get_agent_events("agent-1", "conflict_detected"))
    assert conflict["success"] is False
    assert (conflict["expected_version"], conflict["actual_version"]) == (1, 2)
    assert (conflict["from_project"], conflict["to_project"]) == ("b", "c")


def test_compare_and_set_is_committed_and_seen_by_another_instance(
    run: Run[Any], make_acm: Callable[..., AgentContextManager]
) -> None:
    # The original's compare-and-set path returned the new row without committing it.
    writer, reader = make_acm(), make_acm()
    sid = run(writer.start_session("agent-1"))
    run(writer.set_current_project("agent-1", "a", sid))
    written = run(writer.set_current_project("agent-1", "b", sid, expected_version=1))
    assert written["version"] == 2
    assert run(reader.get_current_project("agent-1")) == written
    assert run(reader.set_current_project("agent-1", "c", sid, expected_version=2))["version"] == 3


def test_expected_version_zero_writes_only_a_new_record(
    run: Run[Any], acm: AgentContextManager
) -> None:
    # The original raised a conflict for 0 on a new agent (its UPDATE found no row).
    sid = run(acm.start_session("agent-1"))
    assert run(acm.set_current_project("agent-1", "a", sid, expected_version=0))["version"] == 1
    with pytest.raises(ConflictError):
        run(acm.set_current_project("agent-1", "b", sid, expected_version=0))


@pytest.mark.parametrize("caught", [compat.SessionLeaseExpired, coordinator.SessionLeaseExpired])
def test_writes_by_stale_sessions_raise_the_originals_exception(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis, caught: type[Exception]
) -> None:
    first = run(acm.start_session("agent-1"))
    other = run(acm.start_session("agent-2"))
    current = run(acm.start_session("agent-1"))  # supersedes the first
    cases = [
        (first, "superseded", "Session superseded by a newer session of agent agent-1"),
        (other, "session_mismatch", "Session ID mismatch for agent agent-1"),
        ("9-0000000000000000@agent-1", "no_active_session", "No active session for agent agent-1"),
    ]
    for sid, reason, message in cases:
        with pytest.raises(caught) as info:
            run(acm.set_current_project("agent-1", "p", sid))
        assert isinstance(info.value, SessionLeaseExpired)
        assert (info.value.agent_id, info.value.session_id) == ("agent-1", sid)
        assert (info.value.reason, str(info.value)) == (reason, message)
    rejected = run(acm.get_agent_events("agent-1", "write_rejected"))
    assert sorted(e["error_message"] for e in rejected) == sorted(r for _, r, _ in cases)
    run(acm.coordinator.revoke_session("agent-1", reason="operator"))
    with pytest.raises(SessionLeaseExpired) as revoked:
        run(acm.set_current_project("agent-1", "p", current))
    assert revoked.value.reason == "revoked"
    assert run(acm.get_current_project("agent-1")) is None


def test_a_session_id_never_minted_here_is_not_active_and_writes_nothing(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis
) -> None:
    run(acm.start_session("agent-1"))
    before = snapshot(raw)
    with pytest.raises(SessionLeaseExpired) as info:
        run(acm.set_current_project("agent-1", "p", LEGACY_SID))
    assert (info.value.agent_id, info.value.reason) == ("agent-1", "no_active_session")
    assert snapshot(raw) == before


def test_bad_input_is_a_value_error_and_writes_nothing(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis
) -> None:
    sid = run(acm.start_session("agent-1"))
    before = snapshot(raw)
    for args in (
        ("agent-1", "", sid, None),
        ("agent-1", "p\n", sid, None),
        ("agent-1", "p", sid, -1),
        ("agent-1", "p", sid, True),
        ("agent-1", "p", None, None),
    ):
        with pytest.raises(ValueError, match=r"^invalid "):
            run(acm.set_current_project(*args))
    assert snapshot(raw) == before


# --- events -----------------------------------------------------------------------------


def test_events_have_the_original_columns(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis
) -> None:
    sid = run(acm.start_session("agent-1"))
    run(acm.set_current_project("agent-1", "p1", sid))
    run(acm.set_current_project("agent-1", "p2", sid, expected_version=1))
    events = run(acm.get_agent_events())
    assert [e["event_type"] for e in events] == [
        "project_switched",
        "project_set",
        "session_started",
    ]
    entries = list(reversed(stream_entries(raw)))
    for event, (stream_id, _) in zip(events, entries, strict=True):
        assert tuple(event) == EVENT_KEYS
        assert event["id"].endswith(f":{stream_id}")
        created = datetime.fromisoformat(event["created_at"])
        assert created.tzinfo is not None
        assert created.timestamp() * 1000 == stream_id_ms(stream_id)
        assert event["success"] is True
        assert event["agent_id"] == "agent-1"
        assert event["session_id"] == sid
    switched, _, started = events
    assert switched["from_project"] == "p1"
    assert (switched["expected_version"], switched["actual_version"]) == (1, 2)
    assert switched["error_message"] is None
    # Columns the original declared NOT NULL are never None; metadata is JSON text.
    assert started["to_project"] == ""
    assert started["from_project"] is None
    assert started["metadata"] == "{}"
    assert len({e["id"] for e in events}) == 3


def test_get_agent_events_filters_limits_and_orders(
    run: Run[Any], acm: AgentContextManager
) -> None:
    a = run(acm.start_session("a"))
    b = run(acm.start_session("b"))
    for i in range(3):
        run(acm.set_current_project("a", f"pa{i}", a))
        run(acm.set_current_project("b", f"pb{i}", b))
    assert len(run(acm.get_agent_events())) == 8
    assert len(run(acm.get_agent_events(limit=3))) == 3
    # The original tested its filters for truth: an empty string means no filter.
    assert len(run(acm.get_agent_events("", ""))) == 8
    only_a = run(acm.get_agent_events(agent_id="a"))
    assert [e["to_project"] for e in only_a] == ["pa2", "pa1", "pa0", ""]
    switched = run(acm.get_agent_events(event_type="project_switched"))
    # Within an agent the order is exact; events of two shards in one millisecond have
    # no order to assert.
    assert [e["to_project"] for e in switched if e["agent_id"] == "b"] == ["pb2", "pb1"]
    assert sorted(e["to_project"] for e in switched) == ["pa1", "pa2", "pb1", "pb2"]
    times = [datetime.fromisoformat(e["created_at"]) for e in run(acm.get_agent_events())]
    assert times == sorted(times, reverse=True)
    with pytest.raises(InvalidInputError):
        run(acm.get_agent_events(event_type="no_such_type"))
    with pytest.raises(InvalidInputError):
        run(acm.get_agent_events(limit=0))


def test_log_agent_event_is_recorded_atomically_as_an_application_event(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis
) -> None:
    sid = run(acm.start_session("agent-1"))
    result = run(
        acm.log_agent_event(
            "agent-1",
            sid,
            "project_set",
            "p2",
            from_project="p1",
            expected_version=1,
            actual_version=2,
            success=False,
            error_message="boom",
            metadata={"k": 1},
        )
    )
    assert result is None
    [event] = run(acm.get_agent_events("agent-1", "app_event"))
    assert event["session_id"] == sid
    assert (event["from_project"], event["to_project"]) == ("p1", "p2")
    assert (event["expected_version"], event["actual_version"]) == (1, 2)
    assert (event["success"], event["error_message"]) == (False, "boom")
    assert json.loads(event["metadata"]) == {"logged_type": "project_set", "metadata": {"k": 1}}
    # An application reports; it cannot forge a change: nothing was set.
    assert run(acm.get_agent_events("agent-1", "project_set")) == []
    assert run(acm.get_current_project("agent-1")) is None
    [(_, entry)] = [e for e in stream_entries(raw) if e[1]["event_type"] == "app_event"]
    assert entry["fencing_token"] == sid.partition("-")[0]
    # The original's own calls: session events with to_project="" and no session.
    run(acm.log_agent_event("agent-1", "", "session_started", ""))
    newest = run(acm.get_agent_events("agent-1", "app_event", limit=1))[0]
    assert (newest["session_id"], newest["to_project"], newest["success"]) == ("", "", True)
    assert json.loads(newest["metadata"]) == {"logged_type": "session_started"}


def test_log_agent_event_rejects_bad_input_and_writes_nothing(
    run: Run[Any], acm: AgentContextManager, raw: redis.Redis
) -> None:
    sid = run(acm.start_session("agent-1"))
    other = run(acm.start_session("agent-2"))
    before = snapshot(raw)
    bad: list[dict[str, Any]] = [
        {"event_type": "has space"},
        {"event_type": ""},
        {"success": "yes"},
        {"session_id": other},
        {"session_id": LEGACY_SID},
        {"to_project": "x" * 300},
        {"actual_version": -1},
        {"metadata": {"k": "x" * 9000}},
        {"error_message": 42},
    ]
    for overrides in bad:
        kwargs: dict[str, Any] = {
            "agent_id": "agent-1",
            "session_id": sid,
            "event_type": "custom",
            "to_project": "p",
            **overrides,
        }
        with pytest.raises(InvalidInputError):
            run(acm.log_agent_event(**kwargs))
    assert snapshot(raw) == before


def test_every_event_type_reaches_the_adapter(
    run: Run[Any], make_acm: Callable[..., AgentContextManager]
) -> None:
    acm = make_acm()
    short = make_acm(lease_ttl=0.1)
    sid = run(acm.start_session("agent-1"))
    run(acm.set_current_project("agent-1", "a", sid))
    run(acm.set_current_project("agent-1", "b", sid))
    run(acm.set_current_project("agent-1", None, sid))
    with pytest.raises(ConflictError):
        run(acm.set_current_project("agent-1", "c", sid, expected_version=9))
    newer = run(acm.start_session("agent-1"))
    with pytest.raises(SessionLeaseExpired):
        run(acm.set_current_project("agent-1", "c", sid))
    with pytest.raises(coordinator.SessionAlreadyActive):
        run(acm.coordinator.start_session("agent-1", exclusive=True))
    run(acm.end_session("agent-1", newer))
    run(acm.start_session("agent-2"))
    run(acm.coordinator.revoke_session("agent-2", reason="operator"))
    run(short.start_session("agent-3"))
    wait_until(lambda: not reaper_leases(run, acm), timeout=5)
    assert run(acm.cleanup_expired_sessions()) == 1
    run(acm.log_agent_event("agent-1", "", "note", ""))
    seen = {e["event_type"] for e in run(acm.get_agent_events(limit=100))}
    # project_imported comes from migrate-legacy (tests/test_migrate.py); audit_anomaly
    # from the worker; reservation events from reservations, which scribe_mcp's API has
    # not (tests/test_reservations.py).
    elsewhere = {"project_imported", "audit_anomaly"}
    elsewhere |= {e.value for e in EventType if e.value.startswith("reservation_")}
    assert seen == {e.value for e in EventType} - elsewhere


# --- construction and the module functions ----------------------------------------------


def test_constructed_from_an_async_coordinator_which_it_does_not_close(
    run: Run[Any], redis_url: str
) -> None:
    own = AsyncCoordinator.from_url(redis_url, namespace="test")
    acm = AgentContextManager(own)
    assert acm.coordinator is own
    assert (acm.storage, acm.state_manager) == (None, None)
    sid = run(acm.start_session("agent-1"))
    run(acm.aclose())
    assert run(own.heartbeat_session(sid)).session_id == sid  # still usable: not closed
    run(own.aclose())
    assert AgentContextManager(coordinator=own).coordinator is own


def test_constructor_refuses_the_sync_client_and_mixed_arguments(redis_url: str) -> None:
    sync = Coordinator.from_url(redis_url, namespace="test")
    with pytest.raises(InvalidInputError, match="AsyncCoordinator"):
        AgentContextManager(sync)
    with pytest.raises(InvalidInputError, match="AsyncCoordinator"):
        AgentContextManager(coordinator=sync)  # type: ignore[arg-type]
    own = AsyncCoordinator.from_url(redis_url, namespace="test")
    with pytest.raises(InvalidInputError):
        AgentContextManager(coordinator=own, url=redis_url)
    sync.close()


def test_module_functions(
    run: Run[Any], redis_url: str, monkeypatch: pytest.MonkeyPatch, coord: Coordinator
) -> None:
    monkeypatch.setattr(compat, "_agent_context_manager", None)
    with pytest.raises(RuntimeError, match="init_agent_context_manager"):
        compat.get_agent_context_manager()
    # The original's arguments: kept, unused; the connection comes from the environment.
    monkeypatch.setenv("COORDINATOR_REDIS_URL", redis_url)
    monkeypatch.setenv("COORDINATOR_NAMESPACE", "test")
    storage, state_manager = object(), object()
    made = compat.init_agent_context_manager(storage, state_manager)
    assert compat.get_agent_context_manager() is made
    assert (made.storage, made.state_manager) == (storage, state_manager)
    sid = run(made.start_session("agent-1"))
    assert [lease.session_id for lease in coord.list_leases()] == [sid]
    run(made.aclose())
    # Ours: a URL and settings, or a coordinator.
    monkeypatch.delenv("COORDINATOR_NAMESPACE")
    other = compat.init_agent_context_manager(url=redis_url, namespace="elsewhere")
    assert compat.get_agent_context_manager() is other
    assert other.coordinator.settings.namespace == "elsewhere"
    assert run(other.get_current_project("agent-1")) is None  # another namespace
    run(other.aclose())
    own = AsyncCoordinator.from_url(redis_url, namespace="test")
    assert compat.init_agent_context_manager(coordinator=own).coordinator is own
    run(own.aclose())


# --- separate processes -----------------------------------------------------------------

_CHILD = """
import asyncio, json, sys
from coordinator.compat import AgentContextManager

async def main(url, action, agent, sid=""):
    async with AgentContextManager.from_url(url, namespace="test", lease_ttl=30) as acm:
        if action == "start":
            print(await acm.start_session(agent))
        elif action == "heartbeat-and-read":
            await acm.heartbeat_session(sid)
            print(json.dumps(await acm.get_current_project(agent)))
        elif action == "end":
            await acm.end_session(agent, sid)

asyncio.run(main(*sys.argv[1:]))
"""


def _child(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_instances_in_separate_processes_share_a_session(
    run: Run[Any], acm: AgentContextManager, redis_url: str
) -> None:
    # The original kept leases in a per-process dict: another process could not use them.
    sid = _child(redis_url, "start", "agent-1")
    record = run(acm.set_current_project("agent-1", "proj-a", sid, expected_version=0))
    assert json.loads(_child(redis_url, "heartbeat-and-read", "agent-1", sid)) == record
    _child(redis_url, "end", "agent-1", sid)
    with pytest.raises(SessionLeaseExpired) as info:
        run(acm.set_current_project("agent-1", "proj-b", sid))
    assert info.value.reason == "no_active_session"
    types = [e["event_type"] for e in run(acm.get_agent_events("agent-1"))]
    assert types == ["write_rejected", "session_ended", "project_set", "session_started"]
