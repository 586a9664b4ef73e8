"""Bad input: a typed error (also a ValueError) before anything is written."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from coordinator import InvalidInputError, validation
from coordinator import constants as C
from tests.helpers import snapshot

BAD_AGENT_IDS = [
    "",
    " padded",
    "padded ",
    "tab\there",
    "new\nline",
    "nul\x00byte",
    "bell\x07",
    "x" * (C.MAX_AGENT_ID_LENGTH + 1),
    "surrogate\ud800",
    "line\u2028sep",
    # Invisible format characters (Unicode Cf): one agent could pass for another.
    "agent\u200b1",  # zero-width space
    "agent-\u202e1",  # right-to-left override
    "\ufeffagent",  # byte order mark
    None,
    42,
    b"bytes",
    ["list"],
]
BAD_PROJECTS = ["", " x", "a\x1bb", "p" * (C.MAX_PROJECT_NAME_LENGTH + 1), 3.5, b"p"]
BAD_VERSIONS = [-1, -(2**63), C.MAX_VERSION + 1, 2**64, 1.0, "1", True, False, [1]]
BAD_SESSIONS = [
    "",
    "not-a-session",
    "0-0123456789abcdef@agent-1",  # tokens start at 1
    "1-0123456789ABCDEF@agent-1",  # nonce is lower-case hex
    "1-0123456789abcde@agent-1",  # nonce too short
    "1-0123456789abcdef@",  # no agent
    "1-0123456789abcdef@ agent",  # agent id invalid
    "1-0123456789abcdef@a\nb",
    "x" * 500,
    None,
    7,
]
BAD_METADATA = [
    "string",
    ["list"],
    {1: "int key"},
    {"set": {1, 2}},
    {"nan": float("nan")},
    {"inf": float("inf")},
    {"big": "x" * (C.MAX_METADATA_BYTES + 1)},
    {"bytes": b"x"},
]


@pytest.fixture
def live(client: Any) -> Any:
    session = client.start_session("agent-1")
    client.set_current_project("agent-1", "p", session.session_id)
    return session


@pytest.mark.parametrize("agent", BAD_AGENT_IDS)
def test_bad_agent_ids_write_nothing(client: Any, live: Any, raw: redis.Redis, agent: Any) -> None:
    before = snapshot(raw)
    calls = [
        lambda: client.start_session(agent),
        lambda: client.set_current_project(agent, "p", live.session_id),
        lambda: client.end_session(agent, live.session_id),
        lambda: client.revoke_session(agent, reason="r"),
        lambda: client.get_current_project(agent),
    ]
    if agent is not None:  # None is the "every agent" filter of listings and queries
        calls += [
            lambda: client.list_leases(agent),
            lambda: client.get_agent_events(agent_id=agent),
        ]
    for call in calls:
        with pytest.raises(InvalidInputError) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert info.value.field == "agent_id"
    assert snapshot(raw) == before


@pytest.mark.parametrize("project", BAD_PROJECTS)
def test_bad_project_names_write_nothing(
    client: Any, live: Any, raw: redis.Redis, project: Any
) -> None:
    before = snapshot(raw)
    with pytest.raises(InvalidInputError) as info:
        client.set_current_project("agent-1", project, live.session_id)
    assert info.value.field == "project_name"
    assert snapshot(raw) == before


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_bad_versions_write_nothing(client: Any, live: Any, raw: redis.Redis, version: Any) -> None:
    before = snapshot(raw)
    with pytest.raises(InvalidInputError) as info:
        client.set_current_project("agent-1", "q", live.session_id, expected_version=version)
    assert info.value.field == "expected_version"
    assert snapshot(raw) == before


@pytest.mark.parametrize("session_id", BAD_SESSIONS)
def test_bad_session_ids_write_nothing(
    client: Any, live: Any, raw: redis.Redis, session_id: Any
) -> None:
    before = snapshot(raw)
    for call in (
        lambda: client.set_current_project("agent-1", "q", session_id),
        lambda: client.heartbeat_session(session_id),
        lambda: client.end_session("agent-1", session_id),
    ):
        with pytest.raises(InvalidInputError):
            call()
    assert snapshot(raw) == before


@pytest.mark.parametrize("metadata", BAD_METADATA)
def test_bad_metadata_writes_nothing(
    client: Any, live: Any, raw: redis.Redis, metadata: Any
) -> None:
    before = snapshot(raw)
    with pytest.raises(InvalidInputError) as info:
        client.start_session("agent-2", metadata=metadata)
    assert info.value.field == "metadata"
    assert snapshot(raw) == before


@pytest.mark.cluster  # nothing is sent: the cluster run proves no key is touched
@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c, s: c.start_session("a", ttl=0), "ttl"),
        (lambda c, s: c.start_session("a", ttl=-5), "ttl"),
        (lambda c, s: c.start_session("a", ttl=float("nan")), "ttl"),
        (lambda c, s: c.start_session("a", ttl="10"), "ttl"),
        (lambda c, s: c.heartbeat_session(s.session_id, ttl=10**9), "ttl"),
        (
            lambda c, s: c.set_current_project("agent-1", "p", s.session_id, request_id="a:b"),
            "request_id",
        ),
        (
            lambda c, s: c.set_current_project("agent-1", "p", s.session_id, request_id=""),
            "request_id",
        ),
        (
            lambda c, s: c.set_current_project("agent-1", "p", s.session_id, request_id="r" * 129),
            "request_id",
        ),
        (lambda c, s: c.revoke_session("agent-1", reason=""), "reason"),
        (lambda c, s: c.revoke_session("agent-1", reason="a\nb"), "reason"),
        (lambda c, s: c.get_agent_events(limit=0), "limit"),
        (lambda c, s: c.get_agent_events(limit=C.MAX_EVENT_LIMIT + 1), "limit"),
        (lambda c, s: c.get_agent_events(event_type="nope"), "event_type"),
    ],
)
def test_other_bad_arguments(
    client: Any, live: Any, raw: redis.Redis, call: Any, field: str
) -> None:
    before = snapshot(raw)
    with pytest.raises(InvalidInputError) as info:
        call(client, live)
    assert info.value.field == field
    assert snapshot(raw) == before


def test_limits_are_inclusive() -> None:
    assert validation.agent_id("a" * C.MAX_AGENT_ID_LENGTH)
    assert validation.project_name("p" * C.MAX_PROJECT_NAME_LENGTH)
    assert validation.version(C.MAX_VERSION) == C.MAX_VERSION
    assert validation.version(0) == 0
    big = {"k": "x" * (C.MAX_METADATA_BYTES - len('{"k":""}'))}
    assert len(validation.metadata(big).encode()) == C.MAX_METADATA_BYTES


def test_metadata_size_counts_utf8_bytes() -> None:
    # 3 bytes per character: fewer characters than the byte limit already exceed it.
    with pytest.raises(InvalidInputError):
        validation.metadata({"k": "€" * (C.MAX_METADATA_BYTES // 3)})


def test_session_id_round_trip() -> None:
    sid = validation.format_session_id("agent@host:1", 42, "0123456789abcdef")
    assert validation.session_id(sid) == ("agent@host:1", 42)


# --- found by tests/test_fuzz.py ----------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        # An int too large for a float overflowed math.isfinite (OverflowError).
        (lambda c, s: c.start_session("agent-2", ttl=10**400), "ttl"),
        (lambda c, s: c.heartbeat_session(s.session_id, ttl=10**400), "ttl"),
        # Page sizes went to ZSCAN unchecked (a Redis error, or a str encoding error).
        (lambda c, s: list(c.iter_leases(page_size=0)), "page_size"),
        (lambda c, s: list(c.iter_leases(page_size="\ud800")), "page_size"),
        # A lone string was split into one-letter agent ids; None raised TypeError.
        (lambda c, s: c.get_current_projects("agent-1"), "agent_ids"),
        (lambda c, s: c.get_current_projects(None), "agent_ids"),
    ],
)
def test_fuzz_findings(client: Any, live: Any, raw: redis.Redis, call: Any, field: str) -> None:
    before = snapshot(raw)
    with pytest.raises(InvalidInputError) as info:
        call(client, live)
    assert info.value.field == field
    assert snapshot(raw) == before
