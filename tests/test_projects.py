"""Project records: compare-and-set semantics, clearing, conflicts and request ids."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from coordinator import ConflictError, RequestIdReusedError, SessionLeaseExpired
from tests.helpers import snapshot, stream_entries

pytestmark = pytest.mark.cluster


@pytest.fixture
def session(client: Any) -> Any:
    return client.start_session("agent-1")


def test_unconditional_writes_count_versions_from_one(client: Any, session: Any) -> None:
    assert client.get_current_project("agent-1") is None
    versions = [
        client.set_current_project("agent-1", f"p{i}", session.session_id).version for i in range(5)
    ]
    assert versions == [1, 2, 3, 4, 5]
    record = client.get_current_project("agent-1")
    assert record.project_name == "p4"
    assert record.version == 5
    assert record.session_id == session.session_id
    assert record.updated_by == "agent-1"
    assert record.fencing_token == session.fencing_token


def test_expected_version_zero_means_no_record_yet(client: Any, session: Any) -> None:
    first = client.set_current_project("agent-1", "a", session.session_id, expected_version=0)
    assert first.version == 1
    with pytest.raises(ConflictError) as info:
        client.set_current_project("agent-1", "b", session.session_id, expected_version=0)
    assert info.value.expected_version == 0
    assert info.value.current == first
    assert info.value.actual_version == 1


def test_expected_version_n_writes_only_on_match(client: Any, session: Any) -> None:
    client.set_current_project("agent-1", "a", session.session_id)
    client.set_current_project("agent-1", "b", session.session_id)
    with pytest.raises(ConflictError) as info:
        client.set_current_project("agent-1", "c", session.session_id, expected_version=1)
    # The conflict carries the current record, so the caller can re-plan without a read.
    current = info.value.current
    assert current is not None
    assert (current.project_name, current.version) == ("b", 2)
    assert current == client.get_current_project("agent-1")
    ok = client.set_current_project("agent-1", "c", session.session_id, expected_version=2)
    assert ok.version == 3


def test_conflict_with_no_record_has_current_none(client: Any, session: Any) -> None:
    with pytest.raises(ConflictError) as info:
        client.set_current_project("agent-1", "a", session.session_id, expected_version=3)
    assert info.value.current is None
    assert info.value.actual_version == 0
    assert client.get_current_project("agent-1") is None


def test_clearing_is_a_versioned_audited_write(client: Any, session: Any, raw: redis.Redis) -> None:
    client.set_current_project("agent-1", "a", session.session_id)
    cleared = client.set_current_project("agent-1", None, session.session_id, expected_version=1)
    assert cleared.project_name is None
    assert cleared.version == 2
    record = client.get_current_project("agent-1")
    assert record is not None
    assert (record.project_name, record.version) == (None, 2)
    # Versions never reset: the record still exists, so expected_version=0 conflicts.
    with pytest.raises(ConflictError):
        client.set_current_project("agent-1", "b", session.session_id, expected_version=0)
    assert client.set_current_project("agent-1", "b", session.session_id).version == 3
    events = [e for _, e in stream_entries(raw) if e["event_type"] == "project_cleared"]
    assert len(events) == 1
    assert events[0]["from_project"] == "a"
    assert events[0]["to_project"] == ""
    assert events[0]["actual_version"] == "2"


def test_event_types_set_switched_and_same(client: Any, session: Any, raw: redis.Redis) -> None:
    client.set_current_project("agent-1", "a", session.session_id)
    client.set_current_project("agent-1", "a", session.session_id)
    client.set_current_project("agent-1", "b", session.session_id)
    client.set_current_project("agent-1", None, session.session_id)
    client.set_current_project("agent-1", "c", session.session_id)
    types = [e["event_type"] for _, e in stream_entries(raw)][1:]
    assert types == [
        "project_set",  # first write
        "project_set",  # same project again
        "project_switched",  # a -> b
        "project_cleared",
        "project_set",  # from a cleared record: nothing to switch from
    ]


def test_versions_survive_new_sessions(client: Any, session: Any) -> None:
    client.set_current_project("agent-1", "a", session.session_id)
    client.end_session("agent-1", session.session_id)
    again = client.start_session("agent-1")
    record = client.set_current_project("agent-1", "b", again.session_id, expected_version=1)
    assert record.version == 2
    assert record.fencing_token == 2


def test_dead_session_cannot_write_and_nothing_changes(
    client: Any, session: Any, raw: redis.Redis
) -> None:
    client.set_current_project("agent-1", "a", session.session_id)
    client.revoke_session("agent-1", reason="test")
    before = client.get_current_project("agent-1")
    with pytest.raises(SessionLeaseExpired):
        client.set_current_project("agent-1", "b", session.session_id)
    assert client.get_current_project("agent-1") == before


def test_request_id_replays_the_first_result(client: Any, session: Any, raw: redis.Redis) -> None:
    first = client.set_current_project("agent-1", "a", session.session_id, request_id="req-1")
    events_after_first = len(stream_entries(raw))
    again = client.set_current_project("agent-1", "a", session.session_id, request_id="req-1")
    assert again == first
    assert client.get_current_project("agent-1").version == 1
    assert len(stream_entries(raw)) == events_after_first
    # A new request id applies again.
    assert (
        client.set_current_project("agent-1", "a", session.session_id, request_id="req-2").version
        == 2
    )


def test_request_id_replays_a_conflict(client: Any, session: Any) -> None:
    client.set_current_project("agent-1", "a", session.session_id)
    for _ in range(2):
        with pytest.raises(ConflictError) as info:
            client.set_current_project(
                "agent-1", "b", session.session_id, expected_version=0, request_id="r"
            )
        assert info.value.current.version == 1


def test_request_id_replays_a_lease_rejection(client: Any, session: Any) -> None:
    client.revoke_session("agent-1")
    for _ in range(2):
        with pytest.raises(SessionLeaseExpired) as info:
            client.set_current_project("agent-1", "b", session.session_id, request_id="r")
        assert info.value.reason == "revoked"


def test_request_id_reused_with_other_arguments(
    client: Any, session: Any, raw: redis.Redis
) -> None:
    client.set_current_project("agent-1", "a", session.session_id, request_id="r")
    before = snapshot(raw)
    with pytest.raises(RequestIdReusedError) as info:
        client.set_current_project("agent-1", "b", session.session_id, request_id="r")
    assert isinstance(info.value, ValueError)
    assert snapshot(raw) == before


def test_request_id_reused_with_another_expected_version(
    client: Any, session: Any, raw: redis.Redis
) -> None:
    # Same agent, session and project: only expected_version differs. Replaying the
    # first result would tell the caller a write it never asked for succeeded.
    first = client.set_current_project("agent-1", "a", session.session_id, 0, request_id="r")
    assert first.version == 1
    before = snapshot(raw)
    with pytest.raises(RequestIdReusedError):
        client.set_current_project("agent-1", "a", session.session_id, 1, request_id="r")
    with pytest.raises(RequestIdReusedError):
        client.set_current_project("agent-1", "a", session.session_id, None, request_id="r")
    assert snapshot(raw) == before
    # The same arguments still replay the first result.
    again = client.set_current_project("agent-1", "a", session.session_id, 0, request_id="r")
    assert again.version == 1


def test_request_ids_are_scoped_per_agent(client: Any) -> None:
    a = client.start_session("a")
    b = client.start_session("b")
    assert client.set_current_project("a", "x", a.session_id, request_id="same").version == 1
    assert client.set_current_project("b", "y", b.session_id, request_id="same").project_name == "y"


def test_request_record_expires(make_client: Any, raw: redis.Redis) -> None:
    client = make_client(request_ttl=30)
    s = client.start_session("agent-1")
    client.set_current_project("agent-1", "a", s.session_id, request_id="r")
    [key] = list(raw.scan_iter(match="*:req:*"))
    assert key.endswith(":req:r:agent-1")
    assert 29_000 < raw.pttl(key) <= 30_000


def test_get_current_projects_in_one_call(client: Any, session: Any) -> None:
    other = client.start_session("agent-2")
    client.set_current_project("agent-1", "a", session.session_id)
    client.set_current_project("agent-2", "b", other.session_id)
    records = client.get_current_projects(["agent-2", "nobody", "agent-1"])
    assert [r.project_name if r else None for r in records] == ["b", None, "a"]


def test_unicode_names_round_trip(client: Any) -> None:
    s = client.start_session("агент 1 🤖")
    record = client.set_current_project("агент 1 🤖", "проект/α β", s.session_id)  # noqa: RUF001
    assert client.get_current_project("агент 1 🤖") == record
    assert client.list_leases("агент 1 🤖")[0].session_id == s.session_id
