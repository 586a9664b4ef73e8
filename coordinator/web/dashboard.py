"""What every part of the dashboard shares: its options, its state (the clients, the
guard, the event hub, the templates), request helpers, error answers and the live
stream helpers (server-sent events)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)

from coordinator import shapes
from coordinator.aio import AsyncCoordinator
from coordinator.errors import CoordinatorError, InvalidInputError
from coordinator.models import EventType, Lease
from coordinator.timestamps import datetime_to_ms
from coordinator.web.live import EventHub
from coordinator.web.security import Guard

#: Most leases on one page.
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class WebOptions:
    """How the dashboard behaves; every default is stated here."""

    #: Required for every request when set (bearer token or login cookie).
    token: str | None = None
    #: Offer the operator's revoke action (audited like ``coordinator lease revoke``).
    allow_actions: bool = False
    #: Leases per page (1 .. MAX_PAGE_SIZE).
    page_size: int = 100
    #: Seconds between re-reads of a live leases, agent or health view.
    refresh: float = 1.0
    #: Shortest time between two live event messages: events in between are coalesced.
    tail_interval: float = 0.25
    #: Event rows a live tail keeps (per page, in the browser and on the server).
    tail_rows: int = 100
    #: Seconds between keep-alive comments on an idle live stream.
    keepalive: float = 15.0


class Dashboard:
    """The state one dashboard process shares between requests.

    ``client`` reads: like ``coordinator status`` it connects to an evicting server
    too, so that the health page can show what is wrong. ``actor`` is a client with
    the configured settings for the one action (revoke): it refuses such a server,
    as the CLI's ``lease revoke`` does.
    """

    def __init__(
        self, client: AsyncCoordinator, options: WebOptions, actor: AsyncCoordinator | None = None
    ) -> None:
        self.client = client
        self.actor = actor or client
        self.options = options
        self.guard = Guard(options.token)
        self.hub = EventHub(client, buffer=options.tail_rows)
        self.templates = Environment(
            loader=PackageLoader("coordinator.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(
            iso=shapes.iso,
            duration=shapes.duration,
            ms=datetime_to_ms,
            change=shapes.event_change,
            versions=shapes.event_versions,
            keepalive=keepalive_state,
            compact=compact_json,
            size=shapes.byte_size,
            event_types=[e.value for e in EventType],
        )

    def render(self, name: str, **context: Any) -> str:
        settings = self.client.settings
        context.setdefault("namespace", settings.namespace)
        context.setdefault("redis_url", settings.safe_redis_url)
        context.setdefault("actions", self.options.allow_actions)
        context.setdefault("csrf", self.guard.csrf)
        context.setdefault("login", self.guard.token is not None)
        return self.templates.get_template(name).render(**context)


def keepalive_state(lease: Lease, now: datetime) -> str:
    """What the lease's heartbeats say: ``no heartbeat yet``, ``heartbeating`` (the last
    one within half the TTL) or ``late``."""
    if lease.last_heartbeat <= lease.started_at:
        return "no heartbeat yet"
    age = (now - lease.last_heartbeat).total_seconds()
    return "heartbeating" if age <= lease.ttl / 2 else "late"


def compact_json(value: Any, limit: int = 200) -> str:
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- request helpers ------------------------------------------------------------------


def wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidInputError(name, f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise InvalidInputError(name, f"{value} is outside {low} .. {high}")
    return value


def text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "")
    return value or None


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """Bad input answers 400 and a Redis failure 503, each with one line (as JSON to a
    JSON client); never a traceback."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidInputError as exc:
            return error_response(request, 400, str(exc))
        except CoordinatorError as exc:
            return error_response(request, 503, str(exc))

    return wrapped


def error_response(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    html = dashboard_of(request).render("error.html", title="Error", message=message, status=status)
    return HTMLResponse(html, status_code=status)


async def read_form(request: Request) -> dict[str, str]:
    body = (await request.body())[:65536].decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


# --- live streams -------------------------------------------------------------------------


def sse(event: str, data: Mapping[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def stream(messages: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        messages,
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},
    )


async def polling(
    render: Callable[[], Awaitable[Mapping[str, Any]]],
    options: WebOptions,
    interval: float | None = None,
) -> AsyncIterator[str]:
    """Re-read and send a view every ``interval``; a Redis failure is reported to the
    page and the next read tried after the interval."""
    while True:
        try:
            yield sse("html", await render())
        except CoordinatorError as exc:
            yield sse("problem", {"message": str(exc)})
        await asyncio.sleep(options.refresh if interval is None else interval)
