"""The event worker verify runs beside its clients: a real ``coordinator worker``
subprocess on the run's namespace and sink, which nemeses may kill and restart."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from coordinator.errors import WorkerFailed
from coordinator.processes import terminate
from coordinator.settings import Settings

#: One consumer name for every incarnation: a restarted worker re-reads its own
#: pending entries at once instead of waiting for them to be claimed.
CONSUMER = "verify"


class WorkerProcess:
    """Start, SIGKILL, restart and finally drain a ``coordinator worker`` subprocess."""

    def __init__(self, settings: Settings, sink_url: str, log_path: Path) -> None:
        self.sink_url = sink_url
        self.log_path = log_path
        env = dict(os.environ)
        env.update(
            COORDINATOR_REDIS_URL=settings.redis_url,
            COORDINATOR_NAMESPACE=settings.namespace,
            COORDINATOR_SINK_URL=sink_url,
            COORDINATOR_SHARDS=str(settings.shards),
        )
        env.pop("COORDINATOR_METRICS_PORT", None)
        if settings.password is not None:
            env["COORDINATOR_REDIS_PASSWORD"] = settings.password.get_secret_value()
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def _command(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "coordinator",
            "worker",
            "--consumer",
            CONSUMER,
            "--block-ms",
            "100",
            "--claim-idle-ms",
            "1000",
            *extra,
        ]

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._command(),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def kill(self) -> int | None:
        """SIGKILL (nothing is flushed, nothing acknowledged after the kill)."""
        process, self.process = self.process, None
        if process is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        return process.pid

    def restart(self, pause: float = 0.0) -> int | None:
        """SIGKILL, wait ``pause`` seconds, start again; returns the killed pid."""
        pid = self.kill()
        time.sleep(pause)
        self.restarts += 1
        self.start()
        return pid

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM: the worker finishes the batch in hand and exits."""
        process, self.process = self.process, None
        if process is not None:
            terminate(process, timeout)

    def drain(self, timeout: float = 120.0) -> None:
        """Stop the running worker and persist everything left (``worker --burst``)."""
        self.stop()
        with self.log_path.open("ab") as log:
            try:
                done = subprocess.run(
                    self._command("--burst"),
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise WorkerFailed(f"worker --burst did not drain within {timeout:.0f} s") from None
        if done.returncode != 0:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise WorkerFailed(f"worker --burst exited with {done.returncode}: {tail[0]}")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None
