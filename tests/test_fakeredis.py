"""Fast in-process unit subset on fakeredis (with Lua), where it is faithful.

fakeredis runs the real Lua scripts through lupa, so argument encoding, reply
decoding and the code -> exception table are exercised without a server. TTL
expiry, NOSCRIPT, cluster and multi-process behaviour are proven on real servers
in the other test modules, not here.
"""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from coordinator import (
    AsyncCoordinator,
    ConflictError,
    Coordinator,
    EventType,
    SessionAlreadyActive,
    SessionLeaseExpired,
    Settings,
)


@pytest.fixture
def fake() -> Coordinator:
    return Coordinator(
        Settings(namespace="unit"), redis_client=fakeredis.FakeRedis(decode_responses=True)
    )


def test_lifecycle_on_fakeredis(fake: Coordinator) -> None:
    s = fake.start_session("a", metadata={"m": 1})
    assert fake.set_current_project("a", "p", s.session_id, expected_version=0).version == 1
    with pytest.raises(ConflictError) as info:
        fake.set_current_project("a", "q", s.session_id, expected_version=0)
    assert info.value.current is not None
    assert info.value.current.project_name == "p"
    with pytest.raises(SessionAlreadyActive):
        fake.start_session("a", exclusive=True)
    s2 = fake.start_session("a")
    with pytest.raises(SessionLeaseExpired) as lease:
        fake.set_current_project("a", "q", s.session_id)
    assert lease.value.reason == "superseded"
    assert fake.set_current_project("a", None, s2.session_id).version == 2
    assert fake.end_session("a", s2.session_id) is True
    types = [e.event_type for e in fake.get_agent_events("a", limit=100)]
    assert types == [
        EventType.SESSION_ENDED,
        EventType.PROJECT_CLEARED,
        EventType.WRITE_REJECTED,
        EventType.SESSION_STARTED,
        EventType.SESSION_SUPERSEDED,
        EventType.SESSION_REFUSED,
        EventType.CONFLICT_DETECTED,
        EventType.PROJECT_SET,
        EventType.SESSION_STARTED,
    ]


def test_request_id_replay_on_fakeredis(fake: Coordinator) -> None:
    s = fake.start_session("a")
    first = fake.set_current_project("a", "p", s.session_id, request_id="r1")
    assert fake.set_current_project("a", "p", s.session_id, request_id="r1") == first
    assert fake.get_current_project("a") == first


def test_async_shell_on_fakeredis() -> None:
    async def scenario() -> None:
        client = AsyncCoordinator(
            Settings(namespace="unit"),
            redis_client=fakeredis.FakeAsyncRedis(decode_responses=True),
        )
        sessions = await asyncio.gather(*(client.start_session(f"a{i}") for i in range(20)))
        records = await asyncio.gather(
            *(client.set_current_project(s.agent_id, "p", s.session_id) for s in sessions)
        )
        assert {r.version for r in records} == {1}
        assert len(await client.list_leases()) == 20
        await client.aclose()

    asyncio.run(scenario())
