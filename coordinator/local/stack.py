"""The local stack: a real redis-server and the event worker in one data directory.

``coordinator up`` runs it in the foreground and ``coordinator demo`` runs a throwaway
one. The stack writes ``stack.json`` into the data directory while it runs, so other
commands (and other processes) find it without being told a URL. Redis keeps its
append-only files in ``<data>/redis``; the worker persists events to
``<data>/events.db``. One stack per data directory: a second start refuses with
:class:`StackRunning` (the embedded server's lock guarantees it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

import redis

from coordinator.errors import DataDirInUse, EmbeddedRedisError, StackError, StackRunning
from coordinator.keys import KeySpace
from coordinator.local.embedded import EmbeddedRedis, server_kind
from coordinator.paths import default_sink_url
from coordinator.processes import die_with_parent, free_port, pid_alive, terminate

log = logging.getLogger(__name__)

STACK_FILE = "stack.json"
PORT_FILE = "redis.port"
#: More redis-server restarts than this within REDIS_RESTART_WINDOW seconds: give up.
REDIS_RESTART_LIMIT = 5
REDIS_RESTART_WINDOW = 60.0


@dataclass(frozen=True)
class StackInfo:
    """What ``stack.json`` records: how to reach a running stack."""

    data_dir: str
    redis_url: str
    unix_url: str | None
    sink_url: str
    namespace: str
    pid: int
    redis_pid: int | None
    worker_pid: int | None
    started_at: float

    def environment(self) -> dict[str, str]:
        """The variables another process sets to use this stack."""
        return {
            "COORDINATOR_REDIS_URL": self.redis_url,
            "COORDINATOR_NAMESPACE": self.namespace,
            "COORDINATOR_SINK_URL": self.sink_url,
        }


def read_stack(data_dir: Path) -> StackInfo | None:
    """The running stack in ``data_dir``, or None (no file, or its process is gone)."""
    try:
        info = StackInfo(**json.loads((data_dir / STACK_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return info if pid_alive(info.pid) else None


class LocalStack:
    """Start, supervise and stop Redis plus the worker in ``data_dir``.

    ``port`` is the TCP port other processes connect to; by default the port used
    last time in this directory (kept in ``redis.port``) or a free one.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        namespace: str = "coord",
        port: int | None = None,
        worker: bool = True,
        worker_args: tuple[str, ...] = (),
        server_binary: Path | None = None,
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.server_binary = server_binary
        self.namespace = namespace
        self.port = port
        self.with_worker = worker
        self.worker_args = worker_args
        self.sink_url = default_sink_url(self.data_dir)
        self.redis: EmbeddedRedis | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_restarts = 0
        #: When redis-server was restarted after it died (the recent ones).
        self.redis_restarts: list[float] = []
        #: Unique per stack process: a worker of another (or an orphaned) stack never
        #: consumes under the same name; restarts within this stack keep it.
        self.consumer = f"local-stack-{os.getpid()}"
        self.info: StackInfo | None = None

    def server_name(self) -> str:
        """``valkey 9.1.2``: the running server's kind and version."""
        if self.redis is None:
            return "no server"
        kind = server_kind(self.redis.binary)
        return f"{kind} {'.'.join(map(str, self.redis.version))}"

    # --- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> StackInfo:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StackError(
                f"cannot create the data directory {self.data_dir}: {exc.strerror or exc}"
            ) from None
        port = self.port or self._remembered_port() or free_port()
        server = EmbeddedRedis(self.data_dir / "redis", port=port, binary=self.server_binary)
        try:
            server.start()
        except DataDirInUse:
            raise StackRunning(self.data_dir, read_stack(self.data_dir)) from None
        self.redis = server
        (self.data_dir / PORT_FILE).write_text(str(port))
        try:
            if self.with_worker:
                self._start_worker()
                self._wait_for_worker(timeout)
        except BaseException:
            self.stop()
            raise
        self.info = StackInfo(
            data_dir=str(self.data_dir),
            redis_url=server.url,
            unix_url=server.unix_url,
            sink_url=self.sink_url,
            namespace=self.namespace,
            pid=os.getpid(),
            redis_pid=server.pid,
            worker_pid=None if self.worker is None else self.worker.pid,
            started_at=time.time(),
        )
        self._write_info(self.info)
        return self.info

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the worker first (it finishes and acks its batch), then Redis."""
        worker, self.worker = self.worker, None
        if worker is not None and terminate(worker, timeout):
            log.warning("worker pid %s did not stop in %ss; killed it", worker.pid, timeout)
        with contextlib.suppress(OSError):  # none written (or the directory is unusable)
            info = read_stack(self.data_dir)
            if info is None or info.pid == os.getpid():
                (self.data_dir / STACK_FILE).unlink()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def supervise(self) -> None:
        """Restart Redis or the worker if it died (called periodically by the foreground
        loop). Raises StackError when redis-server keeps dying or cannot start again."""
        self._supervise_redis()
        if self.worker is None or self.worker.poll() is None:
            return
        code = self.worker.returncode
        self.worker_restarts += 1
        log.warning("worker exited with %s; restarting it (restart %s)", code, self.worker_restarts)
        time.sleep(min(5.0, 0.2 * 2 ** min(self.worker_restarts, 5)))  # no hot loop
        self._start_worker()
        if self.info is not None:
            self.info = StackInfo(**{**asdict(self.info), "worker_pid": self.worker.pid})
            self._write_info(self.info)

    def _supervise_redis(self) -> None:
        server = self.redis
        if server is None or server.is_running():
            return
        code = None if server.process is None else server.process.returncode
        now = time.monotonic()
        self.redis_restarts = [t for t in self.redis_restarts if now - t < REDIS_RESTART_WINDOW]
        if len(self.redis_restarts) >= REDIS_RESTART_LIMIT:
            raise StackError(
                f"redis-server exited with {code} {len(self.redis_restarts) + 1} times within "
                f"{REDIS_RESTART_WINDOW:.0f}s; giving up (see {server.logfile})"
            )
        delay = min(5.0, 0.25 * 2 ** len(self.redis_restarts))
        self.redis_restarts.append(now)
        log.warning(
            "redis-server (pid %s) exited with %s; restarting it in %.2fs (restart %s)",
            server.pid, code, delay, len(self.redis_restarts),
        )  # fmt: skip
        time.sleep(delay)
        try:
            server.start()
        except EmbeddedRedisError as exc:
            raise StackError(f"redis-server could not be restarted: {exc}") from exc
        if self.info is not None:
            self.info = StackInfo(**{**asdict(self.info), "redis_pid": server.pid})
            self._write_info(self.info)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- helpers ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.redis is None:
            raise StackError("the stack is not running")
        return self.redis.url

    def _remembered_port(self) -> int | None:
        try:
            return int((self.data_dir / PORT_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _write_info(self, info: StackInfo) -> None:
        tmp = self.data_dir / f".{STACK_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(info), indent=2))
        tmp.replace(self.data_dir / STACK_FILE)  # atomic: readers never see half a file

    def _start_worker(self) -> None:
        command = [
            sys.executable, "-m", "coordinator",
            "--redis-url", self.url,
            "--namespace", self.namespace,
            "--sink-url", self.sink_url,
            # Stable while this stack runs: a restarted worker re-reads its own
            # pending entries at once instead of waiting for them to be claimed.
            "worker", "--consumer", self.consumer, *self.worker_args,
        ]  # fmt: skip
        log_file = open(self.data_dir / "worker.log", "ab")  # noqa: SIM115 (owned by the child)
        try:
            self.worker = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True,  # Ctrl-C reaches the stack, which stops it in order
                # Killed (SIGKILL) or hung up, the stack takes its worker along (SIGTERM:
                # it acks its batch and exits); armed from the main thread only, as
                # the signal fires when the forking thread exits.
                preexec_fn=die_with_parent
                if sys.platform == "linux" and threading.current_thread() is threading.main_thread()
                else None,
            )  # fmt: skip
        finally:
            log_file.close()

    def _wait_for_worker(self, timeout: float) -> None:
        """Until the worker has registered its liveness key (or died)."""
        pattern = KeySpace(self.namespace, 1).worker("*")
        deadline = time.monotonic() + timeout
        with redis.Redis.from_url(self.url, decode_responses=True) as probe:
            while True:
                assert self.worker is not None
                if self.worker.poll() is not None:
                    raise StackError(
                        f"the worker exited with {self.worker.returncode} at start; "
                        f"see {self.data_dir / 'worker.log'}"
                    )
                if any(True for _ in probe.scan_iter(match=pattern, count=100)):
                    return
                if time.monotonic() > deadline:
                    raise StackError(f"the worker did not come up within {timeout}s")
                time.sleep(0.05)
