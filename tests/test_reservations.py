"""Resource reservations on real servers (single node and cluster, both shells):
conflicts of every mode and path shape, all or nothing, fencing, release, renew,
the session tie-in, lapsed holders, waits in arrival order, audit."""

from __future__ import annotations

import json
import threading
import zlib
from datetime import timedelta
from typing import Any

import pytest
import redis

from coordinator import (
    InvalidInputError,
    RequestIdReusedError,
    ReservationConflict,
    ReservationNotHeld,
    ReservationScopesNeeded,
    SessionLeaseExpired,
)
from coordinator.constants import DEFAULT_SHARDS
from tests.helpers import snapshot, stream_entries, wait_until

pytestmark = pytest.mark.cluster


def shard(name: str) -> int:
    return zlib.crc32(name.encode()) % DEFAULT_SHARDS


def agent_for(scope: str, same_slot: bool, prefix: str = "agent") -> str:
    """An agent id whose shard is (or is not) the scope's: the lease is checked inside
    the reserve script, or read before it."""
    for i in range(1000):
        name = f"{prefix}-{i}"
        if (shard(name) == shard(scope)) == same_slot:
            return name
    raise AssertionError("no such agent")


def events(raw: redis.Redis, kind: str) -> list[dict[str, str]]:
    return [f for _, f in stream_entries(raw) if f["event_type"] == kind]


#: (held, held mode, claimed, claim mode, conflicts?)
SHAPES = [
    ("src/", "exclusive", "src/a.py", "exclusive", True),
    ("src/a.py", "exclusive", "src/", "exclusive", True),
    ("src", "exclusive", "src/a.py", "shared", True),
    ("src/deep/x.py", "shared", "src/", "exclusive", True),
    ("src/", "shared", "src/a.py", "shared", False),
    ("src/", "shared", "src/a.py", "exclusive", True),
    ("src/a.py", "shared", "src/", "shared", False),
    ("a.py", "shared", "a.py", "shared", False),
    ("a.py", "exclusive", "a.py", "shared", True),
    ("a.py", "shared", "a.py", "exclusive", True),
    ("src/", "exclusive", "src2/a.py", "exclusive", False),
    ("src/a", "exclusive", "src/b", "exclusive", False),
    ("src/a", "exclusive", "src/ab", "exclusive", False),
    ("/abs/x", "exclusive", "/abs/", "exclusive", True),
    ("db:users", "exclusive", "db:users", "exclusive", True),
]


@pytest.mark.slow
@pytest.mark.parametrize("same_slot", [True, False], ids=["same-slot", "cross-slot"])
def test_conflicts_of_every_mode_and_path_shape(client: Any, same_slot: bool) -> None:
    for i, (held, held_mode, claimed, claim_mode, conflicts) in enumerate(SHAPES):
        scope = f"proj-{i}"
        a, b = agent_for(scope, same_slot, "a"), agent_for(scope, same_slot, "b")
        sa, sb = client.start_session(a), client.start_session(b)
        first = client.reserve(a, sa.session_id, scope, [held], mode=held_mode)
        assert first.resources == [held]
        assert first.mode == held_mode
        if conflicts:
            with pytest.raises(ReservationConflict) as caught:
                client.reserve(b, sb.session_id, scope, [claimed], mode=claim_mode)
            [holder] = caught.value.holders
            assert (holder.agent_id, holder.resources, holder.mode) == (a, [held], held_mode)
            assert holder.reservation_id == first.reservation_id
            assert 25 < holder.expires_in <= 30
        else:
            second = client.reserve(b, sb.session_id, scope, [claimed], mode=claim_mode)
            assert second.fencing_token == first.fencing_token + 1


