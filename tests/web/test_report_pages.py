"""The open-sharing report pages: the worked year of tests/reports/test_sharing.py on the page, in the downloads
and behind every figure (sessions and charges that add up to it); who sees which facilities; bad queries get
a clear answer, never a 500; the dashboard's charts carry their data and a text alternative."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from booking.models import Facility, Resource
from core.accounts.models import Role, User
from tests.factories import (
    PASSWORD,
    make_facility,
    make_resource,
    make_user,
)
from tests.reports import worked_example

NOW = datetime(2027, 1, 10, tzinfo=UTC)
WEEKDAYS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "08:00-18:00")
YEAR = "year=2026"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@dataclass
class Year:
    r: Resource
    u: Resource
    facility: Facility
    other_facility: Facility
    other_resource: Resource
    users: dict[str, User]


def build_year(db) -> Year:
    """The worked year of tests/reports/worked_example.py (R: 9.92 h effective, 4.42 h external, 44.54 %,
    ¥1,150.00 external income of which ¥500.00 by voucher; U unmetered: 2 h, both external), plus a facility
    of another lab manager with an instrument, and one user per role."""
    example = worked_example.build_year(db)
    r, u, facility, users, manager = (example[key] for key in ("r", "u", "facility", "users", "manager"))
    other_manager = make_user(db, roles=(Role.LAB_MANAGER,))
    other_facility = make_facility(db, managers=(other_manager,), city="510700", name_zh="绵阳分岛")
    other_resource = make_resource(db, facility=other_facility, name_zh="质谱仪X", name_en="Mass spectrometer X")
    users.update(manager=manager, other_manager=other_manager, researcher=make_user(db),
                 finance=make_user(db, roles=(Role.FINANCE,)), admin=make_user(db, roles=(Role.ADMIN,)))
    return Year(r, u, facility, other_facility, other_resource, users)


@pytest.fixture
def year(db, monkeypatch) -> Year:
    import reports.sharing
    import web.reports.views

    monkeypatch.setattr(reports.sharing, "utcnow", lambda: NOW)
    monkeypatch.setattr(web.reports.views, "utcnow", lambda: NOW)
    return build_year(db)


def sign_in(auth, year: Year, who: str) -> None:
    response = auth.login(year.users[who].email, PASSWORD)
    assert response.status_code == 302


def text_of(response) -> str:
    return response.get_data(as_text=True)


def cells(page: str, testid: str) -> list[str]:
    """The text of every element marked data-testid=`testid`, tags stripped and spaces squeezed."""
    found = re.findall(rf'data-testid="{testid}"[^>]*>(.*?)</(?:td|a|div|tr)>', page, re.S)
    return [html.unescape(" ".join(re.sub(r"<[^>]+>", " ", f).split())) for f in found]


def row_of(page: str, resource_id: int) -> str:
    match = re.search(rf'<tr data-testid="report-row" data-resource-id="{resource_id}">(.*?)</tr>', page, re.S)
    assert match, f"no row for resource {resource_id}"
    return match.group(1)


# --- the report page -------------------------------------------------------------------------------------------

def test_the_report_shows_the_worked_year(client, auth, year):
    sign_in(auth, year, "manager")

    response = client.get(f"/reports/sharing?{YEAR}")

    assert response.status_code == 200
    page = text_of(response)
    r = row_of(page, year.r.id)
    assert cells(r, "effective-hours") == ["9.92"]
    assert cells(r, "external-hours") == ["4.42"]
    assert cells(r, "sharing-rate") == ["44.54%"]
    assert cells(r, "income") == ["¥1,250.00"]
    assert cells(r, "external-income") == ["¥1,150.00"]
    assert cells(r, "voucher-subsidy")[0].startswith("¥500.00")
    assert "43.48%" in r  # voucher share of the external income
    assert "25.00%" in r  # one no-show of four bookings due
    assert "99.68%" in r  # idle share of the bookable hours
    u = row_of(page, year.u.id)
    assert cells(u, "effective-hours") == ["2.00"]
    assert cells(u, "sharing-rate") == ["100.00%"]
    # totals: 35,700 s + 7,200 s effective, 15,900 s + 7,200 s external
    assert cells(page, "total-effective") == ["11.92"]
    assert cells(page, "total-external") == ["6.42"]
    assert cells(page, "total-rate") == ["53.85%"]
    assert cells(page, "total-external-income") == ["¥1,150.00"]
    # a lab manager sees their facility only
    assert year.other_resource.name_zh not in page
    assert f'href="/reports/sharing/resources/{year.r.id}/sessions?start=2026-01-01&amp;end=2026-12-31"' in page
    assert f'href="/reports/sharing/resources/{year.r.id}/charges?start=2026-01-01&amp;end=2026-12-31"' in page


def test_the_groupings_add_up_and_link_to_their_instruments(client, auth, year):
    sign_in(auth, year, "admin")
    page = text_of(client.get(f"/reports/sharing?{YEAR}"))
    # province-wide, admins start with the cities
    assert re.search(r'class="nav-link active"[^>]*data-testid="group-city"', page)
    assert "成都市" in page
    assert "绵阳市" in page

    for group, key in (("facility", year.facility.id), ("organisation", year.facility.owner_id), ("city", "510100")):
        page = text_of(client.get(f"/reports/sharing?{YEAR}&group={group}"))
        row = re.search(rf'<tr data-testid="report-row" data-group-key="{key}">(.*?)</tr>', page, re.S).group(1)
        assert cells(row, "effective-hours") == ["11.92"], group
        assert cells(row, "external-income") == ["¥1,150.00"], group
        link = html.unescape(re.search(r'href="([^"]+)" data-testid="group-link"', row).group(1))
        filtered = text_of(client.get(link))
        assert year.r.name_zh in filtered, group
        assert year.other_resource.name_zh not in filtered, group
        assert cells(filtered, "total-effective") == ["11.92"]


def test_the_instrument_table_sorts_on_the_server(client, auth, year):
    sign_in(auth, year, "manager")
    ascending = text_of(client.get(f"/reports/sharing?{YEAR}&group=instrument&sort=effective&dir=asc"))
    descending = text_of(client.get(f"/reports/sharing?{YEAR}&group=instrument&sort=effective&dir=desc"))

    assert ascending.index(year.u.name_zh) < ascending.index(year.r.name_zh)
    assert descending.index(year.r.name_zh) < descending.index(year.u.name_zh)


def test_the_default_range_is_the_current_year_to_date(client, auth, year):
    sign_in(auth, year, "manager")

    page = text_of(client.get("/reports/sharing"))

    assert "2027-01-01" in cells(page, "report-range")[0]
    assert "2027-01-10" in cells(page, "report-range")[0]
    custom = text_of(client.get("/reports/sharing?start=2026-03-16&end=2026-03-16"))
    assert cells(row_of(custom, year.r.id), "effective-hours") == ["3.42"]
    assert cells(row_of(custom, year.r.id), "external-income") == ["¥1,000.00"]


# --- downloads ---------------------------------------------------------------------------------------------------

def test_the_downloads_hold_the_same_figures(client, auth, year):
    sign_in(auth, year, "manager")

    response = client.get(f"/reports/sharing.xlsx?{YEAR}")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="sharing-2026.xlsx"'
    sheet = load_workbook(io.BytesIO(response.data)).active
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    header = rows[2]
    r = next(row for row in rows if row[1] == year.r.name_zh)
    figures = dict(zip(header, r, strict=True))
    assert Decimal(str(figures["年有效工作机时（小时）"])) == Decimal("9.92")
    assert Decimal(str(figures["年对外服务机时（小时）"])) == Decimal("4.42")
    assert figures["共享率"] == "44.54%"
    assert Decimal(str(figures["年对外服务收入（元）"])) == Decimal("1150.00")
    assert year.other_resource.name_zh not in {row[1] for row in rows}

    response = client.get(f"/reports/sharing.csv?{YEAR}")
    assert response.headers["Content-Disposition"] == 'attachment; filename="sharing-2026.csv"'
    table = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    r = dict(zip(table[0], next(row for row in table if row[1] == year.r.name_zh), strict=True))
    assert (r["年有效工作机时（小时）"], r["年对外服务机时（小时）"], r["共享率"]) == ("9.92", "4.42", "44.54%")
    assert Decimal(r["年对外服务收入（元）"].replace(",", "")) == Decimal("1150.00")
    total = dict(zip(table[0], table[-1], strict=True))
    assert total["年有效工作机时（小时）"] == "11.92"


def test_downloads_follow_the_users_language_and_range(client, auth, year, db):
    year.users["manager"].locale = "en"
    db.flush()
    sign_in(auth, year, "manager")

    response = client.get("/reports/sharing.csv?start=2026-03-01&end=2026-03-31")

    assert response.headers["Content-Disposition"] == 'attachment; filename="sharing-2026-03-01_2026-03-31.csv"'
    table = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    r = dict(zip(table[0], next(row for row in table if row[1] == "SEM R"), strict=True))
    assert r["Effective working hours"] == "8.42"  # March: sessions 1, 2, 4, 5 and 6


# --- where the figures come from ----------------------------------------------------------------------------------

def test_the_sessions_add_up_to_the_hours(client, auth, year):
    sign_in(auth, year, "manager")

    response = client.get(f"/reports/sharing/resources/{year.r.id}/sessions?start=2026-01-01&end=2026-12-31")

    assert response.status_code == 200
    page = text_of(response)
    assert page.count('data-testid="session-row"') == 7
    assert cells(page, "figure-effective") == ["9.92 h"]
    assert cells(page, "figure-external") == ["4.42 h"]
    assert cells(page, "total-counted") == ["9.92"]
    assert cells(page, "total-external") == ["4.42"]
    assert page.count('data-external="yes"') == 2
    # times in the facility's zone: the overrun booking's session 09:05–12:30 Shanghai time
    assert "2026-03-16 09:05" in page
    assert "2026-03-16 12:30" in page
    assert 'data-testid="overlap-note"' not in page
    enterprise = year.users["e"].organisation
    assert enterprise.name_zh in page
    assert re.search(r'href="/reservations/\d+"', page)


def test_an_unmetered_instrument_says_where_its_hours_come_from(client, auth, year):
    sign_in(auth, year, "manager")

    page = text_of(client.get(f"/reports/sharing/resources/{year.u.id}/sessions?start=2026-01-01&end=2026-12-31"))

    assert 'data-testid="not-metered"' in page
    assert page.count('data-testid="booking-row"') == 1  # the completed booking; the confirmed one is not use
    assert cells(page, "figure-effective") == ["2.00 h"]
    assert cells(page, "total-counted") == ["2.00"]
    assert cells(page, "total-external") == ["2.00"]


@pytest.mark.parametrize("who", ["finance", "admin"])
def test_the_charges_add_up_to_the_income_and_link_to_statements(client, auth, year, who):
    sign_in(auth, year, who)

    response = client.get(f"/reports/sharing/resources/{year.r.id}/charges?start=2026-01-01&end=2026-12-31")

    assert response.status_code == 200
    page = text_of(response)
    assert page.count('data-testid="charge-row"') == 4  # next year's charge is not in 2026
    assert cells(page, "total-income") == cells(page, "figure-income") == ["¥1,250.00"]
    assert cells(page, "total-external-income") == cells(page, "figure-external-income") == ["¥1,150.00"]
    assert cells(page, "total-voucher") == ["¥500.00"]
    assert cells(page, "figure-voucher")[0].startswith("¥500.00")


def test_lab_managers_see_charges_without_finance_links(client, auth, year):
    sign_in(auth, year, "manager")

    page = text_of(client.get(f"/reports/sharing/resources/{year.r.id}/charges?{YEAR}"))

    assert cells(page, "total-external-income") == ["¥1,150.00"]
    assert "/finance/statements/" not in page


# --- who sees what, and bad queries ------------------------------------------------------------------------------

@pytest.mark.parametrize(("who", "path", "status"), [
    ("researcher", "/reports/sharing", 403),
    ("researcher", "/reports/dashboard", 403),
    ("researcher", "/reports/sharing.csv", 403),
    ("manager", "/reports/sharing/resources/{other}/sessions", 403),
    ("manager", "/reports/sharing/resources/{other}/charges", 403),
    ("manager", "/reports/sharing?facility={other_facility}", 403),
    ("manager", "/reports/dashboard?facility={other_facility}", 403),
    ("manager", "/reports/sharing.xlsx?facility={other_facility}", 403),
    ("manager", "/reports/sharing/resources/999999/sessions", 404),
    ("admin", "/reports/sharing/resources/999999/charges", 404),
    ("admin", "/reports/sharing?facility=999999", 404),
    ("admin", "/reports/sharing?owner=999999", 404),
    ("finance", "/reports/sharing/resources/{other}/sessions", 200),
    ("other_manager", "/reports/sharing/resources/{other}/charges", 200),
])
def test_who_may_see_which_figures(client, auth, year, who, path, status):
    sign_in(auth, year, who)
    path = path.format(other=year.other_resource.id, other_facility=year.other_facility.id)

    response = client.get(path)

    assert response.status_code == status
    if status == 403:
        assert "您无权查看此页面。" in text_of(response)


RANGE_ERRORS = ["start=2026-02-01&end=2026-01-01", "start=2026-02-01", "start=2020-01-01&end=2026-01-01",
                "start=2026-13-01&end=2026-12-31", "year=99999", "year=abc", "facility=x", "city=999999"]
TABLE_ERRORS = ["group=colour", "sort=price", "page=0"]
BAD_QUERIES = [*((p, q) for p in ("/reports/sharing", "/reports/dashboard", "/reports/sharing.csv")
                 for q in RANGE_ERRORS), *(("/reports/sharing", q) for q in TABLE_ERRORS)]


@pytest.mark.parametrize(("page_path", "query"), BAD_QUERIES, ids=[f"{p}?{q}" for p, q in BAD_QUERIES])
def test_a_bad_query_gets_a_clear_answer(client, auth, year, page_path, query):
    sign_in(auth, year, "manager")

    response = client.get(f"{page_path}?{query}")

    assert response.status_code == 422
    page = text_of(response)
    if page_path != "/reports/sharing.csv":
        assert 'data-testid="form-error"' in page
        assert 'data-testid="report-row"' not in page
    assert "Traceback" not in page


def test_the_source_pages_refuse_a_bad_range(client, auth, year):
    sign_in(auth, year, "manager")

    for kind in ("sessions", "charges"):
        response = client.get(f"/reports/sharing/resources/{year.r.id}/{kind}?start=2026-02-01&end=2026-01-01")
        assert response.status_code == 422
        assert 'data-testid="form-error"' in text_of(response)


def test_the_navigation_offers_reports_to_the_roles_that_may_read_them(client, auth, year):
    for who, shown in (("researcher", False), ("manager", True), ("finance", True), ("admin", True)):
        sign_in(auth, year, who)
        assert ('href="/reports"' in text_of(client.get("/"))) == shown, who
        auth.logout()


# --- the dashboard -----------------------------------------------------------------------------------------------

def charts(page: str) -> list[dict]:
    return [json.loads(html.unescape(raw)) for raw in re.findall(r'data-chart="([^"]*)"', page)]


def test_the_dashboard_draws_the_worked_year(client, auth, year):
    sign_in(auth, year, "admin")

    response = client.get(f"/reports/dashboard?{YEAR}&facility={year.facility.id}")

    assert response.status_code == 200
    page = text_of(response)
    options = charts(page)
    heatmap = next(o for o in options if o["series"][0]["type"] == "heatmap")
    assert heatmap["yAxis"]["data"][0] in ("周一", "Mon")  # Monday first
    assert sum(cell[2] for cell in heatmap["series"][0]["data"]) == pytest.approx(11.92, abs=0.2)
    # session 7's 2026 part: Thursday 1 January 00:00–01:00
    assert [0, 3, 1.0] in heatmap["series"][0]["data"]
    bars = [o for o in options if o["series"][0].get("markLine")]
    assert {m["xAxis"] for m in bars[0]["series"][0]["markLine"]["data"]} == {800, 1200, 1400}
    assert 'data-testid="benchmarks-scaled"' not in page
    assert cells(page, "band-count") == ["2", "0", "0", "0"]
    money = next(o for o in options if o["series"][0]["type"] == "bar" and o["xAxis"].get("data", [""])[0] == "2026-01")
    assert money["series"][1]["data"][2] == 1150.0
    assert money["series"][2]["data"][2] == 500.0
    assert 'data-testid="chart-burndown"' in page
    assert 'data-testid="heatmap-table"' in page
    assert 'data-testid="money-table"' in page


def test_lab_managers_dashboard_has_no_programme_burn_down_and_scales_the_yardsticks(client, auth, year):
    sign_in(auth, year, "manager")

    page = text_of(client.get("/reports/dashboard?start=2026-01-01&end=2026-03-31"))

    assert 'data-testid="chart-burndown"' not in page
    assert 'data-testid="benchmarks-scaled"' in page
    bars = [o for o in charts(page) if o["series"][0].get("markLine")]
    assert {m["xAxis"] for m in bars[0]["series"][0]["markLine"]["data"]} == {197, 296, 345}  # × 90/365
    assert year.other_resource.name_zh not in page


def test_the_dashboard_speaks_english(client, auth, year, db):
    year.users["admin"].locale = "en"
    db.flush()
    sign_in(auth, year, "admin")

    page = text_of(client.get(f"/reports/dashboard?{YEAR}"))

    heatmap = next(o for o in charts(page) if o["series"][0]["type"] == "heatmap")
    assert heatmap["yAxis"]["data"] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert "Chengdu" in page
