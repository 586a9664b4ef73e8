"""deploy/postgres-roles.sql on the test PostgreSQL: the worker's role may INSERT and
SELECT the events table and nothing else, and the sink and the real worker work under
it; a role that cannot create the tables gets a typed error, not an endless retry."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from click.testing import CliRunner

from coordinator import Coordinator, SinkAccessDenied
from coordinator.cli.main import cli
from coordinator.sinks import sink_from_url
from coordinator.sinks.postgres import _SCHEMA
from tests.helpers import PG_URL
from tests.test_sinks import row

ROLES_SQL = Path(__file__).resolve().parent.parent / "deploy" / "postgres-roles.sql"


def as_role(database_url: str, role: str) -> str:
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{role}@{host}", parts.path, "", ""))


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A database of its own with deploy/postgres-roles.sql applied (twice: idempotent)."""
    from tests.helpers import postgres_reachable

    problem = postgres_reachable()
    if problem is not None:
        if os.environ.get("COORDINATOR_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL at {PG_URL} is required (CI) but unreachable: {problem}")
        pytest.skip(f"PostgreSQL at {PG_URL} unreachable: {problem}")
    import psycopg

    name = f"roles_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(PG_URL)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    try:
        for _ in range(2):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(ROLES_SQL.read_text())  # type: ignore[arg-type]
        yield url
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def clean(database: str) -> str:
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("TRUNCATE coordinator.agent_project_events")
    return database


def _statements(sql: str) -> list[str]:
    return [" ".join(s.split()) for s in sql.split(";") if s.strip()]


def test_the_file_creates_the_sinks_own_tables() -> None:
    shipped = {" ".join(line.split()) for line in _statements(ROLES_SQL.read_text())}
    missing = [s for s in _statements(_SCHEMA) if s not in shipped]
    assert missing == []
    code = [line for line in ROLES_SQL.read_text().splitlines() if not line.startswith("--")]
    assert not re.search(r"PASSWORD", "\n".join(code))  # no secret shipped