def test_conflict_carries_every_holder_and_is_audited(client: Any, raw: redis.Redis) -> None:
    s1, s2, s3 = (client.start_session(f"agent-{i}") for i in range(3))
    one = client.reserve("agent-0", s1.session_id, "proj", ["src/a.py"], mode="shared", ttl=20)
    two = client.reserve("agent-1", s2.session_id, "proj", ["src/", "docs/"], mode="shared")
    with pytest.raises(ReservationConflict) as caught:
        client.reserve("agent-2", s3.session_id, "proj", ["src/a.py", "docs/x", "free"])
    held = {h.reservation_id: h for h in caught.value.holders}
    assert set(held) == {one.reservation_id, two.reservation_id}
    assert held[one.reservation_id].resources == ["src/a.py"]
    assert held[one.reservation_id].expires_in == pytest.approx(20, abs=1)
    assert held[two.reservation_id].resources == ["src/", "docs/"]
    assert held[two.reservation_id].agent_id == "agent-1"
    assert "agent-0 holds src/a.py (shared" in str(caught.value)
    [refused] = events(raw, "reservation_refused")
    assert refused["agent_id"] == "agent-2"
    assert refused["success"] == "0"
    assert refused["session_id"] == s3.session_id
    assert {h["reservation_id"] for h in json.loads(refused["metadata"])["holders"]} == {
        one.reservation_id,
        two.reservation_id,
    }


def test_all_or_nothing_writes_only_the_refusal(client: Any, raw: redis.Redis) -> None:
    sa, sb = client.start_session("agent-a"), client.start_session("agent-b")
    client.reserve("agent-a", sa.session_id, "proj", ["f7"])
    before = snapshot(raw)
    wanted = [f"f{i}" for i in range(10)]
    with pytest.raises(ReservationConflict):
        client.reserve("agent-b", sb.session_id, "proj", wanted)
    after = snapshot(raw)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert all(k.endswith(":events") for k in changed), changed
    assert len(events(raw, "reservation_refused")) == 1
    assert len(events(raw, "reservation_granted")) == 1
    # Once f7 is free the same claim is granted whole.
    client.release("agent-a", sa.session_id, client.list_reservations("proj")[0].reservation_id)
    granted = client.reserve("agent-b", sb.session_id, "proj", wanted)
    assert [r.resources for r in client.list_reservations("proj")] == [wanted]
    assert all(client.holders("proj", f) == [granted] for f in wanted)


def test_fencing_tokens_strictly_increase_per_scope(client: Any) -> None:
    session = client.start_session("agent-1")
    tokens: dict[str, list[int]] = {"p": [], "q": []}
    for i in range(6):
        scope = "p" if i % 3 else "q"
        r = client.reserve("agent-1", session.session_id, scope, [f"r{i}"])
        tokens[scope].append(r.fencing_token)
        assert client.release("agent-1", session.session_id, r.reservation_id)
    assert tokens == {"p": [1, 2, 3, 4], "q": [1, 2]}


@pytest.mark.slow
def test_release_renew_list_and_holders(client: Any, raw: redis.Redis) -> None:
    sa, sb = client.start_session("agent-a"), client.start_session("agent-b")
    r = client.reserve("agent-a", sa.session_id, "proj", ["src/"], ttl=10, reason="refactor")
    other = client.reserve("agent-b", sb.session_id, "other", ["x"], mode="shared")
    assert client.list_reservations() == [other, r] or client.list_reservations() == [r, other]
    assert client.list_reservations(agent_id="agent-a") == [r]
    assert client.list_reservations(scope="proj", agent_id="agent-b") == []
    assert client.holders("proj", "src/deep/file.py") == [r]
    assert client.holders("proj", "docs") == []
    renewed = client.renew("agent-a", sa.session_id, r.reservation_id, ttl=20)
    assert renewed.expires_at > r.expires_at
    assert renewed.ttl == 20
    assert renewed.fencing_token == r.fencing_token
    assert renewed.reason == "refactor"
    # Another session may not release or renew it.
    assert client.release("agent-b", sb.session_id, r.reservation_id) is False
    with pytest.raises(ReservationNotHeld):
        client.renew("agent-b", sb.session_id, r.reservation_id)
    assert client.release("agent-a", sa.session_id, r.reservation_id) is True
    assert client.release("agent-a", sa.session_id, r.reservation_id) is False
    with pytest.raises(ReservationNotHeld):
        client.renew("agent-a", sa.session_id, r.reservation_id)
    # An operator releases anyone's reservation, with a reason.
    assert client.release_reservation(other.reservation_id, "stuck agent") is True
    assert client.release_reservation(other.reservation_id, "again") is False
    assert client.list_reservations() == []
    released = events(raw, "reservation_released")
    assert sorted(e["error_message"] for e in released) == ["", "stuck agent"]


