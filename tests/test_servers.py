"""What differs between the servers under test (Redis 6.2, Redis 7.0, Valkey 9.1) and
how the client copes: error codes (never message texts), no ``CLIENT SETINFO`` on
connect, the shipped ACL roles with an empty ``ACL LOG``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from coordinator import AccessDenied, EmbeddedRedis
from coordinator.calls import Script
from coordinator.failures import Backoff, Failures, error_code, read_only, retryable
from tests.helpers import AclRedis, url_of, wait_until

WRITE_SCRIPT = "return redis.call('SET', KEYS[1], ARGV[1])"


def _error(call: Callable[[], Any]) -> redis.ResponseError:
    with pytest.raises(redis.ResponseError) as info:
        call()
    return info.value


def test_error_codes_of_real_replies(raw: redis.Redis) -> None:
    raw.set("s", "1")
    raw.xgroup_create("st", "g", mkstream=True)
    assert error_code(_error(lambda: raw.evalsha("0" * 40, 0))) == "NOSCRIPT"
    assert error_code(_error(lambda: raw.xgroup_create("st", "g"))) == "BUSYGROUP"
    assert error_code(_error(lambda: raw.xreadgroup("nog", "c", {"st": ">"}))) == "NOGROUP"
    assert error_code(_error(lambda: raw.hget("s", "f"))) == "WRONGTYPE"
    # Inside a script: Redis 6.2 wraps the command's error in a generic script error.
    wrongtype = _error(lambda: raw.eval("return redis.call('HGET', KEYS[1], 'f')", 1, "s"))
    assert error_code(wrongtype) == "WRONGTYPE"
    assert error_code(_error(lambda: raw.execute_command("GET"))) == "ERR"
    assert error_code(RuntimeError("READONLY not a reply")) is None


def test_a_script_writing_on_a_replica_is_read_only_on_every_server(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    with EmbeddedRedis(
        tmp_path / "replica", port=0, binary=redis_server.binary, appendonly=False
    ) as replica:
        r = replica.client()
        r.replicaof("127.0.0.1", redis_server.port)
        wait_until(lambda: r.info("replication")["master_link_status"] == "up")
        refusal = _error(lambda: r.eval(WRITE_SCRIPT, 1, "k", "v"))
        r.close()
    assert error_code(refusal) == "READONLY"
    assert read_only(refusal)
    assert retryable(refusal)


@pytest.fixture
def limited(redis_server: EmbeddedRedis, raw: redis.Redis) -> Any:
    """A user allowed EVALSHA but not XADD (every audited write XADDs)."""
    raw.acl_setuser(
        "limited", enabled=True, passwords=["+limited-pw"], keys=["*"],
        commands=["+@all", "-xadd"],
    )  # fmt: skip
    yield f"redis://limited:limited-pw@127.0.0.1:{redis_server.port}/0"
    raw.acl_deluser("limited")


def test_a_command_refused_inside_a_script_is_access_denied(
    make_coordinator: Callable[..., Any], limited: str, raw: redis.Redis
) -> None:
    # Redis and Valkey word this refusal differently and both send the generic ERR.
    client = make_coordinator(limited)
    raw.acl_log_reset()
    with pytest.raises(AccessDenied, match="start_session script"):
        client.start_session("agent-1")
    assert [entry["object"] for entry in raw.acl_log()] == ["xadd"]


def test_only_a_script_error_maps_to_access_denied() -> None:
    failures = Failures("redis://h", 1, Backoff(0.01, 0.1))
    generic = redis.ResponseError("unknown command", status_code="ERR")
    script = Script("start_session", ("k",), ())
    assert isinstance(failures.redis_error(generic, script), AccessDenied)
    assert not isinstance(failures.redis_error(generic, None), AccessDenied)


def test_the_shipped_roles_leave_the_acl_log_empty(
    make_coordinator: Callable[..., Any], acl_server: AclRedis, ops: redis.Redis
) -> None:
    # redis-py sends CLIENT SETINFO on connect unless told not to: refused (and
    # logged) for roles without client|setinfo on every server.
    server = make_coordinator(url_of(acl_server, "coordinator-server"), namespace="coord")
    s = server.start_session("agent-1")
    server.set_current_project("agent-1", "p", s.session_id)
    server.heartbeat_session(s.session_id)
    admin = make_coordinator(url_of(acl_server, "coordinator-admin"), namespace="coord")
    assert [lease.agent_id for lease in admin.list_leases()] == ["agent-1"]
    assert ops.acl_log() == [], [(e["username"], e["client-info"]) for e in ops.acl_log()]
    ours = [c for c in ops.client_list() if c["user"] != "ops"]
    assert ours
    assert all(c.get("lib-name", "") == "" for c in ours)


def test_no_client_setinfo_on_connect(make_client: Callable[..., Any], raw: redis.Redis) -> None:
    raw.config_resetstat()
    client = make_client()
    client.start_session("agent-1")
    with contextlib.suppress(redis.ResponseError):  # Redis 6.2 has no such stats entry
        assert "cmdstat_client|setinfo" not in raw.info("commandstats")
    assert int(raw.info("stats").get("total_error_replies", 0)) == 0
