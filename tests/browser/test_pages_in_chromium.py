"""The real pages in headless Chromium: sign-in, language, the role dashboards, facilities, tokens, sign-out."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

PASSWORD = "labshare-demo"
CJK_FONTS = ("WenQuanYi", "Noto Sans CJK", "Noto Serif CJK", "Source Han")
ROLE_SECTIONS = ("section-admin", "section-facilities", "section-finance")


def sign_in(page: Page, email: str, password: str = PASSWORD, *, keystrokes: bool = False) -> None:
    """Fills the real sign-in form (key by key with `keystrokes`, as a person types) and clicks the button."""
    page.goto("/login")
    form = page.get_by_test_id("login-form")
    for name, value in (("email", email), ("password", password)):
        box = form.locator(f"input[name={name}]")
        if keystrokes:
            box.press_sequentially(value)
        else:
            box.fill(value)
    page.get_by_test_id("login-submit").click()


def expect_dashboard(page: Page, live_server: str) -> None:
    expect(page).to_have_url(f"{live_server}/")
    expect(page.locator(".ls-chart svg")).to_be_visible()  # ECharts drew the pie (labshare.js, SVG renderer)


def expect_current_language(page: Page, name: str) -> None:
    """The navbar's language buttons mark exactly the language the page is in."""
    for button in page.get_by_test_id("language-switch").get_by_role("button").all():
        if button.inner_text() == name:
            expect(button).to_have_attribute("aria-pressed", "true")
            expect(button).to_have_class(re.compile(r"\bbtn-light\b"))
        else:
            expect(button).not_to_have_attribute("aria-pressed", "true")
            expect(button).to_have_class(re.compile(r"\bbtn-outline-light\b"))


