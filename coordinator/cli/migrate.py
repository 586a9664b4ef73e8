"""``coordinator migrate-legacy``: import the original's (scribe_mcp's) data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from coordinator.cli.base import CliState, handles_errors
from coordinator.cli.output import emit_json, emit_table, iso
from coordinator.migrate import (
    DEFAULT_STATE_AGENT,
    HistoryImport,
    Report,
    Step,
    import_history,
    migrate,
    read_database,
    read_state,
)
from coordinator.paths import default_sink_url
from coordinator.sinks import sink_from_url

_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("migrate-legacy")
@click.option(
    "--sqlite",
    "sqlite_path",
    required=True,
    type=_file,
    help="The original's SQLite database (opened read-only).",
)
@click.option(
    "--state",
    "state_path",
    type=_file,
    help="The original's JSON state file (e.g. ~/.scribe/state.json).",
)
@click.option(
    "--agent",
    help=f"Agent to bind the state file's current_project to (default {DEFAULT_STATE_AGENT}, "
    "as the original did).",
)
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@handles_errors
def migrate_command(
    state: CliState,
    sqlite_path: Path,
    state_path: Path | None,
    agent: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Import scribe_mcp's agent_projects (versions preserved), its agent_project_events
    history into the event sink (original times), and bind its JSON state's
    current_project to an agent. A second run changes nothing."""
    if agent is not None and state_path is None:
        raise click.UsageError("--agent names the agent for --state's current_project")
    database = read_database(sqlite_path)
    legacy_state = read_state(state_path) if state_path is not None else None
    client = state.client()
    report = migrate(
        client,
        database,
        legacy_state,
        agent=agent or DEFAULT_STATE_AGENT,
        dry_run=dry_run,
    )
    # The sink the worker writes to: --sink-url / COORDINATOR_SINK_URL / the local
    # stack's, else the default SQLite file in the data directory.
    sink = client.sink or sink_from_url(default_sink_url())
    try:
        history = import_history(sink, client.settings.namespace, database.history, dry_run=dry_run)
    finally:
        if client.sink is None:
            sink.close()
    if as_json:
        emit_json(_report_json(report, history))
    else:
        _print(report, history)


def _action(step: Step) -> str:
    return "kept" if step.applied is False else step.kind


def _step_json(step: Step) -> dict[str, Any]:
    return {
        "action": _action(step),
        "source": step.source,
        "agent_id": step.agent_id,
        "project_name": step.project_name,
        "version": step.version,
        "note": step.note,
        "applied": step.applied,
    }


def _report_json(report: Report, imported: HistoryImport) -> dict[str, Any]:
    history = report.database.history
    legacy_state = report.state
    return {
        "dry_run": report.dry_run,
        "changed": report.changed,
        "steps": [_step_json(step) for step in report.steps],
        "state": None
        if legacy_state is None
        else {
            "current_project": legacy_state.current_project,
            "agent_id": report.agent,
            "last_agent_id": legacy_state.last_agent_id,
        },
        "events": {
            "found": len(history.events),
            "imported": imported.imported,
            "already_present": imported.already,
            "sink": imported.sink,
            "first": iso(history.first),
            "last": iso(history.last),
            "by_type": history.counts(),
        },
        "sessions_found": report.database.sessions,
        "projects_found": report.database.projects,
    }


def _print(report: Report, imported: HistoryImport) -> None:
    database, legacy_state = report.database, report.state
    click.echo(f"agent_projects: {len(database.records)} record(s) in {database.path}")
    if legacy_state is not None:
        line = f"{legacy_state.path}: current_project {legacy_state.current_project!r}"
        if legacy_state.current_project is not None:
            line += f" -> agent {report.agent!r}"
        last = legacy_state.last_agent_id
        if legacy_state.current_project is not None and last not in (None, report.agent):
            line += f" (its agent_state.last_agent_id is {last!r}: --agent {last} binds it there)"
        click.echo(line)
    if report.steps:
        rows = [
            [
                _action(s),
                s.source,
                s.agent_id,
                s.project_name or "(cleared)",
                str(s.version),
                s.note,
            ]
            for s in report.steps
        ]
        emit_table(rows, ("ACTION", "SOURCE", "AGENT", "PROJECT", "VERSION", "NOTE"))
    history = database.history
    span = f" ({iso(history.first)} .. {iso(history.last)})" if history.events else ""
    verb = "would be imported" if report.dry_run else "imported"
    click.echo(
        f"agent_project_events: {len(history.events)} event(s) found{span}; "
        f"{imported.imported} {verb} into {imported.sink}, {imported.already} already there"
    )
    click.echo(
        f"agent_sessions: {database.sessions} row(s), not imported "
        "(sessions are leases minted by the coordinator; agents start new ones)"
    )
    click.echo(
        f"scribe_projects: {database.projects} row(s), not imported "
        "(the coordinator keeps no project catalogue)"
    )
    if report.dry_run:
        click.echo(
            f"dry run: {report.changed} record(s) and {imported.imported} event(s) would "
            "change; nothing was written"
        )
    else:
        click.echo(f"{report.changed} record(s) changed")
