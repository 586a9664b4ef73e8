"""deploy/users.acl against real redis-server 6.2 and 7 processes that load it.

Each role can do its job and is refused the rest; a refused script changes nothing
(Redis does not roll a script back, so the scripts put each role's first write where
the roles without it are stopped). Refusals surface as AccessDenied. Passwords never
appear in messages or logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from coordinator import AccessDenied, Coordinator, EmbeddedRedis
from coordinator.keys import KeySpace
from coordinator.local.cluster import EmbeddedCluster
from tests.helpers import (
    NO_RETRY,
    AclRedis,
    acl_file_for,
    acl_rules,
    as_user,
    password,
    snapshot,
    url_of,
    wait_until,
)

ROLES = ("coordinator-server", "coordinator-worker", "coordinator-admin", "ops")
KEYS = KeySpace("coord", 16)


@pytest.fixture
def role(
    make_coordinator: Callable[..., Any], acl_server: AclRedis, ops: redis.Redis
) -> Callable[[str], Any]:
    """A Coordinator (either shell) logged in as a role, namespace ``coord``."""

    def connect(user: str, **overrides: Any) -> Any:
        overrides.setdefault("namespace", "coord")
        return make_coordinator(url_of(acl_server, user), retry_attempts=1, **overrides)

    return connect


@pytest.fixture
def live(role: Callable[..., Any]) -> Any:
    """agent-1's live session (with a project record), started by the server role."""
    server = role("coordinator-server")
    session = server.start_session("agent-1")
    server.set_current_project("agent-1", "a", session.session_id)
    return session


def session_writes(client: Any, s: Any) -> list[Callable[[], Any]]:
    """The server role's writes on agent-1 (live session ``s``) and a new agent."""
    return [
        lambda: client.start_session("agent-1"),  # would supersede the live session
        lambda: client.start_session("agent-9"),
        lambda: client.heartbeat_session(s.session_id),
        lambda: client.set_current_project("agent-1", "b", s.session_id),
        lambda: client.set_current_project("agent-1", "b", s.session_id, request_id="r"),
    ]


def refused_without_change(ops: redis.Redis, call: Callable[[], Any]) -> None:
    before = snapshot(ops)
    with pytest.raises(AccessDenied):
        call()
    assert snapshot(ops) == before


def refused(client: redis.Redis, *command: Any) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


def test_the_shipped_file_loads_and_lets_nobody_in(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # The shipped lines unchanged, plus a test-only superuser ("ops" is one of the
    # shipped users, so the harness logs in as itself).
    aclfile = tmp_path / "users.acl"
    harness = "user harness on #" + hashlib.sha256(password("ops").encode()).hexdigest()
    aclfile.write_text(acl_file_for(redis_server.binary).read_text() + harness + " ~* &* +@all\n")

    class Harness(AclRedis):
        def client(self, **kwargs: Any) -> redis.Redis:
            return redis.Redis(
                host="127.0.0.1", port=self.port or 0, username="harness",
                password=password("ops"), **kwargs,
            )  # fmt: skip

    server = Harness(
        tmp_path / "data", port=0, unix_socket=False, binary=redis_server.binary,
        config={"aclfile": str(aclfile)},
    )  # fmt: skip
    with server, contextlib.closing(server.client(decode_responses=True)) as admin:
        assert sorted(admin.acl_users()) == sorted(["default", "harness", *ROLES])
        assert "off" in admin.acl_getuser("default")["flags"]
        # No password was shipped: nobody can authenticate until an operator adds one.
        for user in ("default", *ROLES):
            for guess in ("", "nopass", password(user)):
                with pytest.raises(redis.AuthenticationError):
                    redis.Redis(
                        host="127.0.0.1", port=server.port or 0, username=user, password=guess,
                        retry=NO_RETRY,
                    ).ping()  # fmt: skip
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port or 0, retry=NO_RETRY).ping()


def test_server_role_runs_the_library(role: Callable[..., Any], ops: redis.Redis) -> None:
    c = role("coordinator-server")
    s = c.start_session("agent-1", metadata={"host": "a"})
    c.heartbeat_session(s.session_id)
    c.set_current_project("agent-1", "a", s.session_id)
    c.set_current_project("agent-1", "b", s.session_id, expected_version=1, request_id="r-1")
    assert c.get_current_project("agent-1").version == 2
    assert [r.version for r in c.get_current_projects(["agent-1"])] == [2]
    assert [lease.agent_id for lease in c.list_leases()] == ["agent-1"]
    assert len(c.get_agent_events("agent-1")) == 3
    c.server_time()
    assert c.start_session("agent-2", ttl=0.05).fencing_token == 1
    assert c.end_session("agent-1", s.session_id) is True
    wait_until(lambda: c.cleanup_expired_sessions() == 1)
    assert c.revoke_session("agent-1") is False


