"""The ingest worker against a real Mosquitto, a real database (SQLite and PostgreSQL) and real time-series
stores (design.md §5): effects of a stream, acknowledgement only after the effects are durable, the spool
filling up, SIGTERM drain of `labshare ingest`, its /metrics, dead letters, and retained status replays.

The worker opens its own sessions and commits, so each test gets a fresh database (not the savepoint `db`)
and a private broker (persistent sessions of one test must not take messages of another).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
import urllib.request
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.db import make_engine
from devices.models import DeadLetter, Device, LiveState, StateObservation
from telemetry.ingest import IngestConfig, IngestWorker
from telemetry.spool import DiskSpool
from telemetry.tsdb import InfluxStore, SqlStore
from tests.factories import make_device
from tests.services import (
    InfluxV2Gateway,
    IngestProcess,
    MosquittoServer,
    MqttPublisher,
    device_stream,
    expected_sessions,
    free_port,
    ingest_counts,
    migrated_database,
    prepare_ingest_session,
    series_values,
    stored_sessions,
    wait_for,
)

HEARTBEAT_S = 86_400  # no heartbeat timeout fires while a test runs: the streams are about an hour old


def t0_ms() -> int:
    return time.time_ns() // 1_000_000 - 3_600_000


@pytest.fixture
def engine(backend, tmp_path):
    with migrated_database(backend, tmp_path) as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    with migrated_database("sqlite", tmp_path) as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def broker():
    with MosquittoServer() as server:
        yield server


def register(engine, *devices: tuple[str, str], enabled: bool = True) -> None:
    """(device_id, usage source) pairs; power devices switch at 1000 W with a 5 s debounce."""
    with Session(engine) as db:
        for device_id, source in devices:
            extra = {"power_threshold_w": Decimal("1000"), "debounce_s": 5} if source == "power" else {}
            make_device(db, device_id=device_id, usage_source=source, heartbeat_timeout_s=HEARTBEAT_S,
                        enabled=enabled, **extra)
        db.commit()


def interleave(*streams):
    """Round-robin over the streams, each stream's own order kept."""
    out = []
    for n in range(max(len(s) for s in streams)):
        out += [s[n] for s in streams if n < len(s)]
    return out


