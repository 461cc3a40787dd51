"""`/healthz`: is the database reachable, and the broker and time-series store as configured?"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from web.database import get_db

bp = Blueprint("health", __name__)


def _check_database() -> dict:
    started = time.perf_counter()
    try:
        get_db().execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not healthy"; the reason is reported, not raised
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _check_tcp(url: str, default_port: int) -> dict:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=1):
            return {"status": "up"}
    except OSError as exc:
        return {"status": "down", "error": exc.strerror or type(exc).__name__}


@bp.get("/healthz")
def healthz():
    settings = current_app.config["LABSHARE_SETTINGS"]
    checks = {"database": _check_database(), "broker": _check_tcp(settings.mqtt_url, 1883)}
    if urlsplit(settings.tsdb_url).scheme == "sql":
        checks["tsdb"] = {"status": checks["database"]["status"], "backend": "sql"}
    else:
        checks["tsdb"] = _check_tcp(settings.tsdb_url, 8086)
    # The web app can serve pages without the broker; only the database is essential to it.
    healthy = checks["database"]["status"] == "up"
    body = {"status": "ok" if healthy else "unavailable", "checks": checks}
    return jsonify(body), 200 if healthy else 503
