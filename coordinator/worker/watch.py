"""The regression watch: a pure check of the persisted audit for lost writes.

Versions and fencing tokens only rise; an accepted event carrying a lower one than an
earlier event of the same agent means acknowledged writes were lost (an asynchronous
failover, an evicting Redis). Each is recorded as an ``audit_anomaly`` row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from coordinator.events import EventRow
from coordinator.models import EventType

#: The worker stores an audit_anomaly event raised for an entry of shard ``s`` under
#: shard ``ANOMALY_SHARD - s`` with the entry's stream id: unique, and raising it
#: again is ignored by the sink.
ANOMALY_SHARD: Final = -2
#: Event types whose ``actual_version`` is the record's new version.
_VERSIONED: Final = frozenset(
    {
        EventType.PROJECT_SET.value,
        EventType.PROJECT_SWITCHED.value,
        EventType.PROJECT_CLEARED.value,
        EventType.PROJECT_IMPORTED.value,
    }
)
_STARTED: Final = EventType.SESSION_STARTED.value
#: Reservation events live in the stream of their scope's shard, not their agent's:
#: they are not ordered with the agent's other events, so the watch skips them.
_SCOPED: Final = frozenset(
    {
        EventType.RESERVATION_GRANTED.value,
        EventType.RESERVATION_REFUSED.value,
        EventType.RESERVATION_RELEASED.value,
        EventType.RESERVATION_EXPIRED.value,
    }
)


@dataclass
class RegressionWatch:
    """Remembers each agent's last persisted version and fencing token.

    Within one shard stream an agent's events are totally ordered, and accepted
    versions and tokens only rise; a later event that carries a lower one means
    acknowledged writes were lost (e.g. by an asynchronous failover).
    """

    capacity: int = 200_000
    #: agent -> (ms, seq) of its last event, highest version and fencing token seen
    seen: dict[str, tuple[int, int, int | None, int | None]] = field(default_factory=dict)

    def check(self, rows: Sequence[EventRow]) -> list[tuple[EventRow, str, str]]:
        """Rows that regress, with the kind and a description."""
        found: list[tuple[EventRow, str, str]] = []
        seen = self.seen
        get = seen.get
        for row in rows:
            if not row[12] or row[7] in _SCOPED:  # rejected attempts change nothing
                continue
            agent, etype, token = row[5], row[7], row[15]
            version = row[11] if etype in _VERSIONED else None
            prev = get(agent)
            if prev is None:
                seen[agent] = (row[3], row[4], version, token)
                continue
            ms, seq, last_version, last_token = prev
            if (row[3], row[4]) <= (ms, seq):  # a re-delivery (or older): nothing new
                continue
            if version is not None and last_version is not None:
                if version <= last_version:
                    found.append(
                        (row, "version_regression", f"version {version} after {last_version}")
                    )
                    version = last_version
            elif version is None:
                version = last_version
            if token is not None and last_token is not None:
                if token < last_token or (etype == _STARTED and token == last_token):
                    found.append(
                        (row, "fencing_regression", f"fencing token {token} after {last_token}")
                    )
                token = max(token, last_token)
            elif token is None:
                token = last_token
            seen[agent] = (row[3], row[4], version, token)
        # Forget the agents seen first (insertion order) beyond the capacity.
        for _ in range(len(seen) - self.capacity):
            del seen[next(iter(seen))]
        return found


def anomaly_row(row: EventRow, kind: str, description: str) -> EventRow:
    """The audit_anomaly event raised for a regressing row (see :data:`ANOMALY_SHARD`)."""
    meta = json.dumps({"kind": kind, "shard": row[1], "stream_id": row[2], "event": row[7]})
    return (
        row[0], ANOMALY_SHARD - row[1], row[2], row[3], row[4], row[5], row[6],
        EventType.AUDIT_ANOMALY.value, row[8], row[9], row[10], row[11], False,
        description, meta, row[15],
    )  # fmt: skip
