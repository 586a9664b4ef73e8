"""Reservation clients of ``coordinator verify`` and the checks of what they recorded.

Each reservation client holds a session of an agent of its own and reserves random,
overlapping sets of paths of one scope (exclusive or shared), releases them, lets some
lapse and now and then ends its session. Half the clients' agents share the scope's
shard, so ending their sessions releases their reservations in the same script; the
others' go right after, by the client or the worker's reaper. Checked afterwards:

* **Exclusion in real time**: never two conflicting holders at once. A reservation
  certainly granted before another claim began, and certainly still held after that
  claim was granted (its own release, invoked later, found it held), conflicts with
  nothing that claim was granted. Operations of unknown outcome constrain nothing.
* **Exclusion in the audit**: the scope's stream (one shard stream: a total order)
  replayed, no grant while a conflicting reservation is live.
* **Audited once**: each grant has exactly one ``reservation_granted`` event (with its
  token and resources) and at most one end (released or expired); each release that
  answered True has its ``reservation_released`` event by the holder; no grant event
  lacks an operation except for claims of unknown outcome.
* **Fencing**: tokens strictly increase in stream order, and a claim granted after
  another completed got a larger token.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from coordinator.errors import (
    CoordinatorUnavailable,
    ReservationConflict,
    SessionLeaseExpired,
)
from coordinator.keys import KeySpace
from coordinator.models import AgentEvent, EventType
from coordinator.validation import overlapping, resource_key
from coordinator.verify.history import Operation
from coordinator.verify.invariants import Anomaly
from coordinator.verify.workload import Client

#: The one scope the reservation clients share, and the paths they claim.
SCOPE = "verify-scope"
POOL = ("src/", "src/a.py", "src/b.py", "src/lib/", "src/lib/c.py", "docs/", "docs/x.md", "db")

RESERVATION_EVENTS = frozenset(
    {
        EventType.RESERVATION_GRANTED,
        EventType.RESERVATION_REFUSED,
        EventType.RESERVATION_RELEASED,
        EventType.RESERVATION_EXPIRED,
    }
)


def conflicting(a_mode: str, a: Sequence[str], b_mode: str, b: Sequence[str]) -> bool:
    if a_mode == "shared" and b_mode == "shared":
        return False
    return any(overlapping(resource_key(x), resource_key(y)) for x in a for y in b)


def agent_of(index: int, keys: KeySpace) -> str:
    """The agent of reservation client ``index``: of the scope's shard for even indexes
    (its session's end releases its reservations in the same script), of another shard
    for odd ones (the client or the worker's reaper releases them after)."""
    same = index % 2 == 0
    for attempt in range(10_000):
        name = f"rsv-{index}" if attempt == 0 else f"rsv-{index}-{attempt}"
        if (keys.shard_of(name) == keys.shard_of(SCOPE)) == same or keys.shards == 1:
            return name
    raise AssertionError("no agent name for the shard")  # pragma: no cover


class ReservationClient(Client):
    """A client of one agent of its own that reserves and releases (see the module)."""

    def __init__(self, plan: Any, coordinator: Any) -> None:
        super().__init__(plan, coordinator)
        self.agent = agent_of(plan.index, coordinator.keys)
        #: Reservations this client holds: id -> (session id, resources, mode).
        self.held: dict[str, tuple[str, list[str], str]] = {}

    def step(self) -> None:
        rng = self.rng
        if self.agent not in self.sessions:
            self.held.clear()
            self.start()
            return
        roll = rng.random()
        if roll < 0.45:
            self.reserve()
        elif roll < 0.80:
            self.release()
        elif roll < 0.97:
            self.heartbeat()
        else:
            self.end()

    def reserve(self) -> None:
        rng = self.rng
        sid, token = self.sessions[self.agent]
        claim: list[str] = []
        for name in rng.sample(POOL, rng.randint(1, 3)):
            if not any(overlapping(resource_key(name), resource_key(o)) for o in claim):
                claim.append(name)
        mode = "shared" if rng.random() < 0.3 else "exclusive"
        wait = 0.2 if rng.random() < 0.2 else None
        fields: dict[str, Any] = {"session_id": sid, "fencing_token": token}
        extra: dict[str, Any] = {"scope": SCOPE, "resources": claim, "mode": mode}
        invoke = time.monotonic_ns()
        try:
            held = self.c.reserve(self.agent, sid, SCOPE, claim, mode=mode, wait=wait)
        except ReservationConflict:
            self.record("reserve", invoke, "fail", error="conflict", extra=extra, **fields)
            return
        except SessionLeaseExpired as exc:
            self.record("reserve", invoke, "fail", error=exc.reason, extra=extra, **fields)
            self._replace(self.agent, None)
            return
        except CoordinatorUnavailable as exc:
            outcome = "unknown" if exc.maybe_applied else "fail"
            error = None if exc.maybe_applied else "not_applied"
            self.record("reserve", invoke, outcome, error=error, extra=extra, **fields)
            return
        extra.update(rid=held.reservation_id, token=held.fencing_token)
        self.record("reserve", invoke, "ok", extra=extra, **fields)
        self.held[held.reservation_id] = (sid, claim, mode)

    def release(self) -> None:
        if not self.held:
            self.reserve()
            return
        rid = self.rng.choice(sorted(self.held))
        sid, _, _ = self.held.pop(rid)
        invoke = time.monotonic_ns()
        extra = {"scope": SCOPE, "rid": rid}
        try:
            done = self.c.release(self.agent, sid, rid)
        except CoordinatorUnavailable:
            self.record("release", invoke, "unknown", session_id=sid, extra=extra)
            return
        self.record("release", invoke, "ok", session_id=sid, flag=int(done), extra=extra)


# --- checks ---------------------------------------------------------------------------


def split_events(
    events: dict[str, list[AgentEvent]],
) -> tuple[dict[str, list[AgentEvent]], list[AgentEvent]]:
    """The per-agent audit without reservation events, and the reservation events in
    stream order (they live in their scope's shard stream, not the agent's)."""
    rest: dict[str, list[AgentEvent]] = {}
    scoped: list[AgentEvent] = []
    for agent, agent_events in events.items():
        kept: list[AgentEvent] = []
        for event in agent_events:
            (scoped if event.event_type in RESERVATION_EVENTS else kept).append(event)
        if kept:
            rest[agent] = kept
    scoped.sort(key=lambda e: (e.shard, tuple(int(p) for p in e.stream_id.split("-"))))
    return rest, scoped


def _describe(op: Operation) -> str:
    extra = op.extra
    what = f"{extra.get('mode', '')} {extra.get('resources', '')} id {extra.get('rid')}"
    return f"{op.describe()} {what}"


def check_reservations(ops: Sequence[Operation], events: Sequence[AgentEvent]) -> list[Anomaly]:
    """Every reservation check (see the module) on the history and the scope's audit."""
    anomalies: list[Anomaly] = []
    grants = [op for op in ops if op.kind == "reserve" and op.outcome == "ok"]
    unknown = sum(1 for op in ops if op.kind == "reserve" and op.outcome == "unknown")
    releases = {
        op.extra["rid"]: op
        for op in ops
        if op.kind == "release" and op.outcome == "ok" and op.flag == 1
    }

    # Exclusion in real time: A granted before B began, A's release (which found it
    # held) invoked after B was granted.
    spans = sorted(
        (a.complete, releases[a.extra["rid"]].invoke, a)
        for a in grants
        if a.extra["rid"] in releases
    )
    starts = [s for s, _, _ in spans]
    for b in grants:
        for _, end, a in spans[: bisect.bisect_left(starts, b.invoke)]:
            if (
                end > b.complete
                and a is not b
                and conflicting(
                    a.extra["mode"], a.extra["resources"], b.extra["mode"], b.extra["resources"]
                )
            ):
                anomalies.append(
                    Anomaly(
                        "reservation_exclusion",
                        b.agent,
                        "granted while a conflicting reservation was certainly held",
                        (_describe(a), _describe(releases[a.extra["rid"]]), _describe(b)),
                    )
                )

    # Fencing in real time.
    by_complete = sorted(grants, key=lambda o: o.complete)
    completes = [o.complete for o in by_complete]
    for b in grants:
        for a in by_complete[: bisect.bisect_left(completes, b.invoke)]:
            if a.extra["token"] >= b.extra["token"]:
                anomalies.append(
                    Anomaly(
                        "reservation_fencing",
                        b.agent,
                        f"token {b.extra['token']} granted after token {a.extra['token']}",
                        (_describe(a), _describe(b)),
                    )
                )
                break

    # The audit replayed in stream order.
    live: dict[str, dict[str, Any]] = {}
    granted: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    released_by_holder: set[str] = set()
    metas: dict[str, dict[str, Any]] = {}
    last_token = 0
    for event in events:
        meta = event.metadata or {}
        rid = str(meta.get("reservation_id", ""))
        etype = event.event_type
        if etype == EventType.RESERVATION_GRANTED:
            granted[rid] += 1
            metas[rid] = meta
            clash = [
                other
                for other in live.values()
                if conflicting(other["mode"], other["resources"], meta["mode"], meta["resources"])
            ]
            if clash:
                anomalies.append(
                    Anomaly(
                        "reservation_exclusion",
                        event.agent_id,
                        "the audit grants a reservation while a conflicting one is live",
                        (f"{event.stream_id} {meta}", *(str(c) for c in clash[:3])),
                    )
                )
            if int(meta["token"]) <= last_token:
                anomalies.append(
                    Anomaly(
                        "reservation_fencing",
                        event.agent_id,
                        f"token {meta['token']} after {last_token} in the scope's stream",
                        (f"{event.stream_id} {meta}",),
                    )
                )
            last_token = max(last_token, int(meta["token"]))
            live[rid] = meta
        elif etype in (EventType.RESERVATION_RELEASED, EventType.RESERVATION_EXPIRED):
            ended[rid] += 1
            if live.pop(rid, None) is None:
                anomalies.append(
                    Anomaly(
                        "reservation_audit",
                        event.agent_id,
                        f"{etype.value} of {rid}, which is not live",
                        (f"{event.stream_id} {meta}",),
                    )
                )
            if etype == EventType.RESERVATION_RELEASED and meta.get("by") == "holder":
                released_by_holder.add(rid)

    for rid, count in granted.items():
        if count > 1:
            anomalies.append(Anomaly("reservation_audit", None, f"{rid} granted {count} times"))
    for rid, count in ended.items():
        if count > 1:
            anomalies.append(Anomaly("reservation_audit", None, f"{rid} ended {count} times"))
    recorded = set()
    for op in grants:
        rid = op.extra["rid"]
        recorded.add(rid)
        found = metas.get(rid)
        if found is None:
            anomalies.append(
                Anomaly(
                    "reservation_audit", op.agent, "a grant without its event", (_describe(op),)
                )
            )
        elif (
            int(found["token"]) != op.extra["token"] or found["resources"] != op.extra["resources"]
        ):
            anomalies.append(
                Anomaly(
                    "reservation_audit",
                    op.agent,
                    "the grant's event names another token or other resources",
                    (_describe(op), str(found)),
                )
            )
    for rid, op in releases.items():
        if rid not in released_by_holder:
            anomalies.append(
                Anomaly(
                    "reservation_audit",
                    op.agent,
                    "a release that answered True has no release event by the holder",
                    (_describe(op),),
                )
            )
    orphans = len(set(granted) - recorded)
    if orphans > unknown:
        anomalies.append(
            Anomaly(
                "reservation_audit",
                None,
                f"{orphans} grant events without an operation, but only {unknown} claims "
                "of unknown outcome",
            )
        )
    return anomalies


def reservation_summary(ops: Sequence[Operation], events: Sequence[AgentEvent]) -> str:
    counts = Counter(e.event_type.value.removeprefix("reservation_") for e in events)
    done = Counter(op.outcome for op in ops if op.kind == "reserve")
    return (
        f"{done['ok']} granted, {done['fail']} refused, {done['unknown']} unknown; audit: "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    )


__all__ = [
    "ReservationClient",
    "check_reservations",
    "reservation_summary",
    "split_events",
]
