"""The dashboard's ASGI application (Starlette): the routes of :mod:`~coordinator.web.pages`
and :mod:`~coordinator.web.actions`, the guard, the static files, and the clients'
lifetime. Everything shown is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from coordinator.aio import AsyncCoordinator
from coordinator.errors import InvalidInputError
from coordinator.settings import Settings
from coordinator.web import actions, pages
from coordinator.web.dashboard import MAX_PAGE_SIZE, Dashboard, WebOptions
from coordinator.web.security import GuardMiddleware


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
            Route("/", pages.home),
            Route("/favicon.ico", pages.favicon),
            Route("/leases", pages.leases),
            Route("/leases/live", pages.leases_live),
            Route("/agent", pages.agent),
            Route("/agent/live", pages.agent_live),
            Route("/events", pages.events),
            Route("/events/live", pages.events_live),
            Route("/health", pages.health),
            Route("/health/live", pages.health_live),
            Route("/reservations", pages.reservations),
            Route("/reservations/live", pages.reservations_live),
            Route("/revoke", actions.revoke, methods=["POST"]),
            Route("/release", actions.release, methods=["POST"]),
            Route("/login", actions.login_form, methods=["GET"]),
            Route("/login", actions.login, methods=["POST"]),
            Route("/logout", actions.logout, methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("coordinator.web", "static")]), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    app.add_middleware(GuardMiddleware, guard=dashboard.guard)
    return app