def test_server_role_is_refused_the_rest(
    role: Callable[..., Any], acl_server: AclRedis, ops: redis.Redis
) -> None:
    role("coordinator-server").start_session("agent-1")
    r = as_user(acl_server, "coordinator-server")
    stream = KEYS.stream(KEYS.shard_of("agent-1"))
    for command in (
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("SCAN", 0),
        ("CONFIG", "GET", "*"),
        ("ACL", "LIST"),
        ("XTRIM", stream, "MAXLEN", 0),
        ("XACK", stream, "coordinator", "0-1"),
        ("XGROUP", "CREATE", stream, "g", "0"),
        ("XREADGROUP", "GROUP", "g", "c", "STREAMS", stream, ">"),
        ("XADD", KEYS.dead_letters(0), "*", "f", "v"),
        ("SET", "coord:worker:w1", "x"),
        ("GET", "other:meta"),
        ("UNLINK", KEYS.agent("agent-1")),
    ):
        refused(r, *command)
    # Another namespace is out of reach: refused at connect, nothing written.
    refused_without_change(
        ops, lambda: role("coordinator-server", namespace="other").start_session("a")
    )


def test_worker_role_consumes_trims_and_reaps(
    role: Callable[..., Any], acl_server: AclRedis, ops: redis.Redis
) -> None:
    server = role("coordinator-server")
    s = server.start_session("agent-1")
    server.start_session("agent-2", ttl=0.05)
    w = as_user(acl_server, "coordinator-worker")
    stream = KEYS.stream(KEYS.shard_of("agent-1"))
    assert w.xgroup_create(stream, "coordinator", id="0", mkstream=True)
    entries = w.xreadgroup("coordinator", "w1", {stream: ">"}, count=10)
    [(_, [(first_id, _)])] = entries
    assert w.xpending(stream, "coordinator")["pending"] == 1
    assert w.xinfo_groups(stream)[0]["name"] == "coordinator"
    w.xinfo_stream(stream)
    w.xinfo_consumers(stream, "coordinator")
    w.xautoclaim(stream, "coordinator", "w2", min_idle_time=0)
    assert w.xack(stream, "coordinator", first_id) == 1
    w.xadd(KEYS.dead_letters(0), {"stream_id": first_id, "error": "poison"})
    w.set("coord:worker:w1", "alive", ex=30)
    assert w.expire("coord:worker:w1", 60)
    assert w.get("coord:worker:w1") == "alive"
    w.xtrim(stream, minid=first_id)
    worker = role("coordinator-worker")
    wait_until(lambda: worker.cleanup_expired_sessions() == 1)
    assert worker.get_agent_events(event_type="session_expired")[0].agent_id == "agent-2"
    assert server.heartbeat_session(s.session_id)


def test_worker_role_is_refused_the_rest(
    role: Callable[..., Any], acl_server: AclRedis, ops: redis.Redis, live: Any
) -> None:
    worker = role("coordinator-worker")
    for call in (
        *session_writes(worker, live),
        lambda: worker.end_session("agent-1", live.session_id),
        lambda: worker.revoke_session("agent-1"),
    ):
        refused_without_change(ops, call)
    w = as_user(acl_server, "coordinator-worker")
    for command in (
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "SET", "maxmemory", "1"),
        ("SCAN", 0),
        ("UNLINK", KEYS.lease("agent-1")),
        ("HINCRBY", KEYS.agent("agent-1"), "v", 1),
        ("SET", "other:worker:w1", "x"),
        ("DEL", "other:worker:w1"),
        ("XADD", "{other:0}:dead", "*", "f", "v"),
    ):
        refused(w, *command)


def test_admin_role_inspects_and_revokes(
    role: Callable[..., Any], acl_server: AclRedis, ops: redis.Redis
) -> None:
    server = role("coordinator-server")
    s = server.start_session("agent-1")
    server.set_current_project("agent-1", "a", s.session_id)
    server.start_session("agent-2", ttl=0.05)
    admin = role("coordinator-admin")
    wait_until(lambda: admin.cleanup_expired_sessions() == 1)
    assert {lease.agent_id for lease in admin.list_leases()} == {"agent-1"}
    assert admin.get_current_project("agent-1").project_name == "a"
    assert len(admin.get_agent_events(limit=100)) == 4
    assert admin.revoke_session("agent-1", reason="operator test") is True
    assert admin.list_leases() == []
    a = as_user(acl_server, "coordinator-admin")
    stream = KEYS.stream(KEYS.shard_of("agent-1"))
    assert a.xlen(stream) >= 1
    a.xinfo_stream(stream)
    assert a.pttl("coord:worker:none") == -2


