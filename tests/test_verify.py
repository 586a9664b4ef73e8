"""``coordinator verify`` for real: short runs per nemesis on real redis-servers, the
throwaway namespace on a given Redis, and the CLI's exit codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from coordinator.cli.main import cli
from coordinator.errors import InvalidInputError
from coordinator.verify import VerifyOptions, run_verify
from coordinator.verify import runner as verify_runner
from coordinator.verify.invariants import Anomaly
from coordinator.verify.nemesis import NEMESES
from tests.helpers import snapshot

pytestmark = pytest.mark.slow

SHORT = {"duration": 4.0, "clients": 2, "lease_ttl": 0.5, "nemesis_interval": 1.0}


@pytest.mark.parametrize("nemesis", list(NEMESES))
def test_short_run_per_nemesis_finds_no_anomaly(nemesis: str) -> None:
    report = run_verify(VerifyOptions(**SHORT, nemeses=[nemesis], seed=7))  # type: ignore[arg-type]
    assert report.ok, report.render()
    assert report.fault_counts().get(nemesis, 0) >= 1, report.render()
    assert report.operations["cas"].get("ok", 0) > 20
    assert report.audit_events > 50
    # The worker drained into the sink and every event was compared.
    assert f"{report.audit_events} events in the sink" in report.checks["persisted"]
    if nemesis == "pause":
        # The paused client wrote with its old session as soon as it woke up.
        assert report.zombie_writes["attempted"] >= 1
    if nemesis == "worker-kill":
        assert "restarted 0 times" not in report.checks["persisted"]


def test_without_the_worker_the_streams_are_the_audit() -> None:
    report = run_verify(VerifyOptions(**SHORT, worker=False, seed=8))  # type: ignore[arg-type]
    assert report.ok, report.render()
    assert "persisted" not in report.checks
    assert report.audit_events > 50
    with pytest.raises(InvalidInputError, match="worker"):
        run_verify(VerifyOptions(duration=1, worker=False, nemeses=["worker-kill"]))


def test_given_redis_gets_a_throwaway_namespace(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    raw.set("other:key", "kept")
    before = snapshot(raw)
    options = VerifyOptions(duration=2.0, clients=2, redis_url=redis_url, nemeses=["all"])
    report = run_verify(options)
    assert report.ok, report.render()
    assert report.namespace.startswith("verify-")
    # "all" on a given Redis skips what only the embedded server allows.
    assert "redis-restart" not in report.nemeses
    assert snapshot(raw) == before
    raw.close()


def test_redis_restart_needs_the_embedded_server(redis_url: str) -> None:
    options = VerifyOptions(duration=1.0, redis_url=redis_url, nemeses=["redis-restart"])
    with pytest.raises(InvalidInputError, match="embedded"):
        run_verify(options)


# --- CLI ---------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["verify", *args])


def test_cli_json_report_and_exit_zero() -> None:
    result = invoke(
        "--duration",
        "2",
        "--clients",
        "2",
        "--nemesis",
        "script-flush",
        "--interval",
        "0.5",
        "--seed",
        "3",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["seed"] == 3
    assert report["operations_total"] > 100
    assert report["faults_injected"]["script-flush"] >= 1
    assert report["anomalies"] == []


@pytest.mark.parametrize(
    "args",
    [
        ("--nemesis", "no-such-fault"),
        ("--duration", "0"),
        ("--duration", "soon"),
        ("--clients", "0"),
        ("--clients", "65"),
        ("--seed", "-1"),
    ],
)
def test_cli_usage_errors_exit_two(args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_cli_restart_nemesis_on_a_given_redis_is_a_usage_error(redis_url: str) -> None:
    result = invoke("--redis-url", redis_url, "--nemesis", "redis-restart")
    assert result.exit_code == 2, result.output
    assert "embedded" in result.stderr


def test_cli_unreachable_redis_exits_one() -> None:
    result = invoke("--redis-url", "redis://127.0.0.1:1/0", "--duration", "1")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Redis at")


def test_cli_anomaly_exits_one_with_the_shortest_counterexample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> list[Anomaly]:
        return [
            Anomaly("version", "agent-0", "long", ("a", "b", "c")),
            Anomaly(
                "stale_write",
                "agent-1",
                "write accepted after the lease had run out",
                ("start ok", "cas ok"),
            ),
        ]

    monkeypatch.setattr(verify_runner, "check_all", broken)
    result = invoke("--duration", "1", "--clients", "1")
    assert result.exit_code == 1, result.output
    assert "anomalies found" in result.stdout
    tail = result.stdout.split("shortest counter-example")[1]
    assert "write accepted after the lease had run out" in tail
    assert "cas ok" in tail


# --- the async shell ---------------------------------------------------------------------


def test_async_shell_clients_share_an_auto_pipelined_client() -> None:
    # 3 agent clients and 2 reservation clients, 2 per process: 3 processes whose
    # clients' calls are concurrent tasks on one AsyncCoordinator each.
    options = VerifyOptions(
        **SHORT,  # type: ignore[arg-type]
        nemeses=["all"],
        seed=11,
        shell="async",
        tasks=2,
    )
    options = verify_runner.replace(options, clients=3)
    report = run_verify(options)
    assert report.ok, report.render()
    assert report.operations["cas"].get("ok", 0) > 20
    assert report.fault_counts(), report.render()
    with pytest.raises(InvalidInputError, match="shell"):
        run_verify(VerifyOptions(duration=1, shell="threads"))
    with pytest.raises(InvalidInputError, match="tasks"):
        run_verify(VerifyOptions(duration=1, shell="async", tasks=0))


@pytest.mark.parametrize("args", [("--shell", "threads"), ("--tasks", "0"), ("--tasks", "65")])
def test_cli_shell_usage_errors_exit_two(args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
