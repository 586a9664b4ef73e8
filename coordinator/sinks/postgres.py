"""PostgreSQL sink (psycopg 3, the ``postgres`` extra).

A batch is ``COPY``-ed into a temporary table and moved with one ``INSERT ... SELECT
... ON CONFLICT DO NOTHING``: several times faster than row-by-row inserts, and the
conflict clause makes re-delivered entries harmless.

The worker needs no more than ``deploy/postgres-roles.sql`` grants it: ``INSERT`` and
``SELECT`` on the events table (with ``USAGE`` of its id sequence), ``SELECT`` on the
schema-version table and ``TEMPORARY`` on the database. When the tables exist the
schema is only read and checked, never created; a missing privilege is
:class:`~coordinator.errors.SinkAccessDenied`, not an outage to retry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from coordinator.errors import ConfigurationError
from coordinator.events import ROW_COLUMNS, EventRow
from coordinator.settings import redact_url
from coordinator.sinks.base import (
    COLUMNS,
    POSTGRES,
    SCHEMA_TABLE,
    TABLE,
    Sink,
    check_existing,
    record_version,
    schema_sql,
)

try:
    import psycopg
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_SCHEMA = schema_sql(POSTGRES, "BIGSERIAL PRIMARY KEY")

_COLUMNS = ", ".join(ROW_COLUMNS)
_STAGE = f"{TABLE}_incoming"
_TYPES = {name: pg.removesuffix(" NOT NULL") for name, _, pg in COLUMNS}
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} ("
    + ", ".join(f"{name} {_TYPES[name]}" for name in ROW_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_MOVE = (
    f"INSERT INTO {TABLE} ({_COLUMNS}, created_at) "
    f"SELECT {_COLUMNS}, to_timestamp(created_ms / 1000.0) FROM {_STAGE} "
    "ON CONFLICT (namespace, shard, stream_id) DO NOTHING"
)
# Serialises schema creation between processes starting at once.
_SCHEMA_LOCK = 0x636F6F7264  # "coord"
#: The events table as an empty temporary table of one connection: in ``pg_temp``,
#: which PostgreSQL searches first, so reads find it where the real one is missing.
_EMPTY_EVENTS = _SCHEMA.split(";")[0].replace("CREATE TABLE", "CREATE TEMPORARY TABLE", 1)


class PostgresSink(Sink):
    placeholder: ClassVar[str] = "%s"
    outage_errors: ClassVar[tuple[type[BaseException], ...]] = (
        () if psycopg is None else (psycopg.OperationalError, psycopg.InterfaceError)
    )
    denied_errors: ClassVar[tuple[type[BaseException], ...]] = (
        () if psycopg is None else (psycopg.errors.InsufficientPrivilege,)
    )

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        if psycopg is None:
            raise ConfigurationError(
                "the PostgreSQL sink needs psycopg: pip install 'agent-coordinator[postgres]'"
            )
        super().__init__(url)
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        #: Connection of reads before any write (see _read_connection), and whether
        #: it reads an empty temporary table because the sink has no tables yet.
        self._reader: Any = None
        self._reader_empty = False

    @property
    def location(self) -> str:
        return redact_url(self.url)

    def _connect(self) -> Any:
        assert psycopg is not None
        return psycopg.connect(self.url, connect_timeout=max(1, round(self.connect_timeout)))

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = self._connect()
        try:
            _ensure_schema(conn)
            conn.execute(_CREATE_STAGE)
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _read_connection(self) -> Any:
        # A read (``coordinator events``, get_agent_events) never creates the tables: a
        # mistyped database or schema must not be left holding an empty sink. Until the
        # worker (or the owner) creates them, reads see an empty temporary table of
        # their own connection; once the real one exists, a fresh connection reads it.
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = self._reader
        if conn is not None and not conn.closed and not self._reader_empty:
            return conn
        if conn is None or conn.closed:
            conn, self._reader_empty = self._connect(), False
        self._reader = conn
        try:
            columns = _columns(conn, TABLE)
            if columns:
                check_existing(columns, "use another database or schema")
                if self._reader_empty:  # its temporary table hides the real one
                    conn.close()
                    conn = self._reader = self._connect()
                    self._reader_empty = False
            elif not self._reader_empty:
                log.warning("event sink %s has no events table (yet): no persisted events",
                            self.location)  # fmt: skip
                conn.execute(_EMPTY_EVENTS)
                self._reader_empty = True
            conn.commit()
        except BaseException:
            conn.close()
            self._reader = None
            raise
        return conn

    def _insert(self, cursor: Any, rows: Sequence[EventRow]) -> int:
        # ON COMMIT DELETE ROWS empties it after the commit; clear anything left by a
        # failed batch too.
        cursor.execute(f"DELETE FROM {_STAGE}")
        with cursor.copy(f"COPY {_STAGE} ({_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(_MOVE)
        return int(cursor.rowcount)

    def _disconnect(self) -> None:
        for conn in (self._conn, self._reader):
            if conn is not None:
                conn.close()
        self._conn = self._reader = None


def _columns(conn: Any, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = %s AND table_schema = current_schema()",
        (table,),
    )
    return {row[0] for row in rows}


def _ensure_schema(conn: Any) -> None:
    """Check the tables, creating them first when they are missing (idempotent).

    Existing tables are only read: a role without ``CREATE`` (the worker's role of
    deploy/postgres-roles.sql) works as long as the owner created them."""
    with conn.transaction():
        columns = _columns(conn, TABLE)
        check_existing(columns, "use another database or schema")
        if columns and _columns(conn, SCHEMA_TABLE):
            version = conn.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}").fetchone()[0]
            if version is not None:
                record_version(conn.cursor(), "%s")  # reads only: a version is recorded
                return
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        check_existing(_columns(conn, TABLE), "use another database or schema")
        conn.execute(_SCHEMA)
        record_version(conn.cursor(), "%s")
