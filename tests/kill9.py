"""Kill ``redis-server -9`` under a multi-process compare-and-set burst, then check
that every acknowledged write survived and that no version or fencing token was issued
twice. Used by tests/test_kill9.py (a few rounds) and bench/bench_kill9.py (hundreds).

Each round: the writer processes (each with agents of its own) start a session per
agent and write ``set_current_project(agent, name, session, expected_version=v)`` in a
loop, recording each call that *returned* (an acknowledgement) with its version and
unique project name; the server is SIGKILLed at a random instant; each writer stops at
its first error (retries off: a write in flight when the server died has an unknown
outcome and is not recorded); the server restarts on the same files and the stored
records are compared with the acknowledgements. After the last round the audit streams
(no worker trims them) must hold one successful write event for every acknowledged
write and never two for the same agent and version.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from coordinator import Coordinator, CoordinatorError, EmbeddedRedis
from coordinator.keys import KeySpace

NAMESPACE = "kill9"
SHARDS = 16
#: An acknowledged write: (agent, version, project name).
Ack = tuple[str, int, str]


def _writer(
    url: str, agents: list[str], wait_aof: bool, tasks: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    """Process entry point: one round per task until told to stop (None)."""
    overrides: dict[str, Any] = {"wait_aof": True} if wait_aof else {}
    while True:
        tag = tasks.get()
        if tag is None:
            return
        acks: list[Ack] = []
        tokens: list[tuple[str, int]] = []
        error = ""
        c = Coordinator.from_url(
            url,
            namespace=NAMESPACE,
            shards=SHARDS,
            retry_attempts=0,
            socket_timeout=3,
            connect_timeout=3,
            **overrides,
        )
        try:
            sessions: dict[str, str] = {}
            versions: dict[str, int] = {}
            for agent in agents:
                session = c.start_session(agent)
                tokens.append((agent, session.fencing_token))
                sessions[agent] = session.session_id
                current = c.get_current_project(agent)
                versions[agent] = 0 if current is None else current.version
            results.put(("ready", tag, [], [], ""))
            n = 0
            while True:
                for agent in agents:
                    n += 1
                    name = f"{tag}-{n}"
                    record = c.set_current_project(
                        agent, name, sessions[agent], expected_version=versions[agent]
                    )
                    versions[agent] = record.version
                    acks.append((agent, record.version, name))
        except CoordinatorError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            c.close()
        results.put(("done", tag, acks, tokens, error))


@dataclass
class Report:
    """What the rounds acknowledged and what the checks found."""

    rounds: int = 0
    acked: int = 0
    #: Kills sent while a background fsync ran with writes waiting in the AOF buffer.
    kills_during_fsync: int = 0
    #: Rounds in which an acknowledged write was missing after the restart.
    rounds_with_loss: int = 0
    #: Acknowledged writes missing after a restart: (round, agent, acked version, stored).
    lost: list[tuple[int, str, int, int]] = field(default_factory=list)
    #: (agent, version) acknowledged for two different writes.
    reissued_versions: list[tuple[str, int]] = field(default_factory=list)
    #: (agent, token) acknowledged for two session starts.
    reissued_tokens: list[tuple[str, int]] = field(default_factory=list)
    #: Acknowledged writes whose audit event is missing from the streams.
    missing_events: list[Ack] = field(default_factory=list)
    #: (agent, version) with more than one successful write event.
    duplicate_events: list[tuple[str, int]] = field(default_factory=list)
    #: Writer errors that were not the expected outage.
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.reissued_versions
            or self.reissued_tokens
            or self.missing_events
            or self.duplicate_events
            or self.errors
        )


class Kill9:
    """``writers`` processes of ``agents_per_writer`` agents each against ``server``."""

    def __init__(
        self,
        server: EmbeddedRedis,
        *,
        writers: int = 3,
        agents_per_writer: int = 2,
        wait_aof: bool = False,
        during_fsync: bool = False,
        seed: int = 0,
    ) -> None:
        self.server = server
        #: Kill when a background fsync runs (only ``everysec`` has one) if one starts.
        self.during_fsync = during_fsync
        with closing(server.client(decode_responses=True)) as raw:
            self.everysec = raw.config_get("appendfsync")["appendfsync"] == "everysec"
        self.rng = random.Random(seed)
        self.wait_aof = wait_aof
        # The fork server imports the package once; each writer is a fork of it.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        self.results: Any = ctx.Queue()
        self.tasks: list[Any] = []
        self.processes: list[Any] = []
        for w in range(writers):
            agents = [f"w{w}-a{a}" for a in range(agents_per_writer)]
            tasks = ctx.Queue()
            process = ctx.Process(
                target=_writer,
                args=(server.url, agents, wait_aof, tasks, self.results),
                daemon=True,
            )
            process.start()
            self.tasks.append(tasks)
            self.processes.append(process)
        self.report = Report()
        #: Every acknowledgement of every round, in order per agent.
        self.acks: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.tokens: dict[str, list[int]] = defaultdict(list)

    def close(self) -> None:
        for tasks in self.tasks:
            tasks.put(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()

    def _collect(self, kind: str, timeout: float) -> list[tuple[Any, ...]]:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < len(self.processes):
            try:
                message = self.results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"writers did not report {kind!r} in {timeout}s") from None
            if message[0] == "done" and kind == "ready":  # failed before it was ready
                raise AssertionError(f"a writer failed to start: {message[4]}")
            got.append(message)
        return got

    def round(self, *, kill_after: tuple[float, float] = (0.05, 0.4)) -> None:
        """One burst, one SIGKILL at a random instant, one restart, one check."""
        r = self.report.rounds
        for tasks in self.tasks:
            tasks.put(f"r{r}")
        self._collect("ready", 60)
        if self.during_fsync and self.everysec:  # long enough for the once-a-second fsync
            kill_after = (kill_after[0], max(kill_after[1], 1.5))
        deadline = time.monotonic() + self.rng.uniform(*kill_after)
        if self.during_fsync and _await_background_fsync(self.server, deadline):
            self.report.kills_during_fsync += 1
        else:
            time.sleep(max(0.0, deadline - time.monotonic()))  # a random instant
        self.server.kill()
        done = self._collect("done", 60)
        self.server.start(timeout=60)
        self.report.rounds += 1
        round_acks: dict[str, tuple[int, str]] = {}
        for _, _, acks, tokens, error in done:
            if error and not error.startswith("CoordinatorUnavailable"):
                self.report.errors.append(error)
            for agent, token in tokens:
                self.tokens[agent].append(token)
            for agent, version, name in acks:
                self.acks[agent].append((version, name))
                round_acks[agent] = (version, name)
                self.report.acked += 1
        lost = self._check_stored(r, round_acks)
        self.report.rounds_with_loss += bool(lost)

    def _check_stored(self, r: int, latest: dict[str, tuple[int, str]]) -> int:
        lost = 0
        with closing(
            Coordinator.from_url(self.server.url, namespace=NAMESPACE, shards=SHARDS)
        ) as c:
            for agent, (version, name) in latest.items():
                stored = c.get_current_project(agent)
                have = 0 if stored is None else stored.version
                if have < version or (have == version and stored and stored.project_name != name):
                    self.report.lost.append((r, agent, version, have))
                    lost += 1
        return lost

    def finish(self) -> Report:
        """Check what all rounds acknowledged against the audit streams; stop writers."""
        self.close()
        report = self.report
        for agent, tokens in self.tokens.items():
            report.reissued_tokens += [(agent, b) for a, b in pairwise(tokens) if b <= a]
        for agent, acks in self.acks.items():
            seen: dict[int, str] = {}
            for version, name in acks:
                if version in seen:
                    report.reissued_versions.append((agent, version))
                seen[version] = name
        written: dict[tuple[str, int], list[str]] = defaultdict(list)
        for fields in _events(self.server):
            if fields.get("success") == "1" and fields["event_type"].startswith("project_"):
                key = (fields["agent_id"], int(fields["actual_version"]))
                written[key].append(fields["to_project"])
        report.duplicate_events = sorted(k for k, v in written.items() if len(v) > 1)
        for agent, acks in self.acks.items():
            for version, name in acks:
                if name not in written.get((agent, version), []):
                    report.missing_events.append((agent, version, name))
        return report


def _await_background_fsync(server: EmbeddedRedis, deadline: float) -> bool:
    """Poll ``INFO persistence`` until a background fsync runs while writes wait in the
    AOF buffer (with ``everysec`` Redis then postpones the AOF write, not the replies:
    the window in which a SIGKILL loses acknowledged writes). True if it was seen before
    ``deadline``."""
    with closing(server.client(decode_responses=True)) as raw:
        while time.monotonic() < deadline:
            info = raw.info("persistence")
            if info.get("aof_pending_bio_fsync") and info.get("aof_buffer_length"):
                return True
    return False


def _events(server: EmbeddedRedis) -> Iterator[dict[str, str]]:
    keys = KeySpace(NAMESPACE, SHARDS)
    with closing(server.client(decode_responses=True)) as raw:
        for shard in range(SHARDS):
            for _, fields in raw.xrange(keys.stream(shard)):
                yield fields


@contextmanager
def busy_disk(folder: Path, *, chunk: int = 1 << 20) -> Iterator[None]:
    """Keep the disk under ``folder`` busy (write and fsync 1 MiB chunks in a loop) so
    that fsyncs are slow, as on a shared or loaded host."""
    stop = threading.Event()

    def hog() -> None:
        path = folder / "busy-disk.tmp"
        data = os.urandom(chunk)
        with open(path, "wb") as out:
            while not stop.is_set():
                for _ in range(64):
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())
                out.seek(0)
        path.unlink(missing_ok=True)

    thread = threading.Thread(target=hog, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run(
    folder: Path,
    *,
    rounds: int,
    appendfsync: str = "always",
    binary: str | os.PathLike[str] | None = None,
    writers: int = 3,
    agents_per_writer: int = 2,
    wait_aof: bool = False,
    during_fsync: bool = False,
    seed: int = 0,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """``rounds`` kill -9 rounds on a fresh server in ``folder``; the report."""
    server = EmbeddedRedis(
        folder / "redis", port=0, unix_socket=False, binary=binary, appendfsync=appendfsync
    )
    with server:
        harness = Kill9(
            server,
            writers=writers,
            agents_per_writer=agents_per_writer,
            wait_aof=wait_aof,
            during_fsync=during_fsync,
            seed=seed,
        )
        try:
            for _ in range(rounds):
                harness.round()
                if progress is not None:
                    progress(harness.report)
        finally:
            report = harness.finish()
    return report
