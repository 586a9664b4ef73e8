"""``run_verify``: client processes, nemeses, then every check on what they recorded.

The target is a throwaway embedded ``redis-server`` (append-only persistence), or a
given Redis URL, where the run uses a fresh namespace ``verify-<random>`` and deletes
it afterwards: nothing outside that namespace is read or written.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import random
import secrets
import shutil
import signal
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from coordinator.client import Coordinator
from coordinator.errors import CoordinatorError, InvalidInputError
from coordinator.events import decode_entry
from coordinator.local.embedded import EmbeddedRedis
from coordinator.models import AgentEvent
from coordinator.settings import Settings
from coordinator.sinks import sink_from_url
from coordinator.timestamps import stream_id_key
from coordinator.verify.async_shell import run_async_clients
from coordinator.verify.checker import check_register
from coordinator.verify.history import NEVER, Operation, merge_retries, read_ops
from coordinator.verify.invariants import (
    Anomaly,
    compare_persisted,
    match_history,
    real_time,
    replay_stream,
)
from coordinator.verify.nemesis import NEMESES, Nemesis, NemesisRunner, Target
from coordinator.verify.report import VerifyReport, count_operations
from coordinator.verify.reservations import (
    check_reservations,
    reservation_summary,
    split_events,
)
from coordinator.verify.worker_process import WorkerProcess
from coordinator.verify.workload import ClientPlan, run_client
from coordinator.worker import ANOMALY_SHARD

log = logging.getLogger(__name__)

#: Seconds a client process may take to start (spawn, import, connect).
STARTUP_TIMEOUT = 60.0
SHELLS = ("sync", "async")


@dataclass(frozen=True)
class VerifyOptions:
    """What to run. ``redis_url=None``: a throwaway embedded redis-server."""

    duration: float = 10.0
    clients: int = 4
    redis_url: str | None = None
    #: The embedded server's binary (None: ``EmbeddedRedis``'s default).
    server_binary: Path | None = None
    #: Names from :data:`NEMESES` (``all``: every one the target supports).
    nemeses: Sequence[str] = ()
    seed: int | None = None
    lease_ttl: float = 1.0
    #: Agents shared by the clients (default: half the clients, at least 2).
    agents: int | None = None
    #: Reservation clients beside the others (each with an agent of its own).
    reservation_clients: int = 2
    #: Mean seconds between two faults.
    nemesis_interval: float = 2.0
    #: Run the event worker beside the clients, drain it at the end and check the
    #: persisted audit against the streams and the operations.
    worker: bool = True
    #: The worker's sink (default: a throwaway SQLite file). A given sink keeps the
    #: run's rows, under the run's namespace.
    sink_url: str | None = None
    #: ``sync``: one process and one ``Coordinator`` per client. ``async``: ``tasks``
    #: clients per process share one auto-pipelined ``AsyncCoordinator``.
    shell: str = "sync"
    tasks: int = 4

    def validate(self) -> None:
        if not 0 < self.duration <= 86_400:
            raise InvalidInputError("duration", "must be between 0 and 86400 seconds")
        if not 1 <= self.clients <= 64:
            raise InvalidInputError("clients", "must be from 1 to 64")
        if self.shell not in SHELLS:
            raise InvalidInputError("shell", f"must be one of {', '.join(SHELLS)}")
        if not 1 <= self.tasks <= 64:
            raise InvalidInputError("tasks", "must be from 1 to 64")
        if not 0 <= self.reservation_clients <= 64:
            raise InvalidInputError("reservation_clients", "must be from 0 to 64")
        if self.agents is not None and not 1 <= self.agents <= 1000:
            raise InvalidInputError("agents", "must be from 1 to 1000")
        if not 0.2 <= self.lease_ttl <= 60:
            raise InvalidInputError("lease_ttl", "must be between 0.2 and 60 seconds")
        if not 0.1 <= self.nemesis_interval <= 3600:
            raise InvalidInputError("nemesis_interval", "must be between 0.1 and 3600 seconds")
        for name in self.nemeses:
            if name != "all" and name not in NEMESES:
                raise InvalidInputError(
                    "nemesis", f"{name!r} is not one of all, {', '.join(NEMESES)}"
                )


def choose_nemeses(names: Sequence[str], target: Target) -> list[Nemesis]:
    """The nemeses named (``all``: each one the target supports); a named one the
    target cannot support is a usage error."""
    if "all" in names:
        made = [factory() for factory in NEMESES.values()]
        return [n for n in made if n.unavailable(target) is None]
    chosen = []
    for name in dict.fromkeys(names):
        nemesis = NEMESES[name]()
        why = nemesis.unavailable(target)
        if why is not None:
            raise InvalidInputError("nemesis", f"{name} {why}")
        chosen.append(nemesis)
    return chosen


def run_verify(options: VerifyOptions) -> VerifyReport:
    """Run the clients and nemeses, check everything recorded, return the report.

    Raises InvalidInputError for bad options, CoordinatorError when the target cannot
    be reached or started (operational failures during the run go into the report).
    """
    options.validate()
    seed = options.seed if options.seed is not None else random.randrange(2**31)
    with contextlib.ExitStack() as cleanup:
        folder = Path(tempfile.mkdtemp(prefix="coordinator-verify-"))
        cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        return _run(options, seed, folder, cleanup)
    raise AssertionError("unreachable")  # pragma: no cover


def _run(
    options: VerifyOptions, seed: int, folder: Path, cleanup: contextlib.ExitStack
) -> VerifyReport:
    namespace = f"verify-{secrets.token_hex(4)}"
    embedded: EmbeddedRedis | None = None
    if options.redis_url is None:
        embedded = EmbeddedRedis(
            folder / "redis", port=0, appendonly=True, binary=options.server_binary
        )
        embedded.start()
        cleanup.callback(embedded.stop)
        url = embedded.url
    else:
        url = options.redis_url
    settings = Settings.from_url(url, namespace=namespace, lease_ttl=options.lease_ttl)
    coordinator = Coordinator(settings)
    cleanup.callback(coordinator.close)
    coordinator.server_time()  # reachable? (raises CoordinatorUnavailable, AccessDenied)
    if embedded is None:
        cleanup.callback(_drop_namespace, coordinator)
    target_name = (
        f"embedded redis-server {'.'.join(map(str, embedded.version))}"
        if embedded is not None
        else settings.safe_redis_url
    )
    target = Target(lease_ttl=options.lease_ttl, embedded=embedded, raw=coordinator.redis)
    worker: WorkerProcess | None = None
    if options.worker:
        sink_url = options.sink_url or f"sqlite:///{folder / 'events.db'}"
        sink_from_url(sink_url).close()  # a bad URL is a usage error, before anything runs
        worker = WorkerProcess(settings, sink_url, folder / "worker.log")
        target.extras["worker"] = worker
    nemeses = choose_nemeses(options.nemeses, target)
    n_agents = options.agents or max(2, options.clients // 2)
    agents = tuple(f"agent-{i}" for i in range(n_agents))
    report = VerifyReport(
        seed=seed,
        target=target_name,
        namespace=namespace,
        duration=0.0,
        clients=options.clients,
        agents=n_agents,
        nemeses=[n.name for n in nemeses],
    )
    password = settings.password.get_secret_value() if settings.password else None
    plans = [
        ClientPlan(
            index=i,
            redis_url=settings.redis_url,
            password=password,
            namespace=namespace,
            agents=agents,
            lease_ttl=options.lease_ttl,
            duration=options.duration,
            seed=seed * 1000 + i,
            history=str(folder / f"client-{i}.jsonl"),
            # The project clients first, then the reservation clients.
            reservations=i >= options.clients,
        )
        for i in range(options.clients + options.reservation_clients)
    ]
    if worker is not None:
        worker.start()
        cleanup.callback(worker.kill)
    started = time.monotonic_ns()
    _run_clients(plans, target, nemeses, options, seed, report)
    report.duration = (time.monotonic_ns() - started) / 1e9
    if embedded is not None and not embedded.is_running():
        embedded.start()  # a restart nemesis stopped mid-way: the checks need the data

    ops: list[Operation] = []
    for plan in plans:
        path = Path(plan.history)
        if path.exists():
            ops += read_ops(path)
    ops += _final_reads(coordinator, agents, len(plans))  # a process index of its own
    report.operations = count_operations(ops)
    if worker is not None:
        events = _persisted_audit(coordinator, worker, report)
    else:
        events = read_audit(coordinator)
    report.audit_events = sum(len(e) for e in events.values())
    checking = time.monotonic()
    report.anomalies += check_all(ops, events, options.lease_ttl, origin=started)
    report.checks["checked in"] = f"{time.monotonic() - checking:.1f} s"
    if options.reservation_clients:
        report.checks["reservations"] = reservation_summary(ops, split_events(events)[1])
    zombies = [op for op in ops if op.zombie]
    if zombies:
        report.zombie_writes = {
            "attempted": len(zombies),
            "rejected": sum(1 for op in zombies if op.outcome == "fail"),
        }
    return report


def _run_clients(
    plans: Sequence[ClientPlan],
    target: Target,
    nemeses: Sequence[Nemesis],
    options: VerifyOptions,
    seed: int,
    report: VerifyReport,
) -> int:
    context = multiprocessing.get_context("spawn")
    ready: Any = context.Queue()
    go: Any = context.Event()
    if options.shell == "async":
        step = options.tasks
        groups = [tuple(plans[i : i + step]) for i in range(0, len(plans), step)]
        processes = [
            context.Process(target=run_async_clients, args=(group, ready, go), daemon=True)
            for group in groups
        ]
    else:
        processes = [
            context.Process(target=run_client, args=(plan, ready, go), daemon=True)
            for plan in plans
        ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=STARTUP_TIMEOUT)
    except queue.Empty:
        _stop_processes(processes)
        report.errors.append("client processes did not start")
        return len(processes)
    target.client_pids = [p.pid for p in processes if p.pid is not None]
    runner = NemesisRunner(nemeses, target, options.nemesis_interval, seed)
    go.set()
    runner.start()
    deadline = time.monotonic() + options.duration + 60
    try:
        for process in processes:
            process.join(max(0.1, deadline - time.monotonic()))
    finally:
        runner.stop()
        report.faults = runner.faults
        hung = _stop_processes(processes)
    for fault in runner.faults:
        if fault.error is not None:
            report.errors.append(f"nemesis {fault.nemesis} failed: {fault.error}")
    if hung:
        report.errors.append(f"{hung} client processes did not finish in time")
    for process in processes:
        if process.exitcode not in (0, None, -signal.SIGKILL):
            report.errors.append(f"a client process exited with code {process.exitcode}")
    return len(processes)


def _stop_processes(processes: Sequence[Any]) -> int:
    hung = 0
    for process in processes:
        if process.is_alive():
            hung += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.join(5)
    return hung


def _persisted_audit(
    coordinator: Coordinator,
    worker: WorkerProcess,
    report: VerifyReport,
) -> dict[str, list[AgentEvent]]:
    """Drain the worker, compare the sink with what is left in the streams; returns the
    full audit (the sink's events, plus stream entries it lacks, in stream order)."""
    try:
        worker.drain()
    except CoordinatorError as exc:
        report.errors.append(str(exc))
    stream = read_audit(coordinator)  # what the worker has not trimmed
    namespace = coordinator.settings.namespace
    with contextlib.closing(sink_from_url(worker.sink_url)) as sink:
        persisted = list(sink.events(namespace))
    raw = coordinator.redis()
    keys = coordinator.keys
    dead = sum(int(raw.xlen(keys.dead_letters(s))) for s in range(keys.shards))
    report.anomalies += compare_persisted(persisted, stream, dead, ANOMALY_SHARD)
    report.checks["persisted"] = (
        f"{len(persisted)} events in the sink, {sum(map(len, stream.values()))} still in "
        f"the streams; worker restarted {worker.restarts} times"
    )
    audit: dict[str, dict[tuple[int, str], AgentEvent]] = defaultdict(dict)
    for event in persisted:
        if event.shard != ANOMALY_SHARD:
            audit[event.agent_id][(event.shard, event.stream_id)] = event
    for agent, events in stream.items():
        for event in events:
            audit[agent].setdefault((event.shard, event.stream_id), event)
    return {
        agent: sorted(by_id.values(), key=lambda e: (e.shard, stream_id_key(e.stream_id)))
        for agent, by_id in audit.items()
    }


def _final_reads(coordinator: Coordinator, agents: Sequence[str], clients: int) -> list[Operation]:
    """Each agent's record read once everything is quiet: part of the checked history."""
    ops = []
    for seq, agent in enumerate(agents):
        invoke = time.monotonic_ns()
        record = coordinator.get_current_project(agent)
        ops.append(
            Operation(
                process=clients,
                seq=seq,
                kind="read",
                agent=agent,
                invoke=invoke,
                complete=time.monotonic_ns(),
                outcome="ok",
                project=None if record is None else record.project_name,
                version=0 if record is None else record.version,
            )
        )
    return ops


def read_audit(coordinator: Coordinator, page: int = 1000) -> dict[str, list[AgentEvent]]:
    """Every event of the namespace's shard streams, per agent, in stream order."""
    raw = coordinator.redis()
    events: dict[str, list[AgentEvent]] = defaultdict(list)
    keys = coordinator.keys
    for shard in range(keys.shards):
        low = "-"
        while True:
            entries: list[tuple[str, dict[str, Any]]] = raw.xrange(  # type: ignore[assignment]
                keys.stream(shard), low, "+", count=page
            )
            for entry_id, fields in entries:
                event = decode_entry(shard, entry_id, fields)
                events[event.agent_id].append(event)
            if len(entries) < page:
                break
            low = "(" + entries[-1][0]
    return dict(events)


def check_all(
    ops: Sequence[Operation],
    events: dict[str, list[AgentEvent]],
    lease_ttl: float,
    origin: int = 0,
) -> list[Anomaly]:
    """Every check on a recorded history and the audit stream (times in the evidence
    are milliseconds since ``origin``)."""
    merged = merge_retries(_since(op, origin) for op in ops)
    anomalies: list[Anomaly] = []
    events, scoped = split_events(events)  # reservation events: their scope's stream
    anomalies += check_reservations(merged, scoped)
    by_agent: dict[str, list[Operation]] = defaultdict(list)
    for op in merged:
        by_agent[op.agent].append(op)
    for agent, agent_ops in sorted(by_agent.items()):
        result = check_register(agent_ops)
        if result.verdict == "anomaly":
            project, version = result.initial
            evidence = (
                f"initial record: ({project!r}, v{version})",
                *(op.describe() for op in result.witness),
            )
            anomalies.append(
                Anomaly(
                    "linearizability",
                    agent,
                    "the project record's history is not linearizable",
                    evidence,
                )
            )
        elif result.verdict == "inconclusive":
            anomalies.append(
                Anomaly("inconclusive", agent, f"gave up after {result.steps} search steps")
            )
    for agent, agent_events in sorted(events.items()):
        anomalies += replay_stream(agent, agent_events)
    anomalies += match_history(merged, events)
    anomalies += real_time(merged, lease_ttl)
    return anomalies


def _since(op: Operation, origin: int) -> Operation:
    complete = op.complete if op.complete == NEVER else op.complete - origin
    return replace(op, invoke=op.invoke - origin, complete=complete)


def _drop_namespace(coordinator: Coordinator) -> None:
    """Delete the run's throwaway namespace (only its keys: they all carry its prefix)."""
    namespace = coordinator.settings.namespace
    raw = coordinator.redis()
    # Best effort: a failed clean-up must not hide the report (the keys are the run's own).
    with contextlib.suppress(CoordinatorError, RedisError, RedisClusterException):
        for pattern in (f"{{{namespace}:*", f"{namespace}:*"):
            for key in list(raw.scan_iter(match=pattern, count=1000)):
                raw.delete(key)


__all__ = ["VerifyOptions", "choose_nemeses", "run_verify"]
