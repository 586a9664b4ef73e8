"""The event worker's options: the one place its defaults live (the CLI reads them)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from coordinator import constants as C
from coordinator import validation
from coordinator.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How the worker reads, retries and reports (every field has a safe default)."""

    #: Consumer name; stable names let a restarted worker re-read its own pending
    #: entries at once (default ``<host>-<pid>``, reclaimed after ``claim_idle_ms``).
    consumer: str | None = None
    group: str = C.DEFAULT_CONSUMER_GROUP
    #: Most entries read per stream per call (one batch is at most shards x batch).
    batch: int = 1000
    #: How long one read blocks when there is nothing new (ms).
    block_ms: int = 1000
    #: Entries pending this long on any consumer are claimed; keep it well above the
    #: slowest batch (ms).
    claim_idle_ms: int = 60_000
    #: Seconds between claim rounds.
    claim_interval: float = 5.0
    #: Deliveries after which an entry is retried alone (workers died holding it): a
    #: good one is persisted, one that fails by itself is dead-lettered.
    max_deliveries: int = 5
    #: Seconds between reaper runs (0 disables reaping in this worker).
    reap_interval: float = 0.5
    #: Seconds between trims (and the pending / length gauges).
    trim_interval: float = 1.0
    #: TTL of the liveness key (s); refreshed every second.
    liveness_ttl: float = 15.0
    #: Drain everything there is, then exit.
    burst: bool = False
    metrics_host: str = "127.0.0.1"
    #: Serve ``/metrics``, ``/healthz``, ``/readyz`` here (0: a free port; None: off).
    metrics_port: int | None = None
    #: Upper bound of the backoff between retries during an outage (s).
    retry_cap: float = 5.0
    #: Agents whose last version and fencing token are remembered for the regression
    #: check (the first seen forgotten first).
    watch_agents: int = 200_000
    #: Write a SQLite sink named by URL from a child process (see sinks/process.py).
    sink_process: bool = True

    def __post_init__(self) -> None:
        for name in ("batch", "block_ms", "claim_idle_ms", "max_deliveries", "watch_agents"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise InvalidInputError(name, "must be a positive integer")
        for name in ("claim_interval", "trim_interval", "liveness_ttl", "retry_cap"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < 86400:
                raise InvalidInputError(name, "must be a positive number of seconds")
        if not isinstance(self.reap_interval, int | float) or not 0 <= self.reap_interval < 86400:
            raise InvalidInputError("reap_interval", "must be 0 (off) or a number of seconds")
        if self.consumer is not None:
            validation.worker_name("consumer", self.consumer)
        validation.worker_name("group", self.group)
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise InvalidInputError("metrics_port", "must be a TCP port")


def default_consumer() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return f"{host or 'worker'}-{os.getpid()}"
