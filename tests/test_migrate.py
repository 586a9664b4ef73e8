"""``coordinator migrate-legacy``: the original's SQLite data and JSON state, imported.

The fixtures are databases and state files in the original's (scribe_mcp's) schema,
built here from its documented DDL and the rows its code wrote.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from redis.crc import key_slot

from coordinator import ConflictError, Coordinator
from coordinator.cli.main import cli
from coordinator.compat import AgentContextManager
from coordinator.keys import KeySpace
from coordinator.migrate import (
    LegacyDatabase,
    migrate,
    parse_time,
    read_database,
    read_state,
)
from coordinator.settings import Settings
from coordinator.sinks import LEGACY_SHARD, sink_from_url
from coordinator.timestamps import stream_id_ms
from tests.helpers import snapshot, stream_entries

#: The original's tables (its SQLite backend's DDL for them).
LEGACY_DDL = """
CREATE TABLE scribe_projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    repo_root TEXT NOT NULL,
    progress_log_path TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE agent_sessions (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    started_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_active_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    status TEXT NOT NULL CHECK (status IN ('active','expired')) DEFAULT 'active',
    metadata TEXT
);
CREATE TABLE agent_projects (
    agent_id TEXT PRIMARY KEY,
    project_name TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_by TEXT,
    session_id TEXT,
    FOREIGN KEY(project_name) REFERENCES scribe_projects(name) ON DELETE SET NULL
);
CREATE TABLE agent_project_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    event_type TEXT NOT NULL CHECK (event_type IN ('project_set', 'project_switched',
        'session_started', 'session_ended', 'conflict_detected')),
    from_project TEXT,
    to_project TEXT NOT NULL,
    expected_version INTEGER,
    actual_version INTEGER,
    success BOOLEAN NOT NULL DEFAULT 1,
    error_message TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
