"""``coordinator mcp``: run the MCP server over stdio (needs the ``mcp`` extra)."""

from __future__ import annotations

import asyncio

import click

from coordinator import validation
from coordinator.cli.base import CliState, handles_errors
from coordinator.errors import InvalidInputError


@click.command("mcp")
@click.option(
    "--agent-id",
    envvar="COORDINATOR_AGENT_ID",
    help="Hold this agent's session for as long as the client is connected (else the "
    "agent calls start_session). [env COORDINATOR_AGENT_ID]",
)
@click.pass_obj
@handles_errors
def mcp_command(state: CliState, agent_id: str | None) -> None:
    """Serve MCP over stdin/stdout: one process per MCP client.

    Tools: start_session, heartbeat, end_session, lease_status, get_project, set_project,
    clear_project, list_leases, recent_events. stdout carries the protocol only;
    diagnostics go to stderr.
    """
    if agent_id is not None:
        try:
            validation.agent_id(agent_id)
        except InvalidInputError as exc:
            raise click.BadParameter(str(exc), param_hint="--agent-id") from None
    try:
        from coordinator.mcp.server import serve
    except ImportError as exc:
        raise click.ClickException(
            f"the MCP server needs the 'mcp' extra: pip install 'agent-coordinator[mcp]' ({exc})"
        ) from None
    asyncio.run(serve(state.settings(), agent_id))
