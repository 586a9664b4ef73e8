"""An evicting Redis is refused (issue 18, item 1).

Under any ``maxmemory-policy`` but ``noeviction`` Redis drops keys by itself: leases
vanish (reported as "expired"), fencing counters and project records restart from
scratch. Clients and the worker refuse such a server on connect unless the caller opts
in; ``status`` reports it; and the worker's regression watch catches what eviction
did to an opted-in deployment (a fencing token or a version issued twice).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from coordinator import (
    ConflictError,
    Coordinator,
    EmbeddedRedis,
    EvictionPolicyError,
    Settings,
)
from coordinator.cli.main import cli
from coordinator.local.cluster import EmbeddedCluster
from coordinator.server import server_facts, server_warnings, with_config
from coordinator.sinks import sink_from_url
from coordinator.worker import EventWorker, WorkerOptions
from tests.helpers import (
    BINARIES,
    FULL_MATRIX,
    SLOW_SERVERS,
    RunningWorker,
    snapshot,
    wait_until,
)

NS = "test"


@pytest.fixture
def evicting(redis_server: EmbeddedRedis | EmbeddedCluster) -> Iterator[Callable[[str], None]]:
    """``evicting(policy)`` sets the policy on every node; noeviction again afterwards."""
    nodes = redis_server.nodes if isinstance(redis_server, EmbeddedCluster) else [redis_server]

    def set_policy(policy: str) -> None:
        for node in nodes:
            with node.client() as r:
                r.config_set("maxmemory-policy", policy)

    yield set_policy
    set_policy("noeviction")


@pytest.mark.cluster
@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_an_evicting_server_is_refused_on_connect(
    make_client: Callable[..., Any],
    evicting: Callable[[str], None],
    raw: redis.Redis,
    policy: str,
) -> None:
    evicting(policy)
    before = snapshot(raw)
    client = make_client()
    with pytest.raises(EvictionPolicyError) as info:
        client.get_current_project("agent-1")
    assert info.value.policy == policy
    message = str(info.value)
    assert f"maxmemory-policy {policy}" in message
    assert "maxmemory-policy noeviction" in message
    assert "COORDINATOR_ALLOW_EVICTION=1" in message
    with pytest.raises(EvictionPolicyError):
        client.start_session("agent-1")
    # Refused before anything was written (not even the namespace record).
    assert snapshot(raw) == before


def test_allow_eviction_opts_in_by_setting_or_environment(
    make_client: Callable[..., Any],
    evicting: Callable[[str], None],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    evicting("allkeys-lru")
    session = make_client(allow_eviction=True).start_session("agent-1")
    assert session.fencing_token == 1
    monkeypatch.setenv("COORDINATOR_ALLOW_EVICTION", "1")
    assert Settings.from_env().allow_eviction is True
    assert make_client().get_current_project("agent-1") is None
    monkeypatch.setenv("COORDINATOR_ALLOW_EVICTION", "maybe")
    with pytest.raises(ValueError, match="COORDINATOR_ALLOW_EVICTION"):
        Settings.from_env()


def test_a_safe_server_connects_as_before(make_client: Callable[..., Any]) -> None:
    client = make_client()
    client.start_session("agent-1")
    [facts] = client.server_facts
    assert facts.policy == "noeviction"
    assert facts.eviction_safe


def test_the_worker_refuses_an_evicting_server(
    evicting: Callable[[str], None], redis_url: str, tmp_path: Path
) -> None:
    evicting("volatile-lru")
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["--redis-url", redis_url, "--namespace", NS, "--sink-url",
         f"sqlite:///{tmp_path / 'e.db'}", "worker", "--burst"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Error")]
    assert "maxmemory-policy volatile-lru" in line
    assert "noeviction" in line


def test_status_reports_the_policy_memory_and_persistence(
    evicting: Callable[[str], None], redis_url: str
) -> None:
    runner = CliRunner()
    args = ["--redis-url", redis_url, "--namespace", NS, "status"]
    safe = runner.invoke(cli, [*args, "--json"])
    assert safe.exit_code == 0, safe.output
    data = json.loads(safe.stdout)
    assert (data["maxmemory_policy"], data["eviction_safe"]) == ("noeviction", True)
    assert data["servers"][0]["kind"] == data["server_kind"]
    assert data["used_memory"] > 0
    assert data["maxmemory"] == 0
    assert data["aof_enabled"] is True
    assert data["persistent"] is True
    assert data["warnings"] == []

    evicting("allkeys-lru")
    shown = runner.invoke(cli, args)
    assert shown.exit_code == 0, shown.output  # status reports; it does not refuse
    assert "maxmemory-policy allkeys-lru" in shown.stdout
    assert "warning: maxmemory-policy is allkeys-lru" in shown.stderr
    data = json.loads(runner.invoke(cli, [*args, "--json"]).stdout)
    assert data["eviction_safe"] is False
    assert any("allkeys-lru" in w for w in data["warnings"])


def test_server_facts_of_valkey_a_cluster_and_no_info() -> None:
    valkey = {"server_name": "valkey", "valkey_version": "9.1.2", "redis_version": "7.2.4",
              "maxmemory_policy": "noeviction", "used_memory": 95, "maxmemory": 100,
              "aof_enabled": 0}  # fmt: skip
    [facts] = server_facts(valkey)
    assert (facts.kind, facts.version, facts.eviction_safe) == ("valkey", "9.1.2", True)
    assert facts.persistent is None  # AOF off; the RDB schedule is not in INFO
    warnings = server_warnings([facts])
    assert any("95% of maxmemory" in w for w in warnings)
    assert any("appendonly is off" in w for w in warnings)
    nodes = server_facts({"a:1": {**valkey, "aof_enabled": 1},
                          "b:2": {**valkey, "maxmemory_policy": "allkeys-lru"}})  # fmt: skip
    assert [(n.node, n.eviction_safe) for n in nodes] == [("a:1", True), ("b:2", False)]
    # CONFIG GET (where a role may run it) adds the fsync policy and the RDB schedule.
    [configured] = with_config([facts], {"appendfsync": "no", "save": ""})
    assert (configured.appendfsync, configured.persistent) == ("no", False)
    assert any("appendfsync is no" in w for w in server_warnings([configured]))
    assert any("persistence is off" in w for w in server_warnings([configured]))
    [unchanged] = with_config([facts], redis.ResponseError("NOPERM"))
    assert unchanged == facts
    [unknown] = server_facts(redis.ResponseError("unknown command 'info'"))
    assert unknown.eviction_safe is None


# --- what eviction does, and the regression watch that catches it -------------------------


_SLOW = [(label, b) for label, b in BINARIES if FULL_MATRIX or label in SLOW_SERVERS]


@pytest.mark.slow
@pytest.mark.parametrize("binary", [b for _, b in _SLOW], ids=[label for label, _ in _SLOW])
def test_the_regression_watch_catches_what_eviction_reissued(tmp_path: Path, binary: Path) -> None:
    """allkeys-lru and a small maxmemory, opted in: filler data makes Redis evict agent
    hashes (fencing counter and project record). New sessions then get fencing tokens
    already issued, and version-0 writes land over higher versions; the worker, running
    throughout, records each as an audit_anomaly."""
    config = {"maxmemory": "3mb", "maxmemory-policy": "allkeys-lru", "maxmemory-samples": "10"}
    sink_url = f"sqlite:///{tmp_path / 'events.db'}"
    with EmbeddedRedis(tmp_path / "redis", binary=binary, port=0, config=config) as server:
        settings = Settings.from_url(server.url, namespace=NS, allow_eviction=True, shards=4)
        worker = EventWorker(
            settings.model_copy(update={"sink_url": None}),
            sink_from_url(sink_url),
            WorkerOptions(block_ms=50, trim_interval=0.05, reap_interval=0),
        )
        agents = [f"agent-{i}" for i in range(150)]
        last: dict[str, tuple[int, int]] = {}
        raw = server.client(decode_responses=True)
        with RunningWorker(worker), Coordinator(settings) as client:
            for agent in agents:
                s = client.start_session(agent)
                for n in range(3):
                    p = client.set_current_project(agent, f"p{n}", s.session_id)
                last[agent] = (s.fencing_token, p.version)
            wait_until(lambda: worker.metrics.persisted >= len(agents) * 4)
            # Filler until a third of the agents' hashes were evicted.
            chunk = "x" * 20_000
            for i in range(2000):
                raw.set(f"filler:{i}", chunk)
                if i % 10 == 0 and len(_evicted(raw, client, agents)) >= len(agents) // 3:
                    break
            raw.delete(*[f"filler:{i}" for i in range(2000)])  # no eviction from here on
            evicted = _evicted(raw, client, agents)
            assert len(evicted) >= len(agents) // 3
            reissued, rewound = set(), set()
            for agent in evicted:
                s = client.start_session(agent)
                if s.fencing_token <= last[agent][0]:
                    reissued.add(agent)
                try:
                    client.set_current_project(agent, "again", s.session_id, expected_version=0)
                    rewound.add(agent)  # version 1 after version 3
                except ConflictError:
                    pass
            assert reissued
            assert rewound

            def anomalies() -> dict[str, set[str]]:
                found: dict[str, set[str]] = {}
                for event in worker.sink.events(NS):
                    if event.event_type == "audit_anomaly":
                        kind = str((event.metadata or {}).get("kind"))
                        found.setdefault(kind, set()).add(event.agent_id)
                return found

            wait_until(
                lambda: (
                    reissued <= anomalies().get("fencing_regression", set())
                    and rewound <= anomalies().get("version_regression", set())
                )
            )
        raw.close()
        assert worker.metrics.anomalies >= len(reissued) + len(rewound)


def _evicted(raw: redis.Redis, client: Coordinator, agents: list[str]) -> list[str]:
    pipe = raw.pipeline(transaction=False)
    for agent in agents:
        pipe.exists(client.keys.agent(agent))
    return [a for a, there in zip(agents, pipe.execute(), strict=True) if not there]


@pytest.mark.cluster(only=True)
def test_every_cluster_node_is_checked(
    make_client: Callable[..., Any], redis_server: EmbeddedCluster
) -> None:
    last = redis_server.nodes[-1]
    with last.client() as r:
        r.config_set("maxmemory-policy", "allkeys-random")
    try:
        with pytest.raises(EvictionPolicyError) as info:
            make_client().get_current_project("agent-1")
        assert f"node 127.0.0.1:{last.port}" in str(info.value)
        stats = make_client(allow_eviction=True).stats()
        assert stats.server is not None
        assert stats.server.eviction_safe is False
        [warning] = [w for w in stats.warnings if "maxmemory-policy" in w]
        assert warning.startswith(f"node 127.0.0.1:{last.port}: maxmemory-policy is allkeys-random")
    finally:
        with last.client() as r:
            r.config_set("maxmemory-policy", "noeviction")
