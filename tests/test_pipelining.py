"""Auto-pipelining in the asyncio client, on real servers (single node and cluster):
concurrent calls share round trips, and each caller still gets exactly its own result,
error, NOSCRIPT recovery and unknown-outcome report."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.crc import key_slot
from redis.exceptions import DataError, ResponseError

from coordinator import (
    AgentProject,
    AsyncCoordinator,
    ConflictError,
    CoordinatorUnavailable,
    EmbeddedRedis,
    Settings,
)
from coordinator.keys import KeySpace
from coordinator.local.cluster import EmbeddedCluster
from coordinator.pipelining import AutoPipeline

pytestmark = pytest.mark.cluster

TASKS = 50


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


@pytest.mark.single_node  # QUIT closes one node's connection
def test_a_connection_lost_mid_batch_fails_only_the_calls_still_waiting(
    redis_url: str, batches: list[int]
) -> None:
    """The calls answered before the connection closed keep their results; the calls
    after it have an unknown outcome, reported as such (or resent with a request id)."""

    async def work(coord: AsyncCoordinator) -> tuple[list[Any], list[Any]]:
        sessions = [await coord.start_session(f"agent-{i}") for i in range(8)]
        send = coord._bound[2]  # the auto-pipeline's execute_command
        calls: list[Any] = [
            coord.set_current_project(
                f"agent-{i}", "p", s.session_id, request_id="r" if i == 6 else None
            )
            for i, s in enumerate(sessions)
        ]
        calls.insert(4, send("QUIT"))  # the server answers OK and closes the connection
        results = await asyncio.gather(*calls, return_exceptions=True)
        records = await coord.get_current_projects([f"agent-{i}" for i in range(8)])
        return results, records

    results, records = run(redis_url, work, retry_attempts=2, retry_backoff=0.01)
    assert batches == [9]
    before, after = results[:4], results[5:]
    assert [r.version for r in before] == [1] * 4  # answered: their own results
    assert results[4] in ("OK", True)
    for i, result in enumerate(after, start=4):
        if i == 6:  # a request id made it safe to send again: it landed once
            assert isinstance(result, AgentProject)
            assert result.version == 1
        else:  # sent, never answered: unknown, said so (here it did not run)
            assert isinstance(result, CoordinatorUnavailable)
            assert result.maybe_applied
    assert [r is not None for r in records] == [True] * 4 + [False, False, True, False]


@pytest.mark.single_node  # the pool of a single-node client
def test_a_full_connection_pool_is_retried_not_reported_as_maybe_applied(
    redis_url: str,
) -> None:
    """With ``max_connections`` reached, a batch gets no connection: nothing was sent,
    so its writes are retried (with backoff) instead of failing as maybe applied."""

    async def work(coord: AsyncCoordinator) -> list[Any]:
        sessions = [await coord.start_session(f"agent-{i}") for i in range(TASKS)]

        async def write(i: int) -> Any:
            for _ in range(i % 3):  # spread the calls over a few loop turns: several batches
                await asyncio.sleep(0)
            return await coord.set_current_project(f"agent-{i}", "p", sessions[i].session_id)

        return await asyncio.gather(*(write(i) for i in range(TASKS)), return_exceptions=True)

    results = run(redis_url, work, max_connections=1, retry_attempts=50, retry_backoff=0.001)
    assert [getattr(r, "version", r) for r in results] == [1] * TASKS


@pytest.mark.single_node  # a plain client on one node
def test_a_command_the_packer_refuses_fails_only_its_caller(redis_url: str) -> None:
    async def work() -> list[Any]:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            pipeline = AutoPipeline(client)
            return await asyncio.gather(
                pipeline.execute_command("SET", "a", "1"),
                pipeline.execute_command("SET", "b", None),  # not sendable
                pipeline.execute_command("INCR", "a"),
                pipeline.execute_command("INCR", "x", "y"),  # wrong number of arguments
                pipeline.execute_command("GET", "a"),
                return_exceptions=True,
            )
        finally:
            await client.aclose()

    ok, refused, incr, wrong, value = asyncio.run(work())
    assert isinstance(refused, DataError)
    assert isinstance(wrong, ResponseError)  # the server's own error for that call
    assert (ok, incr, value) in (("OK", 2, "2"), (True, 2, "2"))


@pytest.mark.single_node  # clients built by the test for one node
@pytest.mark.parametrize("protocol", [2, 3])
def test_resp2_and_resp3_clients_batch_alike(
    redis_url: str, batches: list[int], protocol: int
) -> None:
    async def main() -> list[tuple[int, int]]:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True, protocol=protocol)
        try:
            async with AsyncCoordinator(
                redis_url=redis_url, namespace="test", redis_client=client
            ) as coord:
                await coord.server_time()  # connected: callers no longer queue on the lock
                sessions = await asyncio.gather(
                    *(coord.start_session(f"agent-{i}") for i in range(TASKS))
                )
                done = await asyncio.gather(
                    *(
                        coord.set_current_project(f"agent-{i}", "p", s.session_id)
                        for i, s in enumerate(sessions)
                    )
                )
                return [(s.fencing_token, r.version) for s, r in zip(sessions, done, strict=True)]
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [(1, 1)] * TASKS
    assert max(batches) >= TASKS - 2


@pytest.mark.single_node  # a client built by the test for one node
def test_a_single_connection_client_is_batched_through_its_pipeline(
    redis_url: str, batches: list[int]
) -> None:
    """A caller-supplied ``single_connection_client`` keeps its one connection: its
    batches go through redis-py's pipeline, not onto connections of its pool."""

    async def main() -> list[int]:
        client = redis.asyncio.Redis.from_url(
            redis_url, decode_responses=True, single_connection_client=True
        )
        try:
            async with AsyncCoordinator(
                redis_url=redis_url, namespace="test", redis_client=client
            ) as coord:
                sessions = [await coord.start_session(f"agent-{i}") for i in range(10)]
                done = await asyncio.gather(
                    *(
                        coord.set_current_project(f"agent-{i}", "p", s.session_id)
                        for i, s in enumerate(sessions)
                    )
                )
                assert AutoPipeline(client)._pool is None
                return [r.version for r in done]
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [1] * 10
    assert max(batches) >= 9


