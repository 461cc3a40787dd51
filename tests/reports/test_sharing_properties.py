"""The streamed sweep of reports.sharing against a brute-force count, minute by minute, on random schedules.

Random bookings (internal or outside customers, completed, confirmed or no-show) and random sessions of two
devices on one instrument, some reaching outside the range, are written to the database; the report must
agree with counting every minute of the range: covered by a session, by a session whose best-overlapping
booking is an outside customer's, inside the open hours.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from booking.models import ReservationState
from core.accounts.models import OrganisationKind
from reports.sharing import ReportScope, compute
from tests.billing.factories import make_usage_session
from tests.factories import make_device, make_facility, make_organisation, make_reservation, make_resource, make_user

BASE = datetime(2026, 3, 1, 16, tzinfo=UTC)  # Monday 2 March 2026, 00:00 in Shanghai
SCOPE = ReportScope(date(2026, 3, 2), date(2026, 3, 4))  # Monday to Wednesday
RANGE = range(0, 3 * 1440)  # the scope's minutes after BASE
NOW = datetime(2026, 3, 10, tzinfo=UTC)
HOURS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "08:00-18:00")
STATES = (ReservationState.COMPLETED, ReservationState.CONFIRMED, ReservationState.NO_SHOW)


def at(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


def disjoint(max_items: int):
    """Sorted, non-overlapping (start, length) minute pairs from a day before the range to a day after it."""
    return st.lists(st.tuples(st.integers(0, 600), st.integers(1, 600)), max_size=max_items).map(
        lambda gaps_and_lengths: _lay_out(gaps_and_lengths))


def _lay_out(pairs):
    cursor, result = -1440, []
    for gap, length in pairs:
        start = cursor + gap
        result.append((start, length))
        cursor = start + length
    return result


bookings = disjoint(8).flatmap(lambda slots: st.tuples(
    st.just(slots), st.lists(st.tuples(st.sampled_from(STATES), st.integers(0, 2)), min_size=len(slots),
                             max_size=len(slots))))


def brute_force(slots, kinds, sessions):
    """Minutes of use, of outside use and of use in open hours; bookings due and no-shows."""
    booked = [(start, start + length, state, who) for (start, length), (state, who) in zip(slots, kinds, strict=True)]
    used, outside = set(), set()
    shown = set()
    for start, end in sessions:
        best, best_overlap = None, 0
        for index, (b_start, b_end, _state, who) in enumerate(booked):  # in start order: the first best wins
            overlap = min(end, b_end) - max(start, b_start)
            if overlap > 0:
                shown.add(index)
                if overlap > best_overlap:
                    best, best_overlap = who, overlap
        minutes = {m for m in range(start, end) if m in RANGE}
        used |= minutes
        if best is not None and best != 0:  # customer 0 is the owner itself
            outside |= minutes
    open_minutes = {m for m in RANGE if 8 * 60 <= m % 1440 < 18 * 60}
    due = [i for i, (_s, end, _state, _who) in enumerate(booked) if 0 <= end <= RANGE.stop]
    no_shows = [i for i in due if booked[i][2] == ReservationState.NO_SHOW or i not in shown]
    return len(used), len(outside), len(used & open_minutes), len(due), len(no_shows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=bookings, device_a=disjoint(6), device_b=disjoint(4))
def test_the_report_counts_what_a_minute_by_minute_count_gives(db, schedule, device_a, device_b):
    slots, kinds = schedule
    with db.begin_nested() as savepoint:
        owner = make_organisation(db, kind=OrganisationKind.INSTITUTE)
        customers = [make_user(db, organisation=owner),
                     make_user(db, organisation=make_organisation(db, kind=OrganisationKind.ENTERPRISE)),
                     make_user(db, organisation=make_organisation(db, kind=OrganisationKind.UNIVERSITY))]
        resource = make_resource(db, facility=make_facility(db, owner=owner, opening_hours=HOURS))
        for (start, length), (state, who) in zip(slots, kinds, strict=True):
            make_reservation(db, resource=resource, user=customers[who], starts_at=at(start),
                             ends_at=at(start + length), state=state)
        sessions = []
        for device_sessions in (device_a, device_b):
            device = make_device(db, resource=resource)
            for start, length in device_sessions:
                row = make_usage_session(db, device, at(start), at(start + length))
                row.start_ns, row.end_ns = (int(at(m).timestamp()) * 10**9 for m in (start, start + length))
                sessions.append((start, start + length))
        db.flush()
        [figures] = compute(db, ReportScope(SCOPE.start, SCOPE.end, resource_ids=frozenset({resource.id})),
                            now=NOW).instruments
        used, outside, in_open, due, no_shows = brute_force(slots, kinds, sessions)
        assert figures.effective_s == used * 60
        assert figures.external_s == outside * 60
        assert figures.used_in_bookable_s == in_open * 60
        assert figures.bookable_s == 3 * 10 * 3600
        assert (figures.reservations_due, figures.no_shows) == (due, no_shows)
        savepoint.rollback()
