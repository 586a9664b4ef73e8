"""``coordinator upgrade-keys``: bring a namespace to this version's key schema."""

from __future__ import annotations

import click

from coordinator.cli.base import CliState, handles_errors
from coordinator.cli.output import emit_json
from coordinator.upgrade import upgrade_keys


@click.command("upgrade-keys")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@handles_errors
def upgrade_command(state: CliState, as_json: bool) -> None:
    """Upgrade the namespace's keys to this version's schema (2: fencing counters in
    keys of their own). Stop the processes of the previous version first; run it with a
    credential that may SCAN (ops). Safe to re-run."""
    report = upgrade_keys(state.settings())
    if as_json:
        emit_json(
            {
                "namespace": report.namespace,
                "previous_schema": report.previous_schema,
                "schema": report.schema,
                "agents": report.agents,
            }
        )
    else:
        before = "new" if report.previous_schema is None else report.previous_schema
        click.echo(
            f"namespace {report.namespace}: schema {before} -> {report.schema}, "
            f"{report.agents} agent(s) checked"
        )
