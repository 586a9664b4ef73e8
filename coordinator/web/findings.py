"""What the health page flags in a ``coordinator status`` snapshot (pure).

Each finding has a level: ``unsafe`` (the server may lose or evict data, events are
not being persisted, or were lost to dead letters), ``warning`` (falling behind, near
the memory limit, a setting unknown) or ``ok``. The thresholds are the page's
own defaults, stated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from coordinator.shapes import duration
from coordinator.stats import NamespaceStats

#: Oldest unacknowledged entry older than this: the worker is stuck or too slow (s).
PENDING_AGE_WARNING: Final = 60.0
#: Entries not yet delivered to the worker above this: it is falling behind.
LAG_WARNING: Final = 10_000


@dataclass(frozen=True, slots=True)
class Finding:
    level: str
    subject: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "subject": self.subject, "message": self.message}


#: Server warnings (:func:`coordinator.server.server_warnings`) that mean data can be
#: lost, not only refused: shown as unsafe, the others as warnings.
_UNSAFE_SERVER = ("maxmemory-policy is", "persistence is off", "appendfsync is no")


def findings(stats: NamespaceStats) -> list[Finding]:
    found = []
    for warning in stats.warnings:
        level = "unsafe" if any(mark in warning for mark in _UNSAFE_SERVER) else "warning"
        found.append(Finding(level, "server", warning))
    if not stats.workers:
        found.append(
            Finding("unsafe", "workers", "no worker is alive: events are not being persisted")
        )
    else:
        found.append(Finding("ok", "workers", f"{len(stats.workers)} alive"))
    if stats.dead_letters:
        found.append(
            Finding(
                "unsafe",
                "dead letters",
                f"{stats.dead_letters} event(s) the worker could not persist",
            )
        )
    oldest = stats.oldest_pending_age
    if oldest is not None and oldest > PENDING_AGE_WARNING:
        found.append(
            Finding("warning", "pending", f"oldest unacknowledged entry is {duration(oldest)} old")
        )
    if stats.lag > LAG_WARNING:
        found.append(Finding("warning", "lag", f"{stats.lag} entries not yet read by the worker"))
    if stats.expired_unreaped and not stats.workers:
        found.append(
            Finding(
                "warning",
                "reaper",
                f"{stats.expired_unreaped} lapsed lease(s) await the reaper (run a worker, "
                "or `coordinator reap`)",
            )
        )
    return found
