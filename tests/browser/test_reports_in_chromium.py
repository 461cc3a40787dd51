"""The report pages in headless Chromium: a lab manager and an admin open the open-sharing report and the
dashboard of the worked year (tests/web/test_report_pages.py); every chart is drawn (an ECharts SVG of some
size), with no console error or CSP violation (the page watch of conftest.py), and screenshots are taken.

A live server of its own (a fresh SQLite database with the worked year); "now" is 10 January 2027 for the
report code, so 2026 is a full past year and the default range (2027 to date) is nearly empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session

from tests.browser.conftest import serving
from tests.browser.conftest import sign_in as browser_sign_in
from tests.web.test_report_pages import NOW, build_year

pytestmark = pytest.mark.browser


@dataclass
class ReportWorld:
    url: str
    emails: dict[str, str]
    r_id: int


@pytest.fixture(scope="module")
def report_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportWorld]:
    import reports.sharing
    import web.reports.views

    def fill(session: Session) -> tuple[dict[str, str], int]:
        year = build_year(session)
        return {who: year.users[who].email for who in ("manager", "admin")}, year.r.id

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reports.sharing, "utcnow", lambda: NOW)
        patch.setattr(web.reports.views, "utcnow", lambda: NOW)
        with serving(tmp_path_factory.mktemp("reports-browser"), fill) as (url, (emails, r_id)):
            yield ReportWorld(url, emails, r_id)


def sign_in(page: Page, world: ReportWorld, who: str) -> None:
    browser_sign_in(page, world.url, world.emails[who])


def assert_charts_drawn(page: Page, count: int) -> None:
    charts = page.locator(".ls-chart[data-chart-ready] svg")
    expect(charts).to_have_count(count)
    for i in range(count):
        box = charts.nth(i).bounding_box()
        assert box is not None, i
        assert min(box["width"], box["height"]) > 100, (i, box)
        # something was drawn: more than the empty frame
        assert charts.nth(i).locator("path, rect").count() > 3, i


def test_a_lab_manager_reads_the_report_and_the_dashboard(page: Page, report_world, screenshot):
    world = report_world
    sign_in(page, world, "manager")
    page.locator('nav a[href="/reports"]').click()
    expect(page).to_have_url(f"{world.url}/reports/sharing")
    page.get_by_test_id("year").select_option("2026")
    page.get_by_test_id("apply").click()
    row = page.locator(f'[data-testid="report-row"][data-resource-id="{world.r_id}"]')
    expect(row.get_by_test_id("effective-hours")).to_have_text("9.92")
    expect(row.get_by_test_id("external-hours")).to_have_text("4.42")
    expect(row.get_by_test_id("sharing-rate")).to_have_text("44.54%")
    expect(row.get_by_test_id("external-income")).to_have_text("¥1,150.00")
    screenshot("report")

    row.get_by_test_id("effective-hours").click()
    expect(page.get_by_test_id("session-row")).to_have_count(7)
    expect(page.get_by_test_id("total-counted")).to_have_text("9.92")
    screenshot("sessions")
    page.get_by_test_id("back-to-report").click()
    expect(page.get_by_test_id("total-effective")).to_have_text("11.92")

    page.get_by_test_id("report-tabs").get_by_role("link").nth(1).click()
    expect(page.get_by_test_id("report-range")).to_contain_text("2026-12-31")
    assert_charts_drawn(page, 7)  # heatmap, most, least, bands, facility rate, city rate, money: no burn-down
    expect(page.get_by_test_id("chart-burndown")).to_have_count(0)
    screenshot("dashboard")

    page.get_by_test_id("language-switch").get_by_role("button", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert_charts_drawn(page, 7)
    # the page fits, the navigation bar included (a facility's tools share one menu)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    screenshot("dashboard-en")


def test_an_admin_sees_the_province_by_city_and_the_voucher_burn_down(page: Page, report_world, screenshot):
    world = report_world
    sign_in(page, world, "admin")
    page.goto(f"{world.url}/reports/sharing?year=2026")
    expect(page.get_by_test_id("group-city")).to_have_class("nav-link active")
    expect(page.get_by_test_id("total-effective")).to_have_text("11.92")
    screenshot("report-by-city")

    page.goto(f"{world.url}/reports/dashboard?year=2026")
    assert_charts_drawn(page, 8)
    expect(page.get_by_test_id("chart-burndown")).to_be_visible()
    screenshot("dashboard")

    page.get_by_test_id("language-switch").get_by_role("button", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert_charts_drawn(page, 8)
    expect(page.get_by_test_id("heatmap-summary")).to_contain_text("Mon")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    screenshot("dashboard-en")
