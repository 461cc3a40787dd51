"""Calendars for the pages: free/busy spans (booking.availability) laid out as week columns, month cells
and the rows of a facility calendar. Only layout happens here; what is free is decided by free_busy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.availability import Busy, Span, free_busy
from booking.hours import WEEKDAYS, parse_span
from booking.models import Blackout, Reservation, Resource
from booking.reservations import reservations_overlapping
from booking.rules import Rules
from core.timeutil import as_utc

MINUTES_PER_DAY = 24 * 60


@dataclass
class Schedule:
    """Free/busy spans of some resources over one window, with the reservations behind the busy ones."""

    spans: dict[int, list[Span]]
    reservations: dict[int, Reservation]


def schedule_of(db: Session, resources: list[Resource], start: datetime, end: datetime) -> Schedule:
    ids = [r.id for r in resources]
    busy: dict[int, list[Busy]] = {rid: [] for rid in ids}
    found = reservations_overlapping(db, ids, start, end) if ids else []
    for r in found:
        busy[r.resource_id].append(Busy(r.starts_at, r.ends_at, r.state, r.id))
    if ids:
        for b in db.scalars(select(Blackout).where(Blackout.resource_id.in_(ids), Blackout.starts_at < end,
                                                   Blackout.ends_at > start)):
            busy[b.resource_id].append(Busy(b.starts_at, b.ends_at, b.kind, b.id, is_blackout=True))
    spans = {}
    for resource in resources:
        rules = Rules.of(resource)
        spans[resource.id] = free_busy(rules.hours, rules.tz, start, end, busy[resource.id])
    return Schedule(spans, {r.id: r for r in found})


def local_day_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def _at(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    return local_day_start(day + timedelta(days=minutes // MINUTES_PER_DAY), tz).replace(
        hour=(minutes % MINUTES_PER_DAY) // 60, minute=minutes % 60)


def visible_hours(hours: dict) -> tuple[int, int]:
    """The first and last minute worth showing for weekly hours, on whole hours (08:00–18:00 if none)."""
    bounds = [parse_span(span) for day in WEEKDAYS if (span := hours.get(day))]
    if not bounds:
        return 8 * 60, 18 * 60
    lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
    return lo // 60 * 60, -(-hi // 60) * 60


@dataclass
class Block:
    """A positioned piece of a calendar: `offset` and `size` in percent of its column or row."""

    offset: float
    size: float
    status: str  # free, past, busy, pending, blackout, closed
    start: datetime  # local
    end: datetime  # local
    kind: str = ""
    ref: int | None = None
    mine: bool = False
    reservation: Reservation | None = None
    slot: dict[str, str] | None = None  # the booking form values a click on a free slot fills in


def _block_status(span: Span) -> str:
    if span.status == "busy":
        return "pending" if span.kind == "pending" else "busy"
    return span.status


def _lay_out(spans: list[Span], lo: datetime, hi: datetime, tz: ZoneInfo, now: datetime, *,
             keep_closed: bool, mine: set[int], reservations: dict[int, Reservation]) -> list[Block]:
    total = (hi - lo).total_seconds()
    blocks = []
    for span in spans:
        start, end = max(span.start, lo), min(span.end, hi)
        if start >= end or (span.status == "closed" and not keep_closed):
            continue
        pieces = [(start, end, _block_status(span))]
        if span.status == "free" and start < now:
            pieces = [(start, min(end, now), "past")] + ([(now, end, "free")] if end > now else [])
        for a, b, status in pieces:
            blocks.append(Block(
                offset=(a - lo).total_seconds() / total * 100, size=(b - a).total_seconds() / total * 100,
                status=status, start=a.astimezone(tz), end=b.astimezone(tz), kind=span.kind, ref=span.ref,
                mine=span.status == "busy" and span.ref in mine,
                reservation=reservations.get(span.ref) if span.status == "busy" else None))
    return blocks


def _slots(block: Block, lo: datetime, hi: datetime, rules: Rules, day: date) -> list[Block]:
    """A free block cut into clickable slots on the resource's grid, about an hour each."""
    grid = rules.granularity_min
    step = max(grid, -(-60 // grid) * grid)
    total = (hi - lo).total_seconds()
    midnight = local_day_start(day, rules.tz)
    cursor = int((block.start - midnight).total_seconds() // 60)
    cursor = -(-cursor // grid) * grid
    last = int((block.end - midnight).total_seconds() // 60)
    slots = []
    while cursor + min(grid, step) <= last:
        nxt = min((cursor // step + 1) * step, last)
        a, b = _at(day, cursor, rules.tz), _at(day, nxt, rules.tz)
        suggested_end = (a + timedelta(minutes=max(nxt - cursor, rules.min_duration_min))).astimezone(rules.tz)
        ends_later = suggested_end.date() > day and not (
            suggested_end.date() == day + timedelta(days=1) and suggested_end.time() == time(0))
        slots.append(Block(
            offset=(a - lo).total_seconds() / total * 100, size=(b - a).total_seconds() / total * 100,
            status="free", start=a, end=b,
            slot={"date": day.isoformat(), "time_from": f"{a:%H:%M}", "time_to": f"{suggested_end:%H:%M}",
                  "end_date": suggested_end.date().isoformat() if ends_later else ""}))
        cursor = nxt
    return slots


@dataclass
class DayColumn:
    day: date
    blocks: list[Block]
    is_today: bool


@dataclass
class WeekView:
    start: date
    days: list[DayColumn]
    hour_labels: list[tuple[float, str]]  # (offset %, "09:00")
    height_px: int
    prev_start: date
    next_start: date


def week_view(resource: Resource, schedule: Schedule, start: date, now: datetime, *,
              mine: set[int]) -> WeekView:
    rules = Rules.of(resource)
    tz = rules.tz
    first, last = visible_hours(rules.hours)
    days = []
    today = now.astimezone(tz).date()
    for i in range(7):
        day = start + timedelta(days=i)
        lo, hi = _at(day, first, tz), _at(day, last, tz)
        blocks = []
        for block in _lay_out(schedule.spans[resource.id], lo, hi, tz, now, keep_closed=False, mine=mine,
                              reservations=schedule.reservations):
            if block.status == "free" and resource.books_whole_days:
                block.slot = {"date": day.isoformat()} if block.start == lo and block.end == hi else None
                blocks.append(block)
            elif block.status == "free":
                blocks.extend(_slots(block, lo, hi, rules, day))
            else:
                blocks.append(block)
        days.append(DayColumn(day, blocks, day == today))
    hours = (last - first) // 60
    step = 1 if hours <= 16 else 2
    labels = [(h * 60 / (last - first) * 100, f"{(first // 60 + h) % 24:02d}:00") for h in range(0, hours, step)]
    return WeekView(start, days, labels, max(hours * (40 if hours <= 16 else 28), 240),
                    start - timedelta(days=7), start + timedelta(days=7))


@dataclass
class MonthCell:
    day: date
    in_month: bool
    is_today: bool
    status: str  # free, partly, busy, pending, blackout, closed, past
    free_min: int = 0
    open_min: int = 0
    bars: list[tuple[str, float]] = field(default_factory=list)  # (status, width %) of the open time
    slot: dict[str, str] | None = None


@dataclass
class MonthView:
    start: date  # the first of the month
    weeks: list[list[MonthCell]]
    prev_start: date
    next_start: date


def month_grid(first_of_month: date) -> tuple[date, date]:
    """The Monday before (or on) the first, and the day after the last shown (whole weeks)."""
    grid_start = first_of_month - timedelta(days=first_of_month.weekday())
    next_month = (first_of_month.replace(day=28) + timedelta(days=4)).replace(day=1)
    grid_end = next_month + timedelta(days=(7 - next_month.weekday()) % 7)
    return grid_start, grid_end


def month_view(resource: Resource, schedule: Schedule, first_of_month: date, now: datetime) -> MonthView:
    rules = Rules.of(resource)
    tz = rules.tz
    grid_start, grid_end = month_grid(first_of_month)
    today = now.astimezone(tz).date()
    cells = []
    day = grid_start
    while day < grid_end:
        lo, hi = local_day_start(day, tz), local_day_start(day + timedelta(days=1), tz)
        minutes: dict[str, float] = {}
        for span in schedule.spans[resource.id]:
            a, b = max(span.start, lo), min(span.end, hi)
            if a < b:
                status = _block_status(span)
                if status == "free" and a < now:
                    minutes["past"] = minutes.get("past", 0) + (min(b, now) - a).total_seconds() / 60
                    a = min(b, now)
                minutes[status] = minutes.get(status, 0) + (b - a).total_seconds() / 60
        open_min = sum(v for k, v in minutes.items() if k != "closed")
        free_min = int(minutes.get("free", 0))
        if open_min == 0:
            status = "closed"
        elif free_min == 0:
            taken = [k for k in ("blackout", "busy", "pending") if minutes.get(k)]
            status = taken[0] if taken else "past"
        else:
            status = "free" if free_min >= open_min - 0.5 else "partly"
        cell = MonthCell(day, day.month == first_of_month.month, day == today, status, free_min, int(open_min))
        if open_min:
            cell.bars = [(k, minutes[k] / open_min * 100) for k in ("free", "pending", "busy", "blackout", "past")
                         if minutes.get(k)]
        if status == "free" and resource.books_whole_days:
            cell.slot = {"date": day.isoformat()}
        cells.append(cell)
        day += timedelta(days=1)
    weeks = [cells[i:i + 7] for i in range(0, len(cells), 7)]
    prev_month = (first_of_month - timedelta(days=1)).replace(day=1)
    next_month = (first_of_month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return MonthView(first_of_month, weeks, prev_month, next_month)


# --- facility calendar -------------------------------------------------------------------------------------------

@dataclass
class FacilityRow:
    resource: Resource
    blocks: list[Block]


@dataclass
class FacilityView:
    view: str  # "day" or "week"
    start: date
    rows: list[FacilityRow]
    ticks: list[tuple[float, str]]  # (offset %, label)
    prev_start: date
    next_start: date
    window: tuple[datetime, datetime]


def facility_window(resources: list[Resource], day: date, view: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    if view == "week":
        return local_day_start(day, tz), local_day_start(day + timedelta(days=7), tz)
    hourly = [r for r in resources if not r.books_whole_days]
    if not hourly:
        return local_day_start(day, tz), local_day_start(day + timedelta(days=1), tz)
    bounds = [visible_hours({WEEKDAYS[day.weekday()]: Rules.of(r).hours.get(WEEKDAYS[day.weekday()])})
              for r in hourly if Rules.of(r).hours.get(WEEKDAYS[day.weekday()])]
    first, last = (min(b[0] for b in bounds), max(b[1] for b in bounds)) if bounds else (8 * 60, 18 * 60)
    return _at(day, first, tz), _at(day, last, tz)


def facility_view(resources: list[Resource], schedule: Schedule, day: date, view: str, tz: ZoneInfo,
                  now: datetime, window: tuple[datetime, datetime], day_names: list[str]) -> FacilityView:
    lo, hi = window
    rows = [FacilityRow(r, _lay_out(schedule.spans[r.id], as_utc(lo), as_utc(hi), tz, now, keep_closed=True,
                                    mine=set(), reservations=schedule.reservations)) for r in resources]
    total = (hi - lo).total_seconds()
    if view == "week":
        ticks = [(i / 7 * 100, f"{day_names[(day + timedelta(days=i)).weekday()]} {day + timedelta(days=i):%m-%d}")
                 for i in range(7)]
        step = timedelta(days=7)
    else:
        hours = int(total // 3600)
        every = 1 if hours <= 14 else 2
        ticks = [(h * 3600 / total * 100, f"{(lo + timedelta(hours=h)).astimezone(tz):%H:%M}")
                 for h in range(0, hours, every)]
        step = timedelta(days=1)
    return FacilityView(view, day, rows, ticks, day - step, day + step, window)
