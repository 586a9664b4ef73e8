"""What the Redis (or Valkey) server says about itself, and whether that is safe.

Pure: :func:`server_facts` parses a redis-py ``INFO`` reply (one node's sections, or a
cluster client's reply keyed by node) into :class:`ServerFacts`; :func:`with_config`
adds what only ``CONFIG GET`` tells (``appendfsync``, ``save``), which many roles and
managed services may not run, so it stays unknown (None) then. The clients refuse an
evicting server on connect with :func:`check_eviction`; ``status`` and ``health``
report :func:`server_warnings`.

Only ``maxmemory-policy noeviction`` is safe for this data: an evicted lease looks
like an expired one, an evicted fencing counter or project record is re-issued from
scratch (a fencing token minted twice, a version-0 write accepted over version 5), an
evicted stream entry is an audit event lost. ``volatile-*`` policies evict exactly
the keys with a TTL, which every lease has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from coordinator.errors import EvictionPolicyError

#: The one maxmemory policy under which Redis never drops a key by itself.
SAFE_POLICY: Final = "noeviction"
#: Used memory above this share of ``maxmemory`` is reported as a warning.
MEMORY_WARNING_RATIO: Final = 0.9


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """One server process as its ``INFO`` (and, where allowed, ``CONFIG GET``) describes it."""

    #: ``redis`` or ``valkey`` (Valkey also reports a Redis-compatible ``redis_version``).
    kind: str
    version: str
    #: ``maxmemory-policy``; None when the server did not say (no ``INFO``).
    policy: str | None
    #: Bytes; ``maxmemory`` 0 means no limit.
    used_memory: int | None
    maxmemory: int | None
    #: Append-only file on (``INFO persistence``).
    aof_enabled: bool | None
    #: ``appendfsync`` (always, everysec, no); None when ``CONFIG GET`` is not allowed.
    appendfsync: str | None = None
    #: The RDB ``save`` schedule ("" = snapshots off); None when unknown.
    rdb_save: str | None = None
    #: ``master`` or ``slave`` (Redis's word for a replica).
    role: str | None = None
    #: The cluster node (``host:port``) these facts describe; None outside a cluster.
    node: str | None = None

    @property
    def eviction_safe(self) -> bool | None:
        """True under ``noeviction``, False under any evicting policy, None unknown."""
        return None if self.policy is None else self.policy == SAFE_POLICY

    @property
    def persistent(self) -> bool | None:
        """Whether the data survives a restart: AOF on, or an RDB schedule set (None
        when AOF is off and the RDB schedule is unknown)."""
        if self.aof_enabled:
            return True
        if self.aof_enabled is None or self.rdb_save is None:
            return None
        return bool(self.rdb_save.strip())

    @property
    def memory_ratio(self) -> float | None:
        """Used memory as a share of ``maxmemory`` (None without a limit)."""
        if not self.maxmemory or self.used_memory is None:
            return None
        return self.used_memory / self.maxmemory

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "kind": self.kind,
            "version": self.version,
            "role": self.role,
            "maxmemory_policy": self.policy,
            "eviction_safe": self.eviction_safe,
            "used_memory": self.used_memory,
            "maxmemory": self.maxmemory,
            "aof_enabled": self.aof_enabled,
            "appendfsync": self.appendfsync,
            "rdb_save": self.rdb_save,
            "persistent": self.persistent,
        }


#: Facts of a server that answered no ``INFO`` (a test double, a proxy).
UNKNOWN: Final = ServerFacts("unknown", "unknown", None, None, None, None)


def every_node(cluster: bool) -> dict[str, str]:
    """``INFO``'s keyword arguments: on a cluster, ask every node (primaries and
    replicas: a replica evicting on its own would be promoted with holes)."""
    return {"target_nodes": "all"} if cluster else {}


def server_facts(info: Any) -> tuple[ServerFacts, ...]:
    """Facts from a parsed ``INFO`` reply: one node's fields, or a cluster client's
    reply (one section per node, keyed by ``host:port``). An error reply (the
    command was optional and refused) gives :data:`UNKNOWN`."""
    if not isinstance(info, Mapping):
        return (UNKNOWN,)
    if "redis_version" in info or "maxmemory_policy" in info:
        return (_one(info, None),)
    nodes = [(str(node), section) for node, section in info.items() if isinstance(section, Mapping)]
    return tuple(_one(section, node) for node, section in sorted(nodes)) or (UNKNOWN,)


def _one(info: Mapping[str, Any], node: str | None) -> ServerFacts:
    kind = str(info.get("server_name") or "redis")
    version = info.get(f"{kind}_version") or info.get("redis_version") or "unknown"
    aof = info.get("aof_enabled")
    return ServerFacts(
        kind=kind,
        version=str(version),
        policy=None if info.get("maxmemory_policy") is None else str(info["maxmemory_policy"]),
        used_memory=_int(info.get("used_memory")),
        maxmemory=_int(info.get("maxmemory")),
        aof_enabled=None if aof is None else str(aof) == "1",
        role=None if info.get("role") is None else str(info["role"]),
        node=node,
    )


def with_config(facts: Sequence[ServerFacts], config: Any) -> tuple[ServerFacts, ...]:
    """Add ``appendfsync`` and/or ``save`` from a ``CONFIG GET`` reply (a dict, or a
    cluster client's dict per node); an error reply leaves them unknown."""
    if not isinstance(config, Mapping):
        return tuple(facts)
    if "appendfsync" in config or "save" in config:
        per_node: Mapping[Any, Any] = {f.node: config for f in facts}
    else:
        per_node = {str(k): v for k, v in config.items()}
    out = []
    for fact in facts:
        found = per_node.get(fact.node)
        if isinstance(found, Mapping):
            if found.get("appendfsync") is not None:
                fact = replace(fact, appendfsync=str(found["appendfsync"]))
            if found.get("save") is not None:
                fact = replace(fact, rdb_save=str(found["save"]))
        out.append(fact)
    return tuple(out)


def summary(facts: Sequence[ServerFacts]) -> ServerFacts:
    """One line's worth for a deployment: the node itself outside a cluster; on a
    cluster the fullest node, with every distinct policy and fsync setting joined."""
    if len(facts) == 1:
        return facts[0]
    fullest = max(facts, key=lambda f: f.memory_ratio or 0.0)

    def joined(values: Sequence[str | None]) -> str | None:
        known = sorted({v for v in values if v is not None})
        return ",".join(known) if known else None

    aof = {f.aof_enabled for f in facts}
    return replace(
        fullest,
        version=joined([f.version for f in facts]) or "unknown",
        policy=joined([f.policy for f in facts]),
        aof_enabled=aof.pop() if len(aof) == 1 else None,
        appendfsync=joined([f.appendfsync for f in facts]),
        rdb_save=joined([f.rdb_save for f in facts]),
        node=None,
    )


def eviction_refusal(facts: Sequence[ServerFacts], url: str) -> EvictionPolicyError | None:
    """The error to raise for a server whose policy may evict keys (None when safe or
    unknown)."""
    for fact in facts:
        if fact.eviction_safe is False:
            assert fact.policy is not None
            where = url if fact.node is None else f"{url} (node {fact.node})"
            return EvictionPolicyError(where, fact.policy)
    return None


def server_warnings(facts: Sequence[ServerFacts]) -> list[str]:
    """One line per unsafe or unknown setting, for ``status`` and ``health``."""
    found: list[str] = []
    for fact in facts:
        where = "" if fact.node is None else f"node {fact.node}: "
        if fact.policy is None:
            found.append(f"{where}maxmemory-policy unknown (INFO not available)")
        elif fact.policy != SAFE_POLICY:
            found.append(
                f"{where}maxmemory-policy is {fact.policy}: Redis may evict leases, fencing "
                f"counters and records (set maxmemory-policy {SAFE_POLICY})"
            )
        if fact.persistent is False:
            found.append(
                f"{where}persistence is off (appendonly no, no RDB schedule): a restart "
                "loses every lease, record and unpersisted event (set appendonly yes)"
            )
        elif fact.persistent is None and fact.aof_enabled is False:
            found.append(f"{where}appendonly is off and the RDB schedule is unknown")
        if fact.appendfsync == "no":
            found.append(
                f"{where}appendfsync is no: the OS decides when writes reach the disk "
                "(set appendfsync always or everysec)"
            )
        ratio = fact.memory_ratio
        if ratio is not None and ratio >= MEMORY_WARNING_RATIO:
            found.append(
                f"{where}memory {ratio:.0%} of maxmemory ({fact.used_memory} of "
                f"{fact.maxmemory} bytes): writes are refused at the limit"
            )
    return found


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
