"""Server timestamps: milliseconds, datetimes and stream ids.

Every timestamp the coordinator reports comes from the Redis server clock: ``TIME``
inside a script, or the millisecond part of an audit stream id (``<ms>-<seq>``).
"""

from __future__ import annotations

from datetime import UTC, datetime


def ms_to_datetime(ms: int | float | str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def stream_id_ms(stream_id: str) -> int:
    return int(stream_id.partition("-")[0] or 0)


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """Sort key of a stream id (ids compare numerically, not as text)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
