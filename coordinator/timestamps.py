"""Server timestamps: milliseconds, datetimes and stream ids.

Every timestamp the coordinator reports comes from the Redis server clock: ``TIME``
inside a script, or the millisecond part of an audit stream id (``<ms>-<seq>``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


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


def next_stream_id(stream_id: str) -> str:
    """The smallest id after ``stream_id`` (``XTRIM MINID`` keeps it and what follows)."""
    ms, seq = stream_id_key(stream_id)
    return f"{ms}-{seq + 1}"


def time_reply_ms(reply: Any) -> int:
    """Milliseconds of a ``TIME`` reply (seconds and microseconds)."""
    seconds, micros = reply[0], reply[1]
    return int(seconds) * 1000 + int(micros) // 1000
