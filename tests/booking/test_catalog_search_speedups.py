"""The fast paths of catalog search return exactly what the straightforward rules give.

Time-first search checks the booking rules once per distinct rule set, drops resources booked in minutes whose
length limits refuse the window in SQL, and on PostgreSQL finds overlapping live reservations through a range
index; plain search skips the count on a last page. Here a fleet of resources with every kind of rule set, in
three time zones (two with daylight saving time), with live and dead reservations and blackouts, is searched
over a table of windows, and each answer is compared with the reference: every active resource, in the
catalog's order, kept when no live reservation or blackout overlaps the window and window_violations on the
whole resource reports none of the hard rules.
"""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from booking.catalog import HARD_RULES, CatalogQuery, search
from booking.hours import ALL_DAY
from booking.models import LIVE_STATES, Blackout, Reservation, ResourceKind, ResourceStatus
from booking.rules import Rules, window_violations
from tests.booking.helpers import BERLIN, NEW_YORK, NOW, sh
from tests.factories import make_blackout, make_facility, make_reservation, make_resource

CITY = "513400"  # only this test's facilities are in Liangshan
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS = [
    {},                                                         # the facility's (pilot lines: all day)
    ALL_DAY,
    dict.fromkeys(("mon", "tue", "wed"), "13:00-18:00"),
    {**dict.fromkeys(WEEKDAYS, "20:00-24:00"), "wed": "00:00-06:00"},
]


@pytest.fixture
def fleet(db):
    rng = random.Random(20261201)
    facilities = [
        make_facility(db, city=CITY, timezone="Asia/Shanghai",
                      opening_hours=dict.fromkeys(WEEKDAYS[:5], "08:00-18:00")),
        make_facility(db, city=CITY, timezone="Europe/Berlin", opening_hours=dict.fromkeys(WEEKDAYS, "00:00-24:00")),
        make_facility(db, city=CITY, timezone="America/New_York",
                      opening_hours={**dict.fromkeys(WEEKDAYS[:6], "07:30-19:30")}),
    ]
    resources = []
    minute_rules = itertools.product((15, 30, 60), (30, 60, 180), (60, 240, 480, 1440))
    for n, (granularity, shortest, longest) in enumerate(minute_rules):
        if longest < shortest:
            continue
        resources.append(make_resource(
            db, facility=facilities[n % 3], name_zh=f"仪器{n:03d}", name_en=f"instrument {n:03d}",
            granularity_min=granularity, min_duration_min=shortest, max_duration_min=longest,
            lead_time_min=rng.choice((0, 60, 2880)), horizon_days=rng.choice((30, 90)),
            bookable_hours=HOURS[n % len(HOURS)], original_value=1000 + n))
    day_rules = itertools.product((ResourceKind.PILOT_LINE, ResourceKind.INSTRUMENT), (1, 2), (3, 14), (None, 2, 3))
    for n, (kind, shortest, longest, batch) in enumerate(day_rules):
        resources.append(make_resource(
            db, facility=facilities[n % 3], kind=kind, name_zh=f"中试线{n:03d}", name_en=f"line {n:03d}",
            granularity_min=1440, min_duration_min=shortest * 1440, max_duration_min=longest * 1440,
            batch_days=batch, lead_time_min=0, bookable_hours=HOURS[n % 2] if kind == ResourceKind.PILOT_LINE else
            HOURS[n % len(HOURS)], original_value=5000 + n))
    resources.append(make_resource(db, facility=facilities[0], name_en="retired", status=ResourceStatus.RETIRED))
    # a schedule: live and dead reservations, blackouts, spread over the windows below
    for resource in rng.sample(resources, 40):
        start = sh(rng.randint(2, 9), rng.choice((0, 9, 10, 11, 13, 20)))
        state = rng.choice(("confirmed", "confirmed", "pending", "cancelled", "completed", "no_show", "rejected"))
        make_reservation(db, resource=resource, starts_at=start, ends_at=start + timedelta(hours=rng.choice((1, 2,
                                                                                                            30))),
                         state=state)
    for resource in rng.sample(resources, 8):
        start = sh(rng.randint(2, 9), rng.choice((0, 12)))
        make_blackout(db, resource=resource, starts_at=start, ends_at=start + timedelta(hours=rng.choice((2, 48))))
    db.expire_all()
    return resources


def reference(db, start: datetime, end: datetime, sort: str) -> list[int]:
    """The ids search must return, by the rules applied to each whole resource."""
    ordered = search(db, CatalogQuery(city=CITY, sort=sort, per_page=1000))["items"]
    kept = []
    for resource in ordered:
        busy = db.scalar(select(Reservation.id).where(
            Reservation.resource_id == resource.id, Reservation.state.in_(LIVE_STATES),
            Reservation.starts_at < end, Reservation.ends_at > start).limit(1))
        blacked_out = db.scalar(select(Blackout.id).where(
            Blackout.resource_id == resource.id, Blackout.starts_at < end, Blackout.ends_at > start).limit(1))
        broken = {v["code"] for v in window_violations(Rules.of(resource), start, end, NOW)} & HARD_RULES
        if busy is None and blacked_out is None and not broken:
            kept.append(resource.id)
    return kept


