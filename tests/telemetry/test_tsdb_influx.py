"""InfluxStore against a real InfluxDB 1.6.7: v1 writes straight to /write, v2 writes through the test
gateway that plays InfluxDB 1.8's /api/v2/write; reads are InfluxQL on /query in both modes."""

from __future__ import annotations

import secrets
import time

import pytest

from telemetry.points import MEASUREMENT, Point, metric_point
from telemetry.tsdb import (
    InfluxStore,
    SqlStore,
    StoreMisconfigured,
    StoreRejected,
    StoreUnavailable,
    TimeSeriesStore,
    store_from_url,
)
from tests.services import InfluxDBServer, InfluxV2Gateway

T0 = 1_764_000_000_000_000_000


def new_database(influxdb) -> str:
    name = f"tsdb_{secrets.token_hex(4)}"
    influxdb.create_database(name)
    return name


@pytest.fixture(params=["v1", "v2"])
def mode(request) -> str:
    return request.param


@pytest.fixture
def make_store(mode, influxdb, influx_v2_gateway):
    stores = []

    def make(database: str, **kwargs) -> InfluxStore:
        url = influxdb.url if mode == "v1" else influx_v2_gateway.url
        store = InfluxStore(url, database, mode=mode, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store, influxdb) -> InfluxStore:
    return make_store(new_database(influxdb))


def test_written_points_are_read_back_in_time_order(store):
    points = [
        metric_point("dev-1", T0 + 2, {"power_w": 812.5, "door_open": True}),
        metric_point("dev-1", T0, {"power_w": 0.1 + 0.2}),
        metric_point("dev-1", T0 + 1, {"temp_c": -3.25}),
        metric_point("dev-2", T0 + 1, {"power_w": 99.0}),
    ]

    store.write(points)

    assert isinstance(store, TimeSeriesStore)
    assert store.query("dev-1", T0, T0 + 3) == [points[1], points[2], points[0]]
    assert store.query("dev-2", T0, T0 + 3) == [points[3]]


def test_the_time_range_is_half_open_and_fields_can_be_chosen(store):
    store.write([metric_point("dev-1", T0 + i, {"power_w": float(i), "temp_c": 20.0 + i}) for i in range(5)])

    assert [p.ts_ns for p in store.query("dev-1", T0 + 1, T0 + 3)] == [T0 + 1, T0 + 2]
    assert store.query("dev-1", T0 + 1, T0 + 2, fields=["temp_c"]) == [metric_point("dev-1", T0 + 1, {"temp_c": 21.0})]
    assert store.query("dev-1", T0, T0 + 5, fields=["no_such_field"]) == []
    assert store.query("dev-1", T0, T0 + 5, fields=[]) == []


def test_rewriting_the_same_points_changes_nothing_and_a_new_value_wins(store):
    points = [metric_point("dev-1", T0 + i, {"power_w": 1.5 * i}) for i in range(3)]

    store.write(points)
    store.write(points)  # a redelivered message

    assert store.query("dev-1", T0, T0 + 3) == points
    store.write([metric_point("dev-1", T0 + 1, {"power_w": 42.0})])
    assert [p.fields["power_w"] for p in store.query("dev-1", T0, T0 + 3)] == [0.0, 42.0, 3.0]


def test_an_unknown_database_is_a_misconfiguration_to_retry_not_a_poison_batch(make_store, mode, influx_v2_gateway):
    store = make_store(f"missing_{secrets.token_hex(4)}")

    with pytest.raises(StoreMisconfigured) as raised:
        store.write([metric_point("dev-1", T0, {"power_w": 1.0})])

    assert raised.value.status == 404
    assert isinstance(raised.value, StoreUnavailable)
    assert not isinstance(raised.value, StoreRejected)
    with pytest.raises(StoreMisconfigured, match="database not found"):
        store.query("dev-1", T0, T0 + 1)
    if mode == "v2":
        assert influx_v2_gateway.requests[-2]["path"] == "/api/v2/write"


def test_a_batch_influxdb_refuses_is_rejected_for_good(store):
    store.write([metric_point("dev-1", T0, {"door_open": True})])

    with pytest.raises(StoreRejected, match="field type conflict") as raised:  # a float where a bool is stored
        store.write([metric_point("dev-1", T0 + 1, {"door_open": 1.0})])

    assert raised.value.status == 400


def test_an_unknown_retention_policy_is_retried_later(make_store, influxdb):
    store = make_store(new_database(influxdb), retention_policy="nonexistent")

    with pytest.raises(StoreUnavailable) as raised:  # InfluxDB 1.x answers 500 here
        store.write([metric_point("dev-1", T0, {"power_w": 1.0})])

    assert raised.value.status == 500


HOSTILE_IDS = ["a' OR 1=1 --", "a\\' OR 1=1 --", "x'; DROP DATABASE x; --", 'a" OR "1"="1', "\\", "a\nb"]


@pytest.mark.parametrize("device_id", HOSTILE_IDS)
def test_a_hostile_device_id_matches_nothing_and_breaks_nothing(store, device_id):
    store.write([metric_point("a", T0, {"power_w": 1.0}), metric_point("dev-1", T0, {"power_w": 2.0})])

    assert store.query(device_id, 0, T0 * 2) == []
    assert len(store.query("dev-1", 0, T0 * 2)) == 1  # the database is still there


