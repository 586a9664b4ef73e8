"""``coordinator mcp``: the stdio MCP server (official MCP Python SDK, low-level API).

One process per MCP client. With an agent id the connection's session starts when the
client has initialised, stays on a keep-alive while the connection lives, and ends when
the client disconnects. Lease trouble reaches the client as a log notification
(``warning`` in jeopardy, ``error`` once lost, ``info`` when alive again).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
from contextlib import suppress
from typing import Any, Final

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from coordinator import __version__
from coordinator.aio import AsyncCoordinator
from coordinator.errors import CoordinatorError
from coordinator.keepalive import AsyncKeepAlive
from coordinator.liveness import LeaseState
from coordinator.mcp import reservations as _reservation_tools  # noqa: F401 (registers tools)
from coordinator.mcp.holder import SessionHolder
from coordinator.mcp.schemas import ErrorBody, ToolOutput, project_output
from coordinator.mcp.tools import TOOLS, ToolContext, ToolSpec, error_body
from coordinator.mcp.transport import pipe_streams
from coordinator.settings import Settings

logger = logging.getLogger(__name__)

NAME: Final = "agent-coordinator"
INSTRUCTIONS: Final = (
    "Shared sessions, project records and an audit trail for AI agents. Hold a session "
    "(start_session, unless this server was started with an agent id), then record your "
    "project with set_project, passing the version you last saw as expected_version. "
    "Errors are results with isError and a body whose 'error' says what happened: a "
    "conflict carries the current record; session_lease_expired means your lease is "
    "gone (reason), start a new session before writing again."
)
#: Log levels in increasing severity (RFC 5424, as MCP names them).
LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
#: Resource URIs: an agent's current project, an agent's recent events, all recent events.
PROJECT_URI: Final = "coordinator://agents/{agent_id}/project"
EVENTS_URI: Final = "coordinator://agents/{agent_id}/events"
ALL_EVENTS_URI: Final = "coordinator://events"
_AGENT_URI: Final = re.compile(r"^coordinator://agents/(?P<agent>[^/]+)/(?P<what>project|events)$")
#: Events a resource read returns.
RESOURCE_EVENTS: Final = 50


def tool_definition(spec: ToolSpec) -> types.Tool:
    """The tool as clients list it: name, description, JSON Schemas, hints."""
    return types.Tool(
        name=spec.name,
        description=spec.description,
        input_schema=spec.input.model_json_schema(),
        output_schema=spec.output.model_json_schema(),
        annotations=types.ToolAnnotations(
            read_only_hint=spec.read_only,
            destructive_hint=False,
            idempotent_hint=spec.read_only,
            open_world_hint=False,
        ),
    )


def _result(body: ToolOutput, *, error: bool = False) -> types.CallToolResult:
    data = body.model_dump(mode="json", exclude_none=error)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(data, separators=(",", ":")))],
        structured_content=data,
        is_error=error,
    )


class CoordinatorMCP:
    """The server of one connection: the SDK ``Server``, the session holder and the
    notifications about the lease."""

    def __init__(self, coordinator: AsyncCoordinator, agent_id: str | None = None) -> None:
        self.coordinator = coordinator
        self.agent_id = agent_id
        self.holder = SessionHolder(coordinator, on_change=self._lease_changed)
        self._context = ToolContext(self.holder)
        self._peer: ServerSession | None = None
        self._log_level = "debug"
        self._auto_start: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.server: Server[Any] = Server(
            NAME,
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
        )
        # Registered directly: the constructor argument warns that the 2026-07-28
        # revision deprecates logging, and stdio clients speak the handshake revisions.
        self.server.add_request_handler(
            "logging/setLevel", types.SetLevelRequestParams, self._set_level
        )
        self.server.add_notification_handler(
            "notifications/initialized", types.NotificationParams, self._initialized
        )

    async def run(self) -> None:
        """Serve stdin/stdout until the client disconnects, then let the session go."""
        try:
            async with pipe_streams() as pipes, stdio_server(*(pipes or ())) as (read, write):
                await self.server.run(read, write, self.server.create_initialization_options())
        finally:
            if self._auto_start is not None:
                self._auto_start.cancel()
            await self.holder.close()
            for task in list(self._pending):
                task.cancel()

    # --- handlers ---------------------------------------------------------------------

    async def _initialized(self, ctx: Any, params: types.NotificationParams) -> None:
        self._peer = ctx.session
        if self.agent_id is not None and self._auto_start is None:
            self._auto_start = asyncio.ensure_future(self._start_agent(self.agent_id))

    async def _start_agent(self, agent_id: str) -> None:
        try:
            await self.holder.start(agent_id)
        except CoordinatorError as failure:
            logger.error("could not start the session of %s: %s", agent_id, failure)
            await self._log("error", {"event": "session_not_started", **_body(failure)})

    async def _ready(self) -> None:
        if self._auto_start is not None:
            await asyncio.shield(self._auto_start)

    async def _set_level(self, ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        self._peer = ctx.session
        self._log_level = params.level
        return types.EmptyResult()

    async def _list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool_definition(spec) for spec in TOOLS.values()])

    async def _call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        self._peer = ctx.session
        spec = TOOLS.get(params.name)
        if spec is None:
            message = f"invalid name: unknown tool {params.name!r}"
            body = ErrorBody(error="invalid_input", message=message, field="name")
            return _result(body, error=True)
        await self._ready()
        try:
            args = spec.input.model_validate(params.arguments or {})
            return _result(await spec.run(self._context, args))
        except Exception as failure:
            body = error_body(failure)
            state = self.holder.state
            if not spec.read_only and state is LeaseState.JEOPARDY:
                body = body.model_copy(update={"lease_state": state.value})
            return _result(body, error=True)

    async def _list_resources(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        await self._ready()
        resources = [
            types.Resource(
                name="recent events",
                uri=ALL_EVENTS_URI,
                description=f"The {RESOURCE_EVENTS} newest audit events of all agents.",
                mime_type="application/json",
            )
        ]
        session = self.holder.session
        if session is not None:
            agent = session.agent_id
            resources += [
                types.Resource(
                    name="current project",
                    uri=PROJECT_URI.format(agent_id=agent),
                    description=f"The project record of {agent} (this connection's agent).",
                    mime_type="application/json",
                ),
                types.Resource(
                    name="my recent events",
                    uri=EVENTS_URI.format(agent_id=agent),
                    description=f"The {RESOURCE_EVENTS} newest audit events of {agent}.",
                    mime_type="application/json",
                ),
            ]
        return types.ListResourcesResult(resources=resources)

    async def _list_resource_templates(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    name="agent project",
                    uri_template=PROJECT_URI,
                    description="An agent's current project record (version included).",
                    mime_type="application/json",
                ),
                types.ResourceTemplate(
                    name="agent events",
                    uri_template=EVENTS_URI,
                    description=f"An agent's {RESOURCE_EVENTS} newest audit events.",
                    mime_type="application/json",
                ),
            ]
        )

    async def _read_resource(
        self, ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        if uri == ALL_EVENTS_URI:
            agent = None
            what = "events"
        else:
            match = _AGENT_URI.match(uri)
            if match is None:
                raise MCPError(types.INVALID_PARAMS, f"unknown resource {uri!r}")
            agent, what = match["agent"], match["what"]
        try:
            if what == "project":
                assert agent is not None
                record = await self.coordinator.get_current_project(agent)
                data: Any = project_output(agent, record).model_dump(mode="json")
            else:
                events = await self.coordinator.get_agent_events(agent, limit=RESOURCE_EVENTS)
                data = [event.model_dump(mode="json", exclude={"shard"}) for event in events]
        except CoordinatorError as failure:
            raise MCPError(types.INVALID_PARAMS, str(failure)) from None
        text = json.dumps(data, separators=(",", ":"))
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=text)]
        )

    # --- lease notifications ----------------------------------------------------------

    def _lease_changed(self, keep_alive: AsyncKeepAlive) -> None:
        session = keep_alive.session
        state = keep_alive.state
        data: dict[str, Any] = {
            "event": f"lease_{state.value}",
            "agent_id": session.agent_id,
            "session_id": session.session_id,
            "state": state.value,
        }
        if state is LeaseState.LOST:
            level = "error"
            data["reason"] = keep_alive.reason
            data["message"] = (
                f"your session's lease is lost ({keep_alive.reason}): writes will fail; "
                "call start_session to hold a new one"
            )
        elif state is LeaseState.JEOPARDY:
            level = "warning"
            data["message"] = (
                f"heartbeats are failing ({keep_alive.error}); the lease holds until its "
                "deadline, avoid starting work that must not be interrupted"
            )
        else:
            level = "info"
            data["message"] = "heartbeats succeed again; the lease is alive"
        task = asyncio.ensure_future(self._log(level, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _log(self, level: str, data: dict[str, Any]) -> None:
        peer = self._peer
        if peer is None or LEVELS.index(level) < LEVELS.index(self._log_level):
            return
        if peer.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return  # 2026-07-28 has no connection-wide log messages
        notification = types.LoggingMessageNotification(
            params=types.LoggingMessageNotificationParams(
                level=level,
                data=data,
                logger="coordinator",
            )
        )
        try:
            await peer.send_notification(notification)
        except Exception:  # the client is gone; nothing to tell
            logger.debug("could not send a log notification", exc_info=True)


def _body(failure: Exception) -> dict[str, Any]:
    return error_body(failure).model_dump(mode="json", exclude_none=True)


async def serve(settings: Settings, agent_id: str | None = None) -> None:
    """Run the stdio server on ``settings`` until the client disconnects, or SIGTERM /
    SIGHUP arrives; either way the connection's session is ended."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for signum in (signal.SIGTERM, signal.SIGHUP):
        with suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(signum, main.cancel)
    async with AsyncCoordinator(settings) as coordinator:
        with suppress(asyncio.CancelledError):
            await CoordinatorMCP(coordinator, agent_id).run()
