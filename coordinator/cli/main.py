"""The ``coordinator`` command group."""

from __future__ import annotations

import click

from coordinator import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="coordinator")
def cli() -> None:
    """agent-coordinator: shared agent sessions, project records and audit events."""


def main() -> None:
    cli()
