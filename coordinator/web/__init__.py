"""``coordinator web``: a live dashboard for operators (needs the ``web`` extra).

Server-rendered pages (Starlette, Jinja2), server-sent events for live data, a few
lines of plain JavaScript. Read-only and bound to 127.0.0.1 by default; see
:mod:`coordinator.web.security` for the token gate and :mod:`coordinator.web.live`
for how a fast event stream is coalesced within bounded memory.
"""

from __future__ import annotations

from coordinator.web.app import create_app
from coordinator.web.dashboard import WebOptions

__all__ = ["WebOptions", "create_app"]
