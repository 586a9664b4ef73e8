"""The stable JSON shapes operators' tools share: the CLI's ``--json`` output and the
web dashboard's JSON answers are built here, so the two never drift apart.

Pure: no I/O. Times are ISO 8601 UTC with milliseconds (``...Z``); durations are
measured against the Redis server clock (``now``), never the local one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from coordinator.errors import InvalidInputError
from coordinator.models import AgentEvent, AgentProject, Lease, Reservation

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration(seconds: float) -> str:
    """A short duration for people: ``45s``, ``14m03s``, ``2h05m``, ``3d04h``, or ``expired``."""
    if seconds < 0:
        return "expired"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def byte_size(value: int | None) -> str:
    """``512 B``, ``3.2 MiB``; ``?`` when unknown (the CLI's status and the dashboard)."""
    if value is None:
        return "?"
    amount, unit = float(value), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            break
        amount /= 1024
    return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"


def lease_json(lease: Lease, record: AgentProject | None, now: datetime) -> dict[str, Any]:
    """``coordinator leases --json`` (one item) and ``lease show --json``."""
    return {
        "agent_id": lease.agent_id,
        "session_id": lease.session_id,
        "fencing_token": lease.fencing_token,
        "started_at": iso(lease.started_at),
        "last_heartbeat": iso(lease.last_heartbeat),
        "expires_at": iso(lease.expires_at),
        "expires_in_seconds": round((lease.expires_at - now).total_seconds(), 3),
        "ttl_seconds": lease.ttl,
        "project_name": record.project_name if record else None,
        "project_version": record.version if record else None,
        "metadata": lease.metadata,
    }


def reservation_json(reservation: Reservation, now: datetime) -> dict[str, Any]:
    """``coordinator reservations --json`` (one item) and ``lease show --json``."""
    return {
        "reservation_id": reservation.reservation_id,
        "scope": reservation.scope,
        "resources": reservation.resources,
        "mode": reservation.mode,
        "fencing_token": reservation.fencing_token,
        "agent_id": reservation.agent_id,
        "session_id": reservation.session_id,
        "granted_at": iso(reservation.granted_at),
        "expires_at": iso(reservation.expires_at),
        "expires_in_seconds": round((reservation.expires_at - now).total_seconds(), 3),
        "ttl_seconds": reservation.ttl,
        "reason": reservation.reason,
    }


def reservation_counts(held: Sequence[Reservation]) -> dict[str, int]:
    """``reservations`` of ``coordinator status --json`` (and the dashboard's health)."""
    return {"held": len(held), "scopes": len({r.scope for r in held})}


def project_json(record: AgentProject) -> dict[str, Any]:
    """``coordinator project get --json``."""
    return {
        "agent_id": record.agent_id,
        "project_name": record.project_name,
        "version": record.version,
        "session_id": record.session_id,
        "updated_by": record.updated_by,
        "updated_at": iso(record.updated_at),
        "fencing_token": record.fencing_token,
        "event_id": record.event_id,
    }


def event_json(event: AgentEvent) -> dict[str, Any]:
    """``coordinator events --json`` (one item) and ``events tail --json`` (one line)."""
    data = event.model_dump(mode="json")
    data["created_at"] = iso(event.created_at)
    return data


def event_change(event: AgentEvent) -> str:
    """``from -> to`` of a project change (empty when the event names no project)."""
    if event.from_project or event.to_project:
        return f"{event.from_project or '-'} -> {event.to_project or '-'}"
    return ""


def event_versions(event: AgentEvent) -> str:
    """``expected/actual`` versions (``*`` for an unconditional write)."""
    if event.expected_version is None and event.actual_version is None:
        return ""
    expected = "*" if event.expected_version is None else str(event.expected_version)
    actual = "-" if event.actual_version is None else str(event.actual_version)
    return f"{expected}/{actual}"


def parse_when(text: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC if no zone) or a relative age such as ``10m``, ``2h``, ``1d``
    before ``now``. Raises InvalidInputError (field ``time``)."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        try:
            return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
        except OverflowError:  # an age beyond what a datetime can hold
            raise InvalidInputError("time", f"{text!r} is too long ago") from None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            "time",
            f"{text!r} is neither an ISO time (2026-01-31T12:00:00Z) nor an age like 10m, 2h, 1d",
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=now.tzinfo)
