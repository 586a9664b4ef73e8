"""The MCP tools ``reserve``, ``release`` and ``list_reservations`` through real
``coordinator mcp`` processes: a conflict is an ``isError`` result carrying every holder."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from coordinator import EmbeddedRedis
from tests.helpers import BINARIES
from tests.test_mcp import connect


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with EmbeddedRedis(tmp_path / "redis", binary=BINARIES[0][1], port=0) as redis_server:
        yield redis_server


def test_reserve_conflict_release_and_list(server: EmbeddedRedis) -> None:
    async def main() -> None:
        with anyio.fail_after(60):
            await scenario()

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(connect(server.url, "--agent-id", "agent-a"))
            b = await stack.enter_async_context(connect(server.url, "--agent-id", "agent-b"))
            held = await a.ok("reserve", scope="repo", resources=["src/"], reason="refactor")
            assert (held["resources"], held["mode"], held["fencing_token"]) == (
                ["src/"],
                "exclusive",
                1,
            )
            error, body = await b.call("reserve", scope="repo", resources=["src/a.py", "docs/"])
            assert (error, body["error"]) == (True, "reservation_conflict")
            [holder] = body["holders"]
            assert (holder["agent_id"], holder["resources"], holder["mode"]) == (
                "agent-a",
                ["src/"],
                "exclusive",
            )
            assert holder["reservation_id"] == held["reservation_id"]
            listed = await b.ok("list_reservations", scope="repo")
            assert [r["reservation_id"] for r in listed["reservations"]] == [held["reservation_id"]]
            assert await a.ok("release", reservation_id=held["reservation_id"]) == {
                "released": True,
                "reservation_id": held["reservation_id"],
            }
            assert (await a.ok("release", reservation_id=held["reservation_id"]))[
                "released"
            ] is False
            mine = await b.ok("reserve", scope="repo", resources=["src/a.py"], mode="shared")
            assert mine["fencing_token"] == 2
            error, body = await b.call("release", reservation_id="bogus")
            assert (error, body["error"], body["field"]) == (
                True,
                "invalid_input",
                "reservation_id",
            )
            error, body = await b.call("reserve", scope="repo", resources=["x"], mode="read")
            assert (error, body["error"]) == (True, "invalid_input")

    anyio.run(main)
