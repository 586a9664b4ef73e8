"""``coordinator project get|set|clear``."""

from __future__ import annotations

import click

from coordinator.cli.base import CliState, handles_errors
from coordinator.cli.output import emit_json, emit_table, iso, project_json
from coordinator.errors import ConflictError, SessionLeaseExpired
from coordinator.models import AgentProject


@click.group("project")
def project_group() -> None:
    """Read or change an agent's project record."""


def _show(record: AgentProject, as_json: bool) -> None:
    if as_json:
        emit_json(project_json(record))
        return
    rows = [
        ("agent", record.agent_id),
        ("project", record.project_name or "(cleared)"),
        ("version", str(record.version)),
        ("session", record.session_id or "-"),
        ("updated", iso(record.updated_at)),
        ("fencing token", "-" if record.fencing_token is None else str(record.fencing_token)),
    ]
    emit_table([list(r) for r in rows], ("FIELD", "VALUE"), header=False)


@project_group.command("get")
@click.argument("agent")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@handles_errors
def get_command(state: CliState, agent: str, as_json: bool) -> None:
    """Show AGENT's project record."""
    record = state.client().get_current_project(agent)
    if record is None:
        raise click.ClickException(f"agent {agent!r} has no project record")
    _show(record, as_json)


def _write(
    state: CliState,
    agent: str,
    project: str | None,
    session: str,
    expected: int | None,
    request_id: str | None,
    as_json: bool,
) -> None:
    try:
        record = state.client().set_current_project(
            agent, project, session, expected, request_id=request_id
        )
    except ConflictError as exc:
        raise click.ClickException(
            f"version conflict: expected {exc.expected_version}, current {exc.actual_version}"
        ) from None
    except SessionLeaseExpired as exc:
        raise click.ClickException(f"session {session!r} cannot write: {exc.reason}") from None
    _show(record, as_json)


_session = click.option("--session", "session", required=True, help="The agent's live session id.")
_expected = click.option(
    "--expected-version", "expected", type=int, default=None,
    help="Write only if the stored version is N (0: only if there is no record).",
)  # fmt: skip
_request = click.option("--request-id", help="Idempotency key: a retry returns the first result.")
_json = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@project_group.command("set")
@click.argument("agent")
@click.argument("project")
@_session
@_expected
@_request
@_json
@click.pass_obj
@handles_errors
def set_command(
    state: CliState,
    agent: str,
    project: str,
    session: str,
    expected: int | None,
    request_id: str | None,
    as_json: bool,
) -> None:
    """Set AGENT's project to PROJECT with its live session (compare-and-set)."""
    _write(state, agent, project, session, expected, request_id, as_json)


@project_group.command("clear")
@click.argument("agent")
@_session
@_expected
@_request
@_json
@click.pass_obj
@handles_errors
def clear_command(
    state: CliState,
    agent: str,
    session: str,
    expected: int | None,
    request_id: str | None,
    as_json: bool,
) -> None:
    """Clear AGENT's project (a versioned, audited write)."""
    _write(state, agent, None, session, expected, request_id, as_json)
