"""The web dashboard over plain HTTP: every page and its JSON form (the CLI's fields),
paging, live streams, escaping, the token gate, the host check and the revoke action.

The dashboard runs in a real uvicorn server on a thread, against the session's real
Redis servers; the browser tests are in test_web_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from coordinator import Coordinator, EmbeddedRedis
from coordinator.cli.main import cli
from coordinator.events import EVENT_FIELDS
from coordinator.local.cluster import EmbeddedCluster
from coordinator.settings import Settings
from coordinator.web import WebOptions, create_app
from coordinator.web.live import Subscription
from coordinator.web.server import BackgroundServer
from tests.helpers import (
    BINARIES,
    AclRedis,
    acl_file_for,
    acl_with_passwords,
    crossslot_errors,
    url_of,
    wait_until,
)

EVIL = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
TOKEN = "s3cret-token-for-the-tests"


@pytest.fixture(scope="module")
def web_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One server for the module: the dashboard only reads through the clients, whose
    behaviour on each Redis version the rest of the suite covers."""
    label, binary = BINARIES[-1]
    with EmbeddedRedis(tmp_path_factory.mktemp(label), binary=binary, port=0) as server:
        yield server


@pytest.fixture
def redis_url(web_redis: EmbeddedRedis) -> str:
    with web_redis.client() as raw:
        raw.flushall()
    return web_redis.url


@pytest.fixture
def coord(redis_url: str) -> Iterator[Coordinator]:
    client = Coordinator.from_url(redis_url, namespace="test", lease_ttl=600)
    yield client
    client.close()


