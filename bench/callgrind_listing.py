"""Client instructions per listed lease, counted by callgrind (load-independent).

    python bench/callgrind_listing.py                      # this checkout
    python bench/callgrind_listing.py --before /tmp/old    # and an older checkout
    python bench/callgrind_listing.py --cli                # also coordinator leases

One throwaway redis-server holds two namespaces of 2,000 and 12,000 leases (sessions
of an hour, half with metadata). ``Coordinator.list_leases()`` runs once per namespace
in a subprocess under ``valgrind --tool=callgrind``; the difference of the two
instruction counts divided by 10,000 is what one more lease costs the client process
(start-up, imports and connecting cancel out). ``--before`` runs the same with another
checkout of the package first on ``PYTHONPATH`` (e.g. ``git archive <commit>``).
``--cli`` also counts ``coordinator leases`` (the table) and ``coordinator leases
--json`` the same way (in process, output to /dev/null).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_listing import grow  # this folder is first on sys.path (python bench/...)

from coordinator import EmbeddedRedis
from coordinator.local.embedded import system_binary

SIZES = {"small": 2_000, "large": 12_000}
CHILDREN = {
    "list_leases": (
        "import sys\n"
        "from coordinator import Coordinator\n"
        "c = Coordinator.from_url(sys.argv[1], namespace=sys.argv[2])\n"
        "assert len(c.list_leases()) == int(sys.argv[3])\n"
    ),
    "cli": (
        "import sys, contextlib, os\n"
        "from coordinator.cli.main import cli\n"
        "with open(os.devnull, 'w') as out, contextlib.redirect_stdout(out):\n"
        "    cli(['--redis-url', sys.argv[1], '--namespace', sys.argv[2], 'leases',"
        " *sys.argv[4:]], standalone_mode=False)\n"
    ),
}


def per_lease(url: str, path: str, folder: Path, child: str, *extra: str) -> int:
    counts = {}
    for namespace, n in SIZES.items():
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder / namespace}",
             sys.executable, "-c", CHILDREN[child], url, namespace, str(n), *extra],
            env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, check=True,
            cwd=folder,  # not this checkout: ``python -c`` puts the working directory first
        )  # fmt: skip
        found = re.search(r"Collected : (\d+)", out.stderr)
        assert found, out.stderr
        counts[namespace] = int(found.group(1))
    return (counts["large"] - counts["small"]) // (SIZES["large"] - SIZES["small"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", help="another checkout to count first")
    parser.add_argument("--cli", action="store_true", help="also count coordinator leases")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=0, unix_socket=False,
                               binary=system_binary())  # fmt: skip
        with server:
            for namespace, n in SIZES.items():
                asyncio.run(grow(server.url, 0, n, namespace))
            checkouts = ([("before", args.before)] if args.before else []) + [("this", here)]
            runs = [("list_leases",)]
            if args.cli:
                runs += [("cli",), ("cli", "--json")]
            for run in runs:
                for label, path in checkouts:
                    count = per_lease(server.url, path, Path(tmp), *run)
                    what = " ".join(["leases" if run[0] == "cli" else run[0], *run[1:]])
                    print(f"{label}: {what}: {count} instructions per lease ({path})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
