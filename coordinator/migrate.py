"""Import the original's (scribe_mcp's) data: ``coordinator migrate-legacy``.

What moves, and how:

- ``agent_projects`` rows become project records with their versions preserved, so a
  caller's ``expected_version`` keeps working after the switch. A record is imported
  only when it is newer (a higher version) than the agent's stored one, so versions
  never go down and a second run changes nothing. The record keeps the original's
  ``updated_at`` (its event id is the synthetic ``<updated_at ms>-0``); each import is
  one atomic script with its ``project_imported`` audit event.
- The JSON state file's ``current_project`` is bound to an agent, ``Scribe`` by
  default as the original did, unless that agent already has a project (the
  database wins, as in the original's own migration).
- ``agent_project_events`` history is read and validated here; importing it needs the
  event sink (see :class:`EventHistory`).
- ``agent_sessions`` and ``scribe_projects`` are counted, not imported: sessions are
  leases minted by the coordinator, and it keeps no project catalogue.

Everything is read and validated before anything is written: one bad row stops the
migration with nothing changed (:class:`~coordinator.errors.InvalidInputError`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from coordinator import validation
from coordinator.calls import Op
from coordinator.client import Coordinator
from coordinator.compat import EVENT_KEYS, RECORD_KEYS
from coordinator.constants import MAX_AGENT_ID_LENGTH
from coordinator.core import CoordinatorCore
from coordinator.errors import InvalidInputError
from coordinator.models import AgentProject
from coordinator.sinks import LEGACY_SHARD, EventRow, Sink
from coordinator.timestamps import datetime_to_ms

#: The agent the original bound the JSON state's ``current_project`` to.
DEFAULT_STATE_AGENT: Final = "Scribe"
#: Columns the importer reads (the original's); a database without them is not the original's.
RECORD_COLUMNS: Final = RECORD_KEYS
EVENT_COLUMNS: Final = EVENT_KEYS
#: The only event types the original's schema allowed (its CHECK constraint).
LEGACY_EVENT_TYPES: Final = frozenset(
    {"project_set", "project_switched", "session_started", "session_ended", "conflict_detected"}
)
#: Longest legacy session id kept on an imported record.
MAX_LEGACY_SESSION_ID: Final = 256
#: Agents whose records are read per round trip while planning.
READ_BATCH: Final = 500


# --- the original's data ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegacyRecord:
    """One ``agent_projects`` row, validated."""

    agent_id: str
    project_name: str | None
    version: int
    updated_at: datetime
    updated_by: str | None
    session_id: str | None


@dataclass(frozen=True, slots=True)
class LegacyEvent:
    """One ``agent_project_events`` row, validated, with its original time."""

    id: int
    agent_id: str
    session_id: str | None
    event_type: str
    from_project: str | None
    to_project: str | None
    expected_version: int | None
    actual_version: int | None
    success: bool
    error_message: str | None
    metadata: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EventHistory:
    """The original's event history, oldest first, ready for the event sink.

    :func:`import_history` writes these rows to the sink with their original times
    under shard :data:`~coordinator.sinks.LEGACY_SHARD`, keyed by the legacy ``id``
    (stream id ``<created ms>-<id>``), so importing twice stores each row once.
    """

    events: tuple[LegacyEvent, ...]

    @property
    def first(self) -> datetime | None:
        return self.events[0].created_at if self.events else None

    @property
    def last(self) -> datetime | None:
        return self.events[-1].created_at if self.events else None

    def counts(self) -> dict[str, int]:
        """Events per type."""
        found: dict[str, int] = {}
        for event in self.events:
            found[event.event_type] = found.get(event.event_type, 0) + 1
        return found


@dataclass(frozen=True, slots=True)
class LegacyDatabase:
    """What the importer read from the original's SQLite file."""

    path: Path
    records: tuple[LegacyRecord, ...]
    history: EventHistory
    #: Rows of ``agent_sessions`` and ``scribe_projects`` (counted, not imported).
    sessions: int
    projects: int


