"""Checks beyond linearizability, on the audit stream and the recorded history.

* The audit stream replayed per agent: fencing tokens strictly increase, a session
  starts only when none is live, every end/expiry/revoke/supersede names the live
  session, every accepted write comes from the live session with its token, versions
  rise by exactly one, conflicts report the stored version.
* The stream against the history, one for one: each write that succeeded has its
  event, each rejected attempt its rejection, an unknown one at most one event, and
  no event lacks an operation.
* Real time: no write accepted from a session whose lease had certainly run out
  (nobody renewed it for a TTL), or that its caller had seen ended or replaced;
  sessions started one after the other got increasing tokens.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from coordinator.models import AgentEvent, EventType
from coordinator.verify.history import Operation

WRITE_EVENTS = frozenset(
    {EventType.PROJECT_SET, EventType.PROJECT_SWITCHED, EventType.PROJECT_CLEARED}
)
SESSION_CLOSERS = frozenset(
    {
        EventType.SESSION_ENDED,
        EventType.SESSION_EXPIRED,
        EventType.SESSION_REVOKED,
        EventType.SESSION_SUPERSEDED,
    }
)
#: Slack between the client's monotonic clock and the server's wall clock (ns).
CLOCK_MARGIN_NS = 50_000_000


@dataclass(frozen=True)
class Anomaly:
    """One violated property, with the operations or events that show it."""

    kind: str
    agent: str | None
    message: str
    evidence: tuple[str, ...] = field(default_factory=tuple)


def describe_event(event: AgentEvent) -> str:
    parts = [f"{event.stream_id} {event.event_type.value}", f"session {event.session_id}"]
    if event.event_type in WRITE_EVENTS or event.event_type in (
        EventType.CONFLICT_DETECTED,
        EventType.WRITE_REJECTED,
    ):
        parts.append(
            f"{event.from_project!r} -> {event.to_project!r} "
            f"expected {event.expected_version} actual {event.actual_version}"
        )
    if event.error_message:
        parts.append(event.error_message)
    return ", ".join(parts)


def replay_stream(agent: str, events: Sequence[AgentEvent]) -> list[Anomaly]:
    """Replay one agent's audit events in stream order and check each against the
    state the earlier ones imply."""
    anomalies: list[Anomaly] = []
    live: str | None = None
    live_token = 0
    max_token = 0
    version = 0
    project: str | None = None
    closed: dict[str, str] = {}
    recent: list[str] = []

    def flag(kind: str, message: str, event: AgentEvent) -> None:
        anomalies.append(Anomaly(kind, agent, message, (*recent[-4:], describe_event(event))))

    for event in events:
        etype, sid = event.event_type, event.session_id
        if etype == EventType.SESSION_STARTED:
            token = event.fencing_token or 0
            if live is not None:
                flag("lifecycle", f"session started while {live} was live", event)
            if token <= max_token:
                flag("fencing", f"fencing token {token} after {max_token}", event)
            live, live_token, max_token = sid, token, max(max_token, token)
        elif etype in SESSION_CLOSERS:
            if sid != live:
                flag("lifecycle", f"{etype.value} of {sid}, but the live session is {live}", event)
            elif event.fencing_token != live_token:
                flag(
                    "fencing",
                    f"{etype.value} with token {event.fencing_token}, "
                    f"the session's is {live_token}",
                    event,
                )
            if sid is not None:
                closed[sid] = etype.value.removeprefix("session_")
            if sid == live:
                live = None
        elif etype in WRITE_EVENTS:
            if sid != live:
                why = closed.get(sid or "", "unknown")
                flag("stale_write", f"write accepted from a session that was {why}", event)
            elif event.fencing_token != live_token:
                flag("fencing", f"write with token {event.fencing_token}, live {live_token}", event)
            if event.actual_version != version + 1:
                flag("version", f"version {event.actual_version} after {version}", event)
            if (event.from_project or None) != project:
                flag("version", f"write from {event.from_project!r}, stored {project!r}", event)
            version = event.actual_version or version
            project = event.to_project
        elif etype == EventType.CONFLICT_DETECTED:
            if event.actual_version != version or event.expected_version == version:
                flag(
                    "version",
                    f"conflict reported version {event.actual_version}, stored {version}",
                    event,
                )
        elif etype == EventType.WRITE_REJECTED and sid == live:
            flag("lifecycle", "a write of the live session was rejected", event)
        recent.append(describe_event(event))
    return anomalies


def match_history(
    ops: Sequence[Operation], events: Mapping[str, Sequence[AgentEvent]]
) -> list[Anomaly]:
    """The audit stream against the recorded operations, one for one."""
    anomalies: list[Anomaly] = []
    by_key: dict[tuple[str, str | None, str | None, int | None], list[AgentEvent]]
    by_key = defaultdict(list)
    started: dict[str, list[AgentEvent]] = defaultdict(list)
    ended: Counter[str] = Counter()
    revoked: Counter[str] = Counter()
    for agent, evs in events.items():
        for e in evs:
            if e.event_type in WRITE_EVENTS or e.event_type in (
                EventType.CONFLICT_DETECTED,
                EventType.WRITE_REJECTED,
            ):
                by_key[(agent, e.session_id, e.to_project, e.expected_version)].append(e)
            elif e.event_type == EventType.SESSION_STARTED and e.session_id:
                started[agent].append(e)
            elif e.event_type == EventType.SESSION_ENDED and e.session_id:
                ended[e.session_id] += 1
            elif e.event_type == EventType.SESSION_REVOKED:
                revoked[agent] += 1

    writes: dict[tuple[str, str | None, str | None, int | None], list[Operation]]
    writes = defaultdict(list)
    for op in ops:
        if op.kind == "cas":
            writes[(op.agent, op.session_id, written(op), op.expected)].append(op)

    for key in set(by_key) | set(writes):
        evs, group = by_key.get(key, []), writes.get(key, [])
        anomalies += _match_writes(key[0], evs, group)

    starts: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.kind == "start":
            starts[op.agent].append(op)
    for agent in set(starts) | set(started):
        known = {op.session_id for op in starts[agent] if op.outcome == "ok"}
        events_by_sid = Counter(e.session_id for e in started[agent])
        for sid in known:
            if events_by_sid[sid] != 1:
                anomalies.append(
                    Anomaly(
                        "audit", agent, f"session {sid} started with {events_by_sid[sid]} events"
                    )
                )
        extra = sum(n for sid, n in events_by_sid.items() if sid not in known)
        maybe = sum(1 for op in starts[agent] if op.outcome == "unknown")
        if extra > maybe:
            anomalies.append(
                Anomaly(
                    "audit",
                    agent,
                    f"{extra} session starts in the audit "
                    f"but only {maybe} starts of unknown outcome",
                )
            )
    # Several processes may end one shared session: one ended it (an event), the
    # others were answered 1 ("already ended") or 0 (a newer session exists by then).
    ends: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.kind == "end" and op.session_id:
            ends[op.session_id].append(op)
    for sid, group in ends.items():
        n = ended[sid]
        said_yes = any(op.flag == 1 for op in group)
        unsure = any(op.outcome == "unknown" for op in group)
        # An end whose reply a connection failure lost is resent by the client; if a
        # newer session of the agent started in between, the resend answers 0 (the
        # documented ambiguity of end_session's result).
        agent = group[0].agent
        overtaken = any(
            start.session_id != sid and start.invoke < end.complete and start.complete > end.invoke
            for end in group
            for start in starts[agent]
        )
        if (
            n > 1
            or (said_yes and n == 0)
            or (n == 1 and not said_yes and not unsure and not overtaken)
        ):
            anomalies.append(
                Anomaly(
                    "audit",
                    group[0].agent,
                    f"session_ended events: {n}, but the ends of the session answered "
                    + ", ".join(str(op.flag) for op in group),
                    tuple(op.describe() for op in group),
                )
            )
    for agent in set(revoked) | {op.agent for op in ops if op.kind == "revoke"}:
        done = sum(1 for op in ops if op.kind == "revoke" and op.agent == agent and op.flag == 1)
        maybe = sum(
            1 for op in ops if op.kind == "revoke" and op.agent == agent and op.outcome == "unknown"
        )
        if not done <= revoked[agent] <= done + maybe:
            anomalies.append(
                Anomaly(
                    "audit",
                    agent,
                    f"{done} revokes answered True "
                    f"({maybe} unknown) but {revoked[agent]} revoke events",
                )
            )
    return anomalies


def written(op: Operation) -> str | None:
    """The project a write attempted (a conflict's record holds the stored one)."""
    if op.error == "conflict":
        value = op.extra.get("written")
        return value if isinstance(value, str) else None
    return op.project


def _match_writes(
    agent: str, events: Sequence[AgentEvent], ops: Sequence[Operation]
) -> list[Anomaly]:
    ok = [op for op in ops if op.outcome == "ok"]
    conflicts = [op for op in ops if op.error == "conflict"]
    rejected = [
        op for op in ops if op.outcome == "fail" and op.error not in ("conflict", "not_applied")
    ]
    unknown = [op for op in ops if op.outcome == "unknown"]
    successes = {e.stream_id: e for e in events if e.event_type in WRITE_EVENTS}
    n_conflict = sum(1 for e in events if e.event_type == EventType.CONFLICT_DETECTED)
    n_rejected = sum(1 for e in events if e.event_type == EventType.WRITE_REJECTED)
    evidence = tuple(op.describe() for op in ops) + tuple(describe_event(e) for e in events)
    found: list[Anomaly] = []
    for op in ok:
        event = successes.get(op.event_id or "")
        if event is None or event.actual_version != op.version:
            found.append(
                Anomaly("audit", agent, "a successful write has no matching audit event", evidence)
            )
    if (
        len(successes) < len(ok)
        or n_conflict < len(conflicts)
        or n_rejected < len(rejected)
        or len(events) > len(ok) + len(conflicts) + len(rejected) + len(unknown)
    ):
        found.append(
            Anomaly(
                "audit",
                agent,
                f"{len(events)} audit events for {len(ops)} "
                "write attempts do not match one for one",
                evidence,
            )
        )
    return found


def real_time(ops: Sequence[Operation], lease_ttl: float) -> list[Anomaly]:
    """Checks that need the clients' view of time."""
    anomalies: list[Anomaly] = []
    ttl_ns = int(lease_ttl * 1e9)
    renewals: dict[str, list[Operation]] = defaultdict(list)
    refused: dict[str, list[Operation]] = defaultdict(list)  # failed heartbeats (evidence)
    closed_by: dict[str, Operation] = {}
    starts: dict[str, list[Operation]] = defaultdict(list)
    # A start of unknown outcome has no session id (the token is minted on the server),
    # yet its session may live and be adopted by another client from the lease. Such a
    # session, whose start is in no record, was begun by one of these.
    unknown_starts: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.session_id and op.kind in ("start", "heartbeat"):
            (refused if op.outcome == "fail" else renewals)[op.session_id].append(op)
        if op.kind == "start" and op.outcome == "unknown":
            unknown_starts[op.agent].append(op)
        if op.kind == "start" and op.outcome == "ok":
            starts[op.agent].append(op)
        if op.kind == "end" and op.outcome == "ok" and op.session_id:
            first = closed_by.get(op.session_id)
            if first is None or op.complete < first.complete:
                closed_by[op.session_id] = op
        if op.kind == "error":
            anomalies.append(Anomaly("error", op.agent, f"unexpected error: {op.error}"))
    known = {op.session_id for op in ops if op.kind == "start" and op.session_id}
    newest_before = {agent: _Starts(group) for agent, group in starts.items()}
    for op in ops:
        if op.kind != "cas" or op.outcome != "ok" or not op.session_id:
            continue
        candidates = renewals[op.session_id]
        if op.session_id not in known:
            candidates = [*unknown_starts[op.agent], *candidates]
        # The lease's latest possible deadline: a renewal could have run as late as its
        # own completion (or the write's, if that came first).
        before = [r for r in candidates if r.invoke < op.complete]
        deadline = max((min(r.complete, op.complete) + ttl_ns for r in before), default=0)
        if op.invoke > deadline + CLOCK_MARGIN_NS:
            if deadline:
                why = f"{(op.invoke - deadline) / 1e6:.0f} ms past it"
            else:
                why = "no start or heartbeat of the session before it"
            if op.session_id not in known:
                why += "; its start is in no record"
            # The renewals that bound the deadline, and the session's heartbeats that
            # failed since (a renewal that did apply would explain the write).
            since = before[-3].invoke if len(before) >= 3 else 0
            failed = [r for r in refused[op.session_id] if since <= r.invoke < op.complete]
            shown = sorted([*before[-3:], *failed], key=lambda r: r.invoke)
            anomalies.append(
                Anomaly(
                    "stale_write",
                    op.agent,
                    f"write accepted after the lease had run out ({why})",
                    (*(r.describe() for r in shown), op.describe()),
                )
            )
        ended = closed_by.get(op.session_id)
        if ended is not None and ended.complete < op.invoke:
            anomalies.append(
                Anomaly(
                    "stale_write",
                    op.agent,
                    "write accepted after its session was ended",
                    (ended.describe(), op.describe()),
                )
            )
        newer = newest_before.get(op.agent, _NO_STARTS).before(op.invoke)
        if newer is not None and (newer.fencing_token or 0) > (op.fencing_token or 0):
            anomalies.append(
                Anomaly(
                    "stale_write",
                    op.agent,
                    "write accepted after a newer session had started",
                    (newer.describe(), op.describe()),
                )
            )
    for agent, group in starts.items():
        anomalies += _token_order(agent, group)
    return anomalies


class _Starts:
    """Successful starts of one agent: the highest-token one completed before a time."""

    def __init__(self, starts: Sequence[Operation]) -> None:
        ordered = sorted(starts, key=lambda o: o.complete)
        self.times = [o.complete for o in ordered]
        self.best: list[Operation] = []
        for op in ordered:
            if not self.best or (op.fencing_token or 0) > (self.best[-1].fencing_token or 0):
                self.best.append(op)
            else:
                self.best.append(self.best[-1])

    def before(self, t: int) -> Operation | None:
        i = bisect.bisect_left(self.times, t)
        return self.best[i - 1] if i else None


_NO_STARTS = _Starts(())


def _token_order(agent: str, starts: Iterable[Operation]) -> list[Anomaly]:
    """Sessions started one after the other must get increasing fencing tokens."""
    found: list[Anomaly] = []
    ordered = sorted(starts, key=lambda o: o.fencing_token or 0, reverse=True)
    seen: set[int] = set()
    earliest: Operation | None = None  # the higher-token start that completed first
    for op in ordered:
        token = op.fencing_token or 0
        if token in seen:
            found.append(
                Anomaly("fencing", agent, f"fencing token {token} minted twice", (op.describe(),))
            )
        seen.add(token)
        if earliest is not None and earliest.complete < op.invoke:
            found.append(
                Anomaly(
                    "fencing",
                    agent,
                    "a later session got a lower token",
                    (earliest.describe(), op.describe()),
                )
            )
        if earliest is None or op.complete < earliest.complete:
            earliest = op
    return found


def compare_persisted(
    persisted: Sequence[AgentEvent],
    stream: Mapping[str, Sequence[AgentEvent]],
    dead_letters: int,
    anomaly_shard: int,
) -> list[Anomaly]:
    """The sink after the worker drained: each event once, equal to its stream entry
    (for entries not trimmed yet), nothing dead-lettered, no regression the worker saw."""
    anomalies: list[Anomaly] = []
    seen: dict[tuple[int, str], AgentEvent] = {}
    for event in persisted:
        key = (event.shard, event.stream_id)
        if key in seen:
            anomalies.append(
                Anomaly(
                    "persisted", event.agent_id, "event persisted twice", (describe_event(event),)
                )
            )
        seen[key] = event
        if event.shard == anomaly_shard:
            anomalies.append(
                Anomaly(
                    "persisted",
                    event.agent_id,
                    f"the worker found: {event.error_message}",
                    (describe_event(event),),
                )
            )
    for events in stream.values():
        for event in events:
            stored = seen.get((event.shard, event.stream_id))
            if stored is None:
                anomalies.append(
                    Anomaly(
                        "persisted",
                        event.agent_id,
                        "a stream entry is not in the sink after the worker drained",
                        (describe_event(event),),
                    )
                )
            elif stored != event:
                anomalies.append(
                    Anomaly(
                        "persisted",
                        event.agent_id,
                        "the sink's copy differs from the stream entry",
                        (describe_event(event), describe_event(stored)),
                    )
                )
    if dead_letters:
        anomalies.append(Anomaly("persisted", None, f"{dead_letters} entries were dead-lettered"))
    return anomalies
