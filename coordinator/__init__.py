"""agent-coordinator: shared agent sessions, project records and audit events on Redis.

from coordinator import Coordinator
c = Coordinator.from_url("redis://127.0.0.1:6379/0", namespace="coord")
s = c.start_session("agent-1")
c.set_current_project("agent-1", "proj-a", s.session_id, expected_version=0)
"""

from coordinator.aio import AsyncCoordinator
from coordinator.client import Coordinator
from coordinator.embedded import DataDirInUse, EmbeddedRedis, EmbeddedRedisError
from coordinator.embedded_cluster import EmbeddedCluster
from coordinator.embedded_sentinel import EmbeddedSentinel
from coordinator.errors import (
    AccessDenied,
    ConfigurationError,
    ConflictError,
    CoordinatorError,
    CoordinatorUnavailable,
    InvalidInputError,
    ReplicationTimeout,
    RequestIdReusedError,
    SessionAlreadyActive,
    SessionLeaseExpired,
    ShardCountMismatch,
    SinkUnavailable,
    UnexpectedReply,
)
from coordinator.models import AgentEvent, AgentProject, EventType, Lease, Session
from coordinator.settings import Settings
from coordinator.stats import NamespaceStats, StreamStats, WorkerLiveness

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AgentEvent",
    "AgentProject",
    "AsyncCoordinator",
    "ConfigurationError",
    "ConflictError",
    "Coordinator",
    "CoordinatorError",
    "CoordinatorUnavailable",
    "DataDirInUse",
    "EmbeddedCluster",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "EmbeddedSentinel",
    "EventType",
    "InvalidInputError",
    "Lease",
    "NamespaceStats",
    "ReplicationTimeout",
    "RequestIdReusedError",
    "Session",
    "SessionAlreadyActive",
    "SessionLeaseExpired",
    "Settings",
    "ShardCountMismatch",
    "SinkUnavailable",
    "StreamStats",
    "UnexpectedReply",
    "WorkerLiveness",
    "__version__",
]
