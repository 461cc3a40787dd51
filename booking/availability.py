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
    return _overlay(spans, _claims(busy, start, end))


def _claims(busy: list[Busy], start: datetime, end: datetime) -> list[tuple[datetime, datetime, Busy]]:
    """Who holds which part of [start, end): disjoint and in order. Where items overlap, the one that starts
    first (then ends first) keeps the time, so a later item only claims what lies after everything before it."""
    claims: list[tuple[datetime, datetime, Busy]] = []
    claimed = start
    for item in sorted(busy, key=lambda b: (b.start, b.end)):
        lo, hi = max(item.start.astimezone(UTC), claimed), min(item.end.astimezone(UTC), end)
        if lo < hi:
            claims.append((lo, hi, item))
            claimed = hi
    return claims


def _overlay(spans: list[Span], claims: list[tuple[datetime, datetime, Busy]]) -> list[Span]:
    """The closed/free spans with the claimed parts cut out as busy or blackout spans, in one pass over both
    (sorted) lists: a week with hundreds of reservations costs hundreds of steps, not their square."""
    result: list[Span] = []
    i = 0
    for span in spans:
        cursor = span.start
        while i < len(claims) and claims[i][0] < span.end:
            lo, hi, item = claims[i]
            lo, cut = max(lo, span.start), min(hi, span.end)
            if cursor < lo:
                result.append(Span(cursor, lo, span.status, span.kind, span.ref))
            result.append(Span(lo, cut, "blackout" if item.is_blackout else "busy", item.kind, item.ref))
            cursor = cut
            if hi > span.end:
                break  # the claim goes on into the next span
            i += 1
        if cursor < span.end:
            result.append(Span(cursor, span.end, span.status, span.kind, span.ref))
    return result


def free_spans(spans: list[Span]) -> list[Span]:
    return [s for s in spans if s.status == "free"]
