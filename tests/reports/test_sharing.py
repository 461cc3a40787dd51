"""The open-sharing figures of one year, worked out by hand for a small facility and checked exactly.

The facility (Shanghai time, open Mon–Fri 08:00–18:00) owns a metered instrument R and an unmetered U. Its
year holds an external booking with an overrun, an internal one, a no-show, unbooked use (one charged to an
academic customer), use by a declared affiliate, a session across New Year and one still open at year end.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from core.accounts.models import Role
from core.errors import Forbidden, InvalidInput
from reports.sharing import ReportScope, compute, grouped, scope_for, session_sources, year_range
from tests.factories import make_facility, make_resource, make_user
from tests.reports.worked_example import NOW, build_year, utc

YEAR = ReportScope(*year_range(2026))


@pytest.fixture
def year(db):
    return build_year(db)


def test_an_instrument_s_year_is_counted_from_its_measured_sessions(db, year):
    report = compute(db, YEAR, now=NOW, heatmap=True)
    r = next(f for f in report.instruments if f.resource_id == year["r"].id)
    assert r.metered
    assert r.effective_s == 12300 + 3600 + 3600 + 3600 + 7200 + 3600 + 1800
    assert r.effective_hours == Decimal("9.92")
    assert r.external_s == 12300 + 3600
    assert r.external_hours == Decimal("4.42")
    assert r.sharing_rate == Decimal("0.4454")
    assert r.sessions == 7
    assert (r.reservations_due, r.no_shows, r.no_show_rate) == (4, 1, Decimal("0.2500"))
    assert (r.users_served, r.organisations_served, r.external_organisations_served) == (4, 4, 2)
    assert r.income == Decimal("1250.00")
    assert r.external_income == Decimal("1150.00")
    assert r.voucher_subsidy == Decimal("500.00")
    assert r.voucher_share == Decimal("0.4348")
    # 261 weekdays of 10 h in 2026, less the Monday of maintenance; use inside those hours: sessions 1, 2, 4, 5, 6
    assert r.bookable_s == 260 * 10 * 3600
    assert r.used_in_bookable_s == 12300 + 3600 + 3600 + 3600 + 7200
    assert r.idle_share == Decimal("0.9968")
    assert r.benchmark_band == 0
    assert r.rate_card is not None


def test_an_unmetered_instrument_counts_its_completed_bookings(db, year):
    report = compute(db, YEAR, now=NOW)
    u = next(f for f in report.instruments if f.resource_id == year["u"].id)
    assert not u.metered
    assert (u.effective_s, u.external_s) == (7200, 7200)
    assert (u.reservations_due, u.no_shows) == (2, 0)
    assert u.income == Decimal("0.00")
    assert u.voucher_share is None


def test_totals_and_groups_add_up(db, year):
    report = compute(db, ReportScope(*year_range(2026), facility_ids=frozenset({year["facility"].id})), now=NOW)
    assert report.total.instruments == 2
    assert report.total.effective_s == 35700 + 7200
    assert report.total.external_s == 15900 + 7200
    # the enterprise used both instruments: one organisation, not two
    assert report.total.external_organisations_served == 2
    for by in ("facility", "organisation", "city"):
        [group] = grouped(report.instruments, by)
        assert group.effective_s == report.total.effective_s
        assert group.external_income == Decimal("1150.00")
    with pytest.raises(InvalidInput):
        grouped(report.instruments, "colour")


def test_heatmap_puts_use_in_the_facility_s_weekday_and_hour(db, year):
    grid = compute(db, YEAR, now=NOW, heatmap=True).heatmap
    # session 1 runs Monday 09:05–12:30 Shanghai time
    assert grid[0][9] >= 3300
    assert grid[0][12] >= 1800
    # session 7's 2026 part is Thursday 1 January 00:00–01:00
    assert grid[3][0] == 3600
    assert sum(map(sum, grid)) == 35700 + 7200
    assert compute(db, YEAR, now=NOW).heatmap is None


def test_a_shorter_range_counts_only_its_days(db, year):
    march_16 = compute(db, ReportScope(date(2026, 3, 16), date(2026, 3, 16)), now=NOW)
    r = next(f for f in march_16.instruments if f.resource_id == year["r"].id)
    assert (r.effective_s, r.external_s, r.reservations_due) == (12300, 12300, 1)
    assert r.external_income == Decimal("1000.00")
    assert r.bookable_s == 10 * 3600


def test_each_session_says_whom_it_was_counted_for(db, year):
    sources = session_sources(db, YEAR, year["r"].id, now=NOW)
    assert len(sources) == 7
    assert sum(s.counted_s for s in sources) == 35700
    assert sum(s.counted_s for s in sources if s.external) == 15900
    users = year["users"]
    overrun = next(s for s in sources if s.started_at == utc(2026, 3, 16, 1, 5))
    assert overrun.external
    assert overrun.organisation_id == users["e"].organisation_id
    assert overrun.reservation_id is not None
    affiliate = next(s for s in sources if s.started_at == utc(2026, 3, 23, 1))
    assert not affiliate.external
    assert affiliate.organisation_id == users["p"].organisation_id
    unbooked = next(s for s in sources if s.started_at == utc(2026, 3, 19, 6))
    assert (unbooked.organisation_id, unbooked.external) == (None, False)


def test_who_may_see_which_figures(db, year):
    researcher = make_user(db)
    with pytest.raises(Forbidden):
        scope_for(db, researcher, *year_range(2026))
    manager = year["manager"]
    scope = scope_for(db, manager, *year_range(2026))
    assert scope.facility_ids == frozenset({year["facility"].id})
    other = make_facility(db)
    with pytest.raises(Forbidden):
        scope_for(db, manager, *year_range(2026), facility_id=other.id)
    finance = make_user(db, roles=(Role.FINANCE,))
    assert scope_for(db, finance, *year_range(2026)).facility_ids is None
    # a lab manager's report holds their facility's instruments only
    make_resource(db, facility=other)
    ids = {f.resource_id for f in compute(db, scope, now=NOW).instruments}
    assert ids == {year["r"].id, year["u"].id}


def test_a_range_must_make_sense(db, year):
    admin = make_user(db, roles=(Role.ADMIN,))
    with pytest.raises(InvalidInput):
        scope_for(db, admin, date(2026, 2, 1), date(2026, 1, 1))
    with pytest.raises(InvalidInput):
        scope_for(db, admin, date(2020, 1, 1), date(2026, 1, 1))
    assert scope_for(db, admin, date(2026, 1, 1), date(2026, 1, 1) + timedelta(days=365)).end == date(2027, 1, 1)


def test_money_by_month_and_the_voucher_budget_left(db, year):
    from reports.sharing import monthly_money, voucher_burndown

    months = monthly_money(db, YEAR)
    assert [m.month.month for m in months] == list(range(1, 13))
    march = months[2]
    assert (march.income, march.external_income, march.voucher_subsidy) == (
        Decimal("1250.00"), Decimal("1150.00"), Decimal("500.00"))
    assert sum(m.income for m in months) == Decimal("1250.00")
    [programme] = voucher_burndown(db, YEAR)
    assert programme.remaining[1] == (date(2026, 2, 1), programme.budget)
    assert programme.remaining[2] == (date(2026, 3, 1), programme.budget - Decimal("500.00"))
    assert programme.remaining[-1][1] == programme.budget - Decimal("500.00")
