"""``coordinator reap``: audit every lapsed lease once, now."""

from __future__ import annotations

import click

from coordinator.cli.base import CliState, handles_errors
from coordinator.cli.output import emit_json


@click.command("reap")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@handles_errors
def reap_command(state: CliState, as_json: bool) -> None:
    """Turn every lease whose TTL ran out into a session_expired event; print the count."""
    reaped = state.client().cleanup_expired_sessions()
    if as_json:
        emit_json({"reaped": reaped})
    else:
        click.echo(reaped)