def berlin(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, month, day, hour, minute, tzinfo=BERLIN)


def new_york(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2027, month, day, hour, minute, tzinfo=NEW_YORK)


WINDOWS = [
    (sh(2, 10), sh(2, 12)),                    # Wednesday morning, some reservations there
    (sh(2, 9, 15), sh(2, 10, 45)),             # on a 15-minute grid only
    (sh(2, 10, 7), sh(2, 11, 7)),              # on no grid
    (sh(2, 8), sh(2, 18)),                     # a whole opening day, 10 h
    (sh(2, 13), sh(2, 14)),
    (sh(2, 17, 30), sh(2, 18, 30)),            # across the closing time
    (sh(2, 20), sh(2, 23)),                    # evening hours only
    (sh(2, 22), sh(3, 2)),                     # across midnight
    (sh(1, 8, 30), sh(1, 9, 30)),              # inside everyone's lead time
    (sh(11, 10, month=11), sh(11, 12, month=11)),  # in the past
    (sh(1, 10, month=6, year=2027), sh(1, 12, month=6, year=2027)),  # beyond the horizons
    (sh(7, 0), sh(8, 0)),                      # whole days in Shanghai
    (sh(7, 0), sh(9, 0)),
    (sh(7, 0), sh(10, 0)),
    (sh(7, 0), sh(14, 0)),
    (sh(7, 0), sh(28, 0)),                     # three weeks
    (sh(7, 12), sh(9, 12)),                    # two days, not from midnight
    (berlin(3, 27, 0), berlin(3, 29, 0)),      # two days in Berlin across the change to summer time (47 h)
    (berlin(3, 28, 1), berlin(3, 28, 4)),      # three wall hours, two real ones
    (berlin(10, 30, 0), berlin(11, 1, 0)),     # back to winter time (49 h)
    (new_york(3, 14, 0), new_york(3, 15, 0)),  # New York's 23-hour day
    (new_york(3, 13, 8), new_york(3, 13, 9)),
    (sh(2, 10), sh(2, 10)),                    # empty
    (sh(2, 12), sh(2, 10)),                    # reversed
]


@pytest.mark.parametrize(("sort", "listed"), [("name", 1000), ("value_desc", 1000), ("name", 0)])
def test_time_first_search_returns_what_the_rules_give(db, fleet, sort, listed, monkeypatch):
    """listed=0: the rule sets that passed are matched in Python, as with very many distinct rule sets."""
    monkeypatch.setattr("booking.catalog._MAX_LISTED_RULE_SETS", listed)
    checked = 0
    for start, end in WINDOWS:
        expected = reference(db, start, end, sort)
        result = search(db, CatalogQuery(city=CITY, free_from=start, free_to=end, sort=sort, per_page=1000), now=NOW)
        assert [r.id for r in result["items"]] == expected, (start, end)
        assert result["total"] == len(expected)
        checked += len(expected)
    assert checked > 200  # the windows do keep resources, not just refuse everything


def test_time_first_pages_are_slices_of_the_whole_answer(db, fleet):
    start, end = sh(2, 13), sh(2, 14)
    expected = reference(db, start, end, "name")
    assert len(expected) > 10
    pages = [search(db, CatalogQuery(city=CITY, free_from=start, free_to=end, per_page=7, page=page), now=NOW)
             for page in range(1, len(expected) // 7 + 3)]
    assert [r.id for p in pages for r in p["items"]] == expected
    assert {p["total"] for p in pages} == {len(expected)}


def test_time_first_search_with_other_filters(db, fleet):
    start, end = sh(7, 0), sh(9, 0)
    lines = search(db, CatalogQuery(city=CITY, kind="pilot_line", free_from=start, free_to=end, per_page=1000),
                   now=NOW)
    every = search(db, CatalogQuery(city=CITY, free_from=start, free_to=end, per_page=1000), now=NOW)
    assert lines["items"]
    assert [r.id for r in lines["items"]] == [r.id for r in every["items"] if r.kind == ResourceKind.PILOT_LINE]


@pytest.mark.parametrize("per_page", [1, 3, 7, 20])
def test_plain_search_totals_are_right_on_every_page(db, fleet, per_page):
    """A last page's total is taken from its length instead of counting; every page must agree."""
    everything = [r.id for r in search(db, CatalogQuery(city=CITY, per_page=1000))["items"]]
    assert len(everything) > 40
    pages = [search(db, CatalogQuery(city=CITY, per_page=per_page, page=page))
             for page in range(1, len(everything) // per_page + 3)]
    assert {p["total"] for p in pages} == {len(everything)}
    assert [r.id for p in pages for r in p["items"]] == everything
    for q in ("仪器", "中试线", "nothing at all"):
        matching = search(db, CatalogQuery(city=CITY, q=q, per_page=1000))
        for page in (1, 2, 5):
            result = search(db, CatalogQuery(city=CITY, q=q, per_page=per_page, page=page))
            assert result["total"] == len(matching["items"]) == matching["total"]
