"""``coordinator health`` (issue 18, item 8): exit 0 healthy, 1 not, one line per failed
check, ``--json``; usable as a probe (a real subprocess below)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from coordinator import Coordinator, EmbeddedRedis, Settings
from coordinator.cli.main import cli
from coordinator.health import CHECKS
from coordinator.sinks import sink_from_url
from coordinator.worker import EventWorker, WorkerOptions
from tests.helpers import RunningWorker, wait_until

NS = "test"


@pytest.fixture
def health(redis_url: str) -> Any:
    runner = CliRunner()

    def invoke(*args: str, url: str = redis_url) -> Result:
        return runner.invoke(cli, ["--redis-url", url, "--namespace", NS, "health", *args])

    return invoke


@pytest.fixture
def worker(redis_url: str, tmp_path: Path) -> Iterator[EventWorker]:
    settings = Settings.from_url(redis_url, namespace=NS)
    running = EventWorker(
        settings, sink_from_url(f"sqlite:///{tmp_path / 'e.db'}"), WorkerOptions(block_ms=50)
    )
    with RunningWorker(running):
        wait_until(running.ready)
        yield running


def failures(result: Result) -> dict[str, str]:
    assert "Traceback" not in result.output
    lines = result.stdout.strip().splitlines()
    return dict(line.split(": ", 1) for line in lines)


def test_healthy_with_a_live_worker(health: Any, worker: EventWorker) -> None:
    result = health()
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"healthy ({len(CHECKS)} checks passed)"
    data = json.loads(health("--json").stdout)
    assert data["healthy"] is True
    assert [c["name"] for c in data["checks"]] == list(CHECKS)
    assert all(c["ok"] for c in data["checks"])


def test_each_failed_check_is_one_line_and_exit_1(
    health: Any, redis_url: str, raw: redis.Redis
) -> None:
    with Coordinator.from_url(redis_url, namespace=NS) as client:
        for i in range(3):
            client.start_session(f"agent-{i}")
        keys = client.keys
    shard = keys.shard_of("agent-0")
    raw.xadd(keys.dead_letters(shard), {"entry": "poison"})
    raw.config_set("maxmemory-policy", "allkeys-lru")
    try:
        result = health("--max-lag", "2")
        found = failures(result)
        data = json.loads(health("--max-lag", "2", "--json").stdout)
    finally:
        raw.config_set("maxmemory-policy", "noeviction")
    assert result.exit_code == 1
    assert set(found) == {"eviction_policy", "worker", "lag", "dead_letters"}
    assert "allkeys-lru" in found["eviction_policy"]
    assert "0 live worker(s), 1 needed" in found["worker"]
    assert found["lag"].startswith("3 entries not yet delivered (limit 2)")
    assert found["dead_letters"].startswith("1 dead-lettered event")
    assert data["healthy"] is False
    assert {c["name"] for c in data["checks"] if not c["ok"]} == set(found)
    # Skipped checks are neither run nor reported; the limits are options.
    relaxed = health(
        "--skip", "worker", "--skip", "eviction_policy", "--max-lag", "3", "--max-dead-letters", "1"
    )
    assert relaxed.exit_code == 0, relaxed.output


def test_persistence_off_and_memory_near_the_limit_fail(health: Any, raw: redis.Redis) -> None:
    used = int(raw.info("memory")["used_memory"])
    raw.config_set("appendonly", "no")
    raw.config_set("maxmemory", str(used + 50_000))
    try:
        found = failures(health("--skip", "worker"))
    finally:
        raw.config_set("maxmemory", "0")
        raw.config_set("appendonly", "yes")
    assert set(found) == {"persistence", "memory"}
    assert "appendonly yes" in found["persistence"]
    assert "of maxmemory (limit 90%)" in found["memory"]


def test_pending_too_long_fails(health: Any, redis_url: str, raw: redis.Redis) -> None:
    with Coordinator.from_url(redis_url, namespace=NS) as client:
        client.start_session("agent-0")
        stream = client.keys.stream(client.keys.shard_of("agent-0"))
    raw.xgroup_create(stream, "coordinator", id="0")
    raw.xreadgroup("coordinator", "gone", {stream: ">"})  # delivered, never acknowledged
    wait_until(lambda: raw.xpending(stream, "coordinator")["pending"] == 1)
    found = failures(health("--skip", "worker", "--max-pending-age", "0"))
    assert set(found) == {"oldest_pending"}
    assert "the worker does not acknowledge" in found["oldest_pending"]


def test_unreachable_redis_is_one_failed_check(health: Any) -> None:
    result = health("--timeout", "1", url="redis://127.0.0.1:1/0")
    assert result.exit_code == 1
    [(name, detail)] = failures(result).items()
    assert name == "redis"
    assert "127.0.0.1:1" in detail
    data = json.loads(health("--json", "--timeout", "1", url="redis://127.0.0.1:1/0").stdout)
    assert data == {"healthy": False, "checks": [{"name": "redis", "ok": False, "detail": detail}]}


def test_as_a_probe_in_a_subprocess(tmp_path: Path) -> None:
    """What a Kubernetes exec probe or a systemd unit runs: the exit status is the answer.
    The process wiring does not depend on the server: one (the embedded default) is run."""
    with EmbeddedRedis(tmp_path, port=0) as server:
        env = {**os.environ, "COORDINATOR_REDIS_URL": server.url, "COORDINATOR_NAMESPACE": NS}
        args = [sys.executable, "-m", "coordinator", "health"]
        probe = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1, probe.stderr
    assert probe.stdout.startswith("worker: 0 live worker(s)")
    assert "Traceback" not in probe.stderr
