"""Separate OS processes racing compare-and-set on one agent."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from typing import Any

import pytest
import redis

from coordinator import ConflictError, Coordinator
from tests.helpers import stream_entries

PROCESSES = 4
ATTEMPTS = 150


def _cas_racer(url: str, session_id: str, attempts: int, start: Any) -> tuple[list[int], int]:
    client = Coordinator.from_url(url, namespace="test")
    wins: list[int] = []
    conflicts = 0
    client.get_current_project("agent")  # connected before the start
    start.wait()
    for i in range(attempts):
        current = client.get_current_project("agent")
        version = current.version if current else 0
        try:
            record = client.set_current_project(
                "agent", f"p{i % 3}", session_id, expected_version=version
            )
        except ConflictError as exc:
            if exc.current is None or exc.current.version <= version:
                raise AssertionError(f"conflict without a newer record: {exc.current}") from exc
            conflicts += 1
        else:
            wins.append(record.version)
    client.close()
    return wins, conflicts


def _blind_writer(url: str, session_id: str, attempts: int, start: Any) -> tuple[list[int], int]:
    client = Coordinator.from_url(url, namespace="test")
    client.get_current_project("agent")  # connected before the start
    start.wait()
    versions = [
        client.set_current_project("agent", "p", session_id).version for _ in range(attempts)
    ]
    client.close()
    return versions, 0


def _race(redis_url: str, target: Any) -> tuple[list[int], int, str]:
    setup = Coordinator.from_url(redis_url, namespace="test")
    session = setup.start_session("agent")
    setup.close()
    ctx = multiprocessing.get_context("spawn")
    # A barrier, not an event set at once: spawned processes start a second or so
    # apart, and one could finish its attempts before the next began (seen in CI).
    start = ctx.Manager().Barrier(PROCESSES, timeout=120)
    with ctx.Pool(PROCESSES) as pool:
        results = [
            pool.apply_async(target, (redis_url, session.session_id, ATTEMPTS, start))
            for _ in range(PROCESSES)
        ]
        outcomes = [r.get(timeout=180) for r in results]
    wins = [v for won, _ in outcomes for v in won]
    conflicts = sum(c for _, c in outcomes)
    return wins, conflicts, session.session_id


@pytest.mark.slow
def test_processes_race_cas_exactly_one_winner_per_version(
    redis_url: str, raw: redis.Redis
) -> None:
    wins, conflicts, _ = _race(redis_url, _cas_racer)
    # Exactly one winner per version, no gaps, and every attempt accounted for.
    assert sorted(wins) == list(range(1, len(wins) + 1))
    assert len(wins) + conflicts == PROCESSES * ATTEMPTS
    assert conflicts > 0, "the processes did not actually race"
    final = Coordinator.from_url(redis_url, namespace="test")
    assert final.get_current_project("agent").version == len(wins)
    final.close()
    # Events equal attempts: one per win, one per conflict, nothing else.
    counts = Counter(e["event_type"] for _, e in stream_entries(raw))
    written = counts["project_set"] + counts["project_switched"]
    assert written == len(wins)
    assert counts["conflict_detected"] == conflicts
    versions = [
        int(e["actual_version"])
        for _, e in stream_entries(raw)
        if e["success"] == "1" and e["actual_version"]
    ]
    assert versions == list(range(1, len(wins) + 1))


@pytest.mark.slow
def test_processes_writing_unconditionally_get_consecutive_versions(
    redis_url: str, raw: redis.Redis
) -> None:
    versions, _, _ = _race(redis_url, _blind_writer)
    assert sorted(versions) == list(range(1, PROCESSES * ATTEMPTS + 1))
    counts = Counter(e["event_type"] for _, e in stream_entries(raw))
    assert counts["project_set"] == PROCESSES * ATTEMPTS
