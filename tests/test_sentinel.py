"""Sentinel: a real primary, replica and three sentinels; the primary fails over while
sync and asyncio clients work. They reconnect to the new primary and carry on, reload
their scripts there (NOSCRIPT), and never apply a write twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator import AsyncCoordinator, Coordinator, EmbeddedRedis
from coordinator.local.sentinel import EmbeddedSentinel
from coordinator.scripts import sources
from tests.helpers import AsyncAsSync

#: Many processes (or many generated cases): Redis 6.2 and Valkey in CI (conftest).
pytestmark = pytest.mark.slow

#: Retries that span a failover (sentinels notice a dead primary after 1.5 s here).
RIDE_THROUGH = {
    "retry_attempts": 60,
    "retry_backoff": 0.05,
    "retry_backoff_cap": 0.5,
    "socket_timeout": 2,
    "connect_timeout": 1,
    "namespace": "t",
}


@pytest.fixture
def group(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[EmbeddedSentinel]:
    with EmbeddedSentinel(tmp_path / "s", binary=redis_server.binary) as started:
        yield started


@pytest.fixture
def clients(group: EmbeddedSentinel) -> Iterator[tuple[Any, Any]]:
    sync = Coordinator.from_url(group.url, **RIDE_THROUGH)
    asyn = AsyncAsSync(AsyncCoordinator.from_url(group.url, **RIDE_THROUGH))
    yield sync, asyn
    sync.close()
    asyn.close()


def _scripts_loaded(node: EmbeddedRedis, *names: str) -> list[bool]:
    shas = [hashlib.sha1(sources()[name].encode()).hexdigest() for name in names]
    with contextlib.closing(node.client()) as r:
        return list(r.script_exists(*shas))


def _prepare(group: EmbeddedSentinel, sync: Any, asyn: Any) -> tuple[Any, Any]:
    s1 = sync.start_session("agent-1")
    s2 = asyn.start_session("agent-2")
    sync.set_current_project("agent-1", "p1", s1.session_id)
    asyn.set_current_project("agent-2", "p2", s2.session_id)
    # Asynchronous replication: make sure the replica has everything before the
    # failover (what a failover can lose without durability mode is in the README).
    group.wait_replicated(caught_up=True)
    # The promoted replica must not have the scripts, so NOSCRIPT recovery is exercised
    # on both Redis versions (6.2 replicates SCRIPT LOAD, 7 does not).
    for replica in group.replicas:
        with contextlib.closing(replica.client()) as r:
            r.script_flush()
    return s1, s2


def test_clients_carry_on_through_a_primary_crash(
    group: EmbeddedSentinel, clients: tuple[Any, Any]
) -> None:
    sync, asyn = clients
    s1, s2 = _prepare(group, sync, asyn)
    old = group.kill_primary()
    # Issued at once, while there is no primary: the retry-safe calls wait it out.
    assert sync.heartbeat_session(s1.session_id).session_id == s1.session_id
    assert asyn.get_current_project("agent-2").project_name == "p2"
    assert sync.set_current_project("agent-1", "q1", s1.session_id, request_id="r-1").version == 2
    assert asyn.heartbeat_session(s2.session_id).session_id == s2.session_id
    new = group.wait_promoted(old)
    assert new is not old
    # After the failover plain writes and starts go on; fencing tokens continue.
    assert sync.set_current_project("agent-1", "q2", s1.session_id).version == 3
    assert asyn.set_current_project("agent-2", "q", s2.session_id, expected_version=1).version == 2
    assert asyn.start_session("agent-1").fencing_token == s1.fencing_token + 1
    assert _scripts_loaded(new, "heartbeat", "set_project", "start_session") == [True] * 3
    writes = sync.get_agent_events(agent_id="agent-1", event_type="project_switched")
    assert [e.actual_version for e in writes] == [3, 2]


def test_writes_to_a_demoted_primary_are_resent_safely(
    group: EmbeddedSentinel, clients: tuple[Any, Any]
) -> None:
    sync, asyn = clients
    s1, s2 = _prepare(group, sync, asyn)
    old = group.primary
    new = group.failover(demoted=False)
    # What Sentinel does some seconds later, done now: the old primary follows the new.
    with contextlib.closing(old.client()) as r:
        r.replicaof("127.0.0.1", new.port)
    group.wait_replicated()
    # The clients still hold connections to the old primary. Its READONLY answer proves
    # the script did not run, so even writes without a request id are sent again.
    assert sync.set_current_project("agent-1", "q1", s1.session_id).version == 2
    assert asyn.start_session("agent-2").fencing_token == s2.fencing_token + 1
    assert sync.end_session("agent-1", s1.session_id) is True
    assert _scripts_loaded(new, "set_project", "start_session", "end_session") == [True] * 3
    with contextlib.closing(new.client(decode_responses=True)) as r:
        assert r.info("replication")["connected_slaves"] == 1
    events = [e.event_type.value for e in sync.get_agent_events(agent_id="agent-1")]
    assert events == ["session_ended", "project_switched", "project_set", "session_started"]


def test_a_batch_to_a_demoted_primary_is_resent_safely(group: EmbeddedSentinel) -> None:
    """Auto-pipelining: every call of a batch that a demoted primary refused (READONLY)
    is sent again to the new primary, each exactly once."""

    async def main() -> tuple[list[int], list[int]]:
        async with AsyncCoordinator.from_url(group.url, **RIDE_THROUGH) as coord:
            sessions = [await coord.start_session(f"agent-{i}") for i in range(20)]
            group.wait_replicated(caught_up=True)
            old = group.primary
            new = group.failover(demoted=False)
            with contextlib.closing(old.client()) as r:
                r.replicaof("127.0.0.1", new.port)
            group.wait_replicated()
            # The pool's connections still lead to the old primary, now a replica.
            done = await asyncio.gather(
                *(
                    coord.set_current_project(f"agent-{i}", "p", s.session_id)
                    for i, s in enumerate(sessions)
                )
            )
            events = await coord.get_agent_events(event_type="project_set", limit=100)
            return [r.version for r in done], [e.actual_version or 0 for e in events]

    versions, events = asyncio.run(main())
    assert versions == [1] * 20
    assert events == [1] * 20  # one write each: none applied twice
