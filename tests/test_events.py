"""Audit events: one per change and per rejected attempt, server timestamps, queries."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from coordinator import ConflictError, EventType, SessionLeaseExpired
from coordinator.events import EVENT_FIELDS
from coordinator.scripts import lua_dir
from coordinator.timestamps import stream_id_ms
from tests.helpers import stream_entries

pytestmark = pytest.mark.cluster


def test_every_change_and_rejection_is_exactly_one_event(client: Any, raw: redis.Redis) -> None:
    expected: list[str] = []
    s = client.start_session("agent-1")
    expected.append("session_started")
    client.set_current_project("agent-1", "a", s.session_id)
    expected.append("project_set")
    with pytest.raises(ConflictError):
        client.set_current_project("agent-1", "b", s.session_id, expected_version=7)
    expected.append("conflict_detected")
    client.set_current_project("agent-1", "b", s.session_id, expected_version=1)
    expected.append("project_switched")
    client.heartbeat_session(s.session_id)  # not a change: no event
    s2 = client.start_session("agent-1")
    expected += ["session_superseded", "session_started"]
    with pytest.raises(SessionLeaseExpired):
        client.set_current_project("agent-1", "c", s.session_id)
    expected.append("write_rejected")
    client.set_current_project("agent-1", None, s2.session_id)
    expected.append("project_cleared")
    client.revoke_session("agent-1", reason="r")
    expected.append("session_revoked")
    assert [e["event_type"] for _, e in stream_entries(raw)] == expected


def test_events_use_the_server_clock(client: Any, raw: redis.Redis, monkeypatch: Any) -> None:
    # A client whose clock is wrong by a decade changes nothing: no timestamp is
    # taken on the client.
    skewed = time.time() - 10 * 365 * 86400
    monkeypatch.setattr(time, "time", lambda: skewed)
    s = client.start_session("agent-1")
    record = client.set_current_project("agent-1", "a", s.session_id)
    monkeypatch.undo()
    seconds, micros = raw.time()
    server_now = datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)
    assert abs(server_now - s.started_at) < timedelta(seconds=5)
    [(_, _), (write_id, _)] = stream_entries(raw)
    # The record's updated_at is its event's stream id time: one clock, one instant.
    assert record.updated_at.timestamp() * 1000 == stream_id_ms(write_id)
    events = client.get_agent_events("agent-1")
    assert events[0].created_at == record.updated_at


def test_event_fields_match_the_lua_writer() -> None:
    lib = (lua_dir() / "lib.lua").read_text()
    body = lib[lib.index("local function audit") :]
    body = body[: body.index("end\n")]
    names = [part.strip().strip("'") for part in body.split("'*',", 1)[1].split(",")[::2]]
    assert tuple(n.strip("'") for n in names) == EVENT_FIELDS


def test_get_agent_events_filters_and_orders(client: Any) -> None:
    a = client.start_session("a")
    b = client.start_session("b")
    for i in range(3):
        client.set_current_project("a", f"pa{i}", a.session_id)
        client.set_current_project("b", f"pb{i}", b.session_id)
    everything = client.get_agent_events(limit=100)
    assert len(everything) == 2 + 6
    keys = [(e.created_at, e.stream_id) for e in everything]
    assert [k[0] for k in keys] == sorted((k[0] for k in keys), reverse=True)
    only_a = client.get_agent_events(agent_id="a", limit=100)
    assert {e.agent_id for e in only_a} == {"a"}
    assert [e.to_project for e in only_a if e.to_project] == ["pa2", "pa1", "pa0"]
    switched = client.get_agent_events(event_type="project_switched")
    assert len(switched) == 4
    assert all(e.event_type is EventType.PROJECT_SWITCHED for e in switched)
    assert len(client.get_agent_events(limit=3)) == 3
    newest = client.get_agent_events(agent_id="b", event_type="project_switched", limit=1)
    assert newest[0].to_project == "pb2"
    assert newest[0].from_project == "pb1"


def test_get_agent_events_pages_past_other_agents(client: Any) -> None:
    # Filtering must look beyond the first page when the agent is rare.
    a = client.start_session("needle")
    client.set_current_project("needle", "p", a.session_id)
    hay = client.start_session("hay")
    for i in range(450):
        client.set_current_project("hay", f"h{i}", hay.session_id)
    found = client.get_agent_events(agent_id="needle", event_type="project_set")
    assert len(found) == 1
    assert found[0].to_project == "p"
    assert len(client.get_agent_events(event_type="session_started", limit=10)) == 2


def test_get_agent_events_time_window(client: Any) -> None:
    s = client.start_session("agent-1")
    first = client.set_current_project("agent-1", "a", s.session_id)
    later = client.set_current_project("agent-1", "b", s.session_id)
    window = client.get_agent_events(
        agent_id="agent-1", since=first.updated_at, until=later.updated_at, limit=100
    )
    assert {e.to_project for e in window if e.to_project} <= {"a", "b"}
    assert all(first.updated_at <= e.created_at <= later.updated_at for e in window)
    assert client.get_agent_events(until=s.started_at - timedelta(seconds=1)) == []


def test_rejected_events_carry_versions_and_reason(client: Any) -> None:
    s = client.start_session("agent-1")
    client.set_current_project("agent-1", "a", s.session_id)
    with pytest.raises(ConflictError):
        client.set_current_project("agent-1", "b", s.session_id, expected_version=5)
    [conflict] = client.get_agent_events(event_type="conflict_detected")
    assert conflict.success is False
    assert (conflict.expected_version, conflict.actual_version) == (5, 1)
    assert (conflict.from_project, conflict.to_project) == ("a", "b")
    assert conflict.fencing_token == s.fencing_token
    assert conflict.error_message
