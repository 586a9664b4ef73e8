"""Health checks over a namespace snapshot, for people who are paged (``coordinator health``).

Pure: :func:`evaluate` turns a :class:`~coordinator.stats.NamespaceStats` (or the
error that kept it from being read) into one :class:`Check` per concern, each passing
or failing with a one-line detail. The command line prints the failures and exits 0
or 1, so the same command serves a Kubernetes probe, a systemd timer or a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from coordinator.server import MEMORY_WARNING_RATIO, summary
from coordinator.stats import NamespaceStats

#: Every check, in the order they are reported.
CHECKS: Final = (
    "redis", "eviction_policy", "persistence", "memory", "worker", "lag", "oldest_pending",
    "dead_letters",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits of a healthy namespace (the CLI options of ``coordinator health``)."""

    #: Entries not yet delivered to the worker's consumer group, over all shards.
    max_lag: int = 10_000
    #: Seconds since the oldest delivered-but-unacknowledged entry was written.
    max_pending_age: float = 300.0
    #: Entries in the dead-letter streams.
    max_dead_letters: int = 0
    #: Live workers (liveness keys) the namespace needs.
    min_workers: int = 1
    #: Used memory as a share of ``maxmemory`` (writes are refused at 1.0).
    max_memory_ratio: float = MEMORY_WARNING_RATIO


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Health:
    checks: Sequence[Check]

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "checks": [asdict(c) for c in self.checks]}


def unreachable(detail: str, skip: Iterable[str] = ()) -> Health:
    """Redis could not be read: that one check fails, the others cannot be made."""
    if "redis" in set(skip):
        return Health(())
    return Health((Check("redis", False, detail),))


def evaluate(
    stats: NamespaceStats, limits: Thresholds | None = None, skip: Iterable[str] = ()
) -> Health:
    """One check per concern of :data:`CHECKS` (minus ``skip``) over ``stats``."""
    limits = limits or Thresholds()
    skipped = set(skip)
    found = [c for c in _checks(stats, limits) if c.name not in skipped]
    return Health(tuple(found))


def _checks(stats: NamespaceStats, limits: Thresholds) -> Iterable[Check]:
    server = summary(stats.servers) if stats.servers else None
    yield Check("redis", True, f"{stats.server_kind} {stats.server_version} at {stats.redis_url}")

    policy = None if server is None else server.policy
    if policy is None:
        yield Check("eviction_policy", False, "maxmemory-policy unknown (no INFO answer)")
    elif server is not None and server.eviction_safe:
        yield Check("eviction_policy", True, f"maxmemory-policy {policy}")
    else:
        yield Check(
            "eviction_policy",
            False,
            f"maxmemory-policy {policy} may evict leases, fencing counters and records "
            "(set maxmemory-policy noeviction)",
        )

    if server is not None and server.aof_enabled:
        fsync = f" (appendfsync {server.appendfsync})" if server.appendfsync else ""
        yield Check("persistence", True, "append-only file on" + fsync)
    elif server is not None and server.persistent:
        yield Check("persistence", True, f"RDB snapshots on (save {server.rdb_save})")
    elif server is not None and server.persistent is False:
        yield Check("persistence", False, "off: a restart loses everything (set appendonly yes)")
    else:
        yield Check(
            "persistence",
            False,
            "appendonly is off or unknown, RDB schedule unknown (set appendonly yes)",
        )

    ratio = None if server is None else server.memory_ratio
    if ratio is None:
        yield Check("memory", True, "no maxmemory limit")
    elif ratio < limits.max_memory_ratio:
        yield Check("memory", True, f"{ratio:.0%} of maxmemory")
    else:
        yield Check(
            "memory",
            False,
            f"{ratio:.0%} of maxmemory (limit {limits.max_memory_ratio:.0%}); at 100% writes are "
            "refused until the worker trims",
        )

    alive = len(stats.workers)
    names = ", ".join(w.consumer for w in stats.workers)
    if alive >= limits.min_workers:
        yield Check("worker", True, f"{alive} alive ({names})")
    else:
        yield Check(
            "worker",
            False,
            f"{alive} live worker(s), {limits.min_workers} needed: events are not being persisted",
        )

    # A shard without the consumer group yet (no worker ever ran) owes its whole stream.
    backlog = sum(s.length if s.lag is None else s.lag for s in stats.streams)
    lag = f"{backlog}{'' if stats.lag_exact else '+'}"
    if backlog <= limits.max_lag:
        yield Check("lag", True, f"{lag} entries not yet delivered")
    else:
        yield Check("lag", False, f"{lag} entries not yet delivered (limit {limits.max_lag})")

    age = stats.oldest_pending_age
    if age is None or age <= limits.max_pending_age:
        detail = "nothing pending" if age is None else f"oldest pending {age:.0f}s"
        yield Check("oldest_pending", True, detail)
    else:
        yield Check(
            "oldest_pending",
            False,
            f"oldest pending entry is {age:.0f}s old (limit {limits.max_pending_age:.0f}s): "
            "the worker does not acknowledge",
        )

    dead = stats.dead_letters
    if dead <= limits.max_dead_letters:
        yield Check("dead_letters", True, f"{dead} dead letters")
    else:
        yield Check(
            "dead_letters",
            False,
            f"{dead} dead-lettered event(s) in the {{ns:shard}}:dead streams "
            f"(limit {limits.max_dead_letters})",
        )
