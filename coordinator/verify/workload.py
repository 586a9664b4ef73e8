"""One verify client: a process doing random operations and recording every one.

Agents are shared by all clients, and so are sessions: a client may adopt the live
session of an agent (read from its lease), as the several tool-server processes of
one agent do, so compare-and-set writes of different processes race on one record.
Each operation is appended to the client's history file as soon as it completes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.client import Coordinator
from coordinator.errors import (
    ConflictError,
    CoordinatorError,
    CoordinatorUnavailable,
    SessionAlreadyActive,
    SessionLeaseExpired,
)
from coordinator.verify.history import NEVER, Kind, Operation, write_ops

#: How often a client re-sends a write of unknown outcome with its request id.
RESENDS = 3


@dataclass(frozen=True)
class ClientPlan:
    """What one client process does (picklable: it crosses the process boundary)."""

    index: int
    redis_url: str
    password: str | None
    namespace: str
    agents: tuple[str, ...]
    lease_ttl: float
    duration: float
    seed: int
    history: str
    #: Pause between operations (s), so clients interleave instead of spinning.
    think: float = 0.004
    #: A reservation client (``coordinator.verify.reservations``) instead.
    reservations: bool = False


class Client:
    """Random session and project operations against one namespace, all recorded."""

    def __init__(self, plan: ClientPlan, coordinator: Coordinator) -> None:
        self.plan = plan
        self.c = coordinator
        self.rng = random.Random(plan.seed)
        self.path = Path(plan.history)
        self.seq = 0
        #: Session the client currently acts with, per agent, and its token.
        self.sessions: dict[str, tuple[str, int]] = {}
        #: Sessions of this client that ended or were replaced (for stale writes).
        self.old_sessions: list[tuple[str, str, int]] = []
        #: Last version this client saw per agent (to build expected versions).
        self.seen: dict[str, int] = {}
        self.agent = self.rng.choice(plan.agents)

    # --- recording ------------------------------------------------------------------

    def record(self, kind: Kind, invoke: int, outcome: str, **fields: Any) -> Operation:
        complete = NEVER if outcome == "unknown" else time.monotonic_ns()
        self.seq += 1
        op = Operation(
            process=self.plan.index,
            seq=self.seq,
            kind=kind,
            agent=fields.pop("agent", self.agent),
            invoke=invoke,
            complete=complete,
            outcome=outcome,  # type: ignore[arg-type]
            **fields,
        )
        write_ops(self.path, [op])
        return op

    # --- the loop -------------------------------------------------------------------

    def run(self) -> None:
        deadline = time.monotonic() + self.plan.duration
        last = time.monotonic()
        while time.monotonic() < deadline:
            now = time.monotonic()
            # Stopped past the lease TTL (the pause nemesis): write with the old session
            # at once, as a process that does not know it was frozen would.
            zombie = now - last > self.plan.lease_ttl * 1.2 and self.agent in self.sessions
            last = now
            try:
                if zombie:
                    self.cas(zombie=True)
                else:
                    self.step()
            except CoordinatorError as exc:  # an outcome the workload did not expect
                self.record("error", time.monotonic_ns(), "fail", error=repr(exc))
            time.sleep(self.rng.uniform(0, self.plan.think))

    def step(self) -> None:
        rng = self.rng
        if rng.random() < 0.05:
            self.agent = rng.choice(self.plan.agents)
        if self.agent not in self.sessions:
            if rng.random() < 0.5 and self.adopt():
                return
            self.start()
            return
        roll = rng.random()
        if roll < 0.45:
            self.cas()
        elif roll < 0.60:
            self.read()
        elif roll < 0.78:
            self.heartbeat()
        elif roll < 0.82:
            self.end()
        elif roll < 0.87:
            self.start()
        elif roll < 0.92:
            self.stale_write()
        elif roll < 0.94:
            self.revoke()
        elif roll < 0.95:
            self.reap()
        else:
            self.adopt()

    # --- operations -----------------------------------------------------------------

    def adopt(self) -> bool:
        """Act with the agent's live session, as another process of the agent would."""
        try:
            leases = self.c.list_leases(self.agent)
        except CoordinatorUnavailable:
            return False
        if not leases:
            return False
        self._replace(self.agent, (leases[0].session_id, leases[0].fencing_token))
        return True

    def _replace(self, agent: str, session: tuple[str, int] | None) -> None:
        old = self.sessions.pop(agent, None)
        if old is not None:
            self.old_sessions = [*self.old_sessions[-7:], (agent, *old)]
        if session is not None:
            self.sessions[agent] = session

    def start(self) -> None:
        exclusive = self.rng.random() < 0.1
        invoke = time.monotonic_ns()
        try:
            s = self.c.start_session(self.agent, {"client": self.plan.index}, exclusive=exclusive)
        except SessionAlreadyActive:
            self.record("start", invoke, "fail", error="refused")
            self.adopt()
            return
        except CoordinatorUnavailable as exc:
            self.record(
                "start",
                invoke,
                "unknown" if exc.maybe_applied else "fail",
                error="not_applied" if not exc.maybe_applied else None,
            )
            return
        self.record("start", invoke, "ok", session_id=s.session_id, fencing_token=s.fencing_token)
        self._replace(self.agent, (s.session_id, s.fencing_token))

    def heartbeat(self) -> None:
        sid, token = self.sessions[self.agent]
        invoke = time.monotonic_ns()
        fields: dict[str, Any] = {"session_id": sid, "fencing_token": token}
        try:
            self.c.heartbeat_session(sid)
        except SessionLeaseExpired as exc:
            self.record("heartbeat", invoke, "fail", error=exc.reason, **fields)
            self._replace(self.agent, None)
            return
        except CoordinatorUnavailable:
            self.record("heartbeat", invoke, "unknown", **fields)
            return
        self.record("heartbeat", invoke, "ok", **fields)

    def end(self) -> None:
        sid, token = self.sessions[self.agent]
        invoke = time.monotonic_ns()
        fields: dict[str, Any] = {"session_id": sid, "fencing_token": token}
        try:
            ended = self.c.end_session(self.agent, sid)
        except CoordinatorUnavailable:
            self.record("end", invoke, "unknown", **fields)
            return
        self.record("end", invoke, "ok", flag=int(ended), **fields)
        self._replace(self.agent, None)

    def revoke(self) -> None:
        agent = self.rng.choice(self.plan.agents)
        invoke = time.monotonic_ns()
        try:
            revoked = self.c.revoke_session(agent, "verify")
        except CoordinatorUnavailable:
            self.record("revoke", invoke, "unknown", agent=agent)
            return
        self.record("revoke", invoke, "ok", agent=agent, flag=int(revoked))

    def reap(self) -> None:
        invoke = time.monotonic_ns()
        try:
            reaped = self.c.cleanup_expired_sessions()
        except CoordinatorUnavailable:
            self.record("reap", invoke, "unknown")
            return
        self.record("reap", invoke, "ok", flag=reaped)

    def read(self) -> None:
        invoke = time.monotonic_ns()
        try:
            record = self.c.get_current_project(self.agent)
        except CoordinatorUnavailable:
            return  # a read that returned nothing constrains nothing
        version = 0 if record is None else record.version
        project = None if record is None else record.project_name
        self.seen[self.agent] = version
        self.record("read", invoke, "ok", project=project, version=version)

    def stale_write(self) -> None:
        """Write with one of this client's ended or replaced sessions: must be rejected
        unless that session is still the agent's live one."""
        if not self.old_sessions:
            return
        agent, sid, token = self.rng.choice(self.old_sessions)
        self.cas(agent=agent, session=(sid, token))

    def cas(
        self,
        *,
        zombie: bool = False,
        agent: str | None = None,
        session: tuple[str, int] | None = None,
    ) -> None:
        rng = self.rng
        agent = agent or self.agent
        sid, token = session or self.sessions[agent]
        project = None if rng.random() < 0.05 else f"p{self.plan.index}-{self.seq + 1}"
        roll = rng.random()
        expected: int | None
        if roll < 0.4:
            expected = None
        elif roll < 0.9:
            expected = self.seen.get(agent, 0)
        else:
            expected = max(0, self.seen.get(agent, 0) + rng.choice((-1, 1, 2)))
        rid = f"r{self.plan.index}-{self.seq + 1}" if rng.random() < 0.5 else None
        fields: dict[str, Any] = {
            "agent": agent,
            "session_id": sid,
            "fencing_token": token,
            "expected": expected,
            "request_id": rid,
            "zombie": zombie,
        }
        for attempt in range(RESENDS + 1):
            invoke = time.monotonic_ns()
            try:
                record = self.c.set_current_project(
                    agent, project, sid, expected_version=expected, request_id=rid
                )
            except ConflictError as exc:
                current = exc.current
                version = 0 if current is None else current.version
                self.seen[agent] = version
                self.record(
                    "cas",
                    invoke,
                    "fail",
                    error="conflict",
                    version=version,
                    project=None if current is None else current.project_name,
                    extra={"written": project},
                    **fields,
                )
                return
            except SessionLeaseExpired as exc:
                self.record("cas", invoke, "fail", error=exc.reason, project=project, **fields)
                if session is None and self.sessions.get(agent, (None,))[0] == sid:
                    self._replace(agent, None)
                return
            except CoordinatorUnavailable as exc:
                if not exc.maybe_applied:
                    self.record(
                        "cas", invoke, "fail", error="not_applied", project=project, **fields
                    )
                    return
                self.record("cas", invoke, "unknown", project=project, **fields)
                if rid is None or attempt == RESENDS:
                    return
                time.sleep(rng.uniform(0.05, 0.3))
                continue
            self.seen[agent] = record.version
            self.record(
                "cas",
                invoke,
                "ok",
                project=project,
                version=record.version,
                event_id=record.event_id,
                **fields,
            )
            return


def connect_options() -> dict[str, Any]:
    """Timeouts and retries of a verify client (short: faults are the point)."""
    return {
        "socket_timeout": 1.0,
        "connect_timeout": 1.0,
        "retry_attempts": 5,
        "retry_backoff": 0.05,
        "retry_backoff_cap": 0.5,
    }


def run_client(plan: ClientPlan, ready: Any, go: Any) -> None:
    """Process entry point: connect, report ready, wait for the start, run."""
    coordinator = Coordinator.from_url(
        plan.redis_url,
        password=plan.password,
        namespace=plan.namespace,
        lease_ttl=plan.lease_ttl,
        **connect_options(),
    )
    try:
        coordinator.server_time()  # connect (and load the scripts) before the clock runs
        ready.put(plan.index)
        go.wait()
        if plan.reservations:
            from coordinator.verify.reservations import ReservationClient

            ReservationClient(plan, coordinator).run()
        else:
            Client(plan, coordinator).run()
    finally:
        coordinator.close()
