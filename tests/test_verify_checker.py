"""The verify checker on hand-made histories: linearizable ones pass, broken ones are
caught with a short counter-example, unknown outcomes count as maybe-applied."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from coordinator.models import AgentEvent, EventType
from coordinator.verify.checker import check_register, linearizable
from coordinator.verify.history import NEVER, Operation, merge_retries
from coordinator.verify.invariants import (
    compare_persisted,
    match_history,
    real_time,
    replay_stream,
)

MS = 1_000_000
_seq = iter(range(10**9))


def op(
    kind: str, invoke: float, complete: float | None, outcome: str = "ok", **fields: Any
) -> Operation:
    """An operation of agent ``a``; times in ms; ``complete=None`` for unknown."""
    fields.setdefault("process", 0)
    return Operation(
        seq=next(_seq),
        kind=kind,  # type: ignore[arg-type]
        agent=fields.pop("agent", "a"),
        invoke=int(invoke * MS),
        complete=NEVER if complete is None else int(complete * MS),
        outcome=outcome,  # type: ignore[arg-type]
        **fields,
    )


def write(
    invoke: float,
    complete: float | None,
    project: str,
    version: int | None,
    expected: int | None = None,
    outcome: str = "ok",
    **kw: Any,
) -> Operation:
    return op(
        "cas", invoke, complete, outcome, project=project, version=version, expected=expected, **kw
    )


def read(invoke: float, complete: float, project: str | None, version: int) -> Operation:
    return op("read", invoke, complete, project=project, version=version)


def conflict(
    invoke: float, complete: float, expected: int, project: str | None, version: int
) -> Operation:
    return op(
        "cas",
        invoke,
        complete,
        "fail",
        error="conflict",
        expected=expected,
        project=project,
        version=version,
        extra={"written": "x"},
    )


# --- linearizability -------------------------------------------------------------------


def test_sequential_writes_and_reads_are_linearizable() -> None:
    history = [
        write(0, 1, "p1", 1, expected=0),
        read(2, 3, "p1", 1),
        write(4, 5, "p2", 2),
        conflict(6, 7, expected=1, project="p2", version=2),
        write(8, 9, "p3", 3, expected=2),
        read(10, 11, "p3", 3),
    ]
    assert check_register(history).verdict == "ok"


def test_concurrent_writes_with_one_expectation_cannot_both_succeed() -> None:
    history = [write(0, 10, "p1", 1, expected=0), write(1, 11, "p2", 2, expected=0)]
    result = check_register(history)
    assert result.verdict == "anomaly"
    assert len(result.witness) == 2


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in ((None, 0), ("p1", 1)):
        assert check_register([write(0, 10, "p1", 1), read(2, 5, *seen)]).verdict == "ok"


def test_a_stale_read_after_a_completed_write_is_caught() -> None:
    history = [write(0, 1, "p1", 1), read(2, 3, None, 0)]
    assert check_register(history).verdict == "anomaly"


def test_lost_write_is_caught() -> None:
    history = [write(0, 1, "p1", 1), write(2, 3, "p2", 1)]
    assert check_register(history).verdict == "anomaly"


def test_unknown_write_may_or_may_not_have_taken_effect() -> None:
    unknown = write(0, None, "p1", None, outcome="unknown")
    assert check_register([unknown, read(5, 6, "p1", 1)]).verdict == "ok"
    assert check_register([unknown, read(5, 6, None, 0)]).verdict == "ok"
    assert check_register([unknown, write(5, 6, "p2", 2)]).verdict == "ok"
    assert check_register([unknown, write(5, 6, "p2", 1)]).verdict == "ok"
    # ...but once seen it cannot vanish.
    flip = [unknown, read(5, 6, "p1", 1), read(7, 8, None, 0)]
    assert check_register(flip).verdict == "anomaly"


def test_unknown_write_takes_effect_only_if_its_expectation_holds() -> None:
    history = [
        write(0, 1, "p1", 1),
        write(2, None, "p2", None, expected=0, outcome="unknown"),
        read(5, 6, "p2", 2),
    ]
    assert check_register(history).verdict == "anomaly"


def test_a_conflict_must_report_the_stored_record() -> None:
    assert check_register([write(0, 1, "p1", 1), conflict(2, 3, 0, "p1", 1)]).verdict == "ok"
    assert check_register([write(0, 1, "p1", 1), conflict(2, 3, 0, None, 0)]).verdict == ("anomaly")
    # A conflict whose expectation matched the stored version is a lie.
    assert check_register([write(0, 1, "p1", 1), conflict(2, 3, 1, "p1", 1)]).verdict == ("anomaly")


def test_rejected_attempts_do_not_constrain_the_register() -> None:
    rejected = write(2, 3, "zz", None, outcome="fail", error="superseded")
    assert check_register([write(0, 1, "p1", 1), rejected, read(4, 5, "p1", 1)]).verdict == "ok"


def test_counterexample_is_short_and_starts_from_the_known_state() -> None:
    history = [write(i * 10, i * 10 + 1, f"p{i}", i) for i in range(1, 60)]
    history += [read(i * 10 + 2, i * 10 + 3, f"p{i}", i) for i in range(1, 60)]
    history.append(read(1000, 1001, "p30", 30))  # stale
    history.append(read(1002, 1003, "p59", 59))
    result = check_register(history)
    assert result.verdict == "anomaly"
    assert result.initial == ("p59", 59)
    assert [o.kind for o in result.witness] == ["read"]
    assert result.witness[0].version == 30


def test_counterexample_keeps_the_unknown_writes_it_needs() -> None:
    history = [
        write(0, 1, "p1", 1),
        write(2, None, "p2", None, outcome="unknown"),
        read(5, 6, "p2", 2),
        read(7, 8, "p1", 1),
    ]
    result = check_register(history)
    assert result.verdict == "anomaly"
    assert result.initial == ("p1", 1)
    assert [o.outcome for o in result.witness] == ["unknown", "ok", "ok"]


def test_search_is_bounded() -> None:
    history = [write(0, 100, f"p{i}", None, outcome="unknown") for i in range(30)]
    history.append(read(200, 201, "p0", 99))
    verdict, steps = linearizable(history, budget=1000)
    assert verdict == "inconclusive"
    assert steps == 1001


def test_retries_with_a_request_id_fold_into_one_write() -> None:
    first = write(0, None, "p1", None, outcome="unknown", request_id="r1")
    again = write(50, 60, "p1", 1, request_id="r1")
    merged = merge_retries([again, first, read(70, 71, "p1", 1)])
    assert len(merged) == 2
    folded = merged[0]
    assert (folded.invoke, folded.complete, folded.outcome, folded.retries) == (0, 60 * MS, "ok", 1)
    # The last attempt never ran (refused connection): the first may have applied.
    refused = write(50, 51, "p1", None, outcome="fail", error="not_applied", request_id="r1")
    [maybe] = merge_retries([first, refused])
    assert (maybe.outcome, maybe.complete) == ("unknown", NEVER)
    # Both attempts unknown: still maybe-applied.
    both = merge_retries([first, write(50, None, "p1", None, outcome="unknown", request_id="r1")])
    assert [o.outcome for o in both] == ["unknown"]


# --- audit stream and real time --------------------------------------------------------

_ids = iter(range(1, 10**9))


def event(etype: EventType, session: str | None, **fields: Any) -> AgentEvent:
    n = next(_ids)
    return AgentEvent(
        agent_id="a",
        session_id=session,
        event_type=etype,
        success=fields.pop("success", True),
        created_at=datetime.fromtimestamp(n, tz=UTC),
        shard=0,
        stream_id=f"{n}-0",
        **fields,
    )


def started(sid: str, token: int) -> AgentEvent:
    return event(EventType.SESSION_STARTED, sid, fencing_token=token)


def wrote(sid: str, token: int, to: str, version: int, frm: str | None = None) -> AgentEvent:
    etype = EventType.PROJECT_SWITCHED if frm else EventType.PROJECT_SET
    return event(
        etype, sid, fencing_token=token, from_project=frm, to_project=to, actual_version=version
    )


def test_stream_replay_accepts_a_correct_lifecycle() -> None:
    events = [
        started("s1", 1),
        wrote("s1", 1, "p1", 1),
        event(EventType.SESSION_SUPERSEDED, "s1", fencing_token=1),
        started("s2", 2),
        event(EventType.WRITE_REJECTED, "s1", success=False, error_message="superseded"),
        wrote("s2", 2, "p2", 2, frm="p1"),
        event(EventType.SESSION_EXPIRED, "s2", fencing_token=2),
    ]
    assert replay_stream("a", events) == []


def test_stream_replay_catches_stale_writes_gaps_and_token_regressions() -> None:
    superseded = [
        started("s1", 1),
        event(EventType.SESSION_SUPERSEDED, "s1", fencing_token=1),
        started("s2", 2),
        wrote("s1", 1, "p1", 1),
    ]
    [found] = replay_stream("a", superseded)
    assert (found.kind, found.message) == (
        "stale_write",
        "write accepted from a session that was superseded",
    )
    gap = [started("s1", 1), wrote("s1", 1, "p1", 1), wrote("s1", 1, "p2", 3, frm="p1")]
    assert [a.kind for a in replay_stream("a", gap)] == ["version"]
    tokens = [
        started("s1", 5),
        event(EventType.SESSION_ENDED, "s1", fencing_token=5),
        started("s2", 5),
    ]
    assert [a.kind for a in replay_stream("a", tokens)] == ["fencing"]
    # An expiry must carry the expired session's token, not the next one.
    expiry = [started("s1", 1), event(EventType.SESSION_EXPIRED, "s1", fencing_token=2)]
    assert [a.kind for a in replay_stream("a", expiry)] == ["fencing"]


def test_history_and_stream_must_match_one_for_one() -> None:
    events = {"a": [started("s1", 1), wrote("s1", 1, "p1", 1)]}
    ok = write(0, 1, "p1", 1, session_id="s1", event_id=events["a"][1].stream_id)
    start = op("start", 0, 1, session_id="s1", fencing_token=1)
    assert match_history([start, ok], events) == []
    missing = {"a": [started("s1", 1)]}
    assert {a.kind for a in match_history([start, ok], missing)} == {"audit"}
    unknown = write(0, None, "p1", None, outcome="unknown", session_id="s1")
    assert match_history([start, unknown], events) == []
    assert match_history([start, unknown], missing) == []
    not_applied = write(0, 1, "p1", None, outcome="fail", error="not_applied", session_id="s1")
    assert {a.kind for a in match_history([start, not_applied], events)} == {"audit"}


def test_write_after_the_lease_ran_out_is_caught() -> None:
    start = op("start", 0, 1, session_id="s1", fencing_token=1)
    late = write(1600, 1601, "p1", 1, session_id="s1", fencing_token=1)
    [found] = real_time([start, late], lease_ttl=1.0)
    assert found.kind == "stale_write"
    renewed = op("heartbeat", 900, 901, session_id="s1", fencing_token=1)
    assert real_time([start, renewed, late], lease_ttl=1.0) == []
    maybe = op("heartbeat", 900, None, "unknown", session_id="s1", fencing_token=1)
    assert real_time([start, maybe, late], lease_ttl=1.0) == []
    # The evidence: the renewals before the write and the heartbeats refused since, not
    # the renewals after it.
    refused = op("heartbeat", 900, 901, "fail", session_id="s1", error="expired")
    after = op("heartbeat", 1700, 1701, session_id="s1", fencing_token=1)
    [found] = real_time([start, refused, late, after], lease_ttl=1.0)
    assert "(599 ms past it)" in found.message
    assert [line.split("] ")[0] for line in found.evidence] == [
        "[0.0 .. 1.0 ms",
        "[900.0 .. 901.0 ms",
        "[1600.0 .. 1601.0 ms",
    ]


def test_a_session_begun_by_a_start_of_unknown_outcome_may_be_adopted() -> None:
    # Client 0's start was cut off by a restart, so it never learned the session id;
    # the session lived, client 1 adopted it from the lease and wrote with it at once.
    maybe = op("start", 4000, None, "unknown")
    adopted = write(4400, 4401, "p1", 1, session_id="s1", fencing_token=1, process=1)
    assert real_time([maybe, adopted], lease_ttl=0.5) == []
    # Without such a start the session came from nowhere.
    [found] = real_time([adopted], lease_ttl=0.5)
    assert found.kind == "stale_write"
    assert "no start or heartbeat" in found.message
    assert "its start is in no record" in found.message
    # An unknown start begins no session whose start is recorded...
    known = op("start", 0, 1, session_id="s1", fencing_token=1)
    assert [a.kind for a in real_time([known, maybe, adopted], lease_ttl=0.5)] == ["stale_write"]
    # ...nor one of another agent, nor a session written with before the start was sent.
    other = op("start", 4000, None, "unknown", agent="b")
    assert [a.kind for a in real_time([other, adopted], lease_ttl=0.5)] == ["stale_write"]
    after = op("start", 4402, None, "unknown")
    assert [a.kind for a in real_time([after, adopted], lease_ttl=0.5)] == ["stale_write"]


@pytest.mark.parametrize("closer", ["end", "newer start"])
def test_write_after_its_session_was_closed_is_caught(closer: str) -> None:
    start = op("start", 0, 1, session_id="s1", fencing_token=1)
    if closer == "end":
        close = op("end", 2, 3, session_id="s1", fencing_token=1, flag=1)
    else:
        close = op("start", 2, 3, session_id="s2", fencing_token=2, process=1)
    late = write(4, 5, "p1", 1, session_id="s1", fencing_token=1)
    assert [a.kind for a in real_time([start, close, late], lease_ttl=10)] == ["stale_write"]


def test_sessions_started_in_turn_get_increasing_tokens() -> None:
    first = op("start", 0, 1, session_id="s1", fencing_token=2)
    second = op("start", 2, 3, session_id="s2", fencing_token=1)
    assert [a.kind for a in real_time([first, second], lease_ttl=10)] == ["fencing"]
    overlapping = op("start", 0.5, 3, session_id="s2", fencing_token=1)
    assert real_time([first, overlapping], lease_ttl=10) == []


def test_persisted_audit_must_equal_the_stream_one_for_one() -> None:
    events = [started("s1", 1), wrote("s1", 1, "p1", 1)]
    stream = {"a": events}
    assert compare_persisted(events, stream, dead_letters=0, anomaly_shard=-2) == []
    # Trimmed from the stream after persisting: fine.
    assert compare_persisted(events, {"a": events[1:]}, 0, -2) == []
    [lost] = compare_persisted(events[:1], stream, 0, -2)
    assert lost.message == "a stream entry is not in the sink after the worker drained"
    changed = [events[0], events[1].model_copy(update={"actual_version": 2})]
    [differs] = compare_persisted(changed, stream, 0, -2)
    assert differs.message == "the sink's copy differs from the stream entry"
    assert [a.kind for a in compare_persisted(events + events[1:], stream, 0, -2)] == ["persisted"]
    assert compare_persisted(events, stream, dead_letters=1, anomaly_shard=-2)
    flagged = event(EventType.AUDIT_ANOMALY, None, error_message="version went back")
    flagged = flagged.model_copy(update={"shard": -2})
    [regression] = compare_persisted([*events, flagged], stream, 0, -2)
    assert "version went back" in regression.message


def test_an_end_overtaken_by_a_newer_start_may_answer_0() -> None:
    # The end's first attempt ended s1 (the event is there), its reply was lost, and a
    # newer session started before the resend, which answered 0.
    events = {"a": [started("s1", 1), event(EventType.SESSION_ENDED, "s1", fencing_token=1)]}
    first = op("start", 0, 1, session_id="s1", fencing_token=1)
    end = op("end", 10, 300, session_id="s1", flag=0)
    newer = op("start", 50, 60, session_id="s2", fencing_token=2)
    events["a"].append(started("s2", 2))
    assert match_history([first, end, newer], events) == []
    # Without a start while it was in flight, a 0 beside an end event is an anomaly.
    later = op("start", 400, 410, session_id="s2", fencing_token=2)
    [found] = match_history([first, end, later], events)
    assert found.message.startswith("session_ended events: 1")
