"""Child-process helpers shared by the local tooling and the sink writer process.

No Redis here: free TCP ports, pid checks, a child that dies with its parent, and one
way to stop a child (signal, wait, kill).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """``preexec_fn`` for a child that must not outlive the process that started it.

    Linux only: if the parent dies (even by SIGKILL), the child gets SIGTERM instead of
    living on as an orphan (a server keeping its append-only file open, a worker
    consuming under a name a later stack reuses)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int, unknown: str = "") -> str:
    """The command line of ``pid`` (``unknown`` when it cannot be read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return unknown


def terminate(
    process: subprocess.Popen[Any], timeout: float, signum: int | None = signal.SIGTERM
) -> bool:
    """Ask a child process to exit with ``signum`` (None: it was asked some other way,
    e.g. its input closed), wait up to ``timeout`` seconds, then kill it. True if it had
    to be killed."""
    if process.poll() is not None:
        return False
    if signum is not None:
        process.send_signal(signum)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return True
    return False
