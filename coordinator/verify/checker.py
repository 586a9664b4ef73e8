"""Linearizability of each agent's project record as a compare-and-set register.

The search is Wing & Gong's, with Lowe's cache of visited configurations (as in
Knossos and Porcupine): walk the history's call and return events in time order,
linearize any call that precedes the first pending return and is legal in the
current state, backtrack when a return is reached whose operation is not yet
linearized. An operation of unknown outcome has its return at the end of time and
may be linearized as applied or as not applied. The search is bounded by a step
budget, so a pathological history yields "inconclusive" instead of running forever.

The register's state is ``(project, version)``; ``(None, 0)`` is "no record".
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from coordinator.verify.history import NEVER, Operation

State = tuple[str | None, int]
INITIAL: State = (None, 0)

#: Search steps allowed per check before giving up as inconclusive.
DEFAULT_BUDGET = 2_000_000

Verdict = Literal["ok", "anomaly", "inconclusive"]


@dataclass(frozen=True)
class RegisterResult:
    verdict: Verdict
    steps: int
    #: On an anomaly: a short sub-history that is not linearizable by itself, and the
    #: state it starts from.
    witness: Sequence[Operation] = field(default_factory=tuple)
    initial: State = INITIAL


def register_ops(ops: Sequence[Operation]) -> list[Operation]:
    """The operations that constrain the register: writes that took effect or may have,
    conflicts (they report the current record) and successful reads."""
    kept = []
    for op in ops:
        if op.kind == "read":
            if op.outcome == "ok":
                kept.append(op)
        elif op.kind == "cas" and (op.outcome != "fail" or op.error == "conflict"):
            kept.append(op)
    return kept


def _steps(state: State, op: Operation) -> list[State]:
    """States the register may be in after ``op`` runs in ``state`` (empty: illegal)."""
    version = state[1]
    if op.kind == "read":
        return [state] if (op.project, op.version) == state else []
    matches = op.expected is None or op.expected == version
    if op.outcome == "ok":
        return [(op.project, version + 1)] if matches and op.version == version + 1 else []
    if op.outcome == "fail":  # a conflict: the stored record was the one reported
        return [state] if not matches and (op.project, op.version) == state else []
    # Unknown: applied (if its expectation held) or never applied.
    return [(op.project, version + 1), state] if matches else [state]


class _Entry:
    __slots__ = ("call", "match", "next", "op_index", "prev")

    def __init__(self, op_index: int, call: bool) -> None:
        self.op_index = op_index
        self.call = call
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _build(ops: Sequence[Operation]) -> _Entry:
    events: list[tuple[int, int, int]] = []  # (time, 0 = call / 1 = return, index)
    for i, op in enumerate(ops):
        events.append((op.invoke, 0, i))
        # Unknown outcomes return at the end of time. At equal times calls sort first:
        # two operations that touch in time are treated as concurrent.
        events.append((NEVER if op.outcome == "unknown" else op.complete, 1, i))
    events.sort()
    head = _Entry(-1, False)
    calls: dict[int, _Entry] = {}
    last = head
    for _, kind, index in events:
        entry = _Entry(index, kind == 0)
        if kind == 0:
            calls[index] = entry
        else:
            calls[index].match = entry
        entry.prev, last.next = last, entry
        last = entry
    return head


def _lift(entry: _Entry) -> None:
    for e in (entry, entry.match):
        assert e is not None
        assert e.prev is not None
        e.prev.next = e.next
        if e.next is not None:
            e.next.prev = e.prev


def _unlift(entry: _Entry) -> None:
    for e in (entry.match, entry):
        assert e is not None
        assert e.prev is not None
        e.prev.next = e
        if e.next is not None:
            e.next.prev = e


def linearizable(
    ops: Sequence[Operation], initial: State = INITIAL, budget: int = DEFAULT_BUDGET
) -> tuple[Verdict, int]:
    """Whether ``ops`` (register operations of one agent) have a linearization from
    ``initial``; returns the verdict and the search steps taken."""
    head = _build(ops)
    state = initial
    # The set of linearized operations, as a Zobrist hash: XOR of a random 128-bit
    # value per operation. Updating it is O(1) and a cache entry stays small, where a
    # bitset would cost O(n) per step and O(n^2) memory over a long history; two sets
    # collide with probability about steps^2 / 2^128.
    rng = random.Random(len(ops))
    zobrist = [rng.getrandbits(128) for _ in ops]
    linearized = 0
    cache: set[tuple[int, State]] = set()
    stack: list[tuple[_Entry, State]] = []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > budget:
            return "inconclusive", steps
        assert entry is not None
        if entry.call:
            bit = zobrist[entry.op_index]
            for candidate in _steps(state, ops[entry.op_index]):
                key = (linearized ^ bit, candidate)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, linearized = candidate, linearized ^ bit
                    _lift(entry)
                    entry = head.next
                    break
            else:
                entry = entry.next
        else:
            if not stack:
                return "anomaly", steps
            entry, state = stack.pop()
            linearized ^= zobrist[entry.op_index]
            _unlift(entry)
            # Try the same call again: the cache skips the alternative already explored.
    return "ok", steps


def check_register(
    ops: Sequence[Operation], initial: State = INITIAL, budget: int = DEFAULT_BUDGET
) -> RegisterResult:
    """Check one agent's history; on an anomaly, also find a short counter-example."""
    kept = register_ops(ops)
    verdict, steps = linearizable(kept, initial, budget)
    if verdict != "anomaly":
        return RegisterResult(verdict, steps)
    witness, start = shortest_counterexample(kept, initial, budget)
    return RegisterResult("anomaly", steps, tuple(witness), start)


