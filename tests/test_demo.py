"""``coordinator demo``: its check, and a whole run in-process (the fresh-virtualenv run
is in tests/test_wheel.py, next to the wheel it installs)."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from coordinator.cli.main import cli
from coordinator.local import demo


def _consistent() -> demo.DemoReport:
    report = demo.DemoReport()
    report.emitted = Counter({"session_started": 4, demo.WRITES: 3, "conflict_detected": 6})
    report.persisted = Counter(report.emitted)
    report.winners = {"alpha": {"1-0", "2-0"}, "beta": {"1-1"}}
    report.persisted_writes = {"alpha": {"1-0", "2-0"}, "beta": {"1-1"}}
    report.projects = {"alpha": ("a", 2), "beta": ("b", 1), "delta": (None, 0)}
    return report


def test_check_accepts_a_consistent_report() -> None:
    assert _consistent().check() == []


def test_check_finds_every_kind_of_mismatch() -> None:
    lost = _consistent()
    lost.persisted["conflict_detected"] -= 1
    assert lost.check() == ["persisted counts differ from the emitted ones: conflict_detected"]
    extra = _consistent()
    extra.persisted["session_expired"] += 1
    assert "session_expired" in extra.check()[0]
    swapped = _consistent()
    swapped.persisted_writes = {"alpha": {"1-0", "3-0"}, "beta": {"1-1"}}
    assert swapped.check() == ["the persisted writes are not the winning writes"]
    behind = _consistent()
    behind.projects["alpha"] = ("a", 1)
    assert behind.check() == ["alpha is at version 1 after 2 writes won"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_in_process(tmp_path: Path) -> None:
    env = {k: None for k in os.environ if k.startswith("COORDINATOR_")}
    env["COORDINATOR_DATA_DIR"] = str(tmp_path / "user-data")
    result = CliRunner().invoke(cli, ["demo"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.stdout
    assert "ok: every emitted event was persisted exactly once" in out
    audit = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^  (\w[\w ]*?)\s+(\d+) /\s+(\d+)$", out, re.MULTILINE)
    }
    assert all(emitted == persisted for emitted, persisted in audit.values()), audit
    rounds = 2 * demo.ROUNDS
    won = (len(demo.RACERS) - 1) * rounds + demo.ROUNDS  # one winner per agent and round
    assert audit[demo.WRITES][0] == won
    assert audit["conflict_detected"][0] == (demo.SERVERS - 1) * won
    # Every server's writes for the revoked agent, plus the expired agent's late write.
    assert audit["write_rejected"][0] == demo.SERVERS * demo.ROUNDS + 1
    assert audit["session_revoked"][0] == audit["session_expired"][0] == 1
    assert audit["session_started"][0] == len(demo.RACERS) + 1
    for agent in demo.RACERS:
        assert re.search(rf"^  {agent}\s+{agent}-s\dr\d+\s+version\s+\d+", out, re.MULTILINE)
    leases = out.split("leases:\n")[1].split("\n\n")[0].splitlines()
    assert leases[0].split()[:2] == ["AGENT", "SESSION"]
    live = sorted(line.split()[0] for line in leases[1:])
    assert live == sorted(set(demo.RACERS) - {demo.REVOKED})
    assert not (tmp_path / "user-data").exists()  # a throwaway stack, not the user's
