"""A live lab for `labshare demo`: a broker, the ingest and simulated instruments for the demo's devices.

The demo issues fresh broker passwords to its devices at every start (only hashes are stored, so the
previous ones are unknown), exports Mosquitto's password file and ACL from the registry and starts a
private Mosquitto with them — the production path, on one machine. Without Mosquitto it falls back to the
embedded amqtt broker (anonymous, MQTT 3.1.1, no shared subscription).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from core.settings import Settings
from devices.models import Device
from devices.registry import export_mosquitto, rotate_credential
from telemetry.broker import EmbeddedAmqtt, PrivateMosquitto
from telemetry.ingest import IngestConfig, IngestWorker
from telemetry.metrics import IngestMetrics
from telemetry.simulator import DeviceSpec, Simulator
from telemetry.spool import DiskSpool
from telemetry.tsdb import store_from_url
from web.demo.seed import load_data

log = logging.getLogger(__name__)
INGEST_USER = "labshare-ingest"


class LiveLab:
    def __init__(self, settings: Settings, engine: Engine, metrics: IngestMetrics | None = None) -> None:
        self.settings, self.engine = settings, engine
        self.metrics = metrics or IngestMetrics()
        self.broker: PrivateMosquitto | EmbeddedAmqtt | None = None
        self.worker: IngestWorker | None = None
        self.simulator: Simulator | None = None

    def start(self) -> str:
        """Start everything; returns a line describing the broker."""
        workdir = Path(self.settings.data_dir)
        kinds = {row["device_id"]: row["sim"] for row in load_data().get("devices", [])}
        ingest_password = secrets.token_urlsafe(24)
        with Session(self.engine) as db:
            devices = db.scalars(select(Device).where(Device.enabled, Device.device_id.in_(kinds))
                                 .order_by(Device.device_id)).all()
            passwords = {}
            if PrivateMosquitto.available():
                passwords = {d.device_id: rotate_credential(db, None, d.id) for d in devices}
                export_mosquitto(db, workdir / "mosquitto", ingest_username=INGEST_USER,
                                 ingest_password=ingest_password)
            specs = [DeviceSpec(d.device_id, kinds[d.device_id], passwords.get(d.device_id)) for d in devices]
            db.commit()
        if PrivateMosquitto.available():
            self.broker = PrivateMosquitto(workdir, workdir / "mosquitto" / "passwd", workdir / "mosquitto" / "acl")
        else:
            self.broker = EmbeddedAmqtt()
        self.broker.start()
        config = IngestConfig(mqtt_url=self.broker.url(INGEST_USER, ingest_password), client_id="labshare-demo-ingest",
                              protocol=self.broker.protocol, shared=self.broker.shared_subscriptions)
        spool = DiskSpool(workdir / "spool" / "demo", int(self.settings.spool_max_mb) * 1024 * 1024)
        self.worker = IngestWorker(config, self.engine, store_from_url(self.settings.tsdb_url, self.engine), spool,
                                   self.metrics)
        self.worker.start()
        self.simulator = Simulator(self.broker.url(), specs, seed=1,
                                   protocol="5" if self.broker.protocol == 5 else "3.1.1")
        self.simulator.start()
        return f"MQTT broker: {self.broker.kind} on 127.0.0.1:{self.broker.port}; {len(specs)} simulated devices"

    def stop(self) -> None:
        for part in (self.simulator, self.worker, self.broker):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # shutting down: report and carry on stopping the rest
                    log.exception("stopping %r", part)
