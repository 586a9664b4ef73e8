"""Defaults, limits and key-name parts, each documented where it is defined.

Everything a deployment might want to look up lives here, so the README's
configuration and limits tables can be checked against one file.
"""

from __future__ import annotations

from typing import Final

#: Prefix of every environment variable the project reads (``COORDINATOR_REDIS_URL`` ...).
ENV_PREFIX: Final = "COORDINATOR_"

#: Redis URL used when neither an argument nor ``COORDINATOR_REDIS_URL`` names one.
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
#: Namespace prefixing every key; two namespaces on one Redis never see each other.
DEFAULT_NAMESPACE: Final = "coord"
#: Lease time-to-live in seconds (the original's 15 minutes).
DEFAULT_LEASE_TTL: Final = 900.0
#: Shards per namespace. Each shard is one hash slot holding its agents' keys and
#: one audit stream; the count is recorded in Redis at first use and never changes.
DEFAULT_SHARDS: Final = 16
#: How long a ``request_id`` is remembered so a retried write returns its first result (s).
DEFAULT_REQUEST_TTL: Final = 3600.0
#: Socket read/write timeout for Redis calls (s). Blocking worker reads add their block time.
DEFAULT_SOCKET_TIMEOUT: Final = 5.0
#: Timeout for establishing a Redis connection (s).
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
#: Attempts for calls that are safe to repeat (reads, heartbeats, writes with a request id).
DEFAULT_RETRY_ATTEMPTS: Final = 4
#: First retry delay (s); doubles per attempt with full jitter, capped below.
DEFAULT_RETRY_BACKOFF: Final = 0.05
#: Upper bound of one retry delay (s).
DEFAULT_RETRY_BACKOFF_CAP: Final = 1.0

# --- Input limits (enforced before anything is sent to Redis) -------------------------

#: Longest agent id, in characters.
MAX_AGENT_ID_LENGTH: Final = 128
#: Longest project name, in characters.
MAX_PROJECT_NAME_LENGTH: Final = 256
#: Longest request id, in characters (``[A-Za-z0-9._-]`` only).
MAX_REQUEST_ID_LENGTH: Final = 128
#: Longest namespace, in characters (``[A-Za-z0-9_.-]`` only).
MAX_NAMESPACE_LENGTH: Final = 64
#: Largest metadata object, in bytes of its compact UTF-8 JSON encoding.
MAX_METADATA_BYTES: Final = 8192
#: Largest version or expected version accepted (exact in Lua's double arithmetic).
MAX_VERSION: Final = 2**53 - 1
#: Shortest and longest lease TTL accepted (s).
MIN_LEASE_TTL: Final = 0.01
MAX_LEASE_TTL: Final = 30 * 24 * 3600.0
#: Largest shard count accepted.
MAX_SHARDS: Final = 1024
#: Largest ``limit`` accepted by event queries.
MAX_EVENT_LIMIT: Final = 10_000
#: Largest ``page_size`` accepted by lease listings (entries fetched per round trip).
MAX_PAGE_SIZE: Final = 10_000
#: Longest reservation scope name, in characters (a project, say).
MAX_SCOPE_LENGTH: Final = 256
#: Longest resource name, in characters (``/``-separated names are paths).
MAX_RESOURCE_LENGTH: Final = 512
#: Most resources one reservation may claim.
MAX_RESERVATION_RESOURCES: Final = 256
#: Longest reason given with a reservation, in characters.
MAX_RESERVATION_REASON_LENGTH: Final = 512
#: Longest ``wait=`` of a reservation (s).
MAX_RESERVATION_WAIT: Final = 3600.0

# --- Key layout ---------------------------------------------------------------------
# Every per-agent key is ``{<namespace>:<shard>}:<part>:<agent_id>``; the braces are a
# Redis Cluster hash tag, so an agent's keys and its shard's stream share one slot.

#: Lease hash (native TTL): sid, start, hb, exp, ttl, meta.
KEY_LEASE: Final = "lease"
#: Agent hash (no TTL): latest session and status, project record.
KEY_AGENT: Final = "agent"
#: Fencing counter of an agent (no TTL), a key of its own so that ACLs can allow ``INCR``
#: on it and nothing else: tokens only ever increase (key schema 2; schema 1 kept it in
#: the agent hash, see ``coordinator upgrade-keys``).
KEY_FENCE: Final = "fence"
#: Sorted set of agents with a lease, scored by deadline (ms); drives reaping and listings.
KEY_LEASE_INDEX: Final = "leases"
#: Audit stream of the shard.
KEY_EVENTS: Final = "events"
#: Dead-letter stream of the shard (entries the worker could not persist).
KEY_DEAD_LETTERS: Final = "dead"
#: Idempotency record of a ``request_id`` (TTL ``request_ttl``).
KEY_REQUEST: Final = "req"
#: Namespace metadata hash (shard count, schema version); outside the shard slots.
KEY_META: Final = "meta"
#: Worker liveness keys ``<namespace>:worker:<consumer>`` (TTL refreshed every loop).
KEY_WORKER: Final = "worker"

#: Reservations of a scope live in the shard slot of the scope's name (CRC-32, like an
#: agent), so one script claims many resources atomically and writes its audit event
#: to that shard's stream. Per scope: records (hash reservation id -> JSON; field ``#``
#: is the scope's fencing counter), held resources, counts of holdings beneath each
#: path prefix, and the wait queue.
KEY_RESERVATIONS: Final = "rsv"
KEY_RESERVATION_HELD: Final = "rsvheld"
KEY_RESERVATION_UNDER: Final = "rsvunder"
KEY_RESERVATION_WAIT: Final = "rsvwait"
#: Per shard: sorted set reservation id -> deadline (ms), and hash reservation id ->
#: ``<scope>\n<session id>`` (release by id, listings, the worker's reaper).
KEY_RESERVATION_INDEX: Final = "rsvidx"
KEY_RESERVATION_IDS: Final = "rsvids"
#: Per agent, in its shard: hash reservation id -> scope of what its sessions hold in
#: scopes of that same shard, so the script that ends a session releases them too.
KEY_RESERVATIONS_OF: Final = "rsvof"
#: Fencing counter of a scope's grants, a key of its own (outside the ``rsv*`` keys) so
#: that ACLs can allow ``INCR`` on it and nothing else: tokens only ever increase.
KEY_RESERVATION_FENCE: Final = "rfence"
#: Idempotency record of a reservation's ``request_id`` (in the scope's slot).
KEY_RESERVATION_REQUEST: Final = "rsvreq"

#: Consumer group the worker reads every shard stream with.
DEFAULT_CONSUMER_GROUP: Final = "coordinator"

#: Schema version recorded with the shard count; bumped on incompatible key changes.
#: 2: the fencing counter moved from the agent hash's ``tok`` field to its own key.
KEY_SCHEMA_VERSION: Final = 2

#: Longest ``error_message`` of an application event (``compat.log_agent_event``).
MAX_ERROR_MESSAGE_LENGTH: Final = 2048
