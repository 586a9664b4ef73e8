"""Who may see the dashboard, and what protects an operator's browser.

- Bound to a loopback address without a token, the dashboard answers only requests
  whose ``Host`` is a loopback name (a page of another site that resolves its own name
  to 127.0.0.1, DNS rebinding, gets nothing).
- With a token, every request needs it: ``Authorization: Bearer <token>``, or the
  login cookie set by ``POST /login`` (HttpOnly, SameSite=Strict; it holds an HMAC of
  the token, never the token).
- Every answer forbids inline scripts and framing (``Content-Security-Policy``), so
  even an escaping mistake could not run a script injected through an agent id.
- An action's form carries a per-process CSRF token, and a cross-origin ``Origin`` is
  refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Final
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE: Final = "coordinator_web"
#: Paths served without a token: the login form, logging out, and static files.
OPEN_PATHS: Final = ("/login", "/logout", "/static/", "/favicon.ico")
HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, maybe in brackets) is this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name of a ``Host`` header value, without its port."""
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """The token (if any) and the CSRF secret of one dashboard process."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None
        self._secret = secrets.token_bytes(32)

    @property
    def cookie_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"coordinator-web-login", hashlib.sha256).hexdigest()

    def token_matches(self, offered: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            offered.encode("utf-8", "surrogateescape"), self.token.encode()
        )

    def allowed(self, headers: Mapping[str, str]) -> bool:
        if self.token is None:
            return True
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and self.token_matches(auth[7:].strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no login
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value, self.cookie_value)

    @property
    def csrf(self) -> str:
        return hmac.new(self._secret, b"csrf", hashlib.sha256).hexdigest()

    def csrf_matches(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), self.csrf.encode())


class GuardMiddleware:
    """Applies :class:`Guard` to every HTTP request and adds the security headers."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        path: str = scope["path"]
        if self.guard.token is None and not is_loopback(host_name(headers.get("host", ""))):
            await _plain(secured, 421, "this dashboard answers only to a loopback host name")
            return
        if path.startswith(OPEN_PATHS) or self.guard.allowed(headers):
            await self.app(scope, receive, secured)
            return
        if scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
            target = path + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
            await secured(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", b"/login?next=" + quote(target).encode())],
                }
            )
            await secured({"type": "http.response.body", "body": b""})
            return
        await _plain(secured, 401, "a token is needed: Authorization: Bearer <token>")


async def _plain(send: Send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer") if status == 401 else (b"vary", b"host"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
