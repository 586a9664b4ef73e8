"""Keep-alives on real servers: revoke and supersede noticed without waiting for a
heartbeat, Redis stopped past the deadline (jeopardy, then lost) or restarted inside it
(jeopardy, then alive again), the holder's process paused past its TTL (lost, writes
refused). The state machine itself is covered in tests/test_liveness.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from coordinator import (
    AsyncCoordinator,
    AsyncKeepAlive,
    Coordinator,
    EmbeddedRedis,
    KeepAlive,
    LeaseState,
    SessionLeaseExpired,
)
from tests.helpers import BINARIES, url_of, wait_until

#: Heartbeats too rare to matter within a test: what is noticed came from the stream.
RARE = 600.0


@pytest.mark.cluster
def test_sync_keep_alive_notices_a_revoke_without_a_heartbeat(redis_url: str) -> None:
    with Coordinator.from_url(redis_url, namespace="test") as c:
        s = c.start_session("agent-1", ttl=3 * RARE)
        seen: list[LeaseState] = []
        with c.keep_alive(s, interval=RARE, on_change=lambda ka: seen.append(ka.state)) as ka:
            assert isinstance(ka, KeepAlive)
            assert ka.state is LeaseState.ALIVE
            ka.check()
            c.revoke_session("agent-1", reason="maintenance")
            assert ka.lost.wait(10)
            assert (ka.state, ka.reason) == (LeaseState.LOST, "revoked")
            with pytest.raises(SessionLeaseExpired) as info:
                ka.check()
            assert info.value.reason == "revoked"
        assert seen == [LeaseState.LOST]


@pytest.mark.cluster
def test_async_keep_alive_notices_a_supersede_without_a_heartbeat(redis_url: str) -> None:
    async def main() -> None:
        async with AsyncCoordinator.from_url(redis_url, namespace="test") as c:
            s = await c.start_session("agent-1", ttl=3 * RARE)
            async with c.keep_alive(s, interval=RARE) as ka:
                assert isinstance(ka, AsyncKeepAlive)
                other = await c.start_session("agent-1")  # supersedes s
                await asyncio.wait_for(ka.lost.wait(), 10)
                assert (ka.state, ka.reason) == (LeaseState.LOST, "superseded")
            # exiting ended nothing: the new session is still the agent's live one
            assert [lease.session_id for lease in await c.list_leases("agent-1")] == [
                other.session_id
            ]

    asyncio.run(main())


def test_other_agents_events_leave_the_lease_alive(redis_url: str) -> None:
    with Coordinator.from_url(redis_url, namespace="test", shards=1) as c:
        s = c.start_session("agent-1", ttl=3 * RARE)
        with c.keep_alive(s, interval=RARE) as ka:
            other = c.start_session("agent-2")
            c.set_current_project("agent-2", "p", other.session_id)
            c.revoke_session("agent-2")
            c.set_current_project("agent-1", "q", s.session_id)
            assert not ka.lost.wait(0.3)
            assert ka.state is LeaseState.ALIVE


def test_end_on_exit_ends_the_session_and_heartbeats_keep_it(redis_url: str) -> None:
    with Coordinator.from_url(redis_url, namespace="test") as c:
        s = c.start_session("agent-1", ttl=0.6)
        with c.keep_alive(s, end_on_exit=True) as ka:  # heartbeats every 0.2 s
            time.sleep(1.5)  # more than twice the TTL: only the heartbeats kept it
            assert ka.state is LeaseState.ALIVE
            assert ka.session.last_heartbeat > s.last_heartbeat
            c.set_current_project("agent-1", "p", s.session_id)
        assert c.list_leases("agent-1") == []
        events = c.get_agent_events("agent-1", event_type="session_ended")
        assert [e.session_id for e in events] == [s.session_id]


def test_keep_alive_of_a_dead_session_is_lost_at_once(redis_url: str) -> None:
    with Coordinator.from_url(redis_url, namespace="test") as c:
        s = c.start_session("agent-1")
        c.end_session("agent-1", s.session_id)
        with c.keep_alive(s, end_on_exit=True) as ka:
            assert ka.lost.is_set()
            assert (ka.state, ka.reason) == (LeaseState.LOST, "no_active_session")


def test_redis_stopped_past_the_deadline_jeopardy_then_lost(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "data", binary=BINARIES[0][1], port=0) as server:
        c = Coordinator.from_url(server.url, namespace="t", socket_timeout=0.5)
        s = c.start_session("agent-1", ttl=1.5)
        seen: list[LeaseState] = []
        with c.keep_alive(s, interval=0.2, on_change=lambda ka: seen.append(ka.state)) as ka:
            server.stop()
            wait_until(lambda: ka.state is LeaseState.JEOPARDY)
            assert ka.error
            assert ka.lost.wait(10)
            assert ka.reason == "expired"
        assert seen == [LeaseState.JEOPARDY, LeaseState.LOST]
        c.close()


def test_redis_restarted_inside_the_deadline_jeopardy_then_alive(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "data", binary=BINARIES[0][1], port=0) as server:
        c = Coordinator.from_url(server.url, namespace="t", socket_timeout=0.5)
        s = c.start_session("agent-1", ttl=20)
        seen: list[LeaseState] = []
        with c.keep_alive(s, interval=0.2, on_change=lambda ka: seen.append(ka.state)) as ka:
            server.stop()  # a clean shutdown writes the append-only file
            wait_until(lambda: ka.state is LeaseState.JEOPARDY)
            server.start()
            wait_until(lambda: ka.state is LeaseState.ALIVE)
            c.set_current_project("agent-1", "p", s.session_id)
        assert seen == [LeaseState.JEOPARDY, LeaseState.ALIVE]
        c.close()


HOLDER = textwrap.dedent(
    """
    import sys
    from coordinator import Coordinator, SessionLeaseExpired

    c = Coordinator.from_url(sys.argv[1], namespace="t")
    s = c.start_session("agent-1", ttl=1.0)
    with c.keep_alive(s, interval=0.2) as ka:
        print("ready", s.session_id, flush=True)
        ka.lost.wait()
        print("lost", ka.reason, flush=True)
        try:
            c.set_current_project("agent-1", "p", s.session_id)
        except SessionLeaseExpired as refused:
            print("refused", refused.reason, flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_process_paused_past_its_ttl_loses_the_lease(redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None
        ready, sid = holder.stdout.readline().split()
        assert ready == "ready"
        with Coordinator.from_url(redis_url, namespace="t") as c:
            holder.send_signal(signal.SIGSTOP)
            wait_until(lambda: c.list_leases("agent-1") == [])  # the lease ran out on Redis
            holder.send_signal(signal.SIGCONT)
            assert holder.stdout.readline().split() == ["lost", "expired"]
            assert holder.stdout.readline().split() == ["refused", "expired"]
            with pytest.raises(SessionLeaseExpired):
                c.set_current_project("agent-1", "p", sid)
        assert holder.wait(10) == 0
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_bad_interval_is_refused(redis_url: str) -> None:
    with Coordinator.from_url(redis_url, namespace="test") as c:
        s = c.start_session("agent-1")
        with pytest.raises(ValueError, match="interval"):
            c.keep_alive(s, interval=0)
        with pytest.raises(ValueError, match="session"):
            c.keep_alive("not a session")  # type: ignore[arg-type]


def test_an_outage_is_jeopardy_at_once_without_waiting_for_a_heartbeat(tmp_path: Path) -> None:
    async def main(server: Any) -> None:
        async with AsyncCoordinator.from_url(server.url, namespace="t", socket_timeout=0.5) as c:
            s = await c.start_session("agent-1", ttl=3 * RARE)
            # No heartbeat is due: the failing stream watch asks for one at once.
            async with c.keep_alive(s, interval=RARE) as ka:
                server.stop()
                while ka.state is not LeaseState.JEOPARDY:
                    await asyncio.sleep(0.01)
                assert "unavailable" in (ka.error or "")
                ka.check()  # jeopardy is not lost
                server.start()
                while ka.state is not LeaseState.ALIVE:
                    await asyncio.sleep(0.01)

    with EmbeddedRedis(tmp_path / "data", binary=BINARIES[0][1], port=0) as server:
        asyncio.run(main(server))


def test_the_server_role_may_keep_alive(acl_server: Any, ops: Any) -> None:
    url = url_of(acl_server, "coordinator-server")
    with Coordinator.from_url(url, namespace="coord") as c:
        s = c.start_session("agent-1", ttl=3 * RARE)
        with c.keep_alive(s, interval=RARE) as ka:
            admin = Coordinator.from_url(url_of(acl_server, "coordinator-admin"), namespace="coord")
            with admin:
                admin.revoke_session("agent-1")
            assert ka.lost.wait(10)
            assert ka.reason == "revoked"