def test_device_ids_with_quotes_are_matched_exactly(store):
    points = [metric_point(device_id, T0, {"power_w": float(i)})
              for i, device_id in enumerate(["it's", 'say "hi"', "back\\slash", "a' OR 1=1 --"])]
    store.write(points)

    for point in points:
        assert store.query(point.tags["device_id"], T0, T0 + 1) == [point]


def test_v2_writes_go_to_the_v2_endpoint_with_bucket_token_and_nanoseconds(influxdb, influx_v2_gateway):
    database = new_database(influxdb)
    store = InfluxStore(influx_v2_gateway.url, database, "autogen", "ingest", "s3cret:x", mode="v2")
    try:
        store.write([metric_point("dev-1", T0, {"power_w": 1.0})])
    finally:
        store.close()

    request = [r for r in influx_v2_gateway.requests if r["path"] == "/api/v2/write"][-1]
    assert request["query"] == {"bucket": f"{database}/autogen", "org": "-", "precision": "ns"}
    assert request["authorization"] == "Token ingest:s3cret:x"
    # the gateway records the status after its reply has gone out, so the client can be back before it is set
    deadline = time.monotonic() + 5
    while "status" not in request and time.monotonic() < deadline:
        time.sleep(0.01)
    assert request["status"] == 204
    assert store.query("dev-1", T0, T0 + 1) == [metric_point("dev-1", T0, {"power_w": 1.0})]


def test_a_stopped_influxdb_is_unavailable_at_once_and_accepts_writes_again_after_a_restart():
    point = metric_point("dev-1", T0, {"power_w": 1.0})
    with InfluxDBServer() as server, InfluxV2Gateway(server) as gateway:
        server.create_database("down")
        stores = [InfluxStore(server.url, "down", mode="v1"), InfluxStore(gateway.url, "down", mode="v2")]
        server.stop()

        for store in stores:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as raised:
                store.write([point])
            assert time.monotonic() - started < 2.0
            assert not isinstance(raised.value, StoreMisconfigured)
            assert store.ping() is False
            with pytest.raises(StoreUnavailable):
                store.query("dev-1", T0, T0 + 1)
        gateway.stop()  # now the v2 client sees "connection refused" itself
        with pytest.raises(StoreUnavailable):
            stores[1].write([point])

        server.start()
        gateway.start()
        for store in stores:
            assert store.ping() is True
            store.write([point])
            assert store.query("dev-1", T0, T0 + 1) == [point]
            store.close()


def test_store_from_url_builds_the_configured_store(influxdb, influx_v2_gateway):
    database = new_database(influxdb)
    v2 = store_from_url(f"influxdb://ingest:p%40ss@127.0.0.1:{influx_v2_gateway.port}/{database}?rp=autogen&timeout=3")
    v1 = store_from_url(f"influxdb-v1://127.0.0.1:{influxdb.port}/{database}")

    assert (v2.mode, v2.database, v2.retention_policy, v2.username, v2.password, v2.timeout_s) == (
        "v2", database, "autogen", "ingest", "p@ss", 3.0)
    assert (v1.mode, v1.url, v1.retention_policy, v1.username) == ("v1", influxdb.url, None, None)
    v2.write([metric_point("dev-1", T0, {"power_w": 1.0})])
    assert v1.query("dev-1", T0, T0 + 1) == [metric_point("dev-1", T0, {"power_w": 1.0})]
    v2.close()
    assert isinstance(store_from_url("sql:", engine=object()), SqlStore)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("localhost:8086", "unknown scheme"),
        ("postgres://h/db", "unknown scheme"),
        ("sql:", "needs the relational database"),
        ("sql://x", "nothing after the colon"),
        ("influxdb://:8086/db", "host is missing"),
        ("influxdb://h:notaport/db", "bad port"),
        ("influxdb://h:8086", "one database name"),
        ("influxdb://h:8086/db/extra", "one database name"),
        ("influxdb://h/db?retention=x", "unknown option 'retention'"),
        ("influxdb://h/db?rp=", "rp is empty"),
        ("influxdb://h/db?timeout=soon", "timeout must be a number"),
        ("influxdb://h/db?timeout=0", "between 0 and 600"),
        ("influxdb://u:secret@h/db?x=1", r"u:\*\*\*@h"),
    ],
)
def test_store_from_url_refuses_bad_urls_with_a_clear_message(url, message):
    with pytest.raises(ValueError, match=message) as raised:
        store_from_url(url)

    assert "secret" not in str(raised.value)


def test_points_of_another_measurement_are_kept_apart(store):
    other = Point("other", {"device_id": "dev-1"}, {"power_w": 5.0}, T0)
    store.write([other, metric_point("dev-1", T0 + 1, {"power_w": 1.0})])

    assert [p.measurement for p in store.query("dev-1", T0, T0 + 2)] == [MEASUREMENT]


def test_urls_in_logs_and_errors_never_carry_the_password():
    from telemetry.tsdb import redacted_url

    assert redacted_url("mqtt://ingest:s3cret@127.0.0.1:1883") == "mqtt://ingest:***@127.0.0.1:1883"
    assert redacted_url("influxdb://127.0.0.1:8086/db") == "influxdb://127.0.0.1:8086/db"
