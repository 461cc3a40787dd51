"""SqlStore, the demo's time-series store: the telemetry_point table on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import secrets

import pytest
from sqlalchemy import func, select

from telemetry.models import TelemetryPoint
from telemetry.points import Point, metric_point
from telemetry.tsdb import SqlStore, StoreRejected, TimeSeriesStore, store_from_url

T0 = 1_764_000_000_123_456_789


@pytest.fixture
def store(connection) -> SqlStore:
    return SqlStore(connection)  # writes go to savepoints of the test's transaction, rolled back at the end


def row_count(connection) -> int:
    return connection.scalar(select(func.count()).select_from(TelemetryPoint))


def test_written_points_are_read_back_in_time_order_with_exact_values(store):
    points = [
        metric_point("dev-1", T0 + 2, {"power_w": 812.5, "door_open": True}),
        metric_point("dev-1", T0, {"power_w": 0.1 + 0.2, "door_open": False}),
        metric_point("dev-1", T0 + 1, {"temp_c": -2.5e-310, "big": 1e300}),
        metric_point("dev-2", T0 + 1, {"power_w": 99.0}),
    ]

    store.write(points)

    assert isinstance(store, TimeSeriesStore)
    assert store.query("dev-1", T0, T0 + 3) == [points[1], points[2], points[0]]
    assert store.query("dev-2", T0, T0 + 3) == [points[3]]
    back = store.query("dev-1", T0, T0 + 1)[0]
    assert back.fields["power_w"].hex() == (0.1 + 0.2).hex()
    assert back.fields["door_open"] is False


def test_the_time_range_is_half_open_and_fields_can_be_chosen(store):
    store.write([metric_point("dev-1", T0 + i, {"power_w": float(i), "temp_c": 20.0 + i}) for i in range(5)])

    assert [p.ts_ns for p in store.query("dev-1", T0 + 1, T0 + 3)] == [T0 + 1, T0 + 2]
    assert store.query("dev-1", T0 + 1, T0 + 2, fields=["temp_c"]) == [metric_point("dev-1", T0 + 1, {"temp_c": 21.0})]
    assert store.query("dev-1", T0, T0 + 5, fields=["no_such_field"]) == []
    assert store.query("dev-1", T0, T0 + 5, fields=[]) == []


def test_rewriting_the_same_points_changes_nothing_and_a_new_value_wins(store, connection):
    points = [metric_point("dev-1", T0 + i, {"power_w": 1.5 * i, "on": True}) for i in range(3)]

    store.write(points)
    store.write(points)  # a redelivered message or a replayed spool batch

    assert store.query("dev-1", T0, T0 + 3) == points
    assert row_count(connection) == 6
    store.write([metric_point("dev-1", T0 + 1, {"power_w": 42.0}), metric_point("dev-1", T0 + 1, {"power_w": 43.0})])
    assert [p.fields["power_w"] for p in store.query("dev-1", T0, T0 + 3)] == [0.0, 43.0, 3.0]
    assert row_count(connection) == 6


def test_large_batches_are_written_in_bulk(store, connection):
    points = [metric_point("dev-1", T0 + i, {"a": float(i), "b": i % 2 == 0, "c": -float(i)}) for i in range(1500)]

    store.write(points)

    assert row_count(connection) == 4500
    assert store.query("dev-1", T0, T0 + 1500) == points


def test_points_the_table_cannot_hold_are_rejected_and_nothing_is_written(store, connection):
    good = metric_point("dev-1", T0, {"power_w": 1.0})

    with pytest.raises(StoreRejected, match="device_metrics"):
        store.write([good, Point("other", {"device_id": "dev-1"}, {"f": 1.0}, T0)])
    with pytest.raises(StoreRejected, match="tagged"):
        store.write([good, Point("device_metrics", {"device_id": "dev-1", "site": "x"}, {"f": 1.0}, T0)])
    with pytest.raises(ValueError, match="not finite"):
        store.write([good, metric_point("dev-1", T0, {"power_w": math.nan})])

    assert row_count(connection) == 0


def test_a_hostile_device_id_matches_nothing(store):
    store.write([metric_point("a", T0, {"power_w": 1.0})])

    assert store.query("a' OR 1=1 --", 0, T0 * 2) == []
    assert store.query("a", 0, T0 * 2) == [metric_point("a", T0, {"power_w": 1.0})]


def test_with_an_engine_each_write_is_committed(engine):
    device_id = f"dev-{secrets.token_hex(4)}"  # the session database is shared: a name of its own
    store = store_from_url("sql:", engine=engine)

    store.write([metric_point(device_id, T0, {"power_w": 1.0})])

    assert store.ping() is True
    assert SqlStore(engine).query(device_id, T0, T0 + 1) == [metric_point(device_id, T0, {"power_w": 1.0})]
    with engine.begin() as connection:  # leave the shared database as it was
        connection.execute(TelemetryPoint.__table__.delete().where(TelemetryPoint.device_id == device_id))
