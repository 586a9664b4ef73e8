"""The reservation checks of ``coordinator verify`` on hand-made histories and audits:
each catches the violation it names and accepts what is allowed (pure, no server)."""

from __future__ import annotations

from typing import Any

from coordinator.models import AgentEvent, EventType
from coordinator.timestamps import ms_to_datetime
from coordinator.verify.history import NEVER, Operation
from coordinator.verify.reservations import check_reservations, split_events

_seq = iter(range(1, 10_000))


def reserve(
    invoke: int, complete: int, rid: str | None, token: int | None, resources: list[str],
    mode: str = "exclusive", outcome: str = "ok", agent: str = "rsv-0",
) -> Operation:  # fmt: skip
    extra: dict[str, Any] = {"scope": "s", "resources": resources, "mode": mode}
    if rid is not None:
        extra.update(rid=rid, token=token)
    return Operation(
        process=0, seq=next(_seq), kind="reserve", agent=agent, invoke=invoke,
        complete=complete, outcome=outcome, extra=extra,  # type: ignore[arg-type]
    )  # fmt: skip


def release(invoke: int, complete: int, rid: str, flag: int = 1) -> Operation:
    return Operation(
        process=0, seq=next(_seq), kind="release", agent="rsv-0", invoke=invoke,
        complete=complete, outcome="ok", flag=flag, extra={"scope": "s", "rid": rid},
    )  # fmt: skip


def event(
    kind: EventType, n: int, rid: str, token: int, resources: list[str], **meta: Any
) -> AgentEvent:
    return AgentEvent(
        agent_id="rsv-0",
        session_id="1-0011223344556677@rsv-0",
        event_type=kind,
        success=True,
        metadata={
            "reservation_id": rid,
            "token": token,
            "resources": resources,
            "mode": meta.pop("mode", "exclusive"),
            "scope": "s",
            **meta,
        },
        created_at=ms_to_datetime(1000 + n),
        shard=3,
        stream_id=f"{1000 + n}-0",
    )


def kinds(anomalies: list[Any]) -> list[str]:
    return sorted(a.kind for a in anomalies)


G, R, X = (
    EventType.RESERVATION_GRANTED,
    EventType.RESERVATION_RELEASED,
    EventType.RESERVATION_EXPIRED,
)


def test_a_clean_history_passes() -> None:
    ops = [
        reserve(0, 10, "a", 1, ["src/"]),
        release(20, 30, "a"),
        reserve(40, 50, "b", 2, ["src/a.py"]),
        reserve(45, 55, "c", 3, ["docs/"]),
        reserve(60, 70, None, None, ["src/b.py"], outcome="fail"),
    ]
    events = [
        event(G, 1, "a", 1, ["src/"]),
        event(R, 2, "a", 1, ["src/"], by="holder"),
        event(G, 3, "b", 2, ["src/a.py"]),
        event(G, 4, "c", 3, ["docs/"]),
        event(X, 5, "b", 2, ["src/a.py"]),
    ]
    assert check_reservations(ops, events) == []


def test_two_conflicting_holders_in_real_time_are_caught() -> None:
    # a is granted (completes at 10), b is granted at 20..30, a's release at 40 found a held.
    ops = [
        reserve(0, 10, "a", 1, ["src/"]),
        reserve(20, 30, "b", 2, ["src/a.py"]),
        release(40, 50, "a"),
    ]
    events = [
        event(G, 1, "a", 1, ["src/"]),
        event(R, 2, "a", 1, ["src/"], by="holder"),
        event(G, 3, "b", 2, ["src/a.py"]),
    ]
    assert kinds(check_reservations(ops, events)) == ["reservation_exclusion"]
    # Shared holders may overlap; a release that overlaps the grant proves nothing.
    shared = [
        reserve(0, 10, "a", 1, ["src/"], mode="shared"),
        reserve(20, 30, "b", 2, ["src/a.py"], mode="shared"),
        release(40, 50, "a"),
    ]
    assert (
        check_reservations(shared, [*events[:2], event(G, 3, "b", 2, ["src/a.py"], mode="shared")])
        == []
    )
    racing = [
        reserve(0, 10, "a", 1, ["src/"]),
        reserve(20, 30, "b", 2, ["src/a.py"]),
        release(25, 50, "a"),
    ]
    assert "reservation_exclusion" not in kinds(check_reservations(racing, events))


def test_the_audit_replay_catches_an_overlapping_grant() -> None:
    events = [event(G, 1, "a", 1, ["src/"]), event(G, 2, "b", 2, ["src/lib/x"])]
    assert "reservation_exclusion" in kinds(check_reservations([], events))


def test_tokens_must_rise_in_the_stream_and_in_real_time() -> None:
    events = [event(G, 1, "a", 2, ["x"]), event(X, 2, "a", 2, ["x"]), event(G, 3, "b", 2, ["y"])]
    assert "reservation_fencing" in kinds(check_reservations([], events))
    ops = [reserve(0, 10, "a", 5, ["x"]), reserve(20, 30, "b", 4, ["y"])]
    found = check_reservations(ops, [event(G, 1, "b", 4, ["y"]), event(G, 2, "a", 5, ["x"])])
    assert "reservation_fencing" in kinds(found)


def test_every_grant_and_release_is_audited_once() -> None:
    granted_twice = [event(G, 1, "a", 1, ["x"]), event(G, 2, "a", 2, ["x"])]
    assert "reservation_audit" in kinds(check_reservations([], granted_twice))
    missing = check_reservations([reserve(0, 10, "a", 1, ["x"])], [])
    assert kinds(missing) == ["reservation_audit"]
    no_release_event = check_reservations(
        [reserve(0, 10, "a", 1, ["x"]), release(20, 30, "a")], [event(G, 1, "a", 1, ["x"])]
    )
    assert kinds(no_release_event) == ["reservation_audit"]
    ended_twice = [
        event(G, 1, "a", 1, ["x"]),
        event(R, 2, "a", 1, ["x"]),
        event(X, 3, "a", 1, ["x"]),
    ]
    assert "reservation_audit" in kinds(check_reservations([], ended_twice))
    # A grant event without an operation is allowed only for a claim of unknown outcome.
    orphan = [event(G, 1, "z", 1, ["x"])]
    assert kinds(check_reservations([], orphan)) == ["reservation_audit"]
    unknown = reserve(0, NEVER, None, None, ["x"], outcome="unknown")
    assert check_reservations([unknown], orphan) == []


def test_split_events_keeps_reservation_events_apart_in_stream_order() -> None:
    session = AgentEvent(
        agent_id="rsv-0", session_id=None, event_type=EventType.SESSION_STARTED, success=True,
        created_at=ms_to_datetime(1), shard=1, stream_id="1-0",
    )  # fmt: skip
    rest, scoped = split_events(
        {"rsv-0": [event(G, 5, "b", 2, ["y"]), session, event(G, 1, "a", 1, ["x"])]}
    )
    assert rest == {"rsv-0": [session]}
    assert [e.metadata["reservation_id"] for e in scoped] == ["a", "b"]  # type: ignore[index]
