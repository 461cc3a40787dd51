"""Opening hours as concrete intervals (time zones, DST) and the free/busy picture of a resource. Pure."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booking.availability import Busy, Span, free_busy, free_spans
from booking.hours import ALL_DAY, local_midnight, open_intervals, parse_span, validate_hours, within_hours
from tests.booking.helpers import BERLIN, NEW_YORK, OFFICE_HOURS, SH


def local(tz: ZoneInfo, day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=tz)


def elapsed(start: datetime, end: datetime) -> timedelta:
    """Real time between two instants (subtracting two datetimes of one zone gives wall-clock time)."""
    return end.astimezone(UTC) - start.astimezone(UTC)


def all_utc(*moments: datetime) -> bool:
    return all(m.tzinfo is UTC for m in moments)


# --- parse_span / validate_hours -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "minutes"), [
    ("08:30-17:30", (510, 1050)),
    ("00:00-24:00", (0, 1440)),
    ("23:59-24:00", (1439, 1440)),
    ("  09:00-10:00 ", (540, 600)),
    ("00:00-00:01", (0, 1)),
])
def test_parse_span_gives_minutes_after_local_midnight(text, minutes):
    assert parse_span(text) == minutes


@pytest.mark.parametrize("text", [
    "8:30-17:30",      # one-digit hour
    "08:30-17:30x",    # trailing junk
    "08:30 - 17:30",   # spaces inside
    "08:30–17:30",     # en dash
    "08.30-17.30",
    "",
    "08:60-09:00",     # minute 60
    "08:00-09:75",
    "09:00-08:00",     # ends before it starts
    "09:00-09:00",     # empty
    "00:00-24:01",     # past the end of the day
    "24:00-24:30",
    "22:00-26:00",
])
def test_parse_span_refuses(text):
    with pytest.raises(ValueError, match=r"HH:MM-HH:MM|within one day"):
        parse_span(text)


def test_validate_hours_normalises_and_drops_closed_days():
    assert validate_hours({"mon": " 08:30-17:30 ", "tue": "", "sat": None, "sun": "00:00-24:00"}) == {
        "mon": "08:30-17:30", "sun": "00:00-24:00"}
    assert validate_hours({}) == {}


@pytest.mark.parametrize(("hours", "named"), [
    ({"monday": "08:00-17:00"}, "monday"),
    ({"mon": "08:00-17:00", "Tue": "08:00-17:00"}, "Tue"),
    ({"mon": "08:00-17:00", "tue": "17:00-08:00"}, "tue"),
    ({"wed": "8-17"}, "wed"),
])
def test_validate_hours_names_the_bad_day(hours, named):
    with pytest.raises(ValueError, match=named):
        validate_hours(hours)


# --- open_intervals ----------------------------------------------------------------------------------------

WEEK_HOURS = {"mon": "08:30-17:30", "tue": "08:30-12:00", "wed": "13:00-24:00", "thu": "00:00-06:00",
              "sat": "10:00-11:00"}


def test_open_intervals_for_a_week_in_shanghai():
    mon = date(2026, 11, 30)
    got = open_intervals(WEEK_HOURS, SH, local(SH, mon), local(SH, mon + timedelta(days=7)))
    assert got == [
        (local(SH, mon, 8, 30), local(SH, mon, 17, 30)),
        (local(SH, date(2026, 12, 1), 8, 30), local(SH, date(2026, 12, 1), 12)),
        # Wednesday 13:00-24:00 and Thursday 00:00-06:00 touch: one overnight interval
        (local(SH, date(2026, 12, 2), 13), local(SH, date(2026, 12, 3), 6)),
        (local(SH, date(2026, 12, 5), 10), local(SH, date(2026, 12, 5), 11)),
    ]
    assert all(lo.tzinfo is UTC and hi.tzinfo is UTC for lo, hi in got)
    assert got[0][0] == datetime(2026, 11, 30, 0, 30, tzinfo=UTC)  # Shanghai is UTC+8 all year


def test_open_intervals_are_clipped_to_the_window():
    got = open_intervals(WEEK_HOURS, SH, local(SH, date(2026, 11, 30), 12), local(SH, date(2026, 12, 2), 14))
    assert got == [
        (local(SH, date(2026, 11, 30), 12), local(SH, date(2026, 11, 30), 17, 30)),
        (local(SH, date(2026, 12, 1), 8, 30), local(SH, date(2026, 12, 1), 12)),
        (local(SH, date(2026, 12, 2), 13), local(SH, date(2026, 12, 2), 14)),
    ]
    assert all(all_utc(lo, hi) for lo, hi in got)  # UTC even where the window's own ends were kept


def test_open_intervals_of_closed_days_and_empty_hours():
    sun = date(2026, 12, 6)
    assert open_intervals(OFFICE_HOURS, SH, local(SH, sun), local(SH, sun, 23)) == []
    assert open_intervals({}, SH, local(SH, sun), local(SH, sun + timedelta(days=7))) == []


def test_all_day_hours_merge_into_one_interval():
    start, end = local(SH, date(2026, 12, 1), 5), local(SH, date(2026, 12, 9), 7)
    assert open_intervals(ALL_DAY, SH, start, end) == [(start, end)]


DST_DAYS = [
    pytest.param(BERLIN, date(2027, 3, 28), timedelta(hours=23), id="berlin-spring-forward"),
    pytest.param(BERLIN, date(2027, 10, 31), timedelta(hours=25), id="berlin-fall-back"),
    pytest.param(NEW_YORK, date(2027, 3, 14), timedelta(hours=23), id="new-york-spring-forward"),
    pytest.param(NEW_YORK, date(2027, 11, 7), timedelta(hours=25), id="new-york-fall-back"),
]


@pytest.mark.parametrize(("tz", "day", "day_length"), DST_DAYS)
def test_office_hours_on_a_dst_change_still_open_at_nine_local(tz, day, day_length):
    hours = {"sun": "09:00-17:00"}  # every DST change in these zones happens on a Sunday
    got = open_intervals(hours, tz, local(tz, day - timedelta(days=1)), local(tz, day + timedelta(days=1)))
    assert got == [(local(tz, day, 9), local(tz, day, 17))]
    (lo, hi), = got
    assert (lo.astimezone(tz).hour, hi.astimezone(tz).hour) == (9, 17)
    assert elapsed(lo, hi) == timedelta(hours=8)
    assert all_utc(lo, hi)
    # a week earlier the same 09:00 was a different UTC hour: the offset changed in between
    week_before = day - timedelta(days=7)
    (earlier, _), = open_intervals(hours, tz, local(tz, week_before), local(tz, week_before + timedelta(days=1)))
    assert abs(lo.hour - earlier.hour) == 1


@pytest.mark.parametrize(("tz", "day", "day_length"), DST_DAYS)
def test_all_day_hours_give_a_23_or_25_hour_day(tz, day, day_length):
    start, end = local(tz, day), local(tz, day + timedelta(days=1))
    assert open_intervals(ALL_DAY, tz, start, end) == [(start, end)]
    assert elapsed(start, end) == day_length
    # a pilot line open only on that Sunday, seen over the whole week
    week = open_intervals({"sun": "00:00-24:00"}, tz, local(tz, day - timedelta(days=3)),
                          local(tz, day + timedelta(days=3)))
    assert [elapsed(lo, hi) for lo, hi in week] == [day_length]


@pytest.mark.parametrize(("tz", "day", "span", "expected"), [
    # 02:00-03:00 does not exist in Berlin on 28 March 2027: the span is 03:30 (mapped forward)-04:00 CEST
    (BERLIN, date(2027, 3, 28), "02:30-04:00",
     (datetime(2027, 3, 28, 1, 30, tzinfo=UTC), datetime(2027, 3, 28, 2, 0, tzinfo=UTC))),
    (BERLIN, date(2027, 3, 28), "01:00-05:00",
     (datetime(2027, 3, 28, 0, 0, tzinfo=UTC), datetime(2027, 3, 28, 3, 0, tzinfo=UTC))),
    # 02:00-03:00 happens twice on 31 October 2027: 01:00 CEST to 04:00 CET is four real hours
    (BERLIN, date(2027, 10, 31), "01:00-04:00",
     (datetime(2027, 10, 30, 23, 0, tzinfo=UTC), datetime(2027, 10, 31, 3, 0, tzinfo=UTC))),
    (NEW_YORK, date(2027, 11, 7), "00:00-12:00",
     (datetime(2027, 11, 7, 4, 0, tzinfo=UTC), datetime(2027, 11, 7, 17, 0, tzinfo=UTC))),
])
def test_spans_around_the_changed_hour(tz, day, span, expected):
    weekday = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[day.weekday()]
    assert open_intervals({weekday: span}, tz, local(tz, day), local(tz, day + timedelta(days=1))) == [expected]


@pytest.mark.parametrize(("start", "end", "inside"), [
    (local(SH, date(2026, 12, 2), 9), local(SH, date(2026, 12, 2), 11), True),
    (local(SH, date(2026, 12, 2), 8), local(SH, date(2026, 12, 2), 18), True),      # exactly the day
    (local(SH, date(2026, 12, 2), 7, 30), local(SH, date(2026, 12, 2), 9), False),  # before opening
    (local(SH, date(2026, 12, 2), 17), local(SH, date(2026, 12, 2), 19), False),    # past closing
    (local(SH, date(2026, 12, 2), 17), local(SH, date(2026, 12, 3), 9), False),     # across the night
    (local(SH, date(2026, 12, 5), 9), local(SH, date(2026, 12, 5), 10), False),     # Saturday
])
def test_within_hours(start, end, inside):
    assert within_hours(OFFICE_HOURS, SH, start, end) is inside


def test_within_all_day_hours_spans_several_days():
    assert within_hours(ALL_DAY, BERLIN, local(BERLIN, date(2027, 3, 27)), local(BERLIN, date(2027, 3, 30)))


def test_local_midnight_across_dst():
    noon = local(BERLIN, date(2027, 3, 28), 12)
    assert local_midnight(noon, BERLIN) == datetime(2027, 3, 27, 23, 0, tzinfo=UTC)
    assert local_midnight(local(BERLIN, date(2027, 3, 29), 12), BERLIN) == datetime(2027, 3, 28, 22, 0, tzinfo=UTC)


# --- free_busy ---------------------------------------------------------------------------------------------

WED = date(2026, 12, 2)


def at(hour: int, minute: int = 0, day: date = WED) -> datetime:
    return local(SH, day, hour, minute)


def picture(spans: list[Span]) -> list[tuple[str, str, str, str, int | None]]:
    """Spans as (local start, local end, status, kind, ref), easy to read in a failing assertion."""
    return [(f"{s.start.astimezone(SH):%d %H:%M}", f"{s.end.astimezone(SH):%d %H:%M}", s.status, s.kind, s.ref)
            for s in spans]


def test_free_busy_of_an_empty_day():
    assert picture(free_busy(OFFICE_HOURS, SH, at(0), at(0, day=WED + timedelta(days=1)), [])) == [
        ("02 00:00", "02 08:00", "closed", "", None),
        ("02 08:00", "02 18:00", "free", "", None),
        ("02 18:00", "03 00:00", "closed", "", None),
    ]


def test_free_busy_overlays_reservations_and_blackouts():
    busy = [Busy(at(14), at(15), "maintenance", 7, is_blackout=True), Busy(at(10), at(12), "confirmed", 1)]
    assert picture(free_busy(OFFICE_HOURS, SH, at(0), at(0, day=WED + timedelta(days=1)), busy)) == [
        ("02 00:00", "02 08:00", "closed", "", None),
        ("02 08:00", "02 10:00", "free", "", None),
        ("02 10:00", "02 12:00", "busy", "confirmed", 1),
        ("02 12:00", "02 14:00", "free", "", None),
        ("02 14:00", "02 15:00", "blackout", "maintenance", 7),
        ("02 15:00", "02 18:00", "free", "", None),
        ("02 18:00", "03 00:00", "closed", "", None),
    ]


def test_free_busy_back_to_back_reservations_leave_no_free_gap():
    busy = [Busy(at(10), at(12), "confirmed", 1), Busy(at(12), at(13), "pending", 2)]
    assert picture(free_busy(OFFICE_HOURS, SH, at(9), at(14), busy)) == [
        ("02 09:00", "02 10:00", "free", "", None),
        ("02 10:00", "02 12:00", "busy", "confirmed", 1),
        ("02 12:00", "02 13:00", "busy", "pending", 2),
        ("02 13:00", "02 14:00", "free", "", None),
    ]


def test_free_busy_shows_busy_time_outside_hours_and_clips_to_the_window():
    # an overnight pilot batch from 16:00 to 10:00 the next day, seen from 12:00 to 09:00
    busy = [Busy(at(16), at(10, day=WED + timedelta(days=1)), "confirmed", 3)]
    assert picture(free_busy(OFFICE_HOURS, SH, at(12), at(9, day=WED + timedelta(days=1)), busy)) == [
        ("02 12:00", "02 16:00", "free", "", None),
        ("02 16:00", "02 18:00", "busy", "confirmed", 3),
        ("02 18:00", "03 08:00", "busy", "confirmed", 3),
        ("03 08:00", "03 09:00", "busy", "confirmed", 3),
    ]


def test_free_busy_ignores_busy_time_outside_the_window_and_keeps_the_first_of_overlapping_items():
    busy = [Busy(at(6, day=WED - timedelta(days=1)), at(7, day=WED - timedelta(days=1)), "confirmed", 1),
            Busy(at(11), at(13), "maintenance", 9, is_blackout=True),
            Busy(at(10), at(12), "confirmed", 2)]
    assert picture(free_busy(OFFICE_HOURS, SH, at(9), at(14), busy)) == [
        ("02 09:00", "02 10:00", "free", "", None),
        ("02 10:00", "02 12:00", "busy", "confirmed", 2),
        ("02 12:00", "02 13:00", "blackout", "maintenance", 9),
        ("02 13:00", "02 14:00", "free", "", None),
    ]
    assert picture(free_spans(free_busy(OFFICE_HOURS, SH, at(9), at(14), busy))) == [
        ("02 09:00", "02 10:00", "free", "", None), ("02 13:00", "02 14:00", "free", "", None)]


def test_free_busy_accepts_a_window_given_in_another_zone():
    spans = free_busy(OFFICE_HOURS, SH, at(9).astimezone(BERLIN), at(11).astimezone(NEW_YORK), [])
    assert [(s.start, s.end, s.status) for s in spans] == [(at(9), at(11), "free")]
    assert spans[0].start.tzinfo is UTC


@pytest.mark.parametrize(("tz", "day", "day_length"), DST_DAYS)
def test_free_busy_of_an_all_day_resource_on_a_dst_day(tz, day, day_length):
    start, end = local(tz, day), local(tz, day + timedelta(days=1))
    spans = free_busy(ALL_DAY, tz, start, end, [Busy(local(tz, day, 1), local(tz, day, 4), "confirmed", 1)])
    assert [s.status for s in spans] == ["free", "busy", "free"]
    assert sum((elapsed(s.start, s.end) for s in spans), timedelta()) == day_length
    # 01:00 to 04:00 local is two real hours on a spring-forward day and four on a fall-back day
    assert elapsed(spans[1].start, spans[1].end) == timedelta(hours=3) + (day_length - timedelta(hours=24))
    assert all(all_utc(s.start, s.end) for s in spans)


# --- the property: spans tile the window and never call busy time free --------------------------------------

BASE = datetime(2027, 3, 22, tzinfo=UTC)  # a fortnight that contains Berlin's and New York's spring change
HOURS_CHOICES = [OFFICE_HOURS, ALL_DAY, {}, WEEK_HOURS, {"sun": "01:00-05:00", "sat": "22:00-24:00"}]
quarter_hours = st.integers(min_value=-96, max_value=14 * 96)


def moment(quarters: int) -> datetime:
    return BASE + timedelta(minutes=15 * quarters)


@st.composite
def busy_items(draw):
    lo = draw(quarter_hours)
    length = draw(st.integers(min_value=1, max_value=5 * 96))
    blackout = draw(st.booleans())
    zone = draw(st.sampled_from([UTC, SH, BERLIN, NEW_YORK]))  # rows come back in UTC; callers may differ
    return Busy(moment(lo).astimezone(zone), moment(lo + length).astimezone(zone),
                "maintenance" if blackout else "confirmed", draw(st.integers(0, 50)), is_blackout=blackout)


@settings(max_examples=300, deadline=None, database=None)
@given(hours=st.sampled_from(HOURS_CHOICES), tz=st.sampled_from([SH, BERLIN, NEW_YORK]),
       lo=quarter_hours, length=st.integers(min_value=1, max_value=10 * 96), busy=st.lists(busy_items(), max_size=8))
def test_free_busy_spans_tile_the_window_and_never_show_busy_time_as_free(hours, tz, lo, length, busy):
    start, end = moment(lo), moment(lo + length)
    spans = free_busy(hours, tz, start, end, busy)

    assert spans[0].start == start
    assert spans[-1].end == end
    assert all(s.start < s.end for s in spans)
    assert all(all_utc(s.start, s.end) for s in spans)
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))  # sorted, no gaps, no overlaps

    for span in spans:
        overlapping = [b for b in busy if b.start < span.end and b.end > span.start]
        if span.status in ("free", "closed"):
            assert not overlapping, f"{span} overlaps busy {overlapping}"
        else:
            # busy and blackout spans lie inside an item of that status, and say which one
            assert any(b.start <= span.start and span.end <= b.end and b.is_blackout == (span.status == "blackout")
                       and (b.kind, b.ref) == (span.kind, span.ref) for b in busy)

    open_ = open_intervals(hours, tz, start, end)
    for span in spans:
        inside_open = any(lo_ <= span.start and span.end <= hi_ for lo_, hi_ in open_)
        touches_open = any(lo_ < span.end and span.start < hi_ for lo_, hi_ in open_)
        if span.status == "free":
            assert inside_open
        if span.status == "closed":
            assert not touches_open
