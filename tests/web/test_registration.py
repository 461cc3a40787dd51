"""The registration pages: an organisation registers itself on the public form, waits, and a platform admin
approves or rejects it on the organisations page; the applicant can sign in only after approval."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from core.accounts.models import Organisation, OrganisationStatus, User
from core.accounts.registration import CREDIT_CODE_TAKEN, EMAIL_TAKEN
from core.accounts.services import CREDIT_CODE_MESSAGES, OrganisationPending, OrganisationRejected
from core.audit import AuditEntry
from core.i18n import gettext_for
from core.mail import OutboundEmail
from tests.factories import PASSWORD, make_organisation, make_user, row_counts, unique_credit_code
from web.register.routes import RecentAttempts

zh = gettext_for("zh_CN")
NEW_PASSWORD = "registering is easy"
TABLES = (Organisation, User, OutboundEmail, AuditEntry)
_VALID = unique_credit_code()
TYPO_CODE = _VALID[:-1] + ("1" if _VALID[-1] != "1" else "2")  # a wrong check character


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def form_data(auth, **overrides) -> dict:
    values = {"csrf_token": auth.csrf_token("/register"), "name_zh": "绵阳精密测量有限公司",
              "name_en": "Mianyang Precision Measurement Co.", "credit_code": unique_credit_code(),
              "kind": "enterprise", "city": "510700", "tech_sme": "y", "user_name_zh": "赵敏",
              "user_name_en": "Zhao Min", "email": "zhao.min@mypm.example", "password": NEW_PASSWORD,
              "password_again": NEW_PASSWORD, "locale": "zh_CN"}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def field_errors(page: str, field_id: str) -> list[str]:
    start = page.index(f'id="{field_id}"')
    end = page.find('<div class="mb-3">', start)
    block = page[start:end if end != -1 else None]
    return re.findall(r'<div class="invalid-feedback d-block">(.*?)</div>', block)


@pytest.fixture
def admin(db) -> User:
    return make_user(db, roles=("admin",))


def test_the_form_is_public_and_protected_by_csrf(db, client):
    counts = row_counts(db, *TABLES)

    assert client.get("/register").status_code == 200
    refused = client.post("/register", data={"name_zh": "x"})

    assert refused.status_code == 400
    assert row_counts(db, *TABLES) == counts


def test_register_wait_approve_and_sign_in(db, client, auth, admin):
    data = form_data(auth)

    response = client.post("/register", data=data)

    assert (response.status_code, response.headers["Location"]) == (302, "/register/done")
    done = text_of(client.get("/register/done"))
    assert "绵阳精密测量有限公司" in done
    assert "zhao.min@mypm.example" in done
    org = db.scalar(select(Organisation).where(Organisation.credit_code == data["credit_code"]))
    assert org.status == OrganisationStatus.PENDING
    assert org.tech_sme
    assert db.scalar(select(OutboundEmail).where(OutboundEmail.topic == "organisation.registered")).to_address == \
        admin.email

    pending = auth.login("zhao.min@mypm.example", NEW_PASSWORD)
    assert pending.status_code == 401
    assert OrganisationPending().render(zh) in text_of(pending)

    assert auth.login(admin.email, PASSWORD).status_code == 302
    queue = text_of(client.get("/admin/organisations"))
    assert f'data-testid="pending-{org.id}"' in queue
    assert "zhao.min@mypm.example" in queue
    approved = client.post(f"/admin/organisations/{org.id}/approve", data={"csrf_token": auth.csrf_token("/")})
    assert approved.status_code == 302
    assert f'data-testid="pending-{org.id}"' not in text_of(client.get("/admin/organisations"))
    auth.logout()

    signed_in = auth.login("zhao.min@mypm.example", NEW_PASSWORD)
    assert (signed_in.status_code, signed_in.headers["Location"]) == (302, "/")
    mail = db.scalar(select(OutboundEmail).where(OutboundEmail.topic == "organisation.approved"))
    assert mail.to_address == "zhao.min@mypm.example"
    subject = zh("Your organisation is approved: %(organisation)s") % {"organisation": "绵阳精密测量有限公司"}
    assert subject in mail.subject


def test_a_rejected_registration_needs_a_reason_and_its_user_is_told_at_sign_in(db, client, auth, admin):
    data = form_data(auth)
    client.post("/register", data=data)
    org = db.scalar(select(Organisation).where(Organisation.credit_code == data["credit_code"]))
    auth.login(admin.email, PASSWORD)
    prefix = f"reject-{org.id}"

    empty = client.post(f"/admin/organisations/{org.id}/reject",
                        data={"csrf_token": auth.csrf_token("/"), f"{prefix}-reason": ""})
    assert empty.status_code == 422
    assert org.status == OrganisationStatus.PENDING
    rejected = client.post(f"/admin/organisations/{org.id}/reject",
                           data={"csrf_token": auth.csrf_token("/"), f"{prefix}-reason": "信用代码与名称不一致"})
    assert rejected.status_code == 302
    db.refresh(org)
    assert org.status == OrganisationStatus.REJECTED
    assert "信用代码与名称不一致" in text_of(client.get("/admin/organisations"))
    auth.logout()

    refused = auth.login("zhao.min@mypm.example", NEW_PASSWORD)
    assert refused.status_code == 401
    assert OrganisationRejected().render(zh) in text_of(refused)
    mail = db.scalar(select(OutboundEmail).where(OutboundEmail.topic == "organisation.rejected"))
    assert "信用代码与名称不一致" in mail.body


def test_a_taken_credit_code_or_address_is_refused_in_plain_words(db, client, auth):
    existing = make_organisation(db, name_zh="某某研究院")
    member = make_user(db)
    counts = row_counts(db, *TABLES)

    response = client.post("/register", data=form_data(auth, credit_code=existing.credit_code, email=member.email))

    page = text_of(response)
    assert response.status_code == 422
    assert field_errors(page, "credit_code") == [zh(CREDIT_CODE_TAKEN)]
    assert field_errors(page, "email") == [zh(EMAIL_TAKEN)]
    assert "某某研究院" not in page
    assert row_counts(db, *TABLES) == counts


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"credit_code": TYPO_CODE}, "credit_code", zh(CREDIT_CODE_MESSAGES["check_character"])),
    ({"credit_code": "9151"}, "credit_code", zh(CREDIT_CODE_MESSAGES["length"])),
    ({"name_zh": ""}, "name_zh", None),
    ({"email": ""}, "email", None),
    ({"password": "short", "password_again": "short"}, "password", zh("The password needs at least 8 characters.")),
    ({"password_again": "something else"}, "password_again", None),
    ({"city": "110000"}, "city", None),
])
def test_bad_or_missing_fields_are_shown_and_nothing_is_written(db, client, auth, overrides, field, message):
    counts = row_counts(db, *TABLES)

    response = client.post("/register", data=form_data(auth, **overrides))

    errors = field_errors(text_of(response), field)
    assert response.status_code == 422
    assert errors
    if message:
        assert errors == [message]
    assert row_counts(db, *TABLES) == counts


def test_registrations_are_rate_limited_per_client(app, db, client, auth):
    app.extensions["labshare.registration_attempts"] = RecentAttempts(limit=1, window_s=3600)
    client.post("/register", data=form_data(auth, email="first@mypm.example"))
    counts = row_counts(db, *TABLES)

    response = client.post("/register", data=form_data(auth, email="second@mypm.example"))

    assert response.status_code == 429
    assert row_counts(db, *TABLES) == counts


def test_the_confirmation_page_needs_a_registration(client):
    response = client.get("/register/done")

    assert (response.status_code, response.headers["Location"]) == (302, "/register")


def test_sign_in_and_register_are_offered_to_visitors(client):
    login = text_of(client.get("/login"))

    assert 'data-testid="login-register-link"' in login
    assert 'href="/register"' in login
