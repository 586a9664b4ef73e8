"""``coordinator worker``: persist the audit streams to the event sink."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime

import click

from coordinator.cli.base import CliState, handles_errors
from coordinator.cli.output import emit_json
from coordinator.worker import WorkerOptions, run_worker, worker_alive

#: Every default the options show is the worker's own (``coordinator.worker.options``).
_D = WorkerOptions()


class JsonLines(logging.Formatter):
    """One JSON object per line (time, level, logger, message); never event payloads."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLines()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@click.command("worker")
@click.option(
    "--consumer", help="Consumer name (default <host>-<pid>); stable names resume faster."
)
@click.option("--batch", type=click.IntRange(1, 100_000), default=_D.batch, show_default=True,
              help="Most entries read per stream per call.")  # fmt: skip
@click.option("--block-ms", type=click.IntRange(1, 60_000), default=_D.block_ms,
              show_default=True, help="How long a read waits for new entries.")  # fmt: skip
@click.option("--claim-idle-ms", type=click.IntRange(1), default=_D.claim_idle_ms,
              show_default=True,
              help="Claim entries pending this long on another consumer.")  # fmt: skip
@click.option("--max-deliveries", type=click.IntRange(1), default=_D.max_deliveries,
              show_default=True,
              help="Retry an entry delivered more often than this alone.")  # fmt: skip
@click.option("--reap-interval", type=click.FloatRange(0, 3600), default=_D.reap_interval,
              show_default=True, help="Seconds between lease reaper runs (0: off).")  # fmt: skip
@click.option("--metrics-host", default=_D.metrics_host, show_default=True,
              help="Address of the metrics server.")  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(0, 65535), envvar="COORDINATOR_METRICS_PORT",
              help="Serve /metrics, /healthz, /readyz. [env COORDINATOR_METRICS_PORT]")  # fmt: skip
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, envvar="COORDINATOR_LOG_FORMAT",
              help="Log lines on stderr. [env COORDINATOR_LOG_FORMAT]")  # fmt: skip
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)  # fmt: skip
@click.option("--burst", is_flag=True, help="Drain everything pending and new, then exit 0.")
@click.option("--check", is_flag=True,
              help="Exit 0 if a worker of the namespace is alive, else 1.")  # fmt: skip
@click.pass_obj
@handles_errors
def worker_command(
    state: CliState,
    consumer: str | None,
    batch: int,
    block_ms: int,
    claim_idle_ms: int,
    max_deliveries: int,
    reap_interval: float,
    metrics_host: str,
    metrics_port: int | None,
    log_format: str,
    log_level: str,
    burst: bool,
    check: bool,
) -> None:
    """Persist every shard's audit stream to the sink, exactly once in effect.

    Also reaps expired leases, claims entries of dead workers, dead-letters entries it
    cannot persist and trims what it persisted. SIGTERM/SIGINT finish the batch in hand;
    a second signal exits at once.
    """
    settings = state.settings()
    if check:
        alive = asyncio.run(worker_alive(settings, consumer))
        for record in alive:
            click.echo(f"alive: {record.get('consumer', '?')} (pid {record.get('pid', '?')})")
        if not alive:
            click.echo("no live worker", err=True)
            raise SystemExit(1)
        return
    options = WorkerOptions(
        consumer=consumer,
        batch=batch,
        block_ms=block_ms,
        claim_idle_ms=claim_idle_ms,
        max_deliveries=max_deliveries,
        reap_interval=reap_interval,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        burst=burst,
    )
    _configure_logging(log_format, log_level)
    metrics = asyncio.run(run_worker(settings, options=options))
    if burst:
        emit_json(metrics.summary())
