"""Scale-out (design.md §5): two workers on one shared subscription give the same device states and usage
sessions as one worker, although the broker spreads each device's messages over both.

The same streams go to two private brokers: broker A feeds two workers sharing `$share/labshare-ingest/…`
into database 1, broker B one worker into database 2. Real Mosquitto (MQTT 5), real databases.
"""

from __future__ import annotations

import contextlib
import json
import time
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import make_engine
from devices.models import Device
from devices.usage import Item, Kind
from telemetry.ingest import IngestConfig, IngestWorker
from telemetry.spool import DiskSpool
from telemetry.tsdb import SqlStore
from tests.factories import make_device
from tests.services import (
    MosquittoServer,
    MqttPublisher,
    device_stream,
    expected_sessions,
    ingest_counts,
    migrated_database,
    prepare_ingest_session,
    stored_sessions,
    wait_for,
)

DEVICES = (("pw-1", "power"), ("pw-2", "power"), ("st-1", "status"), ("ev-1", "events"))
COUNT = 250  # messages per device


@contextlib.contextmanager
def database(backend, directory):
    with migrated_database(backend, directory) as url:
        engine = make_engine(url)
        try:
            with Session(engine) as db:
                for device_id, source in DEVICES:
                    extra = {"power_threshold_w": Decimal("1000"), "debounce_s": 5} if source == "power" else {}
                    make_device(db, device_id=device_id, usage_source=source, heartbeat_timeout_s=86_400, **extra)
                db.commit()
            yield engine
        finally:
            engine.dispose()


@contextlib.contextmanager
def workers(url: str, broker, client_ids, spool_dir):
    """One engine per worker, as separate processes would have."""
    started = []
    try:
        for client_id in client_ids:
            prepare_ingest_session(broker, client_id)
            engine = make_engine(url)
            worker = IngestWorker(IngestConfig(mqtt_url=broker.url, client_id=client_id, batch_size=20,
                                               batch_wait_s=0.01), engine, SqlStore(engine),
                                  DiskSpool(spool_dir / client_id, 100 * 1024 * 1024))
            started.append(worker)
            worker.start()
            assert worker.wait_connected(10)
        yield started
    finally:
        for worker in started:
            worker.stop()
            worker.engine.dispose()


def with_status_changes(device_id: str, stream: list, start_ms: int) -> list:
    """Mix status messages (half a second off the stream's own timestamps) into a power device's stream."""
    out = list(stream)
    for n in range(5, COUNT, 37):
        state = ("idle", "running", "maintenance", "fault")[n % 4]
        ts_ms = start_ms + n * 1000 + 500
        out.insert(n, (f"labshare/v1/{device_id}/status", json.dumps({"ts": ts_ms, "state": state}).encode(),
                       Item(ts_ms * 1_000_000, Kind.STATUS, state)))
    return out


def states(engine) -> list[tuple]:
    with Session(engine) as db:
        return sorted((d.device_id, d.state.value, d.state_ts_ns, str(d.state_cause), d.last_seen_ns)
                      for d in db.scalars(select(Device)))


def applied(engine) -> int:
    counts = ingest_counts(engine)
    return sum(sum(counts[k].values()) for k in ("samples", "events", "observations"))


def test_two_workers_on_a_shared_subscription_match_one_worker(backend, tmp_path):
    start_ms = time.time_ns() // 1_000_000 - 3_600_000
    streams = {}
    for device_id, source in DEVICES:
        stream = device_stream(device_id, source, start_ms, COUNT, seed=3)
        streams[device_id] = with_status_changes(device_id, stream, start_ms) if source == "power" else stream
    messages = [s[n] for n in range(max(map(len, streams.values()))) for s in streams.values() if n < len(s)]

    with (MosquittoServer() as broker_a, MosquittoServer() as broker_b,
          database(backend, tmp_path / "pair") as engine_two, database(backend, tmp_path / "single") as engine_one):
        url_two = engine_two.url.render_as_string(hide_password=False)
        url_one = engine_one.url.render_as_string(hide_password=False)
        with (workers(url_two, broker_a, ["ingest-a1", "ingest-a2"], tmp_path / "spool") as pair,
              workers(url_one, broker_b, ["ingest-b1"], tmp_path / "spool") as single,
              MqttPublisher(broker_a) as publisher_a, MqttPublisher(broker_b) as publisher_b):
            for topic, payload, _item in messages:
                publisher_a.publish(topic, payload)
                publisher_b.publish(topic, payload)
            for engine in (engine_two, engine_one):
                wait_for(lambda e=engine: applied(e) == len(messages), timeout=60, what="every message applied")
            received = [w.metrics.registry.get_sample_value("labshare_ingest_messages_total") for w in pair]
            assert all(n > 0 for n in received), f"both workers of the shared subscription received: {received}"
            assert sum(received) >= len(messages)
            assert single[0].metrics.registry.get_sample_value("labshare_ingest_messages_total") == len(messages)

        assert states(engine_two) == states(engine_one)
        assert stored_sessions(engine_two) == stored_sessions(engine_one)
        # and both are what the whole streams mean
        for device_id, stream in streams.items():
            assert stored_sessions(engine_one).get(device_id, []) == expected_sessions(
                engine_one, device_id, [i for _t, _p, i in stream]), device_id
        assert any(stored_sessions(engine_one).values())
        counts_two, counts_one = ingest_counts(engine_two), ingest_counts(engine_one)
        assert counts_two == counts_one
        assert counts_one["dead_letters"] == {}

