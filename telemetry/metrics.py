"""The ingest's operational metrics in Prometheus form (served by `labshare ingest --metrics-port` and by
the web app's /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    """One set of ingest metrics in `registry` (a fresh one by default, so several workers in one test
    process do not collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages_in = Counter("labshare_ingest_messages", "MQTT messages received", registry=r)
        self.acknowledged = Counter("labshare_ingest_acknowledged", "QoS 1 messages acknowledged to the broker",
                                    registry=r)
        self.dead_letters = Counter("labshare_ingest_dead_letters", "Messages rejected, by reason", ["reason"],
                                    registry=r)
        self.points_written = Counter("labshare_ingest_points_written",
                                      "Points written straight to the time-series store", registry=r)
        self.retries = Counter("labshare_ingest_retries", "Batches held back, by what refused them", ["cause"],
                               registry=r)
        self.batch_seconds = Histogram(
            "labshare_ingest_batch_seconds", "From taking a batch to acknowledging it", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.spool_bytes = Gauge("labshare_ingest_spool_bytes", "Bytes waiting in the disk spool", registry=r)
        self.queue_depth = Gauge("labshare_ingest_queue_depth", "Messages received and not yet processed",
                                 registry=r)
        self.lag = Gauge("labshare_ingest_lag_seconds",
                         "Age of the oldest message of the newest batch when it was taken", registry=r)
        self.sessions_settled = Counter(
            "labshare_ingest_sessions_settled", "Devices whose deferred usage sessions were re-derived", registry=r)
        self.deferred_devices = Gauge("labshare_ingest_deferred_devices",
                                      "Devices whose usage sessions wait to be re-derived", registry=r)
        self.connected = Gauge("labshare_ingest_connected", "1 while connected to the broker", registry=r)
