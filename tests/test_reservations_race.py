"""Separate OS processes racing reservations on overlapping resource sets: the audit of
the scope (one shard stream, totally ordered) never shows two conflicting holders at
once, every grant and release is audited once and fencing tokens strictly increase."""

from __future__ import annotations

import json
import multiprocessing
import random
from collections import Counter
from typing import Any

import pytest
import redis

from coordinator import Coordinator, ReservationConflict
from coordinator.validation import overlapping, resource_key
from tests.helpers import stream_entries

pytestmark = pytest.mark.cluster(only=True)  # the slots of scope and agents differ

PROCESSES = 4
ATTEMPTS = 60
POOL = ["src/", "src/a.py", "src/b.py", "src/lib/", "src/lib/c.py", "docs/", "docs/x.md", "db"]


def _racer(url: str, agent: str, seed: int, start: Any) -> tuple[int, int]:
    client = Coordinator.from_url(url, namespace="test")
    session = client.start_session(agent)
    rng = random.Random(seed)
    granted = refused = 0
    start.wait()
    for _ in range(ATTEMPTS):
        wanted = rng.sample(POOL, rng.randint(1, 3))
        claim: list[str] = []
        for w in wanted:  # a claim may not name overlapping resources
            if not any(overlapping(resource_key(o), resource_key(w)) for o in claim):
                claim.append(w)
        mode = rng.choice(["exclusive", "exclusive", "shared"])
        try:
            held = client.reserve(agent, session.session_id, "race", claim, mode=mode)
        except ReservationConflict:
            refused += 1
            continue
        granted += 1
        assert client.release(agent, session.session_id, held.reservation_id)
    client.close()
    return granted, refused


def _conflict(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["mode"] == "shared" and b["mode"] == "shared":
        return False
    return any(
        overlapping(resource_key(x), resource_key(y))
        for x in a["resources"]
        for y in b["resources"]
    )


@pytest.mark.slow
def test_processes_race_on_overlapping_sets(redis_url: str, raw: redis.Redis) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Manager().Barrier(PROCESSES, timeout=120)
    with ctx.Pool(PROCESSES) as pool:
        results = [
            pool.apply_async(_racer, (redis_url, f"racer-{i}", i, start)) for i in range(PROCESSES)
        ]
        outcomes = [r.get(timeout=180) for r in results]
    granted = sum(g for g, _ in outcomes)
    refused = sum(r for _, r in outcomes)
    assert granted + refused == PROCESSES * ATTEMPTS
    assert refused > 0, "the processes did not actually race"
    # Replay the scope's audit in stream order (one shard stream: a total order).
    live: dict[str, dict[str, Any]] = {}
    tokens: list[int] = []
    counts: Counter[str] = Counter()
    for _, fields in stream_entries(raw):
        kind = fields["event_type"]
        if not kind.startswith("reservation_"):
            continue
        meta = json.loads(fields["metadata"])
        counts[kind] += 1
        if kind == "reservation_granted":
            clash = [r for r in live.values() if _conflict(r, meta)]
            assert not clash, f"{meta} granted while {clash} held"
            assert meta["reservation_id"] not in live
            live[meta["reservation_id"]] = meta
            tokens.append(meta["token"])
        elif kind == "reservation_released":
            assert live.pop(meta["reservation_id"])["token"] == meta["token"]
    assert live == {}
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == len(tokens)
    assert counts == {
        "reservation_granted": granted,
        "reservation_released": granted,
        "reservation_refused": refused,
    }
