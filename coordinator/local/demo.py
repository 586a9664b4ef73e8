"""``coordinator demo``: the whole mission on a throwaway local stack, in seconds.

Three separate server processes (as MCP servers would be, one per client) share three
agents through Redis. Every round they all read an agent's record and then, released
together, compare-and-set it with the version they read: one wins, the others get a
conflict. Half way an operator revokes one agent's session (the servers' later writes
for it are rejected), and a fourth agent stops heartbeating and expires (the worker's
reaper records it). The worker persists every event. The CLI then prints the leases,
each agent's project and version and the audit summary, and checks that the persisted
events are exactly the emitted ones: the same count of each type, the very stream ids
of the winning writes, and versions equal to the writes won.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from coordinator.client import Coordinator
from coordinator.errors import ConflictError, SessionLeaseExpired
from coordinator.local.stack import LocalStack
from coordinator.models import AgentProject, EventType, Lease
from coordinator.sinks import sink_from_url

NAMESPACE = "demo"
#: Agents the three server processes race on.
RACERS = ("alpha", "beta", "gamma")
#: Revoked by the operator half way.
REVOKED = "gamma"
#: Stops heartbeating and expires.
SLEEPER = "delta"
SERVERS = 3
#: Rounds before and after the revoke.
ROUNDS = 8
SLEEPER_TTL = 1.0
#: How often the stack's worker reaps lapsed leases during the demo (s).
REAP_INTERVAL = 0.2
#: Longest wait for one step (the whole demo normally takes a few seconds).
STEP_TIMEOUT = 20.0

#: Project writes: the first is ``project_set``, later ones ``project_switched``.
WRITES = "project writes"
_WRITE_TYPES = (EventType.PROJECT_SET.value, EventType.PROJECT_SWITCHED.value)


@dataclass
class DemoReport:
    """What happened, what was emitted and what the sink holds."""

    ok: bool = False
    emitted: Counter[str] = field(default_factory=Counter)
    persisted: Counter[str] = field(default_factory=Counter)
    #: Stream ids of the winning writes, per agent, as the servers were told them.
    winners: dict[str, set[str]] = field(default_factory=dict)
    #: Stream ids of the persisted ``project_set``/``project_switched`` events, per agent.
    persisted_writes: dict[str, set[str]] = field(default_factory=dict)
    #: Each agent's project and version at the end.
    projects: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: The leases and records at the end, read at ``server_time``.
    leases: list[Lease] = field(default_factory=list)
    records: dict[str, AgentProject | None] = field(default_factory=dict)
    server_time: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))

    def check(self) -> list[str]:
        """Every way the persisted audit differs from what was emitted (empty: none)."""
        problems = list(self.problems)
        if +self.emitted != +self.persisted:
            kinds = sorted(k for k in set(self.emitted) | set(self.persisted)
                           if self.emitted[k] != self.persisted[k])  # fmt: skip
            problems.append(f"persisted counts differ from the emitted ones: {', '.join(kinds)}")
        if self.persisted_writes != self.winners:
            problems.append("the persisted writes are not the winning writes")
        for agent, (_, version) in self.projects.items():
            won = len(self.winners.get(agent, ()))
            if version != won:
                problems.append(f"{agent} is at version {version} after {won} writes won")
        return problems


def _server(
    url: str,
    index: int,
    sessions: dict[str, str],
    race: Barrier,
    half: Barrier,
    revoked: Event,
    results: Any,
) -> None:
    """One tool-server process: read each agent's record, wait for the others, then
    compare-and-set with the version read (so the three really race)."""
    outcome: dict[str, Any] = {"conflicts": 0, "rejected": 0, "won": []}
    with Coordinator.from_url(url, namespace=NAMESPACE) as client:
        for round_ in range(2 * ROUNDS):
            if round_ == ROUNDS:
                half.wait(STEP_TIMEOUT)  # every server is past the first half
                revoked.wait(STEP_TIMEOUT)  # ... and the operator has acted
            for agent in RACERS:
                current = client.get_current_project(agent)
                race.wait(STEP_TIMEOUT)  # all have read: now all write
                try:
                    record = client.set_current_project(
                        agent,
                        f"{agent}-s{index}r{round_}",
                        sessions[agent],
                        expected_version=current.version if current else 0,
                    )
                    outcome["won"].append((agent, record.event_id))
                except ConflictError:
                    outcome["conflicts"] += 1
                except SessionLeaseExpired:
                    outcome["rejected"] += 1
    results.put(outcome)


def run_demo(
    say: Callable[[str], None] = print,
    data_dir: Path | None = None,
    server_binary: Path | None = None,
) -> DemoReport:
    """Run the demo on a fresh stack in ``data_dir`` (default: a temporary directory),
    its server ``server_binary`` (default: ``EmbeddedRedis``'s)."""
    started = time.monotonic()
    report = DemoReport()
    with tempfile.TemporaryDirectory(prefix="coordinator-demo-") as tmp:
        stack = LocalStack(
            data_dir or Path(tmp),
            namespace=NAMESPACE,
            port=None,
            worker_args=("--reap-interval", str(REAP_INTERVAL)),
            server_binary=server_binary,
        )
        with stack:
            say(f"local stack up: {stack.server_name()} at {stack.url}, events in {stack.sink_url}")
            client = Coordinator.from_url(stack.url, namespace=NAMESPACE, sink_url=stack.sink_url)
            try:
                _act(client, stack.url, report, say)
                _drain(stack, report)
                _summarise(client, report)
            finally:
                client.close()
    report.seconds = time.monotonic() - started
    return report


def _act(client: Coordinator, url: str, report: DemoReport, say: Callable[[str], None]) -> None:
    sessions = {
        agent: client.start_session(agent, metadata={"demo": True}).session_id for agent in RACERS
    }
    sleeper = client.start_session(SLEEPER, ttl=SLEEPER_TTL)
    report.emitted[EventType.SESSION_STARTED.value] += len(RACERS) + 1
    say(f"sessions started for {', '.join(RACERS)}; {SLEEPER} (ttl {SLEEPER_TTL:g}s) never renews")

    ctx = multiprocessing.get_context("spawn")  # separate interpreters, as real servers
    race, half = ctx.Barrier(SERVERS), ctx.Barrier(SERVERS + 1)
    revoked, results = ctx.Event(), ctx.Queue()
    servers = [
        ctx.Process(target=_server, args=(url, i, sessions, race, half, revoked, results))
        for i in range(SERVERS)
    ]
    for process in servers:
        process.start()
    try:
        half.wait(STEP_TIMEOUT * 2)  # all servers finished the first half (spawn is slow)
        client.revoke_session(REVOKED, reason="demo: operator revoke")
        report.emitted[EventType.SESSION_REVOKED.value] += 1
        say(f"operator revoked {REVOKED}'s session while {SERVERS} server processes raced")
        revoked.set()
        outcomes = [results.get(timeout=STEP_TIMEOUT * 2) for _ in servers]
    finally:
        race.abort()  # a server that died must not leave the others waiting
        half.abort()
        for process in servers:
            process.join(STEP_TIMEOUT)
            if process.is_alive():
                process.kill()
    conflicts = sum(o["conflicts"] for o in outcomes)
    rejected = sum(o["rejected"] for o in outcomes)
    for outcome in outcomes:
        for agent, event_id in outcome["won"]:
            report.winners.setdefault(agent, set()).add(event_id)
    won = sum(len(ids) for ids in report.winners.values())
    report.emitted[WRITES] += won
    report.emitted[EventType.CONFLICT_DETECTED.value] += conflicts
    report.emitted[EventType.WRITE_REJECTED.value] += rejected
    say(
        f"{SERVERS} server processes raced {2 * ROUNDS} rounds on {len(RACERS)} agents: "
        f"{won} writes won, {conflicts} conflicts, {rejected} rejected after the revoke"
    )

    # The sleeper's lease lapses on the Redis clock; the worker's reaper audits it.
    _wait(lambda: bool(client.get_agent_events(SLEEPER, EventType.SESSION_EXPIRED.value)))
    report.emitted[EventType.SESSION_EXPIRED.value] += 1
    try:
        client.set_current_project(SLEEPER, "too-late", sleeper.session_id)
        report.problems.append(f"{SLEEPER}'s write after expiry was accepted")
    except SessionLeaseExpired as exc:
        report.emitted[EventType.WRITE_REJECTED.value] += 1
        say(f"{SLEEPER} stopped heartbeating: lease expired, late write refused ({exc.reason})")


def _drain(stack: LocalStack, report: DemoReport) -> None:
    """Wait until the worker has persisted as many events as were emitted (or the step
    timed out: the comparison then shows what is missing), then read what it stored."""
    expected = sum(report.emitted.values())
    with sink_from_url(stack.sink_url) as sink:
        with contextlib.suppress(TimeoutError):
            _wait(lambda: sink.count(NAMESPACE) >= expected)
        counts = sink.counts_by_type(NAMESPACE)
        for event in sink.events(NAMESPACE):
            if event.event_type.value in _WRITE_TYPES:
                report.persisted_writes.setdefault(event.agent_id, set()).add(event.stream_id)
    report.persisted = Counter({kind: n for kind, n in counts.items() if kind not in _WRITE_TYPES})
    report.persisted[WRITES] = sum(counts.get(kind, 0) for kind in _WRITE_TYPES)


def _summarise(client: Coordinator, report: DemoReport) -> None:
    report.server_time = client.server_time()
    report.leases = client.list_leases()
    agents = [*RACERS, SLEEPER]
    report.records = dict(zip(agents, client.get_current_projects(agents), strict=True))
    for agent in agents:
        record = report.records[agent]
        report.projects[agent] = (record.project_name, record.version) if record else (None, 0)
    report.ok = not report.check()


def _wait(predicate: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"a demo step did not complete within {timeout:g}s")
        time.sleep(0.02)
