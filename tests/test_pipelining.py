"""Auto-pipelining in the asyncio client, on real servers (single node and cluster):
concurrent calls share round trips, and each caller still gets exactly its own result,
error, NOSCRIPT recovery and unknown-outcome report."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis

from coordinator import AsyncCoordinator, ConflictError, CoordinatorUnavailable, Settings
from coordinator.local.cluster import EmbeddedCluster
from coordinator.pipelining import AutoPipeline

pytestmark = pytest.mark.cluster

TASKS = 50


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch the auto-pipeline sends (lone calls send none)."""
    sizes: list[int] = []
    original = AutoPipeline._pipeline

    async def spy(self: AutoPipeline, batch: list[Any]) -> None:
        sizes.append(len(batch))
        await original(self, batch)

    monkeypatch.setattr(AutoPipeline, "_pipeline", spy)
    return sizes


def run(url: str, work: Callable[[AsyncCoordinator], Coroutine[Any, Any, Any]], **kw: Any) -> Any:
    async def main() -> Any:
        async with AsyncCoordinator.from_url(url, namespace="test", **kw) as coord:
            return await work(coord)

    return asyncio.run(main())


def test_concurrent_calls_share_round_trips_and_get_their_own_results(
    redis_url: str, batches: list[int]
) -> None:
    async def work(coord: AsyncCoordinator) -> list[tuple[int, int]]:
        await coord.server_time()  # connected: callers no longer queue on the connect lock
        sessions = await asyncio.gather(*(coord.start_session(f"agent-{i}") for i in range(TASKS)))
        for _ in range(3):
            await asyncio.gather(
                *(
                    coord.set_current_project(f"agent-{i}", f"p-{i}", s.session_id)
                    for i, s in enumerate(sessions)
                )
            )
        records = await asyncio.gather(
            *(coord.get_current_project(f"agent-{i}") for i in range(TASKS))
        )
        return [(s.fencing_token, r.version) for s, r in zip(sessions, records, strict=True) if r]

    assert run(redis_url, work) == [(1, 3)] * TASKS
    # Far fewer round trips than calls: the calls of each turn went together.
    assert sum(batches) >= 4 * TASKS - 8
    assert len(batches) <= 4 * 4


def test_a_lone_caller_sends_its_call_directly(redis_url: str, batches: list[int]) -> None:
    async def work(coord: AsyncCoordinator) -> int:
        s = await coord.start_session("agent-a")
        for i in range(5):
            await coord.set_current_project("agent-a", f"p-{i}", s.session_id)
        record = await coord.get_current_project("agent-a")
        assert record is not None
        return record.version

    assert run(redis_url, work) == 5
    assert batches == []


def test_one_callers_error_stays_its_own(redis_url: str, batches: list[int]) -> None:
    async def work(coord: AsyncCoordinator) -> list[Any]:
        sessions = [await coord.start_session(f"agent-{i}") for i in range(10)]
        # Agent 3 expects a version it does not have: only its call fails.
        return await asyncio.gather(
            *(
                coord.set_current_project(
                    f"agent-{i}", "p", s.session_id, expected_version=7 if i == 3 else 0
                )
                for i, s in enumerate(sessions)
            ),
            return_exceptions=True,
        )

    results = run(redis_url, work)
    assert isinstance(results[3], ConflictError)
    assert results[3].actual_version == 0
    assert [r.version for i, r in enumerate(results) if i != 3] == [1] * 9
    assert max(batches) >= 9


def test_noscript_in_a_batch_reloads_and_reruns_each_call(
    redis_url: str, redis_server: Any, batches: list[int]
) -> None:
    async def work(coord: AsyncCoordinator) -> list[int]:
        sessions = [await coord.start_session(f"agent-{i}") for i in range(20)]
        flush_scripts(redis_server, redis_url)
        done = await asyncio.gather(
            *(
                coord.set_current_project(f"agent-{i}", "p", s.session_id)
                for i, s in enumerate(sessions)
            )
        )
        return [r.version for r in done]

    assert run(redis_url, work) == [1] * 20
    assert max(batches) >= 19


@pytest.mark.single_node  # CLIENT PAUSE and CLIENT KILL act on one node
def test_a_cancelled_leader_does_not_strand_the_batch(redis_url: str) -> None:
    async def work(coord: AsyncCoordinator) -> list[int]:
        sessions = [await coord.start_session(f"agent-{i}") for i in range(10)]
        with redis.Redis.from_url(redis_url) as admin:
            admin.client_pause(300)  # the batch waits on the server
            calls = [
                asyncio.ensure_future(coord.set_current_project(f"agent-{i}", "p", s.session_id))
                for i, s in enumerate(sessions)
            ]
            await asyncio.sleep(0.05)  # the batch is on the wire (the server holds it)
            calls[0].cancel()  # the leader
            rest = await asyncio.gather(*calls[1:])
        return [r.version for r in rest]

    assert run(redis_url, work) == [1] * 9


@pytest.mark.single_node  # CLIENT PAUSE and CLIENT KILL act on one node
def test_connection_lost_mid_batch_reports_every_unacknowledged_write(redis_url: str) -> None:
    async def work(coord: AsyncCoordinator) -> list[Any]:
        sessions = [await coord.start_session(f"agent-{i}") for i in range(10)]
        with redis.Redis.from_url(redis_url) as admin:
            admin.client_pause(2000)  # WRITE pauses are not in Redis 6.2: pause all
            calls = [
                asyncio.ensure_future(
                    coord.set_current_project(
                        f"agent-{i}", "p", s.session_id, request_id=f"r-{i}" if i % 2 else None
                    )
                )
                for i, s in enumerate(sessions)
            ]
            await asyncio.sleep(0.05)
            admin.client_kill_filter(_type="normal", skipme=True)
            admin.client_unpause()
            return await asyncio.gather(*calls, return_exceptions=True)

    results = run(redis_url, work, retry_attempts=2, retry_backoff=0.01)
    for i, result in enumerate(results):
        if i % 2:
            # A request id makes the write safe to send again: it was, and it landed once.
            assert result.version == 1
        else:
            # Sent, connection lost before the reply: the outcome is unknown, said so.
            assert isinstance(result, CoordinatorUnavailable)
            assert result.maybe_applied


def test_auto_pipelining_can_be_turned_off(
    redis_url: str, batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COORDINATOR_AUTO_PIPELINE", "off")
    assert Settings.from_env().auto_pipeline is False

    async def work(coord: AsyncCoordinator) -> int:
        sessions = await asyncio.gather(*(coord.start_session(f"agent-{i}") for i in range(20)))
        return len(sessions)

    assert run(redis_url, work) == 20
    assert batches == []


def flush_scripts(server: Any, url: str) -> None:
    if isinstance(server, EmbeddedCluster):
        for node in server.nodes:
            with node.client() as c:
                c.script_flush()
        return
    with redis.Redis.from_url(url) as c:
        c.script_flush()
