"""Booking in headless Chromium against the live server with the demo data: search, calendar, a booking made
by clicking, the live conflict preview, approvals, the facility calendar and the managers' pages.

"Now" is the real clock, so slots are chosen a week or more ahead on a weekday (lead times), and each test
uses its own resource, day or hour so that the tests do not depend on each other's bookings.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import DEMO_PASSWORD
from tests.browser.conftest import sign_in as browser_sign_in

pytestmark = pytest.mark.browser

TZ = ZoneInfo("Asia/Shanghai")


def sign_in(page: Page, email: str) -> None:
    browser_sign_in(page, "", email, DEMO_PASSWORD)  # "": the live server, the context's base URL


def weekday_ahead(days: int) -> date:
    """The first Monday–Friday at least `days` days from today (Beijing time)."""
    day = datetime.now(TZ).date() + timedelta(days=days)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def open_from_catalog(page: Page, query: str, name: str) -> None:
    page.locator('nav a[href="/resources"]').click()
    search = page.get_by_test_id("catalog-search")
    search.locator("input[name=q]").fill(query)
    page.get_by_test_id("catalog-submit").click()
    expect(page.get_by_test_id("catalog-results")).to_contain_text(name)
    page.get_by_test_id("resource-card").filter(has=page.get_by_role("heading", name=name, exact=True)).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)


def show_week_of(page: Page, day: date) -> None:
    """Pages the resource calendar (htmx swaps) forward to the week of `day`."""
    calendar = page.get_by_test_id("calendar")
    target = monday_of(day).isoformat()
    for _ in range(8):
        if calendar.get_attribute("data-start") == target:
            break
        current = calendar.get_attribute("data-start")
        page.get_by_test_id("calendar-next").click()
        expect(calendar).not_to_have_attribute("data-start", current)
    expect(calendar).to_have_attribute("data-start", target)


def pick_slot(page: Page, day: date, start: str) -> None:
    page.locator(f'button[data-slot-date="{day}"][data-slot-from="{start}"]').click()


def test_researcher_searches_opens_a_microscope_and_books_a_free_slot_by_clicking(page: Page, live_server: str,
                                                                                   screenshot) -> None:
    day = weekday_ahead(7)
    sign_in(page, "researcher@labshare.demo")
    page.locator('nav a[href="/resources"]').click()
    page.get_by_test_id("catalog-search").locator("input[name=q]").fill("电镜")
    page.get_by_test_id("catalog-submit").click()
    results = page.get_by_test_id("catalog-results")
    for name in ("场发射扫描电子显微镜", "场发射透射电子显微镜", "场发射扫描电子显微镜（电池材料）"):
        expect(results).to_contain_text(name)
    expect(results).not_to_contain_text("X射线衍射仪")
    screenshot("catalog")

    name = "场发射扫描电子显微镜（电池材料）"
    page.get_by_test_id("resource-card").filter(has=page.get_by_role("heading", name=name, exact=True)).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(page.get_by_test_id("specs")).to_contain_text("分辨率")
    expect(page.get_by_test_id("calendar")).to_have_attribute("data-view", "week")
    expect(page.get_by_test_id("rules")).to_be_visible()
    screenshot("resource")

    show_week_of(page, day)
    pick_slot(page, day, "10:00")
    expect(page.locator("#date")).to_have_value(day.isoformat())
    expect(page.locator("#time_from")).to_have_value("10:00")
    expect(page.locator("#time_to")).to_have_value("11:00")
    preview = page.get_by_test_id("preview-ok")
    expect(preview).to_be_visible()
    expect(preview).to_contain_text(f"{day} 10:00–11:00")
    page.locator("#purpose").fill("电池极片截面形貌观察")
    screenshot("preview-free")

    page.get_by_test_id("book-submit").click()
    expect(page).to_have_url(f"{live_server}/reservations")
    expect(page.locator(".alert-success")).to_contain_text(name)
    row = page.get_by_test_id("upcoming").get_by_test_id("reservation-row").filter(has_text=name)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f"{day} 10:00–11:00")
    expect(row.locator("[data-state]")).to_have_attribute("data-state", "confirmed")
    screenshot("my-reservations")


def test_a_conflicting_choice_shows_the_clash_before_submitting(page: Page, live_server: str, page_watch,
                                                                screenshot) -> None:
    page_watch.allow(409, r"/resources/\d+/book")  # the server refuses the clash too, with the page as answer
    day = weekday_ahead(8)
    name = "场发射扫描电子显微镜（电池材料）"
    sign_in(page, "zhao.yifan@labshare.demo")
    open_from_catalog(page, "电池材料", name)
    show_week_of(page, day)
    pick_slot(page, day, "14:00")
    expect(page.get_by_test_id("preview-ok")).to_be_visible()
    page.get_by_test_id("book-submit").click()
    expect(page).to_have_url(f"{live_server}/reservations")

    page.go_back()
    page.reload()
    show_week_of(page, day)
    column = page.locator(f'[data-date="{day}"]')
    expect(column.get_by_test_id("block-busy")).to_contain_text("14:00–15:00")  # her own booking, shown as hers
    page.locator("#date").fill(day.isoformat())
    page.locator("#time_from").fill("14:30")
    page.locator("#time_to").fill("15:30")
    page.locator("#time_to").dispatch_event("change")
    clash = page.get_by_test_id("preview-clash")
    expect(clash).to_have_count(1)
    expect(clash).to_contain_text(f"{day} 14:00–15:00")
    expect(page.get_by_test_id("join-waitlist")).to_be_visible()
    screenshot("preview-clash")

    page.get_by_test_id("book-submit").click()
    expect(page.get_by_test_id("form-error")).to_contain_text(f"{day} 14:00")
    expect(page.get_by_test_id("preview-clash")).to_contain_text(f"{day} 14:00–15:00")
    screenshot("refused")

    page.get_by_test_id("join-waitlist").click()
    expect(page).to_have_url(re.compile(r"/reservations#waitlist$"))
    expect(page.get_by_test_id("waitlist")).to_contain_text(f"{day} 14:30–15:30")


def test_manager_requires_approval_researcher_requests_manager_approves_and_sees_it_in_the_facility_calendar(
        page: Page, live_server: str, screenshot) -> None:
    day = weekday_ahead(9)
    name = "原子力显微镜"
    sign_in(page, "manager@labshare.demo")
    open_from_catalog(page, "原子力", name)
    page.get_by_test_id("manage-edit").click()
    expect(page.get_by_test_id("resource-form")).to_be_visible()
    page.locator("#approval_required").check()
    screenshot("edit-resource")
    page.get_by_test_id("resource-save").click()
    expect(page.locator(".alert-success")).to_be_visible()
    expect(page.locator("#approval_required")).to_be_checked()

    sign_in(page, "wu.hao@labshare.demo")
    open_from_catalog(page, "原子力", name)
    show_week_of(page, day)
    pick_slot(page, day, "15:00")
    expect(page.get_by_test_id("preview-ok")).to_contain_text(f"{day} 15:00–16:00")
    page.locator("#purpose").fill("薄膜表面粗糙度测量")
    page.get_by_test_id("book-submit").click()
    expect(page).to_have_url(f"{live_server}/reservations")
    expect(page.locator(".alert-info")).to_contain_text(name)
    row = page.get_by_test_id("upcoming").get_by_test_id("reservation-row").filter(has_text=name)
    expect(row.locator("[data-state]")).to_have_attribute("data-state", "pending")

    sign_in(page, "manager@labshare.demo")
    page.locator('nav a[href="/manage/approvals"]').click()
    pending = page.get_by_test_id("pending-row").filter(has_text=name).filter(has_text=f"{day} 15:00–16:00")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("吴昊")
    screenshot("approvals")
    pending.get_by_test_id("approve").click()
    expect(page.locator(".alert-success")).to_be_visible()
    expect(page.get_by_test_id("pending-row").filter(has_text=f"{day} 15:00–16:00").filter(has_text=name)
           ).to_have_count(0)

    page.get_by_test_id("manage-menu").click()  # a facility's tools share one menu
    page.locator('nav a[href="/manage/facilities"]').click()
    page.get_by_test_id("facility-list").locator("a.card", has_text="成都科创生态岛共享实验室").click()
    page.get_by_test_id("facility-calendar-link").click()
    page.locator("input[name=date]").fill(day.isoformat())
    page.get_by_test_id("calendar-go").click()
    row = page.get_by_test_id("calendar-row").filter(has_text=name)
    booked = row.get_by_test_id("calendar-reservation")
    expect(booked).to_have_count(1)
    expect(booked).to_have_class(re.compile(r"\bls-busy\b"))
    expect(booked).to_have_attribute("title", re.compile(f"吴昊 · {day} 15:00–16:00"))
    screenshot("facility-calendar")
    booked.click()
    expect(page.get_by_test_id("reservation-details")).to_contain_text(f"{day} 15:00–16:00")
    screenshot("reservation")


def test_samples_are_sent_by_a_researcher_and_scheduled_by_the_technician(page: Page, live_server: str,
                                                                           screenshot) -> None:
    day = weekday_ahead(10)
    name = "冷冻透射电子显微镜"  # technician-only; its 24-hour sessions start by 14:00, so 18:00–22:00 is free
    description = "蛋白复合物单颗粒数据采集，冷冻载网已制样"
    sign_in(page, "yang.lei@labshare.demo")
    open_from_catalog(page, "冷冻", name)
    expect(page.get_by_test_id("technician-only")).to_be_visible()
    form = page.get_by_test_id("sample-form")
    form.locator("input[name='sr-sample_count']").fill("4")
    form.locator("textarea[name='sr-description']").fill(description)
    form.locator("textarea[name='sr-hazards']").fill("无")
    screenshot("sample-form")
    page.get_by_test_id("sample-submit").click()
    expect(page).to_have_url(re.compile(r"/reservations#samples$"))
    expect(page.get_by_test_id("sample-requests")).to_contain_text(name)

    sign_in(page, "manager@labshare.demo")
    page.locator('nav a[href="/manage/approvals"]').click()
    request = page.get_by_test_id("sample-row").filter(has_text=description)
    request.get_by_role("textbox", name="日期", exact=True).fill(day.isoformat())  # not "结束日期（如跨天）"
    request.locator("input[name$='-time_from']").fill("18:00")
    request.locator("input[name$='-time_to']").fill("22:00")
    request.get_by_test_id("schedule").click()
    expect(page.locator(".alert-success")).to_be_visible()
    expect(page.get_by_test_id("sample-row").filter(has_text=description)).to_have_count(0)

    sign_in(page, "yang.lei@labshare.demo")
    page.locator('nav a[href="/reservations"]').click()
    row = page.get_by_test_id("upcoming").get_by_test_id("reservation-row").filter(has_text=name)
    expect(row).to_contain_text(f"{day} 18:00–22:00")
    page.get_by_test_id("feed-regenerate").click()  # htmx swaps in the new private URL
    url = page.get_by_test_id("feed-url").inner_text().strip()
    assert url.startswith(f"{live_server}/ical/")
    feed = page.request.get(url)
    assert feed.status == 200
    assert "BEGIN:VEVENT" in feed.text()
    screenshot("my-reservations")


def test_manager_pages_blackouts_qualifications_and_the_month_view(page: Page, live_server: str,
                                                                    screenshot) -> None:
    day = weekday_ahead(12)
    name = "显微共聚焦拉曼光谱仪"
    sign_in(page, "manager@labshare.demo")
    open_from_catalog(page, "拉曼", name)
    page.get_by_test_id("manage-blackouts").click()
    form = page.get_by_test_id("blackout-form")
    form.locator("select[name=kind]").select_option("calibration")
    form.locator("input[name=starts_at]").fill(f"{day}T13:00")
    form.locator("input[name=ends_at]").fill(f"{day}T17:00")
    form.locator("input[name=reason]").fill("激光器功率年度校准")
    page.get_by_test_id("blackout-submit").click()
    expect(page.get_by_test_id("blackout-table")).to_contain_text(f"{day} 13:00–17:00")
    screenshot("blackouts")

    page.get_by_test_id("tab-qualifications").click()
    form = page.get_by_test_id("qualification-form")
    form.locator("input[name=email]").fill("researcher@labshare.demo")
    form.locator("input[name=expires_at]").fill((day + timedelta(days=180)).isoformat())
    page.get_by_test_id("grant").click()
    expect(page.get_by_test_id("qualification-row").filter(has_text="王晓雨")).to_have_count(1)
    screenshot("qualifications")

    page.get_by_test_id("tab-public").click()
    show_week_of(page, day)
    expect(page.locator(f'[data-date="{day}"]').get_by_test_id("block-blackout")).to_be_visible()
    screenshot("resource-week")
    page.get_by_test_id("view-month").click()
    expect(page.get_by_test_id("calendar")).to_have_attribute("data-view", "month")
    screenshot("resource-month")

    page.get_by_test_id("manage-menu").click()  # a facility's tools share one menu
    page.locator('nav a[href="/manage/facilities"]').click()
    page.get_by_test_id("facility-list").locator("a.card", has_text="成都科创生态岛共享实验室").click()
    expect(page.get_by_test_id("add-instrument")).to_be_visible()
    screenshot("facility")
    page.get_by_test_id("add-instrument").click()
    expect(page.get_by_test_id("resource-form")).to_be_visible()
    screenshot("new-resource")


def test_a_pilot_line_shows_its_month_and_takes_sample_requests(page: Page, live_server: str, screenshot) -> None:
    name = "1000 L化工中试反应系统"
    sign_in(page, "huang.zihan@labshare.demo")
    open_from_catalog(page, "化工", name)
    calendar = page.get_by_test_id("calendar")
    expect(calendar).to_have_attribute("data-view", "month")
    this_month = calendar.get_attribute("data-start")
    page.get_by_test_id("calendar-next").click()
    expect(calendar).not_to_have_attribute("data-start", this_month)
    expect(page.get_by_test_id("free-day")).not_to_have_count(0)  # whole free days can be picked
    expect(page.get_by_test_id("technician-only")).to_be_visible()  # this pilot line is run by staff
    expect(page.get_by_test_id("sample-form")).to_be_visible()
    screenshot("pilot-line")
