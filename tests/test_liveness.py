"""The keep-alive's state machine (pure): alive, jeopardy, lost, and what events mean."""

from __future__ import annotations

from coordinator.liveness import (
    JEOPARDY_RETRY,
    LeaseState,
    Liveness,
    death_reason,
    default_interval,
)


def test_heartbeats_at_a_third_of_the_ttl() -> None:
    live = Liveness.confirmed_at(100.0, ttl=30.0)
    assert (live.state, live.deadline, live.interval) == (LeaseState.ALIVE, 130.0, 10.0)
    assert live.next_heartbeat() == 110.0
    assert default_interval(9.0) == 3.0


def test_failures_before_the_deadline_are_jeopardy_then_a_confirmation_is_alive() -> None:
    live = Liveness.confirmed_at(0.0, ttl=10.0, interval=2.0)
    live.last_sent = 2.0
    assert live.failed(2.5, "connection refused")
    assert (live.state, live.error) == (LeaseState.JEOPARDY, "connection refused")
    assert live.next_heartbeat() == 2.0 + JEOPARDY_RETRY  # retried sooner than the interval
    assert not live.failed(3.0, "connection refused")  # no change
    assert live.confirmed(4.0, 10.0)
    assert (live.state, live.deadline, live.error) == (LeaseState.ALIVE, 14.0, None)


def test_the_deadline_passing_without_a_confirmation_loses_the_lease() -> None:
    live = Liveness.confirmed_at(0.0, ttl=10.0)
    assert not live.tick(9.99)
    assert live.failed(5.0, "timeout")
    assert live.tick(10.0)
    assert (live.state, live.reason) == (LeaseState.LOST, "expired")
    # lost is final: a late confirmation does not bring it back
    assert not live.confirmed(10.5, 10.0)
    assert live.state is LeaseState.LOST


def test_a_failure_after_the_deadline_is_lost_not_jeopardy() -> None:
    live = Liveness.confirmed_at(0.0, ttl=1.0)
    assert live.failed(1.5, "timeout")
    assert (live.state, live.reason) == (LeaseState.LOST, "expired")


def test_redis_saying_dead_is_lost_with_its_reason() -> None:
    live = Liveness.confirmed_at(0.0, ttl=10.0)
    assert live.dead("revoked")
    assert not live.dead("expired")  # the first reason stays
    assert live.reason == "revoked"


def test_death_reason_reads_only_events_of_this_session() -> None:
    mine = {"agent_id": "a", "session_id": "1-x@a"}
    assert death_reason({**mine, "event_type": "session_revoked"}, "a", "1-x@a") == "revoked"
    assert death_reason({**mine, "event_type": "session_superseded"}, "a", "1-x@a") == (
        "superseded"
    )
    assert death_reason({**mine, "event_type": "session_expired"}, "a", "1-x@a") == "expired"
    assert death_reason({**mine, "event_type": "session_ended"}, "a", "1-x@a") == (
        "no_active_session"
    )
    assert death_reason({**mine, "event_type": "project_set"}, "a", "1-x@a") is None
    other = {"agent_id": "a", "session_id": "2-y@a", "event_type": "session_revoked"}
    assert death_reason(other, "a", "1-x@a") is None
