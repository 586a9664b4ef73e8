"""Output for people (aligned tables) and for scripts (``--json``, stable field names).

Data goes to stdout, diagnostics to stderr. Times shown to people are relative to the
Redis server clock, never the local one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from coordinator import shapes
from coordinator.errors import InvalidInputError
from coordinator.models import AgentEvent, AgentProject, Lease
from coordinator.shapes import (
    byte_size,
    duration,
    event_change,
    event_json,
    event_versions,
    iso,
    lease_json,
    project_json,
)

# The shapes are re-exported: the commands import everything they print from here.
__all__ = [
    "EVENT_HEADERS",
    "LEASE_HEADERS",
    "byte_size",
    "duration",
    "emit_json",
    "emit_json_array",
    "emit_table",
    "event_json",
    "event_row",
    "iso",
    "lease_json",
    "lease_row",
    "parse_when",
    "project_json",
]


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def emit_json_array(items: Iterable[Mapping[str, Any]], chunk: int = 500) -> None:
    """A JSON array written ``chunk`` items at a time (one write each), so a long
    listing never sits in memory and costs no write per item."""
    # json.dumps(item, ensure_ascii=False, default=str), without a new encoder per item.
    dumps = json.JSONEncoder(ensure_ascii=False, default=str).encode
    parts: list[str] = []
    first = True
    click.echo("[", nl=False)
    for item in items:
        parts.append(("\n  " if first else ",\n  ") + dumps(item))
        first = False
        if len(parts) >= chunk:
            click.echo("".join(parts), nl=False)
            parts.clear()
    if parts:
        click.echo("".join(parts), nl=False)
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
    lines = [headers, *rows] if header else rows
    if lines:  # one write for the whole page
        # Each cell left-justified to its column's width, two spaces apart (str.ljust).
        line = "  ".join(f"{{:<{w}}}" for w in widths).format
        if any(len(cells) != len(widths) for cells in lines):
            raise ValueError("every row needs one cell per column")
        click.echo("\n".join(line(*cells).rstrip() for cells in lines))
    return list(widths)


def parse_when(text: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC if no zone) or a relative age such as ``10m``, ``2h``, ``1d``."""
    try:
        return shapes.parse_when(text, now)
    except InvalidInputError as exc:
        raise click.BadParameter(str(exc).removeprefix("invalid time: ")) from None


# --- people's rows (the JSON shapes are in coordinator.shapes) -------------------------


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


EVENT_HEADERS = ("TIME", "TYPE", "AGENT", "CHANGE", "VERSIONS", "TOKEN", "DETAIL")


def event_row(event: AgentEvent) -> list[str]:
    change, versions = event_change(event), event_versions(event)
    return [
        iso(event.created_at),
        event.event_type.value,
        event.agent_id,
        change,
        versions,
        "" if event.fencing_token is None else str(event.fencing_token),
        event.error_message or "",
    ]