@pytest.mark.single_node
def test_renew_reservations_of_a_session(client: Any) -> None:
    session = client.start_session("agent-1")
    held = [client.reserve("agent-1", session.session_id, s, ["x"], ttl=5) for s in "abc"]
    renewed = client.renew_reservations("agent-1", session.session_id, ttl=50)
    assert sorted(r.reservation_id for r in renewed) == sorted(r.reservation_id for r in held)
    assert all(r.ttl == 50 for r in renewed)


def _end(client: Any, agent: str, session_id: str, ending: str) -> None:
    if ending == "end":
        client.end_session(agent, session_id)
    elif ending == "revoke":
        client.revoke_session(agent, "gone")
    elif ending == "supersede":
        client.start_session(agent)
    else:
        wait_until(lambda: not client.list_leases(agent))


ENDINGS = ("end", "revoke", "supersede", "expire")


@pytest.mark.parametrize("same_slot", [True, False], ids=["same-slot", "cross-slot"])
def test_a_dead_holder_never_blocks_a_claim(
    client: Any, make_client: Any, raw: redis.Redis, same_slot: bool
) -> None:
    other = make_client()  # another process ends the holder: only the claim can notice
    for ending in ENDINGS:
        scope = f"proj-{ending}"
        a = agent_for(scope, same_slot, f"a-{ending}")
        b = agent_for(scope, not same_slot, f"b-{ending}")
        holder = client.start_session(a, ttl=0.05 if ending == "expire" else None)
        claimer = client.start_session(b)
        client.reserve(a, holder.session_id, scope, ["src/"], ttl=30)
        _end(other, a, holder.session_id, ending)
        granted = client.reserve(b, claimer.session_id, scope, ["src/a.py"])
        assert [r.reservation_id for r in client.list_reservations(scope)] == [
            granted.reservation_id
        ]
        kind = "reservation_expired" if ending == "expire" else "reservation_released"
        [gone] = [e for e in events(raw, kind) if e["agent_id"] == a]
        assert gone["session_id"] == holder.session_id
        assert (
            gone["error_message"]
            == {
                "end": "session ended",
                "revoke": "session revoked",
                "supersede": "session superseded",
                "expire": "session expired",
            }[ending]
        )
        # The dead session cannot reserve either.
        with pytest.raises(SessionLeaseExpired):
            client.reserve(a, holder.session_id, "elsewhere", ["y"])


def scopes_for(agent: str, same_slot: bool, count: int, prefix: str = "scope") -> list[str]:
    """``count`` scope names in (or out of) the agent's shard."""
    found = [
        f"{prefix}-{i}"
        for i in range(1000)
        if (shard(f"{prefix}-{i}") == shard(agent)) == same_slot
    ]
    return found[:count]


@pytest.mark.slow
def test_the_reaper_releases_a_dead_sessions_reservations(
    client: Any, make_client: Any, raw: redis.Redis
) -> None:
    other = make_client()  # another process ends the sessions: the reaper must act
    for ending in ENDINGS:
        agent = f"agent-{ending}"
        near = scopes_for(agent, True, 2, f"near-{ending}")
        far = scopes_for(agent, False, 2, f"far-{ending}")
        session = client.start_session(agent, ttl=0.5 if ending == "expire" else None)
        for scope in (*near, *far):
            client.reserve(agent, session.session_id, scope, [f"{agent}/x", f"{agent}/y/"], ttl=30)
        _end(other, agent, session.session_id, ending)
        # Ending the session released those of its own shard in the same script; a
        # lapsed lease nobody reaped yet leaves all four to the reaper.
        left = 4 if ending == "expire" else 2
        assert client.reap_reservations() == left
        assert client.list_reservations(agent_id=agent) == []
        assert client.reap_reservations() == 0
        assert raw.exists(client.keys.agent_keys(agent).listed) == 0
    assert len(events(raw, "reservation_released")) == 12
    assert len(events(raw, "reservation_expired")) == 4


