"""The finance pages in headless Chromium: finance reconciles last month and is refused the close while an
exception is open; the facility's lab manager resolves it; finance closes the month, opens a statement and
downloads its PDF; the voucher page draws its burn-down chart.

A live server of its own (a fresh SQLite database with a small billing world), because the demo data has no
measured use to reconcile. "Now" is the real clock: the world's services happen in the previous month.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session

from billing.periods import current_month
from core.accounts.models import OrganisationKind, Role
from tests.billing.factories import make_rate_card, make_usage_session
from tests.browser.conftest import SCREENSHOT_DIR, serving
from tests.browser.conftest import sign_in as browser_sign_in
from tests.factories import (
    make_device,
    make_facility,
    make_organisation,
    make_reservation,
    make_resource,
    make_user,
)

pytestmark = pytest.mark.browser

CUSTOMER_ZH = "电子科技大学微纳实验中心"


def previous_month() -> tuple[str, datetime]:
    """YYYY-MM of last month and 09:00 Shanghai on its 8th."""
    first = current_month().first_day
    last = (first - timedelta(days=1)).replace(day=8)
    return f"{last:%Y-%m}", datetime(last.year, last.month, 8, 1, 0, tzinfo=UTC)


@dataclass
class FinanceWorld:
    url: str
    month: str
    emails: dict[str, str]


def _build_world(db: Session, start: datetime) -> dict[str, str]:
    manager = make_user(db, roles=(Role.LAB_MANAGER,), name_zh="王经理")
    facility = make_facility(db, managers=(manager,), name_zh="成都科创生态岛分析测试中心",
                             owner=make_organisation(db, kind=OrganisationKind.INSTITUTE))
    resource = make_resource(db, facility=facility, name_zh="场发射扫描电镜", name_en="FE-SEM")
    device = make_device(db, resource=resource)
    make_rate_card(db, resource, valid_from=start.date().replace(day=1) - timedelta(days=400))
    researcher = make_user(db, organisation=make_organisation(db, kind=OrganisationKind.UNIVERSITY,
                                                              name_zh=CUSTOMER_ZH, name_en="UESTC Micro-Nano Lab"))
    make_reservation(db, resource=resource, user=researcher, starts_at=start, ends_at=start + timedelta(hours=2))
    make_usage_session(db, device, start, start + timedelta(minutes=160))  # an overrun: an open exception
    finance = make_user(db, roles=(Role.FINANCE,), name_zh="李会计")
    admin = make_user(db, roles=(Role.ADMIN,))

    # a voucher programme with an applied subsidy, for the burn-down chart
    from tests.billing.test_claims import World as ClaimWorld

    ClaimWorld(db)
    return {"manager": manager.email, "finance": finance.email, "admin": admin.email, "researcher": researcher.email}


@pytest.fixture(scope="module")
def finance_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinanceWorld]:
    month, start = previous_month()
    with serving(tmp_path_factory.mktemp("finance-browser"), lambda session: _build_world(session, start)) as (
            url, emails):
        yield FinanceWorld(url, month, emails)


def sign_in(page: Page, world: FinanceWorld, who: str) -> None:
    browser_sign_in(page, world.url, world.emails[who])


def test_finance_closes_a_period_after_the_manager_resolves_its_exception(page: Page, finance_world, screenshot):
    world = finance_world
    sign_in(page, world, "finance")
    page.locator('nav a[href="/finance"]').click()
    expect(page).to_have_url(f"{world.url}/finance/periods/{world.month}")
    page.get_by_test_id("reconcile").click()
    rows = page.get_by_test_id("exception-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("场发射扫描电镜")
    expect(rows.first).to_contain_text("王经理")  # who must resolve it
    page.get_by_test_id("close-period").click()
    expect(page.locator(".alert-danger")).to_contain_text(world.month)
    expect(page.get_by_test_id("exception-row")).to_have_count(1)
    screenshot("refused")

    sign_in(page, world, "manager")
    page.get_by_test_id("manage-menu").click()  # a facility's tools share one menu
    page.locator('nav a[href="/manage/reconciliation"]').click()
    expect(page).to_have_url(f"{world.url}/manage/reconciliation/{world.month}")
    item = page.get_by_test_id("open-item")
    expect(item).to_have_count(1)
    item.get_by_test_id("reason").fill("样品更换耗时，按预约时长计费")
    screenshot("manager")
    item.get_by_test_id("resolve").click()
    expect(page.locator(".alert-success")).to_be_visible()
    expect(page.get_by_test_id("open-item")).to_have_count(0)

    sign_in(page, world, "finance")
    page.goto(f"{world.url}/finance/periods/{world.month}")
    page.get_by_test_id("close-period").click()
    expect(page.get_by_test_id("period-closed")).to_be_visible()
    expect(page.get_by_test_id("statement-row")).to_have_count(1)
    screenshot("closed")

    page.goto(f"{world.url}/finance/statements?month={world.month}")
    row = page.get_by_test_id("statement-row")
    expect(row).to_contain_text(CUSTOMER_ZH)
    row.get_by_role("link").first.click()
    expect(page.get_by_test_id("statement-lines")).to_contain_text("场发射扫描电镜")
    expect(page.get_by_test_id("gross-total")).to_have_text("¥400.00")
    screenshot("statement")
    with page.expect_download() as info:
        page.get_by_test_id("download-pdf").click()
    download = info.value
    target = SCREENSHOT_DIR / f"finance-{download.suggested_filename}"
    download.save_as(target)
    assert Path(target).read_bytes().startswith(b"%PDF")
    assert download.suggested_filename.endswith(".pdf")


def test_the_voucher_page_draws_the_burn_down(page: Page, finance_world, screenshot):
    sign_in(page, finance_world, "admin")
    page.goto(f"{finance_world.url}/finance/vouchers")
    screenshot()
    chart = page.get_by_test_id("burn-down").locator(".ls-chart[data-chart-ready] svg")
    expect(chart).to_have_count(1)
    expect(page.get_by_test_id("programme-row")).to_have_count(1)
    screenshot()
