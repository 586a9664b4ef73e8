"""One AsyncCoordinator (and the compat adapter) across event loops.

asyncio connections belong to the loop that opened them. scribe_mcp's own tests call
``asyncio.run()`` once per test with one shared adapter: before, the second loop's
first call failed with ``RuntimeError: Event loop is closed`` (sometimes after its
write was applied). Each loop now gets its own connections, closed with the loop.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from coordinator import AsyncCoordinator, EventType
from coordinator.compat import AgentContextManager
from tests.helpers import wait_until

pytestmark = pytest.mark.cluster


def clients_of(raw: Any, name: str) -> int:
    """Connections the server holds for clients named ``name``, on every node."""
    nodes = raw.get_primaries() if hasattr(raw, "get_primaries") else [None]
    total = 0
    for node in nodes:
        listing = raw.client_list() if node is None else raw.client_list(target_nodes=node)
        total += sum(1 for c in listing if c.get("name") == name)
    return total


@pytest.fixture
def coordinator(redis_url: str) -> Iterator[AsyncCoordinator]:
    c = AsyncCoordinator.from_url(redis_url, namespace="test", client_name="loops")
    yield c
    asyncio.run(c.aclose())


def test_successive_asyncio_runs_share_one_client(
    coordinator: AsyncCoordinator, raw: redis.Redis
) -> None:
    session = asyncio.run(coordinator.start_session("agent-1"))
    record = asyncio.run(coordinator.set_current_project("agent-1", "p1", session.session_id))
    assert record.version == 1
    record = asyncio.run(coordinator.set_current_project("agent-1", "p2", session.session_id, 1))
    assert record.version == 2
    current = asyncio.run(coordinator.get_current_project("agent-1"))
    assert current is not None
    assert (current.project_name, current.version) == ("p2", 2)
    events = asyncio.run(coordinator.get_agent_events("agent-1"))
    assert [e.event_type for e in events] == [
        EventType.PROJECT_SWITCHED,
        EventType.PROJECT_SET,
        EventType.SESSION_STARTED,
    ]
    # Each loop closed its connections as it ended: none is left open on the server.
    assert wait_until(lambda: clients_of(raw, "loops") == 0)


def test_a_loop_closed_by_hand_leaves_no_connection_behind(
    coordinator: AsyncCoordinator, raw: redis.Redis
) -> None:
    # loop.close() without shutdown_asyncgens(): the loop cannot close its transports,
    # so the next loop to use the client releases their sockets.
    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(coordinator.start_session("agent-1"))
    loop.close()
    assert clients_of(raw, "loops") >= 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = asyncio.run(coordinator.set_current_project("agent-1", "p", session.session_id, 0))
        del loop
        gc.collect()
    assert record.version == 1
    assert [str(w.message)[:150] for w in caught if w.category is ResourceWarning] == []
    assert wait_until(lambda: clients_of(raw, "loops") == 0)


def test_loops_in_threads_at_once(coordinator: AsyncCoordinator) -> None:
    agents = [f"agent-{i}" for i in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(agents))

    def run(agent: str) -> None:
        async def main() -> None:
            session = await coordinator.start_session(agent)
            start.wait()  # every loop has its connection now; go on together
            for version in range(1, 31):
                await coordinator.set_current_project(
                    agent, f"p{version}", session.session_id, version - 1
                )

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    records = asyncio.run(coordinator.get_current_projects(agents))
    assert [r.version if r else None for r in records] == [30] * len(agents)


def test_aclose_then_another_loop(coordinator: AsyncCoordinator, raw: redis.Redis) -> None:
    asyncio.run(coordinator.start_session("agent-1"))
    asyncio.run(coordinator.aclose())
    leases = asyncio.run(coordinator.list_leases())
    assert [lease.agent_id for lease in leases] == ["agent-1"]
    assert wait_until(lambda: clients_of(raw, "loops") == 0)


def test_compat_adapter_across_asyncio_runs(redis_url: str, raw: redis.Redis) -> None:
    manager = AgentContextManager.from_url(redis_url, namespace="test", client_name="loops")
    session_id = asyncio.run(manager.start_session("agent-1", {"tool": "scribe"}))
    record = asyncio.run(manager.set_current_project("agent-1", "p", session_id))
    assert record["version"] == 1
    asyncio.run(manager.heartbeat_session(session_id))
    events = asyncio.run(manager.get_agent_events("agent-1"))
    assert [e["event_type"] for e in events] == ["project_set", "session_started"]
    asyncio.run(manager.end_session("agent-1", session_id))
    asyncio.run(manager.aclose())
    assert wait_until(lambda: clients_of(raw, "loops") == 0)
