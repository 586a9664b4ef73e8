"""The event worker daemon (``coordinator worker``).

``options`` holds every default; ``loop`` reads, persists and acknowledges; ``watch``
is the pure regression check of the persisted audit; ``daemon`` adds signals and the
liveness check; ``metrics`` serves Prometheus text and health endpoints.
"""

from coordinator.worker.daemon import run_worker, worker_alive
from coordinator.worker.loop import EventWorker
from coordinator.worker.metrics import WorkerMetrics
from coordinator.worker.options import WorkerOptions, default_consumer
from coordinator.worker.watch import ANOMALY_SHARD, RegressionWatch, anomaly_row

__all__ = [
    "ANOMALY_SHARD",
    "EventWorker",
    "RegressionWatch",
    "WorkerMetrics",
    "WorkerOptions",
    "anomaly_row",
    "default_consumer",
    "run_worker",
    "worker_alive",
]
