"""What the health page flags: the checks of ``coordinator health``
(:func:`coordinator.health.evaluate`, default thresholds), each given a level for
the page. Pure.

A failed check is ``unsafe`` when data can be lost or is not being persisted (an
evicting policy, persistence off, no live worker, dead letters), else ``warning``
(falling behind, near the memory limit); a passing one is ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from coordinator.health import Health, evaluate
from coordinator.stats import NamespaceStats

#: Checks whose failure means data can be lost, or is not being persisted.
UNSAFE_CHECKS: Final = frozenset({"eviction_policy", "persistence", "worker", "dead_letters"})


@dataclass(frozen=True, slots=True)
class Finding:
    level: str
    subject: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "subject": self.subject, "message": self.message}


def findings(health: Health) -> list[Finding]:
    """The checks, failures first (unsafe before warnings), then the passing ones."""
    found = []
    for check in health.checks:
        level = "ok" if check.ok else "unsafe" if check.name in UNSAFE_CHECKS else "warning"
        found.append(Finding(level, check.name.replace("_", " "), check.detail))
    order = {"unsafe": 0, "warning": 1, "ok": 2}
    return sorted(found, key=lambda f: order[f.level])


def health_of(stats: NamespaceStats) -> tuple[Health, list[Finding]]:
    health = evaluate(stats)
    return health, findings(health)
