"""Namespaces and secrets: two namespaces on one Redis (or cluster) never see each
other's leases, records or events; passwords never reach reprs, logs or messages."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from coordinator import AsyncCoordinator, Coordinator, CoordinatorError, Settings
from tests.helpers import wait_until

NAMESPACES = ("team", "team-2")  # one is a prefix of the other's name


@pytest.mark.cluster
def test_namespaces_never_see_each_other(make_client: Any, raw: redis.Redis) -> None:
    a, b = (make_client(namespace=ns) for ns in NAMESPACES)
    sa = a.start_session("agent-1", metadata={"ns": "team"})
    a.set_current_project("agent-1", "pa", sa.session_id)
    a.set_current_project("agent-1", "pa2", sa.session_id)
    # The same agent id in the other namespace starts from scratch.
    sb = b.start_session("agent-1")
    assert sb.fencing_token == 1
    assert b.get_current_project("agent-1") is None
    assert b.set_current_project("agent-1", "pb", sb.session_id, expected_version=0).version == 1
    assert a.get_current_project("agent-1").project_name == "pa2"
    assert [lease.session_id for lease in a.list_leases()] == [sa.session_id]
    assert [lease.session_id for lease in b.list_leases()] == [sb.session_id]
    assert {e.session_id for e in a.get_agent_events(limit=100)} == {sa.session_id}
    assert {e.session_id for e in b.get_agent_events(limit=100)} == {sb.session_id}
    # A session id of one namespace means nothing in the other.
    with pytest.raises(CoordinatorError):
        b.heartbeat_session(sa.session_id)
    assert b.revoke_session("agent-1") is True
    assert a.heartbeat_session(sa.session_id).session_id == sa.session_id
    b.start_session("agent-2", ttl=0.05)
    b.start_session("agent-3", ttl=30)

    wait_until(lambda: b.list_leases("agent-2") == [])
    assert a.cleanup_expired_sessions() == 0
    assert b.cleanup_expired_sessions() == 1
    # Every key lives under its namespace's hash tag or prefix.
    for key in raw.scan_iter(count=1000):
        assert key.startswith(("{team:", "team:", "{team-2:", "team-2:")), key


def _secret_free(text: str, secret: str) -> None:
    assert secret not in text
    assert secret.replace("-", "%2D") not in text


@pytest.mark.parametrize(
    "url",
    [
        "redis://ops:{pw}@127.0.0.1:6379/0",
        "rediss://ops:{pw}@redis.example:6380/0",
        "redis://:{pw}@127.0.0.1:6379/0",
        "redis://ops:{pw}@10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000/0",
        "redis+sentinel://ops:{pw}@10.0.0.1:26379,10.0.0.2:26379/coordinator/0",
        "unix://:{pw}@/run/redis.sock?db=0",
    ],
)
def test_passwords_stay_out_of_reprs(url: str) -> None:
    secret = "s3cret-Pw-91"
    settings = Settings.from_url(url.format(pw=secret))
    assert settings.password is not None
    assert settings.password.get_secret_value() == secret
    for text in (
        repr(settings),
        str(settings),
        settings.safe_redis_url,
        settings.model_dump_json(),
        repr(Coordinator(settings)),
        repr(AsyncCoordinator(settings)),
    ):
        _secret_free(text, secret)


@pytest.fixture
def acl_user(raw: redis.Redis) -> Iterator[tuple[str, str]]:
    user, secret = "isolation-user", "Iso-Secret-77"
    raw.execute_command("ACL", "SETUSER", user, "on", ">" + secret, "~*", "&*", "+@all")
    yield user, secret
    raw.execute_command("ACL", "DELUSER", user)


def test_passwords_stay_out_of_logs_and_errors(
    make_client: Any,
    redis_url: str,
    acl_user: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, redis-py's included
    user, secret = acl_user
    url = redis_url.replace("redis://", f"redis://{user}:{secret}@")
    client = make_client(url=url)
    s = client.start_session("agent-1")
    client.set_current_project("agent-1", "p", s.session_id)
    failures: list[BaseException] = []
    for broken in (
        make_client(url=url.replace(secret, secret + "-wrong")),  # wrong password
        make_client(url=f"redis://{user}:{secret}@127.0.0.1:1/0", retry_attempts=2),
    ):
        with pytest.raises(CoordinatorError) as info:
            broken.get_current_project("agent-1")
        failures.append(info.value)
        _secret_free(repr(broken), secret)
    for exc in failures:
        _secret_free("".join(traceback.format_exception(exc)), secret)
    for record in caplog.records:
        _secret_free(record.getMessage(), secret)