def sample(metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


@contextlib.contextmanager
def running_worker(engine, broker, store, spool_dir, client_id: str, *, fresh: bool = True,
                   spool_bytes: int = 100 * 1024 * 1024, **config):
    """An in-process worker; `fresh`: create its session (subscribed) first, so nothing published from now
    on can be missed while it connects."""
    if fresh:
        prepare_ingest_session(broker, client_id, shared=config.get("shared", True))
    config.setdefault("batch_wait_s", 0.05)
    worker = IngestWorker(IngestConfig(mqtt_url=broker.url, client_id=client_id, **config), engine, store,
                          DiskSpool(spool_dir, spool_bytes))
    worker.start()
    try:
        assert worker.wait_connected(10), "the worker did not connect"
        yield worker
    finally:
        if not worker._stop.is_set():
            worker.stop()
        if worker._thread is not None:
            worker._thread.join(60)


def publish_all(broker, messages, retain: bool = False) -> None:
    with MqttPublisher(broker) as publisher:
        for topic, payload, _item in messages:
            publisher.publish(topic, payload, retain=retain)


def check_exactly_once(engine, streams: dict[str, list], sql_points: bool = True) -> None:
    """Every message's effect once: one sample/point per metrics message, one event per event, one
    observation per status, and the sessions `usage.derive` gives for the whole stream."""
    counts = ingest_counts(engine)
    sessions = stored_sessions(engine)
    for device_id, stream in streams.items():
        channels = [topic.rsplit("/", 1)[1] for topic, _p, _i in stream]
        assert counts["samples"].get(device_id, 0) == channels.count("metrics"), device_id
        assert counts["events"].get(device_id, 0) == channels.count("events"), device_id
        assert counts["observations"].get(device_id, 0) == channels.count("status"), device_id
        if sql_points:  # the SqlStore's power_w points; InfluxDB is counted by the test itself
            assert counts["points"].get(device_id, 0) == channels.count("metrics"), device_id
        assert sessions.get(device_id, []) == expected_sessions(engine, device_id, [i for _t, _p, i in stream]), \
            device_id


def device_states(engine) -> list[tuple]:
    with Session(engine) as db:
        return sorted((d.device_id, d.state, d.state_ts_ns, d.last_seen_ns) for d in db.scalars(select(Device)))


def rows_for(engine, streams) -> int:
    counts = ingest_counts(engine)
    return sum(counts[k].get(d, 0) for d in streams for k in ("samples", "events", "observations"))


# --- the happy path ------------------------------------------------------------------------------------------


def test_a_mixed_stream_becomes_state_points_and_sessions(engine, broker, tmp_path):
    register(engine, ("p-1", "power"), ("s-1", "status"), ("e-1", "events"))
    start = t0_ms()
    streams = {d: device_stream(d, source, start, 150) for d, source in
               (("p-1", "power"), ("s-1", "status"), ("e-1", "events"))}
    messages = interleave(*streams.values())
    with running_worker(engine, broker, SqlStore(engine), tmp_path / "spool", "ingest-happy") as worker:
        publish_all(broker, messages)
        wait_for(lambda: sample(worker.metrics, "labshare_ingest_acknowledged_total") >= len(messages),
                 what="every message acknowledged")
        assert sample(worker.metrics, "labshare_ingest_messages_total") == len(messages)
        assert sample(worker.metrics, "labshare_ingest_points_written_total") == sum(
            1 for t, _p, _i in messages if t.endswith("/metrics"))

    check_exactly_once(engine, streams)
    assert ingest_counts(engine)["dead_letters"] == {}
    assert all(stored_sessions(engine).get(d) for d in streams), "every device had a session"
    with Session(engine) as db:
        devices = {d.device_id: d for d in db.scalars(select(Device))}
    last_status = json.loads([p for t, p, _i in streams["s-1"] if t.endswith("/status")][-1])
    assert devices["s-1"].state == LiveState(last_status["state"])
    assert devices["s-1"].state_ts_ns == last_status["ts"] * 1_000_000
    for device_id, stream in streams.items():
        assert devices[device_id].last_seen_ns == max(i.ts_ns for _t, _p, i in stream)
    # the points are what was published, exactly (SqlStore keeps floats bit for bit)
    published = {i.ts_ns: json.loads(p)["values"] for t, p, i in streams["p-1"]}
    stored = SqlStore(engine).query("p-1", min(published), max(published) + 1)
    assert {p.ts_ns: dict(p.fields) for p in stored} == published


def test_late_messages_beyond_the_window_are_settled_once_the_worker_keeps_up(engine, broker, tmp_path):
    """Messages older than a device's in-memory window (a worker that fell behind another) are deferred while
    batches come full and re-derived once a batch is not: the sessions end as the whole stream's."""
    register(engine, ("p-late", "power"))
    stream = device_stream("p-late", "power", t0_ms(), 200)
    late = stream[20:40]  # well behind the rest: older than the window of 4-8 items
    early = stream[:20] + stream[40:]
    with running_worker(engine, broker, SqlStore(engine), tmp_path / "spool", "ingest-late", batch_size=10,
                        batch_wait_s=0.2) as worker:
        publish_all(broker, early)
        wait_for(lambda: sample(worker.metrics, "labshare_ingest_acknowledged_total") >= len(early),
                 what="the stream acknowledged")
        publish_all(broker, late)
        wait_for(lambda: sample(worker.metrics, "labshare_ingest_sessions_settled_total") >= 1,
                 what="the late messages' device re-derived")
        wait_for(lambda: sample(worker.metrics, "labshare_ingest_acknowledged_total") >= len(stream),
                 what="every message acknowledged")
        assert sample(worker.metrics, "labshare_ingest_deferred_devices") == 0
    check_exactly_once(engine, {"p-late": stream})


# --- acknowledgement only after the effects are durable ------------------------------------------------------


@contextlib.contextmanager
def write_lock_held(engine):
    """Block the worker's transaction: SQLite's write lock (BEGIN IMMEDIATE), or on PostgreSQL every device
    row (the worker locks its devices' rows FOR UPDATE first)."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.execution_options(sqlite_begin="IMMEDIATE")  # core.db's BEGIN takes the write lock
            connection.exec_driver_sql("SELECT 1")
        else:
            connection.execute(text("SELECT id FROM device FOR UPDATE"))
        try:
            yield
        finally:
            connection.rollback()


def test_nothing_is_acknowledged_before_its_batch_is_committed(engine, broker, tmp_path):
    register(engine, ("p-1", "power"), ("s-1", "status"))
    start = t0_ms()
    streams = {"p-1": device_stream("p-1", "power", start, 120), "s-1": device_stream("s-1", "status", start, 80)}
    messages = interleave(*streams.values())
    store = SqlStore(engine)
    batch = 50
    with running_worker(engine, broker, store, tmp_path / "spool", "ingest-lock", batch_size=batch) as first:
        with write_lock_held(engine):
            publish_all(broker, messages)
            # the broker hands over one receive window (the batch size) and then waits for acknowledgements
            wait_for(lambda: sample(first.metrics, "labshare_ingest_messages_total") >= batch,
                     what="the first window received")
            time.sleep(0.5)  # a chance to acknowledge early, were the worker to do so
            assert sample(first.metrics, "labshare_ingest_acknowledged_total") == 0
            assert sample(first.metrics, "labshare_ingest_messages_total") == batch
            assert rows_for(engine, streams) == 0
            first.kill()  # dies with its batch in hand
        first._thread.join(60)  # the dead worker's thread may still commit its batch now; that is harmless

    with running_worker(engine, broker, store, tmp_path / "spool", "ingest-lock", fresh=False,
                        batch_size=batch) as second:
        wait_for(lambda: rows_for(engine, streams) == len(messages), what="every message applied")
        wait_for(lambda: sample(second.metrics, "labshare_ingest_acknowledged_total") == len(messages),
                 what="the redelivered window and the backlog acknowledged")
        # the first worker's unacknowledged window came back: the second received everything
        assert sample(second.metrics, "labshare_ingest_messages_total") == len(messages)
    check_exactly_once(engine, streams)


def test_a_full_spool_stops_acknowledgements_and_the_broker_keeps_the_backlog(sqlite_engine, broker, influxdb,
                                                                              tmp_path):
    engine = sqlite_engine
    database = f"ingest_{secrets.token_hex(4)}"
    influxdb.create_database(database)
    register(engine, ("p-1", "power"), ("p-2", "power"))
    start = t0_ms()
    streams = {d: device_stream(d, "power", start, 150) for d in ("p-1", "p-2")}
    messages = interleave(*streams.values())
    gateway = InfluxV2Gateway(influxdb, port=free_port())  # not started: InfluxDB unreachable
    store = InfluxStore(gateway.url, database, mode="v2", timeout_s=2)
    batch = 40
    try:
        with running_worker(engine, broker, store, tmp_path / "spool", "ingest-spool", spool_bytes=1,
                            batch_size=batch, retry_max_s=1.0) as worker:
            publish_all(broker, messages)
            wait_for(lambda: sample(worker.metrics, "labshare_ingest_retries_total", cause="spool_full") >= 3,
                     what="the worker to find the spool full a few times")
            assert sample(worker.metrics, "labshare_ingest_acknowledged_total") == 0
            # one receive window in the worker, the rest waits in the broker
            assert sample(worker.metrics, "labshare_ingest_messages_total") == batch
            assert worker.spool.pending_count == 0
            gateway.start()
            wait_for(lambda: sample(worker.metrics, "labshare_ingest_acknowledged_total") == len(messages),
                     what="everything acknowledged once InfluxDB is back")
            assert sample(worker.metrics, "labshare_ingest_messages_total") == len(messages)
        rows = series_values(influxdb.query(database, 'SELECT count("power_w") FROM "device_metrics" '
                                                      'GROUP BY "device_id"'))
        assert {r["device_id"]: r["count"] for r in rows} == {d: len(s) for d, s in streams.items()}
        check_exactly_once(engine, streams, sql_points=False)
    finally:
        store.close()
        gateway.stop()
        influxdb.drop_database(database)


# --- labshare ingest: SIGTERM drain and /metrics ------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    values = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def try_scrape(port: int) -> dict[str, float]:
    try:
        return scrape(port)
    except OSError:
        return {}


def ingest_process(tmp_path, engine, broker, *args: str) -> IngestProcess:
    env = {
        "LABSHARE_ENV": "test",
        "LABSHARE_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "LABSHARE_MQTT_URL": broker.url,
        "LABSHARE_TSDB_URL": "sql:",
        "LABSHARE_DATA_DIR": str(tmp_path / "data"),
        "LABSHARE_LOG_LEVEL": "INFO",
    }
    return IngestProcess(tmp_path / "ingest", env, *args)


def test_sigterm_drains_and_a_restart_finishes_the_stream_exactly_once(sqlite_engine, broker, tmp_path):
    engine = sqlite_engine
    register(engine, ("p-1", "power"), ("s-1", "status"), ("e-1", "events"))
    start = t0_ms()
    streams = {d: device_stream(d, source, start, 200) for d, source in
               (("p-1", "power"), ("s-1", "status"), ("e-1", "events"))}
    messages = interleave(*streams.values())
    prepare_ingest_session(broker, "labshare-ingest-1")  # the CLI's client id for worker 1
    port = free_port()
    process = ingest_process(tmp_path, engine, broker, "--batch-size", "25", "--batch-wait", "0.02",
                             "--metrics-port", str(port))
    publisher_done = threading.Event()

    def publish():  # paced, so that the SIGTERM falls mid-stream
        try:
            with MqttPublisher(broker) as publisher:
                for topic, payload, _item in messages:
                    publisher.publish(topic, payload)
                    time.sleep(0.005)
        finally:
            publisher_done.set()

    publisher = threading.Thread(target=publish, daemon=True)
    try:
        process.start()
        wait_for(lambda: try_scrape(port).get("labshare_ingest_connected") == 1.0, what="the worker connected")
        publisher.start()
        wait_for(lambda: rows_for(engine, streams) >= len(messages) // 4, what="a quarter of the stream applied")
        assert process.terminate() == 0, process.output_text()  # SIGTERM mid-stream
        assert "draining" in process.output_text()
        assert "stopped" in process.output_text()
        applied_by_first = rows_for(engine, streams)
        assert applied_by_first < len(messages), "the SIGTERM came after the stream: nothing was tested"
        publisher.join(120)
        assert publisher_done.is_set()

        process.start()
        wait_for(lambda: rows_for(engine, streams) == len(messages), what="the rest of the stream applied")
        metrics = wait_for(lambda: (m := try_scrape(port)).get("labshare_ingest_acknowledged_total", 0)
                           >= len(messages) - applied_by_first and m, what="the second run's acknowledgements")
        # the drain acknowledged everything the first run had applied: the broker sent only the rest again
        assert metrics["labshare_ingest_messages_total"] == len(messages) - applied_by_first
        assert process.terminate() == 0, process.output_text()
    finally:
        process.close()
        publisher.join(60)
    check_exactly_once(engine, streams)


def test_labshare_ingest_serves_its_counters_on_metrics_port(sqlite_engine, broker, tmp_path):
    engine = sqlite_engine
    register(engine, ("p-1", "power"))
    prepare_ingest_session(broker, "labshare-ingest-1")
    port = free_port()
    process = ingest_process(tmp_path, engine, broker, "--metrics-port", str(port))
    good = device_stream("p-1", "power", t0_ms(), 20)
    bad = [("labshare/v1/p-1/metrics", b"{not json", None), ("labshare/v1/ghost/status", b'{"state":"idle"}', None)]
    try:
        process.start()
        wait_for(lambda: try_scrape(port).get("labshare_ingest_connected") == 1.0, what="the worker connected")
        publish_all(broker, good + bad)
        metrics = wait_for(lambda: (m := try_scrape(port)).get("labshare_ingest_acknowledged_total") == 22 and m,
                           what="22 messages acknowledged")
        assert metrics["labshare_ingest_messages_total"] == 22
        assert metrics["labshare_ingest_points_written_total"] == 20
        assert metrics['labshare_ingest_dead_letters_total{reason="bad_json"}'] == 1
        assert metrics['labshare_ingest_dead_letters_total{reason="unknown_device"}'] == 1
        assert metrics["labshare_ingest_spool_bytes"] == 0
        assert "labshare_ingest_batch_seconds_count" in metrics
        assert process.terminate() == 0, process.output_text()
    finally:
        process.close()


# --- dead letters -----------------------------------------------------------------------------------------------


def test_dead_letters_are_stored_and_counted_by_reason(engine, broker, tmp_path):
    register(engine, ("p-1", "power"), ("s-1", "status"))
    bad = [
        ("labshare/v1/p-1/metrics", b'{"values": {"power_w": NaN}}', "bad_value"),
        ("labshare/v1/p-1/metrics", b'{"values": {"power_w": Infinity}}', "bad_value"),
        ("labshare/v1/p-1/metrics", b'{"values": {"power_w": "high"}}', "bad_value"),
        ("labshare/v1/p-1/metrics", b"{oops", "bad_json"),
        ("labshare/v1/p-1/metrics", b"\xff\xfe{}", "bad_encoding"),
        ("labshare/v1/p-1/metrics", b"[1, 2]", "not_an_object"),
        ("labshare/v1/p-1/metrics", b'{"values": {"Power": 1}}', "bad_field_name"),
        ("labshare/v1/p-1/metrics", json.dumps({"batch": [{"values": {"a": 1}}] * 1001}).encode(),
         "batch_too_large"),
        ("labshare/v1/p-1/metrics", b'{"values": {"a": 1}, "pad": "' + b"x" * 70_000 + b'"}', "payload_too_large"),
        ("labshare/v1/s-1/status", b'{"state": "sleeping"}', "bad_state"),
        ("labshare/v1/s-1/status", b'{"state": "idle", "ts": "yesterday"}', "bad_timestamp"),
        ("labshare/v1/s-1/status", b'{"state": "idle", "ts": 5}', "bad_timestamp"),
        ("labshare/v1/s-1/events", b'{"type": "run_started"}', "bad_event"),
        ("labshare/v1/s-1/telemetry", b"{}", "unknown_channel"),
        ("labshare/v1/s-1/status/extra", b"{}", "bad_topic"),
        ("labshare/v1/bad.id/status", b"{}", "bad_topic"),
        ("labshare/v1/ghost/status", b'{"state": "idle"}', "unknown_device"),
    ]
    with running_worker(engine, broker, SqlStore(engine), tmp_path / "spool", "ingest-dead") as worker:
        publish_all(broker, [(t, p, None) for t, p, _r in bad])
        wait_for(lambda: sample(worker.metrics, "labshare_ingest_acknowledged_total") == len(bad),
                 what="every bad message acknowledged (handled)")
        expected: dict[str, int] = {}
        for _t, _p, reason in bad:
            expected[reason] = expected.get(reason, 0) + 1
        for reason, count in expected.items():
            assert sample(worker.metrics, "labshare_ingest_dead_letters_total", reason=reason) == count, reason
        assert worker._thread.is_alive()

    counts = ingest_counts(engine)
    assert counts["dead_letters"] == expected
    assert counts["samples"] == counts["events"] == counts["observations"] == counts["points"] == {}
    with Session(engine) as db:
        letters = db.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
    assert sorted((d.topic, d.reason, d.payload_size) for d in letters) == sorted((t, r, len(p)) for t, p, r in bad)
    for letter in letters:
        assert letter.received_at is not None
        assert len(letter.payload_head) <= 800
    nan = next(d for d in letters if d.payload_head.startswith('{"values": {"power_w": NaN'))
    assert nan.device_id == "p-1"
    assert next(d for d in letters if d.reason == "bad_encoding").payload_head.startswith("\\xff\\xfe")


def test_messages_of_disabled_and_unknown_devices_are_dead_lettered(engine, broker, tmp_path):
    register(engine, ("p-1", "power"))
    register(engine, ("off-1", "power"), enabled=False)
    start = t0_ms()
    disabled = [*device_stream("off-1", "power", start, 10),
                ("labshare/v1/off-1/status", json.dumps({"ts": start, "state": "running"}).encode(), None),
                ("labshare/v1/off-1/events", json.dumps({"id": "x", "ts": start, "type": "run_started"}).encode(),
                 None)]
    unknown = [*device_stream("ghost-1", "power", start, 10),
               ("labshare/v1/ghost-1/status", json.dumps({"ts": start, "state": "running"}).encode(), None)]
    good = device_stream("p-1", "power", start, 10)
    messages = interleave(disabled, unknown, good)
    with running_worker(engine, broker, SqlStore(engine), tmp_path / "spool", "ingest-disabled") as worker:
        publish_all(broker, messages)
        wait_for(lambda: sample(worker.metrics, "labshare_ingest_acknowledged_total") == len(messages),
                 what="every message handled")
        assert sample(worker.metrics, "labshare_ingest_dead_letters_total", reason="device_disabled") == len(disabled)
        assert sample(worker.metrics, "labshare_ingest_dead_letters_total", reason="unknown_device") == len(unknown)
        assert sample(worker.metrics, "labshare_ingest_points_written_total") == len(good)

    counts = ingest_counts(engine)
    assert counts["dead_letters"] == {"device_disabled": len(disabled), "unknown_device": len(unknown)}
    assert counts["samples"] == counts["points"] == {"p-1": len(good)}
    assert counts["events"] == counts["observations"] == {}
    with Session(engine) as db:
        off = db.scalars(select(Device).where(Device.device_id == "off-1")).one()
        assert (off.state, off.last_seen_ns, off.usage_tail) == (LiveState.OFFLINE, None, None)
        letters = db.scalars(select(DeadLetter)).all()
    assert {d.device_id for d in letters} == {"off-1", "ghost-1"}


# --- retained status ---------------------------------------------------------------------------------------------


def test_a_retained_status_replayed_on_resubscribe_adds_no_observation(engine, broker, tmp_path):
    register(engine, ("s-1", "status"), ("s-2", "status"))
    stamped = t0_ms()
    retained = [
        ("labshare/v1/s-1/status", b'{"state": "running"}', None),  # no ts: stamped at receipt
        ("labshare/v1/s-2/status", json.dumps({"ts": stamped, "state": "maintenance"}).encode(), None),
    ]
    store = SqlStore(engine)

    def observations():
        with Session(engine) as db:
            rows = db.execute(select(Device.device_id, StateObservation.ts_ns, StateObservation.state)
                              .join(Device, Device.id == StateObservation.device_pk)).all()
            return sorted((device_id, ts, LiveState(state).value) for device_id, ts, state in rows)

    with running_worker(engine, broker, store, tmp_path / "spool", "ingest-retain-a", shared=False) as first:
        publish_all(broker, retained, retain=True)
        wait_for(lambda: sample(first.metrics, "labshare_ingest_acknowledged_total") == 2, what="both applied")
    before = observations()
    assert [(d, s) for d, _ts, s in before] == [("s-1", "running"), ("s-2", "maintenance")]
    states_before = device_states(engine)

    # new sessions subscribe afresh and the broker replays both retained statuses to each
    for client_id in ("ingest-retain-b", "ingest-retain-c"):
        with running_worker(engine, broker, store, tmp_path / "spool", client_id, fresh=False,
                            shared=False) as again:
            wait_for(lambda w=again: sample(w.metrics, "labshare_ingest_acknowledged_total") == 2,
                     what="the retained statuses replayed and handled")

    assert observations() == before
    assert device_states(engine) == states_before
    assert ingest_counts(engine)["dead_letters"] == {}
