"""Property tests: random and hostile arguments to the public API (both shells) and to
the CLI. Bad input always ends in a typed error (``InvalidInputError``) or exit code 2
with a one-line message, never a traceback, and leaves Redis and the sink unchanged."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator import Coordinator
from coordinator.cli import verify as verify_cli
from coordinator.cli.main import cli
from coordinator.constants import MIN_LEASE_TTL
from coordinator.errors import CoordinatorError, InvalidInputError
from coordinator.models import AgentEvent, EventType
from coordinator.settings import Settings
from coordinator.sinks import sink_from_url
from coordinator.verify import VerifyOptions, VerifyReport

#: Many processes (or many generated cases): Redis 6.2 and Valkey in CI (conftest).
pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

CONTROL = st.characters(categories=("Cc", "Cs", "Zl", "Zp"))
texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=CONTROL, min_size=1, max_size=3).map(lambda s: f"a{s}b"),
    st.sampled_from(["", " ", " x", "x ", "x" * 100_000, "é" * 300, "\ud800", "a:b{c}", "*"]),
)
numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**53, 2**53 - 1, 2**63, 10**400, -1, 0]),
    st.floats(),
)
metadata = st.one_of(
    st.none(),
    st.dictionaries(texts, st.one_of(texts, numbers, st.none(), st.booleans()), max_size=4),
    st.recursive(st.integers(), lambda inner: st.dictionaries(st.just("k"), inner), max_leaves=3),
    st.sampled_from(
        [
            {"big": "x" * 10_000},
            {1: "int key"},
            {"set": {1, 2}},
            {"nan": float("nan")},
            {"bytes": b"x"},
            {"deep": [[[[]]]]},
            [("list", "of pairs")],
            "a string",
        ]
    ),
)
anything = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    texts,
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(object),
)


@pytest.fixture
def api(make_client: Callable[..., Any], tmp_path: Path) -> Any:
    """A client of each shell with a SQLite sink that already holds events."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    client = make_client(lease_ttl=30, sink_url=url)
    sink = sink_from_url(url)
    old = AgentEvent(
        agent_id="old",
        session_id=None,
        event_type=EventType.SESSION_ENDED,
        success=True,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        shard=0,
        stream_id="1767225600000-0",
    )
    sink.write_events("test", [old])
    session = client.start_session("fuzz-agent")
    client.set_current_project("fuzz-agent", "p", session.session_id)
    yield client, sink, session
    sink.close()


def rejected_cleanly(
    state_of: Callable[..., dict[str, Any]], sink: Any, call: Callable[[], Any]
) -> None:
    before = state_of(sink)
    try:
        call()
    except InvalidInputError as exc:
        message = str(exc)
        assert message.startswith("invalid ")
        assert "\n" not in message
        assert len(message) < 1000
        assert state_of(sink) == before
    except CoordinatorError:
        pass  # typed: a dead session, a conflict... (may write its audit event)


def lasting(ttl: Any) -> Any:
    """A valid TTL shorter than a minute becomes a minute: a lease that runs out while
    a later example runs would change Redis by itself and fail the "unchanged" check
    (short TTLs are tested in test_sessions). Everything else is kept as drawn."""
    if type(ttl) in (int, float) and MIN_LEASE_TTL <= ttl < 60:
        return 60
    return ttl


@FUZZ
@given(agent=anything, meta=metadata, ttl=st.one_of(st.none(), numbers, anything))
def test_start_session(api: Any, state_of: Any, agent: Any, meta: Any, ttl: Any) -> None:
    client, sink, _ = api
    ttl = lasting(ttl)
    rejected_cleanly(state_of, sink, lambda: client.start_session(agent, meta, ttl=ttl))


@FUZZ
@given(sid=anything, ttl=st.one_of(st.none(), numbers))
def test_heartbeat(api: Any, state_of: Any, sid: Any, ttl: Any) -> None:
    client, sink, session = api
    ttl = lasting(ttl)
    rejected_cleanly(state_of, sink, lambda: client.heartbeat_session(sid, ttl=ttl))
    rejected_cleanly(state_of, sink, lambda: client.heartbeat_session(session.session_id, ttl=ttl))


@FUZZ
@given(
    agent=st.one_of(st.just("fuzz-agent"), anything),
    project=st.one_of(st.none(), texts, anything),
    expected=st.one_of(st.none(), numbers, anything),
    request_id=st.one_of(st.none(), texts, anything),
    own_session=st.booleans(),
    sid=anything,
)
def test_set_current_project(
    api: Any,
    state_of: Any,
    agent: Any,
    project: Any,
    expected: Any,
    request_id: Any,
    own_session: bool,
    sid: Any,
) -> None:
    client, sink, session = api
    session_id = session.session_id if own_session else sid
    rejected_cleanly(
        state_of,
        sink,
        lambda: client.set_current_project(
            agent, project, session_id, expected_version=expected, request_id=request_id
        ),
    )


@FUZZ
@given(agent=anything, sid=anything, reason=anything)
def test_end_and_revoke(api: Any, state_of: Any, agent: Any, sid: Any, reason: Any) -> None:
    client, sink, _ = api
    rejected_cleanly(state_of, sink, lambda: client.end_session(agent, sid))
    rejected_cleanly(state_of, sink, lambda: client.revoke_session(agent, reason))


