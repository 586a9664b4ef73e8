"""``coordinator events`` (query) and ``coordinator events tail`` (follow live)."""

from __future__ import annotations

import json
import random
import time

import click

from coordinator.cli.base import CliState, handles_errors
from coordinator.cli.output import (
    EVENT_HEADERS,
    emit_json_array,
    emit_table,
    event_json,
    event_row,
    parse_when,
)
from coordinator.constants import MAX_EVENT_LIMIT
from coordinator.errors import CoordinatorUnavailable, first_line
from coordinator.failures import Backoff
from coordinator.models import EventType

_types = click.Choice([e.value for e in EventType])


@click.group("events", invoke_without_command=True)
@click.option("--agent", help="Only this agent's events.")
@click.option("--type", "event_type", type=_types, help="Only events of this type.")
@click.option("--since", help="Not before: ISO time or an age such as 10m, 2h, 1d.")
@click.option("--until", help="Not after: ISO time or an age.")
@click.option("--limit", type=click.IntRange(1, MAX_EVENT_LIMIT), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (a JSON array).")
@click.pass_context
@handles_errors
def events_group(
    ctx: click.Context,
    agent: str | None,
    event_type: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Query audit events, newest first (persisted events plus the not yet persisted tail)."""
    if ctx.invoked_subcommand is not None:
        return
    state: CliState = ctx.obj
    client = state.client()
    now = client.server_time()
    events = client.get_agent_events(
        agent_id=agent,
        event_type=event_type,
        limit=limit,
        since=None if since is None else parse_when(since, now),
        until=None if until is None else parse_when(until, now),
    )
    if as_json:
        emit_json_array(event_json(e) for e in events)
    elif events:
        emit_table([event_row(e) for e in events], EVENT_HEADERS)
    else:
        click.echo("no events", err=True)


@events_group.command("tail")
@click.option("--agent", help="Only this agent's events.")
@click.option("--type", "event_type", type=_types, help="Only events of this type.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
@handles_errors
def tail_command(state: CliState, agent: str | None, event_type: str | None, as_json: bool) -> None:
    """Follow new events live until Ctrl-C (oldest first). A lost connection (a Redis
    restart) is retried until Redis is back, resuming where it stopped."""
    client = state.client()
    positions: dict[int, str] = {}
    outage, rng = Backoff(0.2, 5.0), random.Random()
    attempt = 0
    try:
        while True:
            try:
                for event in client.follow_events(agent, event_type, positions=positions):
                    attempt = 0
                    if as_json:
                        click.echo(json.dumps(event_json(event), ensure_ascii=False))
                    else:
                        emit_table([event_row(event)], EVENT_HEADERS, header=False)
            except CoordinatorUnavailable as exc:
                if attempt == 0:
                    click.echo(f"{first_line(exc)}; reconnecting", err=True)
                time.sleep(outage.delay(attempt, rng))
                attempt += 1
                continue
    except KeyboardInterrupt:
        return