@pytest.mark.single_node  # the session server's unix socket
def test_batches_over_a_unix_socket(redis_server: Any, redis_url: str, batches: list[int]) -> None:
    assert isinstance(redis_server, EmbeddedRedis)
    assert redis_server.unix_url

    async def work(coord: AsyncCoordinator) -> list[int]:
        sessions = await asyncio.gather(*(coord.start_session(f"agent-{i}") for i in range(20)))
        done = await asyncio.gather(
            *(
                coord.set_current_project(f"agent-{i}", "p", s.session_id, expected_version=0)
                for i, s in enumerate(sessions)
            )
        )
        return [r.version for r in done]

    assert run(redis_server.unix_url, work) == [1] * 20
    assert max(batches) >= 19


@pytest.mark.cluster(only=True)
def test_a_cluster_batch_follows_a_slot_moved_to_another_master(
    redis_url: str, redis_server: Any, batches: list[int]
) -> None:
    """A batch goes to each master by its calls' keys; the calls of a slot that moved
    meanwhile are redirected (MOVED: they did not run) and land once, on the new owner."""
    keys = KeySpace("test", 16)
    slot = key_slot(keys.lease("agent-0").encode())
    moved = [i for i in range(40) if key_slot(keys.lease(f"agent-{i}").encode()) == slot]
    source = redis_server.node_for_slot(slot)
    target = next(m for m in redis_server.masters if m is not source)

    async def work(coord: AsyncCoordinator) -> list[int]:
        sessions = [await coord.start_session(f"agent-{i}") for i in range(40)]
        redis_server.move_slot(slot, target)  # the client still maps it to the source
        with source.client() as r:
            r.config_resetstat()
        try:
            done = await asyncio.gather(
                *(
                    coord.set_current_project(f"agent-{i}", "p", s.session_id)
                    for i, s in enumerate(sessions)
                )
            )
            events = await coord.get_agent_events(event_type="project_set", limit=100)
        finally:
            redis_server.move_slot(slot, source)  # as it was, for later tests
        assert sorted(e.agent_id for e in events) == sorted(f"agent-{i}" for i in range(40))
        return [r.version for r in done]

    assert run(redis_url, work) == [1] * 40
    assert max(batches) >= 39
    with source.client(decode_responses=True) as r:  # the batch met the old owner's MOVED
        assert int(r.info("errorstats")["errorstat_MOVED"]["count"]) >= len(moved)


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
