"""Client CPU per call, counted in instructions: a figure the machine's load cannot move.

    python bench/bench_instructions.py                       # this checkout
    python bench/bench_instructions.py --tree /path/to/old   # and another, same run

Wall-clock ratios on a shared 2-core machine drift with whatever else runs; the number of
instructions the client process executes per call does not (``valgrind --tool=callgrind``
counts them; the same binary and inputs give the same count). Each workload runs twice
under callgrind, with ``--calls`` and with ``2 * --calls`` calls, against a redis-server
started here (not under valgrind); the difference divided by ``--calls`` is the client's
instructions per call, start-up and connecting excluded. Workloads:

* ``sync``: ``Coordinator.set_current_project`` on a live session, one caller;
* ``async``: the same on ``AsyncCoordinator``, one task;
* ``async_50``: 50 tasks sharing one ``AsyncCoordinator`` (auto-pipelining on);
* ``async_50_unpipelined``: the same with ``auto_pipeline=False`` (when the tree has it);
* ``bare_evalsha``: redis-py's own ``execute_command("EVALSHA", ...)`` with the same
  arguments, one caller: the floor the library's overhead is measured against.

Needs ``valgrind`` on PATH. Figures: docs/benchmarks.md ("Instructions per call").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from coordinator import EmbeddedRedis

WORKLOAD = r"""
import asyncio, sys
url, mode, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
from coordinator import AsyncCoordinator, Coordinator
from coordinator.scripts import sources

def sync_run():
    c = Coordinator.from_url(url, namespace="bench-ir", lease_ttl=3600)
    s = c.start_session("agent-sync")
    c.set_current_project("agent-sync", "p", s.session_id)
    if mode == "bare_evalsha":
        r = c.redis()
        call = c.operations.set_project("agent-sync", "p", s.session_id, None, None).call
        sha = r.script_load(sources()["set_project"])
        argv = (len(call.keys), *call.keys, *call.args)
        for _ in range(calls):
            r.execute_command("EVALSHA", sha, *argv)
    else:
        for _ in range(calls):
            c.set_current_project("agent-sync", "p", s.session_id)
    c.close()

async def async_run(tasks, **kw):
    async with AsyncCoordinator.from_url(url, namespace="bench-ir", lease_ttl=3600, **kw) as c:
        agents = [f"agent-{tasks}-{i}" for i in range(tasks)]
        sessions = [(await c.start_session(a)).session_id for a in agents]
        async def one(i):
            for _ in range(calls // tasks):
                await c.set_current_project(agents[i], "p", sessions[i])
        await asyncio.gather(*(one(i) for i in range(tasks)))

if mode in ("sync", "bare_evalsha"):
    sync_run()
elif mode == "async":
    asyncio.run(async_run(1))
elif mode == "async_50":
    asyncio.run(async_run(50))
elif mode == "async_50_unpipelined":
    asyncio.run(async_run(50, auto_pipeline=False))
"""

MODES = ("bare_evalsha", "sync", "async", "async_50", "async_50_unpipelined")


def instructions(tree: Path, url: str, mode: str, calls: int, tmp: Path) -> int:
    out = tmp / f"cg.{os.getpid()}.{mode}.{calls}"
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            WORKLOAD,
            url,
            mode,
            str(calls),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=1800,
        cwd=tmp,  # python -c puts the working directory first on sys.path: not a checkout
    )
    text = out.read_text(encoding="utf-8", errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def supports(tree: Path, mode: str, first: bool) -> bool:
    if mode == "bare_evalsha":
        return first  # redis-py's own cost: the same whichever tree
    if mode != "async_50_unpipelined":
        return True
    return "auto_pipeline" in (tree / "coordinator" / "settings.py").read_text(encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--tree", type=Path, action="append", default=[])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not on PATH", file=sys.stderr)
        return 2
    trees = [Path(__file__).resolve().parent.parent, *[t.resolve() for t in args.tree]]
    report: dict[str, Any] = {"calls": args.calls}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), port=0) as server:
        for tree in trees:
            row: dict[str, Any] = {}
            for mode in args.modes.split(","):
                if not supports(tree, mode, tree == trees[0]):
                    continue
                low = instructions(tree, server.url, mode, args.calls, Path(tmp))
                high = instructions(tree, server.url, mode, 2 * args.calls, Path(tmp))
                row[mode] = round((high - low) / args.calls)
                print(f"{tree}: {mode} {row[mode]:,} instructions/call", file=sys.stderr)
            report[str(tree)] = row
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
