"""Time-series points and their InfluxDB line-protocol form (a pure converter: no I/O).

One MQTT metrics sample becomes one `Point`: measurement "device_metrics", tag "device_id", one field per
metric value. `to_line_protocol` writes what InfluxDB 1.x, 2.x and 3.x parse back to exactly the same
values: floats through `repr()` (the shortest text that round-trips), booleans as `true`/`false`, and
integer nanosecond timestamps. Values the line protocol cannot carry — NaN and infinities, empty names,
line breaks, a name ending in a backslash (it would escape the separator after it) — raise ValueError
instead of producing a line that InfluxDB would reject or read differently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MEASUREMENT = "device_metrics"
DEVICE_TAG = "device_id"

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Backslash-escapes per element (InfluxDB line protocol reference, "Special characters").
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})  # tag keys, tag values, field keys


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, float | bool]
    ts_ns: int


def metric_point(device_id: str, ts_ns: int, values: Mapping[str, float | bool]) -> Point:
    """The point of one metrics sample of one device."""
    return Point(MEASUREMENT, {DEVICE_TAG: device_id}, dict(values), ts_ns)


def _checked_text(text: str, what: str) -> str:
    if not isinstance(text, str) or not text:
        raise ValueError(f"{what} must be a non-empty string, got {text!r}")
    if "\n" in text or "\r" in text:
        raise ValueError(f"{what} {text!r} contains a line break, which line protocol cannot carry")
    if text.endswith("\\"):
        raise ValueError(f"{what} {text!r} ends with a backslash, which would escape the next separator")
    return text


def escape_measurement(name: str) -> str:
    name = _checked_text(name, "measurement")
    if name.startswith("#"):
        raise ValueError(f"measurement {name!r} starts with '#', which makes the line a comment")
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(text: str, what: str = "tag key, tag value or field key") -> str:
    return _checked_text(text, what).translate(_KEY_ESCAPES)


def format_field_value(value: float | bool) -> str:
    """`true`/`false` for booleans, repr() of the float otherwise (ints are written as floats, so one field
    never changes type in InfluxDB)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, int | float):
        raise ValueError(f"field values must be numbers or booleans, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"field value {value!r} is not finite; NaN and infinities are never written")
    return repr(number)


def _check_timestamp(ts_ns: int) -> int:
    if isinstance(ts_ns, bool) or not isinstance(ts_ns, int):
        raise ValueError(f"timestamps are integer nanoseconds, got {ts_ns!r}")
    if not INT64_MIN < ts_ns <= INT64_MAX:  # InfluxDB reserves the minimum int64
        raise ValueError(f"timestamp {ts_ns} is outside InfluxDB's int64 nanosecond range")
    return ts_ns


# Speed (bench/ingest.py): the same few names (the measurement, device ids, metric names) come back in every
# batch, so their checked and escaped forms are kept. Tag keys, tag values and field keys share one escaping
# and one check, so one cache serves all three; only names that passed the check are kept.
_escaped: dict[str, str] = {}
_ESCAPED_MAX = 100_000


def _escaped_key(text: str, what: str) -> str:
    escaped = _escaped.get(text) if type(text) is str else None
    if escaped is None:
        escaped = escape_key(text, what)
        if len(_escaped) < _ESCAPED_MAX:
            _escaped[text] = escaped
    return escaped


def _field_value(value: float | bool) -> str:
    if type(value) is float and math.isfinite(value):
        return repr(value)  # the common case, as format_field_value writes it
    return format_field_value(value)


def point_line(point: Point) -> str:
    """One line (without the newline). Tags and fields are sorted by key, as InfluxDB recommends."""
    if not point.fields:
        raise ValueError(f"point of {point.measurement!r} at {point.ts_ns} has no fields")
    head = escape_measurement(point.measurement)
    tags = "".join(f",{_escaped_key(key, 'tag key')}={_escaped_key(value, 'tag value')}"
                   for key, value in sorted(point.tags.items()))
    fields = ",".join(
        f"{_escaped_key(key, 'field key')}={_field_value(value)}" for key, value in sorted(point.fields.items())
    )
    return f"{head}{tags} {fields} {_check_timestamp(point.ts_ns)}"


def to_line_protocol(points: Iterable[Point]) -> bytes:
    """UTF-8 line protocol, one line per point, each ending in a newline; ValueError for any bad point
    (then nothing is returned, so a batch is written whole or not at all)."""
    return "".join(point_line(point) + "\n" for point in points).encode("utf-8")