def test_a_lapsed_reservation_expires(client: Any, raw: redis.Redis) -> None:
    sa, sb = client.start_session("agent-a"), client.start_session("agent-b")
    short = client.reserve("agent-a", sa.session_id, "proj", ["x"], ttl=0.05)
    client.reserve("agent-a", sa.session_id, "proj2", ["x"], ttl=0.05)
    wait_until(lambda: not client.list_reservations())  # listings hide lapsed ones
    # The claim finds the lapsed holder and expires it (audited) on the way.
    client.reserve("agent-b", sb.session_id, "proj", ["x"])
    with pytest.raises(ReservationNotHeld):
        client.renew("agent-a", sa.session_id, short.reservation_id)
    assert client.reap_reservations() == 1  # proj2's, by the reaper
    expired = events(raw, "reservation_expired")
    assert len(expired) == 2
    assert all(e["error_message"] == "reservation expired" for e in expired)


@pytest.mark.single_node
def test_request_id_makes_a_reservation_retry_safe(client: Any) -> None:
    session = client.start_session("agent-1")
    first = client.reserve("agent-1", session.session_id, "proj", ["x"], request_id="req-1")
    again = client.reserve("agent-1", session.session_id, "proj", ["x"], request_id="req-1")
    assert again.reservation_id == first.reservation_id
    assert again.fencing_token == first.fencing_token
    with pytest.raises(RequestIdReusedError):
        client.reserve("agent-1", session.session_id, "proj", ["y"], request_id="req-1")
    assert len(client.list_reservations()) == 1


#: (field named by the error, arguments of a bad claim)
BAD_CLAIMS: list[tuple[str, dict[str, Any]]] = [
    ("resources", {"resources": "src/a.py"}),
    ("resources", {"resources": []}),
    ("resources", {"resources": ["a", "a/"]}),
    ("resources", {"resources": ["src/", "src/a.py"]}),
    ("resources", {"resources": ["a//b"]}),
    ("resources", {"resources": ["/"]}),
    ("resources", {"resources": ["x" * 513]}),
    ("resources", {"resources": ["bad\nname"]}),
    ("scope", {"scope": ""}),
    ("mode", {"mode": "read"}),
    ("ttl", {"ttl": -1}),
    ("wait", {"wait": -1}),
    ("request_id", {"request_id": "no spaces"}),
]


@pytest.mark.single_node
def test_bad_input_writes_nothing(client: Any, raw: redis.Redis) -> None:
    session = client.start_session("agent-1")
    before = snapshot(raw)
    for field, kwargs in BAD_CLAIMS:
        args: dict[str, Any] = {"scope": "proj", "resources": ["x"], **kwargs}
        with pytest.raises(InvalidInputError) as caught:
            client.reserve(
                "agent-1", session.session_id, args.pop("scope"), args.pop("resources"), **args
            )
        assert caught.value.field == field
    with pytest.raises(InvalidInputError):
        client.release("agent-1", session.session_id, "not-an-id")
    assert snapshot(raw) == before


@pytest.mark.single_node
def test_a_foreign_session_cannot_reserve(client: Any) -> None:
    session = client.start_session("agent-1")
    with pytest.raises(SessionLeaseExpired) as caught:
        client.reserve("agent-2", session.session_id, "proj", ["x"])
    assert caught.value.reason == "session_mismatch"


