"""A real primary with replicas, watched by Redis Sentinel, managed in one directory.

Used by the test suite to fail a primary over while clients work, and to test the
durability mode against real replicas. Every process is a ``redis-server`` started
from the same binaries as :class:`EmbeddedRedis` (sentinels run it with
``--sentinel``); every step is polled until the processes agree, never slept on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import redis

from coordinator.errors import EmbeddedRedisError
from coordinator.local.cluster import poll, replication_ready
from coordinator.local.embedded import EmbeddedRedis

log = logging.getLogger(__name__)

#: Service name the sentinels monitor unless told otherwise.
DEFAULT_SERVICE = "coordinator"


class SentinelProcess(EmbeddedRedis):
    """One ``redis-server --sentinel`` process; it rewrites its own config file."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        primary_port: int,
        service: str,
        quorum: int,
        down_after_ms: int,
        failover_timeout_ms: int,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(data_dir, port=0, unix_socket=False, binary=binary, appendonly=False)
        self.monitor = (
            f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 1\n"
        )

    @property
    def config_file(self) -> Path:
        return self.data_dir / "sentinel.conf"

    def command_line(self) -> list[str]:
        if not self.config_file.exists():  # after a restart it holds the sentinel's state
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.config_file.write_text(self.monitor, encoding="utf-8")
        return [
            str(self.binary), str(self.config_file), "--sentinel",
            "--daemonize", "no",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
        ]  # fmt: skip


class EmbeddedSentinel:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels (0: replication only).

    ``url`` is the ``redis+sentinel://`` URL of the service; ``primary`` is the node
    the sentinels currently report as primary.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = DEFAULT_SERVICE,
        binary: str | os.PathLike[str] | None = None,
        down_after_ms: int = 1500,
        failover_timeout_ms: int = 10000,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.service = service
        config = {"repl-diskless-sync-delay": "0"}  # Redis 7 waits 5 s before a sync
        self.nodes = [
            EmbeddedRedis(
                self.data_dir / f"node-{i}", port=0, unix_socket=False, binary=binary, config=config
            )
            for i in range(1 + replicas)
        ]
        primary_port = self.nodes[0].port
        assert primary_port is not None
        for replica in self.nodes[1:]:
            replica.config["replicaof"] = f"127.0.0.1 {primary_port}"
        self.sentinels = [
            SentinelProcess(
                self.data_dir / f"sentinel-{i}",
                primary_port=primary_port,
                service=service,
                quorum=max(1, sentinels // 2 + 1),
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
                binary=binary,
            )
            for i in range(sentinels)
        ]
        self.version = self.nodes[0].version

    # --- addresses ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+sentinel://s1,s2,s3/<service>/0``."""
        if not self.sentinels:
            raise EmbeddedRedisError("no sentinels: connect to primary.url")
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    @property
    def primary(self) -> EmbeddedRedis:
        """The node currently in the primary role (as the sentinels see it, if any)."""
        if not self.sentinels:
            return next(n for n in self.nodes if _role(n) == "master")
        port = self.reported_primary_port()
        return next(n for n in self.nodes if n.port == port)

    @property
    def replicas(self) -> list[EmbeddedRedis]:
        primary = self.primary
        return [n for n in self.nodes if n is not primary and n.is_running()]

    def reported_primary_port(self) -> int:
        """The primary's port according to the first running sentinel."""
        sentinel = next(s for s in self.sentinels if s.is_running())
        with contextlib.closing(sentinel.client(decode_responses=True)) as r:
            _host, port = r.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
            )
        return int(port)

    # --- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> EmbeddedSentinel:
        try:
            for node in self.nodes:
                node.start()
            self.wait_replicated(timeout)
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_sentinels(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_replicated(self, timeout: float = 60.0, *, caught_up: bool = False) -> None:
        """Poll until every running replica's link to the primary is up (and, with
        ``caught_up``, it has processed the primary's whole replication stream)."""

        def linked() -> bool:
            running = [n for n in self.nodes if n.is_running()]
            try:
                # Probe every node first: the primary's probe writes move the offsets.
                if not all(_ready(node) for node in running):
                    return False
                offsets = {_replication(node).get("master_repl_offset") for node in running}
            except (redis.ConnectionError, redis.TimeoutError):
                return False
            return not caught_up or len(offsets) == 1

        poll(linked, timeout, "replication link up")

    def wait_sentinels(self, timeout: float = 60.0) -> None:
        """Poll until every sentinel knows the primary, its replicas and the others."""
        replicas = len([n for n in self.nodes if n.is_running()]) - 1

        def agreed() -> bool:
            for sentinel in self.sentinels:
                with contextlib.closing(sentinel.client(decode_responses=True)) as r:
                    state = cast(dict[str, Any], r.sentinel_master(self.service))
                if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                    return False
                if int(state["num-slaves"]) < replicas or "s_down" in state["flags"]:
                    return False
            return True

        poll(agreed, timeout, "sentinels agree")

    def failover(self, timeout: float = 60.0, *, demoted: bool = True) -> EmbeddedRedis:
        """A forced ``SENTINEL FAILOVER``; returns the new primary once it serves (and,
        with ``demoted``, once Sentinel has turned the old one into its replica, which
        takes it about eight seconds: until then the old primary still accepts writes
        from clients connected to it)."""
        old = self.primary
        with contextlib.closing(self.sentinels[0].client(decode_responses=True)) as r:
            r.execute_command("SENTINEL", "FAILOVER", self.service)  # type: ignore[no-untyped-call,unused-ignore]
        return self.wait_promoted(old, timeout, demoted=demoted)

    def kill_primary(self) -> EmbeddedRedis:
        """SIGKILL the primary (the sentinels notice after ``down_after_ms``)."""
        old = self.primary
        old.kill()
        return old

    def wait_promoted(
        self, old: EmbeddedRedis, timeout: float = 60.0, *, demoted: bool = False
    ) -> EmbeddedRedis:
        """Poll until every sentinel reports a primary other than ``old`` and that node
        accepts writes (and, with ``demoted``, ``old`` replicates from it)."""

        def promoted() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                with contextlib.closing(sentinel.client(decode_responses=True)) as r:
                    addr = r.execute_command(  # type: ignore[no-untyped-call,unused-ignore]
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                    )
                ports.add(int(addr[1]))
            if len(ports) != 1 or old.port in ports:
                return False
            new = next(n for n in self.nodes if n.port in ports)
            if _role(new) != "master":
                return False
            return not demoted or _replication(old).get("master_port") == new.port

        poll(promoted, timeout, "failover")
        return self.primary

    def stop(self) -> None:
        for process in [*self.sentinels, *self.nodes]:
            process.stop()

    def __enter__(self) -> EmbeddedSentinel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        version = ".".join(map(str, self.version))
        return (
            f"EmbeddedSentinel(service={self.service!r}, nodes={len(self.nodes)}, "
            f"sentinels={len(self.sentinels)}, version={version})"
        )


def _replication(node: EmbeddedRedis) -> dict[str, Any]:
    try:
        with contextlib.closing(node.client(decode_responses=True, socket_timeout=2)) as r:
            return dict(r.info("replication"))
    except (redis.ConnectionError, redis.TimeoutError):
        return {}


def _role(node: EmbeddedRedis) -> str | None:
    return _replication(node).get("role")


def _ready(node: EmbeddedRedis) -> bool:
    with contextlib.closing(node.client(decode_responses=True, socket_timeout=2)) as r:
        return replication_ready(r, lambda: "embedded-probe")
