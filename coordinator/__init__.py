"""agent-coordinator: shared agent sessions, project records and audit events on Redis.

from coordinator import Coordinator
c = Coordinator.from_url("redis://127.0.0.1:6379/0", namespace="coord")
s = c.start_session("agent-1")
c.set_current_project("agent-1", "proj-a", s.session_id, expected_version=0)
"""

import importlib
from typing import TYPE_CHECKING, Any

from coordinator.aio import AsyncCoordinator
from coordinator.client import Coordinator
from coordinator.errors import (
    AccessDenied,
    ConfigurationError,
    ConflictError,
    CoordinatorError,
    CoordinatorUnavailable,
    DataDirInUse,
    DurabilityUnsupported,
    EmbeddedRedisError,
    EvictionPolicyError,
    FsyncTimeout,
    InvalidInputError,
    LegacyConflictError,
    LegacySessionLeaseExpired,
    PortInUse,
    RedisOutOfMemory,
    ReplicationTimeout,
    RequestIdReusedError,
    ReservationConflict,
    ReservationNotHeld,
    ReservationScopesNeeded,
    SessionAlreadyActive,
    SessionLeaseExpired,
    ShardCountMismatch,
    SinkAccessDenied,
    SinkRefused,
    SinkUnavailable,
    StackError,
    StackRunning,
    UnexpectedReply,
    WorkerFailed,
)
from coordinator.keepalive import AsyncKeepAlive, KeepAlive
from coordinator.liveness import LeaseState
from coordinator.models import (
    AgentEvent,
    AgentProject,
    EventType,
    Lease,
    Reservation,
    ReservationHolder,
    Session,
)
from coordinator.server import ServerFacts
from coordinator.settings import Settings
from coordinator.stats import NamespaceStats, ServerIdentity, StreamStats, WorkerLiveness

__version__ = "0.1.0"

#: Loaded on first use: the local tooling (subprocesses, sockets) is not needed to use
#: the library, and ``import coordinator`` stays light.
_LAZY = {
    "EmbeddedCluster": "coordinator.local.cluster",
    "EmbeddedRedis": "coordinator.local.embedded",
    "EmbeddedSentinel": "coordinator.local.sentinel",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'coordinator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from coordinator.local.cluster import EmbeddedCluster
    from coordinator.local.embedded import EmbeddedRedis
    from coordinator.local.sentinel import EmbeddedSentinel

__all__ = [
    "AccessDenied",
    "AgentEvent",
    "AgentProject",
    "AsyncCoordinator",
    "AsyncKeepAlive",
    "ConfigurationError",
    "ConflictError",
    "Coordinator",
    "CoordinatorError",
    "CoordinatorUnavailable",
    "DataDirInUse",
    "DurabilityUnsupported",
    "EmbeddedCluster",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "EmbeddedSentinel",
    "EventType",
    "EvictionPolicyError",
    "FsyncTimeout",
    "InvalidInputError",
    "KeepAlive",
    "Lease",
    "LeaseState",
    "LegacyConflictError",
    "LegacySessionLeaseExpired",
    "NamespaceStats",
    "PortInUse",
    "RedisOutOfMemory",
    "ReplicationTimeout",
    "RequestIdReusedError",
    "Reservation",
    "ReservationConflict",
    "ReservationHolder",
    "ReservationNotHeld",
    "ReservationScopesNeeded",
    "ServerFacts",
    "ServerIdentity",
    "Session",
    "SessionAlreadyActive",
    "SessionLeaseExpired",
    "Settings",
    "ShardCountMismatch",
    "SinkAccessDenied",
    "SinkRefused",
    "SinkUnavailable",
    "StackError",
    "StackRunning",
    "StreamStats",
    "UnexpectedReply",
    "WorkerFailed",
    "WorkerLiveness",
    "__version__",
]