def _claim_in_thread(
    make_client: Any, agent: str, sid: str, out: list[Any], **kwargs: Any
) -> threading.Thread:
    def run() -> None:
        c = make_client()
        try:
            out.append((agent, c.reserve(agent, sid, "proj", **kwargs)))
        except Exception as exc:  # surfaced by the assertions
            out.append((agent, exc))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _queued(raw: redis.Redis, count: int) -> bool:
    keys = list(raw.scan_iter(match="*rsvwait:proj"))
    return bool(keys) and len([f for f in raw.hkeys(keys[0]) if f != "#"]) == count


@pytest.mark.slow
def test_waits_are_granted_in_arrival_order(make_client: Any, raw: redis.Redis) -> None:
    client = make_client(lease_ttl=30)
    sessions = {name: client.start_session(name).session_id for name in ("h", "w1", "w2", "s")}
    held = client.reserve("h", sessions["h"], "proj", ["src/"], mode="shared")
    granted: list[Any] = []
    # An exclusive waiter queues behind the shared holder...
    first = _claim_in_thread(
        make_client, "w1", sessions["w1"], granted, resources=["src/a.py"], wait=20
    )
    wait_until(lambda: _queued(raw, 1))
    # ...and a later shared claim may not overtake it, though the holder is shared too.
    with pytest.raises(ReservationConflict) as caught:
        client.reserve("s", sessions["s"], "proj", ["src/"], mode="shared")
    assert [w.agent_id for w in caught.value.waiting] == ["w1"]
    second = _claim_in_thread(
        make_client, "w2", sessions["w2"], granted, resources=["src/"], mode="shared", wait=20
    )
    wait_until(lambda: _queued(raw, 2))
    assert client.release("h", sessions["h"], held.reservation_id)
    first.join(30)
    wait_until(lambda: len(granted) == 1)
    assert granted[0][0] == "w1"
    client.release("w1", sessions["w1"], granted[0][1].reservation_id)
    second.join(30)
    assert [agent for agent, _ in granted] == ["w1", "w2"]
    assert granted[0][1].fencing_token < granted[1][1].fencing_token


@pytest.mark.slow
def test_a_wait_that_runs_out_is_refused_and_leaves_the_queue(
    client: Any, raw: redis.Redis
) -> None:
    sa, sb = client.start_session("agent-a"), client.start_session("agent-b")
    client.reserve("agent-a", sa.session_id, "proj", ["x"])
    with pytest.raises(ReservationConflict) as caught:
        client.reserve("agent-b", sb.session_id, "proj", ["x"], wait=0.2)
    assert [h.agent_id for h in caught.value.holders] == ["agent-a"]
    assert _queued(raw, 0)
    assert len(events(raw, "reservation_refused")) == 1


@pytest.mark.single_node
def test_the_worker_releases_dead_sessions_reservations_and_persists_the_audit(
    redis_url: str, tmp_path: Any
) -> None:
    from coordinator import Coordinator, Settings
    from coordinator.sinks import sink_from_url
    from coordinator.worker import EventWorker, WorkerOptions
    from tests.helpers import RunningWorker

    client = Coordinator.from_url(redis_url, namespace="test")
    sink = sink_from_url(f"sqlite:///{tmp_path / 'events.db'}")
    worker = EventWorker(
        Settings.from_url(redis_url, namespace="test"),
        sink,
        WorkerOptions(reap_interval=0.1, block_ms=50),
    )
    with RunningWorker(worker):
        ended = client.start_session("agent-ended")
        superseded = client.start_session("agent-superseded")
        lapsing = client.start_session("agent-lapsing")
        for scope in ("p", "q"):
            client.reserve("agent-ended", ended.session_id, scope, ["a"])
            client.reserve("agent-superseded", superseded.session_id, scope, ["b"])
        client.reserve("agent-lapsing", lapsing.session_id, "p", ["c"], ttl=0.1)
        # Another process ends and supersedes: only the worker can release these.
        other = Coordinator.from_url(redis_url, namespace="test")
        other.end_session("agent-ended", ended.session_id)
        other.start_session("agent-superseded")
        other.close()
        wait_until(lambda: client.list_reservations() == [])
        wait_until(lambda: sink.count("test", event_type="reservation_released") == 4)
        wait_until(lambda: sink.count("test", event_type="reservation_expired") == 1)
        assert sink.count("test", event_type="reservation_granted") == 5
        assert sink.count("test", event_type="audit_anomaly") == 0
    assert worker.metrics.reservations_reaped == 5
    client.close()


