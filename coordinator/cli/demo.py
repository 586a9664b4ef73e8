"""``coordinator demo``: the whole mission on a throwaway local stack."""

from __future__ import annotations

import click

from coordinator.cli.main import handles_errors


@click.command("demo")
@handles_errors
def demo_command() -> None:
    """Show the whole system working, with no Redis needed, in a few seconds.

    Starts a throwaway stack (redis-server and the worker in a temporary directory);
    three server processes race project switches on shared agents with
    expected_version, an operator revokes one session, another expires; then prints
    the leases, each agent's project and version and the audit summary, and checks
    that the persisted events equal the emitted ones (exit 1 if not).
    """
    from coordinator.demo import run_demo  # spawns processes: import only when asked

    try:
        report = run_demo(say=click.echo)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"demo finished in {report.seconds:.1f}s", err=True)
    if not report.ok:
        raise click.ClickException("persisted events differ from emitted events")


def register(group: click.Group) -> None:
    group.add_command(demo_command)
