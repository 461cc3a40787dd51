"""Signing in and out, where sign-in may lead, CSRF protection of every form, and the language switch."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from core.accounts.models import ApiToken, Locale, Organisation, User
from core.audit import AuditEntry
from tests.factories import PASSWORD, make_token, make_user, row_counts, unique_credit_code

WRONG_CREDENTIALS = "邮箱或密码错误。"
ACCOUNT_DISABLED = "该账号已被停用。"
CSRF_FAILED = "表单已过期或并非来自本站，请刷新页面后重试。"
UNKNOWN_LANGUAGE = "未知语言，请选择中文或 English。"
CHANGED_TABLES = (User, Organisation, ApiToken, AuditEntry)


def signed_in_user_id(client) -> str | None:
    with client.session_transaction() as session:
        return session.get("_user_id")


def html_lang(page: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', page)
    assert match, "the page has no <html lang>"
    return match.group(1)


# --- signing in ------------------------------------------------------------------------------------------

def test_login_page_is_in_chinese_by_default(client):
    response = client.get("/login")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html_lang(page) == "zh-CN"
    assert "<title>登录 ·" in page
    assert 'data-testid="login-submit">登录</button>' in page
    assert "Sign in" not in page


def test_good_login_goes_home_and_the_dashboard_greets_the_user(db, client, auth):
    user = make_user(db, name_zh="张三")

    response = auth.login(user.email, PASSWORD)

    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert signed_in_user_id(client) == str(user.id)
    page = client.get("/").get_data(as_text=True)
    assert "欢迎，张三" in page
    db.expire_all()
    assert db.get(User, user.id).last_login_at is not None


def test_login_accepts_the_email_in_any_case_and_with_spaces(db, client, auth):
    user = make_user(db)

    response = auth.login(f"  {user.email.upper()} ", PASSWORD)

    assert response.status_code == 302
    assert signed_in_user_id(client) == str(user.id)


@pytest.mark.parametrize(("next_param", "location"), [
    ("/account/profile", "/account/profile"),
    ("/manage/facilities?page=2", "/manage/facilities?page=2"),
    ("", "/"),
    ("//evil.example", "/"),
    ("//evil.example/login", "/"),
    ("http://evil.example", "/"),
    ("https://evil.example/account/profile", "/"),
    ("https:evil.example", "/"),
    ("javascript:alert(1)", "/"),
    ("evil.example", "/"),
    (" //evil.example", "/"),
    ("/\t/evil.example", "/"),
])
def test_next_is_honoured_only_for_same_site_paths(db, client, auth, next_param, location):
    user = make_user(db)

    response = auth.login(user.email, PASSWORD, next=next_param)

    assert response.status_code == 302
    assert response.headers["Location"] == location


@pytest.mark.parametrize("next_param", ["/\\evil.example", "\\\\evil.example", "/\\/evil.example",
                                        "/%2F%2Fevil.example"])
def test_next_with_backslashes_or_escapes_stays_on_this_site(db, client, auth, next_param):
    """Browsers read a backslash as a slash and drop tabs, so `/\\evil.example` would leave the site."""
    user = make_user(db)

    location = auth.login(user.email, PASSWORD, next=next_param).headers["Location"]

    as_browser_reads_it = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    assert as_browser_reads_it.startswith("/")
    assert not as_browser_reads_it.startswith("//")
    assert not urlsplit(as_browser_reads_it).netloc


def test_the_next_param_of_the_sign_in_redirect_comes_back_after_login(db, client, auth):
    user = make_user(db)
    redirect = client.get("/account/tokens")
    assert redirect.status_code == 302
    assert redirect.headers["Location"] == "/login?next=%2Faccount%2Ftokens"

    page = client.get(redirect.headers["Location"]).get_data(as_text=True)
    assert 'name="next" type="hidden" value="/account/tokens"' in page
    response = auth.login(user.email, PASSWORD, next="/account/tokens")

    assert response.headers["Location"] == "/account/tokens"


@pytest.mark.parametrize("case", ["wrong password", "unknown e-mail", "wrong password of a disabled account"])
def test_bad_credentials_get_401_and_one_message_that_reveals_nothing(db, client, auth, case):
    user = make_user(db, active=case != "wrong password of a disabled account")
    email = "nobody@example.test" if case == "unknown e-mail" else user.email
    before = row_counts(db, *CHANGED_TABLES)

    response = auth.login(email, "not the password")

    page = response.get_data(as_text=True)
    assert response.status_code == 401
    assert WRONG_CREDENTIALS in page
    assert ACCOUNT_DISABLED not in page
    assert signed_in_user_id(client) is None
    assert client.get("/").status_code == 302
    db.expire_all()
    assert db.get(User, user.id).last_login_at is None
    assert row_counts(db, *CHANGED_TABLES) == before


def test_disabled_account_is_refused_with_its_own_message(db, client, auth):
    user = make_user(db, active=False)

    response = auth.login(user.email, PASSWORD)

    assert response.status_code == 401
    assert ACCOUNT_DISABLED in response.get_data(as_text=True)
    assert signed_in_user_id(client) is None
    db.expire_all()
    assert db.get(User, user.id).last_login_at is None


@pytest.mark.parametrize(("email", "password", "message"), [
    ("", PASSWORD, "请输入邮箱地址。"),
    ("someone@example.test", "", "请输入密码。"),
])
def test_empty_fields_get_422_with_the_reason(db, client, auth, email, password, message):
    response = auth.login(email, password)

    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert signed_in_user_id(client) is None


def test_signed_in_user_visiting_login_goes_home(db, client, auth):
    user = make_user(db)
    auth.login(user.email, PASSWORD)

    response = client.get("/login")

    assert response.status_code == 302
    assert response.headers["Location"] == "/"


# --- signing out -----------------------------------------------------------------------------------------

def test_logout_is_post_only(db, client, auth):
    user = make_user(db)
    auth.login(user.email, PASSWORD)

    response = client.get("/logout")

    assert response.status_code == 405
    assert signed_in_user_id(client) == str(user.id)
    assert client.get("/").status_code == 200


def test_logout_ends_the_session(db, client, auth):
    user = make_user(db)
    auth.login(user.email, PASSWORD)

    response = auth.logout()

    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert signed_in_user_id(client) is None
    assert "您已退出登录。" in client.get("/login").get_data(as_text=True)
    home = client.get("/")
    assert home.status_code == 302
    assert home.headers["Location"] == "/resources"  # signed out, the home page is the public catalog


@pytest.mark.parametrize("csrf_token", [None, "forged-token"])
def test_logout_without_a_valid_csrf_token_keeps_the_session(db, client, auth, csrf_token):
    user = make_user(db)
    auth.login(user.email, PASSWORD)

    response = client.post("/logout", data={} if csrf_token is None else {"csrf_token": csrf_token})

    assert response.status_code == 400
    assert CSRF_FAILED in response.get_data(as_text=True)
    assert signed_in_user_id(client) == str(user.id)


# --- CSRF on every form ----------------------------------------------------------------------------------

@pytest.mark.parametrize("csrf_token", [None, "forged-token"])
def test_login_without_a_valid_csrf_token_is_refused(db, client, csrf_token):
    user = make_user(db)
    client.get("/login")  # the session exists, so only the token is missing
    data = {"email": user.email, "password": PASSWORD}
    if csrf_token:
        data["csrf_token"] = csrf_token

    response = client.post("/login", data=data)

    assert response.status_code == 400
    assert CSRF_FAILED in response.get_data(as_text=True)
    assert signed_in_user_id(client) is None
    db.expire_all()
    assert db.get(User, user.id).last_login_at is None


FORMS_WITHOUT_TOKEN = [
    ("profile", "/account/profile", {"name_zh": "新名字", "name_en": "New name", "locale": "en"}),
    ("password", "/account/password", {"pw-current_password": PASSWORD, "pw-new_password": "a new password"}),
    ("token", "/account/tokens", {"name": "my script"}),
    ("revoke", "/account/tokens/{token_id}/revoke", {}),
    ("organisation", "/admin/organisations", {"name_zh": "新单位", "name_en": "New org", "kind": "enterprise",
                                             "city": "510100", "credit_code": "{credit_code}"}),
    ("language", "/language", {"locale": "en"}),
]


@pytest.mark.parametrize("csrf_token", [None, "forged-token"])
@pytest.mark.parametrize(("form", "path", "data"), FORMS_WITHOUT_TOKEN, ids=[row[0] for row in FORMS_WITHOUT_TOKEN])
def test_forms_without_a_valid_csrf_token_get_400_and_write_nothing(db, client, auth, form, path, data,
                                                                    csrf_token):
    user = make_user(db, roles=("admin",), name_zh="原名", name_en="Old name")
    token, _secret = make_token(db, user)
    auth.login(user.email, PASSWORD)
    password_hash = user.password_hash
    before = row_counts(db, *CHANGED_TABLES)
    data = {key: value.format(credit_code=unique_credit_code()) for key, value in data.items()}
    if csrf_token:
        data["csrf_token"] = csrf_token

    response = client.post(path.format(token_id=token.id), data=data)

    assert response.status_code == 400
    assert CSRF_FAILED in response.get_data(as_text=True)
    db.expire_all()
    assert row_counts(db, *CHANGED_TABLES) == before
    user = db.get(User, user.id)
    assert (user.name_zh, user.name_en, user.locale) == ("原名", "Old name", Locale.ZH_CN)
    assert user.password_hash == password_hash
    assert db.get(ApiToken, token.id).revoked_at is None


# --- language ---------------------------------------------------------------------------------------------

def switch_language(client, auth, locale: str, next_path: str = "/login", form_page: str = "/login"):
    return client.post("/language", data={"locale": locale, "next": next_path,
                                          "csrf_token": auth.csrf_token(form_page)})


def test_choosing_english_sets_the_cookie_and_is_remembered(client, auth):
    response = switch_language(client, auth, "en")

    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    cookie = client.get_cookie("labshare_lang")
    assert cookie is not None
    assert cookie.value == "en"
    for _ in range(2):  # this request and the next
        page = client.get("/login").get_data(as_text=True)
        assert html_lang(page) == "en"
        assert 'data-testid="login-submit">Sign in</button>' in page
        assert "登录" not in page


def test_choosing_chinese_again_switches_back(client, auth):
    switch_language(client, auth, "en")

    switch_language(client, auth, "zh_CN")

    assert client.get_cookie("labshare_lang").value == "zh_CN"
    assert "登录" in client.get("/login").get_data(as_text=True)


@pytest.mark.parametrize("next_path", ["//evil.example", "https://evil.example/"])
def test_language_switch_never_redirects_off_site(client, auth, next_path):
    response = switch_language(client, auth, "en", next_path=next_path)

    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_signed_in_users_language_choice_is_saved_in_their_profile(db, client, auth):
    user = make_user(db, name_zh="李四", name_en="Li Si")
    auth.login(user.email, PASSWORD)

    response = switch_language(client, auth, "en", next_path="/", form_page="/")

    assert response.status_code == 302
    db.expire_all()
    assert db.get(User, user.id).locale == Locale.EN
    assert client.get_cookie("labshare_lang").value == "en"
    page = client.get("/").get_data(as_text=True)
    assert "Welcome, Li Si" in page


@pytest.mark.parametrize("locale", ["fr", "zh", "EN", "", "zh_CN' onclick='x"])
def test_unknown_language_is_refused_and_changes_nothing(client, auth, locale):
    response = switch_language(client, auth, locale)

    assert response.status_code == 400
    assert UNKNOWN_LANGUAGE in response.get_data(as_text=True)
    assert "labshare_lang" not in response.headers.get("Set-Cookie", "")
    assert client.get_cookie("labshare_lang") is None
    assert html_lang(client.get("/login").get_data(as_text=True)) == "zh-CN"


def test_unknown_language_leaves_a_signed_in_users_choice_alone(db, client, auth):
    user = make_user(db)
    auth.login(user.email, PASSWORD)
    before = row_counts(db, *CHANGED_TABLES)

    response = switch_language(client, auth, "de", next_path="/", form_page="/")

    assert response.status_code == 400
    assert UNKNOWN_LANGUAGE in response.get_data(as_text=True)
    assert not any(h.startswith("labshare_lang=") for h in response.headers.getlist("Set-Cookie"))
    assert client.get_cookie("labshare_lang").value == "zh_CN"  # as set at sign-in
    db.expire_all()
    assert db.get(User, user.id).locale == Locale.ZH_CN
    assert row_counts(db, *CHANGED_TABLES) == before


def test_the_users_saved_language_wins_after_login(db, client, auth):
    user = make_user(db, locale=Locale.EN, name_en="Alice Engineer")
    client.set_cookie("labshare_lang", "zh_CN")
    assert html_lang(client.get("/login").get_data(as_text=True)) == "zh-CN"

    response = auth.login(user.email, PASSWORD)

    assert response.status_code == 302
    assert client.get_cookie("labshare_lang").value == "en"
    page = client.get("/").get_data(as_text=True)
    assert html_lang(page) == "en"
    assert "Welcome, Alice Engineer" in page
    assert "欢迎" not in page
    client.set_cookie("labshare_lang", "zh_CN")  # e.g. a stale cookie: the profile still decides
    assert html_lang(client.get("/").get_data(as_text=True)) == "en"
