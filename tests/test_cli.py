"""The admin CLI: every command's output and exit codes (CliRunner and real subprocesses)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from coordinator import EmbeddedRedis
from coordinator.cli.main import cli
from coordinator.local.embedded import server_kind
from tests.helpers import failed, ok, stream_entries, wait_until

# --- leases ----------------------------------------------------------------------------


def test_leases_table_and_json(run: Any, coord: Any) -> None:
    a = coord.start_session("agent-a", metadata={"host": "h1"})
    coord.start_session("agent-b")
    coord.set_current_project("agent-a", "proj-x", a.session_id)
    table = ok(run("leases")).stdout
    assert table.splitlines()[0].split()[:3] == ["AGENT", "SESSION", "TOKEN"]
    for text in ("agent-a", "proj-x", "agent-b"):
        assert text in table
    rows = json.loads(ok(run("leases", "--json")).stdout)
    by_agent = {r["agent_id"]: r for r in rows}
    assert set(by_agent) == {"agent-a", "agent-b"}
    assert by_agent["agent-a"]["project_name"] == "proj-x"
    assert by_agent["agent-a"]["project_version"] == 1
    assert by_agent["agent-a"]["session_id"] == a.session_id
    assert by_agent["agent-a"]["metadata"] == {"host": "h1"}
    assert 590 < by_agent["agent-a"]["expires_in_seconds"] <= 600
    assert by_agent["agent-b"]["project_name"] is None
    only = json.loads(ok(run("leases", "--agent", "agent-b", "--json")).stdout)
    assert [r["agent_id"] for r in only] == ["agent-b"]


def test_leases_empty(run: Any) -> None:
    result = ok(run("leases"))
    assert result.stdout == ""
    assert "no live leases" in result.stderr
    assert json.loads(ok(run("leases", "--json")).stdout) == []


def test_leases_page_through_many(run: Any, coord: Any, raw: redis.Redis) -> None:
    # 250 per shard: beyond Redis's small-set encoding, so ZSCAN really pages.
    for i in range(4000):
        coord.start_session(f"agent-{i:04d}")
    raw.config_resetstat()
    rows = json.loads(ok(run("leases", "--json", "--page-size", "100")).stdout)
    assert sorted(r["agent_id"] for r in rows) == [f"agent-{i:04d}" for i in range(4000)]
    stats = raw.info("commandstats")
    # Paged: many small ZSCANs and HMGET batches, never one call for everything.
    assert stats["cmdstat_zscan"]["calls"] > 16
    table = ok(run("leases", "--page-size", "100")).stdout.splitlines()
    assert len(table) == 4001  # one header, then every lease
    assert sum(line.startswith("AGENT") for line in table) == 1


def test_lease_show(run: Any, coord: Any) -> None:
    s = coord.start_session("agent-a")
    assert s.session_id in ok(run("lease", "show", "agent-a")).stdout
    data = json.loads(ok(run("lease", "show", "agent-a", "--json")).stdout)
    assert data["fencing_token"] == 1
    assert data["session_id"] == s.session_id
    message = failed(run("lease", "show", "nobody"), 1)
    assert "no live session" in message


def test_lease_revoke(run: Any, coord: Any, raw: redis.Redis) -> None:
    s = coord.start_session("agent-a")
    declined = run("lease", "revoke", "agent-a", "--reason", "test", input="n\n")
    assert declined.exit_code == 1
    assert coord.heartbeat_session(s.session_id)
    ok(run("lease", "revoke", "agent-a", "--reason", "compromised", input="y\n"))
    assert coord.list_leases() == []
    revoked = [e for _, e in stream_entries(raw) if e["event_type"] == "session_revoked"]
    assert [e["error_message"] for e in revoked] == ["compromised"]
    coord.start_session("agent-b")
    ok(run("lease", "revoke", "agent-b", "--reason", "r", "--yes"))
    assert "no live session" in failed(
        run("lease", "revoke", "agent-b", "--reason", "r", "--yes"), 1
    )
    assert "Missing option" in failed(run("lease", "revoke", "agent-b", "--yes"), 2)


# --- projects --------------------------------------------------------------------------


def test_project_set_get_clear(run: Any, coord: Any) -> None:
    s = coord.start_session("agent-a")
    data = json.loads(
        ok(run("project", "set", "agent-a", "proj", "--session", s.session_id, "--json")).stdout
    )
    assert (data["project_name"], data["version"]) == ("proj", 1)
    got = json.loads(ok(run("project", "get", "agent-a", "--json")).stdout)
    assert got == data
    assert "proj" in ok(run("project", "get", "agent-a")).stdout
    ok(run("project", "set", "agent-a", "p2", "--session", s.session_id, "--expected-version", "1"))
    cleared = json.loads(
        ok(run("project", "clear", "agent-a", "--session", s.session_id, "--json")).stdout
    )
    assert (cleared["project_name"], cleared["version"]) == (None, 3)
    assert coord.get_current_project("agent-a").version == 3


def test_project_errors(run: Any, coord: Any) -> None:
    s = coord.start_session("agent-a")
    coord.set_current_project("agent-a", "p", s.session_id)
    message = failed(
        run("project", "set", "agent-a", "q", "--session", s.session_id, "--expected-version", "0"),
        1,
    )
    assert "version conflict: expected 0, current 1" in message
    coord.revoke_session("agent-a", reason="r")
    message = failed(run("project", "set", "agent-a", "q", "--session", s.session_id), 1)
    assert "revoked" in message
    assert "no project record" in failed(run("project", "get", "nobody"), 1)
    # usage errors: exit 2, nothing written
    before = coord.get_current_project("agent-a")
    failed(run("project", "set", "agent-a", "q", "--session", "garbage"), 2)
    failed(run("project", "set", "bad\tagent", "q", "--session", s.session_id), 2)
    failed(
        run(
            "project", "set", "agent-a", "q", "--session", s.session_id, "--expected-version", "-1"
        ),
        2,
    )
    failed(
        run("project", "set", "agent-a", "q", "--session", s.session_id, "--expected-version", "x"),
        2,
    )
    failed(run("project", "get", " padded"), 2)
    assert coord.get_current_project("agent-a") == before


# --- events and reap -------------------------------------------------------------------


def test_events_query(run: Any, coord: Any) -> None:
    s = coord.start_session("agent-a")
    coord.set_current_project("agent-a", "p1", s.session_id)
    coord.set_current_project("agent-a", "p2", s.session_id)
    coord.start_session("agent-b")
    events = json.loads(ok(run("events", "--json")).stdout)
    # Newest first; within one agent (one shard stream) the order is exact. Events of
    # different shards in the same millisecond have no order to assert.
    assert [e["event_type"] for e in events if e["agent_id"] == "agent-a"] == [
        "project_switched", "project_set", "session_started",
    ]  # fmt: skip
    assert len(events) == 4
    assert {"agent_id", "session_id", "stream_id", "shard", "created_at", "fencing_token"} <= set(
        events[0]
    )
    only = json.loads(
        ok(run("events", "--agent", "agent-a", "--type", "project_switched", "--json")).stdout
    )
    assert [(e["from_project"], e["to_project"]) for e in only] == [("p1", "p2")]
    assert len(json.loads(ok(run("events", "--limit", "2", "--json")).stdout)) == 2
    recent = json.loads(ok(run("events", "--since", "10m", "--json")).stdout)
    assert len(recent) == 4
    assert json.loads(ok(run("events", "--until", "1d", "--json")).stdout) == []
    assert "project_switched" in ok(run("events")).stdout
    failed(run("events", "--since", "yesterday-ish"), 2)
    failed(run("events", "--type", "nope"), 2)
    failed(run("events", "--limit", "0"), 2)


def test_reap(run: Any, coord: Any) -> None:
    coord.start_session("short", ttl=0.05)
    wait_until(lambda: not coord.list_leases(), timeout=5)
    assert ok(run("reap")).stdout.strip() == "1"
    assert json.loads(ok(run("reap", "--json")).stdout) == {"reaped": 0}


# --- failures --------------------------------------------------------------------------


def test_unreachable_redis_is_one_line_without_the_password() -> None:
    result = CliRunner().invoke(cli, ["--redis-url", "redis://ops:s3cret@127.0.0.1:1/0", "leases"])
    message = failed(result, 1)
    assert len(message.splitlines()) == 1
    assert "unavailable" in message
    assert "127.0.0.1:1" in message
    assert "s3cret" not in result.output


def test_bad_configuration_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["--redis-url", "http://x", "leases"])
    assert "redis_url" in failed(result, 2)
    result = CliRunner().invoke(
        cli, ["--namespace", "bad ns", "--redis-url", "redis://x", "leases"]
    )
    assert "namespace" in failed(result, 2)


def test_events_tail_follows_and_stops_on_ctrl_c(redis_url: str, coord: Any) -> None:
    coord.start_session("before")  # not shown: tail starts from now
    env = {**os.environ, "COORDINATOR_REDIS_URL": redis_url, "COORDINATOR_NAMESPACE": "test"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coordinator",
            "events",
            "tail",
            "--json",
            "--type",
            "session_started",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    try:
        # Start sessions until the tail prints one (it starts following a moment later).
        wait_until(lambda: coord.start_session("late") and not lines.empty(), timeout=20)
        first = json.loads(lines.get())
        assert first["agent_id"] == "late"
        assert first["event_type"] == "session_started"
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in err


# --- status ----------------------------------------------------------------------------

STATUS_FIELDS = {
    "namespace", "redis_url", "redis_version", "server_kind", "server_version", "redis_mode",
    "redis_nodes", "replicas", "server_time", "shards", "consumer_group", "active_leases",
    "expired_unreaped", "stream_length", "lag", "lag_exact", "pending",
    "oldest_pending_age_seconds", "dead_letters", "workers_alive", "workers", "streams",
    # what the server says about itself (issue 18)
    "maxmemory_policy", "eviction_safe", "used_memory", "maxmemory", "aof_enabled",
    "appendfsync", "rdb_save", "persistent", "servers", "warnings",
    "reservations",  # issue 15
}  # fmt: skip
STREAM_FIELDS = {
    "shard", "stream", "length", "group", "consumers", "last_delivered_id", "lag", "lag_exact",
    "pending", "oldest_pending_id", "oldest_pending_age_seconds", "oldest_pending_idle_seconds",
    "dead_letters", "active_leases",
}  # fmt: skip


def test_status_without_a_worker_warns_but_succeeds(run: Any, coord: Any) -> None:
    coord.start_session("agent-a")
    result = ok(run("status"))
    assert "no worker is alive" in result.stderr
    assert "1 active" in result.stdout
    assert "none alive" in result.stdout
    data = json.loads(ok(run("status", "--json")).stdout)
    assert set(data) == STATUS_FIELDS
    assert all(set(s) == STREAM_FIELDS for s in data["streams"])
    assert (data["active_leases"], data["workers_alive"], data["workers"]) == (1, 0, [])
    assert data["namespace"] == "test"
    assert data["redis_mode"] == "standalone"


def test_status_names_the_server_kind_and_its_own_version(
    run: Any, coord: Any, redis_server: EmbeddedRedis
) -> None:
    kind = server_kind(redis_server.binary)
    version = ".".join(map(str, redis_server.version))
    data = json.loads(ok(run("status", "--json")).stdout)
    assert (data["server_kind"], data["server_version"]) == (kind, version)
    name = {"redis": "Redis", "valkey": "Valkey"}[kind]
    assert f"({name} {version}, standalone" in ok(run("status")).stdout


def test_status_with_pending_entries_dead_letters_and_a_worker(
    run: Any, coord: Any, raw: redis.Redis
) -> None:
    s = coord.start_session("agent-a")
    coord.set_current_project("agent-a", "p", s.session_id)
    keys = coord.keys
    shard = keys.shard_of("agent-a")
    raw.xgroup_create(keys.stream(shard), "coordinator", id="0")
    raw.xreadgroup("coordinator", "w1", {keys.stream(shard): ">"}, count=1)  # never acked
    raw.xadd(keys.dead_letters(shard), {"entry": "poison"})
    liveness = {"consumer": "w1", "pid": 99, "host": "box", "heartbeat_at": "2026-01-01T00:00:00Z"}
    raw.set("test:worker:w1", json.dumps(liveness), ex=15)

    result = ok(run("status"))
    assert "no worker is alive" not in result.stderr
    assert "1 dead-lettered event" in result.stderr
    assert re.search(r"1 alive: w1 \(host box, pid 99, active \d+s ago, 1 pending\)", result.stdout)
    assert "lag 1, 1 pending (oldest" in result.stdout
    header, *rows = result.stdout.split("\n\n")[1].splitlines()
    assert header.split()[:3] == ["SHARD", "LENGTH", "LAG"]
    assert [row.split()[:4] for row in rows] == [[str(shard), "2", "1", "1"]]

    data = json.loads(ok(run("status", "--json")).stdout)
    assert (data["lag"], data["pending"], data["dead_letters"]) == (1, 1, 1)
    [worker] = data["workers"]
    assert worker == {
        **liveness, "ttl_seconds": worker["ttl_seconds"], "idle_seconds": worker["idle_seconds"],
        "pending": 1,
    }  # fmt: skip
    assert (worker["consumer"], worker["pending"]) == ("w1", 1)
    assert 0 < worker["ttl_seconds"] <= 15
    stream = data["streams"][shard]
    assert (stream["length"], stream["group"], stream["consumers"]) == (2, True, 1)
    assert stream["oldest_pending_age_seconds"] >= 0
    every = ok(run("status", "--all-shards")).stdout.split("\n\n")[1].splitlines()
    assert len(every) == 17  # header and 16 shards


@pytest.mark.parametrize(
    "command",
    [
        ["status"], ["status", "--json"], ["leases", "--json"], ["lease", "show", "a"],
        ["project", "get", "a", "--json"], ["events", "--json"], ["reap"],
        ["lease", "revoke", "a", "--reason", "r", "--yes"],
        ["project", "set", "a", "p", "--session", "1-00112233aabbccdd@a"],
    ],
)  # fmt: skip
def test_every_command_reports_unreachable_redis_in_one_line(command: list[str]) -> None:
    url = "redis://ops:s3cret@127.0.0.1:1/0"
    result = CliRunner().invoke(cli, ["--redis-url", url, *command])
    message = failed(result, 1)
    assert len(message.splitlines()) == 1
    assert "127.0.0.1:1" in message
    assert "s3cret" not in result.output


# --- output contract -------------------------------------------------------------------

LEASE_FIELDS = {
    "agent_id", "session_id", "fencing_token", "started_at", "last_heartbeat", "expires_at",
    "expires_in_seconds", "ttl_seconds", "project_name", "project_version", "metadata",
}  # fmt: skip
PROJECT_FIELDS = {
    "agent_id", "project_name", "version", "session_id", "updated_by", "updated_at",
    "fencing_token", "event_id",
}  # fmt: skip
EVENT_FIELDS = {
    "agent_id", "session_id", "event_type", "from_project", "to_project", "expected_version",
    "actual_version", "success", "error_message", "metadata", "created_at", "fencing_token",
    "shard", "stream_id",
}  # fmt: skip


def test_json_field_names_are_the_documented_ones(run: Any, coord: Any) -> None:
    s = coord.start_session("agent-a")
    coord.set_current_project("agent-a", "p", s.session_id)
    [lease] = json.loads(ok(run("leases", "--json")).stdout)
    assert set(lease) == LEASE_FIELDS
    shown = json.loads(ok(run("lease", "show", "agent-a", "--json")).stdout)
    assert set(shown) == LEASE_FIELDS | {"reservations"}
    assert set(json.loads(ok(run("project", "get", "agent-a", "--json")).stdout)) == PROJECT_FIELDS
    written = run("project", "set", "agent-a", "q", "--session", s.session_id, "--json")
    assert set(json.loads(ok(written).stdout)) == PROJECT_FIELDS
    events = json.loads(ok(run("events", "--json")).stdout)
    assert len(events) == 3
    assert all(set(e) == EVENT_FIELDS for e in events)
    assert set(json.loads(ok(run("reap", "--json")).stdout)) == {"reaped"}


@pytest.mark.parametrize(
    "command",
    [
        ["leases", "--agent", " padded"], ["lease", "show", "x" * 200],
        ["lease", "revoke", "bad\nagent", "--reason", "r", "--yes"],
        ["lease", "revoke", "agent-a", "--reason", "", "--yes"],
        ["project", "get", ""], ["project", "clear", "bad\tagent", "--session", "1-00@x"],
        ["events", "--agent", "tab\tagent"], ["events", "tail", "--agent", "padded "],
        ["project", "set", "agent-a", "p", "--session", "1-0011223344556677@agent-a",
         "--expected-version", "9007199254740992"],
        ["status", "--bogus"], ["leases", "--page-size", "0"],
    ],
)  # fmt: skip
def test_usage_errors_exit_2_in_one_line(run: Any, command: list[str]) -> None:
    result = run(*command)
    message = failed(result, 2)
    assert message.splitlines()[-1].startswith("Error:")
    assert result.stdout == ""
