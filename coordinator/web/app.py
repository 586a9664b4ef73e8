"""The dashboard's ASGI application (Starlette): pages, their JSON form, live streams.

Every page answers HTML to a browser and JSON to ``Accept: application/json`` or
``?format=json``, with the fields of the matching CLI command's ``--json``
(:mod:`coordinator.shapes`). Live data arrives as server-sent events: ``html``
messages replace a part of the page (leases, an agent, health: re-read every
``refresh`` seconds), ``prepend`` messages add new event rows (coalesced, see
:mod:`coordinator.web.live`). Everything shown is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from coordinator import shapes
from coordinator.aio import AsyncCoordinator
from coordinator.constants import MAX_EVENT_LIMIT
from coordinator.errors import CoordinatorError, InvalidInputError
from coordinator.models import AgentEvent, EventType, Lease
from coordinator.settings import Settings
from coordinator.timestamps import datetime_to_ms
from coordinator.web.findings import health_of
from coordinator.web.live import EventHub
from coordinator.web.queries import AgentView, LeasePage, agent_view, lease_page
from coordinator.web.security import COOKIE, Guard, GuardMiddleware

log = logging.getLogger(__name__)

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
            size=byte_size,
            event_types=[e.value for e in EventType],
        )

    def render(self, name: str, request: Request | None = None, **context: Any) -> str:
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


def byte_size(value: int | None) -> str:
    """``512 B``, ``3.2 MiB``; ``?`` when unknown."""
    if value is None:
        return "?"
    amount, unit = float(value), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            break
        amount /= 1024
    return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"


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


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
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


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "")
    return value or None


def _dashboard(request: Request) -> Dashboard:
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
            return _error(request, 400, str(exc))
        except CoordinatorError as exc:
            return _error(request, 503, str(exc))

    return wrapped


def _error(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    html = _dashboard(request).render("error.html", title="Error", message=message, status=status)
    return HTMLResponse(html, status_code=status)


# --- leases -----------------------------------------------------------------------------


def _lease_query(request: Request) -> tuple[int, int, str | None]:
    options = _dashboard(request).options
    size = _int(request, "page_size", options.page_size, 1, MAX_PAGE_SIZE)
    return _int(request, "page", 1, 1, 10**9) - 1, size, _text(request, "agent")


def lease_page_json(data: LeasePage) -> dict[str, Any]:
    live = [row for row in data.rows if row.lease is not None]
    lapsed = [row for row in data.rows if row.lease is None]
    return {
        "server_time": shapes.iso(data.now),
        "page": data.page + 1,
        "pages": data.pages,
        "page_size": data.page_size,
        "total": data.total,
        "leases": [shapes.lease_json(row.lease, row.record, data.now) for row in live if row.lease],
        "expired_unreaped": [
            {
                "agent_id": row.agent_id,
                "expired_at": shapes.iso(row.deadline),
                "project_name": row.record.project_name if row.record else None,
                "project_version": row.record.version if row.record else None,
            }
            for row in lapsed
        ],
    }


def _lease_context(data: LeasePage, agent: str | None) -> dict[str, Any]:
    def link(number: int) -> str:
        query: dict[str, Any] = {"page": number, "page_size": data.page_size}
        if agent:
            query["agent"] = agent
        return "/leases?" + urlencode(query)

    return {
        "data": data,
        "agent": agent,
        "now_ms": datetime_to_ms(data.now),
        "prev_link": link(data.page) if data.page > 0 else None,
        "next_link": link(data.page + 2) if data.page + 1 < data.pages else None,
    }


@page
async def leases(request: Request) -> Response:
    dashboard = _dashboard(request)
    number, size, agent = _lease_query(request)
    data = await lease_page(dashboard.client, number, size, agent)
    if wants_json(request):
        return JSONResponse(lease_page_json(data))
    query = {"page": number + 1, "page_size": size, **({"agent": agent} if agent else {})}
    html = dashboard.render(
        "leases.html",
        title="Leases",
        active="leases",
        live_url="/leases/live?" + urlencode(query),
        **_lease_context(data, agent),
    )
    return HTMLResponse(html)


@page
async def leases_live(request: Request) -> Response:
    dashboard = _dashboard(request)
    number, size, agent = _lease_query(request)
    if agent is not None:
        await lease_page(dashboard.client, 0, 1, agent)  # a bad agent id: 400, not a stream

    async def render() -> Mapping[str, Any]:
        data = await lease_page(dashboard.client, number, size, agent)
        html = dashboard.render("_lease_view.html", **_lease_context(data, agent))
        return {"html": html, "now": datetime_to_ms(data.now)}

    return _stream(_polling(render, dashboard.options))


# --- one agent ----------------------------------------------------------------------------


@page
async def agent(request: Request) -> Response:
    dashboard = _dashboard(request)
    agent_id = request.query_params.get("id", "")
    view = await agent_view(dashboard.client, agent_id)
    if wants_json(request):
        return JSONResponse(
            {
                "agent_id": view.agent_id,
                "server_time": shapes.iso(view.now),
                "lease": None if view.lease is None else _lease_show(view),
                "project": None if view.record is None else shapes.project_json(view.record),
                "sessions": [s.to_json() for s in view.sessions],
                "timeline": [shapes.event_json(e) for e in view.timeline],
            }
        )
    html = dashboard.render(
        "agent.html",
        title=f"Agent {view.agent_id}",
        active="agent",
        view=view,
        now_ms=datetime_to_ms(view.now),
        events=view.events[: dashboard.options.tail_rows],
        live_url="/agent/live?" + urlencode({"id": view.agent_id}),
        tail_url="/events/live?" + urlencode({"agent": view.agent_id}),
        revoked=request.query_params.get("revoked"),
    )
    return HTMLResponse(html)


def _lease_show(view: AgentView) -> dict[str, Any]:
    """As ``coordinator lease show --json``."""
    assert view.lease is not None
    data = shapes.lease_json(view.lease, view.record, view.now)
    data["reservations"] = [shapes.reservation_json(r, view.now) for r in view.reservations]
    return data


@page
async def agent_live(request: Request) -> Response:
    dashboard = _dashboard(request)
    agent_id = request.query_params.get("id", "")
    await agent_view(dashboard.client, agent_id, limit=1)  # a bad id: 400, not a stream

    async def render() -> Mapping[str, Any]:
        view = await agent_view(dashboard.client, agent_id)
        html = dashboard.render("_agent_view.html", view=view, now_ms=datetime_to_ms(view.now))
        return {"html": html, "now": datetime_to_ms(view.now)}

    return _stream(_polling(render, dashboard.options, interval=2 * dashboard.options.refresh))


def _refuse_action(request: Request, dashboard: Dashboard) -> Response | None:
    if not dashboard.options.allow_actions:
        return _error(request, 403, "actions are off: start the dashboard with --allow-actions")
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return _error(request, 403, "cross-origin request refused")
    return None


def _check_action_form(
    request: Request, dashboard: Dashboard, form: Mapping[str, str]
) -> Response | None:
    """The CSRF token, the confirmation and a reason (raises InvalidInputError)."""
    if not dashboard.guard.csrf_matches(form.get("csrf", "")):
        return _error(request, 403, "missing or stale form token: reload the page")
    if form.get("confirm") != "yes":
        raise InvalidInputError("confirm", "tick the confirmation")
    if not form.get("reason", "").strip():
        raise InvalidInputError("reason", "say why (it is recorded in the audit event)")
    return None


@page
async def revoke(request: Request) -> Response:
    """The operator's revoke: a reason, a confirmation, the page's CSRF token."""
    dashboard = _dashboard(request)
    refused = _refuse_action(request, dashboard)
    if refused is not None:
        return refused
    form = await _form(request)
    problem = _check_action_form(request, dashboard, form)
    if problem is not None:
        return problem
    agent_id, reason = form.get("agent", ""), form.get("reason", "").strip()
    revoked = await dashboard.actor.revoke_session(agent_id, reason=reason)
    client = request.client.host if request.client else "?"
    log.warning("web: revoke of agent %r by %s: %s", agent_id, client, revoked)
    if wants_json(request):
        return JSONResponse({"agent_id": agent_id, "revoked": revoked})
    if not revoked:
        return _error(request, 409, f"agent {agent_id!r} has no live session")
    return RedirectResponse("/agent?" + urlencode({"id": agent_id, "revoked": "1"}), 303)


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body())[:65536].decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


# --- events -------------------------------------------------------------------------------


@page
async def events(request: Request) -> Response:
    dashboard = _dashboard(request)
    agent_id, event_type = _text(request, "agent"), _text(request, "type")
    since_text = _text(request, "since")
    limit = _int(request, "limit", 50, 1, MAX_EVENT_LIMIT)
    now = await dashboard.client.server_time()
    since = None if since_text is None else shapes.parse_when(since_text, now)
    found = await dashboard.client.get_agent_events(
        agent_id=agent_id, event_type=event_type, limit=limit, since=since
    )
    if wants_json(request):
        return JSONResponse([shapes.event_json(e) for e in found])
    live = {k: v for k, v in (("agent", agent_id), ("type", event_type)) if v}
    html = dashboard.render(
        "events.html",
        title="Events",
        active="events",
        events=found,
        agent=agent_id or "",
        event_type=event_type or "",
        since=since_text or "",
        limit=limit,
        max_rows=max(limit, dashboard.options.tail_rows),
        tail_url="/events/live?" + urlencode(live),
    )
    return HTMLResponse(html)


@page
async def events_live(request: Request) -> Response:
    dashboard = _dashboard(request)
    agent_id, event_type = _text(request, "agent"), _text(request, "type")
    # Validate before streaming: a bad filter answers 400, not an empty stream.
    await dashboard.client.get_agent_events(agent_id=agent_id, event_type=event_type, limit=1)
    return _stream(_tail(dashboard, agent_id, event_type))


async def _tail(
    dashboard: Dashboard, agent_id: str | None, event_type: str | None
) -> AsyncIterator[str]:
    options = dashboard.options
    async with dashboard.hub.subscribe(agent_id, event_type) as subscription:
        yield ": following\n\n"
        while True:
            try:
                fresh, dropped = await asyncio.wait_for(subscription.take(), options.keepalive)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            yield _sse("prepend", {"html": _event_rows(dashboard, fresh, dropped)})
            await asyncio.sleep(options.tail_interval)  # what arrives meanwhile is coalesced


def _event_rows(dashboard: Dashboard, fresh: list[AgentEvent], dropped: int) -> str:
    newest_first = list(reversed(fresh))
    return dashboard.render("_event_rows.html", events=newest_first, skipped=dropped, fresh=True)


# --- health -------------------------------------------------------------------------------


@page
async def health(request: Request) -> Response:
    dashboard = _dashboard(request)
    stats = await dashboard.client.stats()
    held = await _reservation_counts(dashboard)
    report, found = health_of(stats)
    if wants_json(request):
        # ``coordinator status --json`` and, under "health", ``coordinator health --json``.
        return JSONResponse({**stats.to_json(), "reservations": held, "health": report.to_json()})
    html = dashboard.render(
        "health.html",
        title="Health",
        active="health",
        stats=stats,
        findings=found,
        reservations=held,
    )
    return HTMLResponse(html)


@page
async def health_live(request: Request) -> Response:
    dashboard = _dashboard(request)

    async def render() -> Mapping[str, Any]:
        stats = await dashboard.client.stats()
        html = dashboard.render(
            "_health_view.html",
            stats=stats,
            findings=health_of(stats)[1],
            reservations=await _reservation_counts(dashboard),
        )
        return {"html": html, "now": datetime_to_ms(stats.server_time)}

    return _stream(_polling(render, dashboard.options, interval=2 * dashboard.options.refresh))


async def _reservation_counts(dashboard: Dashboard) -> dict[str, int]:
    """As in ``coordinator status --json``."""
    held = await dashboard.client.list_reservations()
    return {"held": len(held), "scopes": len({r.scope for r in held})}


# --- reservations -------------------------------------------------------------------------


@page
async def reservations(request: Request) -> Response:
    dashboard = _dashboard(request)
    scope, agent_id = _text(request, "scope"), _text(request, "agent")
    now = await dashboard.client.server_time()
    found = await dashboard.client.list_reservations(scope=scope, agent_id=agent_id)
    if wants_json(request):
        return JSONResponse([shapes.reservation_json(r, now) for r in found])
    query = {k: v for k, v in (("scope", scope), ("agent", agent_id)) if v}
    html = dashboard.render(
        "reservations.html",
        title="Reservations",
        active="reservations",
        reservations=found,
        now=now,
        now_ms=datetime_to_ms(now),
        scope=scope or "",
        agent=agent_id or "",
        live_url="/reservations/live?" + urlencode(query),
    )
    return HTMLResponse(html)


@page
async def reservations_live(request: Request) -> Response:
    dashboard = _dashboard(request)
    scope, agent_id = _text(request, "scope"), _text(request, "agent")
    await dashboard.client.list_reservations(scope=scope, agent_id=agent_id)  # bad input: 400

    async def render() -> Mapping[str, Any]:
        now = await dashboard.client.server_time()
        found = await dashboard.client.list_reservations(scope=scope, agent_id=agent_id)
        html = dashboard.render(
            "_reservation_view.html", reservations=found, now=now, scope=scope, agent=agent_id
        )
        return {"html": html, "now": datetime_to_ms(now)}

    return _stream(_polling(render, dashboard.options))


@page
async def release(request: Request) -> Response:
    """The operator's release of a reservation: a reason, a confirmation, the CSRF token."""
    dashboard = _dashboard(request)
    refused = _refuse_action(request, dashboard)
    if refused is not None:
        return refused
    form = await _form(request)
    problem = _check_action_form(request, dashboard, form)
    if problem is not None:
        return problem
    reservation_id, reason = form.get("reservation", ""), form.get("reason", "").strip()
    released = await dashboard.actor.release_reservation(reservation_id, reason=reason)
    client = request.client.host if request.client else "?"
    log.warning("web: release of reservation %r by %s: %s", reservation_id, client, released)
    if wants_json(request):
        return JSONResponse({"reservation_id": reservation_id, "released": released})
    if not released:
        return _error(request, 409, f"reservation {reservation_id!r} is not held")
    return RedirectResponse("/reservations?released=1", 303)


