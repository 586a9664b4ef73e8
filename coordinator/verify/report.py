"""The outcome of a verify run, for people (text) and for scripts (JSON)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from coordinator.verify.history import Operation
from coordinator.verify.invariants import Anomaly
from coordinator.verify.nemesis import Fault


@dataclass
class VerifyReport:
    """What a run did and found. ``ok`` is True only when no anomaly was found and
    nothing failed operationally (a fault that could not be injected, a client that
    crashed, a check that could not finish)."""

    seed: int
    target: str
    namespace: str
    duration: float
    clients: int
    agents: int
    nemeses: list[str]
    #: Operations by kind and outcome: ``{"cas": {"ok": 10, "fail": 3, "unknown": 1}}``.
    operations: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    #: Operational failures (the run itself went wrong; not a finding about the system).
    errors: list[str] = field(default_factory=list)
    audit_events: int = 0
    #: Writes made right after a client noticed it had been paused past its TTL.
    zombie_writes: dict[str, int] = field(default_factory=dict)
    #: Extra results (e.g. the persisted-audit comparison).
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.anomalies and not self.errors

    @property
    def verdict(self) -> str:
        if self.anomalies:
            return "anomalies found"
        return "failed to run" if self.errors else "no anomalies"

    @property
    def total_operations(self) -> int:
        return sum(sum(by.values()) for by in self.operations.values())

    def counterexample(self) -> Anomaly | None:
        """The anomaly with the shortest evidence (the easiest one to read)."""
        if not self.anomalies:
            return None
        return min(self.anomalies, key=lambda a: (len(a.evidence) or 10**9, a.kind))

    def fault_counts(self) -> dict[str, int]:
        return dict(Counter(f.nemesis for f in self.faults if f.error is None))

    def to_dict(self) -> dict[str, Any]:
        shortest = self.counterexample()
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "seed": self.seed,
            "target": self.target,
            "namespace": self.namespace,
            "duration_seconds": round(self.duration, 3),
            "clients": self.clients,
            "agents": self.agents,
            "nemeses": self.nemeses,
            "operations_total": self.total_operations,
            "operations": self.operations,
            "faults_injected": self.fault_counts(),
            "faults": [asdict(f) for f in self.faults],
            "audit_events": self.audit_events,
            "zombie_writes": self.zombie_writes,
            "checks": self.checks,
            "anomalies": [asdict(a) for a in self.anomalies],
            "counterexample": None if shortest is None else asdict(shortest),
            "errors": self.errors,
        }

    def render(self) -> str:
        lines = [
            f"verify: {self.verdict}",
            f"  target      {self.target} (namespace {self.namespace}, seed {self.seed})",
            f"  ran         {self.duration:.1f} s, {self.clients} clients, {self.agents} agents",
            f"  operations  {self.total_operations}: "
            + ", ".join(
                f"{kind} {sum(by.values())} ("
                + " ".join(f"{k} {v}" for k, v in sorted(by.items()))
                + ")"
                for kind, by in sorted(self.operations.items())
            ),
            "  faults      "
            + (", ".join(f"{n} x{c}" for n, c in sorted(self.fault_counts().items())) or "none"),
            f"  audit       {self.audit_events} events checked",
        ]
        if self.zombie_writes:
            lines.append(
                "  zombies     "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.zombie_writes.items()))
            )
        for name, value in sorted(self.checks.items()):
            lines.append(f"  {name:<11} {value}")
        for error in self.errors:
            lines.append(f"  error: {error}")
        if self.anomalies:
            kinds = Counter(a.kind for a in self.anomalies)
            lines.append(
                f"  anomalies   {len(self.anomalies)}: "
                + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
            )
            shortest = self.counterexample()
            assert shortest is not None
            lines.append(f"shortest counter-example ({shortest.kind}, agent {shortest.agent}):")
            lines.append(f"  {shortest.message}")
            lines += [f"    {line}" for line in shortest.evidence]
        return "\n".join(lines)


def count_operations(ops: Sequence[Operation]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for op in ops:
        counts.setdefault(op.kind, Counter())[op.outcome] += 1
    return {kind: dict(c) for kind, c in counts.items()}
