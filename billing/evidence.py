"""Digests of telemetry, so that a voucher claim can prove the instrument really ran — and be re-checked later.

Pure functions: billing never reads the time-series store (design.md §2, §3). The caller (the web layer or
the CLI) reads the points of a usage session from the store and passes them in as `(ts_ns, field, value)`
triples; from `telemetry.tsdb` points that is

    triples = flatten((point.ts_ns, point.fields) for point in store.query(device_id, start_ns, end_ns))

Canonical serialisation (version 1), fixed so that anyone can recompute a digest from the same points:

- one line per point value: ``{device_id}\\t{ts_ns}\\t{field}\\t{value}\\n``, UTF-8;
- `ts_ns` in decimal integer nanoseconds since the Unix epoch;
- `value`: booleans as ``true`` / ``false``; numbers as Python's ``repr(float(value))`` (the shortest text that
  reads back as the same IEEE 754 double: ``812.5``, ``3.0``, ``1e-07``); NaN and infinities are refused;
- lines sorted by device id, then ts_ns, then field (then value, should the same key occur twice);
- a session contributes the points with ``start_ns <= ts_ns < end_ns`` (the store's query window); points
  outside it are ignored, so a caller may pass a wider read;
- the digest is the lowercase hex SHA-256 of the concatenated lines (the empty set digests the empty string).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

SERIALISATION_VERSION = 1

TelemetryValue = float | int | bool
TelemetryPoint = tuple[int, str, TelemetryValue]  # (ts_ns, field, value)


@dataclass(frozen=True, slots=True)
class Digest:
    sha256: str
    point_count: int


@dataclass(frozen=True, slots=True)
class SessionWindow:
    """Which points of which device a usage session covers."""

    device_id: str
    start_ns: int
    end_ns: int | None  # None: no upper bound (a session still open)

    def contains(self, ts_ns: int) -> bool:
        return self.start_ns <= ts_ns and (self.end_ns is None or ts_ns < self.end_ns)


def canonical_value(value: TelemetryValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, int | float):
        raise TypeError(f"a telemetry value is a number or a boolean, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite telemetry value: {value!r}")
    return repr(number)


def flatten(samples: Iterable[tuple[int, Mapping[str, TelemetryValue]]]) -> list[TelemetryPoint]:
    """`(ts_ns, {field: value})` samples (as the time-series store returns them) as `(ts_ns, field, value)`."""
    return [(ts_ns, field, value) for ts_ns, values in samples for field, value in values.items()]


def canonical_lines(points_by_device: Mapping[str, Iterable[TelemetryPoint]]) -> Iterator[bytes]:
    rows = []
    for device_id, points in points_by_device.items():
        for ts_ns, field, value in points:
            rows.append((device_id, int(ts_ns), field, canonical_value(value)))
    rows.sort()
    for device_id, ts_ns, field, text in rows:
        yield f"{device_id}\t{ts_ns}\t{field}\t{text}\n".encode()


def digest_points(points_by_device: Mapping[str, Iterable[TelemetryPoint]]) -> Digest:
    """The SHA-256 of the canonical serialisation of these points, and how many point values it covers."""
    sha = hashlib.sha256()
    count = 0
    for line in canonical_lines(points_by_device):
        sha.update(line)
        count += 1
    return Digest(sha.hexdigest(), count)


def in_window(window: SessionWindow, points: Iterable[TelemetryPoint]) -> list[TelemetryPoint]:
    return [p for p in points if window.contains(int(p[0]))]


def session_digest(window: SessionWindow, points: Iterable[TelemetryPoint]) -> Digest:
    """The digest of one usage session: the points of its device inside its window."""
    return digest_points({window.device_id: in_window(window, points)})


def sessions_digest(windows_and_points: Iterable[tuple[SessionWindow, Iterable[TelemetryPoint]]]) -> Digest:
    """One digest over several sessions (a claim item's), each restricted to its window, merged and sorted by
    device, ts_ns and field as if they were one set of points."""
    by_device: dict[str, list[TelemetryPoint]] = {}
    for window, points in windows_and_points:
        by_device.setdefault(window.device_id, []).extend(in_window(window, points))
    return digest_points(by_device)
