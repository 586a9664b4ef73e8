"""``coordinator health``: exit 0 when healthy, 1 when not, one line per failed check."""

from __future__ import annotations

import click

from coordinator.cli.base import CliState
from coordinator.cli.output import emit_json
from coordinator.client import Coordinator
from coordinator.errors import CoordinatorError, InvalidInputError, first_line
from coordinator.health import CHECKS, Health, Thresholds, evaluate, unreachable

_D = Thresholds()


@click.command("health")
@click.option(
    "--json", "as_json", is_flag=True, help="Every check as JSON (exit status as without)."
)
@click.option("--max-lag", type=click.IntRange(0), default=_D.max_lag, show_default=True,
              help="Most entries not yet delivered to the worker.")  # fmt: skip
@click.option("--max-pending-age", type=click.FloatRange(0), default=_D.max_pending_age,
              show_default=True,
              help="Most seconds the oldest unacknowledged entry may wait.")  # fmt: skip
@click.option("--max-dead-letters", type=click.IntRange(0), default=_D.max_dead_letters,
              show_default=True, help="Most dead-lettered events.")  # fmt: skip
@click.option("--min-workers", type=click.IntRange(0), default=_D.min_workers,
              show_default=True, help="Fewest live workers.")  # fmt: skip
@click.option("--max-memory", type=click.FloatRange(0, 1), default=_D.max_memory_ratio,
              show_default=True, help="Highest share of maxmemory in use.")  # fmt: skip
@click.option("--skip", "skipped", multiple=True, type=click.Choice(CHECKS),
              help="Leave a check out (repeatable), e.g. --skip worker.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=5.0, show_default=True,
              help="Seconds to wait for Redis before reporting it unreachable.")  # fmt: skip
@click.pass_obj
def health_command(
    state: CliState,
    as_json: bool,
    max_lag: int,
    max_pending_age: float,
    max_dead_letters: int,
    min_workers: int,
    max_memory: float,
    skipped: tuple[str, ...],
    timeout: float,
) -> None:
    """Check Redis and the namespace for an operator or a probe: Redis reachable,
    maxmemory-policy noeviction, persistence on, memory below --max-memory, live
    workers, lag and oldest pending entry below their limits, no dead letters.

    Exit 0 when every check passes; else 1, printing one line per failed check
    (`--json`: every check). Usable as a Kubernetes exec probe or a systemd
    ExecStartPre/timer check; reads only.
    """
    limits = Thresholds(max_lag, max_pending_age, max_dead_letters, min_workers, max_memory)
    settings = state.settings(
        allow_eviction=True,  # report an evicting server; do not refuse to look at it
        retry_attempts=1,
        socket_timeout=timeout,
        connect_timeout=timeout,
    )
    try:
        with Coordinator(settings) as client:
            report: Health = evaluate(client.stats(), limits, skipped)
    except InvalidInputError as exc:
        raise click.UsageError(str(exc)) from None
    except CoordinatorError as exc:
        report = unreachable(first_line(exc), skipped)
    if as_json:
        emit_json(report.to_json())
    else:
        for check in report.failed:
            click.echo(f"{check.name}: {check.detail}")
        if report.healthy:
            click.echo(f"healthy ({len(report.checks)} checks passed)")
    if not report.healthy:
        raise SystemExit(1)
