"""Outages and timeouts: typed errors, safe retries, never a silent double write."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from coordinator import (
    Coordinator,
    CoordinatorUnavailable,
    EmbeddedRedis,
    Settings,
    ShardCountMismatch,
)
from tests.helpers import snapshot, stream_entries


def test_unreachable_redis_is_a_typed_error_without_the_password() -> None:
    c = Coordinator.from_url(
        "redis://ops:s3cret-pw@127.0.0.1:1/0", retry_attempts=2, retry_backoff=0.001
    )
    assert "s3cret" not in repr(c)
    assert "s3cret" not in repr(c.settings)
    with pytest.raises(CoordinatorUnavailable) as info:
        c.start_session("agent-1")
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)
    # A refused connection proves the write was never sent.
    assert info.value.maybe_applied is False


def test_reads_retry_through_a_pause(make_client: Any, raw: redis.Redis) -> None:
    client = make_client(socket_timeout=0.1, retry_attempts=20, retry_backoff=0.05)
    s = client.start_session("agent-1")
    client.set_current_project("agent-1", "p", s.session_id)
    raw.execute_command("CLIENT", "PAUSE", 400, "ALL")
    # The first attempts time out while the server is paused; a retry succeeds.
    assert client.get_current_project("agent-1").project_name == "p"
    assert client.heartbeat_session(s.session_id).session_id == s.session_id


def test_timed_out_write_is_not_resent_and_a_request_id_makes_retry_safe(
    make_client: Any, raw: redis.Redis
) -> None:
    client = make_client(socket_timeout=0.1, retry_attempts=2, retry_backoff=0.01)
    s = client.start_session("agent-1")
    raw.execute_command("CLIENT", "PAUSE", 800, "WRITE")
    with pytest.raises(CoordinatorUnavailable) as info:
        client.set_current_project("agent-1", "p", s.session_id, request_id="req-7")
    # With a request id the client retried (safe), but the pause outlived the attempts;
    # the outcome is unknown, and the message says how to resolve it.
    assert info.value.maybe_applied is True
    assert "same request_id" in str(info.value)
    raw.execute_command("CLIENT", "UNPAUSE")
    retried = client.set_current_project("agent-1", "p", s.session_id, request_id="req-7")
    assert retried.version == 1
    writes = [e for _, e in stream_entries(raw) if e["event_type"] == "project_set"]
    assert len(writes) == 1


def test_write_without_request_id_reports_unknown_outcome(
    make_client: Any, raw: redis.Redis
) -> None:
    client = make_client(socket_timeout=0.1, retry_attempts=5, retry_backoff=0.01)
    s = client.start_session("agent-1")
    raw.execute_command("CLIENT", "PAUSE", 400, "WRITE")
    with pytest.raises(CoordinatorUnavailable) as info:
        client.set_current_project("agent-1", "p", s.session_id)
    assert info.value.maybe_applied is True
    assert "request_id" in str(info.value)
    # Whatever the server did with the timed-out command, it was sent once: never
    # re-sent by redis-py's own retry machinery.
    raw.execute_command("CLIENT", "UNPAUSE")
    writes = [e for _, e in stream_entries(raw) if e["event_type"] == "project_set"]
    assert len(writes) <= 1


def test_client_recovers_after_redis_restarts(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "r", port=0) as server:
        c = Coordinator.from_url(server.url, namespace="t", retry_attempts=40, retry_backoff=0.05)
        s = c.start_session("agent-1")
        server.kill()
        restarter = threading.Timer(0.3, server.start)
        restarter.start()
        try:
            # A read during the outage retries until the server is back.
            c.get_current_project("agent-1")
        finally:
            restarter.join()
        assert server.is_running()
        s2 = c.start_session("agent-1")
        # Redis write()s the append-only file before it replies, so even a SIGKILL
        # keeps every acknowledged change: the fencing counter continues.
        assert s2.fencing_token == s.fencing_token + 1
        c.close()


def test_outage_raises_after_bounded_retries(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "r", port=0) as server:
        c = Coordinator.from_url(server.url, namespace="t", retry_attempts=3, retry_backoff=0.01)
        c.start_session("agent-1")
        server.kill()
        for call in (
            lambda: c.get_current_project("agent-1"),
            lambda: c.start_session("agent-2"),
            lambda: c.cleanup_expired_sessions(),
            lambda: c.list_leases(),
            lambda: c.get_agent_events(),
        ):
            with pytest.raises(CoordinatorUnavailable):
                call()
        c.close()


@pytest.mark.cluster
def test_shard_count_is_recorded_and_enforced(make_client: Any, raw: redis.Redis) -> None:
    first = make_client(shards=16)
    first.start_session("agent-1")
    other = make_client(shards=8)
    before = snapshot(raw)
    with pytest.raises(ShardCountMismatch) as info:
        other.start_session("agent-2")
    assert (info.value.configured, info.value.recorded) == (8, 16)
    assert "shards=16" in str(info.value)
    assert snapshot(raw) == before
    # Another namespace on the same Redis can choose its own count.
    assert make_client(shards=8, namespace="other").start_session("agent-2").fencing_token == 1


@pytest.mark.cluster
def test_schema_version_mismatch_is_refused(make_client: Any, raw: redis.Redis) -> None:
    raw.hset("test:meta", mapping={"shards": 16, "schema": 99})
    with pytest.raises(Exception, match="schema 99"):
        make_client().start_session("agent-1")


class _LostReplyThenRefused(redis.Redis):
    """Runs the first armed EVALSHA but loses its reply (a timeout), then refuses every
    later attempt as a refused connection would: the write did happen, once."""

    armed = False
    attempts = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.armed and args and args[0] == "EVALSHA":
            self.attempts += 1
            if self.attempts == 1:
                try:
                    super().execute_command(*args, **options)
                except redis.exceptions.NoScriptError:
                    self.attempts = 0  # flushed by an earlier test: the shell loads it
                    raise
                raise redis.TimeoutError("Timeout reading from socket")
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
        return super().execute_command(*args, **options)


def test_a_retried_write_stays_maybe_applied_when_a_later_attempt_was_refused(
    redis_url: str, raw: redis.Redis
) -> None:
    # Found by coordinator verify: the retries of a write with a request id ended on a
    # refused connection ("certainly not applied"), so the error said maybe_applied=False
    # although the first attempt had written.
    inner = _LostReplyThenRefused.from_url(redis_url, decode_responses=True)
    settings = Settings.from_url(redis_url, namespace="test", retry_backoff=0.001)
    c = Coordinator(settings, redis_client=inner)
    s = c.start_session("agent-1")
    inner.armed = True
    with pytest.raises(CoordinatorUnavailable) as info:
        c.set_current_project("agent-1", "p", s.session_id, request_id="r-1")
    assert inner.attempts > 1  # it was retried (a request id makes that safe)
    assert info.value.maybe_applied is True
    inner.armed = False
    assert c.get_current_project("agent-1").version == 1  # it was applied
    c.close()
    inner.close()


def test_scripts_flushed_again_while_reloading_are_loaded_once_more(redis_url: str) -> None:
    # SCRIPT FLUSH between the reload and the rerun (a flush storm, a restart loop):
    # the second NOSCRIPT proves the script did not run, so the call is sent again.
    with Coordinator.from_url(redis_url, namespace="test", retry_backoff=0.001) as c:
        s = c.start_session("agent-1")
        client = c.redis()
        load = client.script_load
        flushed: list[str] = []

        def load_then_flush(script: str) -> Any:
            sha = load(script)
            if not flushed:
                flushed.append(sha)
                client.script_flush()
            return sha

        client.script_flush()
        client.script_load = load_then_flush  # type: ignore[method-assign]
        assert c.set_current_project("agent-1", "p", s.session_id).version == 1
        assert flushed
        assert c.get_current_project("agent-1").version == 1  # type: ignore[union-attr]
