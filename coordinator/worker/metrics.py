"""The worker's metrics and its HTTP endpoints (``/metrics``, ``/healthz``, ``/readyz``).

Counters are plain integers the worker bumps in its loop; they are turned into
Prometheus metric families only when scraped, so persisting an event costs no
metrics-library call. ``prometheus_client`` (the ``metrics`` extra) is needed only to
serve them.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from coordinator.errors import ConfigurationError

#: Histogram bucket upper bounds.
LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
SIZE_BUCKETS: Final = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

PREFIX: Final = "coordinator_worker"


@dataclass
class Histogram:
    """Cumulative-on-export bucket counts (one ``bisect`` per observation)."""

    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def buckets(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


@dataclass
class WorkerMetrics:
    """Everything the worker counts (also returned by a ``--burst`` run)."""

    read: int = 0
    persisted: int = 0
    duplicates: int = 0
    failed: int = 0
    dead_lettered: int = 0
    #: Entries delivered more than max_deliveries times, retried alone.
    retried_alone: int = 0
    reclaimed: int = 0
    reaped: int = 0
    #: Reservations released because they lapsed or their session died.
    reservations_reaped: int = 0
    anomalies: int = 0
    batches: int = 0
    sink_errors: int = 0
    redis_errors: int = 0
    pending: int = 0
    oldest_pending_age: float = 0.0
    stream_length: int = 0
    batch_size: Histogram = field(default_factory=lambda: Histogram(SIZE_BUCKETS))
    batch_duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))
    lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))

    def observe_lags(self, now_ms: int, created_ms: Iterable[int]) -> None:
        observe = self.lag.observe
        for ms in created_ms:
            observe(max(0.0, (now_ms - ms) / 1000))

    def summary(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "persisted": self.persisted,
            "duplicates": self.duplicates,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "retried_alone": self.retried_alone,
            "reclaimed": self.reclaimed,
            "reaped": self.reaped,
            "reservations_reaped": self.reservations_reaped,
            "anomalies": self.anomalies,
            "batches": self.batches,
            "pending": self.pending,
            "stream_length": self.stream_length,
        }

    def families(self) -> list[Any]:
        """Prometheus metric families of the current values."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        def counter(name: str, doc: str, value: float) -> Any:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> Any:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        def histogram(name: str, doc: str, h: Histogram) -> Any:
            return HistogramMetricFamily(
                f"{PREFIX}_{name}", doc, buckets=h.buckets(), sum_value=h.total
            )

        return [
            counter("events_read", "Stream entries read (new and reclaimed).", self.read),
            counter("events_persisted", "Events newly stored in the sink.", self.persisted),
            counter("events_duplicate", "Re-delivered events already stored.", self.duplicates),
            counter("events_failed", "Events the sink refused (then dead-lettered).", self.failed),
            counter("events_dead_lettered", "Entries moved to dead letters.", self.dead_lettered),
            counter(
                "events_retried_alone",
                "Entries delivered more than max_deliveries times, retried alone.",
                self.retried_alone,
            ),
            counter("events_reclaimed", "Entries claimed from idle consumers.", self.reclaimed),
            counter("sessions_reaped", "Expired sessions turned into events.", self.reaped),
            counter(
                "reservations_reaped",
                "Reservations released as lapsed or of a dead session.",
                self.reservations_reaped,
            ),
            counter("audit_anomalies", "Version or fencing regressions seen.", self.anomalies),
            counter("sink_errors", "Failed sink writes (outages, retried).", self.sink_errors),
            counter("redis_errors", "Failed Redis calls (retried).", self.redis_errors),
            gauge("pending_entries", "Delivered but unacknowledged entries.", self.pending),
            gauge(
                "oldest_pending_age_seconds",
                "Age of the oldest unacknowledged entry.",
                self.oldest_pending_age,
            ),
            gauge("stream_length", "Entries in the audit streams.", self.stream_length),
            histogram("batch_size", "Entries per persisted batch.", self.batch_size),
            histogram(
                "batch_duration_seconds", "Time to persist and ack a batch.", self.batch_duration
            ),
            histogram(
                "lag_seconds", "From an event's stream id time to its persistence.", self.lag
            ),
        ]


class MetricsServer:
    """A tiny asyncio HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        host: str,
        port: int,
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError:
            raise ConfigurationError(
                "serving metrics needs prometheus-client: pip install 'agent-coordinator[metrics]'"
            ) from None
        self.metrics, self.healthy, self.ready = metrics, healthy, ready
        self.host, self.port = host, port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(metrics))
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)).strip():
                pass  # headers: nothing here depends on them
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            status, body, kind = self._respond(path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _respond(self, path: str) -> tuple[str, bytes, str]:
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST
        if path in ("/healthz", "/readyz"):
            ok = self.healthy() if path == "/healthz" else self.ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            return status, (b"ok\n" if ok else b"unavailable\n"), "text/plain"
        return "404 Not Found", b"not found\n", "text/plain"


class _Collector:
    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> list[Any]:
        return self.metrics.families()
