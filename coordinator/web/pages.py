"""The dashboard's pages, each with its JSON form and its live stream: leases, one
agent, reservations, events, health.

Every page answers HTML to a browser and JSON to ``Accept: application/json`` or
``?format=json``, with the fields of the matching CLI command's ``--json``
(:mod:`coordinator.shapes`). Live data arrives as server-sent events: ``html``
messages replace a part of the page (re-read every ``refresh`` seconds), ``prepend``
messages add new event rows (coalesced, see :mod:`coordinator.web.live`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)

from coordinator import shapes
from coordinator.constants import MAX_EVENT_LIMIT
from coordinator.models import AgentEvent
from coordinator.timestamps import datetime_to_ms
from coordinator.web.dashboard import (
    MAX_PAGE_SIZE,
    Dashboard,
    dashboard_of,
    int_param,
    page,
    polling,
    sse,
    stream,
    text_param,
    wants_json,
)
from coordinator.web.findings import health_of
from coordinator.web.queries import AgentView, LeasePage, agent_view, lease_page

# --- leases -----------------------------------------------------------------------------


def _lease_query(request: Request) -> tuple[int, int, str | None]:
    options = dashboard_of(request).options
    size = int_param(request, "page_size", options.page_size, 1, MAX_PAGE_SIZE)
    return int_param(request, "page", 1, 1, 10**9) - 1, size, text_param(request, "agent")


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
    dashboard = dashboard_of(request)
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
    dashboard = dashboard_of(request)
    number, size, agent = _lease_query(request)
    if agent is not None:
        await lease_page(dashboard.client, 0, 1, agent)  # a bad agent id: 400, not a stream

    async def render() -> Mapping[str, Any]:
        data = await lease_page(dashboard.client, number, size, agent)
        html = dashboard.render("_lease_view.html", **_lease_context(data, agent))
        return {"html": html, "now": datetime_to_ms(data.now)}

    return stream(polling(render, dashboard.options))


# --- one agent ----------------------------------------------------------------------------


@page
async def agent(request: Request) -> Response:
    dashboard = dashboard_of(request)
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
    dashboard = dashboard_of(request)
    agent_id = request.query_params.get("id", "")
    await agent_view(dashboard.client, agent_id, limit=1)  # a bad id: 400, not a stream

    async def render() -> Mapping[str, Any]:
        view = await agent_view(dashboard.client, agent_id)
        html = dashboard.render("_agent_view.html", view=view, now_ms=datetime_to_ms(view.now))
        return {"html": html, "now": datetime_to_ms(view.now)}

    return stream(polling(render, dashboard.options, interval=2 * dashboard.options.refresh))


# --- events -------------------------------------------------------------------------------


@page
async def events(request: Request) -> Response:
    dashboard = dashboard_of(request)
    agent_id, event_type = text_param(request, "agent"), text_param(request, "type")
    since_text = text_param(request, "since")
    limit = int_param(request, "limit", 50, 1, MAX_EVENT_LIMIT)
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
    dashboard = dashboard_of(request)
    agent_id, event_type = text_param(request, "agent"), text_param(request, "type")
    # Validate before streaming: a bad filter answers 400, not an empty stream.
    await dashboard.client.get_agent_events(agent_id=agent_id, event_type=event_type, limit=1)
    return stream(_tail(dashboard, agent_id, event_type))


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
            yield sse("prepend", {"html": _event_rows(dashboard, fresh, dropped)})
            await asyncio.sleep(options.tail_interval)  # what arrives meanwhile is coalesced


def _event_rows(dashboard: Dashboard, fresh: list[AgentEvent], dropped: int) -> str:
    newest_first = list(reversed(fresh))
    return dashboard.render("_event_rows.html", events=newest_first, skipped=dropped, fresh=True)


# --- health -------------------------------------------------------------------------------


@page
async def health(request: Request) -> Response:
    dashboard = dashboard_of(request)
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
    dashboard = dashboard_of(request)

    async def render() -> Mapping[str, Any]:
        stats = await dashboard.client.stats()
        html = dashboard.render(
            "_health_view.html",
            stats=stats,
            findings=health_of(stats)[1],
            reservations=await _reservation_counts(dashboard),
        )
        return {"html": html, "now": datetime_to_ms(stats.server_time)}

    return stream(polling(render, dashboard.options, interval=2 * dashboard.options.refresh))


async def _reservation_counts(dashboard: Dashboard) -> dict[str, int]:
    """As in ``coordinator status --json``."""
    return shapes.reservation_counts(await dashboard.client.list_reservations())


# --- reservations -------------------------------------------------------------------------


@page
async def reservations(request: Request) -> Response:
    dashboard = dashboard_of(request)
    scope, agent_id = text_param(request, "scope"), text_param(request, "agent")
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
    dashboard = dashboard_of(request)
    scope, agent_id = text_param(request, "scope"), text_param(request, "agent")
    await dashboard.client.list_reservations(scope=scope, agent_id=agent_id)  # bad input: 400

    async def render() -> Mapping[str, Any]:
        now = await dashboard.client.server_time()
        found = await dashboard.client.list_reservations(scope=scope, agent_id=agent_id)
        html = dashboard.render(
            "_reservation_view.html", reservations=found, now=now, scope=scope, agent=agent_id
        )
        return {"html": html, "now": datetime_to_ms(now)}

    return stream(polling(render, dashboard.options))


async def home(request: Request) -> Response:
    return RedirectResponse("/leases", 307)


async def favicon(request: Request) -> Response:
    return RedirectResponse("/static/favicon.svg", 301)
