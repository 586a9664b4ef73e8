"""The local stack's Redis side: one stack per directory, state file, CLI discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from coordinator import Coordinator
from coordinator.cli.main import cli
from coordinator.errors import StackRunning
from coordinator.local.stack import STACK_FILE, LocalStack, read_stack


def test_stack_records_itself_and_refuses_a_second_one(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "data", worker=False)
    info = stack.start()
    try:
        assert read_stack(tmp_path / "data") == info
        recorded = json.loads((tmp_path / "data" / STACK_FILE).read_text())
        assert recorded["redis_url"] == info.redis_url
        assert info.sink_url == f"sqlite:///{(tmp_path / 'data').resolve()}/events.db"
        with pytest.raises(StackRunning) as refused:
            LocalStack(tmp_path / "data", worker=False).start()
        assert refused.value.info == info
        assert info.redis_url in str(refused.value)
    finally:
        stack.stop()
    assert read_stack(tmp_path / "data") is None
    assert not (tmp_path / "data" / STACK_FILE).exists()


def test_stack_keeps_its_port_and_its_data_across_restarts(tmp_path: Path) -> None:
    with LocalStack(tmp_path / "data", worker=False) as first:
        url = first.url
        c = Coordinator.from_url(url, namespace="coord")
        s = c.start_session("agent-1")
        c.set_current_project("agent-1", "p", s.session_id)
        c.close()
    with LocalStack(tmp_path / "data", worker=False) as second:
        assert second.url == url
        c = Coordinator.from_url(second.url, namespace="coord")
        record = c.get_current_project("agent-1")
        assert record is not None
        assert (record.project_name, record.version) == ("p", 1)
        assert c.start_session("agent-1").fencing_token == 2
        c.close()


def _env(data_dir: Path) -> dict[str, str | None]:
    return {
        "COORDINATOR_DATA_DIR": str(data_dir),
        "COORDINATOR_REDIS_URL": None,
        "COORDINATOR_NAMESPACE": None,
        "COORDINATOR_SINK_URL": None,
    }


def test_cli_without_redis_url_says_how_to_start_a_stack(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["leases"], env=_env(tmp_path / "empty"))
    assert result.exit_code == 1
    assert "coordinator up" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_cli_without_redis_url_uses_the_running_stack(tmp_path: Path) -> None:
    with LocalStack(tmp_path / "data", namespace="mine", worker=False) as stack:
        c = Coordinator.from_url(stack.url, namespace="mine")
        c.start_session("agent-1")
        c.close()
        result = CliRunner().invoke(cli, ["leases", "--json"], env=_env(tmp_path / "data"))
        assert result.exit_code == 0, result.output
        assert [row["agent_id"] for row in json.loads(result.stdout)] == ["agent-1"]


def test_up_with_a_data_dir_that_cannot_be_created_says_so_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(cli, ["up", "--data-dir", str(blocker / "data")])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"Error: cannot create the data directory {blocker / 'data'}: Not a directory"
    )
