"""Operation records of a verify run: what each client invoked, when, and how it ended.

Times are ``time.monotonic_ns()`` readings. On Linux that clock is system-wide, so
the records of separate client processes share one time line. An operation's
``outcome`` is ``ok`` (it took effect, or for a read: it observed ``value``),
``fail`` (it certainly did not take effect) or ``unknown`` (it may or may not have
taken effect, at any time after its invocation: a timeout or a lost connection).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["ok", "fail", "unknown"]
Kind = Literal[
    "start", "heartbeat", "end", "revoke", "cas", "read", "reap", "error", "reserve", "release"
]

#: Completion time of an operation whose outcome is unknown: it never completed.
NEVER = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation, from invocation to completion."""

    process: int
    seq: int
    kind: Kind
    agent: str
    invoke: int
    complete: int
    outcome: Outcome
    session_id: str | None = None
    fencing_token: int | None = None
    #: cas: the project written (None clears); read/conflict: the project observed.
    project: str | None = None
    #: cas: the expected version (None = unconditional).
    expected: int | None = None
    #: cas ok: the version written; read or conflict: the version observed (0 = none).
    version: int | None = None
    request_id: str | None = None
    #: fail: why (``conflict``, a lease reason, ``not_applied``, ``refused``).
    error: str | None = None
    #: cas ok: the audit event's stream id.
    event_id: str | None = None
    #: end/revoke ok: what the call answered; reap: how many it reaped.
    flag: int | None = None
    #: Set on a write the client made after it noticed it had been paused past its TTL.
    zombie: bool = False
    #: Retries merged into this operation (same request id).
    retries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self, origin: int = 0) -> str:
        """One line for people: process, call, outcome and times (ms from ``origin``)."""
        args = ""
        if self.kind == "cas":
            expected = "*" if self.expected is None else str(self.expected)
            wrote = self.extra.get("written") if self.error == "conflict" else self.project
            args = f"({wrote!r}, expected={expected}"
            args += f", rid={self.request_id})" if self.request_id else ")"
        elif self.kind == "read":
            args = "()"
        result: str = self.outcome
        if self.kind in ("cas", "read") and self.outcome == "ok":
            result += f" -> ({self.project!r}, v{self.version})"
        elif self.error == "conflict":
            result += f" conflict, current ({self.project!r}, v{self.version})"
        elif self.error:
            result += f" {self.error}"
        end = "..." if self.complete == NEVER else f"{(self.complete - origin) / 1e6:.1f}"
        session = f" token {self.fencing_token}" if self.fencing_token is not None else ""
        return (
            f"[{(self.invoke - origin) / 1e6:.1f} .. {end} ms] client {self.process} "
            f"{self.agent}{session} {self.kind}{args} {result}"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Operation:
        return cls(**json.loads(line))


def write_ops(path: Path, ops: Iterable[Operation]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for op in ops:
            fh.write(op.to_json() + "\n")


def read_ops(path: Path) -> Iterator[Operation]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield Operation.from_json(line)


def merge_retries(ops: Iterable[Operation]) -> list[Operation]:
    """Fold a client's re-sends of an unknown write (same request id) into one operation.

    A write retried with its request id takes effect at most once, somewhere between
    the first invocation and the last completion; the last attempt's answer (a replay
    of the first execution's reply, or a fresh execution) is the write's outcome. A
    write whose last attempt was unknown or certainly not sent stays unknown when an
    earlier attempt was unknown: that one may have been applied.
    """
    merged: list[Operation] = []
    by_rid: dict[tuple[str, str], int] = {}
    for op in sorted(ops, key=lambda o: o.invoke):
        if op.kind == "cas" and op.request_id is not None:
            key = (op.agent, op.request_id)
            at = by_rid.get(key)
            if at is not None:
                first = merged[at]
                folded = replace(op, invoke=first.invoke, seq=first.seq, retries=first.retries + 1)
                if first.outcome == "unknown" and op.error == "not_applied":
                    # This attempt never ran, but an earlier one may have.
                    folded = replace(folded, outcome="unknown", complete=NEVER, error=None)
                merged[at] = folded
                continue
            by_rid[key] = len(merged)
        merged.append(op)
    return merged
