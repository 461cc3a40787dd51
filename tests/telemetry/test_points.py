"""Points become line protocol that InfluxDB parses back to exactly the same names and values."""

from __future__ import annotations

import math
import secrets

import pytest

from telemetry.points import MEASUREMENT, Point, metric_point, point_line, to_line_protocol
from telemetry.tsdb import InfluxStore
from tests.services import series_values

BASE_NS = 1_764_000_000_123_456_789  # 2025-11-24, nanoseconds that a float epoch would round away


@pytest.mark.parametrize(
    ("point", "line"),
    [
        (Point("device_metrics", {"device_id": "dev-1"}, {"power_w": 812.5}, 1),
         "device_metrics,device_id=dev-1 power_w=812.5 1"),
        (Point("my metric,x", {}, {"v": 1.0}, 5), r"my\ metric\,x v=1.0 5"),
        (Point("m=eq", {"k": "v"}, {"f": 1.0}, 5), r"m=eq,k=v f=1.0 5"),  # '=' needs no escape in a measurement
        (Point("m", {"tag key": "a,b=c d"}, {"f": 1.0}, 5), r"m,tag\ key=a\,b\=c\ d f=1.0 5"),
        (Point("m", {"k,=": "v"}, {"f": 1.0}, 5), r"m,k\,\==v f=1.0 5"),
        (Point("m", {}, {"field key,=x": 2.5}, 5), r"m field\ key\,\=x=2.5 5"),
        (Point("m", {"b": "2", "a": "1"}, {"z": 1.0, "y": True}, 5), "m,a=1,b=2 y=true,z=1.0 5"),  # sorted keys
        (Point("m", {}, {"on": True, "off": False}, 5), "m off=false,on=true 5"),
        (Point("m", {}, {"sum": 0.1 + 0.2}, 5), "m sum=0.30000000000000004 5"),
        (Point("m", {}, {"big": 1e300, "tiny": 5e-324, "neg": -0.0}, 5), "m big=1e+300,neg=-0.0,tiny=5e-324 5"),
        (Point("m", {}, {"count": 7}, -5), "m count=7.0 -5"),  # ints are written as floats: one type per field
        (Point("m", {"k": "引擎"}, {"f": 1.0}, BASE_NS), f"m,k=引擎 f=1.0 {BASE_NS}"),
    ],
)
def test_line_protocol_escaping(point, line):
    assert point_line(point) == line
    assert to_line_protocol([point]) == (line + "\n").encode()


@pytest.mark.parametrize(
    "point",
    [
        Point("m", {}, {"f": math.nan}, 1),
        Point("m", {}, {"f": math.inf}, 1),
        Point("m", {}, {"f": -math.inf}, 1),
        Point("m", {}, {}, 1),  # no field
        Point("", {}, {"f": 1.0}, 1),
        Point("#comment", {}, {"f": 1.0}, 1),
        Point("m", {"k": ""}, {"f": 1.0}, 1),  # InfluxDB refuses an empty tag value
        Point("m", {"k": "a\nb"}, {"f": 1.0}, 1),
        Point("m", {"k": "ends\\"}, {"f": 1.0}, 1),  # would escape the separator after it
        Point("m", {}, {"f": "text"}, 1),
        Point("m", {}, {"f": 1.0}, 1.5),
        Point("m", {}, {"f": 1.0}, 2**63),
    ],
    ids=["nan", "inf", "-inf", "no-field", "empty-measurement", "comment", "empty-tag", "newline",
         "trailing-backslash", "string-field", "float-ts", "ts-overflow"],
)
def test_unwritable_points_raise_value_error(point):
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        to_line_protocol([Point("ok", {}, {"f": 1.0}, 1), point])


def test_a_metric_sample_becomes_a_device_metrics_point():
    point = metric_point("dev-1", BASE_NS, {"power_w": 812.5, "door_open": False})

    assert point == Point(MEASUREMENT, {"device_id": "dev-1"}, {"power_w": 812.5, "door_open": False}, BASE_NS)


AWKWARD_FLOATS = [0.1 + 0.2, 1 / 3, -2.5e-310, 1e300, 123456789.123456789, 2.0**53 + 2, -0.1, 5.0, 1e-7, 1e21]


def test_values_and_nanosecond_timestamps_round_trip_exactly_through_influxdb(influxdb):
    database = f"points_{secrets.token_hex(4)}"
    influxdb.create_database(database)
    points = [
        Point(MEASUREMENT, {"device_id": "dev, 1=x"}, {"value": value, "on": i % 2 == 0}, BASE_NS + i)
        for i, value in enumerate(AWKWARD_FLOATS)  # timestamps 1 ns apart: none may collide
    ]

    influxdb.write(database, to_line_protocol(points))

    rows = series_values(influxdb.query(database, f'SELECT * FROM "{MEASUREMENT}" ORDER BY time'))  # noqa: S608
    assert [(row["time"], row["device_id"], row["value"], row["on"]) for row in rows] == [
        (p.ts_ns, "dev, 1=x", p.fields["value"], p.fields["on"]) for p in points
    ]
    for row, value in zip(rows, AWKWARD_FLOATS, strict=True):  # bit for bit, not approximately
        assert float(row["value"]).hex() == value.hex()
    # and through the store's own reader
    store = InfluxStore(influxdb.url, database, mode="v1")
    assert store.query("dev, 1=x", BASE_NS, BASE_NS + len(points)) == points


def test_escaped_names_are_read_back_by_influxdb_as_written(influxdb):
    database = f"names_{secrets.token_hex(4)}"
    influxdb.create_database(database)
    names = ["plain", "with space", "with,comma", "with=equals", "mixed ,= all"]
    points = [Point(f"m {n}", {f"t {n}": f"v {n}"}, {f"f {n}": float(i)}, BASE_NS + i)
              for i, n in enumerate(names)]

    influxdb.write(database, to_line_protocol(points))

    for i, name in enumerate(names):
        rows = series_values(influxdb.query(database, f'SELECT * FROM "m {name}"'))  # noqa: S608 (test names)
        assert rows == [{"time": BASE_NS + i, f"t {name}": f"v {name}", f"f {name}": float(i)}]