def test_the_worker_role_appends_and_reads_and_nothing_else(clean: str) -> None:
    import psycopg

    url = as_role(clean, "coordinator_worker")
    with sink_from_url(url) as sink:
        assert sink.write([row(1), row(2)]) == 2
        assert sink.write([row(2), row(3)]) == 1  # re-delivery ignored, as always
        assert sink.count("ns") == 3
        assert [e.to_project for e in sink.query("ns", limit=2)] == ["p3", "p2"]
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in (
            "UPDATE agent_project_events SET to_project = 'forged'",
            "DELETE FROM agent_project_events",
            "TRUNCATE agent_project_events",
            "DROP TABLE agent_project_events",
            "ALTER TABLE agent_project_events DROP COLUMN to_project",
            "DELETE FROM coordinator_sink_schema",
            "INSERT INTO coordinator_sink_schema VALUES (99)",
            "CREATE TABLE coordinator.x (a int)",
            "SELECT setval('agent_project_events_id_seq', 1)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)  # type: ignore[arg-type]
    with sink_from_url(as_role(clean, "coordinator_reader")) as reader:
        assert reader.count("ns") == 3
        with pytest.raises(SinkAccessDenied) as info:
            reader.write([row(4)])
        assert info.value.location == reader.location


def test_a_role_that_cannot_create_the_tables_gets_a_typed_error(database: str) -> None:
    # The public schema, where nobody but its owner may create (PostgreSQL 15+ default,
    # and this database's): the tables are missing there and cannot be made.
    url = as_role(database, "coordinator_worker") + "?options=-csearch_path%3Dpublic"
    with sink_from_url(url) as sink, pytest.raises(SinkAccessDenied) as info:
        sink.write([row(1)])
    assert "refused access" in str(info.value)


def test_the_worker_runs_under_the_worker_role(clean: str, redis_url: str) -> None:
    sink_url = as_role(clean, "coordinator_worker")
    with Coordinator.from_url(redis_url, namespace="pgroles") as c:
        s = c.start_session("agent-1")
        c.set_current_project("agent-1", "a", s.session_id)
    env = {
        "COORDINATOR_REDIS_URL": redis_url,
        "COORDINATOR_NAMESPACE": "pgroles",
        "COORDINATOR_SINK_URL": sink_url,
    }
    result = CliRunner().invoke(cli, ["worker", "--burst", "--consumer", "w1"], env=env)
    assert result.exit_code == 0, result.output
    with sink_from_url(sink_url) as sink:
        assert sink.count("pgroles") == 2
    with redis.Redis.from_url(redis_url) as raw:
        raw.flushall()


def test_a_worker_without_insert_stops_and_dead_letters_nothing(clean: str, redis_url: str) -> None:
    with Coordinator.from_url(redis_url, namespace="pgroles") as c:
        s = c.start_session("agent-1")
        c.set_current_project("agent-1", "a", s.session_id)
    env = {
        "COORDINATOR_REDIS_URL": redis_url,
        "COORDINATOR_NAMESPACE": "pgroles",
        "COORDINATOR_SINK_URL": as_role(clean, "coordinator_reader"),  # may only read
    }
    result = CliRunner().invoke(cli, ["worker", "--burst", "--consumer", "w1"], env=env)
    assert result.exit_code == 1, result.output
    assert "refused access" in result.output
    assert "Traceback" not in result.output
    with redis.Redis.from_url(redis_url, decode_responses=True) as raw:
        shards = [f"{{pgroles:{i}}}" for i in range(16)]
        assert all(raw.xlen(f"{tag}:dead") == 0 for tag in shards)
        assert sum(raw.xlen(f"{tag}:events") for tag in shards) == 2  # nothing trimmed
        raw.flushall()


def test_the_compose_init_script_sets_up_the_roles_with_passwords(tmp_path: Path) -> None:
    """deploy/postgres-init.sh as the postgres image runs it at first start (as the
    superuser, on POSTGRES_DB), here on a fresh database of the test server."""
    import shutil
    import subprocess

    import psycopg

    if shutil.which("psql") is None:
        if os.environ.get("COORDINATOR_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("psql is required (CI) to run deploy/postgres-init.sh")
        pytest.skip("psql not installed")
    name = f"init_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(PG_URL)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    env = {
        **os.environ,
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_DB": name,
        "COORDINATOR_ROLES_SQL": str(ROLES_SQL),
        "POSTGRES_WORKER_PASSWORD": "worker-secret-1",
        "POSTGRES_READER_PASSWORD": "reader-secret-1",
    }
    script = ROLES_SQL.parent / "postgres-init.sh"
    try:
        done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        # Sourced, as the image does with a script that is not executable: the same.
        sourced = subprocess.run(
            ["sh", "-c", f". {script}; echo still-here"], env=env, capture_output=True, text=True
        )
        assert sourced.returncode == 0, sourced.stderr
        assert "still-here" in sourced.stdout
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT rolname, rolpassword IS NOT NULL FROM pg_authid "
                "WHERE rolname IN ('coordinator_worker', 'coordinator_reader')"
            ).fetchall()
        assert sorted(rows) == [("coordinator_reader", True), ("coordinator_worker", True)]
        # The worker's role appends and reads; the reader's only reads.
        with sink_from_url(as_role(url, "coordinator_worker")) as sink:
            sink.prepare()
            assert sink.write([row(1)]) == 1
        with sink_from_url(as_role(url, "coordinator_reader")) as sink:
            assert sink.count("ns") == 1
            with pytest.raises(SinkAccessDenied):
                sink.write([row(2)])
        # Without a password the script refuses before touching the database.
        missing = {k: v for k, v in env.items() if k != "POSTGRES_READER_PASSWORD"}
        refused = subprocess.run(["sh", str(script)], env=missing, capture_output=True, text=True)
        assert refused.returncode != 0
        assert "POSTGRES_READER_PASSWORD" in refused.stderr
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
