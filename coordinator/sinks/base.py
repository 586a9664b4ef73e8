"""The event sink: where the worker makes the audit trail durable.

One table, ``agent_project_events``, keeps the original's columns (agent_id,
session_id, event_type, from_project, to_project, expected_version, actual_version,
success, error_message, metadata, created_at) and adds the event's identity:
``namespace``, ``shard`` and ``stream_id`` (unique together, so a re-delivered entry
is ignored instead of stored twice), the fencing token, and ``created_ms`` /
``stream_seq`` for exact ordering. SQLite and PostgreSQL share everything here and
differ only in their dialect (placeholders, types, the insert statement).

Sinks are synchronous: the worker and the asyncio client call them in a thread.
Each sink serialises its own use with a lock, so one instance may be shared.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar, Final, TypeVar

from coordinator import validation
from coordinator.errors import ConfigurationError, SinkAccessDenied, SinkUnavailable, first_line
from coordinator.events import ROW_COLUMNS, EventRow, event_row, row_event
from coordinator.models import AgentEvent
from coordinator.timestamps import datetime_to_ms, stream_id_key

T = TypeVar("T")

TABLE: Final = "agent_project_events"
#: Bumped when the table changes; recorded in ``coordinator_sink_schema``.
SINK_SCHEMA_VERSION: Final = 1
#: The table's columns after ``id``: name and type as (SQLite, PostgreSQL). The two
#: dialects differ only in these types.
COLUMNS: Final = (
    ("agent_id", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("session_id", "TEXT", "TEXT"),
    ("event_type", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("from_project", "TEXT", "TEXT"),
    ("to_project", "TEXT", "TEXT"),
    ("expected_version", "INTEGER", "BIGINT"),
    ("actual_version", "INTEGER", "BIGINT"),
    ("success", "INTEGER NOT NULL", "BOOLEAN NOT NULL"),
    ("error_message", "TEXT", "TEXT"),
    ("metadata", "TEXT", "JSONB"),
    # SQLite derives it from created_ms when read (ISO 8601, UTC, milliseconds): no
    # cost per insert. PostgreSQL stores it (filled from created_ms by the insert).
    (
        "created_at",
        "TEXT GENERATED ALWAYS AS "
        "(strftime('%Y-%m-%dT%H:%M:%fZ', created_ms / 1000.0, 'unixepoch')) VIRTUAL",
        "TIMESTAMPTZ NOT NULL",
    ),
    ("namespace", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("shard", "INTEGER NOT NULL", "INTEGER NOT NULL"),
    ("stream_id", "TEXT NOT NULL", "TEXT NOT NULL"),
    ("created_ms", "INTEGER NOT NULL", "BIGINT NOT NULL"),
    ("stream_seq", "INTEGER NOT NULL", "BIGINT NOT NULL"),
    ("fencing_token", "INTEGER", "BIGINT"),
)
SQLITE, POSTGRES = 1, 2
#: Columns read back into an :class:`AgentEvent`.
_READ_COLUMNS: Final = ROW_COLUMNS[1:]


def schema_sql(dialect: int, primary_key: str) -> str:
    """The table (``id`` as ``primary_key``), its indexes and the schema-version table."""
    columns = ",\n    ".join(f"{c[0]} {c[dialect]}" for c in COLUMNS)
    return f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id {primary_key},
    {columns},
    UNIQUE (namespace, shard, stream_id)
);
CREATE INDEX IF NOT EXISTS {TABLE}_time ON {TABLE} (namespace, created_ms);
CREATE INDEX IF NOT EXISTS {TABLE}_agent ON {TABLE} (namespace, agent_id, created_ms);
CREATE INDEX IF NOT EXISTS {TABLE}_type ON {TABLE} (namespace, event_type, created_ms);
CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL);
"""


SCHEMA_TABLE: Final = "coordinator_sink_schema"


def check_existing(columns: set[str], where: str) -> None:
    """Refuse a table of the same name with the original scribe_mcp schema."""
    if columns and "stream_id" not in columns:
        raise ConfigurationError(
            f"{TABLE} in this database has the original scribe_mcp schema; {where} and "
            "import the history with `coordinator migrate-legacy`"
        )


def record_version(cursor: Any, placeholder: str) -> None:
    """Record the schema version on first use; refuse a newer one."""
    cursor.execute(f"SELECT MAX(version) FROM {SCHEMA_TABLE}")
    recorded = cursor.fetchone()[0]
    if recorded is None:
        cursor.execute(
            f"INSERT INTO {SCHEMA_TABLE} (version) VALUES ({placeholder})", (SINK_SCHEMA_VERSION,)
        )
    elif recorded > SINK_SCHEMA_VERSION:
        raise ConfigurationError(
            f"the event sink has schema version {recorded}; this version of "
            f"agent-coordinator knows {SINK_SCHEMA_VERSION} (upgrade it)"
        )


