"""``coordinator mcp`` driven by the MCP SDK's own stdio client: three server processes
share one embedded Redis. A session started in one is visible in the others, a stale
``expected_version`` is an ``isError`` result with the current record, an operator
revoke reaches the holder as a log notification, a killed server's lease expires into a
``session_expired`` event, and disconnecting (or SIGTERM) ends the session. The tool names and
schemas are pinned in ``tests/data/mcp_tools.json`` (``UPDATE_MCP_TOOLS=1`` rewrites it).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from click.testing import CliRunner
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp_types import LoggingMessageNotificationParams

from coordinator import Coordinator, EmbeddedRedis
from coordinator.cli.main import cli
from tests.helpers import BINARIES, wait_until

ROOT = Path(__file__).resolve().parent.parent
TOOLS_FILE = Path(__file__).resolve().parent / "data" / "mcp_tools.json"


class Client:
    """One MCP client connected to its own ``coordinator mcp`` process."""

    def __init__(self, session: ClientSession, logs: list[LoggingMessageNotificationParams]):
        self.session = session
        self.logs = logs

    async def call(self, name: str, **arguments: Any) -> tuple[bool, dict[str, Any]]:
        result = await self.session.call_tool(name, arguments)
        assert result.structured_content is not None
        assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
        return bool(result.is_error), result.structured_content

    async def ok(self, name: str, **arguments: Any) -> dict[str, Any]:
        error, body = await self.call(name, **arguments)
        assert not error, body
        return body


@asynccontextmanager
async def connect(url: str, *args: str, **env: str) -> AsyncIterator[Client]:
    logs: list[LoggingMessageNotificationParams] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)

    environment = {
        "COORDINATOR_REDIS_URL": url,
        "COORDINATOR_NAMESPACE": "mcp",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    command = [sys.executable, "-m", "coordinator", "mcp", *args]
    params = StdioServerParameters(command=command[0], args=command[1:], env=environment)
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, logging_callback=on_log) as session,
    ):
        await session.initialize()
        yield Client(session, logs)


def server_pid(marker: str) -> int:
    """The pid of this test's ``coordinator mcp`` child serving agent ``marker`` (named on
    its command line or in ``COORDINATOR_AGENT_ID``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
            mine = (
                marker.encode() in cmdline or b"COORDINATOR_AGENT_ID=" + marker.encode() in environ
            )
            if ppid == os.getpid() and b"mcp" in cmdline and mine:
                return int(entry.name)
    raise AssertionError(f"no coordinator mcp process with {marker!r}")


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with EmbeddedRedis(tmp_path / "redis", binary=BINARIES[0][1], port=0) as redis_server:
        yield redis_server


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the server process in /proc")
def test_three_servers_share_one_redis(server: EmbeddedRedis) -> None:
    url = server.url
    library = Coordinator.from_url(url, namespace="mcp")

    async def main() -> None:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(connect(url, "--agent-id", "agent-a"))
            b = await stack.enter_async_context(connect(url))
            # A's session (started when A connected) is visible from B and C
            status = await a.ok("lease_status")
            assert (status["alive"], status["state"], status["held_by_this_connection"]) == (
                True,
                "alive",
                True,
            )
            seen = await b.ok("lease_status", agent_id="agent-a")
            assert seen["session_id"] == status["session_id"]
            assert (seen["held_by_this_connection"], seen["state"]) == (False, "none")
            # killing C's server process: its lease expires into a session_expired event
            with suppress(Exception):
                async with connect(url, "--agent-id", "agent-c", COORDINATOR_LEASE_TTL="1") as c:
                    leases = (await c.ok("list_leases"))["leases"]
                    assert {lease["agent_id"] for lease in leases} == {"agent-a", "agent-c"}
                    os.kill(server_pid("agent-c"), signal.SIGKILL)
            wait_until(
                lambda: (
                    library.cleanup_expired_sessions()
                    or library.get_agent_events("agent-c", event_type="session_expired")
                )
            )
            expired = await b.ok("recent_events", agent_id="agent-c", event_type="session_expired")
            assert len(expired["events"]) == 1

            # SIGTERM (how a client stops a server that does not exit): the session ends
            with suppress(Exception):
                async with connect(url, COORDINATOR_AGENT_ID="agent-d") as d:
                    assert (await d.ok("lease_status"))["alive"]
                    os.kill(server_pid("agent-d"), signal.SIGTERM)
                    wait_until(lambda: library.get_agent_events("agent-d", "session_ended"))
            assert library.list_leases("agent-d") == []

            # B has no session until it starts one; bad input is the library's one line
            error, body = await b.call("set_project", project="p")
            assert (error, body["error"]) == (True, "no_session")
            error, body = await b.call("start_session", agent_id="x" * 200)
            assert (error, body["error"], body["field"]) == (True, "invalid_input", "agent_id")
            assert body["message"].startswith("invalid agent_id:")
            first_b = await b.ok("start_session", agent_id="agent-b", ttl_seconds=30)
            beat = await b.ok("heartbeat")
            assert (beat["session_id"], beat["ttl_seconds"]) == (first_b["session_id"], 30)
            assert await b.ok("end_session") == {
                "ended": True,
                "agent_id": "agent-b",
                "session_id": first_b["session_id"],
            }
            error, body = await b.call("heartbeat")
            assert (error, body["error"]) == (True, "no_session")
            b_session = await b.ok("start_session", agent_id="agent-b", metadata={"host": "b"})
            assert b_session["keep_alive"] == "alive"
            error, body = await b.call("set_project", project="p", surprise=1)
            assert (error, body["error"], body["field"]) == (True, "invalid_input", "surprise")

            # a stale expected_version: isError with the current record
            first = await a.ok("set_project", project="p")
            assert first["version"] == 1
            await a.ok("set_project", project="q", expected_version=1)
            error, body = await a.call("set_project", project="r", expected_version=1)
            assert (error, body["error"], body["expected_version"]) == (True, "conflict", 1)
            assert (body["current"]["project"], body["current"]["version"]) == ("q", 2)
            assert (await b.ok("get_project", agent_id="agent-a"))["version"] == 2
            read = await b.session.read_resource("coordinator://agents/agent-a/project")
            assert json.loads(read.contents[0].text)["project"] == "q"  # type: ignore[union-attr]
            listed_resources = await b.session.list_resources()
            assert {str(r.uri) for r in listed_resources.resources} == {
                "coordinator://events",
                "coordinator://agents/agent-b/project",
                "coordinator://agents/agent-b/events",
            }
            templates = await b.session.list_resource_templates()
            assert {t.uri_template for t in templates.resource_templates} == {
                "coordinator://agents/{agent_id}/project",
                "coordinator://agents/{agent_id}/events",
            }
            read = await b.session.read_resource("coordinator://agents/agent-a/events")
            history = json.loads(read.contents[0].text)  # type: ignore[union-attr]
            assert [e["event_type"] for e in history][:3] == [
                "conflict_detected",
                "project_switched",
                "project_set",
            ]
            with pytest.raises(MCPError, match="unknown resource"):
                await b.session.read_resource("coordinator://nothing")

            # an operator revoke reaches the holder as a log notification, and the next
            # write says so
            revoked = CliRunner().invoke(
                cli,
                ["lease", "revoke", "agent-a", "--reason", "test", "--yes"],
                env={"COORDINATOR_REDIS_URL": url, "COORDINATOR_NAMESPACE": "mcp"},
            )
            assert revoked.exit_code == 0, revoked.output
            with anyio.fail_after(10):
                while not a.logs:
                    await anyio.sleep(0.01)
            assert a.logs[0].level == "error"
            assert a.logs[0].data["event"] == "lease_lost"
            assert a.logs[0].data["reason"] == "revoked"
            error, body = await a.call("clear_project")
            assert (error, body["error"], body["reason"]) == (
                True,
                "session_lease_expired",
                "revoked",
            )
            assert (await a.ok("lease_status"))["state"] == "lost"

            # Redis down: B's client hears of jeopardy, then that the lease is alive again
            b.logs.clear()
            server.stop()
            with anyio.fail_after(30):
                while not b.logs:
                    await anyio.sleep(0.01)
                error, body = await b.call("set_project", project="while down")
                assert (error, body["error"], body["lease_state"]) == (
                    True,
                    "unavailable",
                    "jeopardy",
                )
                server.start()
                while len(b.logs) < 2:
                    await anyio.sleep(0.01)
            assert [(log.level, log.data["event"]) for log in b.logs] == [
                ("warning", "lease_jeopardy"),
                ("info", "lease_alive"),
            ]
            assert (await b.ok("lease_status"))["state"] == "alive"

            # the tool list is stable
            listed = await b.session.list_tools()
            tools = [
                tool.model_dump(mode="json", by_alias=True, exclude_none=True)
                for tool in listed.tools
            ]
            if os.environ.get("UPDATE_MCP_TOOLS"):
                TOOLS_FILE.write_text(json.dumps(tools, indent=2) + "\n")
            assert tools == json.loads(TOOLS_FILE.read_text())
        # disconnecting ended B's session
        assert library.list_leases("agent-b") == []
        ended = library.get_agent_events("agent-b", event_type="session_ended")
        assert [event.session_id for event in ended] == [
            b_session["session_id"],
            first_b["session_id"],
        ]

    anyio.run(main)
    library.close()


def test_mcp_command_refuses_a_bad_agent_id() -> None:
    result = CliRunner().invoke(
        cli, ["--redis-url", "redis://127.0.0.1:1", "mcp", "--agent-id", "x" * 200]
    )
    assert result.exit_code == 2
    assert "invalid agent_id" in result.output


def test_mcp_command_without_the_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(sys.modules):
        if name == "mcp" or name.startswith(("mcp.", "coordinator.mcp")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mcp", None)  # import mcp raises ImportError
    result = CliRunner().invoke(cli, ["--redis-url", "redis://127.0.0.1:1", "mcp"])
    assert result.exit_code == 1
    assert "pip install 'agent-coordinator[mcp]'" in result.output
