"""``coordinator reservations`` and ``coordinator reservation release``."""

from __future__ import annotations

from datetime import datetime

import click

from coordinator.cli.base import CliState, handles_errors
from coordinator.cli.output import duration, emit_json_array, emit_table
from coordinator.models import Reservation
from coordinator.shapes import reservation_json

RESERVATION_HEADERS = ("SCOPE", "RESOURCES", "MODE", "AGENT", "TOKEN", "EXPIRES IN", "ID", "REASON")


def reservation_row(reservation: Reservation, now: datetime) -> list[str]:
    return [
        reservation.scope,
        ", ".join(reservation.resources),
        reservation.mode,
        reservation.agent_id,
        str(reservation.fencing_token),
        duration((reservation.expires_at - now).total_seconds()),
        reservation.reservation_id,
        reservation.reason or "",
    ]


@click.command("reservations")
@click.option("--scope", help="Only this scope's reservations.")
@click.option("--agent", help="Only this agent's reservations.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a JSON array).")
@click.pass_obj
@handles_errors
def reservations_command(
    state: CliState, scope: str | None, agent: str | None, as_json: bool
) -> None:
    """List live reservations: scope, resources, mode, holder, fencing token, expiry."""
    client = state.client()
    now = client.server_time()
    found = client.list_reservations(scope=scope, agent_id=agent)
    if as_json:
        emit_json_array(reservation_json(r, now) for r in found)
        return
    if not found:
        click.echo("no live reservations", err=True)
        return
    emit_table([reservation_row(r, now) for r in found], RESERVATION_HEADERS)


@click.group("reservation")
def reservation_group() -> None:
    """Operator actions on one reservation."""


@reservation_group.command("release")
@click.argument("reservation_id")
@click.option("--reason", required=True, help="Why (recorded in the audit event).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
@handles_errors
def release_command(state: CliState, reservation_id: str, reason: str, yes: bool) -> None:
    """Release RESERVATION_ID whoever holds it (audited with the reason)."""
    client = state.client()
    if not yes:
        click.confirm(f"Release reservation {reservation_id}?", abort=True, err=True)
    if not client.release_reservation(reservation_id, reason=reason):
        raise click.ClickException(f"reservation {reservation_id!r} is not held")
    click.echo(f"released reservation {reservation_id}")