def rendered_fonts(page: Page, selector: str) -> list[str]:
    """The fonts Chromium really used to draw the text of `selector` (DevTools protocol, not CSS)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    cdp.detach()
    return [f["familyName"] for f in fonts if f["glyphCount"] > 0]


def test_sign_in_page_renders_in_chinese_with_a_cjk_font(page: Page, screenshot) -> None:
    page.goto("/login")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page).to_have_title(re.compile("^登录 · "))
    expect(page.get_by_role("heading", name="登录")).to_be_visible()
    form = page.get_by_test_id("login-form")
    expect(form.get_by_label("邮箱")).to_be_visible()
    expect(form.get_by_label("密码")).to_be_visible()
    expect_current_language(page, "中文")
    fonts = rendered_fonts(page, "[data-testid=login-submit]")
    assert any(name.startswith(CJK_FONTS) for name in fonts), f"登录 drawn without a CJK font: {fonts}"
    screenshot()


def test_researcher_signs_in_and_sees_the_dashboard_with_its_chart(page: Page, live_server: str, screenshot) -> None:
    sign_in(page, "researcher@labshare.demo", keystrokes=True)
    expect_dashboard(page, live_server)
    expect(page.get_by_role("heading", level=1)).to_have_text("欢迎，王晓雨")
    expect(page.get_by_test_id("roles")).to_have_text("科研用户")
    chart = page.locator(".ls-chart")
    expect(chart).to_have_attribute("data-chart-ready", "1")
    assert chart.locator("svg path").count() >= 3, "the pie has no slices"
    expect(chart.locator("svg")).to_contain_text("检验检测")  # a slice label, in Chinese
    for section in ROLE_SECTIONS:
        expect(page.get_by_test_id(section)).to_have_count(0)
    screenshot()


def test_wrong_password_shows_the_chinese_error_and_stays_on_sign_in(page: Page, live_server: str, page_watch,
                                                                      screenshot) -> None:
    page_watch.allow(401, "/login")  # the sign-in page answers a wrong password with 401
    sign_in(page, "researcher@labshare.demo", "not-the-password", keystrokes=True)
    expect(page.get_by_test_id("form-error")).to_have_text("邮箱或密码错误。")
    expect(page).to_have_url(f"{live_server}/login")
    expect(page.get_by_test_id("login-form").locator("input[name=email]")).to_have_value("researcher@labshare.demo")
    expect(page.get_by_test_id("login-form").locator("input[name=password]")).to_have_value("")
    screenshot()


def test_language_switch_is_remembered_across_reloads(page: Page, live_server: str) -> None:
    switch = page.get_by_test_id("language-switch")
    page.goto("/login")
    expect(page.get_by_role("heading", name="登录")).to_be_visible()
    switch.get_by_role("button", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect_current_language(page, "English")
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert {c["name"]: c["value"] for c in page.context.cookies()}["labshare_lang"] == "en"
    switch.get_by_role("button", name="中文").click()
    expect(page.get_by_role("heading", name="登录")).to_be_visible()

    # Signed in, the choice is also saved to the profile; a researcher of their own keeps other tests apart
    sign_in(page, "zhao.yifan@labshare.demo")
    nav = page.get_by_role("navigation")
    expect(nav.get_by_role("link", name="首页")).to_be_visible()
    switch.get_by_role("button", name="English").click()
    expect(nav.get_by_role("link", name="Home")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, Zhao Yifan")
    page.reload()
    expect(nav.get_by_role("link", name="Home")).to_be_visible()
    switch.get_by_role("button", name="中文").click()
    expect(nav.get_by_role("link", name="首页")).to_be_visible()
    expect_current_language(page, "中文")
    expect(page).to_have_url(f"{live_server}/")


@pytest.mark.parametrize(("email", "sees", "name"), [
    ("admin@labshare.demo", set(ROLE_SECTIONS), "周启明"),
    ("manager@labshare.demo", {"section-facilities"}, "刘思源"),
    ("finance@labshare.demo", {"section-finance"}, "陈静"),
], ids=["admin", "manager", "finance"])
def test_each_role_sees_its_sections_on_the_dashboard(page: Page, live_server: str, screenshot,
                                                       email: str, sees: set[str], name: str) -> None:
    sign_in(page, email)
    expect_dashboard(page, live_server)
    expect(page.get_by_role("heading", level=1)).to_have_text(f"欢迎，{name}")
    for section in ROLE_SECTIONS:
        expect(page.get_by_test_id(section)).to_have_count(1 if section in sees else 0)
    screenshot()


def test_manager_opens_a_facility_from_the_dashboard(page: Page, live_server: str, screenshot) -> None:
    sign_in(page, "manager@labshare.demo")
    expect_dashboard(page, live_server)
    card = page.get_by_test_id("section-facilities").locator("a.card").first
    facility_name = card.locator(".fw-semibold").inner_text()
    card.click()
    expect(page).to_have_url(re.compile(r"/manage/facilities/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(facility_name)
    rows = page.get_by_test_id("resource-table").locator("tbody tr")
    assert rows.count() >= 1
    expect(rows.first.locator(".badge").first).to_have_text(re.compile("^(仪器|中试线)$"))
    expect(page.get_by_test_id("manage-menu")).to_have_class(re.compile(r"\bactive\b"))
    screenshot()


def test_sign_out_from_the_user_menu_returns_to_sign_in(page: Page, live_server: str) -> None:
    sign_in(page, "researcher@labshare.demo")
    expect_dashboard(page, live_server)
    sign_out = page.get_by_test_id("sign-out")
    expect(sign_out).to_be_hidden()
    page.get_by_test_id("user-menu").click()  # a Bootstrap dropdown: needs bootstrap.bundle.js
    expect(sign_out).to_be_visible()
    sign_out.click()
    expect(page).to_have_url(f"{live_server}/login")
    expect(page.get_by_role("alert")).to_contain_text("您已退出登录。")
    page.goto("/")
    expect(page).to_have_url(f"{live_server}/resources")  # signed out, home is the public catalog


def test_api_token_secret_is_shown_once(page: Page, live_server: str, screenshot) -> None:
    sign_in(page, "researcher@labshare.demo")
    expect_dashboard(page, live_server)
    page.get_by_test_id("user-menu").click()
    page.get_by_role("link", name="API 令牌").click()
    expect(page).to_have_url(f"{live_server}/account/tokens")
    form = page.get_by_test_id("token-form")
    form.get_by_label("令牌名称").fill("XRD 数据同步脚本")
    form.get_by_role("button", name="创建令牌").click()
    secret = page.get_by_test_id("new-token-secret")
    expect(secret).to_be_visible()
    value = secret.inner_text().strip()
    assert len(value) >= 32, value
    row = page.get_by_test_id("token-table").locator("tbody tr", has_text="XRD 数据同步脚本")
    expect(row).to_have_count(1)
    prefix = row.locator("code").inner_text().rstrip("…")
    assert prefix
    assert value.startswith(prefix)
    expect(row).to_contain_text("有效")
    expect(form.get_by_label("令牌名称")).to_have_value("")
    screenshot()
    page.goto("/account/tokens")
    expect(page.get_by_test_id("new-token")).to_have_count(0)
    expect(page.get_by_test_id("token-table")).not_to_contain_text(value)


def test_engineer_with_english_profile_sees_english_after_sign_in(page: Page, live_server: str, screenshot) -> None:
    page.goto("/login")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    sign_in(page, "engineer@labshare.demo")
    expect_dashboard(page, live_server)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, Li Mingzhe")
    expect(page.get_by_role("navigation").get_by_role("link", name="Home")).to_be_visible()
    expect_current_language(page, "English")
    assert {c["name"]: c["value"] for c in page.context.cookies()}["labshare_lang"] == "en"
    screenshot()


def test_researcher_is_refused_a_manager_page(page: Page, live_server: str, page_watch, screenshot) -> None:
    page_watch.allow(403, "/manage/facilities")
    sign_in(page, "researcher@labshare.demo")
    expect_dashboard(page, live_server)
    response = page.goto("/manage/facilities")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_test_id("error-message")).to_have_text("您无权查看此页面。")
    screenshot()


@pytest.mark.parametrize(("email", "path", "testid"), [
    ("admin@labshare.demo", "/manage/facilities", "facility-list"),
    ("admin@labshare.demo", "/admin/organisations", "organisation-table"),
    ("admin@labshare.demo", "/admin/users", "user-table"),
    ("researcher@labshare.demo", "/account/profile", "profile-form"),
], ids=["facilities", "organisations", "users", "profile"])
def test_other_pages_render(page: Page, live_server: str, screenshot, email: str, path: str, testid: str) -> None:
    sign_in(page, email)
    expect_dashboard(page, live_server)
    page.goto(path)
    expect(page.get_by_test_id(testid)).to_be_visible(timeout=2000)
    screenshot()


@pytest.mark.parametrize("email", ["admin@labshare.demo", "manager@labshare.demo", "manager3@labshare.demo",
                                   "finance@labshare.demo", "researcher@labshare.demo"])
def test_the_navigation_bar_fits_1280_pixels_for_every_role_in_both_languages(page: Page, live_server: str,
                                                                              email: str) -> None:
    # manager3 is a lab manager and a researcher: the longest bar
    sign_in(page, email)
    expect_dashboard(page, live_server)
    for language in ("English", "中文"):
        page.get_by_test_id("language-switch").get_by_role("button", name=language).click()
        expect(page.locator("html")).to_have_attribute("lang", "en" if language == "English" else "zh-CN")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280, language
        navbar = page.locator("nav.ls-navbar")
        assert navbar.bounding_box()["height"] < 80, f"the bar wrapped onto two lines in {language}"
