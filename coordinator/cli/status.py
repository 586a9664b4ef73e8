"""``coordinator status``: Redis, leases, streams, consumer-group lag and workers."""

from __future__ import annotations

import click

from coordinator.cli.base import CliState, handles_errors
from coordinator.cli.output import byte_size, duration, emit_json, emit_table
from coordinator.server import ServerFacts
from coordinator.shapes import reservation_counts
from coordinator.stats import NamespaceStats, StreamStats

STREAM_HEADERS = (
    "SHARD", "LENGTH", "LAG", "PENDING", "OLDEST PENDING", "DEAD", "CONSUMERS", "LEASES",
)  # fmt: skip


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--all-shards", is_flag=True, help="List every shard, not only those with something in them."
)
@click.pass_obj
@handles_errors
def status_command(state: CliState, as_json: bool, all_shards: bool) -> None:
    """Redis version and mode, leases, per-shard stream length, consumer-group lag,
    pending entries, oldest pending age, dead letters and live workers.

    Shows the server's kind and version, maxmemory policy, used and maximum memory
    and persistence settings. Warns on stderr (exit status still 0) on an evicting
    policy, persistence off, memory near maxmemory, no live worker or dead letters;
    `coordinator health` turns these into an exit status.
    """
    client = state.diagnostic_client()
    stats = client.stats()
    reservations = reservation_counts(client.list_reservations())
    if as_json:
        emit_json({**stats.to_json(), "reservations": reservations})
    else:
        _print(stats, all_shards, reservations)
    for warning in stats.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not stats.workers:
        click.echo(
            "warning: no worker is alive, so events are not being persisted "
            "(start `coordinator worker`, or `coordinator up` locally)",
            err=True,
        )
    if stats.dead_letters:
        click.echo(
            f"warning: {stats.dead_letters} dead-lettered event(s) in {{ns:shard}}:dead streams",
            err=True,
        )


def _server(stats: NamespaceStats) -> str:
    """``Redis 7.0.15``, ``Valkey 9.1.2``."""
    names = {"redis": "Redis", "valkey": "Valkey"}
    kinds = ",".join(names.get(k, k) for k in stats.server_kind.split(","))
    return f"{kinds} {stats.server_version}"


def _print(stats: NamespaceStats, all_shards: bool, reservations: dict[str, int]) -> None:
    replicas = "" if stats.replicas is None else f", {stats.replicas} replica(s)"
    nodes = f", {stats.redis_nodes} primaries" if stats.redis_mode == "cluster" else ""
    oldest = stats.oldest_pending_age
    lag = f"{stats.lag}{'' if stats.lag_exact else '+'}"
    rows = [
        (
            "redis",
            f"{stats.redis_url} ({_server(stats)}, {stats.redis_mode}{nodes}{replicas})",
        ),
        ("server", server_line(stats.server)),
        ("namespace", f"{stats.namespace} ({stats.shards} shards)"),
        (
            "leases",
            f"{stats.active_leases} active, {stats.expired_unreaped} expired awaiting the reaper",
        ),
        (
            "events",
            f"{stats.stream_length} in streams, lag {lag}, {stats.pending} pending"
            + ("" if oldest is None else f" (oldest {duration(oldest)})")
            + f", {stats.dead_letters} dead letters",
        ),
        ("workers", _workers(stats)),
        (
            "reservations",
            f"{reservations['held']} held in {reservations['scopes']} scope(s)",
        ),
    ]
    emit_table([list(r) for r in rows], ("FIELD", "VALUE"), header=False)
    shown = [s for s in stats.streams if all_shards or _busy(s)]
    click.echo()
    if not shown:
        click.echo(f"consumer group {stats.consumer_group!r}: every shard stream is empty")
        return
    emit_table([_stream_row(s) for s in shown], STREAM_HEADERS)
    hidden = len(stats.streams) - len(shown)
    if hidden:
        click.echo(f"({hidden} empty shard(s) not shown; --all-shards lists them)", err=True)


def server_line(facts: ServerFacts | None) -> str:
    """Maxmemory policy, memory and persistence in one line."""
    if facts is None or facts.policy is None:
        return "unknown (the server answered no INFO)"
    if facts.maxmemory:
        ratio = facts.memory_ratio or 0.0
        memory = f"{byte_size(facts.used_memory)} of {byte_size(facts.maxmemory)} ({ratio:.0%})"
    else:
        memory = f"{byte_size(facts.used_memory)} (no maxmemory)"
    if facts.aof_enabled:
        fsync = f", appendfsync {facts.appendfsync}" if facts.appendfsync else ""
        persistence = f"aof on{fsync}"
    else:
        persistence = "aof off" + (f", rdb save {facts.rdb_save!r}" if facts.rdb_save else "")
    return f"maxmemory-policy {facts.policy}, memory {memory}, {persistence}"


def _busy(stream: StreamStats) -> bool:
    return bool(stream.length or stream.pending or stream.dead_letters or stream.active_leases)


def _stream_row(s: StreamStats) -> list[str]:
    lag = "no group" if s.lag is None else f"{s.lag}{'' if s.lag_exact else '+'}"
    oldest = "-" if s.oldest_pending_age is None else duration(s.oldest_pending_age)
    return [
        str(s.shard),
        str(s.length),
        lag,
        str(s.pending),
        oldest,
        str(s.dead_letters),
        str(s.consumers),
        str(s.active_leases),
    ]


def _workers(stats: NamespaceStats) -> str:
    if not stats.workers:
        return "none alive"
    parts = []
    for worker in stats.workers:
        info = worker.info
        details = [f"{key} {info[key]}" for key in ("host", "pid") if key in info]
        if worker.idle is not None:
            details.append(f"active {duration(worker.idle)} ago")
        details.append(f"{worker.pending} pending")
        parts.append(f"{worker.consumer} ({', '.join(details)})")
    return f"{len(stats.workers)} alive: " + "; ".join(parts)