"""

#: A UUID session id of the original whose first group is all digits.
DIGIT_UUID = "12345678-9abc-4def-8123-456789abcdef"

Row = tuple[Any, ...]


def legacy_db(
    path: Path,
    records: Sequence[Row] = (),
    events: Sequence[Row] = (),
    sessions: Sequence[Row] = (),
    projects: Sequence[str] = (),
) -> Path:
    """An SQLite file in the original's schema.

    records: (agent_id, project_name, version, updated_at, updated_by, session_id)
    events: (agent_id, session_id, event_type, from_project, to_project,
             expected_version, actual_version, success, error_message, metadata, created_at)
    sessions: (id, agent_id, status)
    """
    db = sqlite3.connect(path)
    db.executescript(LEGACY_DDL)
    db.executemany(
        "INSERT INTO scribe_projects (name, repo_root, progress_log_path) VALUES (?, ?, ?)",
        [(name, f"/repo/{name}", f"/repo/{name}/PROGRESS_LOG.md") for name in projects],
    )
    db.executemany(
        "INSERT INTO agent_projects (agent_id, project_name, version, updated_at, updated_by,"
        " session_id) VALUES (?, ?, ?, ?, ?, ?)",
        records,
    )
    db.executemany(
        "INSERT INTO agent_project_events (agent_id, session_id, event_type, from_project,"
        " to_project, expected_version, actual_version, success, error_message, metadata,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        events,
    )
    db.executemany("INSERT INTO agent_sessions (id, agent_id, status) VALUES (?, ?, ?)", sessions)
    db.commit()
    db.close()
    return path


def state_file(path: Path, current: Any, last_agent: str | None = "claude") -> Path:
    """The original's JSON state (``~/.scribe/state.json``)."""
    data = {
        "current_project": current,
        "projects": {"proj-s": {"root": "/repo/s", "progress_log": "/repo/s/PROGRESS_LOG.md"}},
        "recent_projects": ["proj-s"],
        "agent_state": {"last_agent_id": last_agent},
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


RECORDS: list[Row] = [
    # As the original's storage wrote them: CURRENT_TIMESTAMP text, or isoformat().
    ("agent-a", "proj-x", 4, "2024-05-01 10:00:00", "agent-a", DIGIT_UUID),
    ("agent-b", None, 2, "2024-05-02 11:30:00", "agent-b", "b-session"),
    ("agent-c", "proj-y", 1, "2024-06-01T08:30:00.250000+00:00", "migration", None),
]
EVENTS: list[Row] = [
    ("agent-a", DIGIT_UUID, "session_started", None, "", None, None, 1, None,
     '{"session_ttl_minutes": 15, "metadata": null}', "2024-05-01T09:59:59.500000+00:00"),
    ("agent-a", DIGIT_UUID, "project_set", None, "proj-w", None, 1, 1, None,
     '{"updated_by": "agent-a"}', "2024-05-01T09:59:59.900000+00:00"),
    ("agent-a", DIGIT_UUID, "project_switched", "proj-w", "proj-x", 3, 4, 1, None,
     '{"updated_by": "agent-a"}', "2024-05-01T10:00:00.100000+00:00"),
    ("agent-b", "b-session", "conflict_detected", "proj-q", "proj-r", 7, None, 0,
     "Version conflict for agent agent-b: expected version 7", '{"error_type": "ConflictError"}',
     "2024-05-02 11:29:00"),
]  # fmt: skip


@pytest.fixture
def sink_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def cli_run(redis_url: str, sink_url: str) -> Any:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(
            cli, ["--redis-url", redis_url, "--namespace", "test", "--sink-url", sink_url, *args]
        )

    return invoke


@pytest.fixture
def coord(redis_url: str) -> Iterator[Coordinator]:
    client = Coordinator.from_url(redis_url, namespace="test")
    yield client
    client.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return legacy_db(
        tmp_path / "scribe.db",
        RECORDS,
        EVENTS,
        sessions=[(DIGIT_UUID, "agent-a", "expired"), ("b-session", "agent-b", "active")],
        projects=["proj-x", "proj-y"],
    )


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def failed(result: Result, code: int) -> str:
    """The exit code, one 'Error:' line, no traceback; returns the error line."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def report(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(result).stdout)
    return data


# --- agent_projects ---------------------------------------------------------------------


def test_records_keep_their_versions_and_times(
    cli_run: Any, db: Path, coord: Coordinator, raw: redis.Redis
) -> None:
    out = ok(cli_run("migrate-legacy", "--sqlite", str(db))).stdout
    assert "3 record(s) changed" in out
    a = coord.get_current_project("agent-a")
    assert a is not None
    assert (a.project_name, a.version, a.session_id) == ("proj-x", 4, DIGIT_UUID)
    assert a.updated_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    # A UUID is not a session of this system, even when it starts with digits.
    assert a.fencing_token is None
    b = coord.get_current_project("agent-b")
    assert b is not None
    assert (b.project_name, b.version) == (None, 2)
    c = coord.get_current_project("agent-c")
    assert c is not None
    assert c.updated_at == datetime(2024, 6, 1, 8, 30, 0, 250000, tzinfo=UTC)
    assert c.session_id is None
    # One audit event per import, naming the source row; the record keeps the original
    # time, the event has its own (server) time.
    imported = [e for _, e in stream_entries(raw)]
    assert [e["event_type"] for e in imported] == ["project_imported"] * 3
    by_agent = {e["agent_id"]: e for e in imported}
    assert by_agent["agent-a"]["actual_version"] == "4"
    assert by_agent["agent-a"]["session_id"] == DIGIT_UUID
    assert json.loads(by_agent["agent-c"]["metadata"]) == {
        "source": "scribe.db:agent_projects",
        "updated_at": "2024-06-01T08:30:00.250000+00:00",
        "updated_by": "migration",
        "session_id": None,
    }


def test_after_the_switch_expected_version_keeps_working(
    cli_run: Any, db: Path, redis_url: str
) -> None:
    ok(cli_run("migrate-legacy", "--sqlite", str(db)))

    async def scenario() -> None:
        async with AgentContextManager.from_url(redis_url, namespace="test") as acm:
            # The adapter shows the record as the original did, to the second.
            record = await acm.get_current_project("agent-a")
            assert record == {
                "agent_id": "agent-a",
                "project_name": "proj-x",
                "version": 4,
                "updated_at": "2024-05-01 10:00:00",
                "updated_by": "agent-a",
                "session_id": DIGIT_UUID,
            }
            sid = await acm.start_session("agent-a")
            with pytest.raises(ConflictError):
                await acm.set_current_project("agent-a", "proj-z", sid, expected_version=3)
            written = await acm.set_current_project("agent-a", "proj-z", sid, expected_version=4)
            assert written["version"] == 5
            imported = await acm.get_agent_events(event_type="project_imported")
            assert sorted(e["agent_id"] for e in imported) == ["agent-a", "agent-b", "agent-c"]
            switched = await acm.get_agent_events("agent-a", "project_switched")
            assert switched[0]["from_project"] == "proj-x"

    asyncio.run(scenario())


def test_a_second_run_changes_nothing(
    cli_run: Any, db: Path, tmp_path: Path, raw: redis.Redis
) -> None:
    state = state_file(tmp_path / "state.json", "proj-s")
    first = report(cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state), "--json"))
    assert first["changed"] == 4
    before = snapshot(raw)
    again = report(cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state), "--json"))
    assert again["changed"] == 0
    assert {s["action"] for s in again["steps"]} == {"keep"}
    assert {s["note"] for s in again["steps"]} == {"already imported", "already bound"}
    assert snapshot(raw) == before
    assert "0 record(s) changed" in ok(cli_run("migrate-legacy", "--sqlite", str(db))).stdout


def test_versions_never_go_down(
    cli_run: Any, tmp_path: Path, coord: Coordinator, raw: redis.Redis
) -> None:
    s = coord.start_session("higher")
    for i in range(6):
        coord.set_current_project("higher", f"h{i}", s.session_id)
    low = coord.start_session("lower")
    coord.set_current_project("lower", "recent", low.session_id)
    same = coord.start_session("same")
    coord.set_current_project("same", "x", same.session_id)
    coord.set_current_project("same", "ours", same.session_id)
    db = legacy_db(
        tmp_path / "scribe.db",
        [
            ("higher", "legacy", 4, "2024-01-01 00:00:00", "higher", None),
            ("lower", "legacy", 3, "2024-01-01 00:00:00", "lower", None),
            ("same", "legacy", 2, "2024-01-01 00:00:00", "same", None),
        ],
    )
    kept_higher = coord.get_current_project("higher")
    kept_same = coord.get_current_project("same")
    steps = report(cli_run("migrate-legacy", "--sqlite", str(db), "--json"))["steps"]
    assert [(s["agent_id"], s["action"], s["version"]) for s in steps] == [
        ("higher", "keep", 6),
        ("lower", "import", 3),
        ("same", "keep", 2),
    ]
    assert coord.get_current_project("higher") == kept_higher
    assert coord.get_current_project("same") == kept_same
    lower = coord.get_current_project("lower")
    assert lower is not None
    assert (lower.project_name, lower.version) == ("legacy", 3)
    # The import is audited with what it replaced.
    [(_, event)] = [e for e in stream_entries(raw) if e[1]["event_type"] == "project_imported"]
    assert (event["from_project"], event["to_project"]) == ("recent", "legacy")
    assert (event["expected_version"], event["actual_version"]) == ("1", "3")
    # The superseded-by-import record still fences: the live session writes version 4.
    assert coord.set_current_project("lower", "next", low.session_id).version == 4


def test_dry_run_prints_the_plan_and_writes_nothing(
    cli_run: Any, db: Path, tmp_path: Path, raw: redis.Redis, coord: Coordinator
) -> None:
    state = state_file(tmp_path / "state.json", "proj-s")
    coord.get_current_project("warm-up")  # connecting records the namespace, as any command
    before = snapshot(raw)
    out = ok(cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state), "--dry-run"))
    assert snapshot(raw) == before
    lines = out.stdout.splitlines()
    assert "dry run: 4 record(s) and 4 event(s) would change; nothing was written" in lines
    table = [line.split() for line in lines if line.startswith(("import", "bind", "keep"))]
    assert [row[:5] for row in table] == [
        ["import", "agent_projects", "agent-a", "proj-x", "4"],
        ["import", "agent_projects", "agent-b", "(cleared)", "2"],
        ["import", "agent_projects", "agent-c", "proj-y", "1"],
        ["bind", "state", "Scribe", "proj-s", "1"],
    ]
    planned = report(
        cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state), "--dry-run", "--json")
    )
    done = report(cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state), "--json"))
    assert planned["dry_run"] is True
    assert [{**s, "applied": None} for s in done["steps"]] == planned["steps"]
    assert all(s["applied"] is True for s in done["steps"])


def test_a_record_changed_after_planning_is_left_alone(
    db: Path, coord: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each import re-checks the stored version inside its script.
    s = coord.start_session("agent-a")
    for i in range(5):
        coord.set_current_project("agent-a", f"p{i}", s.session_id)
    kept = coord.get_current_project("agent-a")
    stale = coord.get_current_projects
    monkeypatch.setattr(coord, "get_current_projects", lambda agents: [None for _ in agents])
    result = migrate(coord, read_database(db))
    monkeypatch.setattr(coord, "get_current_projects", stale)
    step = result.steps[0]
    assert (step.agent_id, step.kind, step.applied, step.version) == ("agent-a", "import", False, 5)
    assert step.note == "changed meanwhile: p4 at version 5"
    assert result.changed == 2
    assert coord.get_current_project("agent-a") == kept


# --- the JSON state ---------------------------------------------------------------------


def test_state_current_project_is_bound_to_scribe_by_default(
    cli_run: Any, tmp_path: Path, coord: Coordinator
) -> None:
    db = legacy_db(tmp_path / "scribe.db")
    state = state_file(tmp_path / "state.json", "  proj-s ")
    out = ok(cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state))).stdout
    assert "current_project 'proj-s' -> agent 'Scribe'" in out
    assert "last_agent_id is 'claude'" in out  # a hint, not a default
    record = coord.get_current_project("Scribe")
    assert record is not None
    assert (record.project_name, record.version, record.session_id) == ("proj-s", 1, None)
    assert coord.get_current_project("claude") is None


def test_state_binds_to_the_named_agent(cli_run: Any, tmp_path: Path, coord: Coordinator) -> None:
    db = legacy_db(tmp_path / "scribe.db")
    state = state_file(tmp_path / "state.json", "proj-s")
    args = ("migrate-legacy", "--sqlite", str(db), "--state", str(state), "--agent", "claude")
    ok(cli_run(*args))
    record = coord.get_current_project("claude")
    assert record is not None
    assert record.project_name == "proj-s"
    assert coord.get_current_project("Scribe") is None


def test_the_database_wins_over_the_state_file(
    cli_run: Any, tmp_path: Path, coord: Coordinator
) -> None:
    # As in the original's own migration: an agent with a project keeps it.
    db = legacy_db(
        tmp_path / "scribe.db", [("Scribe", "from-db", 7, "2024-01-01 00:00:00", "Scribe", None)]
    )
    state = state_file(tmp_path / "state.json", "proj-s")
    steps = report(cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state), "--json"))[
        "steps"
    ]
    assert [(s["action"], s["project_name"], s["note"]) for s in steps] == [
        ("import", "from-db", ""),
        ("keep", "from-db", "already has a project"),
    ]
    record = coord.get_current_project("Scribe")
    assert record is not None
    assert (record.project_name, record.version) == ("from-db", 7)


def test_a_cleared_record_takes_the_state_project_at_the_next_version(
    cli_run: Any, tmp_path: Path, coord: Coordinator
) -> None:
    db = legacy_db(
        tmp_path / "scribe.db", [("Scribe", None, 2, "2024-01-01 00:00:00", "Scribe", None)]
    )
    state = state_file(tmp_path / "state.json", "proj-s")
    ok(cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state)))
    record = coord.get_current_project("Scribe")
    assert record is not None
    assert (record.project_name, record.version) == ("proj-s", 3)


def test_a_state_without_a_current_project_binds_nothing(
    cli_run: Any, tmp_path: Path, raw: redis.Redis
) -> None:
    db = legacy_db(tmp_path / "scribe.db")
    for current in (None, "", "   "):
        state = state_file(tmp_path / "state.json", current)
        data = report(
            cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state), "--json")
        )
        assert (data["changed"], data["steps"]) == (0, [])
        assert data["state"]["current_project"] is None
    assert stream_entries(raw) == []


# --- the event history ------------------------------------------------------------------


def test_the_event_history_is_imported_into_the_sink_once(
    cli_run: Any, db: Path, raw: redis.Redis, sink_url: str, redis_url: str
) -> None:
    dry = ok(cli_run("migrate-legacy", "--sqlite", str(db), "--dry-run")).stdout
    assert "4 would be imported into sqlite:///" in dry
    with sink_from_url(sink_url) as sink:
        assert sink.count("test") == 0  # a dry run writes nothing
    out = ok(cli_run("migrate-legacy", "--sqlite", str(db))).stdout
    line = next(x for x in out.splitlines() if x.startswith("agent_project_events"))
    assert line == (
        "agent_project_events: 4 event(s) found (2024-05-01T09:59:59.500Z .. "
        f"2024-05-02T11:29:00.000Z); 4 imported into {sink_url}, 0 already there"
    )
    assert "agent_sessions: 2 row(s), not imported" in out
    assert "scribe_projects: 2 row(s), not imported" in out
    events = report(cli_run("migrate-legacy", "--sqlite", str(db), "--json"))["events"]
    assert (events["found"], events["imported"], events["already_present"]) == (4, 0, 4)
    assert events["by_type"] == {
        "session_started": 1,
        "project_set": 1,
        "project_switched": 1,
        "conflict_detected": 1,
    }
    # The history went to the sink with its original times, not into the streams...
    assert {e["event_type"] for _, e in stream_entries(raw)} == {"project_imported"}
    history = read_database(db).history
    with sink_from_url(sink_url) as sink:
        stored = list(sink.events("test"))
    assert [(e.event_type.value, e.created_at) for e in stored] == [
        (e.event_type, e.created_at) for e in history.events
    ]
    assert {e.shard for e in stored} == {LEGACY_SHARD}
    # ...and is listed by the clients and by the adapter, newest first, with the rest.
    with Coordinator.from_url(redis_url, namespace="test", sink_url=sink_url) as client:
        listed = client.get_agent_events(limit=100)
    assert [e.event_type.value for e in listed if e.shard == LEGACY_SHARD] == [
        e.event_type for e in reversed(history.events)
    ]
    assert len(listed) == 4 + len(stream_entries(raw))


def test_legacy_events_are_parsed_with_their_original_times(db: Path) -> None:
    history = read_database(db).history
    assert [e.event_type for e in history.events] == [
        "session_started",
        "project_set",
        "project_switched",
        "conflict_detected",
    ]
    first, _, switched, conflict = history.events
    assert first.created_at == datetime(2024, 5, 1, 9, 59, 59, 500000, tzinfo=UTC)
    assert first.metadata == {"session_ttl_minutes": 15, "metadata": None}
    assert first.to_project is None  # the original's '' for "no project"
    assert (switched.from_project, switched.to_project) == ("proj-w", "proj-x")
    assert (switched.expected_version, switched.actual_version) == (3, 4)
    assert conflict.success is False
    assert conflict.created_at == datetime(2024, 5, 2, 11, 29, tzinfo=UTC)
    assert history.first == first.created_at
    assert history.last == conflict.created_at


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01 10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00+00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00.5+02:00", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2024-05-01 10:00:00.123456+00:00", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ],
)
def test_parse_time_reads_every_form_the_original_wrote(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


# --- bad input --------------------------------------------------------------------------


def _with_row(tmp_path: Path, records: Sequence[Row] = (), events: Sequence[Row] = ()) -> Path:
    good = ("agent-ok", "proj", 1, "2024-01-01 00:00:00", "agent-ok", None)
    return legacy_db(tmp_path / "bad.db", [good, *records], events)


@pytest.mark.parametrize(
    ("records", "events", "message"),
    [
        ([(" padded", "p", 1, "2024-01-01 00:00:00", None, None)], [], "agent_id=' padded'"),
        ([("a", "p\n", 1, "2024-01-01 00:00:00", None, None)], [], "project_name"),
        ([("a", "p", 0, "2024-01-01 00:00:00", None, None)], [], "version must be at least 1"),
        ([("a", "p", "three", "2024-01-01 00:00:00", None, None)], [], "version"),
        ([("a", "p", 1, "yesterday", None, None)], [], "yesterday"),
        ([("a", "p", 1, "2024-01-01 00:00:00", None, "s\x00")], [], "printable"),
        (
            [],
            [("a", "s", "project_set", None, "p", None, 1, 1, None, "{not json", "2024-01-01")],
            "metadata is not JSON",
        ),
        (
            [],
            [("a", "s", "project_set", None, "p", None, 1, 1, None, None, "later")],
            "agent_project_events row id=1",
        ),
    ],
)
def test_invalid_legacy_rows_stop_everything(
    cli_run: Any,
    tmp_path: Path,
    raw: redis.Redis,
    records: list[Row],
    events: list[Row],
    message: str,
) -> None:
    db = _with_row(tmp_path, records, events)
    before = snapshot(raw)
    assert message in failed(cli_run("migrate-legacy", "--sqlite", str(db)), 2)
    assert snapshot(raw) == before  # not even the valid row was imported


def test_files_that_are_not_the_originals_are_usage_errors(
    cli_run: Any, tmp_path: Path, db: Path, raw: redis.Redis
) -> None:
    before = snapshot(raw)
    assert "does not exist" in failed(
        cli_run("migrate-legacy", "--sqlite", str(tmp_path / "missing.db")), 2
    )
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some text\n" * 20)
    assert "not a readable SQLite database" in failed(
        cli_run("migrate-legacy", "--sqlite", str(text)), 2
    )
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE agent_projects (agent_id TEXT PRIMARY KEY, project TEXT)")
    other.close()
    message = failed(cli_run("migrate-legacy", "--sqlite", str(tmp_path / "other.db")), 2)
    assert "not a scribe_mcp database: table agent_projects lacks project_name" in message
    broken = tmp_path / "state.json"
    for content in (
        "{not json",
        "[1, 2]",
        '{"current_project": 5}',
        '{"current_project": "a\\tb"}',
    ):
        broken.write_text(content)
        failed(cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(broken)), 2)
    state = state_file(tmp_path / "good.json", "proj-s")
    assert "--agent" in failed(cli_run("migrate-legacy", "--sqlite", str(db), "--agent", "x"), 2)
    failed(
        cli_run("migrate-legacy", "--sqlite", str(db), "--state", str(state), "--agent", " x"),
        2,
    )
    assert snapshot(raw) == before


def test_unreachable_redis_is_an_operational_error(db: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--redis-url", "redis://127.0.0.1:1/0", "migrate-legacy", "--sqlite", str(db)]
    )
    assert "unavailable" in failed(result, 1)


def test_read_functions_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        read_database(tmp_path / "missing.db")
    with pytest.raises(ValueError, match="cannot read"):
        read_state(tmp_path / "missing.json")


# --- the scripts ------------------------------------------------------------------------


def test_import_and_log_calls_touch_one_hash_slot(db: Path, tmp_path: Path) -> None:
    from coordinator.core import CoordinatorCore
    from coordinator.migrate import import_op, plan

    database: LegacyDatabase = read_database(db)
    state = read_state(state_file(tmp_path / "state.json", "proj-s"))
    operations = CoordinatorCore(Settings(namespace="coord", shards=16))
    keys = operations.keys
    for step in plan(database, state, "Scribe", {}):
        call = import_op(operations, step, db).call
        assert len({key_slot(k.encode()) for k in call.keys}) == 1
        assert call.keys[1] == keys.stream(keys.shard_of(step.agent_id))
    log = operations.log_event("agent-1", "", "note", "", None, None, None, True, None, None)
    call = log.call
    assert call.keys == (keys.stream(keys.shard_of("agent-1")),)


def test_imported_record_times_come_from_the_event_id(
    cli_run: Any, db: Path, raw: redis.Redis
) -> None:
    ok(cli_run("migrate-legacy", "--sqlite", str(db)))
    keys = KeySpace("test", 16)
    pe = raw.hget(keys.agent("agent-a"), "pe")
    assert pe == f"{int(datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp() * 1000)}-0"
    assert stream_id_ms(str(pe)) == 1714557600000