def _prefix(ops: Sequence[Operation], t: int) -> list[Operation]:
    """The history as seen at time ``t``: operations still running become unknown
    (a pending read observed nothing anyone can check, so it is left out)."""
    seen = []
    for op in ops:
        if op.invoke > t:
            continue
        if op.complete > t and op.outcome != "unknown":
            if op.kind == "read" or op.outcome == "fail":
                continue
            seen.append(_pending(op))
        else:
            seen.append(op)
    return seen


def _pending(op: Operation) -> Operation:
    from dataclasses import replace

    return replace(op, outcome="unknown", complete=NEVER, version=None)


def shortest_counterexample(
    ops: Sequence[Operation], initial: State, budget: int
) -> tuple[list[Operation], State]:
    """A short non-linearizable sub-history of a non-linearizable ``ops``.

    1. The shortest failing prefix in time (binary search over completion times: a
       prefix of a linearizable history is linearizable).
    2. Its latest failing suffix after a quiet moment: a time no operation spans and
       before which every outcome is known, so the register's state there is the
       highest-versioned write's (the prefix before it is linearizable by step 1).
    3. Observers (reads, conflicts) whose removal keeps it failing are dropped: removing
       an observer never makes a linearizable history non-linearizable.
    """
    times = sorted({op.complete for op in ops if op.complete != NEVER})
    low, high = 0, len(times) - 1
    if not times or linearizable(_prefix(ops, times[-1]), initial, budget)[0] != "anomaly":
        return list(ops), initial
    while low < high:
        mid = (low + high) // 2
        if linearizable(_prefix(ops, times[mid]), initial, budget)[0] == "anomaly":
            high = mid
        else:
            low = mid + 1
    witness = _prefix(ops, times[low])
    start = initial
    for cut, state in reversed(_quiet_points(witness, initial)[-50:]):
        suffix = [op for op in witness if op.invoke > cut]
        if linearizable(suffix, state, budget)[0] == "anomaly":
            witness, start = suffix, state
            break
    if len(witness) <= 80:
        for op in list(witness):
            if op.kind == "read" or op.outcome == "fail":
                fewer = [o for o in witness if o is not op]
                if linearizable(fewer, start, budget)[0] == "anomaly":
                    witness = fewer
    return witness, start


def _quiet_points(ops: Sequence[Operation], initial: State) -> list[tuple[int, State]]:
    """Times no operation spans, with the register's state there, oldest first; none
    after the first operation of unknown outcome (its effect stays undecided)."""
    points: list[tuple[int, State]] = []
    state = initial
    latest_end = -1
    for op in sorted(ops, key=lambda o: o.invoke):
        if latest_end >= 0 and op.invoke > latest_end:
            points.append((latest_end, state))
        if op.outcome == "unknown":
            break
        latest_end = max(latest_end, op.complete)
        if op.kind == "cas" and op.outcome == "ok" and (op.version or 0) > state[1]:
            state = (op.project, op.version or 0)
    return points
