"""Key layout of a namespace.

An agent belongs to one of ``shards`` shards (CRC-32 of its id). All keys of a
shard carry the hash tag ``{<namespace>:<shard>}``, so every script touches one
hash slot and runs unchanged on Redis Cluster::

    {coord:3}:lease:agent-1     lease hash with a native TTL
    {coord:3}:agent:agent-1     latest session, project record
    {coord:3}:fence:agent-1     fencing counter (written only by INCR)
    {coord:3}:leases            sorted set agent -> lease deadline (ms)
    {coord:3}:events            audit stream of shard 3
    {coord:3}:dead              dead-letter stream of shard 3
    {coord:3}:req:<rid>:<agent> idempotency record of a request id
    {coord:5}:rsv:<scope>       reservations of a scope (its shard: CRC-32 of the scope)
    {coord:5}:rsvheld:<scope>   held resources; rsvunder: holdings beneath each path
    {coord:5}:rsvwait:<scope>   wait queue of the scope (arrival order)
    {coord:5}:rsvidx / rsvids   the shard's reservation deadlines / id -> scope, session
    {coord:3}:rsvof:agent-1     reservations of agent-1 in scopes of its own shard 3
    {coord:5}:rfence:<scope>    fencing counter of the scope's grants (written only by INCR)
    coord:meta                  shard count and schema version
    coord:worker:<consumer>     liveness of a worker consumer (TTL)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

from coordinator import constants as C
from coordinator import validation
from coordinator.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class AgentKeys:
    """The keys every per-agent script takes, in ``KEYS`` order."""

    shard: int
    lease: str
    agent: str
    index: str
    stream: str
    fence: str
    #: Reservations the agent holds in scopes of its own shard (released with its session).
    listed: str

    @property
    def script_keys(self) -> tuple[str, str, str, str]:
        return (self.lease, self.agent, self.index, self.stream)

    @property
    def fenced_keys(self) -> tuple[str, str, str, str, str]:
        """``script_keys`` and the fencing counter (scripts that mint or check tokens)."""
        return (self.lease, self.agent, self.index, self.stream, self.fence)


@dataclass(frozen=True, slots=True)
class ScopeKeys:
    """The keys every reservation script takes, in ``KEYS`` order (one slot: the
    scope's shard, whose audit stream the scripts write)."""

    shard: int
    records: str
    held: str
    under: str
    wait: str
    index: str
    ids: str
    stream: str
    #: The scope's fencing counter (only the reserve script takes it).
    fence: str

    @property
    def script_keys(self) -> tuple[str, str, str, str, str, str, str]:
        return (self.records, self.held, self.under, self.wait, self.index, self.ids, self.stream)


class KeySpace:
    """Builds key names for one namespace and shard count (pure, no I/O)."""

    def __init__(self, namespace: str, shards: int) -> None:
        self.namespace = validation.namespace(namespace)
        if type(shards) is not int or not 0 < shards <= C.MAX_SHARDS:
            raise InvalidInputError("shards", f"must be an integer from 1 to {C.MAX_SHARDS}")
        self.shards = shards
        self._tags = tuple(f"{{{namespace}:{i}}}" for i in range(shards))
        # Bound per instance so two key spaces never share cache entries.
        self.agent_keys = lru_cache(maxsize=8192)(self._agent_keys)
        self.scope_keys = lru_cache(maxsize=4096)(self._scope_keys)

    def __repr__(self) -> str:
        return f"KeySpace(namespace={self.namespace!r}, shards={self.shards})"

    @property
    def meta(self) -> str:
        return f"{self.namespace}:{C.KEY_META}"

    def worker(self, consumer: str) -> str:
        """Liveness key of a worker consumer (outside the shard slots)."""
        return f"{self.namespace}:{C.KEY_WORKER}:{consumer}"

    def shard_of(self, agent_id: str) -> int:
        return zlib.crc32(agent_id.encode("utf-8")) % self.shards

    def _agent_keys(self, agent_id: str) -> AgentKeys:
        shard = self.shard_of(agent_id)
        tag = self._tags[shard]
        return AgentKeys(
            shard=shard,
            lease=f"{tag}:{C.KEY_LEASE}:{agent_id}",
            agent=f"{tag}:{C.KEY_AGENT}:{agent_id}",
            index=f"{tag}:{C.KEY_LEASE_INDEX}",
            stream=f"{tag}:{C.KEY_EVENTS}",
            fence=f"{tag}:{C.KEY_FENCE}:{agent_id}",
            listed=f"{tag}:{C.KEY_RESERVATIONS_OF}:{agent_id}",
        )

    def lease(self, agent_id: str) -> str:
        return self.agent_keys(agent_id).lease

    def agent(self, agent_id: str) -> str:
        return self.agent_keys(agent_id).agent

    def fence(self, agent_id: str) -> str:
        return self.agent_keys(agent_id).fence

    def lease_in(self, shard: int, agent_id: str) -> str:
        """Lease key of an agent known to live in ``shard`` (listings: no hashing)."""
        return f"{self._tags[shard]}:{C.KEY_LEASE}:{agent_id}"

    def agent_in(self, shard: int, agent_id: str) -> str:
        """Agent hash of an agent known to live in ``shard``."""
        return f"{self._tags[shard]}:{C.KEY_AGENT}:{agent_id}"

    def index(self, shard: int) -> str:
        return f"{self._tags[shard]}:{C.KEY_LEASE_INDEX}"

    def stream(self, shard: int) -> str:
        return f"{self._tags[shard]}:{C.KEY_EVENTS}"

    def dead_letters(self, shard: int) -> str:
        return f"{self._tags[shard]}:{C.KEY_DEAD_LETTERS}"

    def streams(self) -> list[str]:
        return [self.stream(i) for i in range(self.shards)]

    def request(self, agent_id: str, request_id: str) -> str:
        # request ids cannot contain ':', so the key is unambiguous for any agent id.
        return f"{self._tags[self.shard_of(agent_id)]}:{C.KEY_REQUEST}:{request_id}:{agent_id}"

    def _scope_keys(self, scope: str) -> ScopeKeys:
        shard = self.shard_of(scope)
        tag = self._tags[shard]
        return ScopeKeys(
            shard=shard,
            records=f"{tag}:{C.KEY_RESERVATIONS}:{scope}",
            held=f"{tag}:{C.KEY_RESERVATION_HELD}:{scope}",
            under=f"{tag}:{C.KEY_RESERVATION_UNDER}:{scope}",
            wait=f"{tag}:{C.KEY_RESERVATION_WAIT}:{scope}",
            index=f"{tag}:{C.KEY_RESERVATION_INDEX}",
            ids=f"{tag}:{C.KEY_RESERVATION_IDS}",
            stream=f"{tag}:{C.KEY_EVENTS}",
            fence=f"{tag}:{C.KEY_RESERVATION_FENCE}:{scope}",
        )

    def reservation_index(self, shard: int) -> str:
        return f"{self._tags[shard]}:{C.KEY_RESERVATION_INDEX}"

    def reservation_ids(self, shard: int) -> str:
        return f"{self._tags[shard]}:{C.KEY_RESERVATION_IDS}"

    def reservation_request(self, scope: str, agent_id: str, request_id: str) -> str:
        """Idempotency record of a reservation request, in the scope's slot."""
        tag = self._tags[self.shard_of(scope)]
        return f"{tag}:{C.KEY_RESERVATION_REQUEST}:{request_id}:{agent_id}"
