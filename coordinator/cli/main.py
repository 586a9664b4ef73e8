"""The ``coordinator`` command: the group of :mod:`coordinator.cli.base` with every
command added, one module per concept."""

from __future__ import annotations

from coordinator.cli import (
    demo,
    events,
    health,
    leases,
    mcp,
    migrate,
    projects,
    reap,
    reservations,
    stack,
    status,
    upgrade,
    verify,
    web,
    worker,
)
from coordinator.cli.base import CliState, cli, handles_errors

__all__ = ["CliState", "cli", "handles_errors", "main"]

cli.add_command(leases.leases_command)
cli.add_command(leases.lease_group)
cli.add_command(projects.project_group)
cli.add_command(events.events_group)
cli.add_command(status.status_command)
cli.add_command(health.health_command)
cli.add_command(reap.reap_command)
cli.add_command(worker.worker_command)
cli.add_command(stack.up_command)
cli.add_command(demo.demo_command)
cli.add_command(migrate.migrate_command)
cli.add_command(verify.verify_command)
cli.add_command(mcp.mcp_command)
cli.add_command(web.web_command)
cli.add_command(upgrade.upgrade_command)
cli.add_command(reservations.reservations_command)
cli.add_command(reservations.reservation_group)


def main() -> None:
    cli(prog_name="coordinator")