@dataclass(frozen=True, slots=True)
class LegacyState:
    """What the importer read from the original's JSON state file."""

    path: Path
    current_project: str | None
    #: ``agent_state.last_agent_id`` (shown as a hint; the original did not bind to it).
    last_agent_id: str | None
    projects: int


def parse_time(value: object) -> datetime:
    """A timestamp as the original stored it: ``CURRENT_TIMESTAMP`` text
    (``2025-01-31 12:00:00``, UTC) or ``isoformat()`` text with or without a zone."""
    if not isinstance(value, str):
        raise ValueError(f"a timestamp must be text, not {type(value).__name__}")
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if datetime_to_ms(parsed) <= 0:
        raise ValueError(f"{value!r} is not after 1970")
    return parsed.astimezone(UTC)


def _text(value: object, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise ValueError(f"{value!r:.80} is not printable text of at most {limit} characters")
    return value


def _record(row: sqlite3.Row) -> LegacyRecord:
    version = validation.version(row["version"], "version")
    if version < 1:
        raise ValueError("version must be at least 1 (every write of the original counted)")
    return LegacyRecord(
        agent_id=validation.agent_id(row["agent_id"]),
        project_name=validation.project_name(row["project_name"] or None),
        version=version,
        updated_at=parse_time(row["updated_at"]),
        updated_by=_text(row["updated_by"], MAX_AGENT_ID_LENGTH),
        session_id=_text(row["session_id"], MAX_LEGACY_SESSION_ID),
    )


def _event(row: sqlite3.Row) -> LegacyEvent:
    if row["event_type"] not in LEGACY_EVENT_TYPES:
        raise ValueError(f"event_type {row['event_type']!r} is not one of the original's")
    if type(row["id"]) is not int or row["success"] not in (0, 1):
        raise ValueError("id must be an integer and success 0 or 1")
    try:
        metadata = validation.decode_metadata(row["metadata"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"metadata is not JSON: {exc}") from None
    return LegacyEvent(
        id=row["id"],
        agent_id=validation.agent_id(row["agent_id"]),
        session_id=_text(row["session_id"], MAX_LEGACY_SESSION_ID),
        event_type=row["event_type"],
        from_project=validation.project_name(row["from_project"] or None),
        to_project=validation.project_name(row["to_project"] or None),
        expected_version=validation.optional_version(row["expected_version"]),
        actual_version=validation.optional_version(row["actual_version"], "actual_version"),
        success=bool(row["success"]),
        error_message=_text(row["error_message"], 65536),
        metadata=metadata,
        created_at=parse_time(row["created_at"]),
    )


def _bad(path: Path, message: str) -> InvalidInputError:
    return InvalidInputError("legacy data", f"{path}: {message}")


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def read_database(path: Path) -> LegacyDatabase:
    """Read and validate the original's SQLite file (opened read-only).

    Raises InvalidInputError when the file is missing, is not SQLite, lacks the
    original's tables, or holds a row this system cannot represent.
    """
    if not path.is_file():
        raise _bad(path, "no such file")
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _bad(path, f"cannot open: {exc}") from None
    db.row_factory = sqlite3.Row
    try:
        for table, needed in (
            ("agent_projects", RECORD_COLUMNS),
            ("agent_project_events", EVENT_COLUMNS),
        ):
            missing = [c for c in needed if c not in _columns(db, table)]
            if missing:
                raise _bad(
                    path,
                    f"not a scribe_mcp database: table {table} lacks {', '.join(missing)}",
                )
        records = tuple(_rows(db, path, "agent_projects", "agent_id", _record, RECORD_COLUMNS))
        events = tuple(_rows(db, path, "agent_project_events", "id", _event, EVENT_COLUMNS))
        return LegacyDatabase(
            path=path,
            records=records,
            history=EventHistory(tuple(sorted(events, key=lambda e: (e.created_at, e.id)))),
            sessions=_count(db, "agent_sessions"),
            projects=_count(db, "scribe_projects"),
        )
    except sqlite3.DatabaseError as exc:
        raise _bad(path, f"not a readable SQLite database: {exc}") from None
    finally:
        db.close()


def _rows(
    db: sqlite3.Connection,
    path: Path,
    table: str,
    key: str,
    parse: Any,
    columns: Sequence[str],
) -> Iterable[Any]:
    for row in db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {key}"):
        try:
            yield parse(row)
        except ValueError as exc:  # InvalidInputError is one
            raise _bad(path, f"{table} row {key}={row[key]!r}: {exc}") from None


def _count(db: sqlite3.Connection, table: str) -> int:
    if not _columns(db, table):
        return 0
    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def read_state(path: Path) -> LegacyState:
    """Read the original's JSON state file. Raises InvalidInputError when it is
    missing, not a JSON object, or names a project this system cannot represent."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _bad(path, f"cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"not a JSON state file: {exc}") from None
    if not isinstance(data, dict):
        raise _bad(path, "not a JSON state file: the top level is not an object")
    current = data.get("current_project")
    if current is not None and not isinstance(current, str):
        raise _bad(path, "current_project is not a string")
    agent_state = data.get("agent_state")
    last = agent_state.get("last_agent_id") if isinstance(agent_state, dict) else None
    projects = data.get("projects")
    try:
        # The original stripped the name before binding it.
        project = validation.project_name((current or "").strip() or None)
    except InvalidInputError as exc:
        raise _bad(path, f"current_project: {exc}") from None
    return LegacyState(
        path=path,
        current_project=project,
        last_agent_id=last if isinstance(last, str) else None,
        projects=len(projects) if isinstance(projects, dict) else 0,
    )


# --- planning (pure) --------------------------------------------------------------------

StepKind = Literal["import", "bind", "keep"]


@dataclass(frozen=True, slots=True)
class Step:
    """One record the migration imports, binds or keeps as it is."""

    kind: StepKind
    source: Literal["agent_projects", "state"]
    agent_id: str
    #: What the record holds after the step.
    project_name: str | None
    version: int
    #: Why a record is kept, or what an import replaces.
    note: str = ""
    record: LegacyRecord | None = field(default=None, repr=False)
    #: Set once executed: False when the script found a newer record meanwhile.
    applied: bool | None = None

    @property
    def changes(self) -> bool:
        return self.kind != "keep" and self.applied is not False


def _describe(record: AgentProject | None) -> str:
    if record is None:
        return "no record"
    return f"{record.project_name or '(cleared)'!s} at version {record.version}"


def plan(
    database: LegacyDatabase,
    state: LegacyState | None,
    agent: str,
    current: Mapping[str, AgentProject | None],
) -> list[Step]:
    """The steps that bring the stored records (``current``, by agent) up to the legacy
    data. Mirrors ``import_project.lua``, which re-checks each step atomically."""
    known: dict[str, tuple[str | None, int]] = {
        a: (r.project_name, r.version) for a, r in current.items() if r is not None
    }
    steps: list[Step] = []
    for legacy in database.records:
        stored = current.get(legacy.agent_id)
        if stored is None or legacy.version > stored.version:
            note = "" if stored is None else f"replaces {_describe(stored)}"
            steps.append(
                Step("import", "agent_projects", legacy.agent_id, legacy.project_name,
                     legacy.version, note, legacy)
            )  # fmt: skip
            known[legacy.agent_id] = (legacy.project_name, legacy.version)
            continue
        same = (stored.project_name, stored.version) == (legacy.project_name, legacy.version)
        note = "already imported" if same else f"stored {_describe(stored)} is as new or newer"
        steps.append(
            Step("keep", "agent_projects", legacy.agent_id, stored.project_name, stored.version,
                 note, legacy)
        )  # fmt: skip
    if state is not None and state.current_project is not None:
        project, at = known.get(agent, (None, 0))
        if project is not None:
            note = "already has a project" if project != state.current_project else "already bound"
            steps.append(Step("keep", "state", agent, project, at, note))
        else:
            steps.append(Step("bind", "state", agent, state.current_project, at + 1))
    return steps


# --- encoding (pure) --------------------------------------------------------------------


def import_op(
    operations: CoordinatorCore, step: Step, source: Path
) -> Op[tuple[bool, str | None, int]]:
    """The import or bind operation of a step; decodes (imported, project, version)."""
    legacy = step.record
    if legacy is None:
        meta: dict[str, Any] = {"source": f"{source.name}:current_project"}
        return operations.import_project(step.agent_id, step.project_name, None, None, None, meta)
    meta = {
        "source": f"{source.name}:agent_projects",
        "updated_at": legacy.updated_at.isoformat(),
        "updated_by": legacy.updated_by,
        "session_id": legacy.session_id,
    }
    return operations.import_project(
        step.agent_id,
        step.project_name,
        legacy.version,
        legacy.session_id,
        datetime_to_ms(legacy.updated_at),
        meta,
    )


# --- running ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """What a migration did (or, in a dry run, would do)."""

    database: LegacyDatabase
    state: LegacyState | None
    agent: str
    steps: list[Step]
    dry_run: bool

    @property
    def changed(self) -> int:
        return sum(1 for step in self.steps if step.changes)


def migrate(
    client: Coordinator,
    database: LegacyDatabase,
    state: LegacyState | None = None,
    *,
    agent: str = DEFAULT_STATE_AGENT,
    dry_run: bool = False,
) -> Report:
    """Import ``database`` (and bind ``state``'s project to ``agent``) into the
    client's namespace, or only plan it with ``dry_run``. Per agent each step is
    atomic; a step whose record changed meanwhile is reported as not applied.
    Raises InvalidInputError, CoordinatorUnavailable."""
    agent = validation.agent_id(agent)
    agents = list(dict.fromkeys([*(r.agent_id for r in database.records), agent]))
    current: dict[str, AgentProject | None] = {}
    for start in range(0, len(agents), READ_BATCH):
        batch = agents[start : start + READ_BATCH]
        current.update(zip(batch, client.get_current_projects(batch), strict=True))
    steps = plan(database, state, agent, current)
    if not dry_run:
        for i, step in enumerate(steps):
            if step.kind == "keep":
                continue
            origin = state.path if state is not None and step.source == "state" else database.path
            op = import_op(client.operations, step, origin)
            applied, project, version = client.execute(op)
            note = step.note if applied else f"changed meanwhile: {project} at version {version}"
            steps[i] = replace(step, applied=applied, version=version, note=note)
    return Report(database, state, agent, steps, dry_run)


# --- event history ----------------------------------------------------------------------


def legacy_row(namespace: str, event: LegacyEvent) -> EventRow:
    """The sink row of one legacy event: its original time, its legacy id as identity."""
    ms = datetime_to_ms(event.created_at)
    metadata = None if event.metadata is None else json.dumps(event.metadata)
    return (
        namespace, LEGACY_SHARD, f"{ms}-{event.id}", ms, event.id, event.agent_id,
        event.session_id, event.event_type, event.from_project, event.to_project,
        event.expected_version, event.actual_version, event.success, event.error_message,
        metadata, None,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistoryImport:
    """What importing the event history did (or, in a dry run, would do)."""

    found: int
    #: Rows stored now (dry run: rows not yet in the sink).
    imported: int
    sink: str

    @property
    def already(self) -> int:
        return self.found - self.imported


def import_history(
    sink: Sink, namespace: str, history: EventHistory, *, dry_run: bool = False, batch: int = 2000
) -> HistoryImport:
    """Write the history to ``sink`` in batches (insert-or-ignore: idempotent).
    Raises SinkUnavailable."""
    rows = [legacy_row(namespace, event) for event in history.events]
    if dry_run:
        stored = sink.stream_ids(namespace, LEGACY_SHARD)
        new = sum(1 for row in rows if row[2] not in stored)
        return HistoryImport(len(rows), new, sink.location)
    imported = sum(sink.write(rows[i : i + batch]) for i in range(0, len(rows), batch))
    return HistoryImport(len(rows), imported, sink.location)
