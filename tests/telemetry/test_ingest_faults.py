"""Faults mid-stream, every message's effect counted (design.md §5, delivery): the broker restarted, InfluxDB
stopped and restarted, `labshare ingest` killed with SIGKILL and restarted — afterwards every point is in
InfluxDB exactly once and every usage session is right.

Real components: a private Mosquitto with the shipped configuration (persistence keeps the queued messages
over its restart), a private InfluxDB 1.6.7 behind the v2 write gateway (TEST FAKE of InfluxDB 1.8's
/api/v2/write, tests/services.py), `labshare ingest` as a child process, and the relational database
(PostgreSQL when the run has it: the production pairing).
"""

from __future__ import annotations

import secrets
import threading
import time
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from core.db import make_engine
from tests.conftest import BACKENDS
from tests.factories import make_device
from tests.services import (
    InfluxDBServer,
    InfluxV2Gateway,
    IngestProcess,
    MosquittoServer,
    MqttPublisher,
    device_stream,
    expected_sessions,
    ingest_counts,
    migrated_database,
    prepare_ingest_session,
    series_values,
    stored_sessions,
    wait_for,
)

BACKEND = "postgresql" if "postgresql" in BACKENDS else "sqlite"
DEVICES = (("pw-1", "power"), ("pw-2", "power"), ("pw-3", "power"), ("st-1", "status"), ("ev-1", "events"))


@pytest.fixture
def engine(tmp_path):
    with migrated_database(BACKEND, tmp_path) as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def influx_counts(influx: InfluxDBServer, database: str) -> dict[str, int]:
    result = influx.query(database, 'SELECT count("power_w") FROM "device_metrics" GROUP BY "device_id"')
    return {row["device_id"]: row["count"] for row in series_values(result)}


def applied(engine, streams) -> int:
    counts = ingest_counts(engine)
    return sum(counts[k].get(d, 0) for d in streams for k in ("samples", "events", "observations"))


def test_broker_restart_influx_restart_and_sigkill_lose_and_double_nothing(engine, tmp_path):
    with Session(engine) as db:
        for device_id, source in DEVICES:
            extra = {"power_threshold_w": Decimal("1000"), "debounce_s": 5} if source == "power" else {}
            make_device(db, device_id=device_id, usage_source=source, heartbeat_timeout_s=86_400, **extra)
        db.commit()
    start_ms = time.time_ns() // 1_000_000 - 3_600_000
    streams = {d: device_stream(d, source, start_ms, 240, seed=7) for d, source in DEVICES}
    messages = [s[n] for n in range(240) for s in streams.values()]
    chunks = [messages[i * 240:(i + 1) * 240] for i in range(5)]  # five phases of 240 messages
    assert sum(map(len, chunks)) == len(messages)
    metrics_published = {d: sum(1 for t, _p, _i in s if t.endswith("/metrics")) for d, s in streams.items()}
    database = f"faults_{secrets.token_hex(4)}"

    with MosquittoServer() as broker, InfluxDBServer() as influx, InfluxV2Gateway(influx) as gateway:
        influx.create_database(database)
        prepare_ingest_session(broker, "labshare-ingest-1")
        env = {
            "LABSHARE_ENV": "test",
            "LABSHARE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "LABSHARE_MQTT_URL": broker.url,
            "LABSHARE_TSDB_URL": f"influxdb://{gateway.host}:{gateway.port}/{database}?timeout=3",
            "LABSHARE_DATA_DIR": str(tmp_path / "data"),
        }
        spool = tmp_path / "data" / "spool" / "labshare-ingest-1"
        process = IngestProcess(tmp_path / "ingest", env, "--batch-size", "50", "--batch-wait", "0.02")
        publisher = None
        try:
            process.start()
            publisher = MqttPublisher(broker)

            def publish(chunk, pause: float = 0.0):
                for topic, payload, _item in chunk:
                    publisher.publish(topic, payload)
                    if pause:
                        time.sleep(pause)

            def connects() -> int:
                return process.output_text().count("connected to mqtt://")

            wait_for(lambda: connects() >= 1, what="the ingest connected")

            # 1. the broker restarts while the ingest works through a backlog
            publish(chunks[0])
            broker.restart()
            # Mosquitto 2.0.11 does not restore shared subscriptions from its persistence file: what is
            # published before the ingest has subscribed again has no subscriber and is dropped by the
            # broker. So publish on once the ingest is back (the queued backlog itself survives).
            wait_for(lambda: connects() >= 2, what="the ingest reconnected")
            time.sleep(0.5)  # its SUBSCRIBE is sent on CONNACK; give the broker a moment to process it
            publish(chunks[1])
            wait_for(lambda: applied(engine, streams) >= 2 * 240, what="phases 1-2 applied after the broker restart")

            # 2. InfluxDB stops: points go to the spool; it comes back and the spool is replayed
            influx.stop()
            publish(chunks[2])
            wait_for(lambda: applied(engine, streams) >= 3 * 240, what="phase 3 applied while InfluxDB is down")
            assert any(spool.glob("*.seg")), "points waited in the spool while InfluxDB was down"
            influx.start()

            # 3. the ingest dies (SIGKILL) mid-stream and starts again
            paced = threading.Thread(target=publish, args=(chunks[3], 0.005), daemon=True)
            paced.start()
            wait_for(lambda: applied(engine, streams) >= 3 * 240 + 60, what="phase 4 under way")
            process.kill()
            killed_at = applied(engine, streams)
            paced.join(60)
            assert killed_at < 4 * 240, "the SIGKILL came after phase 4: nothing was tested"
            publish(chunks[4])
            process.start()

            wait_for(lambda: applied(engine, streams) == len(messages), timeout=60, what="every message applied")
            wait_for(lambda: influx_counts(influx, database) == {d: n for d, n in metrics_published.items() if n},
                     timeout=60, what="every point in InfluxDB")
            assert process.terminate() == 0, process.output_text()
        except AssertionError as failure:
            raise AssertionError(f"{failure}\napplied: {applied(engine, streams)} of {len(messages)}\n"
                                 f"ingest log:\n{process.output_text()[-4000:]}\n"
                                 f"broker log:\n{broker.log_text()[-2000:]}") from failure
        finally:
            if publisher is not None:
                publisher.close()
            process.close()

        # exactly once, and nothing left behind
        assert influx_counts(influx, database) == {d: n for d, n in metrics_published.items() if n}
        assert not any(spool.glob("*.seg"))
        assert not any((spool / "rejected").glob("*.seg"))
        for device_id, stream in streams.items():
            timestamps = {i.ts_ns for t, _p, i in stream if t.endswith("/metrics")}
            influxql = f"SELECT \"power_w\" FROM \"device_metrics\" WHERE \"device_id\" = '{device_id}'"  # noqa: S608
            result = influx.query(database, influxql)  # device ids are the test's own constants
            assert {row["time"] for row in series_values(result)} == timestamps

    counts = ingest_counts(engine)
    sessions = stored_sessions(engine)
    for device_id, stream in streams.items():
        channels = [t.rsplit("/", 1)[1] for t, _p, _i in stream]
        assert counts["samples"].get(device_id, 0) == channels.count("metrics")
        assert counts["events"].get(device_id, 0) == channels.count("events")
        assert counts["observations"].get(device_id, 0) == channels.count("status")
        assert sessions.get(device_id, []) == expected_sessions(engine, device_id, [i for _t, _p, i in stream])
    assert counts["dead_letters"] == {}
    assert all(sessions.get(d) for d, _s in DEVICES), "every device had usage sessions"