@pytest.fixture
def serve(redis_url: str) -> Iterator[Callable[..., str]]:
    """``serve(**options)``: the dashboard on a free port; returns its base URL."""
    servers: list[BackgroundServer] = []

    def start(**options: Any) -> str:
        settings = Settings.from_env(redis_url=redis_url, namespace="test")
        server = BackgroundServer(create_app(settings, WebOptions(**options)))
        servers.append(server)
        return server.__enter__()

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def web(serve: Callable[..., str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve(), timeout=10) as client:
        yield client


def cli_json(redis_url: str, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, "--namespace", "test", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def without_clock(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "expires_in_seconds"}


# --- leases -----------------------------------------------------------------------------


def test_leases_page_and_json_match_the_cli(
    web: httpx.Client, coord: Coordinator, redis_url: str
) -> None:
    s = coord.start_session("agent-1", metadata={"host": "a"})
    coord.set_current_project("agent-1", "proj-a", s.session_id)
    coord.start_session("agent-2")
    page = web.get("/leases")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for text in ("agent-1", s.session_id, "proj-a", "agent-2", 'class="countdown"'):
        assert text in page.text
    data = web.get("/leases", params={"format": "json"}).json()
    assert (data["page"], data["pages"], data["total"]) == (1, 1, 2)
    assert data["expired_unreaped"] == []
    by_accept = web.get("/leases", headers={"accept": "application/json"}).json()
    assert len(by_accept["leases"]) == 2
    cli = {
        item["agent_id"]: without_clock(item) for item in cli_json(redis_url, "leases", "--json")
    }
    web_items = {item["agent_id"]: without_clock(item) for item in data["leases"]}
    assert web_items == cli
    assert all(0 < item["expires_in_seconds"] <= 600 for item in data["leases"])


def test_leases_are_paged_and_filtered(web: httpx.Client, coord: Coordinator) -> None:
    agents = {f"agent-{i:02d}" for i in range(25)}
    for agent in agents:
        coord.start_session(agent)
    seen: list[str] = []
    for number in (1, 2, 3):
        data = web.get("/leases", params={"format": "json", "page": number, "page_size": 10})
        body = data.json()
        assert (body["total"], body["pages"]) == (25, 3)
        seen += [item["agent_id"] for item in body["leases"]]
    assert sorted(seen) == sorted(agents)  # every lease once, none twice
    empty = web.get("/leases", params={"format": "json", "page": 4, "page_size": 10}).json()
    assert empty["leases"] == []
    html = web.get("/leases", params={"page": 2, "page_size": 10}).text
    assert 'rel="prev"' in html
    assert 'rel="next"' in html
    one = web.get("/leases", params={"format": "json", "agent": "agent-07"}).json()
    assert [item["agent_id"] for item in one["leases"]] == ["agent-07"]
    none = web.get("/leases", params={"format": "json", "agent": "nobody"}).json()
    assert (none["total"], none["leases"]) == (0, [])


def test_expired_but_unreaped_leases_are_marked(web: httpx.Client, coord: Coordinator) -> None:
    coord.start_session("short", ttl=0.05)
    coord.start_session("long")

    def lapsed() -> Any:
        body = web.get("/leases", params={"format": "json"}).json()
        return body["expired_unreaped"] and body

    body = wait_until(lapsed)
    assert [row["agent_id"] for row in body["expired_unreaped"]] == ["short"]
    assert [item["agent_id"] for item in body["leases"]] == ["long"]
    assert "awaiting the reaper" in web.get("/leases").text
    assert coord.cleanup_expired_sessions() == 1
    assert web.get("/leases", params={"format": "json"}).json()["expired_unreaped"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [({"page": "0"}, "page"), ({"page_size": "5000"}, "page_size"), ({"page": "x"}, "page"),
     ({"agent": " bad "}, "agent")],
)  # fmt: skip
def test_bad_lease_queries_answer_400(web: httpx.Client, query: dict[str, str], field: str) -> None:
    resp = web.get("/leases", params={**query, "format": "json"})
    assert resp.status_code == 400
    assert field in resp.json()["error"]
    assert web.get("/leases", params=query).status_code == 400
    assert web.get("/leases/live", params=query).status_code == 400


# --- one agent --------------------------------------------------------------------------


def test_agent_page_has_project_history_and_sessions(
    web: httpx.Client, coord: Coordinator, redis_url: str
) -> None:
    first = coord.start_session("agent-1")
    coord.set_current_project("agent-1", "proj-a", first.session_id)
    coord.set_current_project("agent-1", "proj-b", first.session_id)
    coord.end_session("agent-1", first.session_id)
    second = coord.start_session("agent-1")
    coord.set_current_project("agent-1", None, second.session_id)
    coord.reserve("agent-1", second.session_id, "repo", ["src/"], reason="refactor")
    data = web.get("/agent", params={"id": "agent-1", "format": "json"}).json()
    shown = cli_json(redis_url, "lease", "show", "agent-1", "--json")
    assert [without_clock(r) for r in data["lease"].pop("reservations")] == [
        without_clock(r) for r in shown.pop("reservations")
    ]
    assert without_clock(data["lease"]) == without_clock(shown)
    assert data["project"] == cli_json(redis_url, "project", "get", "agent-1", "--json")
    assert [(e["event_type"], e["to_project"]) for e in data["timeline"]] == [
        ("project_cleared", None),
        ("project_switched", "proj-b"),
        ("project_set", "proj-a"),
    ]
    sessions = [(s["session_id"], s["state"]) for s in data["sessions"]]
    assert sessions == [(second.session_id, "live"), (first.session_id, "ended")]
    html = web.get("/agent", params={"id": "agent-1"}).text
    assert "Reservations held" in html
    assert "proj-b" in html
    assert "Project history" in html
    assert second.session_id in html
    assert "Revoke" not in html  # read-only by default
    unknown = web.get("/agent", params={"id": "nobody", "format": "json"}).json()
    assert (unknown["lease"], unknown["project"], unknown["sessions"]) == (None, None, [])
    assert web.get("/agent", params={"id": ""}).status_code == 400


# --- events -----------------------------------------------------------------------------


def test_events_page_and_json_match_the_cli(
    web: httpx.Client, coord: Coordinator, redis_url: str
) -> None:
    s = coord.start_session("agent-1")
    coord.set_current_project("agent-1", "proj-a", s.session_id)
    coord.start_session("agent-2")
    data = web.get("/events", params={"format": "json"}).json()
    assert data == cli_json(redis_url, "events", "--json")
    # (two shards' events of the same millisecond have no order between them)
    assert sorted(e["event_type"] for e in data) == [
        "project_set",
        "session_started",
        "session_started",
    ]
    filtered = web.get("/events", params={"format": "json", "agent": "agent-1"}).json()
    assert filtered == cli_json(redis_url, "events", "--agent", "agent-1", "--json")
    typed = web.get("/events", params={"format": "json", "type": "project_set"}).json()
    assert [e["agent_id"] for e in typed] == ["agent-1"]
    recent = web.get("/events", params={"format": "json", "since": "1h", "limit": "2"}).json()
    assert len(recent) == 2
    future = web.get("/events", params={"format": "json", "since": "2999-01-01T00:00:00Z"})
    assert future.json() == []
    html = web.get("/events").text
    assert "project_set" in html
    assert "proj-a" in html
    assert 'data-tail="/events/live' in html
    for bad in ({"since": "yesterday"}, {"type": "nope"}, {"limit": "0"}, {"agent": "\n"}):
        resp = web.get("/events", params={**bad, "format": "json"})
        assert resp.status_code == 400, bad
        assert "\n" not in resp.json()["error"]


def sse_messages(client: httpx.Client, path: str, **params: str) -> Iterator[tuple[str, Any]]:
    """(event, data) of a live stream, as they arrive."""
    with client.stream("GET", path, params=params, timeout=20) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield event or "message", json.loads(line[6:])


def test_events_live_stream_sends_new_rows(
    web: httpx.Client, coord: Coordinator, redis_url: str
) -> None:
    with web.stream("GET", "/events/live", params={"agent": "agent-1"}, timeout=20) as resp:
        lines = resp.iter_lines()
        assert next(lines) == ": following"  # subscribed: what is written now arrives
        # Written by another process, as an agent's server would.
        write = (
            "from coordinator import Coordinator\n"
            f"c = Coordinator.from_url({redis_url!r}, namespace='test')\n"
            "c.start_session('agent-2')\n"
            "s = c.start_session('agent-1')\n"
            "c.set_current_project('agent-1', 'proj-<b>', s.session_id)\n"
        )
        subprocess.run([sys.executable, "-c", write], check=True, timeout=60)
        html = ""
        for line in lines:
            if line.startswith("data: "):
                html += json.loads(line[6:])["html"]
                if "project_set" in html:
                    break
    assert "session_started" in html
    assert "proj-&lt;b&gt;" in html
    assert "agent-2" not in html  # filtered


def test_leases_and_health_live_streams_send_views(web: httpx.Client, coord: Coordinator) -> None:
    coord.start_session("agent-1")
    event, data = next(sse_messages(web, "/leases/live", page="1"))
    assert event == "html"
    assert "agent-1" in data["html"]
    assert data["now"] > 0
    event, data = next(sse_messages(web, "/health/live"))
    assert event == "html"
    assert "no worker alive" in data["html"]
    event, data = next(sse_messages(web, "/agent/live", id="agent-1"))
    assert event == "html"
    assert "agent-1" in data["html"]


def test_a_fast_tail_is_coalesced_within_a_bounded_buffer() -> None:
    subscription = Subscription(None, "project_set", buffer=100)

    def entry(i: int, kind: str) -> tuple[int, str, dict[str, str]]:
        fields = dict.fromkeys(EVENT_FIELDS, "")
        fields.update(agent_id=f"a{i}", event_type=kind, success="1")
        return (0, f"{i}-0", fields)

    for i in range(0, 1000, 10):  # batches of 10 of each type
        batch = [entry(j, kind) for j in range(i, i + 10) for kind in ("project_set", "x")]
        subscription.offer(batch)
        assert len(subscription) <= 100
    subscription.offer([(0, "2000-0", {"event_type": "project_set"})])  # malformed
    events, dropped = asyncio.run(subscription.take())
    assert dropped == 901  # every older matching entry, counted
    # The 99 newest well-formed ones (the malformed one is left out), oldest first.
    assert [e.agent_id for e in events] == [f"a{i}" for i in range(901, 1000)]
    assert len(subscription) == 0


# --- reservations ------------------------------------------------------------------------


def test_reservations_page_and_json_match_the_cli(
    web: httpx.Client, coord: Coordinator, redis_url: str
) -> None:
    a = coord.start_session("agent-1")
    b = coord.start_session("agent-2")
    coord.reserve("agent-1", a.session_id, "repo", ["src/app.py"], reason="fix <bug>")
    coord.reserve("agent-2", b.session_id, "repo", ["docs/"], mode="shared")
    coord.reserve("agent-2", b.session_id, "db", ["migrations"])
    data = web.get("/reservations", params={"format": "json"}).json()
    cli = cli_json(redis_url, "reservations", "--json")
    assert [without_clock(r) for r in data] == [without_clock(r) for r in cli]
    scoped = web.get("/reservations", params={"format": "json", "scope": "repo"}).json()
    assert sorted(r["agent_id"] for r in scoped) == ["agent-1", "agent-2"]
    mine = web.get("/reservations", params={"format": "json", "agent": "agent-2"}).json()
    assert sorted(r["scope"] for r in mine) == ["db", "repo"]
    html = web.get("/reservations").text
    assert "src/app.py" in html
    assert "fix &lt;bug&gt;" in html
    assert "Release" not in html  # read-only
    health = web.get("/health", params={"format": "json"}).json()
    assert health["reservations"] == {"held": 3, "scopes": 2}
    event, view = next(sse_messages(web, "/reservations/live", scope="db"))
    assert event == "html"
    assert "migrations" in view["html"]
    assert "src/app.py" not in view["html"]


def test_release_is_confirmed_and_audited(
    serve: Callable[..., str], coord: Coordinator, redis_url: str
) -> None:
    s = coord.start_session("agent-1")
    held = coord.reserve("agent-1", s.session_id, "repo", ["src/"])
    with httpx.Client(base_url=serve(allow_actions=True), timeout=10) as client:
        html = client.get("/reservations").text
        csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"reservation": held.reservation_id, "csrf": csrf, "reason": "stuck agent"}
        assert client.post("/release", data=form).status_code == 400  # not confirmed
        assert coord.list_reservations()
        done = client.post("/release", data={**form, "confirm": "yes"})
        assert done.status_code == 303
    assert coord.list_reservations() == []
    released = cli_json(redis_url, "events", "--type", "reservation_released", "--json")
    assert len(released) == 1, released
    assert "stuck agent" in json.dumps(released[0])


# --- health -----------------------------------------------------------------------------


def test_health_page_and_json(web: httpx.Client, coord: Coordinator, redis_url: str) -> None:
    coord.start_session("agent-1")
    data = web.get("/health", params={"format": "json"}).json()
    status = cli_json(redis_url, "status", "--json")
    assert set(data) == set(status) | {"health"}
    for key in ("namespace", "redis_version", "redis_mode", "shards", "active_leases", "workers"):
        assert data[key] == status[key]
    result = CliRunner().invoke(
        cli, ["--redis-url", redis_url, "--namespace", "test", "health", "--json"]
    )
    assert result.exit_code == 1  # no worker
    assert data["health"] == json.loads(result.stdout)
    failed = [c["name"] for c in data["health"]["checks"] if not c["ok"]]
    assert "worker" in failed
    html = web.get("/health").text
    assert "finding unsafe" in html
    assert "no worker alive" in html
    assert status["server_version"] in html


# --- escaping, headers, the gates --------------------------------------------------------


def test_everything_shown_is_escaped(web: httpx.Client, coord: Coordinator) -> None:
    s = coord.start_session(EVIL, metadata={"note": EVIL})
    coord.set_current_project(EVIL, EVIL, s.session_id)
    for path, params in [("/leases", {}), ("/events", {}), ("/agent", {"id": EVIL}),
                         ("/events", {"agent": EVIL}), ("/leases", {"agent": EVIL})]:  # fmt: skip
        resp = web.get(path, params=params)
        assert resp.status_code == 200, path
        assert "<script>window.__pwned" not in resp.text, path
        assert "<img src=x" not in resp.text, path
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in resp.text, path
        policy = resp.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "'unsafe-inline'" not in policy
        assert resp.headers["x-frame-options"] == "DENY"
    data = web.get("/agent", params={"id": EVIL, "format": "json"}).json()
    assert data["agent_id"] == EVIL  # JSON carries the data as it is


def test_a_foreign_host_name_gets_nothing_without_a_token(web: httpx.Client) -> None:
    # DNS rebinding: another site's name resolving to 127.0.0.1.
    resp = web.get("/leases", headers={"host": "evil.example:8470"})
    assert resp.status_code == 421
    assert web.get("/leases", headers={"host": "localhost:8470"}).status_code == 200


def test_the_token_gate(serve: Callable[..., str], coord: Coordinator) -> None:
    coord.start_session("agent-1")
    with httpx.Client(base_url=serve(token=TOKEN), timeout=10) as client:
        assert client.get("/leases", params={"format": "json"}).status_code == 401
        assert client.get("/events/live").status_code == 401
        wrong = {"authorization": "Bearer not-the-token"}
        assert client.get("/leases", params={"format": "json"}, headers=wrong).status_code == 401
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert client.get("/leases", params={"format": "json"}, headers=bearer).status_code == 200
        # A browser is sent to the login form, then back.
        page = client.get("/agent", params={"id": "agent-1"}, headers={"accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/agent%3Fid%3Dagent-1"
        assert client.get("/login").status_code == 200
        assert client.get("/static/style.css").status_code == 200
        refused = client.post("/login", data={"token": "guess", "next": "/events"})
        assert refused.status_code == 401
        assert "coordinator_web" not in refused.cookies
        assert client.get("/events", params={"format": "json"}).status_code == 401
        login = client.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert login.status_code == 303
        assert login.headers["location"] == "/leases"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert TOKEN not in cookie
        assert client.get("/events", params={"format": "json"}).status_code == 200
        client.post("/logout")
        assert client.get("/events", params={"format": "json"}).status_code == 401
        # With a token the host name is the user's business (a proxy, a DNS name).
        named = client.get("/health", params={"format": "json"}, headers={**bearer, "host": "ops"})
        assert named.status_code == 200


# --- the operator's action ---------------------------------------------------------------


def revoke_form(client: httpx.Client, agent: str, **fields: str) -> dict[str, str]:
    html = client.get("/agent", params={"id": agent}).text
    csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return {"agent": agent, "csrf": csrf, "reason": "host compromised", "confirm": "yes", **fields}


def test_revoke_needs_allow_actions(web: httpx.Client, coord: Coordinator) -> None:
    coord.start_session("agent-1")
    resp = web.post("/revoke", data={"agent": "agent-1", "reason": "x", "confirm": "yes"})
    assert resp.status_code == 403
    assert coord.list_leases("agent-1")


def test_revoke_is_confirmed_audited_and_protected(
    serve: Callable[..., str], coord: Coordinator
) -> None:
    coord.start_session("agent-1")
    with httpx.Client(base_url=serve(allow_actions=True), timeout=10) as client:
        form = revoke_form(client, "agent-1")
        stale = client.post("/revoke", data={**form, "csrf": "forged"})
        assert stale.status_code == 403
        foreign = client.post("/revoke", data=form, headers={"origin": "http://evil.example"})
        assert foreign.status_code == 403
        assert client.post("/revoke", data={**form, "confirm": ""}).status_code == 400
        assert client.post("/revoke", data={**form, "reason": "  "}).status_code == 400
        assert coord.list_leases("agent-1")  # none of those changed anything
        done = client.post("/revoke", data=form)
        assert done.status_code == 303
        assert "revoked=1" in done.headers["location"]
        assert not coord.list_leases("agent-1")
        again = client.post("/revoke", data=form, headers={"accept": "application/json"})
        assert again.json() == {"agent_id": "agent-1", "revoked": False}
    revoked = coord.get_agent_events("agent-1", event_type="session_revoked")
    assert [e.error_message for e in revoked] == ["host compromised"]


# --- the command ---------------------------------------------------------------------------


def test_web_refuses_to_bind_elsewhere_without_a_token(redis_url: str) -> None:
    runner = CliRunner()
    base = ["--redis-url", redis_url, "web"]
    exposed = runner.invoke(cli, [*base, "--host", "0.0.0.0"])
    assert exposed.exit_code == 2
    assert "--token" in exposed.stderr
    assert "Traceback" not in exposed.output
    short = runner.invoke(cli, [*base, "--host", "0.0.0.0", "--token", "short"])
    assert short.exit_code == 2
    assert "16 characters" in short.stderr


def test_web_command_serves_until_interrupted(redis_url: str, coord: Coordinator) -> None:
    coord.start_session("agent-1")
    env = {**os.environ, "COORDINATOR_WEB_TOKEN": TOKEN}
    command = [sys.executable, "-m", "coordinator", "--redis-url", redis_url, "--namespace",
               "test", "web", "--port", "0", "--host", "0.0.0.0"]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert "token required" in line, line
            assert "read-only" in line, line
            port = line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
            url = f"http://127.0.0.1:{port}/leases?format=json"
            assert httpx.get(url).status_code == 401
            body = httpx.get(url, headers={"authorization": f"Bearer {TOKEN}"}).json()
            assert [item["agent_id"] for item in body["leases"]] == ["agent-1"]
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0


def test_health_shows_an_evicting_server_as_unsafe(
    web: httpx.Client, coord: Coordinator, web_redis: EmbeddedRedis
) -> None:
    coord.start_session("agent-1")
    with web_redis.client() as raw:
        raw.config_set("maxmemory-policy", "allkeys-lru")
        try:
            data = web.get("/health", params={"format": "json"}).json()
            html = web.get("/health").text
            listed = web.get("/leases", params={"format": "json"})  # still readable
        finally:
            raw.config_set("maxmemory-policy", "noeviction")
    assert data["maxmemory_policy"] == "allkeys-lru"
    policy = [c for c in data["health"]["checks"] if c["name"] == "eviction_policy"]
    assert policy[0]["ok"] is False
    assert "allkeys-lru" in policy[0]["detail"]
    assert "(evicts data)" in html
    assert '<li class="finding unsafe"><strong>unsafe</strong> eviction policy' in html
    assert listed.status_code == 200


def test_the_dashboard_on_a_cluster(tmp_path: Path) -> None:
    """Every page and the live tail on a 3-master cluster: each command names one key
    (or one shard's keys), so the shards spread over the masters are read where they live."""
    with EmbeddedCluster(tmp_path, appendonly=False) as cluster:
        with Coordinator.from_url(cluster.url, namespace="test") as client:
            for i in range(30):
                s = client.start_session(f"agent-{i}")
                client.set_current_project(f"agent-{i}", "proj", s.session_id)
            settings = Settings.from_env(redis_url=cluster.url, namespace="test")
            app = create_app(settings, WebOptions())
            with BackgroundServer(app) as base, httpx.Client(base_url=base, timeout=30) as web:
                seen: list[str] = []
                for number in (1, 2, 3):
                    params = {"format": "json", "page": number, "page_size": 10}
                    seen += [
                        i["agent_id"] for i in web.get("/leases", params=params).json()["leases"]
                    ]
                assert sorted(seen) == sorted(f"agent-{i}" for i in range(30))
                agent = web.get("/agent", params={"id": "agent-3", "format": "json"}).json()
                assert agent["project"]["project_name"] == "proj"
                assert len(web.get("/events", params={"format": "json", "limit": 100}).json()) == 60
                health = web.get("/health", params={"format": "json"}).json()
                assert (health["redis_mode"], health["active_leases"]) == ("cluster", 30)
                with web.stream("GET", "/events/live", timeout=20) as resp:
                    lines = resp.iter_lines()
                    assert next(lines) == ": following"
                    client.start_session("late")
                    data = next(line for line in lines if line.startswith("data: "))
                    assert "late" in json.loads(data[6:])["html"]
        assert crossslot_errors(cluster) == 0


def test_the_dashboard_runs_as_the_shipped_admin_role(tmp_path: Path) -> None:
    """``coordinator-admin`` of deploy/users.acl reads every page and may revoke; Redis
    refuses none of the dashboard's commands (ACL LOG stays empty)."""
    label, binary = BINARIES[-1]
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(acl_with_passwords(acl_file_for(binary).read_text()))
    config = {"aclfile": str(aclfile)}
    with AclRedis(
        tmp_path / label, port=0, unix_socket=False, binary=binary, config=config
    ) as server:
        with Coordinator.from_url(url_of(server, "coordinator-server"), namespace="coord") as c:
            s = c.start_session("agent-1")
            c.set_current_project("agent-1", "proj", s.session_id)
            c.reserve("agent-1", s.session_id, "repo", ["src/"])
        with server.client(decode_responses=True) as ops:
            ops.acl_log_reset()
            settings = Settings.from_env(redis_url=url_of(server, "coordinator-admin"))
            app = create_app(settings, WebOptions(allow_actions=True))
            with BackgroundServer(app) as base, httpx.Client(base_url=base, timeout=30) as web:
                for path in ("/leases", "/agent?id=agent-1", "/reservations", "/events", "/health"):
                    assert web.get(path).status_code == 200, path
                    as_json = path + ("&" if "?" in path else "?") + "format=json"
                    assert web.get(as_json).status_code == 200, path
                _, data = next(sse_messages(web, "/leases/live"))
                assert "agent-1" in data["html"]
                form = revoke_form(web, "agent-1")
                assert web.post("/revoke", data=form).status_code == 303
            assert ops.acl_log() == []
