"""The operator's actions (revoke a session, release a reservation: only with
``--allow-actions``, each with a reason, a confirmation and the CSRF token) and the
login form of a dashboard that needs a token."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)

from coordinator.errors import InvalidInputError
from coordinator.web.dashboard import (
    Dashboard,
    dashboard_of,
    error_response,
    page,
    read_form,
    wants_json,
)
from coordinator.web.security import COOKIE

log = logging.getLogger(__name__)


async def _action_form(request: Request) -> tuple[Dashboard, Mapping[str, str]] | Response:
    """The dashboard and the submitted form of an operator action, or the refusal:
    actions off, a cross-origin request, a stale CSRF token, no confirmation or reason."""
    dashboard = dashboard_of(request)
    refused = _refuse_action(request, dashboard)
    if refused is not None:
        return refused
    form = await read_form(request)
    problem = _check_action_form(request, dashboard, form)
    if problem is not None:
        return problem
    return dashboard, form


def _refuse_action(request: Request, dashboard: Dashboard) -> Response | None:
    if not dashboard.options.allow_actions:
        return error_response(
            request, 403, "actions are off: start the dashboard with --allow-actions"
        )
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return error_response(request, 403, "cross-origin request refused")
    return None


def _check_action_form(
    request: Request, dashboard: Dashboard, form: Mapping[str, str]
) -> Response | None:
    """The CSRF token, the confirmation and a reason (raises InvalidInputError)."""
    if not dashboard.guard.csrf_matches(form.get("csrf", "")):
        return error_response(request, 403, "missing or stale form token: reload the page")
    if form.get("confirm") != "yes":
        raise InvalidInputError("confirm", "tick the confirmation")
    if not form.get("reason", "").strip():
        raise InvalidInputError("reason", "say why (it is recorded in the audit event)")
    return None


@page
async def revoke(request: Request) -> Response:
    """The operator's revoke: a reason, a confirmation, the page's CSRF token."""
    checked = await _action_form(request)
    if isinstance(checked, Response):
        return checked
    dashboard, form = checked
    agent_id, reason = form.get("agent", ""), form.get("reason", "").strip()
    revoked = await dashboard.actor.revoke_session(agent_id, reason=reason)
    client = request.client.host if request.client else "?"
    log.warning("web: revoke of agent %r by %s: %s", agent_id, client, revoked)
    if wants_json(request):
        return JSONResponse({"agent_id": agent_id, "revoked": revoked})
    if not revoked:
        return error_response(request, 409, f"agent {agent_id!r} has no live session")
    return RedirectResponse("/agent?" + urlencode({"id": agent_id, "revoked": "1"}), 303)


@page
async def release(request: Request) -> Response:
    """The operator's release of a reservation: a reason, a confirmation, the CSRF token."""
    checked = await _action_form(request)
    if isinstance(checked, Response):
        return checked
    dashboard, form = checked
    reservation_id, reason = form.get("reservation", ""), form.get("reason", "").strip()
    released = await dashboard.actor.release_reservation(reservation_id, reason=reason)
    client = request.client.host if request.client else "?"
    log.warning("web: release of reservation %r by %s: %s", reservation_id, client, released)
    if wants_json(request):
        return JSONResponse({"reservation_id": reservation_id, "released": released})
    if not released:
        return error_response(request, 409, f"reservation {reservation_id!r} is not held")
    return RedirectResponse("/reservations?released=1", 303)


# --- login --------------------------------------------------------------------------------


def _next(value: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/leases"
    return value


async def login_form(request: Request) -> Response:
    dashboard = dashboard_of(request)
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
    dashboard = dashboard_of(request)
    form = await read_form(request)
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
