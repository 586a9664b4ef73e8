"""Bytes per persisted audit event in the event sinks (SQLite file, PostgreSQL table
with its indexes), for docs/operations.md's sizing.

Real events: ``--agents`` agents each start a session (metadata ``{"host": "h-N"}``)
and write ``--writes`` project records on a throwaway redis-server; their stream
entries are persisted with the worker's own row encoding (``entry_row``) into a fresh
SQLite file and, with ``--postgres URL`` (a server database this run may create
and drop a scratch database in), a fresh PostgreSQL database. Size = file size /
``pg_database_size`` delta after ``VACUUM ANALYZE``, divided by the events.

    python bench/bench_sink_size.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from coordinator import Coordinator, EmbeddedRedis
from coordinator.events import entry_row
from coordinator.keys import KeySpace
from coordinator.sinks import EventRow, sink_from_url

NAMESPACE = "bench"
SHARDS = 16
SCRATCH_DB = "coordinator_sink_size_bench"


def make_rows(folder: Path, agents: int, writes: int) -> list[EventRow]:
    with (
        EmbeddedRedis(folder / "redis", port=0, unix_socket=False, appendonly=False) as server,
        Coordinator.from_url(server.url, namespace=NAMESPACE, shards=SHARDS) as c,
        contextlib.closing(server.client(decode_responses=True)) as r,
    ):
        for i in range(agents):
            agent = f"agent-{i:08x}"
            s = c.start_session(agent, metadata={"host": f"h-{i % 100}"})
            for w in range(writes):
                c.set_current_project(agent, f"project-{(i + w) % 500}", s.session_id)
        keys = KeySpace(NAMESPACE, SHARDS)
        rows = []
        for shard in range(SHARDS):
            for entry_id, fields in r.xrange(keys.stream(shard)):
                rows.append(entry_row(NAMESPACE, shard, entry_id, fields))
        return rows


def write_all(url: str, rows: list[EventRow]) -> None:
    sink = sink_from_url(url)
    try:
        for start in range(0, len(rows), 1000):
            sink.write(rows[start : start + 1000])
    finally:
        sink.close()


def sqlite_size(folder: Path, rows: list[EventRow]) -> dict[str, Any]:
    empty, full = folder / "empty.db", folder / "events.db"
    write_all(f"sqlite:///{empty}", [])
    write_all(f"sqlite:///{full}", rows)
    import sqlite3

    for path in (empty, full):
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("VACUUM")
    delta = full.stat().st_size - empty.stat().st_size
    return {"bytes_per_event": round(delta / len(rows)), "file_bytes": full.stat().st_size}


def postgres_size(admin_url: str, rows: list[EventRow]) -> dict[str, Any]:
    import psycopg

    parts = urlsplit(admin_url)
    scratch = urlunsplit(parts._replace(path=f"/{SCRATCH_DB}"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB}")
        admin.execute(f"CREATE DATABASE {SCRATCH_DB}")
    try:
        write_all(scratch, [])  # the schema, empty
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            before = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        write_all(scratch, rows)
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            after = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            table = conn.execute("SELECT pg_total_relation_size('agent_project_events')").fetchone()
        assert before is not None
        assert after is not None
        assert table is not None
        return {
            "bytes_per_event": round((after[0] - before[0]) / len(rows)),
            "table_and_indexes_bytes_per_event": round(table[0] / len(rows)),
        }
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=5_000)
    parser.add_argument("--writes", type=int, default=3, help="project writes per agent")
    parser.add_argument("--postgres", help="admin URL of a PostgreSQL server (optional)")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = make_rows(Path(tmp), opts.agents, opts.writes)
        report: dict[str, Any] = {
            "events": len(rows),
            "note": "session_started with {'host': 'h-N'} + project writes; "
            "14-character agent ids, project names of 11 characters",
            "sqlite": sqlite_size(Path(tmp), rows),
        }
        if opts.postgres:
            report["postgresql"] = postgres_size(opts.postgres, rows)
    text = json.dumps(report, indent=2)
    print(text)
    if opts.json:
        opts.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
