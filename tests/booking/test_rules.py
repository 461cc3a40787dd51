"""The booking rules of a resource checked on a proposed window (booking.rules). Pure: no database."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from booking.categories import ServiceCategory
from booking.errors import RuleViolation
from booking.hours import ALL_DAY
from booking.models import Facility, OperationMode, Resource, ResourceKind
from booking.rules import Rules, window_violations
from tests.booking.helpers import BERLIN, NEW_YORK, NOW, OFFICE_HOURS, SH, sh

INSTRUMENT = Rules(granularity_min=30, min_duration_min=30, max_duration_min=480, lead_time_min=60,
                   horizon_days=90, hours=OFFICE_HOURS, tz=SH)
PILOT_LINE = Rules(granularity_min=1440, min_duration_min=1440, max_duration_min=30 * 1440, lead_time_min=0,
                   horizon_days=365, hours=ALL_DAY, tz=SH)


def codes(violations: list[dict]) -> list[str]:
    return [v["code"] for v in violations]


# (rules, start, end, expected violations). NOW is Tuesday 1 December 2026, 08:00 in Shanghai.
CASES = [
    pytest.param(INSTRUMENT, sh(2, 9), sh(2, 11), [], id="bookable"),
    pytest.param(INSTRUMENT, sh(2, 8), sh(2, 16), [], id="bookable-max-length-whole-day"),
    pytest.param(INSTRUMENT, sh(2, 11), sh(2, 11), [{"code": "invalid_window"}], id="invalid-empty"),
    pytest.param(INSTRUMENT, sh(2, 11), sh(2, 9), [{"code": "invalid_window"}], id="invalid-reversed"),
    pytest.param(INSTRUMENT, sh(30, 9, month=11), sh(30, 10, month=11), [{"code": "starts_in_past"}],
                 id="starts-in-past"),
    pytest.param(INSTRUMENT, sh(1, 8, 30), sh(1, 9), [{"code": "lead_time", "lead": "1 h"}], id="lead-time"),
    pytest.param(INSTRUMENT, sh(1, 9), sh(1, 9, 30), [], id="lead-time-exactly-met"),
    pytest.param(dataclasses.replace(INSTRUMENT, lead_time_min=2 * 1440), sh(2, 9), sh(2, 10),
                 [{"code": "lead_time", "lead": "2 d"}], id="lead-time-in-days"),
    pytest.param(dataclasses.replace(INSTRUMENT, lead_time_min=90), sh(1, 9), sh(1, 10),
                 [{"code": "lead_time", "lead": "90 min"}], id="lead-time-in-minutes"),
    pytest.param(INSTRUMENT, sh(1, 9, month=3, year=2027), sh(1, 10, month=3, year=2027),
                 [{"code": "beyond_horizon", "days": 90}], id="beyond-horizon"),
    pytest.param(INSTRUMENT, sh(1, 8, month=3, year=2027), sh(1, 9, month=3, year=2027), [],
                 id="horizon-exactly-reached"),
    pytest.param(dataclasses.replace(INSTRUMENT, min_duration_min=60), sh(2, 9), sh(2, 9, 30),
                 [{"code": "too_short", "minutes": 60}], id="too-short"),
    pytest.param(INSTRUMENT, sh(2, 8), sh(2, 16, 30), [{"code": "too_long", "minutes": 480}], id="too-long"),
    pytest.param(INSTRUMENT, sh(2, 9, 10), sh(2, 10, 10), [{"code": "granularity", "minutes": 30}],
                 id="granularity-both-ends-reported-once"),
    pytest.param(INSTRUMENT, sh(2, 9), sh(2, 10, 15), [{"code": "granularity", "minutes": 30}],
                 id="granularity-end"),
    pytest.param(INSTRUMENT, sh(2, 9) + timedelta(seconds=30), sh(2, 10), [{"code": "granularity", "minutes": 30}],
                 id="granularity-seconds"),
    pytest.param(INSTRUMENT, sh(2, 17), sh(2, 19), [{"code": "outside_bookable_hours"}], id="after-closing"),
    pytest.param(INSTRUMENT, sh(2, 7), sh(2, 9), [{"code": "outside_bookable_hours"}], id="before-opening"),
    pytest.param(INSTRUMENT, sh(5, 9), sh(5, 10), [{"code": "outside_bookable_hours"}], id="saturday"),
    pytest.param(dataclasses.replace(INSTRUMENT, max_duration_min=1440 * 2), sh(2, 16), sh(3, 10),
                 [{"code": "outside_bookable_hours"}], id="across-the-night"),
    pytest.param(PILOT_LINE, sh(2, 0), sh(4, 0), [], id="pilot-two-days"),
    pytest.param(PILOT_LINE, sh(6, 0), sh(7, 0), [], id="pilot-sunday"),
    pytest.param(PILOT_LINE, sh(2, 6), sh(3, 6), [{"code": "whole_days"}], id="pilot-not-midnight"),
    pytest.param(PILOT_LINE, datetime(2026, 12, 2, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC),
                 [{"code": "whole_days"}], id="pilot-utc-midnight-is-not-local-midnight"),
    pytest.param(PILOT_LINE, sh(2, 0), sh(2, 0) + timedelta(days=1, seconds=1), [{"code": "whole_days"}],
                 id="pilot-a-second-over"),
    pytest.param(dataclasses.replace(PILOT_LINE, batch_days=7), sh(2, 0), sh(5, 0),
                 [{"code": "batch_length", "days": 7}], id="pilot-batch-length"),
    pytest.param(dataclasses.replace(PILOT_LINE, batch_days=7), sh(2, 0), sh(16, 0), [], id="pilot-two-batches"),
    pytest.param(dataclasses.replace(PILOT_LINE, min_duration_min=3 * 1440), sh(2, 0), sh(4, 0),
                 [{"code": "too_short", "minutes": 3 * 1440}], id="pilot-too-short"),
    pytest.param(PILOT_LINE, sh(2, 0), sh(2, 0, month=1, year=2027) + timedelta(days=1),
                 [{"code": "too_long", "minutes": 30 * 1440}], id="pilot-too-long"),
    pytest.param(dataclasses.replace(PILOT_LINE, hours=OFFICE_HOURS), sh(4, 0), sh(7, 0),
                 [{"code": "outside_bookable_hours"}], id="pilot-over-a-closed-weekend"),
]


@pytest.mark.parametrize(("rules", "start", "end", "expected"), CASES)
def test_window_violations(rules, start, end, expected):
    assert window_violations(rules, start, end, NOW) == expected


def test_every_broken_rule_is_reported_in_order():
    # in the past, off the grid, too long and outside the hours, all at once
    got = window_violations(INSTRUMENT, sh(30, 7, 10, month=11), sh(30, 18, 10, month=11), NOW)
    assert codes(got) == ["starts_in_past", "granularity", "too_long", "outside_bookable_hours"]
    got = window_violations(INSTRUMENT, sh(1, 8, 15), sh(1, 19, 15, month=3, year=2027), NOW)
    assert codes(got) == ["lead_time", "granularity", "too_long", "outside_bookable_hours"]


def test_every_rule_code_has_a_message_that_renders_with_its_parameters():
    for param in CASES:
        rules, start, end, _expected = param.values
        for violation in window_violations(rules, start, end, NOW):
            error = RuleViolation(violation["code"], [violation],
                                  **{k: v for k, v in violation.items() if k != "code"})
            assert "%(" not in str(error)
            assert str(error)
            assert error.details == {"violations": [violation]}


@pytest.mark.parametrize(("enforce", "expected"), [(True, ["lead_time"]), (False, [])])
def test_managers_skip_the_lead_time(enforce, expected):
    assert codes(window_violations(INSTRUMENT, sh(1, 8, 30), sh(1, 9), NOW, enforce_lead_time=enforce)) == expected


def test_managers_still_cannot_book_the_past():
    got = window_violations(INSTRUMENT, sh(1, 7), sh(1, 8), NOW, enforce_lead_time=False)
    assert codes(got) == ["starts_in_past", "outside_bookable_hours"]


def test_a_naive_now_or_window_is_a_programming_error():
    with pytest.raises(TypeError):
        window_violations(INSTRUMENT, sh(2, 9).replace(tzinfo=None), sh(2, 10).replace(tzinfo=None), NOW)


# --- pilot lines in a zone with DST: lengths are counted in days, not minutes --------------------------------

def berlin(month: int, day: int, year: int = 2027) -> datetime:
    return datetime(year, month, day, tzinfo=BERLIN)


BERLIN_LINE = dataclasses.replace(PILOT_LINE, tz=BERLIN, min_duration_min=1440, max_duration_min=2 * 1440)
NOW_BERLIN = berlin(3, 1)


@pytest.mark.parametrize(("start", "end", "real_hours", "expected"), [
    (berlin(3, 28), berlin(3, 29), 23, []),                  # the spring-forward Sunday: one day of 23 h
    (berlin(3, 27), berlin(3, 29), 47, []),                  # Saturday and Sunday: two days, 47 h
    (berlin(10, 31), berlin(11, 1), 25, []),                 # the fall-back Sunday: one day of 25 h
    (berlin(10, 30), berlin(11, 1), 49, []),                 # two days, 49 h: not "too long"
    (berlin(10, 30), berlin(11, 2), 73, ["too_long"]),       # three days are too long, however many hours
    # 24 real hours after midnight on the spring-forward Sunday it is 01:00: not a whole day
    (berlin(3, 28), (berlin(3, 28).astimezone(UTC) + timedelta(hours=24)).astimezone(BERLIN), 24, ["whole_days"]),
])
def test_pilot_line_across_dst_counts_days(start, end, real_hours, expected):
    assert (end.astimezone(UTC) - start.astimezone(UTC)) == timedelta(hours=real_hours)
    assert codes(window_violations(BERLIN_LINE, start, end, NOW_BERLIN)) == expected


def test_pilot_line_batches_across_dst():
    rules = dataclasses.replace(BERLIN_LINE, batch_days=2, max_duration_min=10 * 1440)
    assert window_violations(rules, berlin(3, 27), berlin(3, 29), NOW_BERLIN) == []          # 47 h, one batch
    assert codes(window_violations(rules, berlin(3, 27), berlin(3, 30), NOW_BERLIN)) == ["batch_length"]


def test_instrument_across_dst_counts_real_minutes():
    # New York, 14 March 2027: 01:00 to 04:00 on the wall clock is two real hours (given in local time, as a
    # caller might: the subtraction of two datetimes of one zone would count three)
    rules = dataclasses.replace(INSTRUMENT, tz=NEW_YORK, hours=ALL_DAY, min_duration_min=150)
    start, end = datetime(2027, 3, 14, 1, tzinfo=NEW_YORK), datetime(2027, 3, 14, 4, tzinfo=NEW_YORK)
    assert codes(window_violations(rules, start, end, datetime(2027, 3, 1, tzinfo=UTC))) == ["too_short"]


# --- Rules.of: which hours apply ----------------------------------------------------------------------------

def resource(kind: ResourceKind, bookable_hours: dict, timezone: str = "Asia/Shanghai") -> Resource:
    facility = Facility(name_zh="实验室", name_en="Lab", city="510100", timezone=timezone, opening_hours=OFFICE_HOURS)
    return Resource(facility=facility, kind=kind, name_zh="设备", name_en="Instrument", original_value=Decimal(1),
                    category=ServiceCategory.TESTING, operation_mode=OperationMode.BOTH, granularity_min=30,
                    min_duration_min=30, max_duration_min=480, lead_time_min=60, horizon_days=90,
                    bookable_hours=bookable_hours, batch_days=None)


@pytest.mark.parametrize(("kind", "bookable_hours", "expected"), [
    (ResourceKind.INSTRUMENT, {}, OFFICE_HOURS),                                 # the facility's hours
    (ResourceKind.PILOT_LINE, {}, ALL_DAY),                                      # pilot lines run day and night
    (ResourceKind.INSTRUMENT, {"sat": "10:00-12:00"}, {"sat": "10:00-12:00"}),   # the resource's own hours
    (ResourceKind.PILOT_LINE, {"mon": "00:00-24:00"}, {"mon": "00:00-24:00"}),
])
def test_rules_of_a_resource_pick_the_hours(kind, bookable_hours, expected):
    rules = Rules.of(resource(kind, bookable_hours, "Europe/Berlin"))
    assert rules.hours == expected
    assert rules.tz == BERLIN
    assert (rules.granularity_min, rules.min_duration_min, rules.max_duration_min, rules.lead_time_min,
            rules.horizon_days, rules.batch_days) == (30, 30, 480, 60, 90, None)
