"""Weekly hours ("mon": "08:30-17:30") turned into concrete UTC intervals, correct across DST changes."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
ALL_DAY = dict.fromkeys(WEEKDAYS, "00:00-24:00")


def parse_span(text: str) -> tuple[int, int]:
    """'08:30-17:30' → (510, 1050) minutes after local midnight; ValueError on anything else."""
    match = _SPAN_RE.match(text.strip())
    if not match:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if m1 > 59 or m2 > 59 or start >= end or end > 24 * 60:
        raise ValueError(f"not a span within one day: {text!r}")
    return start, end


def validate_hours(hours: dict) -> dict[str, str]:
    """Normalised weekly hours; ValueError naming the first bad day."""
    clean: dict[str, str] = {}
    for day, span in hours.items():
        if day not in WEEKDAYS:
            raise ValueError(f"unknown weekday {day!r}")
        if span:
            try:
                parse_span(span)
            except ValueError as exc:
                raise ValueError(f"{day}: {exc}") from None
            clean[day] = span.strip()
    return clean


def _local(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    # 24:00 is the next midnight. Local wall times are converted one by one, so a day on which the clocks
    # change simply has 23 or 25 hours; a wall time that does not exist maps forward (fold=0).
    base = datetime.combine(day, time(0), tzinfo=tz) + timedelta(days=minutes // 1440)
    moment = base.replace(hour=(minutes % 1440) // 60, minute=minutes % 60)
    return moment.astimezone(UTC)


def open_intervals(hours: dict, tz: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The open intervals (UTC) that intersect [start, end), merged where they touch (e.g. overnight)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # UTC out, whatever zone the window came in
    result: list[tuple[datetime, datetime]] = []
    day = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date()
    while day <= last:
        span = hours.get(WEEKDAYS[day.weekday()])
        if span:
            lo, hi = parse_span(span)
            s, e = max(_local(day, lo, tz), start), min(_local(day, hi, tz), end)
            if s < e:
                if result and result[-1][1] >= s:
                    result[-1] = (result[-1][0], max(result[-1][1], e))
                else:
                    result.append((s, e))
        day += timedelta(days=1)
    return result


def within_hours(hours: dict, tz: ZoneInfo, start: datetime, end: datetime) -> bool:
    """Is all of [start, end) inside open hours?

    Walks the days from the start and stops at the first gap, so the cost does not grow with the window: a
    window of years (any client can send one) costs a few days' work, not one step per day.
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if start >= end:
        return False
    if all((hours.get(day) or "").strip() == ALL_DAY[day] for day in WEEKDAYS):
        return True
    covered = start  # [start, covered) is known to be open
    day = start.astimezone(tz).date() - timedelta(days=1)
    while covered < end:
        if _local(day, 0, tz) > covered:
            return False  # this day and later ones open after `covered`: a gap
        span = hours.get(WEEKDAYS[day.weekday()])
        if span:
            lo, hi = parse_span(span)
            if _local(day, lo, tz) <= covered:
                covered = max(covered, _local(day, hi, tz))
        day += timedelta(days=1)
    return True


def local_midnight(moment: datetime, tz: ZoneInfo) -> datetime:
    local = moment.astimezone(tz)
    return datetime.combine(local.date(), time(0), tzinfo=tz).astimezone(UTC)
