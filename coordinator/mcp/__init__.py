"""``coordinator mcp``: the coordinator as an MCP server over stdio (optional extra
``mcp``: ``pip install 'agent-coordinator[mcp]'``).

- :mod:`coordinator.mcp.schemas`: tool inputs and outputs (their JSON Schemas), the
  ``isError`` body;
- :mod:`coordinator.mcp.holder`: the session a connection holds, on a keep-alive;
- :mod:`coordinator.mcp.tools`: the tool registry and the tools;
- :mod:`coordinator.mcp.server`: the SDK server, resources, log notifications.

Only ``server`` imports the MCP SDK; nothing in the core imports this package.
"""