class Sink(ABC):
    """A database holding the persisted audit trail of any number of namespaces."""

    #: Placeholder of the DB-API driver (``?`` for sqlite3, ``%s`` for psycopg).
    placeholder: ClassVar[str]
    #: Exceptions of the driver that mean "the database is unavailable".
    outage_errors: ClassVar[tuple[type[BaseException], ...]]
    #: Exceptions of the driver that mean "this role lacks a privilege".
    denied_errors: ClassVar[tuple[type[BaseException], ...]] = ()

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()

    # --- dialect ---------------------------------------------------------------------

    @abstractmethod
    def _connection(self) -> Any:
        """The open DB-API connection (opened on first use, schema ensured)."""

    @abstractmethod
    def _insert(self, cursor: Any, rows: Sequence[EventRow]) -> int:
        """Insert rows, ignoring those whose identity is already stored; return how
        many were new."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Drop the connection (after an outage, or on close)."""

    def _read_connection(self) -> Any:
        """The connection a read uses; a read must never create the sink."""
        return self._connection()

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the sink is, without any password (for logs and errors)."""

    # --- shared behaviour --------------------------------------------------------------

    def _run(self, work: Callable[[Any], T], *, write: bool = False) -> T:
        """Run ``work(cursor)`` in one transaction; outages become SinkUnavailable."""
        with self._lock:
            try:
                conn = self._connection() if write else self._read_connection()
                cursor = conn.cursor()
                try:
                    result = work(cursor)
                    conn.commit()
                    return result
                except BaseException:
                    conn.rollback()
                    raise
                finally:
                    cursor.close()
            except self.outage_errors as exc:
                self._disconnect()
                raise SinkUnavailable(
                    f"event sink {self.location} unavailable: {first_line(exc)}",
                    maybe_applied=write,
                ) from exc
            except self.denied_errors as exc:
                raise SinkAccessDenied(self.location, first_line(exc)) from exc

    def prepare(self) -> None:
        """Open the sink, creating it (file, schema) if need be: the worker calls this
        at start, so a sink that cannot be created is reported then, not retried as an
        outage. Raises ConfigurationError, SinkUnavailable, SinkAccessDenied."""
        self._run(lambda cursor: None, write=True)

    def write(self, rows: Sequence[EventRow]) -> int:
        """Persist rows in one transaction; return how many were not stored before."""
        if not rows:
            return 0
        return self._run(lambda cursor: self._insert(cursor, rows), write=True)

    def write_events(self, namespace: str, events: Sequence[AgentEvent]) -> int:
        return self.write([event_row(namespace, event) for event in events])

    def query(
        self,
        namespace: str,
        agent_id: str | None = None,
        event_type: str | None = None,
        limit: int = 50,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AgentEvent]:
        """Persisted events, newest first, ``since <= created_at <= until``."""
        agent = None if agent_id is None else validation.agent_id(agent_id)
        etype = validation.event_type(event_type)
        limit = validation.limit(limit)
        where, params = self._where(namespace, agent, etype, since, until)
        sql = (
            f"SELECT {', '.join(_READ_COLUMNS)} FROM {TABLE} WHERE {where} "
            f"ORDER BY created_ms DESC, stream_seq DESC, shard DESC LIMIT {limit}"
        )

        def fetch(cursor: Any) -> list[AgentEvent]:
            cursor.execute(sql, params)
            return [row_event(row) for row in cursor.fetchall()]

        return self._run(fetch)

    def events(self, namespace: str, page: int = 5000) -> Iterator[AgentEvent]:
        """Every persisted event of a namespace, oldest first, read page by page."""
        p = self.placeholder
        sql = (
            f"SELECT {', '.join(_READ_COLUMNS)} FROM {TABLE} WHERE namespace = {p} "
            f"AND (created_ms, stream_seq, shard) > ({p}, {p}, {p}) "
            f"ORDER BY created_ms, stream_seq, shard LIMIT {int(page)}"
        )
        after: tuple[int, int, int] = (-1, -1, -(2**31))
        while True:
            params = (namespace, *after)

            def fetch(cursor: Any, params: tuple[Any, ...] = params) -> list[AgentEvent]:
                cursor.execute(sql, params)
                return [row_event(row) for row in cursor.fetchall()]

            batch = self._run(fetch)
            yield from batch
            if len(batch) < page:
                return
            last = batch[-1]
            after = (datetime_to_ms(last.created_at), stream_id_key(last.stream_id)[1],
                     last.shard)  # fmt: skip

    def count(self, namespace: str, event_type: str | None = None) -> int:
        etype = validation.event_type(event_type)
        where, params = self._where(namespace, None, etype, None, None)

        def fetch(cursor: Any) -> int:
            cursor.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE {where}", params)
            return int(cursor.fetchone()[0])

        return self._run(fetch)

    def stream_ids(self, namespace: str, shard: int) -> set[str]:
        """Identities stored for one shard (e.g. imported history, to plan a re-import)."""
        p = self.placeholder

        def fetch(cursor: Any) -> set[str]:
            cursor.execute(
                f"SELECT stream_id FROM {TABLE} WHERE namespace = {p} AND shard = {p}",
                (namespace, shard),
            )
            return {str(row[0]) for row in cursor.fetchall()}

        return self._run(fetch)

    def counts_by_type(self, namespace: str) -> dict[str, int]:
        p = self.placeholder

        def fetch(cursor: Any) -> dict[str, int]:
            cursor.execute(
                f"SELECT event_type, COUNT(*) FROM {TABLE} WHERE namespace = {p} "
                "GROUP BY event_type ORDER BY event_type",
                (namespace,),
            )
            return {str(t): int(n) for t, n in cursor.fetchall()}

        return self._run(fetch)

    def ping(self) -> None:
        """Raise SinkUnavailable unless the database answers."""

        def probe(cursor: Any) -> None:
            cursor.execute("SELECT 1")
            cursor.fetchone()

        self._run(probe)

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def _where(
        self,
        namespace: str,
        agent: str | None,
        etype: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> tuple[str, list[Any]]:
        p = self.placeholder
        clauses = [f"namespace = {p}"]
        params: list[Any] = [namespace]
        if agent is not None:
            clauses.append(f"agent_id = {p}")
            params.append(agent)
        if etype is not None:
            clauses.append(f"event_type = {p}")
            params.append(etype)
        if since is not None:
            clauses.append(f"created_ms >= {p}")
            params.append(datetime_to_ms(validation.moment("since", since)))
        if until is not None:
            clauses.append(f"created_ms <= {p}")
            params.append(datetime_to_ms(validation.moment("until", until)))
        return " AND ".join(clauses), params