@pytest.mark.single_node
def test_the_keep_alive_renews_the_sessions_reservations(redis_url: str) -> None:
    from coordinator import Coordinator

    client = Coordinator.from_url(redis_url, namespace="test", lease_ttl=30)
    session = client.start_session("agent-1")
    held = client.reserve("agent-1", session.session_id, "proj", ["src/"], ttl=3)
    with client.keep_alive(session, interval=0.2):
        # Renewed: its deadline moved more than a second past the first one.
        wait_until(
            lambda: (
                [r.expires_at for r in client.list_reservations()]
                > [held.expires_at + timedelta(seconds=1)]
            )
        )
    client.close()


def test_ending_a_session_releases_what_this_client_granted_at_once(
    client: Any, raw: redis.Redis
) -> None:
    session = client.start_session("agent-1")
    for scope in ("p", "q"):
        client.reserve("agent-1", session.session_id, scope, ["src/"])
    assert client.end_session("agent-1", session.session_id) is True
    assert client.list_reservations() == []  # no reaper ran
    released = events(raw, "reservation_released")
    assert [e["error_message"] for e in released] == ["session ended", "session ended"]
    assert client.end_session("agent-1", session.session_id) is True
    assert len(events(raw, "reservation_released")) == 2


def test_superseding_or_revoking_releases_what_this_client_granted_at_once(
    client: Any, raw: redis.Redis
) -> None:
    first = client.start_session("agent-1")
    client.reserve("agent-1", first.session_id, "p", ["src/"])
    second = client.start_session("agent-1")  # supersedes the first
    assert client.list_reservations() == []  # no reaper ran
    client.reserve("agent-1", second.session_id, "p", ["src/"])
    assert client.revoke_session("agent-1", "gone") is True
    assert client.list_reservations() == []
    released = events(raw, "reservation_released")
    assert [e["error_message"] for e in released] == ["session superseded", "session revoked"]


SESSION_EVENTS = {
    "end": "session_ended",
    "revoke": "session_revoked",
    "supersede": "session_superseded",
    "expire": "session_expired",
}


def _end_in_script(client: Any, agent: str, session_id: str, ending: str) -> None:
    """End the session the way ``ending`` says; a lapsed lease is reaped (audited) by
    ``cleanup_expired_sessions``, the worker's reaper in one call."""
    if ending == "expire":
        wait_until(lambda: not client.list_leases(agent))
        assert client.cleanup_expired_sessions() == 1
    else:
        _end(client, agent, session_id, ending)


