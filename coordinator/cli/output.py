"""Output for people (aligned tables) and for scripts (``--json``, stable field names).

Data goes to stdout, diagnostics to stderr. Times shown to people are relative to the
Redis server clock, never the local one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import click

from coordinator.models import AgentEvent, AgentProject, Lease

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def emit_json_array(items: Iterable[Mapping[str, Any]]) -> None:
    """A JSON array written item by item, so a long listing never sits in memory."""
    first = True
    click.echo("[", nl=False)
    for item in items:
        click.echo(
            ("\n  " if first else ",\n  ") + json.dumps(item, ensure_ascii=False, default=str),
            nl=False,
        )
        first = False
    click.echo("\n]" if not first else "]")


def emit_table(
    rows: Sequence[Sequence[str]],
    headers: Sequence[str],
    *,
    header: bool = True,
    widths: Sequence[int] | None = None,
) -> list[int]:
    """Print aligned columns; returns the widths so later pages can keep them."""
    if widths is None:
        widths = [len(h) for h in headers]
        for row in rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers] if header else []
    for line in [*lines, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return list(widths)


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


def iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_when(text: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC if no zone) or a relative age such as ``10m``, ``2h``, ``1d``."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        try:
            return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
        except OverflowError:  # an age beyond what a datetime can hold
            raise click.BadParameter(f"{text!r} is too long ago") from None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO time (2026-01-31T12:00:00Z) nor an age like 10m, 2h, 1d"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=now.tzinfo)


# --- stable JSON shapes ------------------------------------------------------------------


def lease_json(lease: Lease, record: AgentProject | None, now: datetime) -> dict[str, Any]:
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


def lease_row(lease: Lease, record: AgentProject | None, now: datetime) -> list[str]:
    return [
        lease.agent_id,
        lease.session_id,
        str(lease.fencing_token),
        duration((lease.expires_at - now).total_seconds()),
        duration((now - lease.last_heartbeat).total_seconds()) + " ago",
        (record.project_name or "-") if record else "-",
        str(record.version) if record else "-",
    ]


LEASE_HEADERS = ("AGENT", "SESSION", "TOKEN", "EXPIRES IN", "LAST HEARTBEAT", "PROJECT", "VERSION")


def project_json(record: AgentProject) -> dict[str, Any]:
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
    data = event.model_dump(mode="json")
    data["created_at"] = iso(event.created_at)
    return data


EVENT_HEADERS = ("TIME", "TYPE", "AGENT", "CHANGE", "VERSIONS", "TOKEN", "DETAIL")


def event_row(event: AgentEvent) -> list[str]:
    change = ""
    if event.from_project or event.to_project:
        change = f"{event.from_project or '-'} -> {event.to_project or '-'}"
    versions = ""
    if event.expected_version is not None or event.actual_version is not None:
        expected = "*" if event.expected_version is None else str(event.expected_version)
        actual = "-" if event.actual_version is None else str(event.actual_version)
        versions = f"{expected}/{actual}"
    return [
        iso(event.created_at),
        event.event_type.value,
        event.agent_id,
        change,
        versions,
        "" if event.fencing_token is None else str(event.fencing_token),
        event.error_message or "",
    ]
