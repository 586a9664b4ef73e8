"""The worker as a daemon: signal handling, and the liveness check behind ``--check``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import Any

from redis.exceptions import (
    RedisClusterException,
    RedisError,
)

from coordinator import validation
from coordinator.aio import AsyncCoordinator
from coordinator.errors import ConfigurationError, CoordinatorError
from coordinator.processes import pid_alive
from coordinator.settings import Settings
from coordinator.sinks import Sink
from coordinator.worker.loop import EventWorker
from coordinator.worker.metrics import WorkerMetrics
from coordinator.worker.options import WorkerOptions

log = logging.getLogger("coordinator.worker")


async def run_worker(
    settings: Settings | None = None,
    sink: Sink | None = None,
    options: WorkerOptions | None = None,
) -> WorkerMetrics:
    """Run a worker until SIGTERM/SIGINT (or drained, with ``burst=True``).

    The first signal finishes the batch in hand; a second one exits at once.
    """
    import signal

    worker = EventWorker(settings or Settings.from_env(), sink, options)
    await refuse_a_name_in_use(worker.coordinator, worker.consumer)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int) -> None:
        if worker.stopping:
            log.warning("second signal: exiting now")
            os._exit(128 + signum)
        log.info("signal %d: finishing the batch in hand, then stopping", signum)
        worker.request_stop()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await worker.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        worker.sink.close()


async def refuse_a_name_in_use(coordinator: AsyncCoordinator, consumer: str) -> None:
    """Raise ConfigurationError when a running worker on this host already consumes
    under ``consumer`` (its liveness key names a live pid): two workers under one name
    would take each other's pending entries. A dead holder (a crash) is no obstacle;
    Redis unreachable now is the worker loop's to wait out."""
    try:
        client = await coordinator.redis()
        value = await client.get(coordinator.keys.worker(consumer))
    except (CoordinatorError, RedisError, RedisClusterException, OSError):
        return
    try:
        holder = json.loads(value) if value else {}
    except ValueError:
        return
    pid = holder.get("pid")
    if (
        holder.get("host") == socket.gethostname()
        and isinstance(pid, int)
        and pid != os.getpid()
        and pid_alive(pid)
    ):
        raise ConfigurationError(
            f"consumer name {consumer!r} is in use by a running worker (pid {pid}); "
            "give this one another --consumer"
        )


async def worker_alive(settings: Settings, consumer: str | None = None) -> list[dict[str, Any]]:
    """Liveness records of the namespace's running workers (or of one consumer)."""
    async with AsyncCoordinator(settings) as coordinator:
        try:
            client = await coordinator.redis()
            if consumer is not None:
                keys = [coordinator.keys.worker(validation.worker_name("consumer", consumer))]
            else:
                # SCAN: the worker's ACL user may not have it (deploy/users.acl);
                # name the consumer to check with GET alone.
                pattern = coordinator.keys.worker("*")
                keys = [key async for key in client.scan_iter(match=pattern, count=500)]
            found = []
            for key in keys:
                value = await client.get(key)
                if value:
                    try:
                        found.append(json.loads(value))
                    except ValueError:
                        found.append({"key": key})
            return found
        except (RedisError, RedisClusterException, OSError) as exc:
            raise coordinator.operations.failures.redis_error(exc) from None
