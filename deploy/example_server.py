"""A tiny stand-in for an agent tool server (e.g. an MCP server) using the library.

It does what a real server process does with agent-coordinator: starts a session for
its agent, heartbeats it, switches the agent between projects with compare-and-set, and
ends the session on SIGTERM/SIGINT. docker-compose.yml runs it as the ``example-server``
service with the ``coordinator-server`` ACL user; ``tests/test_deploy_files.py`` runs it
against a real redis-server loaded with users.acl.

Configuration comes from the same ``COORDINATOR_*`` variables as everything else
(``COORDINATOR_REDIS_URL``, ``COORDINATOR_NAMESPACE``, ...)::

    python deploy/example_server.py --agent agent-1 --interval 5 --rounds 0
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from types import FrameType

from coordinator import ConflictError, Coordinator, CoordinatorError, Settings

log = logging.getLogger("example_server")


def run(client: Coordinator, agent: str, projects: list[str], interval: float, rounds: int) -> int:
    """Start a session, then per round: heartbeat and switch project; end it on stop.

    ``rounds`` 0 runs until SIGTERM/SIGINT. Returns the number of project writes.
    """
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()  # only a flag: the loop ends the session itself

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    session = client.start_session(agent, metadata={"host": socket.gethostname()})
    log.info("session %s started (fencing token %s)", session.session_id, session.fencing_token)
    record = client.get_current_project(agent)
    writes = 0
    try:
        while not stopping.is_set() and (rounds == 0 or writes < rounds):
            client.heartbeat_session(session.session_id)
            target = projects[writes % len(projects)]
            expected = record.version if record is not None else 0
            try:
                record = client.set_current_project(
                    agent, target, session.session_id, expected_version=expected
                )
            except ConflictError as exc:
                # Another process wrote in between: re-plan from the current record.
                log.info("conflict at version %s; re-planning", expected)
                record = exc.current
                continue
            writes += 1
            log.info("%s -> %s (version %s)", agent, target, record.version)
            stopping.wait(interval)
    finally:
        client.end_session(agent, session.session_id)
        log.info("session %s ended", session.session_id)
    return writes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", default=socket.gethostname(), help="agent id")
    parser.add_argument("--projects", default="alpha,beta,gamma", help="comma-separated")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    parser.add_argument("--rounds", type=int, default=0, help="project writes (0: until stopped)")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with Coordinator(Settings.from_env()) as client:
            run(client, opts.agent, opts.projects.split(","), opts.interval, opts.rounds)
    except CoordinatorError as exc:
        print(f"example_server: {exc}", file=sys.stderr)  # one line, never a traceback
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
