"""The real worker and the admin CLI logged in as the users of deploy/users.acl, on real
redis-server 6.2 and 7 processes that load the file.

The worker user runs `coordinator worker` (consume, persist, dead-letter, trim, reap,
liveness key) without a single refused command; the server and admin users cannot run
the worker and change nothing trying; the admin user runs the CLI's read commands and
revokes. (The library-level rules of each role: tests/test_acl.py.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from coordinator import Coordinator, Settings
from coordinator.cli.main import cli
from coordinator.keys import KeySpace
from coordinator.sinks import sink_from_url
from coordinator.worker import EventWorker, WorkerOptions

# The users.acl server (`acl_server`) and its privileged client (`ops`) are test_acl's
# fixtures, imported so pytest finds them here: the test parameters that name them are
# not redefinitions (hence F811 is off for this file).
from tests.helpers import AclRedis, RunningWorker, password, snapshot, url_of, wait_until

KEYS = KeySpace("coord", 16)


@pytest.fixture
def coordinator(acl_server: AclRedis, ops: redis.Redis, tmp_path: Path) -> Callable[..., Result]:
    """Runs ``coordinator <args>`` as an ACL user (sink: a SQLite file of the test)."""
    runner = CliRunner()

    def run(user: str, *args: str) -> Result:
        env = {
            "COORDINATOR_REDIS_URL": url_of(acl_server, user),
            "COORDINATOR_NAMESPACE": "coord",
            "COORDINATOR_SINK_URL": f"sqlite:///{tmp_path / 'events.db'}",
            "COORDINATOR_RETRY_ATTEMPTS": "1",
        }
        return runner.invoke(cli, list(args), env=env, catch_exceptions=False)

    return run


def refusals(ops: redis.Redis, user: str) -> list[tuple[str, str]]:
    """(reason, command or key) of everything the user was refused since the test began.

    Not counted: ``CLIENT SETINFO``, which redis-py sends on every connection and whose
    refusal it ignores; Redis 6.2 refuses it through the ACL, and the file cannot grant
    it (Redis 7.0 rejects the unknown subcommand in an ACL rule)."""
    return [
        (entry["reason"], entry["object"])
        for entry in ops.acl_log()
        if entry.get("username") == user and entry["object"] != "client"
    ]


def activity(server: AclRedis) -> tuple[Coordinator, list[str]]:
    """Sessions and writes of agents on several shards by the server user; one short
    session left to expire. Returns the server user's client and the agents."""
    c = Coordinator.from_url(url_of(server, "coordinator-server"), namespace="coord")
    agents = [f"agent-{i}" for i in range(12)]
    for agent in agents:
        s = c.start_session(agent, metadata={"n": agent})
        c.set_current_project(agent, "a", s.session_id)
    c.start_session("short", ttl=0.05)
    return c, agents


def test_the_worker_user_runs_the_worker_without_a_refusal(
    acl_server: AclRedis, ops: redis.Redis, coordinator: Callable[..., Result], tmp_path: Path
) -> None:
    c, agents = activity(acl_server)
    wait_until(lambda: ops.exists(KEYS.lease("short")) == 0)
    result = coordinator("coordinator-worker", "worker", "--burst", "--consumer", "w1")
    assert result.exit_code == 0, result.output
    sink = sink_from_url(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        # Every event persisted, the expiry reaped by the worker user and persisted too.
        assert sink.count("coord") == 2 * len(agents) + 2
        assert sink.count("coord", event_type="session_expired") == 1
    finally:
        sink.close()
    for shard in range(KEYS.shards):
        assert ops.xlen(KEYS.stream(shard)) == 0  # trimmed once persisted
    assert refusals(ops, "coordinator-worker") == []
    c.close()


def test_worker_check_as_the_worker_user(
    acl_server: AclRedis, ops: redis.Redis, coordinator: Callable[..., Result], tmp_path: Path
) -> None:
    def check(*args: str) -> Result:
        return coordinator("coordinator-worker", "worker", "--check", *args)

    assert check("--consumer", "w1").exit_code == 1
    settings = Settings.from_url(
        url_of(acl_server, "coordinator-worker"),
        namespace="coord",
        sink_url=f"sqlite:///{tmp_path / 'events.db'}",
    )
    with RunningWorker(EventWorker(settings, None, WorkerOptions(consumer="w1", block_ms=50))):
        wait_until(lambda: ops.exists("coord:worker:w1"))
        alive = check("--consumer", "w1")
        assert alive.exit_code == 0, alive.output
        assert "alive: w1" in alive.stdout
        assert check("--consumer", "w2").exit_code == 1
        # Without a name the check would SCAN, which the worker user may not: it says
        # so in one line (the deploy files name the consumer).
        unnamed = check()
        assert unnamed.exit_code == 1
        assert "refused access" in unnamed.output
    # Stopped: it deleted its liveness key on the way out.
    assert ops.exists("coord:worker:w1") == 0
    assert check("--consumer", "w1").exit_code == 1
    assert refusals(ops, "coordinator-worker") == [("command", "scan")]


@pytest.mark.parametrize("user", ["coordinator-server", "coordinator-admin"])
def test_other_users_cannot_run_the_worker(
    user: str, acl_server: AclRedis, ops: redis.Redis, coordinator: Callable[..., Result]
) -> None:
    c, _ = activity(acl_server)
    wait_until(lambda: ops.exists(KEYS.lease("short")) == 0)  # its native TTL ran out
    before = snapshot(ops)
    result = coordinator(user, "worker", "--burst", "--consumer", "w1")
    assert result.exit_code == 1, result.output
    assert password(user) not in result.output
    assert "Traceback" not in result.output
    assert snapshot(ops) == before
    c.close()


def test_the_admin_user_inspects_and_revokes_with_the_cli(
    acl_server: AclRedis, ops: redis.Redis, coordinator: Callable[..., Result]
) -> None:
    c, agents = activity(acl_server)
    wait_until(lambda: ops.exists(KEYS.lease("short")) == 0)
    assert coordinator("coordinator-worker", "worker", "--burst").exit_code == 0

    def read(*args: str) -> Any:
        result = coordinator("coordinator-admin", *args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert sorted(lease["agent_id"] for lease in read("leases")) == sorted(agents)
    assert len(read("events", "--limit", "100")) == 2 * len(agents) + 2
    if "status" in cli.commands:
        read("status")
    # health reads what status reads: the admin role suffices (no refusal below).
    health = coordinator("coordinator-admin", "health", "--json", "--skip", "worker")
    checks = {c["name"]: c["ok"] for c in json.loads(health.stdout)["checks"]}
    assert checks["redis"]
    assert checks["eviction_policy"]
    assert checks["dead_letters"]
    revoke = coordinator(
        "coordinator-admin", "lease", "revoke", agents[0], "--reason", "t", "--yes"
    )
    assert revoke.exit_code == 0, revoke.output
    assert agents[0] not in {lease["agent_id"] for lease in read("leases")}
    assert refusals(ops, "coordinator-admin") == []
    # Writes are refused to the admin user: one line, exit 1, nothing changed.
    live = c.start_session(agents[1])
    before = snapshot(ops)
    refused = coordinator(
        "coordinator-admin", "project", "set", agents[1], "x", "--session", live.session_id
    )
    assert refused.exit_code == 1, refused.output
    assert "refused access" in refused.output
    assert "Traceback" not in refused.output
    assert snapshot(ops) == before
    c.close()
