"""``coordinator demo``: the whole mission on a throwaway local stack."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from coordinator.cli.base import handles_errors, server_binary_option
from coordinator.cli.output import LEASE_HEADERS, emit_table, lease_row

if TYPE_CHECKING:
    from coordinator.local.demo import DemoReport


@click.command("demo")
@server_binary_option
@handles_errors
def demo_command(server_binary: Path | None) -> None:
    """Show the whole system working, with no Redis needed, in a few seconds.

    Starts a throwaway stack (redis-server and the worker in a temporary directory);
    three server processes race project switches on shared agents with
    expected_version, an operator revokes one session, another expires; then prints
    the leases, each agent's project and version and the audit summary, and checks
    that the persisted events equal the emitted ones (exit 1 if not).
    """
    from coordinator.local.demo import run_demo  # spawns processes: import only when asked

    try:
        report = run_demo(say=click.echo, server_binary=server_binary)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    print_report(report)
    click.echo(f"demo finished in {report.seconds:.1f}s", err=True)
    if not report.ok:
        raise click.ClickException("persisted events differ from emitted events")


def print_report(report: DemoReport) -> None:
    """The leases, each agent's project against the writes it won, and the audit."""
    from coordinator.local.demo import RACERS, SLEEPER

    click.echo("\nleases:")
    now = report.server_time
    rows = [lease_row(lease, report.records.get(lease.agent_id), now) for lease in report.leases]
    emit_table(rows, LEASE_HEADERS)
    click.echo("\nprojects (version = writes won):")
    for agent in [*RACERS, SLEEPER]:
        name, version = report.projects.get(agent, (None, 0))
        won = len(report.winners.get(agent, ()))
        click.echo(f"  {agent:6s} {name or '-':12s} version {version:3d}  writes won {won:3d}")
    click.echo("\naudit events (emitted / persisted):")
    for kind in sorted(set(report.emitted) | set(report.persisted)):
        click.echo(f"  {kind:20s} {report.emitted[kind]:5d} / {report.persisted[kind]:5d}")
    for problem in report.check():
        click.echo(f"MISMATCH: {problem}")
    if report.ok:
        click.echo("\nok: every emitted event was persisted exactly once")
