"""Upgrade a namespace's key schema in place: ``coordinator upgrade-keys``.

Schema 2 (this version) keeps each agent's fencing counter in a key of its own,
``{ns:shard}:fence:<agent>``, written only by ``INCR``, so that the ACL of the server
processes can mint tokens without being able to lower them (``deploy/users.acl``).
Schema 1 kept it in the agent hash's ``tok`` field. The upgrade moves every agent's
counter (never lowering one: ``lua/upgrade_fence.lua``), then records schema 2.

Clients of this version refuse a schema-1 namespace (ConfigurationError) until it is
upgraded; clients of the previous version connected before the upgrade keep minting
into ``tok``. So: stop every process of the old version, run the upgrade with a
credential that may ``SCAN`` (``ops``), start the new version. Re-running is safe.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator import constants as C
from coordinator.connection import cluster_hint, open_client, parse_cluster_info
from coordinator.errors import ConfigurationError
from coordinator.keys import KeySpace
from coordinator.scripts import sources
from coordinator.settings import Settings


@dataclass(frozen=True, slots=True)
class UpgradeReport:
    """What :func:`upgrade_keys` found and did."""

    namespace: str
    #: Schema recorded before the upgrade (None: the namespace was never used).
    previous_schema: int | None
    schema: int
    #: Agent hashes whose counter was moved (or found already moved).
    agents: int


def fence_key_of(agent_key: str) -> str:
    """``{ns:s}:agent:<id>`` -> ``{ns:s}:fence:<id>`` (the tag ends at the first '}')."""
    tag, sep, agent = agent_key.partition(f"}}:{C.KEY_AGENT}:")
    if not sep:
        raise ValueError(f"not an agent key: {agent_key!r}")
    return f"{tag}}}:{C.KEY_FENCE}:{agent}"


def upgrade_keys(settings: Settings) -> UpgradeReport:
    """Bring ``settings.namespace`` to :data:`~coordinator.constants.KEY_SCHEMA_VERSION`.

    Raises ConfigurationError for a namespace newer than this version knows, and what
    redis-py raises for connection or permission failures (the CLI maps them)."""
    keys = KeySpace(settings.namespace, settings.shards)
    cluster = cluster_hint(settings)
    if cluster is None:
        probe = open_client(settings, cluster=False)
        try:
            cluster = parse_cluster_info(probe.info("cluster"))
        finally:
            probe.close()
    client = open_client(settings, cluster)
    try:
        recorded = client.hmget(keys.meta, ["shards", "schema"])
        if recorded[1] is None:
            return UpgradeReport(keys.namespace, None, C.KEY_SCHEMA_VERSION, 0)
        previous = int(recorded[1])
        if previous > C.KEY_SCHEMA_VERSION:
            raise ConfigurationError(
                f"namespace {keys.namespace!r} has key schema {previous}; this version "
                f"knows {C.KEY_SCHEMA_VERSION} (upgrade agent-coordinator)"
            )
        move = client.register_script(sources()["upgrade_fence"])
        agents = 0
        pattern = f"{{{keys.namespace}:*}}:{C.KEY_AGENT}:*"
        for raw in client.scan_iter(match=pattern, count=1000, _type="hash"):
            name = raw.decode() if isinstance(raw, bytes) else raw
            move(keys=[name, fence_key_of(name)], client=client)
            agents += 1
        client.hset(keys.meta, "schema", C.KEY_SCHEMA_VERSION)
        return UpgradeReport(keys.namespace, previous, C.KEY_SCHEMA_VERSION, agents)
    finally:
        client.close()
