"""Nemeses: faults injected while the clients run, one at a time, each healed before
the next. Every fault is logged with its times, so a report can say what happened.

* ``pause``: SIGSTOP a client past its lease TTL, then SIGCONT. The client then writes
  with its old session at once; unless another process renewed that session
  meanwhile, the write must be rejected (the real-time check enforces it).
* ``redis-restart``: restart the embedded redis-server (append-only persistence),
  alternately by SIGTERM and by SIGKILL; nothing acknowledged may be lost.
* ``script-flush``: ``SCRIPT FLUSH``; clients must reload their scripts on NOSCRIPT.
* ``worker-kill``: SIGKILL the event worker, then start it again; nothing may be lost
  or persisted twice.
* ``sink-outage``: lock the event sink against writes for longer than the worker
  waits; the worker must retry and resume.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from coordinator.local.embedded import EmbeddedRedis


@dataclass(frozen=True)
class Fault:
    """One injected fault: which nemesis, when (monotonic ns), what exactly."""

    nemesis: str
    start: int
    end: int
    detail: str
    error: str | None = None


@dataclass
class Target:
    """What the nemeses act on."""

    lease_ttl: float
    #: The embedded server, when verify runs its own.
    embedded: EmbeddedRedis | None
    #: A raw redis-py client of the target (single node or cluster).
    raw: Callable[[], Any]
    #: Pids of the client processes.
    client_pids: Sequence[int] = ()
    #: Extra handles later nemeses use (e.g. the worker process).
    extras: dict[str, Any] = field(default_factory=dict)


class Nemesis(ABC):
    name: ClassVar[str]

    def unavailable(self, target: Target) -> str | None:
        """Why this nemesis cannot act on ``target`` (None: it can)."""
        return None

    @abstractmethod
    def inject(self, target: Target, rng: random.Random) -> str:
        """Inject the fault, wait, heal it; returns what was done."""


class PauseClient(Nemesis):
    name = "pause"

    def inject(self, target: Target, rng: random.Random) -> str:
        pid = rng.choice(list(target.client_pids))
        pause = target.lease_ttl * 1.5 + 0.2
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:  # its run ended in the meantime: nothing to pause
            return f"client pid {pid} had exited: not paused"
        try:
            time.sleep(pause)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        return f"client pid {pid} stopped for {pause:.1f} s"


class RedisRestart(Nemesis):
    name = "redis-restart"

    def __init__(self) -> None:
        self.count = 0

    def unavailable(self, target: Target) -> str | None:
        if target.embedded is None:
            return "needs the embedded redis-server (run verify without --redis-url)"
        return None

    def inject(self, target: Target, rng: random.Random) -> str:
        server = target.embedded
        assert server is not None
        self.count += 1
        how = "SIGTERM" if self.count % 2 else "SIGKILL"
        if how == "SIGTERM":
            server.stop()
        else:
            server.kill()
        time.sleep(rng.uniform(0.05, 0.3))
        server.start()
        return f"redis-server restarted ({how})"


class ScriptFlush(Nemesis):
    name = "script-flush"

    def inject(self, target: Target, rng: random.Random) -> str:
        target.raw().script_flush()
        return "SCRIPT FLUSH"


class WorkerKill(Nemesis):
    name = "worker-kill"

    def unavailable(self, target: Target) -> str | None:
        return None if "worker" in target.extras else "needs the worker (not run with --no-worker)"

    def inject(self, target: Target, rng: random.Random) -> str:
        pid = target.extras["worker"].restart(pause=rng.uniform(0.1, 0.5))
        return f"worker pid {pid} killed (SIGKILL) and restarted"


class SinkOutage(Nemesis):
    """The sink stops accepting writes for a while: an exclusive lock held on the SQLite
    file (longer than the sink's busy timeout) or on the PostgreSQL table."""

    name = "sink-outage"
    #: Seconds the sink stays unavailable (SQLite's busy timeout is 5 s).
    hold = 6.0

    def unavailable(self, target: Target) -> str | None:
        return None if "worker" in target.extras else "needs the worker (not run with --no-worker)"

    def inject(self, target: Target, rng: random.Random) -> str:
        url: str = target.extras["worker"].sink_url
        if url.startswith("sqlite:"):
            from coordinator.sinks.sqlite import SQLiteSink

            path = SQLiteSink(url).path
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                conn.execute("BEGIN EXCLUSIVE")
                time.sleep(self.hold)
                conn.execute("ROLLBACK")
            finally:
                conn.close()
            return f"SQLite sink locked (BEGIN EXCLUSIVE) for {self.hold:.0f} s"
        import psycopg

        from coordinator.sinks import TABLE

        with psycopg.connect(url) as pg:
            pg.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
            time.sleep(self.hold)
            pg.rollback()
        return f"PostgreSQL sink table locked for {self.hold:.0f} s"


#: Every nemesis, by name.
NEMESES: dict[str, Callable[[], Nemesis]] = {
    PauseClient.name: PauseClient,
    RedisRestart.name: RedisRestart,
    ScriptFlush.name: ScriptFlush,
    WorkerKill.name: WorkerKill,
    SinkOutage.name: SinkOutage,
}


class NemesisRunner:
    """A thread that injects the chosen faults in turn, ``interval`` seconds apart."""

    def __init__(
        self, nemeses: Sequence[Nemesis], target: Target, interval: float, seed: int
    ) -> None:
        self.nemeses = list(nemeses)
        self.target = target
        self.interval = interval
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)

    def start(self) -> None:
        if self.nemeses:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        turn = 0
        while not self._stop.wait(self.rng.uniform(0.5, 1.5) * self.interval):
            nemesis = self.nemeses[turn % len(self.nemeses)]
            turn += 1
            start = time.monotonic_ns()
            try:
                detail, error = nemesis.inject(self.target, self.rng), None
            except Exception as exc:  # a fault that could not be injected or healed
                detail, error = "failed", f"{type(exc).__name__}: {exc}"
            self.faults.append(Fault(nemesis.name, start, time.monotonic_ns(), detail, error))
