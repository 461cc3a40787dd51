"""The pages themselves: profile, password, API tokens, organisations, error pages, headers and assets."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from sqlalchemy import select

from core.accounts.credit_code import CHARSET
from core.accounts.models import ApiToken, Locale, Organisation, OrganisationKind, User
from core.audit import AuditEntry
from tests.factories import PASSWORD, make_token, make_user, row_counts, unique_credit_code

ACCOUNT_TABLES = (User, Organisation, ApiToken, AuditEntry)


# --- reading pages -----------------------------------------------------------------------------------------

def field_errors(page: str, field_id: str) -> list[str]:
    """The messages shown under one form field (the field macro puts them right after its input)."""
    start = page.index(f'id="{field_id}"')
    ends = [i for i in (page.find('<div class="mb-3">', start), page.find("</form>", start)) if i != -1]
    block = page[start:min(ends)]
    return [html.unescape(m) for m in re.findall(r'<div class="invalid-feedback d-block">(.*?)</div>', block)]


def input_is_marked_invalid(page: str, field_id: str) -> bool:
    tag = re.search(rf'<(?:input|select)[^>]*id="{re.escape(field_id)}"[^>]*>', page)
    assert tag, f"no field {field_id}"
    return "is-invalid" in tag.group(0)


def flashes(page: str) -> list[str]:
    alerts = re.findall(r'<div class="alert alert-\w+ alert-dismissible[^>]*>(.*?)<button', page, re.S)
    return [html.unescape(message.strip()) for message in alerts]


class AssetLinks(HTMLParser):
    """Every URL a page makes the browser load or follow: link href, script src, img src, a href, form action."""

    def __init__(self):
        super().__init__()
        self.loaded: list[str] = []
        self.followed: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and attrs.get("href"):
            self.loaded.append(attrs["href"])
        elif tag in ("script", "img") and attrs.get("src"):
            self.loaded.append(attrs["src"])
        elif tag == "a" and attrs.get("href"):
            self.followed.append(attrs["href"])
        elif tag == "form" and attrs.get("action"):
            self.followed.append(attrs["action"])


def links_of(page: str) -> AssetLinks:
    parser = AssetLinks()
    parser.feed(page)
    return parser


def user_row(db, user_id: int) -> User:
    db.expire_all()
    return db.get(User, user_id)


@pytest.fixture
def researcher(db, auth) -> User:
    user = make_user(db, name_zh="王五", name_en="Wang Wu")
    assert auth.login(user.email, PASSWORD).status_code == 302
    return user


@pytest.fixture
def admin(db, auth) -> User:
    user = make_user(db, roles=("admin",))
    assert auth.login(user.email, PASSWORD).status_code == 302
    return user


# --- profile -------------------------------------------------------------------------------------------------

def test_profile_update_saves_names_and_language(db, client, auth, researcher):
    token = auth.csrf_token("/account/profile")

    response = client.post("/account/profile", data={"name_zh": " 王小五 ", "name_en": "Xiaowu Wang", "locale": "en",
                                                     "csrf_token": token})

    assert response.status_code == 302
    assert response.headers["Location"] == "/account/profile"
    user = user_row(db, researcher.id)
    assert (user.name_zh, user.name_en, user.locale) == ("王小五", "Xiaowu Wang", Locale.EN)
    assert client.get_cookie("labshare_lang").value == "en"
    page = client.get("/account/profile").get_data(as_text=True)
    assert "Your profile has been saved." in flashes(page)
    assert 'value="Xiaowu Wang"' in page


def test_profile_shows_the_current_values(client, researcher):
    page = client.get("/account/profile").get_data(as_text=True)

    assert 'id="name_zh"' in page
    assert 'value="王五"' in page
    assert '<option selected value="zh_CN">中文</option>' in page


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name_zh", "", "请输入姓名。"),
    ("name_zh", "   ", "请输入姓名。"),
    ("name_zh", "名" * 101, "字段长度不能超过 100 个字符。"),
    ("name_en", "x" * 101, "字段长度不能超过 100 个字符。"),
    ("locale", "fr", "不是有效的选择。"),
])
def test_invalid_profile_input_is_shown_next_to_the_field_and_changes_nothing(db, client, auth, researcher, field,
                                                                              value, message):
    data = {"name_zh": "新名字", "name_en": "New name", "locale": "en", field: value,
            "csrf_token": auth.csrf_token("/account/profile")}
    before = row_counts(db, *ACCOUNT_TABLES)

    response = client.post("/account/profile", data=data)

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert field_errors(page, field) == [message]
    assert input_is_marked_invalid(page, field)
    assert all(field_errors(page, other) == [] for other in ("name_zh", "name_en", "locale") if other != field)
    user = user_row(db, researcher.id)
    assert (user.name_zh, user.name_en, user.locale) == ("王五", "Wang Wu", Locale.ZH_CN)
    assert row_counts(db, *ACCOUNT_TABLES) == before
    assert "labshare_lang=en" not in response.headers.get("Set-Cookie", "")


# --- password ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("current", "new", "field", "message"), [
    ("wrong password", "a brand new password", "pw-current_password", "当前密码错误。"),
    ("", "a brand new password", "pw-current_password", "请输入密码。"),
    (PASSWORD, "short", "pw-new_password", "密码至少需要 8 个字符。"),
    (PASSWORD, "", "pw-new_password", "请输入新密码。"),
])
def test_password_change_refused_leaves_the_password_alone(db, client, auth, researcher, current, new, field,
                                                           message):
    before = row_counts(db, *ACCOUNT_TABLES)
    old_hash = researcher.password_hash

    response = client.post("/account/password", data={"pw-current_password": current, "pw-new_password": new,
                                                      "csrf_token": auth.csrf_token("/account/profile")})

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert field_errors(page, field) == [message]
    assert user_row(db, researcher.id).password_hash == old_hash
    assert row_counts(db, *ACCOUNT_TABLES) == before
    auth.logout()
    assert auth.login(researcher.email, PASSWORD).status_code == 302


def test_password_change_with_the_right_current_password_takes_effect(db, client, auth, researcher):
    new_password = "a brand new password"

    response = client.post("/account/password", data={
        "pw-current_password": PASSWORD, "pw-new_password": new_password,
        "csrf_token": auth.csrf_token("/account/profile")})

    assert response.status_code == 302
    assert "密码已修改。" in flashes(client.get("/account/profile").get_data(as_text=True))
    db.expire_all()
    assert db.scalar(select(AuditEntry.actor_id).where(AuditEntry.action == "user.password_changed")) == researcher.id
    auth.logout()
    assert auth.login(researcher.email, PASSWORD).status_code == 401
    assert auth.login(researcher.email, new_password).status_code == 302
    assert client.get("/").status_code == 200


# --- API tokens ------------------------------------------------------------------------------------------------

def create_token_on_page(client, auth, name: str):
    return client.post("/account/tokens", data={"name": name, "csrf_token": auth.csrf_token("/account/tokens")})


def shown_secret(page: str) -> str | None:
    match = re.search(r'data-testid="new-token-secret">([^<]+)<', page)
    return match.group(1) if match else None


def test_a_new_token_is_shown_once_and_works(db, client, auth, researcher):
    response = create_token_on_page(client, auth, "nightly export")

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    secret = shown_secret(page)
    assert secret is not None
    assert re.fullmatch(r"lsk_[A-Za-z0-9_-]{43}", secret)
    assert f"<code>{secret[:8]}…</code>" in page
    db.expire_all()
    token = db.scalar(select(ApiToken).where(ApiToken.user_id == researcher.id))
    assert (token.name, token.prefix) == ("nightly export", secret[:8])
    assert secret not in (token.digest, token.prefix)

    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    assert me.json["email"] == researcher.email

    again = client.get("/account/tokens").get_data(as_text=True)
    assert 'data-testid="new-token-secret"' not in again
    assert secret not in again
    assert "nightly export" in again


@pytest.mark.parametrize(("name", "message"), [
    ("existing", "您已有同名令牌。"),
    ("", "请为令牌命名。"),
    ("   ", "请为令牌命名。"),
    ("n" * 101, "字段长度不能超过 100 个字符。"),
])
def test_a_token_that_cannot_be_created_is_explained_and_nothing_is_written(db, client, auth, researcher, name,
                                                                            message):
    make_token(db, researcher, name="existing")
    before = row_counts(db, *ACCOUNT_TABLES)

    response = create_token_on_page(client, auth, name)

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert field_errors(page, "name") == [message]
    assert shown_secret(page) is None
    assert row_counts(db, *ACCOUNT_TABLES) == before


def test_revoking_a_token_stops_it_working(db, client, auth, researcher):
    token, secret = make_token(db, researcher, name="old script")
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200

    response = client.post(f"/account/tokens/{token.id}/revoke",
                           data={"csrf_token": auth.csrf_token("/account/tokens")})

    assert response.status_code == 302
    assert response.headers["Location"] == "/account/tokens"
    page = client.get("/account/tokens").get_data(as_text=True)
    assert "令牌“old script”已吊销。" in flashes(page)
    refused = client.get("/api/v1/me", headers=headers)
    assert refused.status_code == 401
    assert refused.json["error"]["code"] == "invalid_token"
    assert refused.json["error"]["details"] == {"reason": "revoked"}
    db.expire_all()
    assert db.get(ApiToken, token.id).revoked_at is not None
    assert db.scalar(select(AuditEntry.target_id).where(AuditEntry.action == "api_token.revoked")) == str(token.id)


def test_revoking_someone_elses_token_changes_nothing(db, client, auth, researcher):
    other_token, other_secret = make_token(db, make_user(db), name="theirs")
    before = row_counts(db, *ACCOUNT_TABLES)

    response = client.post(f"/account/tokens/{other_token.id}/revoke",
                           data={"csrf_token": auth.csrf_token("/account/tokens")})

    assert response.status_code == 302
    page = client.get("/account/tokens").get_data(as_text=True)
    assert any("不存在" in message for message in flashes(page))
    assert "theirs" not in page
    db.expire_all()
    assert db.get(ApiToken, other_token.id).revoked_at is None
    assert row_counts(db, *ACCOUNT_TABLES) == before
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {other_secret}"}).status_code == 200


def test_the_token_list_shows_only_the_users_own_tokens(db, client, researcher):
    make_token(db, researcher, name="mine")
    make_token(db, make_user(db), name="someone else's")

    page = client.get("/account/tokens").get_data(as_text=True)

    assert "mine" in page
    assert "someone else" not in page


# --- organisations (admin) -------------------------------------------------------------------------------------

def register_organisation(client, auth, **overrides):
    data = {"name_zh": "成都示例科技有限公司", "name_en": "Chengdu Example Tech Co., Ltd.",
            "credit_code": unique_credit_code(), "kind": "enterprise", "city": "510700", "tech_sme": "y",
            "csrf_token": auth.csrf_token("/admin/organisations")}
    data.update(overrides)
    return client.post("/admin/organisations", data=data), data


def test_registering_an_organisation_with_a_valid_credit_code(db, client, auth, admin):
    response, data = register_organisation(client, auth)

    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/organisations"
    page = client.get("/admin/organisations").get_data(as_text=True)
    assert "单位“成都示例科技有限公司”已注册。" in flashes(page)
    assert f"<code>{data['credit_code']}</code>" in page
    db.expire_all()
    org = db.scalar(select(Organisation).where(Organisation.credit_code == data["credit_code"]))
    assert (org.name_zh, org.kind, org.city, org.tech_sme) == (data["name_zh"], OrganisationKind.ENTERPRISE,
                                                               "510700", True)
    assert db.scalar(select(AuditEntry.actor_id).where(AuditEntry.action == "organisation.created")) == admin.id


def test_a_credit_code_typed_in_lower_case_with_spaces_is_stored_normalised(db, client, auth, admin):
    code = unique_credit_code()
    typed = f" {code[:6].lower()} {code[6:]} "

    response, _data = register_organisation(client, auth, credit_code=typed)

    assert response.status_code == 302
    db.expire_all()
    assert db.scalar(select(Organisation.credit_code).where(Organisation.name_en.like("Chengdu Example%"))) == code


def wrong_check_character(code: str) -> str:
    return code[:17] + next(c for c in CHARSET if c != code[17])


def with_letter_i(code: str) -> str:
    return code[:10] + "I" + code[11:]


@pytest.mark.parametrize(("case", "mangle", "message"), [
    ("wrong check character", wrong_check_character, "校验位不匹配：该信用代码可能有输入错误。"),
    ("17 characters", lambda code: code[:17], "统一社会信用代码应为 18 位。"),
    ("19 characters", lambda code: code + "0", "统一社会信用代码应为 18 位。"),
    ("letter I", with_letter_i, "第 11 位含有统一社会信用代码不允许的字符。"),
    ("letter O", lambda code: code[:9] + "O" + code[10:], "第 10 位含有统一社会信用代码不允许的字符。"),
])
def test_an_invalid_credit_code_is_explained_next_to_the_field_and_nothing_is_created(db, client, auth, admin, case,
                                                                                       mangle, message):
    before = row_counts(db, *ACCOUNT_TABLES)

    response, _data = register_organisation(client, auth, credit_code=mangle(unique_credit_code()))

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert field_errors(page, "credit_code") == [message]
    assert input_is_marked_invalid(page, "credit_code")
    assert all(field_errors(page, other) == [] for other in ("name_zh", "name_en", "kind", "city"))
    assert row_counts(db, *ACCOUNT_TABLES) == before


def test_a_credit_code_already_registered_is_refused(db, client, auth, admin):
    first, data = register_organisation(client, auth)
    assert first.status_code == 302
    before = row_counts(db, *ACCOUNT_TABLES)

    response, _data = register_organisation(client, auth, credit_code=data["credit_code"], name_zh="另一家单位")

    assert response.status_code == 422
    assert field_errors(response.get_data(as_text=True), "credit_code") == ["该信用代码的单位已注册。"]
    assert row_counts(db, *ACCOUNT_TABLES) == before


# --- error pages ------------------------------------------------------------------------------------------------

def test_404_page_is_in_chinese(client):
    response = client.get("/no/such/page")

    page = response.get_data(as_text=True)
    assert response.status_code == 404
    assert 'data-testid="error-page"' in page
    assert '<p class="lead" data-testid="error-message">页面不存在。</p>' in page
    assert "返回首页" in page


def test_404_page_follows_the_chosen_language(client):
    client.set_cookie("labshare_lang", "en")

    page = client.get("/no/such/page").get_data(as_text=True)

    assert "This page does not exist." in page


def test_403_page_says_the_user_lacks_permission(db, client, researcher):
    response = client.get("/admin/organisations")

    page = response.get_data(as_text=True)
    assert response.status_code == 403
    assert '<p class="lead" data-testid="error-message">您无权查看此页面。</p>' in page


def test_405_page_is_an_error_page_too(client):
    response = client.get("/logout")

    page = response.get_data(as_text=True)
    assert response.status_code == 405
    assert '<p class="lead" data-testid="error-message">此处不允许该请求方法。</p>' in page


# --- security headers and assets ----------------------------------------------------------------------------------

def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


ALLOWED_SOURCES = {"'self'", "'none'", "'unsafe-inline'", "data:"}


@pytest.mark.parametrize("path", ["/login", "/", "/no/such/page", "/api/v1/me", "/static/css/labshare.css",
                                  "/healthz"])
def test_security_headers_are_on_every_response(client, path):
    response = client.get(path)
    response.close()

    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    csp = csp_directives(response.headers["Content-Security-Policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    for directive, sources in csp.items():
        assert set(sources) <= ALLOWED_SOURCES, (directive, sources)  # no CDN or other host


def asset_urls(client, auth, db) -> set[str]:
    urls = set(links_of(client.get("/login").get_data(as_text=True)).loaded)
    user = make_user(db, roles=("admin",))
    auth.login(user.email, PASSWORD)
    urls |= set(links_of(client.get("/").get_data(as_text=True)).loaded)
    return urls


def test_every_asset_of_the_layout_is_served_by_the_app(db, client, auth):
    urls = asset_urls(client, auth, db)

    assert {"/static/vendor/bootstrap/css/bootstrap.min.css", "/static/vendor/htmx/htmx.min.js",
            "/static/vendor/echarts/echarts.min.js", "/static/js/labshare.js"} <= urls
    for url in sorted(urls):
        assert url.startswith("/static/"), url
        with client.get(url) as response:
            assert response.status_code == 200, url
            assert response.get_data(), url
            if url.endswith(".css"):
                assert response.mimetype == "text/css", url
            if url.endswith(".js"):
                assert response.mimetype in ("text/javascript", "application/javascript"), url


def test_fonts_and_images_the_stylesheets_use_are_served_too(db, client, auth):
    stylesheets = [url for url in asset_urls(client, auth, db) if url.endswith(".css")]

    checked = 0
    for sheet in stylesheets:
        with client.get(sheet) as response:
            css = response.get_data(as_text=True)
        for ref in re.findall(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)", css):
            if ref.startswith("data:"):
                continue
            assert not urlsplit(ref).scheme, (sheet, ref)
            assert not ref.startswith("//"), (sheet, ref)
            target = urlsplit(urljoin(sheet, ref)).path
            with client.get(target) as asset:
                assert asset.status_code == 200, (sheet, ref)
            checked += 1
    assert checked >= 1  # the icon font


@pytest.mark.parametrize("signed_in", [False, True], ids=["login page", "dashboard"])
def test_pages_refer_to_no_other_site(db, client, auth, signed_in):
    if signed_in:
        auth.login(make_user(db, roles=("admin",)).email, PASSWORD)

    page = client.get("/" if signed_in else "/login").get_data(as_text=True)

    links = links_of(page)
    for url in links.loaded + links.followed:
        assert not urlsplit(url).scheme, url
        assert not url.startswith("//"), url
    assert not re.search(r"https?://", page)
