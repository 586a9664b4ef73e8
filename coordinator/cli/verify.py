"""``coordinator verify``: the Jepsen-style checker (see coordinator/verify/)."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import click

from coordinator.cli.base import CliState, handles_errors, server_binary_option
from coordinator.cli.output import emit_json
from coordinator.verify import VerifyOptions, run_verify
from coordinator.verify.nemesis import NEMESES
from coordinator.verify.runner import SHELLS


@click.command("verify")
@click.option(
    "--duration", type=click.FloatRange(0, 86_400, min_open=True), default=10.0,
    show_default=True, help="Seconds the clients run.",
)  # fmt: skip
@click.option(
    "--clients", type=click.IntRange(1, 64), default=4, show_default=True,
    help="Client processes.",
)  # fmt: skip
@click.option(
    "--reservation-clients", type=click.IntRange(0, 64), default=2, show_default=True,
    help="Reservation client processes (each reserves and releases paths of one scope).",
)  # fmt: skip
@click.option(
    "--agents", type=click.IntRange(1, 1000), default=None,
    help="Agents the clients share (default: half the clients, at least 2).",
)  # fmt: skip
@click.option(
    "--redis-url", "verify_url", metavar="URL",
    help="Verify this Redis (in a throwaway namespace, deleted afterwards) instead of a "
    "throwaway embedded redis-server.",
)  # fmt: skip
@click.option(
    "--nemesis", "nemeses", multiple=True, type=click.Choice(["all", *NEMESES]),
    help="Fault to inject (repeatable; 'all': every one the target supports).",
)  # fmt: skip
@click.option(
    "--interval", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
    help="Mean seconds between two faults.",
)  # fmt: skip
@click.option(
    "--lease-ttl", type=click.FloatRange(0.2, 60), default=1.0, show_default=True,
    help="Lease TTL of the clients' sessions (s).",
)  # fmt: skip
@click.option(
    "--worker/--no-worker",
    default=True,
    show_default=True,
    help="Run the event worker and check the persisted audit.",
)
@click.option(
    "--sink-url",
    "verify_sink",
    metavar="URL",
    help="The worker's sink (default: a throwaway SQLite file); the run's rows stay there "
    "under its namespace.",
)
@click.option(
    "--shell", type=click.Choice(SHELLS), default="sync", show_default=True,
    help="sync: a process and a Coordinator per client. async: --tasks clients per "
    "process share one auto-pipelined AsyncCoordinator.",
)  # fmt: skip
@click.option(
    "--tasks", type=click.IntRange(1, 64), default=4, show_default=True,
    help="Clients per process with --shell async.",
)  # fmt: skip
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), help="Seed of the random choices.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@server_binary_option
@click.pass_context
@handles_errors
def verify_command(
    ctx: click.Context,
    duration: float,
    clients: int,
    reservation_clients: int,
    agents: int | None,
    verify_url: str | None,
    nemeses: tuple[str, ...],
    interval: float,
    lease_ttl: float,
    worker: bool,
    verify_sink: str | None,
    shell: str,
    tasks: int,
    seed: int | None,
    as_json: bool,
    server_binary: Path | None,
) -> None:
    """Check the coordinator's guarantees under faults, Jepsen-style.

    Client processes run random session starts, heartbeats, ends, revokes and
    compare-and-set writes, recording every operation; nemeses inject faults. Then:
    each agent's record must be linearizable, versions must rise by one, no write may
    be accepted from an expired, ended, superseded or revoked session, fencing tokens
    must increase, and the audit must match the operations one for one: the streams,
    and the sink after the event worker (run beside the clients) drained them.
    Reservation clients reserve overlapping paths: never two conflicting holders at
    once (in real time and in the audit), every grant and release audited once,
    fencing tokens strictly increasing per scope.

    Exit 0: no anomaly. Exit 1: an anomaly (the shortest counter-example is printed)
    or the run failed. Exit 2: bad arguments.
    """
    state: CliState = ctx.obj
    url = verify_url
    parent = ctx.parent
    # The group's --redis-url counts only when typed: COORDINATOR_REDIS_URL names the
    # deployment, which verify touches only when asked to explicitly.
    typed = click.core.ParameterSource.COMMANDLINE
    if url is None and parent is not None and parent.get_parameter_source("redis_url") == typed:
        url = state.redis_url
    options = VerifyOptions(
        duration=duration,
        clients=clients,
        reservation_clients=reservation_clients,
        redis_url=url,
        nemeses=nemeses,
        seed=seed,
        lease_ttl=lease_ttl,
        agents=agents,
        nemesis_interval=interval,
        worker=worker,
        sink_url=verify_sink,
        server_binary=server_binary,
        shell=shell,
        tasks=tasks,
    )
    where = "a throwaway embedded redis-server" if url is None else "the given Redis"
    click.echo(
        f"verifying {where} for {duration:g} s with {clients} clients"
        + (f" ({tasks} per auto-pipelined AsyncCoordinator)" if shell == "async" else "")
        + (f", nemeses: {', '.join(nemeses)}" if nemeses else ""),
        err=True,
    )
    # SIGTERM unwinds like Ctrl-C, so the embedded server, worker and clients stop too.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        report = run_verify(options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.render())
    if not report.ok:
        ctx.exit(1)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
