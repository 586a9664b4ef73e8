"""Following the audit streams live, and the server clock."""

from __future__ import annotations

import asyncio
import queue
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from coordinator import AsyncCoordinator, Coordinator, EventType
from tests.helpers import wait_until


def _projects(events: list[Any]) -> list[int]:
    return [int(e.to_project[1:]) for e in events]


def test_follow_events_sync_sees_new_events_in_order(redis_url: str) -> None:
    client = Coordinator.from_url(redis_url, namespace="test", lease_ttl=60)
    writer = Coordinator.from_url(redis_url, namespace="test", lease_ttl=60)
    s = writer.start_session("agent-1")
    other = writer.start_session("agent-2")
    writer.set_current_project("agent-1", "p0", s.session_id)  # before following: never seen
    seen: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def consume() -> None:
        stream = client.follow_events(
            agent_id="agent-1", event_type="project_switched", poll_interval=0.05
        )
        for event in stream:
            seen.put(event)
            if stop.is_set():
                break

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    written = 0

    def write_until_seen() -> bool:
        nonlocal written
        written += 1
        writer.set_current_project("agent-1", f"p{written}", s.session_id)
        writer.set_current_project("agent-2", f"q{written}", other.session_id)  # filtered out
        return not seen.empty()

    wait_until(write_until_seen, timeout=10)
    last = written + 3
    for extra in range(written + 1, last + 1):
        writer.set_current_project("agent-1", f"p{extra}", s.session_id)
    events: list[Any] = []

    def drained_to_last() -> bool:
        while not seen.empty():
            events.append(seen.get())
        return bool(events) and _projects(events)[-1] == last

    wait_until(drained_to_last, timeout=10)
    stop.set()
    writer.set_current_project("agent-1", f"p{last + 1}", s.session_id)  # wakes the consumer
    thread.join(10)
    assert not thread.is_alive()
    numbers = _projects(events)
    # A contiguous run up to the latest write, in order, without the earlier event.
    assert numbers == list(range(numbers[0], last + 1))
    assert numbers[0] >= 1
    assert all(e.agent_id == "agent-1" for e in events)
    assert all(e.event_type is EventType.PROJECT_SWITCHED for e in events)
    client.close()
    writer.close()


def test_follow_events_async_across_shards(redis_url: str) -> None:
    async def scenario() -> list[Any]:
        client = AsyncCoordinator.from_url(redis_url, namespace="test", lease_ttl=60)
        writer = AsyncCoordinator.from_url(redis_url, namespace="test", lease_ttl=60)
        await writer.start_session("warm")  # namespace exists before following
        received: list[Any] = []

        async def consume() -> None:
            async for event in client.follow_events(poll_interval=0.02):
                received.append(event)
                if len(received) >= 20:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)  # let the consumer take its starting point
        for _ in range(200):  # until the consumer has started (bounded)
            if received or task.done():
                break
            await writer.start_session(f"agent-{len(received)}-{_}")
            await asyncio.sleep(0.01)
        for i in range(20):
            await writer.start_session(f"late-{i}")
        await asyncio.wait_for(task, 10)
        await client.aclose()
        await writer.aclose()
        return received

    events = asyncio.run(scenario())
    assert len(events) == 20
    assert all(e.event_type is EventType.SESSION_STARTED for e in events)
    assert len({e.agent_id for e in events}) == 20  # from many shards


def test_server_time_is_the_redis_clock(redis_url: str, raw: redis.Redis) -> None:
    client = Coordinator.from_url(redis_url, namespace="test")
    seconds, micros = raw.time()
    server = datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)
    assert abs(client.server_time() - server) < timedelta(seconds=2)
    client.close()


def test_events_tail_reconnects_across_a_redis_restart(tmp_path: Any) -> None:
    # `coordinator events tail` used to exit when Redis restarted; it now retries until
    # Redis is back and resumes where it stopped (nothing written meanwhile is missed).
    import json
    import subprocess
    import sys

    from coordinator import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "redis", port=0) as server:
        command = [sys.executable, "-m", "coordinator", "--redis-url", server.url,
                   "--namespace", "tail", "events", "tail", "--json"]  # fmt: skip
        tail = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        errors: queue.Queue[str] = queue.Queue()
        readers = [
            threading.Thread(target=lambda p=pipe, q=into: [q.put(x) for x in p], daemon=True)
            for pipe, into in ((tail.stdout, lines), (tail.stderr, errors))
        ]
        for reader in readers:
            reader.start()
        try:
            with Coordinator.from_url(server.url, namespace="tail") as client:
                started: list[Any] = []

                def seen() -> bool:  # the tail follows from "now": wait until it does
                    started.append(client.start_session("agent-1"))
                    try:
                        return bool(lines.get(timeout=1))
                    except queue.Empty:
                        return False

                wait_until(seen, timeout=30)
                # Down long enough for the client's own retries to give up.
                server.stop()
                assert "reconnecting" in errors.get(timeout=60)
                server.start()  # append-only: the stream survives
                client.set_current_project("agent-1", "after", started[-1].session_id)
                while True:  # skip the session_started lines still on their way
                    got = json.loads(lines.get(timeout=60))
                    if got["event_type"] != "session_started":
                        break
            assert (got["event_type"], got["to_project"]) == ("project_set", "after")
            assert tail.poll() is None  # still following
        finally:
            tail.terminate()
            tail.wait(timeout=30)
            for reader in readers:
                reader.join(timeout=30)
            for pipe in (tail.stdout, tail.stderr):
                if pipe is not None:
                    pipe.close()
        rest = []
        while not errors.empty():
            rest.append(errors.get())
        assert "Traceback" not in "".join(rest)