@pytest.mark.parametrize("ender", ["same", "other"], ids=["granting-client", "other-client"])
@pytest.mark.parametrize("ending", ENDINGS)
def test_ending_a_session_releases_its_reservations_in_the_same_script(
    client: Any, make_client: Any, raw: redis.Redis, ending: str, ender: str
) -> None:
    # The client that granted knows the scopes; another one learns them from the
    # script's refusal. Either way no worker runs here: the end itself releases.
    by = client if ender == "same" else make_client()
    agent = "agent-tied"
    near = scopes_for(agent, True, 2)
    far = scopes_for(agent, False, 1)
    session = client.start_session(agent, ttl=0.5 if ending == "expire" else None)
    held = {
        scope: client.reserve(agent, session.session_id, scope, ["src/", "README.md"], ttl=60)
        for scope in (*near, *far)
    }
    assert raw.hlen(client.keys.agent_keys(agent).listed) == 2
    _end_in_script(by, agent, session.session_id, ending)

    left = client.list_reservations(agent_id=agent)
    if ender == "same" and ending != "expire":
        assert left == []  # the far one went right after, from this client's memory
    else:
        assert [r.scope for r in left] == far  # the reaper's (or its holder's) to release
    assert raw.exists(client.keys.agent_keys(agent).listed) == 0
    # In the agent's shard stream: the session's end, then at once the releases.
    stream = client.keys.stream(shard(agent))
    entries = [fields for _, fields in raw.xrange(stream)]
    [at] = [
        i
        for i, f in enumerate(entries)
        if f["event_type"] == SESSION_EVENTS[ending] and f["session_id"] == session.session_id
    ]
    released = entries[at + 1 : at + 3]
    kind = "reservation_expired" if ending == "expire" else "reservation_released"
    assert [f["event_type"] for f in released] == [kind, kind]
    assert sorted(json.loads(f["metadata"])["reservation_id"] for f in released) == sorted(
        held[scope].reservation_id for scope in near
    )
    message = {
        "end": "session ended",
        "revoke": "session revoked",
        "supersede": "session superseded",
        "expire": "session expired",
    }[ending]
    assert {f["error_message"] for f in released} == {message}
    assert {json.loads(f["metadata"])["by"] for f in released} == {"session"}
    assert all(f["session_id"] == session.session_id for f in released)
    # The resources are free for another agent at once.
    other = client.start_session("agent-next")
    for scope in near:
        client.reserve("agent-next", other.session_id, scope, ["src/a.py"])
    # Each release is audited once, also when the reaper runs afterwards.
    client.reap_reservations()
    for scope in near:
        assert (
            len([e for e in events(raw, kind) if json.loads(e["metadata"])["scope"] == scope]) == 1
        )


def test_an_operation_not_given_the_scopes_changes_nothing(
    client: Any, raw: redis.Redis, state_of: Any
) -> None:
    agent = "agent-ops"
    near = scopes_for(agent, True, 2)
    session = client.start_session(agent)
    for scope in near:
        client.reserve(agent, session.session_id, scope, ["a"])
    ops = client.operations
    before = snapshot(raw)
    for op in (
        ops.end_session(agent, session.session_id),
        ops.revoke_session(agent, "operator"),
        ops.start_session(agent, None, None, False),
        ops.end_session(agent, session.session_id, near[:1]),
    ):
        with pytest.raises(ReservationScopesNeeded) as caught:
            client.execute(op)
        assert caught.value.scopes
        assert set(caught.value.scopes) <= set(near)
        assert caught.value.agent_id == agent
    assert snapshot(raw) == before  # refused before any write
    with pytest.raises(InvalidInputError):  # a scope of another shard: nothing is sent
        ops.end_session(agent, session.session_id, scopes_for(agent, False, 1))
    assert client.execute(ops.end_session(agent, session.session_id, near)) is True
    assert client.list_reservations(agent_id=agent) == []


def test_releases_take_reservations_off_the_agents_listing(client: Any, raw: redis.Redis) -> None:
    agent = "agent-listed"
    a, b, c = scopes_for(agent, True, 3)
    session = client.start_session(agent)
    listed = client.keys.agent_keys(agent).listed
    mine = client.reserve(agent, session.session_id, a, ["x"])
    operators = client.reserve(agent, session.session_id, b, ["x"])
    short = client.reserve(agent, session.session_id, c, ["x"], ttl=0.05)
    assert raw.hlen(listed) == 3
    assert client.release(agent, session.session_id, mine.reservation_id)
    assert client.release_reservation(operators.reservation_id, reason="stuck")
    wait_until(lambda: not client.list_reservations(scope=c))
    assert client.reap_reservations() == 1  # the lapsed one, by the reaper
    assert raw.exists(listed) == 0
    assert short.reservation_id not in raw.hkeys(client.keys.scope_keys(c).records)
