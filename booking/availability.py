"""Free/busy computation: pure functions over a resource's hours, blackouts and reservations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from booking.hours import open_intervals


@dataclass(frozen=True, slots=True)
class Busy:
    start: datetime
    end: datetime
    kind: str  # "confirmed", "pending" or a blackout kind ("maintenance", …)
    ref: int | None = None  # reservation or blackout id
    is_blackout: bool = False


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime
    status: str  # "free", "busy", "blackout" or "closed"
    kind: str = ""
    ref: int | None = None


def free_busy(hours: dict, tz: ZoneInfo, start: datetime, end: datetime, busy: list[Busy]) -> list[Span]:
    """Cover [start, end) with spans: closed outside open hours, blackout/busy where taken, free elsewhere.

    Busy intervals are shown wherever they are (even outside open hours, e.g. a multi-day pilot batch).
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    spans: list[Span] = []
    cursor = start
    for lo, hi in open_intervals(hours, tz, start, end):
        if cursor < lo:
            spans.append(Span(cursor, lo, "closed"))
        spans.append(Span(lo, hi, "free"))
        cursor = hi
    if cursor < end:
        spans.append(Span(cursor, end, "closed"))
    for item in sorted(busy, key=lambda b: (b.start, b.end)):
        spans = _overlay(spans, item, start, end)
    return spans


def _overlay(spans: list[Span], item: Busy, start: datetime, end: datetime) -> list[Span]:
    lo, hi = max(item.start.astimezone(UTC), start), min(item.end.astimezone(UTC), end)
    if lo >= hi:
        return spans
    status = "blackout" if item.is_blackout else "busy"
    result: list[Span] = []
    for span in spans:
        if span.end <= lo or span.start >= hi or span.status in ("busy", "blackout"):
            result.append(span)
            continue
        if span.start < lo:
            result.append(Span(span.start, lo, span.status, span.kind, span.ref))
        result.append(Span(max(span.start, lo), min(span.end, hi), status, item.kind, item.ref))
        if span.end > hi:
            result.append(Span(hi, span.end, span.status, span.kind, span.ref))
    return result


def free_spans(spans: list[Span]) -> list[Span]:
    return [s for s in spans if s.status == "free"]
