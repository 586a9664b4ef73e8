"""A sink whose writes run in a child process.

SQLite works inside the process that calls it, and binding a batch's parameters holds
the GIL: in the worker, the write thread and the read loop then share one interpreter.
This wrapper sends each batch (rows as ``marshal`` data) to a child process that owns the real
sink and answers with the count, so reading and writing use two cores. The child
commits before it answers, so acknowledging after ``write`` returns keeps the
exactly-once guarantee; a child that dies is an outage (``SinkUnavailable``) and is
started again on the next write.

The child is ``python -m coordinator.sinks.process`` talking over its stdin and stdout
(not ``multiprocessing``, whose children import the parent's ``__main__`` again); the
sink URL, which may hold a password, is passed in its environment, not its arguments.
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Final

from coordinator.errors import SinkRefused, SinkUnavailable
from coordinator.events import EventRow
from coordinator.processes import terminate
from coordinator.sinks.base import Sink

#: Rows go to the child as ``marshal`` data (they hold only str, int, bool and None,
#: and both ends run the same interpreter): cheaper to write than pickle, which
#: memoises every string, and the write runs in the worker, beside its reading
#: (figures: docs/benchmarks.md, "Event worker").
#: Version 2 does without marshal's back-references, the slower part of dumping.
_MARSHAL_VERSION: Final = 2

#: Environment variable carrying the sink URL to the child.
URL_VARIABLE: Final = "COORDINATOR_SINK_WRITER_URL"


def _serve(url: str, incoming: Connection, outgoing: Connection) -> None:
    from coordinator.sinks import sink_from_url

    sink = sink_from_url(url)
    try:
        while True:
            try:
                rows = marshal.loads(incoming.recv_bytes())
            except EOFError:  # the parent is gone
                return
            try:
                reply: tuple[Any, ...] = ("ok", sink.write(rows))
            except SinkUnavailable as exc:
                reply = ("unavailable", str(exc))
            except Exception as exc:
                reply = ("refused", f"{type(exc).__name__}: {exc}")
            try:
                outgoing.send(reply)
            except OSError:
                return
    finally:
        sink.close()


class ProcessSink:
    """Writes through a child process; everything else through ``inner`` (in process)."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._pipes: tuple[Connection, Connection] | None = None

    @property
    def location(self) -> str:
        return self.inner.location

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # reads, ping, counts: in this process

    def start(self) -> None:
        """Start the writer process now (else on the first write)."""
        with self._lock:
            self._connection()

    def write(self, rows: Sequence[EventRow]) -> int:
        if not rows:
            return 0
        with self._lock:
            send, receive = self._connection()
            try:
                send.send_bytes(marshal.dumps(list(rows), _MARSHAL_VERSION))
                kind, value = receive.recv()
            except (EOFError, OSError) as exc:
                self._stop()
                raise SinkUnavailable(
                    f"event sink {self.location} unavailable: its writer process exited",
                    maybe_applied=True,
                ) from exc
        if kind == "ok":
            return int(value)
        if kind == "unavailable":
            raise SinkUnavailable(value, maybe_applied=True)
        raise SinkRefused(value)

    def _connection(self) -> tuple[Connection, Connection]:
        if self._pipes is None or self._child is None or self._child.poll() is not None:
            self._stop()
            self.inner.ping()  # schema created here first: errors surface in this process
            child = subprocess.Popen(
                [sys.executable, "-m", "coordinator.sinks.process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, URL_VARIABLE: self.inner.url},
            )
            assert child.stdin is not None
            assert child.stdout is not None
            send = Connection(os.dup(child.stdin.fileno()), readable=False)
            receive = Connection(os.dup(child.stdout.fileno()), writable=False)
            child.stdin.close()
            child.stdout.close()
            self._child, self._pipes = child, (send, receive)
        return self._pipes

    def _stop(self) -> None:
        pipes, self._pipes = self._pipes, None
        child, self._child = self._child, None
        if pipes is not None:
            for pipe in pipes:
                pipe.close()  # the child's recv sees EOF and exits
        if child is not None:
            terminate(child, 5, signum=None)

    def close(self) -> None:
        with self._lock:
            self._stop()
        self.inner.close()


if __name__ == "__main__":
    from coordinator.gc_tuning import fewer_collections

    # Each batch unpacks into tens of thousands of tuples, all freed by reference
    # counting: the cycle collector would rescan them for nothing.
    with fewer_collections():
        _serve(
            os.environ.pop(URL_VARIABLE),
            Connection(os.dup(0), writable=False),
            Connection(os.dup(1), readable=False),
        )
