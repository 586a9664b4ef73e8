"""``coordinator upgrade-keys``: key schema 1 (fencing counter in the agent hash's
``tok`` field) to 2 (a key of its own, written only by INCR), on single nodes and a
cluster of each server binary."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from coordinator import ConfigurationError, Settings
from coordinator.cli.main import cli
from coordinator.constants import KEY_SCHEMA_VERSION
from coordinator.keys import KeySpace
from coordinator.upgrade import fence_key_of, upgrade_keys

pytestmark = pytest.mark.cluster

KEYS = KeySpace("test", 16)
AGENTS = {"agent-1": 7, "agent-2": 1, "a:b}c": 12}


def schema_one(raw: redis.Redis) -> None:
    """A namespace as the previous version left it."""
    raw.hset(KEYS.meta, mapping={"shards": 16, "schema": 1})
    for agent, token in AGENTS.items():
        raw.hset(KEYS.agent(agent), mapping={"tok": token, "sid": f"{token}-x@{agent}", "st": "a"})


def test_fence_key_of_keeps_the_agent_id() -> None:
    assert fence_key_of(KEYS.agent("a:b}c")) == KEYS.fence("a:b}c")
    with pytest.raises(ValueError, match="not an agent key"):
        fence_key_of("{test:1}:lease:a")


def test_a_schema_one_namespace_is_refused_until_upgraded(
    make_coordinator: Callable[..., Any], redis_url: str, raw: redis.Redis
) -> None:
    schema_one(raw)
    with pytest.raises(ConfigurationError):
        make_coordinator(redis_url).start_session("agent-1")
    report = upgrade_keys(Settings.from_url(redis_url, namespace="test"))
    assert (report.previous_schema, report.schema, report.agents) == (1, KEY_SCHEMA_VERSION, 3)
    for agent, token in AGENTS.items():
        assert raw.get(KEYS.fence(agent)) == str(token)
        assert raw.hget(KEYS.agent(agent), "tok") is None
    c = make_coordinator(redis_url)
    # Tokens continue above the old counter: a session of the old version stays fenced.
    assert c.start_session("agent-1").fencing_token == 8
    assert c.start_session("a:b}c").fencing_token == 13
    # Re-running changes nothing; the counter is never lowered.
    again = upgrade_keys(Settings.from_url(redis_url, namespace="test"))
    assert again.previous_schema == KEY_SCHEMA_VERSION
    assert raw.get(KEYS.fence("agent-1")) == "8"


def test_upgrade_keys_cli(redis_url: str, raw: redis.Redis) -> None:
    runner = CliRunner()
    env = {"COORDINATOR_REDIS_URL": redis_url, "COORDINATOR_NAMESPACE": "test"}
    fresh = runner.invoke(cli, ["upgrade-keys", "--json"], env=env)
    assert fresh.exit_code == 0, fresh.output
    assert json.loads(fresh.stdout)["previous_schema"] is None
    schema_one(raw)
    done = runner.invoke(cli, ["upgrade-keys"], env=env)
    assert done.exit_code == 0, done.output
    assert "schema 1 -> 2, 3 agent(s)" in done.stdout
    raw.hset(KEYS.meta, "schema", 99)
    newer = runner.invoke(cli, ["upgrade-keys"], env=env)
    assert newer.exit_code == 1
    assert "key schema 99" in newer.output
    assert "Traceback" not in newer.output
