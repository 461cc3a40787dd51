"""The device registry pages in headless Chromium: a lab manager adds a device through the form and sees its
broker password once."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_pages_in_chromium import sign_in

pytestmark = pytest.mark.browser


def test_a_lab_manager_adds_a_device_and_sees_its_password_once(page: Page, live_server: str, screenshot) -> None:
    sign_in(page, "manager@labshare.demo")
    page.get_by_test_id("manage-menu").click()  # a facility's tools share one menu
    page.locator('.ls-navbar a[href="/manage/devices"]').click()
    expect(page).to_have_url(f"{live_server}/manage/devices")
    page.get_by_test_id("add-device").click()

    form = page.get_by_test_id("device-form")
    resource = form.locator("select[name=resource_id]")
    first_resource = resource.locator("option").nth(1).get_attribute("value")
    resource.select_option(first_resource)
    form.locator("input[name=device_id]").fill("browser-sem-01")
    form.locator("textarea[name=description]").fill("一号楼 B101 电源监测")
    form.locator("select[name=usage_source]").select_option("power")
    form.locator("input[name=power_threshold_w]").fill("300")
    form.locator("input[name=debounce_s]").fill("30")
    screenshot("form")
    page.get_by_test_id("device-save").click()

    secret = page.get_by_test_id("broker-password")
    expect(secret).to_be_visible()
    password = secret.inner_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{24,}", password), password
    expect(page.get_by_test_id("broker-username")).to_have_text("browser-sem-01")
    expect(page.get_by_test_id("topic-prefix")).to_have_text("labshare/v1/browser-sem-01/")
    expect(page.get_by_test_id("example-command")).to_contain_text(f"-u browser-sem-01 -P {password}")
    expect(page.get_by_test_id("password-once")).to_be_visible()
    screenshot()

    page.get_by_test_id("back-to-devices").click()
    row = page.locator('[data-testid=device-row][data-device-id="browser-sem-01"]')
    expect(row).to_be_visible()
    expect(row.get_by_test_id("device-enabled")).to_be_visible()
    assert password not in page.content()
    screenshot("list")
