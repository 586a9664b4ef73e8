"""Event sinks: SQLite (default) and PostgreSQL, chosen by URL."""

from __future__ import annotations

from coordinator.errors import InvalidInputError
from coordinator.events import LEGACY_SHARD, ROW_COLUMNS, EventRow, event_row
from coordinator.sinks.base import TABLE, Sink

__all__ = [
    "LEGACY_SHARD",
    "ROW_COLUMNS",
    "TABLE",
    "EventRow",
    "Sink",
    "event_row",
    "sink_from_url",
]


def sink_from_url(url: str) -> Sink:
    """``sqlite:///path/events.db`` or ``postgresql://user:pw@host/db`` (``postgres://``)."""
    if not isinstance(url, str):
        raise InvalidInputError("sink_url", f"must be a string, not {type(url).__name__}")
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from coordinator.sinks.sqlite import SQLiteSink

        try:
            return SQLiteSink(url)
        except ValueError as exc:
            raise InvalidInputError("sink_url", str(exc)) from None
    if scheme in ("postgresql", "postgres"):
        from coordinator.sinks.postgres import PostgresSink

        return PostgresSink(url)
    raise InvalidInputError(
        "sink_url", f"must start with sqlite:/// or postgresql:// (got scheme {scheme!r})"
    )
