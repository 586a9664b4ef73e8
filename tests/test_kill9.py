"""A killed redis-server loses no acknowledged write (issue 18 item 2).

The embedded default (and so ``coordinator up``) runs ``appendfsync always``: the AOF
is written and fsynced before any reply. Here writer processes burst compare-and-set
writes while ``redis-server`` is SIGKILLed a few times, on every available binary;
bench/bench_kill9.py runs hundreds of rounds, also against ``everysec`` on a busy disk
(which does lose writes).
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest

from coordinator import EmbeddedRedis
from coordinator.local.stack import LocalStack
from tests import kill9
from tests.helpers import BINARIES

TARGETS = BINARIES  # Redis 6.2, the system Redis 7.0 and Valkey 9.1 when present


def test_embedded_default_and_the_local_stack_fsync_every_write(tmp_path: Path) -> None:
    with (
        EmbeddedRedis(tmp_path / "e", port=0) as server,
        closing(server.client(decode_responses=True)) as raw,
    ):
        assert raw.config_get("appendonly")["appendonly"] == "yes"
        assert raw.config_get("appendfsync")["appendfsync"] == "always"
    with LocalStack(tmp_path / "stack", worker=False) as stack:
        assert stack.redis is not None
        with closing(stack.redis.client(decode_responses=True)) as raw:
            assert raw.config_get("appendfsync")["appendfsync"] == "always"


@pytest.mark.parametrize(("label", "binary"), TARGETS, ids=[label for label, _ in TARGETS])
def test_sigkill_under_write_burst_loses_and_reissues_nothing(
    tmp_path: Path, label: str, binary: Path
) -> None:
    report = kill9.run(tmp_path, rounds=6, binary=binary, during_fsync=True, seed=18)
    assert report.rounds == 6
    assert report.acked > 0
    assert report.ok, report
