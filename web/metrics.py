"""/metrics: Prometheus text format for the operators' scraper, served to loopback clients only.

The gauges are read from the database at scrape time (devices by live state, dead letters by reason, open
usage sessions), so every web worker answers the same. When an ingest runs in the same process (the demo),
its registry is in `app.extensions["labshare.ingest_registry"]` and its metrics are appended.

Only requests from 127.0.0.1 or ::1 are answered; others get 403. Behind a reverse proxy on the same machine
every request comes from loopback, so the proxy must not forward /metrics (nginx: `location = /metrics
{ deny all; }`); scrape the app server's own port instead.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from devices import live
from web.database import get_db

bp = Blueprint("metrics", __name__)

LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
INGEST_REGISTRY_KEY = "labshare.ingest_registry"


class DatabaseCollector(Collector):
    """Gauges computed from the relational store when scraped."""

    def __init__(self, db) -> None:
        self.db = db

    def collect(self):
        devices = GaugeMetricFamily("labshare_devices", "Registered devices by live state", labels=["state"])
        for state, count in live.devices_by_state(self.db).items():
            devices.add_metric([state.value], count)
        yield devices
        letters = GaugeMetricFamily("labshare_dead_letters", "Dead letters stored, by reason", labels=["reason"])
        for reason, count in live.dead_letter_counts(self.db).items():
            letters.add_metric([reason], count)
        yield letters
        yield GaugeMetricFamily("labshare_usage_sessions_open", "Usage sessions not yet closed",
                                value=live.open_session_count(self.db))


@bp.get("/metrics")
def metrics() -> Response:
    if request.remote_addr not in LOOPBACK:
        abort(403)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(get_db()))
    body = generate_latest(registry)
    ingest: CollectorRegistry | None = current_app.extensions.get(INGEST_REGISTRY_KEY)
    if ingest is not None:
        body += generate_latest(ingest)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
