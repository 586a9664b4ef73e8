"""SQLite sink (the default: one file in the data directory).

Write-ahead logging lets readers (``coordinator events``, the clients) query while the
worker writes. ``synchronous=FULL`` syncs the log at every commit: the worker
acknowledges stream entries right after the commit, so a commit that a power loss could
still roll back (``NORMAL``) would lose acknowledged events. One sync per batch of up to
thousands of events costs little.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from coordinator.errors import ConfigurationError
from coordinator.sinks.base import ROW_COLUMNS, SCHEMA_VERSION, TABLE, EventRow, Sink

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    session_id TEXT,
    event_type TEXT NOT NULL,
    from_project TEXT,
    to_project TEXT,
    expected_version INTEGER,
    actual_version INTEGER,
    success INTEGER NOT NULL,
    error_message TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL,
    namespace TEXT NOT NULL,
    shard INTEGER NOT NULL,
    stream_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    stream_seq INTEGER NOT NULL,
    fencing_token INTEGER,
    UNIQUE (namespace, shard, stream_id)
);
CREATE INDEX IF NOT EXISTS {TABLE}_time ON {TABLE} (namespace, created_ms);
CREATE INDEX IF NOT EXISTS {TABLE}_agent ON {TABLE} (namespace, agent_id, created_ms);
CREATE INDEX IF NOT EXISTS {TABLE}_type ON {TABLE} (namespace, event_type, created_ms);
CREATE TABLE IF NOT EXISTS coordinator_sink_schema (version INTEGER NOT NULL);
"""

# created_at is derived inside SQLite (ISO 8601, UTC, milliseconds) from created_ms:
# formatting it in Python would cost more than the rest of the insert.
_INSERT = (
    f"INSERT OR IGNORE INTO {TABLE} ({', '.join(ROW_COLUMNS)}, created_at) VALUES ("
    + ", ".join(f"?{i}" for i in range(1, len(ROW_COLUMNS) + 1))
    + ", strftime('%Y-%m-%dT%H:%M:%fZ', ?4 / 1000.0, 'unixepoch'))"
)


class SQLiteSink(Sink):
    placeholder: ClassVar[str] = "?"
    # OSError: the directory cannot be created (missing mount, permissions).
    outage_errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.OperationalError, OSError)

    def __init__(self, url: str, *, busy_timeout: float = 5.0) -> None:
        super().__init__(url)
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None

    @property
    def location(self) -> str:
        return f"sqlite:///{self.path}"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # The lock in Sink serialises use; the connection may move between the
        # threads asyncio.to_thread picks.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            _ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _insert(self, cursor: Any, rows: Sequence[EventRow]) -> int:
        before = cursor.connection.total_changes
        cursor.executemany(_INSERT, rows)
        return int(cursor.connection.total_changes - before)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite:///:memory:``."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or rest == "/":
        raise ValueError(f"not a SQLite URL: {url!r} (use sqlite:///path/events.db)")
    rest = rest[1:]
    return Path(rest) if rest == ":memory:" else Path(rest).expanduser()


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the table and indexes, or check an existing one (idempotent)."""
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
    if columns and "stream_id" not in columns:
        raise ConfigurationError(
            f"{TABLE} in this database has the original scribe_mcp schema; point the sink at "
            "a new file and import the history with `coordinator migrate-legacy`"
        )
    with conn:
        conn.executescript(f"BEGIN; {_SCHEMA} COMMIT;")
        recorded = conn.execute("SELECT MAX(version) FROM coordinator_sink_schema").fetchone()[0]
        if recorded is None:
            conn.execute(
                "INSERT INTO coordinator_sink_schema (version) VALUES (?)", (SCHEMA_VERSION,)
            )
        elif recorded > SCHEMA_VERSION:
            raise ConfigurationError(
                f"the event sink has schema version {recorded}; this version of "
                f"agent-coordinator knows {SCHEMA_VERSION} (upgrade it)"
            )