def test_admin_role_is_refused_writes_it_does_not_need(
    role: Callable[..., Any], acl_server: AclRedis, ops: redis.Redis, live: Any
) -> None:
    admin = role("coordinator-admin")
    for call in session_writes(admin, live):
        refused_without_change(ops, call)
    a = as_user(acl_server, "coordinator-admin")
    stream = KEYS.stream(KEYS.shard_of("agent-1"))
    for command in (
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "*"),
        ("XTRIM", stream, "MAXLEN", 0),
        ("XACK", stream, "coordinator", "0-1"),
        ("XREADGROUP", "GROUP", "g", "c", "STREAMS", stream, ">"),
        ("SET", "coord:worker:w1", "x"),
        ("HGETALL", "other:meta"),
        ("GET", "other:worker:w1"),
    ):
        refused(a, *command)


def test_bad_credentials_are_access_denied_without_the_password(
    make_coordinator: Callable[..., Any],
    acl_server: AclRedis,
    ops: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-secret-4d2e"
    for user in ("coordinator-server", "nobody"):
        c = make_coordinator(url_of(acl_server, user, secret), namespace="coord")
        with pytest.raises(AccessDenied) as info:
            c.start_session("agent-1")
        assert secret not in str(info.value)
        assert secret not in repr(c)
        assert secret not in repr(c.settings)
    assert snapshot(ops) == {}
    assert all(secret not in record.getMessage() for record in caplog.records)


@pytest.mark.cluster(only=True)
def test_server_and_worker_roles_on_a_cluster(
    redis_server: EmbeddedCluster, raw: redis.RedisCluster
) -> None:
    # The rules need nothing more on a cluster (discovery: CLUSTER SLOTS/SHARDS, COMMAND).
    rules = acl_rules(acl_file_for(redis_server.nodes[0].binary))
    users = ["coordinator-server", "coordinator-worker"]
    for node in redis_server.nodes:
        with contextlib.closing(node.client()) as r:
            for user in users:
                secret = hashlib.sha256(password(user).encode()).hexdigest()
                r.execute_command("ACL", "SETUSER", user, *rules[user], "#" + secret)
    try:
        # A seed list (several nodes): the user named in it must be the one logged in.
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in redis_server.masters)
        secret = password("coordinator-server")
        c = Coordinator.from_url(
            f"redis://coordinator-server:{secret}@{hosts}/0", namespace="coord"
        )
        with pytest.raises(redis.exceptions.NoPermissionError):  # not the default user
            c.redis().acl_whoami()
        agents = [f"agent-{i}" for i in range(24)]
        for agent in agents:
            s = c.start_session(agent)
            c.set_current_project(agent, "p", s.session_id)
        assert {lease.agent_id for lease in c.list_leases()} == set(agents)
        assert len(c.get_agent_events(limit=100)) == 48
        c.close()
        worker = redis.cluster.RedisCluster(
            host="127.0.0.1",
            port=redis_server.masters[2].port or 0,
            username="coordinator-worker",
            password=password("coordinator-worker"),
            decode_responses=True,
        )
        with contextlib.closing(worker):
            for shard in range(16):
                worker.xgroup_create(KEYS.stream(shard), "coordinator", id="0", mkstream=True)
            total = sum(
                len(entries)
                for shard in range(16)
                for _, entries in worker.xreadgroup(
                    "coordinator", "w1", {KEYS.stream(shard): ">"}, count=100
                )
            )
            assert total == 48
    finally:
        for node in redis_server.nodes:
            with contextlib.closing(node.client()) as r:
                r.execute_command("ACL", "DELUSER", *users)


def test_roles_run_reservations(
    role: Callable[..., Any], acl_server: AclRedis, ops: redis.Redis
) -> None:
    """The server reserves, renews and releases; the worker reaps a dead session's
    reservations; the admin lists and releases any; none may mint a reservation but
    the server."""
    server = role("coordinator-server")
    s = server.start_session("agent-1")
    r = server.reserve("agent-1", s.session_id, "proj", ["src/", "README.md"], wait=1)
    server.renew("agent-1", s.session_id, r.reservation_id)
    assert server.holders("proj", "src/a.py") == [server.list_reservations("proj")[0]]
    assert server.release("agent-1", s.session_id, r.reservation_id) is True
    server.reserve("agent-1", s.session_id, "proj", ["src/"])
    kept = server.reserve("agent-1", s.session_id, "other", ["x"])
    admin = role("coordinator-admin")
    assert len(admin.list_reservations()) == 2
    refused_without_change(ops, lambda: admin.reserve("agent-1", s.session_id, "proj", ["docs/"]))
    assert admin.release_reservation(kept.reservation_id, "operator test") is True
    # Ended by another process: the worker's reaper releases what is left.
    role("coordinator-server").end_session("agent-1", s.session_id)
    worker = role("coordinator-worker")
    assert worker.reap_reservations() == 1
    assert admin.list_reservations() == []