@FUZZ
@given(agent=anything, agents=anything, page=anything)
def test_reads(api: Any, state_of: Any, agent: Any, agents: Any, page: Any) -> None:
    client, sink, _ = api
    rejected_cleanly(state_of, sink, lambda: client.get_current_project(agent))
    rejected_cleanly(state_of, sink, lambda: client.get_current_projects(agents))
    rejected_cleanly(state_of, sink, lambda: client.list_leases(agent))
    rejected_cleanly(state_of, sink, lambda: list(client.iter_leases(page_size=page)))


moments = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.datetimes(timezones=st.just(UTC)),
    anything,
)


@FUZZ
@given(
    agent=st.one_of(st.none(), anything),
    etype=st.one_of(st.none(), st.sampled_from(list(EventType)), anything),
    limit=st.one_of(st.just(50), numbers, anything),
    since=moments,
    until=moments,
)
def test_get_agent_events(
    api: Any, state_of: Any, agent: Any, etype: Any, limit: Any, since: Any, until: Any
) -> None:
    client, sink, _ = api
    rejected_cleanly(
        state_of,
        sink,
        lambda: client.get_agent_events(agent, etype, limit=limit, since=since, until=until),
    )


# --- CLI ---------------------------------------------------------------------------------

cli_values = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=30,
    ),
    st.sampled_from(
        [
            "-1",
            "0",
            "1e400",
            "nan",
            "inf",
            "99999999999999999999d",
            "10m",
            "9999999999w",
            "2026-13-45",
            "0001-01-01",
            "1969-12-31T23:59:59Z",
            "x" * 5000,
            "--json",
            "-",
        ]
    ),
)

#: Command lines ending where the fuzzed value goes.
CLI_FORMS: list[tuple[str, ...]] = [
    ("leases", "--agent"),
    ("lease", "show"),
    ("lease", "revoke", "--yes", "--reason", "r"),
    ("lease", "revoke", "--yes", "agent-x", "--reason"),
    ("project", "get"),
    ("project", "set", "agent-x", "proj", "--session"),
    (
        "project",
        "set",
        "agent-x",
        "proj",
        "--session",
        "1-0123456789abcdef@agent-x",
        "--expected-version",
    ),
    (
        "project",
        "set",
        "agent-x",
        "proj",
        "--session",
        "1-0123456789abcdef@agent-x",
        "--request-id",
    ),
    ("events", "--limit"),
    ("events", "--since"),
    ("events", "--until"),
    ("events", "--agent"),
    ("events", "--type"),
    ("verify", "--duration"),
    ("verify", "--clients"),
    ("verify", "--agents"),
    ("verify", "--seed"),
    ("verify", "--nemesis"),
    ("verify", "--lease-ttl"),
    ("verify", "--interval"),
]


@pytest.fixture
def cli_run(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    runner = CliRunner()

    def no_run(options: VerifyOptions) -> VerifyReport:
        options.validate()  # what the CLI passed on must be valid; the run itself is not fuzzed
        return VerifyReport(
            seed=0, target="-", namespace="-", duration=0, clients=1, agents=1, nemeses=[]
        )

    monkeypatch.setattr(verify_cli, "run_verify", no_run)
    # A namespace in use: connecting (which records the shard count) changes nothing.
    with Coordinator.from_url(redis_url, namespace="test", lease_ttl=600) as client:
        session = client.start_session("agent-x")
        client.set_current_project("agent-x", "proj", session.session_id)

    def invoke(*args: str) -> Any:
        return runner.invoke(cli, ["--redis-url", redis_url, "--namespace", "test", *args])

    return invoke


@settings(FUZZ, max_examples=200)
@given(form=st.sampled_from(CLI_FORMS), value=cli_values)
def test_cli_arguments(
    cli_run: Callable[..., Any], state_of: Any, form: tuple[str, ...], value: str
) -> None:
    before = state_of()
    result = cli_run(*form, value)
    assert result.exit_code in (0, 1, 2), (form, value, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        form,
        value,
        repr(result.exception),
    )
    if result.exit_code != 0:
        # One line naming the cause (click may quote the offending value in it).
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1, result.stderr[:2000]
    if result.exit_code == 2:
        assert state_of() == before


@pytest.mark.parametrize(
    "args",
    [
        # Ages beyond what a datetime holds raised OverflowError (exit 1 with a traceback).
        ("events", "--since", "99999999999999999999d"),
        ("events", "--until", "9999999999w"),
        ("events", "--since", "1969-12-31T23:59:59Z"),
    ],
)
def test_cli_findings(cli_run: Callable[..., Any], state_of: Any, args: tuple[str, ...]) -> None:
    before = state_of()
    result = cli_run(*args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert state_of() == before


SETTINGS_FIELDS = [
    "redis_url",
    "namespace",
    "lease_ttl",
    "shards",
    "cluster",
    "request_ttl",
    "socket_timeout",
    "connect_timeout",
    "retry_attempts",
    "retry_backoff",
    "max_connections",
    "wait_replicas",
    "wait_timeout",
    "sink_url",
    "client_name",
]


@FUZZ
@given(name=st.sampled_from(SETTINGS_FIELDS), value=anything)
def test_settings(name: str, value: Any) -> None:
    try:
        Settings(**{name: value})
    except InvalidInputError as exc:
        message = str(exc)
    else:
        return
    assert "\n" not in message
