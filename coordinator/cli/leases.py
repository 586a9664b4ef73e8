"""``coordinator leases``, ``coordinator lease show`` and ``coordinator lease revoke``."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import click

from coordinator.cli.base import CliState, handles_errors
from coordinator.cli.output import (
    LEASE_HEADERS,
    duration,
    emit_json,
    emit_json_array,
    emit_table,
    iso,
    lease_json,
    lease_row,
)
from coordinator.client import Coordinator
from coordinator.core import record_from
from coordinator.listing import records_plan
from coordinator.models import AgentProject, Lease
from coordinator.shapes import reservation_json


def _pages(
    client: Coordinator, agent: str | None, page_size: int
) -> Iterator[list[tuple[Lease, AgentProject | None]]]:
    """Leases joined with their agents' records, one page (one pipelined read) at a time."""
    leases = client.iter_leases(agent, page_size=page_size)
    while page := list(islice(leases, page_size)):
        # The records plan of get_current_projects, minus validating ids the listing
        # just returned (at 100,000 agents, the validation cache no longer holds them).
        agents = [lease.agent_id for lease in page]
        records = client.execute(records_plan(client.keys, agents, record_from))
        yield list(zip(page, records, strict=True))


@click.command("leases")
@click.option("--agent", help="Only this agent's lease.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a JSON array).")
@click.option(
    "--page-size",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Leases fetched per round trip.",
)
@click.pass_obj
@handles_errors
def leases_command(state: CliState, agent: str | None, as_json: bool, page_size: int) -> None:
    """List live leases: agent, session, token, expiry, last heartbeat, project.

    Streams page by page, so 100k leases never sit in memory at once.
    """
    client = state.client()
    now = client.server_time()
    pages = _pages(client, agent, page_size)
    if as_json:
        emit_json_array(lease_json(lease, rec, now) for page in pages for lease, rec in page)
        return
    widths: list[int] | None = None  # the first page sets the columns for all pages
    for page in pages:
        rows = [lease_row(lease, rec, now) for lease, rec in page]
        widths = emit_table(rows, LEASE_HEADERS, header=widths is None, widths=widths)
    if widths is None:
        click.echo("no live leases", err=True)


@click.group("lease")
def lease_group() -> None:
    """Inspect or revoke one agent's lease."""


@lease_group.command("show")
@click.argument("agent")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@handles_errors
def show_command(state: CliState, agent: str, as_json: bool) -> None:
    """Show AGENT's live lease, its project record and its session's reservations."""
    client = state.client()
    now = client.server_time()
    found = client.list_leases(agent)
    if not found:
        raise click.ClickException(f"agent {agent!r} has no live session")
    lease, record = found[0], client.get_current_project(agent)
    held = [r for r in client.list_reservations(agent_id=agent) if r.session_id == lease.session_id]
    data = lease_json(lease, record, now)
    data["reservations"] = [reservation_json(r, now) for r in held]
    if as_json:
        emit_json(data)
        return
    rows = [
        ("agent", lease.agent_id),
        ("session", lease.session_id),
        ("fencing token", str(lease.fencing_token)),
        ("started", iso(lease.started_at)),
        (
            "last heartbeat",
            f"{iso(lease.last_heartbeat)} "
            f"({duration((now - lease.last_heartbeat).total_seconds())} ago)",
        ),
        (
            "expires",
            f"{iso(lease.expires_at)} (in {duration((lease.expires_at - now).total_seconds())})",
        ),
        ("ttl", f"{lease.ttl:g}s"),
        ("project", (record.project_name or "(cleared)") if record else "(none)"),
        ("version", str(record.version) if record else "-"),
        ("metadata", "" if lease.metadata is None else str(lease.metadata)),
        *(
            (
                "reservation",
                f"{r.scope}: {', '.join(r.resources)} ({r.mode}, token {r.fencing_token}, "
                f"expires in {duration((r.expires_at - now).total_seconds())}, "
                f"{r.reservation_id})",
            )
            for r in held
        ),
    ]
    emit_table([list(r) for r in rows], ("FIELD", "VALUE"), header=False)


@lease_group.command("revoke")
@click.argument("agent")
@click.option("--reason", required=True, help="Why (recorded in the audit event).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@handles_errors
def revoke_command(state: CliState, agent: str, reason: str, yes: bool) -> None:
    """Revoke AGENT's live session; it can never write again (audited with the reason)."""
    client = state.client()
    if not yes:
        click.confirm(f"Revoke the live session of agent {agent!r}?", abort=True, err=True)
    if not client.revoke_session(agent, reason=reason):
        raise click.ClickException(f"agent {agent!r} has no live session")
    click.echo(f"revoked the live session of agent {agent!r}")
