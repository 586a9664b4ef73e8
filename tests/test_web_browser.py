"""The web dashboard in a real headless Chromium (Debian's ``chromium``, driven by
Playwright): every page renders and goes live, a write made by another process appears
without a reload, a lease counts down and expires, an injected ``<script>`` is shown as
text, the token gate and the revoke action work.

Skipped when Playwright or Chromium is missing, except under ``.ci/run``
(``COORDINATOR_TEST_REQUIRE_BROWSER=1``), which fails instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from coordinator import Coordinator, EmbeddedRedis
from coordinator.settings import Settings
from coordinator.web import WebOptions, create_app
from coordinator.web.server import BackgroundServer
from tests.helpers import BINARIES, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("COORDINATOR_TEST_CHROMIUM", "/usr/bin/chromium"))
EVIL = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
TOKEN = "browser-test-token-0123456789"
#: Playwright's own wait, in ms (the machine may be busy).
WAIT = 15_000


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"Playwright is not installed ({exc}): pip install playwright"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    problem = _missing()
    if problem is not None:
        if os.environ.get("COORDINATOR_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser tests are required (CI) but {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    label, binary = BINARIES[-1]
    with EmbeddedRedis(tmp_path_factory.mktemp(label), binary=binary, port=0) as redis_server:
        yield redis_server


@pytest.fixture
def coord(server: EmbeddedRedis) -> Iterator[Coordinator]:
    with server.client() as raw:
        raw.flushall()
    client = Coordinator.from_url(server.url, namespace="test")
    yield client
    client.close()


@pytest.fixture
def serve(server: EmbeddedRedis, coord: Coordinator) -> Iterator[Callable[..., str]]:
    servers: list[BackgroundServer] = []

    def start(**options: Any) -> str:
        options.setdefault("refresh", 0.5)
        settings = Settings.from_env(redis_url=server.url, namespace="test")
        background = BackgroundServer(create_app(settings, WebOptions(**options)))
        servers.append(background)
        return background.__enter__()

    yield start
    for background in servers:
        background.__exit__(None, None, None)


@pytest.fixture
def problems() -> list[str]:
    """Script errors and console errors of the test's pages (a test may remove the
    ones it provokes)."""
    return []


@pytest.fixture
def page(browser: Browser, serve: Callable[..., str], problems: list[str]) -> Iterator[Page]:
    """A fresh browser context, closed before the dashboard stops; any script error or
    console error fails the test."""
    context = browser.new_context()
    context.set_default_timeout(WAIT)
    tab = context.new_page()
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text} {msg.location}")
            if msg.type == "error"
            else None
        ),
    )
    yield tab
    context.close()
    assert not problems, "\n".join(problems)


def write_elsewhere(redis_url: str, code: str) -> None:
    """Run ``code`` with a client ``c`` in another process, as an agent's server would."""
    prelude = (
        "from coordinator import Coordinator\n"
        f"c = Coordinator.from_url({redis_url!r}, namespace='test')\n"
    )
    subprocess.run([sys.executable, "-c", prelude + code], check=True, timeout=60)


def live(page: Page) -> None:
    """Wait for the page's live stream to be connected (no string evaluation: the
    page's Content-Security-Policy forbids it, and the tests keep that policy)."""
    from playwright.sync_api import expect

    expect(page.locator("#live-state")).to_have_text("live", timeout=WAIT)


def test_every_page_renders_and_goes_live(
    page: Page, serve: Callable[..., str], coord: Coordinator
) -> None:
    s = coord.start_session("agent-1", metadata={"host": "a"})
    coord.set_current_project("agent-1", "proj-a", s.session_id)
    base = serve()
    page.goto(base + "/leases")
    live(page)
    assert page.locator('tr[data-agent="agent-1"]').inner_text().startswith("agent-1")
    coord.reserve("agent-1", s.session_id, "repo", ["src/"], reason="<i>refactor</i>")
    page.click("text=Reservations")
    live(page)
    assert "<i>refactor</i>" in page.inner_text("#reservation-view")
    page.click("text=Events")
    live(page)
    assert page.locator("#event-rows tr.project_set").count() == 1
    page.click("text=Health")
    live(page)
    assert "not being persisted" in page.locator(".finding.unsafe", has_text="worker").inner_text()
    page.goto(base + "/agent?id=agent-1")
    live(page)
    assert page.locator(".timeline li").inner_text().find("proj-a") >= 0


def test_a_write_from_another_process_appears_without_reload(
    browser: Browser, page: Page, serve: Callable[..., str], server: EmbeddedRedis
) -> None:
    base = serve()
    page.goto(base + "/leases")
    live(page)
    assert "no live leases" in page.inner_text("#lease-view")
    events = browser.new_page()
    events.goto(base + "/events")
    live(events)
    for tab in (page, events):
        tab.evaluate("window.__loaded_once = true")  # gone if the page reloaded
    write_elsewhere(
        server.url,
        "s = c.start_session('agent-live')\n"
        "c.set_current_project('agent-live', 'proj-z', s.session_id)\n",
    )
    page.wait_for_selector('tr[data-agent="agent-live"]')
    assert "proj-z" in page.inner_text('tr[data-agent="agent-live"]')
    events.wait_for_selector("#event-rows tr.project_set")
    assert "agent-live" in events.inner_text("#event-rows tr.project_set")
    assert events.locator("#event-rows tr.session_started").count() == 1
    for tab in (page, events):
        assert tab.evaluate("window.__loaded_once") is True
    events.close()


