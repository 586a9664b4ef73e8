"""``coordinator reservations``, ``coordinator reservation release`` and reservations in
``lease show`` and ``status`` (CliRunner on a real server)."""

from __future__ import annotations

import json
from typing import Any

import redis

from tests.helpers import failed, ok, stream_entries


def test_reservations_table_json_and_filters(run: Any, coord: Any) -> None:
    assert "no live reservations" in ok(run("reservations")).stderr
    assert json.loads(ok(run("reservations", "--json")).stdout) == []
    a, b = coord.start_session("agent-a"), coord.start_session("agent-b")
    held = coord.reserve("agent-a", a.session_id, "proj", ["src/", "README.md"], reason="refactor")
    coord.reserve("agent-b", b.session_id, "other", ["db"], mode="shared")
    table = ok(run("reservations")).stdout.splitlines()
    assert table[0].split()[:3] == ["SCOPE", "RESOURCES", "MODE"]
    assert any("src/, README.md" in line and held.reservation_id in line for line in table)
    rows = json.loads(ok(run("reservations", "--json")).stdout)
    assert {r["scope"] for r in rows} == {"proj", "other"}
    mine = json.loads(ok(run("reservations", "--scope", "proj", "--json")).stdout)
    assert mine == [
        {
            "reservation_id": held.reservation_id,
            "scope": "proj",
            "resources": ["src/", "README.md"],
            "mode": "exclusive",
            "fencing_token": 1,
            "agent_id": "agent-a",
            "session_id": a.session_id,
            "granted_at": mine[0]["granted_at"],
            "expires_at": mine[0]["expires_at"],
            "expires_in_seconds": mine[0]["expires_in_seconds"],
            "ttl_seconds": 600.0,
            "reason": "refactor",
        }
    ]
    assert 590 < mine[0]["expires_in_seconds"] <= 600
    by_agent = json.loads(ok(run("reservations", "--agent", "agent-b", "--json")).stdout)
    assert [r["scope"] for r in by_agent] == ["other"]
    assert "invalid agent_id" in failed(run("reservations", "--agent", " x"), 2)


def test_reservation_release_by_an_operator(run: Any, coord: Any, raw: redis.Redis) -> None:
    a = coord.start_session("agent-a")
    held = coord.reserve("agent-a", a.session_id, "proj", ["src/"])
    declined = run("reservation", "release", held.reservation_id, "--reason", "r", input="n\n")
    assert declined.exit_code == 1
    assert len(coord.list_reservations()) == 1
    ok(run("reservation", "release", held.reservation_id, "--reason", "stuck", input="y\n"))
    assert coord.list_reservations() == []
    released = [e for _, e in stream_entries(raw) if e["event_type"] == "reservation_released"]
    assert [e["error_message"] for e in released] == ["stuck"]
    assert json.loads(released[0]["metadata"])["by"] == "operator"
    message = failed(
        run("reservation", "release", held.reservation_id, "--reason", "r", "--yes"), 1
    )
    assert "is not held" in message
    assert "not a reservation id" in failed(
        run("reservation", "release", "bogus", "--reason", "r", "--yes"), 2
    )
    assert "Missing option" in failed(run("reservation", "release", held.reservation_id), 2)


def test_lease_show_and_status_show_reservations(run: Any, coord: Any) -> None:
    a = coord.start_session("agent-a")
    held = coord.reserve("agent-a", a.session_id, "proj", ["src/"])
    coord.reserve("agent-a", a.session_id, "other", ["x"], mode="shared")
    shown = ok(run("lease", "show", "agent-a")).stdout
    assert "proj: src/ (exclusive, token 1" in shown
    assert held.reservation_id in shown
    data = json.loads(ok(run("lease", "show", "agent-a", "--json")).stdout)
    assert sorted(r["scope"] for r in data["reservations"]) == ["other", "proj"]
    status = json.loads(ok(run("status", "--json")).stdout)
    assert status["reservations"] == {"held": 2, "scopes": 2}
    assert "2 held in 2 scope(s)" in ok(run("status")).stdout
