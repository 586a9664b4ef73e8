"""``coordinator up``: the local stack (Redis + worker) in the foreground."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from coordinator.cli.base import CliState, handles_errors, server_binary_option
from coordinator.errors import StackRunning
from coordinator.local.stack import LocalStack
from coordinator.paths import default_data_dir
from coordinator.settings import Settings


@click.command("up")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where Redis's append-only files and the SQLite events live "
    "(default: $COORDINATOR_DATA_DIR or the user data directory).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="TCP port for Redis (default: last one used here, else free).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve the worker's Prometheus metrics here.",
)
@server_binary_option
@click.pass_obj
@handles_errors
def up_command(
    state: CliState,
    data_dir: Path | None,
    port: int | None,
    metrics_port: int | None,
    server_binary: Path | None,
) -> None:
    """Run Redis and the event worker (with the lease reaper) until Ctrl-C.

    State survives a restart (append-only persistence). Other processes connect with
    the environment variables printed at start; other `coordinator` commands find the
    stack by themselves.
    """
    folder = (data_dir or default_data_dir()).expanduser()
    namespace = Settings.from_env(namespace=state.namespace).namespace
    worker_args = () if metrics_port is None else ("--metrics-port", str(metrics_port))
    stack = LocalStack(
        folder,
        namespace=namespace,
        port=port,
        worker_args=worker_args,
        server_binary=server_binary,
    )
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    # A closed terminal (SIGHUP) stops the stack in order too; a SIGKILL takes the
    # children along by their parent-death signal (see LocalStack).
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, request_stop) for sig in signals}
    try:
        try:
            info = stack.start()
        except StackRunning as exc:
            hint = ""
            if exc.info is not None:
                hint = f"; connect with COORDINATOR_REDIS_URL={exc.info.redis_url} or stop it first"
            raise click.ClickException(f"{exc}{hint}") from None
        click.echo(f"coordinator stack running in {info.data_dir} (pid {os.getpid()})")
        click.echo(
            f"  redis   {info.redis_url}" + (f"  (or {info.unix_url})" if info.unix_url else "")
        )
        click.echo(f"  server  {stack.server_name()}")
        click.echo(f"  events  {info.sink_url}")
        click.echo("other processes connect with:")
        for name, value in info.environment().items():
            click.echo(f"  export {name}={value}")
        click.echo("press Ctrl-C to stop", err=True)
        while not stopping.wait(0.5):
            stack.supervise()
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped", err=True)
