"""``coordinator up`` as a real process: used from other processes, stopped with SIGINT,
restarted with its state, and never twice on one data directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.local.stack import STACK_FILE, StackInfo, read_stack
from coordinator.processes import free_port
from coordinator.sinks import sink_from_url
from tests.helpers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

LIBRARY_USER = """
from coordinator import Coordinator
c = Coordinator()  # everything from the COORDINATOR_* variables `up` printed
s = c.start_session("agent-1", metadata={"from": "library"})
print(c.set_current_project("agent-1", "proj-a", s.session_id, expected_version=0).version)
c.close()
"""


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")}
    return {**env, "COORDINATOR_DATA_DIR": str(data_dir), **extra}


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Up:
    """A ``coordinator up`` child process and what it recorded."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "up", "--data-dir", str(data_dir),
             "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(data_dir),
        )  # fmt: skip
        self.info: StackInfo = wait_until(self._ready, timeout=60, interval=0.05)

    def _ready(self) -> StackInfo | None:
        if self.process.poll() is not None:
            raise AssertionError(f"up exited with {self.process.returncode}: {self.output()}")
        info = read_stack(self.data_dir)
        return info if info is not None and info.pid == self.process.pid else None

    def output(self) -> tuple[str, str]:
        out, err = self.process.communicate(timeout=30)
        return out, err

    def stop(self) -> tuple[int, str, str]:
        self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out, err

    def kill(self) -> None:
        """Teardown after a failure: nothing of the stack may outlive the test."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=30)
        for pid in (self.info.redis_pid, self.info.worker_pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.kill()


def cli(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        capture_output=True,
        text=True,
        env=_env(data_dir, **env),
        timeout=60,
        check=False,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def test_up_serves_other_processes_stops_on_sigint_and_restarts_with_its_state(
    tmp_path: Path, stacks: list[Up]
) -> None:
    data = tmp_path / "data"
    port = free_port()
    up = Up(data, port)
    stacks.append(up)
    info = up.info
    assert info.redis_url.endswith(f":{port}/0")
    assert _alive(info.redis_pid)
    assert _alive(info.worker_pid)

    # The library in another process, configured by the variables `up` prints.
    library = subprocess.run(
        [sys.executable, "-c", LIBRARY_USER],
        capture_output=True,
        text=True,
        env={**_env(data), **info.environment()},
        timeout=60,
        check=False,
    )
    assert library.returncode == 0, library.stderr
    assert library.stdout.strip() == "1"

    # The CLI in other processes, given nothing: it finds the stack by itself.
    [lease] = ok_json(cli(data, "leases", "--json"))
    assert (lease["agent_id"], lease["project_name"], lease["metadata"]) == (
        "agent-1", "proj-a", {"from": "library"},
    )  # fmt: skip
    status = ok_json(cli(data, "status", "--json"))
    assert status["workers_alive"] >= 1
    assert status["active_leases"] == 1
    # The worker persists what the library emitted into the stack's SQLite file.
    with sink_from_url(info.sink_url) as sink:
        wait_until(lambda: sink.count(info.namespace) == 2, timeout=30, interval=0.05)

    # A second stack on the same directory is refused, naming the running one.
    second = subprocess.run(
        [sys.executable, "-m", "coordinator", "up", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=_env(data),
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert "already runs" in second.stderr
    assert info.redis_url in second.stderr
    assert "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert read_stack(data) == info  # the refused one changed nothing

    code, out, err = up.stop()
    assert code == 0, err
    assert "Traceback" not in err
    assert "COORDINATOR_REDIS_URL" in out
    wait_until(lambda: not _alive(info.redis_pid) and not _alive(info.worker_pid), timeout=10)
    assert not (data / STACK_FILE).exists()
    stopped = cli(data, "leases")
    assert stopped.returncode == 1
    assert "coordinator up" in stopped.stderr

    # Restarted on the same directory: same port, and the lease, record and events kept.
    again = Up(data, port)
    stacks.append(again)
    assert again.info.redis_url == info.redis_url
    record = ok_json(cli(data, "project", "get", "agent-1", "--json"))
    assert (record["project_name"], record["version"]) == ("proj-a", 1)
    assert ok_json(cli(data, "lease", "show", "agent-1", "--json"))["fencing_token"] == 1
    events = ok_json(cli(data, "events", "--agent", "agent-1", "--json"))
    assert [e["event_type"] for e in events] == ["project_set", "session_started"]
    code, _, err = again.stop()
    assert code == 0, err


def test_up_refuses_a_port_another_server_listens_on(tmp_path: Path) -> None:
    # Before, `up` printed "running" while its own redis-server had failed, and its
    # worker consumed the other server's events under the stack's consumer name.
    from coordinator import EmbeddedRedis

    with EmbeddedRedis(tmp_path / "other", port=0) as other:
        assert other.port is not None
        result = subprocess.run(
            [sys.executable, "-m", "coordinator", "up", "--data-dir", str(tmp_path / "data"),
             "--port", str(other.port)],
            capture_output=True, text=True, env=_env(tmp_path / "data"), timeout=60,
            check=False,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert f"port {other.port} is already in use" in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "running" not in result.stdout
        with other.client(decode_responses=True) as raw:
            assert raw.keys("*") == []  # no worker touched the other server
        assert read_stack(tmp_path / "data") is None


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_up_restarts_its_redis_and_its_children_die_with_it(
    tmp_path: Path, stacks: list[Up]
) -> None:
    data = tmp_path / "data"
    port = free_port()
    up = Up(data, port)
    stacks.append(up)
    info = up.info
    assert f"--consumer local-stack-{up.process.pid}" in _cmdline(info.worker_pid or 0)

    # redis-server dies: `up` starts it again (same port, same data) and says so.
    assert info.redis_pid is not None
    os.kill(info.redis_pid, signal.SIGKILL)

    def restarted() -> StackInfo | None:
        now = read_stack(data)
        return now if now is not None and now.redis_pid not in (None, info.redis_pid) else None

    after = wait_until(restarted, timeout=30, interval=0.05)
    assert _alive(after.redis_pid)
    assert ok_json(cli(data, "leases", "--json")) == []

    # `up` SIGKILLed: its redis-server and its worker go with it.
    up.process.kill()
    _, err = up.process.communicate(timeout=30)
    assert f"redis-server (pid {info.redis_pid}) exited with -9; restarting it" in err
    wait_until(lambda: not _alive(after.redis_pid) and not _alive(after.worker_pid), timeout=30)

    # A new stack on the directory: another consumer name; a hang-up stops it in order.
    again = Up(data, port)
    stacks.append(again)
    assert f"--consumer local-stack-{again.process.pid}" in _cmdline(again.info.worker_pid or 0)
    again.process.send_signal(signal.SIGHUP)
    _, err = again.process.communicate(timeout=60)
    assert again.process.returncode == 0, err
    wait_until(
        lambda: not _alive(again.info.redis_pid) and not _alive(again.info.worker_pid), timeout=30
    )
    assert "restarting" not in err
