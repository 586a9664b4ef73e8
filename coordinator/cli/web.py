"""``coordinator web``: the live dashboard (the ``web`` extra)."""

from __future__ import annotations

import click

from coordinator.cli.base import CliState, handles_errors

#: Shortest token accepted for a dashboard reachable from other machines.
MIN_TOKEN_LENGTH = 16


@click.command("web")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="COORDINATOR_WEB_HOST",
    help="Address to bind; anything but loopback needs --token. [env COORDINATOR_WEB_HOST]",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8470,
    show_default=True,
    envvar="COORDINATOR_WEB_PORT",
    help="Port (0: any free one, printed). [env COORDINATOR_WEB_PORT]",
)
@click.option(
    "--token",
    envvar="COORDINATOR_WEB_TOKEN",
    help="Require this token (Authorization: Bearer, or the login form); prefer the "
    "environment variable, which `ps` does not show. [env COORDINATOR_WEB_TOKEN]",
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Offer the operator's revoke (with a reason and a confirmation; audited).",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="Leases per page.",
)
@click.pass_obj
@handles_errors
def web_command(
    state: CliState, host: str, port: int, token: str | None, allow_actions: bool, page_size: int
) -> None:
    """Serve the live dashboard (leases, agents, events, health) until Ctrl-C.

    Read-only unless --allow-actions. Each page also answers JSON
    (Accept: application/json or ?format=json) with the fields of the CLI's --json.
    """
    try:
        from coordinator.web import WebOptions, create_app
        from coordinator.web.security import is_loopback
        from coordinator.web.server import Server, config
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs the web extra ({exc.name} is missing): "
            "pip install 'agent-coordinator[web]'"
        ) from None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise click.BadParameter(
            f"use at least {MIN_TOKEN_LENGTH} characters", param_hint="--token"
        )
    if not is_loopback(host) and not token:
        raise click.UsageError(
            f"binding to {host} would show the dashboard to other machines: give --token "
            "(or COORDINATOR_WEB_TOKEN), or bind 127.0.0.1"
        )
    options = WebOptions(token=token, allow_actions=allow_actions, page_size=page_size)
    app = create_app(state.settings(), options)
    mode = "actions enabled" if allow_actions else "read-only"
    gate = ", token required" if token else ""

    def bound(url: str) -> None:
        click.echo(f"dashboard on {url}/ ({mode}{gate}); Ctrl-C stops", err=True)

    Server(config(app, host, port), on_bound=bound).run()
