"""Settings: explicit arguments, then COORDINATOR_* variables, then defaults; no leaked secrets."""

from __future__ import annotations

import pytest

from coordinator import InvalidInputError, Settings
from coordinator import constants as C
from coordinator.settings import redact_url


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.redis_url == C.DEFAULT_REDIS_URL
    assert s.namespace == "coord"
    assert s.lease_ttl == 900
    assert s.shards == 16
    assert s.cluster is None


def test_environment_then_explicit() -> None:
    env = {
        "COORDINATOR_REDIS_URL": "redis://envhost:6380/2",
        "COORDINATOR_NAMESPACE": "envns",
        "COORDINATOR_LEASE_TTL": "60",
        "COORDINATOR_SHARDS": "4",
        "COORDINATOR_REDIS_CLUSTER": "1",
        "COORDINATOR_SINK_URL": "postgresql://u:pg-secret@db/x",
    }
    s = Settings.from_env(env)
    assert (s.redis_url, s.namespace, s.lease_ttl, s.shards, s.cluster) == (
        "redis://envhost:6380/2", "envns", 60.0, 4, True,
    )  # fmt: skip
    assert s.sink_url is not None
    assert s.sink_url.get_secret_value() == "postgresql://u:pg-secret@db/x"
    explicit = Settings.from_env(env, namespace="mine", lease_ttl=5)
    assert (explicit.namespace, explicit.lease_ttl, explicit.shards) == ("mine", 5.0, 4)
    # None means "not given": the environment still applies.
    assert Settings.from_env(env, namespace=None).namespace == "envns"


def test_password_is_split_out_and_never_shown() -> None:
    s = Settings.from_env({}, redis_url="redis://ops:hunter2@10.0.0.1:6379/0")
    assert s.redis_url == "redis://ops@10.0.0.1:6379/0"
    assert s.password is not None
    assert s.password.get_secret_value() == "hunter2"
    for text in (repr(s), str(s), s.safe_redis_url, str(s.model_dump())):
        assert "hunter2" not in text
    sink = Settings.from_env({"COORDINATOR_SINK_URL": "postgresql://u:pg-secret@db/x"})
    assert "pg-secret" not in repr(sink)
    assert sink.safe_sink_url == "postgresql://u:***@db/x"


def test_password_from_environment() -> None:
    s = Settings.from_env({"COORDINATOR_REDIS_PASSWORD": "pw", "COORDINATOR_REDIS_USERNAME": "svc"})
    assert s.password is not None
    assert s.password.get_secret_value() == "pw"
    assert s.username == "svc"


def test_url_password_is_percent_decoded() -> None:
    s = Settings.from_env({}, redis_url="rediss://u:p%40ss@h:6380/0")
    assert s.password is not None
    assert s.password.get_secret_value() == "p@ss"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        # A value from the environment is reported under the variable the user set.
        ({"COORDINATOR_LEASE_TTL": "soon"}, "COORDINATOR_LEASE_TTL"),
        ({"COORDINATOR_LEASE_TTL": "0"}, "COORDINATOR_LEASE_TTL"),
        ({"COORDINATOR_SHARDS": "0"}, "COORDINATOR_SHARDS"),
        ({"COORDINATOR_SHARDS": "2000"}, "COORDINATOR_SHARDS"),
        ({"COORDINATOR_NAMESPACE": "has space"}, "COORDINATOR_NAMESPACE"),
        ({"COORDINATOR_NAMESPACE": "{tag}"}, "COORDINATOR_NAMESPACE"),
        ({"COORDINATOR_REDIS_CLUSTER": "maybe"}, "COORDINATOR_REDIS_CLUSTER"),
        ({"COORDINATOR_REDIS_URL": "http://x"}, "COORDINATOR_REDIS_URL"),
        ({"COORDINATOR_REDIS_URL": "redis://h:99999/0"}, "COORDINATOR_REDIS_URL"),
    ],
)
def test_bad_configuration_is_a_typed_error(env: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Settings.from_env(env)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert str(info.value).count("invalid") == 1  # said once, not "invalid x: invalid x:"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:99999/0", "port '99999' is not a TCP port"),
        ("redis://u:secret@127.0.0.1:0/0", "port '0' is not a TCP port"),
        ("redis://h1:7000,h2:70000/0", "port '70000' is not a TCP port"),
        ("redis://[::1:6379/0", "cannot parse the URL: Invalid IPv6 URL"),
        ("redis://u:secret@[fe80::1/0", "cannot parse the URL: Invalid IPv6 URL"),
    ],
)
def test_malformed_redis_urls_are_one_line_errors(url: str, says: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Settings.from_url(url)
    assert info.value.field == "redis_url"
    assert str(info.value).startswith(f"invalid redis_url: {says}")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:99999/0", "redis://[::1:6379/0"])
def test_cli_says_a_malformed_redis_url_in_one_line(url: str) -> None:
    from click.testing import CliRunner

    from coordinator.cli.main import cli

    result = CliRunner().invoke(cli, ["--redis-url", url, "leases"])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "invalid redis_url" in result.output


def test_a_validator_message_is_not_repeated() -> None:
    with pytest.raises(InvalidInputError) as info:
        Settings(namespace="bad ns")
    assert str(info.value) == "invalid namespace: must be 1-64 characters of A-Z a-z 0-9 _ . -"


def test_valid_ipv6_and_multi_seed_urls_pass() -> None:
    assert Settings.from_url("redis://[::1]:6379/0").redis_url == "redis://[::1]:6379/0"
    assert Settings.from_url("redis://a:7000,b:7001").redis_url == "redis://a:7000,b:7001"


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        Settings(redis_urll="redis://x")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("postgresql://u:pw@a,b/db", "postgresql://u:***@a,b/db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
