"""The public side in headless Chromium against a live server with the demo data and its rate cards: a visitor
who never signed in browses the catalog, searches 电镜, opens a resource and sees its prices and the way to sign
in; then registers an organisation, which a platform admin approves, and signs in as its first user."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session

from core.accounts.credit_code import make_credit_code
from tests.browser.conftest import DEMO_PASSWORD, serving, submit_login

pytestmark = pytest.mark.browser

NEW_PASSWORD = "a new organisation's password"


@pytest.fixture(scope="module")
def public_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo data with its rate cards (the shared live server has none), served on a free port."""
    from web.demo.seed import seed_demo, seed_demo_billing

    def fill(session: Session) -> None:
        seed_demo(session)
        seed_demo_billing(session)

    with serving(tmp_path_factory.mktemp("public-browser"), fill) as (url, _nothing):
        yield url


def test_a_visitor_browses_the_public_catalog_and_sees_prices(page: Page, public_url, screenshot):
    page.context.clear_cookies()
    page.goto(f"{public_url}/")

    expect(page).to_have_url(re.compile(r"/resources$"))
    expect(page.get_by_test_id("public-catalog-link")).to_be_visible()
    expect(page.get_by_test_id("nav-register")).to_be_visible()
    page.get_by_test_id("catalog-search").locator("input[name=q]").fill("电镜")
    page.get_by_test_id("catalog-submit").click()
    cards = page.get_by_test_id("resource-card")
    expect(cards.first).to_be_visible()
    expect(page).to_have_url(re.compile(r"q=%E7%94%B5%E9%95%9C"))  # 电镜 finds the electron microscopes
    expect(page.get_by_test_id("catalog-results")).to_contain_text("电子显微镜")
    screenshot("catalog")

    name = cards.first.get_by_role("heading").inner_text()
    cards.first.click()

    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(page.get_by_test_id("prices")).to_contain_text("¥")
    expect(page.get_by_test_id("rules")).to_be_visible()
    expect(page.get_by_test_id("calendar")).to_be_visible()
    expect(page.get_by_test_id("booking-form")).to_have_count(0)
    sign_in_link = page.get_by_test_id("sign-in-link")
    expect(sign_in_link).to_be_visible()
    resource_path = page.url.removeprefix(public_url).split("?")[0]
    assert sign_in_link.get_attribute("href") == f"/login?next={resource_path}"
    screenshot("resource")

    sign_in_link.click()
    form = page.get_by_test_id("login-form")
    form.locator("input[name=email]").fill("researcher@labshare.demo")
    form.locator("input[name=password]").fill(DEMO_PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)  # back on the resource page
    expect(page.get_by_test_id("sign-in-to-book")).to_have_count(0)
    expect(page.locator("#book, #samples").first).to_be_visible()  # a booking or sample form now


def test_an_organisation_registers_is_approved_and_signs_in(page: Page, public_url, page_watch, screenshot):
    credit_code = make_credit_code("9", "1", "510700", f"{secrets.randbelow(10**8):08d}")
    email = f"owner.{secrets.token_hex(3)}@precision.example"
    page.context.clear_cookies()
    page.goto(f"{public_url}/resources")
    page.get_by_test_id("nav-register").click()

    form = page.get_by_test_id("registration-form")
    form.locator("input[name=name_zh]").fill("绵阳精密光学有限公司")
    form.locator("input[name=name_en]").fill("Mianyang Precision Optics Co.")
    form.locator("input[name=credit_code]").fill(credit_code[:-1] + ("1" if credit_code[-1] != "1" else "2"))
    form.locator("select[name=kind]").select_option("enterprise")
    form.locator("select[name=city]").select_option("510700")
    form.locator("input[name=tech_sme]").check()
    form.locator("input[name=user_name_zh]").fill("周工")
    form.locator("input[name=email]").fill(email)
    form.locator("input[name=password]").fill(NEW_PASSWORD)
    form.locator("input[name=password_again]").fill(NEW_PASSWORD)
    page_watch.allow(422, "/register")
    page.get_by_test_id("registration-submit").click()
    expect(form.locator("#credit_code ~ .invalid-feedback")).to_be_visible()  # the typo is caught
    screenshot("typo")

    form.locator("input[name=credit_code]").fill(credit_code)
    form.locator("input[name=password]").fill(NEW_PASSWORD)
    form.locator("input[name=password_again]").fill(NEW_PASSWORD)
    page.get_by_test_id("registration-submit").click()
    expect(page.get_by_test_id("registration-done")).to_contain_text(email)
    screenshot("done")

    page_watch.allow(401, "/login")
    submit_login(page, public_url, email, NEW_PASSWORD)
    expect(page.get_by_test_id("form-error")).to_be_visible()  # waiting for approval, not a wrong password
    screenshot("pending")

    submit_login(page, public_url, "admin@labshare.demo", DEMO_PASSWORD)
    page.goto(f"{public_url}/admin/organisations")
    row = page.get_by_test_id("pending-table").locator("tr", has_text=credit_code)
    expect(row).to_contain_text("绵阳精密光学有限公司")
    screenshot("queue")
    row.get_by_role("button", name=re.compile("批准|Approve")).click()
    expect(page.locator(".alert-success")).to_contain_text("绵阳精密光学有限公司")

    submit_login(page, public_url, email, NEW_PASSWORD)
    expect(page.get_by_test_id("user-menu")).to_contain_text("周工")