# --- live streams -------------------------------------------------------------------------


def _sse(event: str, data: Mapping[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _stream(messages: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        messages,
        media_type="text/event-stream",
        headers={"x-accel-buffering": "no"},
    )


async def _polling(
    render: Callable[[], Awaitable[Mapping[str, Any]]],
    options: WebOptions,
    interval: float | None = None,
) -> AsyncIterator[str]:
    """Re-read and send a view every ``interval``; a Redis failure is reported to the
    page and the next read tried after the interval."""
    while True:
        try:
            yield _sse("html", await render())
        except CoordinatorError as exc:
            yield _sse("problem", {"message": str(exc)})
        await asyncio.sleep(options.refresh if interval is None else interval)


# --- login --------------------------------------------------------------------------------


def _next(value: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/leases"
    return value


async def login_form(request: Request) -> Response:
    dashboard = _dashboard(request)
    if dashboard.guard.token is None:
        return RedirectResponse("/leases", 303)
    html = dashboard.render(
        "login.html",
        title="Log in",
        next=_next(request.query_params.get("next")),
        failed=False,
        login=False,
    )
    return HTMLResponse(html)


async def login(request: Request) -> Response:
    dashboard = _dashboard(request)
    form = await _form(request)
    target = _next(form.get("next"))
    if dashboard.guard.token is None:
        return RedirectResponse(target, 303)
    if not dashboard.guard.token_matches(form.get("token", "")):
        html = dashboard.render("login.html", title="Log in", next=target, failed=True, login=False)
        return HTMLResponse(html, status_code=401)
    response = RedirectResponse(target, 303)
    response.set_cookie(
        COOKIE,
        dashboard.guard.cookie_value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE)
    return response


async def home(request: Request) -> Response:
    return RedirectResponse("/leases", 307)


async def favicon(request: Request) -> Response:
    return RedirectResponse("/static/favicon.svg", 301)


# --- the application ----------------------------------------------------------------------


def create_app(
    settings: Settings | None = None,
    options: WebOptions | None = None,
    *,
    client: AsyncCoordinator | None = None,
) -> Starlette:
    """The dashboard for ``settings`` (or an existing ``client``, left open, which then
    also performs the actions)."""
    options = options or WebOptions()
    if not 1 <= options.page_size <= MAX_PAGE_SIZE:
        raise InvalidInputError("page_size", f"{options.page_size} is outside 1 .. {MAX_PAGE_SIZE}")
    owned: list[AsyncCoordinator] = []
    actor = None
    if client is None:
        settings = settings or Settings.from_env()
        client = AsyncCoordinator(settings.model_copy(update={"allow_eviction": True}))
        actor = AsyncCoordinator(settings)
        owned = [client, actor]
    dashboard = Dashboard(client, options, actor)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dashboard.hub.stop()
            for made in owned:
                await made.aclose()

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/favicon.ico", favicon),
            Route("/leases", leases),
            Route("/leases/live", leases_live),
            Route("/agent", agent),
            Route("/agent/live", agent_live),
            Route("/events", events),
            Route("/events/live", events_live),
            Route("/health", health),
            Route("/health/live", health_live),
            Route("/reservations", reservations),
            Route("/reservations/live", reservations_live),
            Route("/revoke", revoke, methods=["POST"]),
            Route("/release", release, methods=["POST"]),
            Route("/login", login_form, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("coordinator.web", "static")]), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    app.add_middleware(GuardMiddleware, guard=dashboard.guard)
    return app
