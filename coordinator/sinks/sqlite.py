"""SQLite sink (the default: one file in the data directory).

Write-ahead logging lets readers (``coordinator events``, the clients) query while the
worker writes. ``synchronous=FULL`` syncs the log at every commit: the worker
acknowledges stream entries right after the commit, so a commit that a power loss could
still roll back (``NORMAL``) would lose acknowledged events. One sync per batch of up to
thousands of events costs little.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

from coordinator.errors import ConfigurationError, SinkUnavailable, first_line
from coordinator.events import ROW_COLUMNS, EventRow
from coordinator.sinks.base import (
    SQLITE,
    TABLE,
    Sink,
    check_existing,
    record_version,
    schema_sql,
)

log = logging.getLogger(__name__)

_SCHEMA = schema_sql(SQLITE, "INTEGER PRIMARY KEY")

_INSERT = (
    f"INSERT OR IGNORE INTO {TABLE} ({', '.join(ROW_COLUMNS)}) VALUES ("
    + ", ".join("?" for _ in ROW_COLUMNS)
    + ")"
)


#: With the default 2 MB page cache, every batch re-read index pages from the OS; with
#: the default checkpoint every 1,000 WAL pages, the hot index pages were copied back to
#: the database file after nearly every batch; less CPU per row with these (figures:
#: docs/benchmarks.md, "Event worker"). The cache is an upper
#: bound, not an allocation; the log is truncated back to ``journal_size_limit`` after
#: each checkpoint.
_TUNING: Final = (
    "PRAGMA cache_size=-65536",  # KiB: 64 MiB
    "PRAGMA wal_autocheckpoint=10000",  # pages: about 40 MiB of log
    f"PRAGMA journal_size_limit={64 * 1024 * 1024}",
)


class SQLiteSink(Sink):
    placeholder: ClassVar[str] = "?"
    # OSError: the directory cannot be created (a mount gone while running; at start,
    # prepare() reports it as a ConfigurationError instead).
    outage_errors: ClassVar[tuple[type[BaseException], ...]] = (sqlite3.OperationalError, OSError)

    def __init__(self, url: str, *, busy_timeout: float = 5.0) -> None:
        super().__init__(url)
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        #: What reads use while the file does not exist: an empty in-memory copy.
        self._empty: sqlite3.Connection | None = None

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
            for pragma in _TUNING:
                conn.execute(pragma)
            _ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def prepare(self) -> None:
        try:
            super().prepare()
        except SinkUnavailable as exc:
            # A local file that cannot be created or opened at start (no permission, a
            # file where its directory should be) is a configuration error, not an
            # outage to wait out; later (a mount gone) it is an outage.
            cause = exc.__cause__
            if isinstance(cause, FileExistsError | NotADirectoryError):
                why = f"a file is in the way of {self.path.parent}"
            elif cause is not None and (
                isinstance(cause, OSError) or "unable to open" in str(cause)
            ):
                why = first_line(cause)
            else:  # e.g. locked by another writer: an outage the worker waits out
                raise
            raise ConfigurationError(
                f"event sink {self.location} cannot be created: {why}"
            ) from None

    def _read_connection(self) -> sqlite3.Connection:
        # A read (``coordinator events``, get_agent_events) never creates the file or
        # its directory: a mistyped path must not leave an empty database behind.
        if self._conn is not None or str(self.path) == ":memory:" or self.path.exists():
            return self._connection()
        if self._empty is None:
            log.warning("event sink %s does not exist (yet): no persisted events", self.location)
            self._empty = sqlite3.connect(":memory:", check_same_thread=False)
            _ensure_schema(self._empty)
        return self._empty

    def _insert(self, cursor: Any, rows: Sequence[EventRow]) -> int:
        before = cursor.connection.total_changes
        cursor.executemany(_INSERT, rows)
        return int(cursor.connection.total_changes - before)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        empty, self._empty = self._empty, None
        if empty is not None:
            empty.close()


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite:///:memory:``."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or rest == "/":
        raise ValueError(f"not a SQLite URL: {url!r} (use sqlite:///path/events.db)")
    rest = rest[1:]
    return Path(rest) if rest == ":memory:" else Path(rest).expanduser()


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the table and indexes, or check an existing one (idempotent)."""
    check_existing(
        {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")},
        "point the sink at a new file",
    )
    with conn:
        conn.executescript(f"BEGIN; {_SCHEMA} COMMIT;")
        record_version(conn.cursor(), "?")
