"""stdin/stdout for the MCP SDK's stdio transport, read and written on the event loop.

The SDK's ``stdio_server()`` wraps the standard streams in ``anyio.wrap_file``: every
line read and every write and flush is a hop to a worker thread and back, three per
tool call, which on a busy machine costs more than the call itself. ``stdio_server``
also accepts streams of its own; these are asyncio pipe transports over private
duplicates of fds 0 and 1. As the SDK does, fd 0 then reads the null device and fd 1
goes to stderr while serving, so nothing stray reaches the wire; both are restored on
exit. When stdin or stdout is not a pipe, socket or terminal (e.g. a regular file),
:func:`pipe_streams` yields None and the SDK's own streams are used.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

#: Longest message line accepted (bytes).
LINE_LIMIT = 64 * 1024 * 1024


class LineReader:
    """Lines of text from a pipe (an async iterator, like ``anyio.AsyncFile``)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class LineWriter:
    """Text written to a pipe; ``flush`` waits while the pipe's buffer is full."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def _is_stream(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


@asynccontextmanager
async def pipe_streams() -> AsyncIterator[tuple[Any, Any] | None]:
    """(stdin, stdout) for ``stdio_server(stdin, stdout)``, or None to use the SDK's."""
    try:
        usable = _is_stream(0) and _is_stream(1) and not os.isatty(0)
    except OSError:
        usable = False
    if not usable:
        yield None
        return
    loop = asyncio.get_running_loop()
    saved_in, saved_out = os.dup(0), os.dup(1)
    wire_in, wire_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0)
    )
    write_transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(wire_out, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
    try:
        yield LineReader(reader), LineWriter(writer)
    finally:
        read_transport.close()
        with suppress(OSError, RuntimeError):
            await writer.drain()
        write_transport.close()
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)