def seconds_left(page: Page, agent: str) -> int:
    text = page.inner_text(f'tr[data-agent="{agent}"] .countdown')
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return int(match.group(1))


def test_a_lease_counts_down_and_expires(
    page: Page, serve: Callable[..., str], coord: Coordinator
) -> None:
    coord.start_session("steady")
    coord.start_session("short", ttl=6)  # room for a slow page load
    page.goto(serve() + "/leases")
    live(page)
    first = seconds_left(page, "short")
    assert 1 <= first <= 6
    wait_until(lambda: seconds_left(page, "short") < first, timeout=10)  # counting down live
    row = 'tr[data-agent="short"]'
    page.wait_for_selector(f"{row}.expired")  # the deadline passed: highlighted
    assert "expired" in page.inner_text(row)
    page.wait_for_selector(f"{row}.lapsed")  # the server's view: lapsed, awaiting the reaper
    assert "awaiting the reaper" in page.inner_text(row)
    assert page.locator('tr[data-agent="steady"].expired').count() == 0
    assert coord.cleanup_expired_sessions() == 1
    page.wait_for_selector(row, state="detached")


def test_injected_script_is_shown_as_text(
    page: Page, serve: Callable[..., str], coord: Coordinator, server: EmbeddedRedis
) -> None:
    s = coord.start_session(EVIL, metadata={"note": EVIL})
    coord.set_current_project(EVIL, EVIL, s.session_id)
    base = serve()
    for path in ("/leases", "/events", "/agent?id=" + EVIL.replace("%", "%25")):
        page.goto(base + path)
        live(page)
        assert EVIL in page.inner_text("main"), path  # the markup, as text
        assert page.evaluate("window.__pwned") is None, path
    # Rows arriving live are escaped too.
    page.goto(base + "/events")
    live(page)
    write_elsewhere(server.url, f"c.start_session({EVIL + '-2'!r})\n")
    page.locator("#event-rows tr", has_text=EVIL + "-2").wait_for()
    assert page.evaluate("window.__pwned") is None


def test_the_token_gate(
    page: Page, serve: Callable[..., str], coord: Coordinator, problems: list[str]
) -> None:
    coord.start_session("agent-1")
    base = serve(token=TOKEN)
    page.goto(base + "/leases")
    assert page.url.startswith(base + "/login?next=")
    assert page.locator("#lease-view").count() == 0
    page.fill("input[name=token]", "a wrong guess")
    page.click("form.login button")
    assert "not the dashboard's" in page.inner_text("main")
    assert len(problems) == 1
    assert "401" in problems.pop()  # the refused login, as the browser logs it
    page.fill("input[name=token]", TOKEN)
    page.click("form.login button")
    page.wait_for_url(base + "/leases")
    live(page)  # the live stream is let in by the login cookie
    assert page.locator('tr[data-agent="agent-1"]').count() == 1
    page.click("text=Log out")
    page.goto(base + "/health")
    assert page.url.startswith(base + "/login")


def test_revoke_from_the_browser(page: Page, serve: Callable[..., str], coord: Coordinator) -> None:
    coord.start_session("agent-1")
    page.goto(serve(allow_actions=True) + "/agent?id=agent-1")
    live(page)
    page.fill("input[name=reason]", "rotating credentials")
    page.check("input[name=confirm]")
    dialogs: list[str] = []

    def answer(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.click("button.danger")
    page.wait_for_selector(".notice")
    assert dialogs
    assert "Revoke" in dialogs[0]
    assert not coord.list_leases("agent-1")
    revoked = coord.get_agent_events("agent-1", event_type="session_revoked")
    assert [e.error_message for e in revoked] == ["rotating credentials"]


def test_release_a_reservation_while_the_view_stays_live(
    page: Page, serve: Callable[..., str], coord: Coordinator
) -> None:
    s = coord.start_session("agent-1")
    held = coord.reserve("agent-1", s.session_id, "repo", ["src/"])
    page.goto(serve(allow_actions=True) + "/reservations")
    live(page)
    row = f'tr[data-reservation="{held.reservation_id}"]'
    page.fill(f"{row} input[name=reason]", "stuck agent")
    page.check(f"{row} input[name=confirm]")
    page.locator("body").click()  # focus leaves the form; its input must survive updates
    coord.reserve("agent-1", s.session_id, "docs", ["guide/"])  # a change the view would show
    page.wait_for_timeout(1500)  # three refresh intervals
    assert page.input_value(f"{row} input[name=reason]") == "stuck agent"
    page.on("dialog", lambda dialog: dialog.accept())
    page.click(f"{row} button.danger")
    page.wait_for_url("**/reservations?released=1")
    assert [r.scope for r in coord.list_reservations()] == ["docs"]
    live(page)
    page.wait_for_selector(row, state="detached")
