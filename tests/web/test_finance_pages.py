"""The finance pages: who may open them; a period reconciled, refused while an exception is open (nothing
changes), resolved by the facility's lab manager and closed; statements with downloads and credit notes;
vouchers with their burn-down; claims; a researcher's charges and the cost estimate under the booking form."""

from __future__ import annotations

import csv
import html
import io
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from billing.charges import close_period
from billing.claims import NothingToClaim
from billing.errors import UnresolvedExceptions
from billing.models import BillingPeriod, Charge, ChargeKind, PeriodState, ReconciliationItem, Statement
from billing.voucher_models import Voucher, VoucherClaim
from booking.models import Resource
from core.accounts.models import OrganisationKind, Role, User
from core.audit import AuditEntry
from core.db import begin_write
from core.i18n import gettext_for
from tests.billing.factories import make_rate_card, make_usage_session
from tests.factories import (
    PASSWORD,
    make_device,
    make_facility,
    make_organisation,
    make_reservation,
    make_resource,
    make_user,
    row_counts,
)

MONTH = "2026-09"
IN_MONTH = datetime(2026, 9, 8, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
H = timedelta(hours=1)
M = timedelta(minutes=1)
zh = gettext_for("zh_CN")
BILLING_TABLES = (BillingPeriod, ReconciliationItem, Charge, Statement, AuditEntry)


def text_of(response) -> str:
    return response.get_data(as_text=True)


def flashes(page: str) -> list[str]:
    alerts = re.findall(r'<div class="alert alert-\w+ alert-dismissible[^>]*>(.*?)<button', page, re.S)
    return [html.unescape(" ".join(message.split())) for message in alerts]


@contextmanager
def app_context():
    from flask import Flask
    from flask_babel import Babel

    app = Flask(__name__)
    Babel(app)
    with app.test_request_context():
        yield


@dataclass
class World:
    users: dict[str, User]
    resource: Resource
    customer_zh: str


@pytest.fixture
def world(db) -> World:
    """An institute's facility with a metered SEM and a rate card; an academic customer who overran a 2 h
    booking by 40 minutes (an open exception), and a second customer whose booking was used as booked."""
    manager = make_user(db, roles=(Role.LAB_MANAGER,))
    facility = make_facility(db, managers=(manager,), name_zh="成都科创生态岛分析测试中心",
                             owner=make_organisation(db, kind=OrganisationKind.INSTITUTE))
    resource = make_resource(db, facility=facility, name_zh="场发射扫描电镜", name_en="FE-SEM")
    device = make_device(db, resource=resource)
    make_rate_card(db, resource)  # academic 200/h, enterprise 400/h, per started quarter hour
    university = make_organisation(db, kind=OrganisationKind.UNIVERSITY, name_zh="四川大学材料学院")
    researcher = make_user(db, organisation=university)
    overrun = make_reservation(db, resource=resource, user=researcher, starts_at=IN_MONTH, ends_at=IN_MONTH + 2 * H)
    make_usage_session(db, device, IN_MONTH, IN_MONTH + 160 * M)
    enterprise = make_user(db, organisation=make_organisation(db, kind=OrganisationKind.ENTERPRISE))
    make_reservation(db, resource=resource, user=enterprise, starts_at=IN_MONTH + 4 * H, ends_at=IN_MONTH + 5 * H)
    make_usage_session(db, device, IN_MONTH + 4 * H, IN_MONTH + 4 * H + 55 * M)
    users = {"researcher": researcher, "enterprise": enterprise, "manager": manager,
             "other_manager": make_user(db, roles=(Role.LAB_MANAGER,)),
             "finance": make_user(db, roles=(Role.FINANCE,)), "admin": make_user(db, roles=(Role.ADMIN,))}
    make_facility(db, managers=(users["other_manager"],))
    assert overrun.id
    return World(users, resource, "四川大学材料学院")


def sign_in(auth, world: World, who: str) -> None:
    if auth.client.get("/").status_code == 200:  # someone is signed in
        auth.logout()
    response = auth.login(world.users[who].email, PASSWORD)
    assert response.status_code == 302, text_of(response)


def post(client, auth, path: str, data: dict | None = None):
    return client.post(path, data={"csrf_token": auth.csrf_token("/"), **(data or {})})


# --- who may open what -------------------------------------------------------------------------------------------

PAGES = [f"/finance/periods/{MONTH}", f"/finance/statements?month={MONTH}", "/finance/vouchers", "/finance/claims"]


@pytest.mark.parametrize(("who", "path", "status"), [
    *[("researcher", p, 403) for p in PAGES],
    *[("manager", p, 403) for p in PAGES],
    *[("finance", p, 200) for p in PAGES],
    *[("admin", p, 200) for p in PAGES],
    ("researcher", f"/manage/reconciliation/{MONTH}", 403),
    ("finance", f"/manage/reconciliation/{MONTH}", 403),
    ("manager", f"/manage/reconciliation/{MONTH}", 200),
    ("admin", f"/manage/reconciliation/{MONTH}", 200),
    ("researcher", "/account/charges", 200),
    ("finance", "/account/charges", 200),
    ("finance", "/finance", 302),
    ("finance", "/finance/periods/2026-13", 422),
])
def test_who_may_open_the_finance_pages(client, auth, world, who, path, status):
    sign_in(auth, world, who)
    assert client.get(path).status_code == status


def test_anonymous_visitors_are_sent_to_sign_in(client, world):
    for path in [*PAGES, f"/manage/reconciliation/{MONTH}", "/account/charges"]:
        response = client.get(path)
        assert response.status_code == 302
        assert "/login" in response.headers["Location"]


def test_forms_without_the_csrf_token_are_refused(client, auth, world, db):
    sign_in(auth, world, "finance")
    before = row_counts(db, *BILLING_TABLES)
    assert client.post(f"/finance/periods/{MONTH}/close").status_code == 400
    assert row_counts(db, *BILLING_TABLES) == before


# --- closing a period -------------------------------------------------------------------------------------------

def test_a_period_is_closed_once_the_lab_manager_has_resolved_its_exception(client, auth, world, db):
    sign_in(auth, world, "finance")
    page = text_of(client.get(f"/finance/periods/{MONTH}"))
    assert "exception-row" not in page

    response = post(client, auth, f"/finance/periods/{MONTH}/reconcile")
    assert response.status_code == 302
    page = text_of(client.get(f"/finance/periods/{MONTH}"))
    assert page.count('data-testid="exception-row"') == 1
    row = page[page.index('data-testid="exception-row"'):]
    row = row[:row.index("</tr>")]
    assert "data-kind" not in row
    assert "120" in row
    assert "160" in row
    assert world.users["manager"].email in row  # who must resolve it
    assert 'data-kind="overrun"' in page

    # closing is refused, with the translated domain error, and nothing changes
    before = row_counts(db, *BILLING_TABLES)
    response = post(client, auth, f"/finance/periods/{MONTH}/close")
    assert response.status_code == 302
    expected = zh(UnresolvedExceptions.message) % {"count": 1, "month": MONTH}
    assert expected in flashes(text_of(client.get(response.headers["Location"])))
    assert row_counts(db, *BILLING_TABLES) == before
    period = db.scalars(select(BillingPeriod).execution_options(populate_existing=True)).one()
    assert period.state == PeriodState.OPEN

    # the facility's manager resolves it; a manager of another facility cannot
    item = db.scalars(select(ReconciliationItem).where(ReconciliationItem.status == "open")).one()
    sign_in(auth, world, "other_manager")
    assert f'data-item-id="{item.id}"' not in text_of(client.get(f"/manage/reconciliation/{MONTH}"))
    response = post(client, auth, f"/manage/reconciliation/items/{item.id}/resolve",
                    {f"i{item.id}-resolution": "accept", "month": MONTH})
    assert response.status_code == 302
    assert db.scalar(select(ReconciliationItem.status).where(ReconciliationItem.id == item.id)) == "open"

    sign_in(auth, world, "manager")
    page = text_of(client.get(f"/manage/reconciliation/{MONTH}"))
    assert f'data-item-id="{item.id}"' in page
    # waiving without a reason is refused next to nothing changing
    response = post(client, auth, f"/manage/reconciliation/items/{item.id}/resolve",
                    {f"i{item.id}-resolution": "waive", "month": MONTH})
    assert db.scalar(select(ReconciliationItem.status).where(ReconciliationItem.id == item.id)) == "open"
    assert any(zh("Give a reason.") in f for f in flashes(text_of(client.get(response.headers["Location"]))))
    response = post(client, auth, f"/manage/reconciliation/items/{item.id}/resolve",
                    {f"i{item.id}-resolution": "adjust", f"i{item.id}-adjusted_minutes": "150",
                     f"i{item.id}-reason": "样品更换多用了半小时", "month": MONTH})
    assert response.status_code == 302
    page = text_of(client.get(response.headers["Location"]))
    assert 'data-testid="open-item"' not in page
    assert "样品更换多用了半小时" in page

    sign_in(auth, world, "finance")
    response = post(client, auth, f"/finance/periods/{MONTH}/close")
    page = text_of(client.get(response.headers["Location"]))
    assert 'data-testid="period-closed"' in page
    assert page.count('data-testid="statement-row"') == 2
    # 150 adjusted minutes at 200/h academic = 500.00; 1 h booked at 400/h enterprise = 400.00
    researcher_org = world.users["researcher"].organisation_id
    statement = db.scalars(select(Statement).where(Statement.organisation_id == researcher_org)
                           .execution_options(populate_existing=True)).one()
    assert statement.total == Decimal("500.00")
    assert world.customer_zh in page


# --- statements, downloads and credit notes ------------------------------------------------------------------

@pytest.fixture
def closed(db, world) -> Statement:
    """MONTH closed (the exception accepted by its manager) by the service."""
    from billing.reconcile import reconcile_period, resolve_item

    begin_write(db)
    reconcile_period(db, None, MONTH, now=datetime(2026, 10, 5, tzinfo=UTC))
    for item in db.scalars(select(ReconciliationItem).where(ReconciliationItem.status == "open")):
        resolve_item(db, world.users["manager"], item.id, "accept")
    close_period(db, None, MONTH, now=datetime(2026, 10, 5, tzinfo=UTC))
    return db.scalars(select(Statement).where(Statement.organisation_id == world.users["researcher"].organisation_id)
                      ).one()


def test_a_statement_shows_its_lines_and_downloads_in_three_formats(client, auth, world, closed):
    sign_in(auth, world, "finance")
    listing = text_of(client.get(f"/finance/statements?month={MONTH}"))
    assert closed.number in listing
    assert world.customer_zh in listing
    page = text_of(client.get(f"/finance/statements/{closed.id}"))
    assert page.count('data-testid="statement-line"') == 1
    assert "¥400.00" in page  # the overrun accepted on the booked basis: 2 h × 200

    csv_response = client.get(f"/statements/{closed.id}/download.csv")
    assert csv_response.status_code == 200
    assert csv_response.mimetype == "text/csv"
    assert csv_response.data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(csv_response.data.decode("utf-8-sig"))))
    assert rows[-1][0] == "合计"
    assert Decimal(rows[-1][9]) == closed.total
    assert 'attachment; filename="' in csv_response.headers["Content-Disposition"]
    xlsx = client.get(f"/statements/{closed.id}/download.xlsx")
    assert xlsx.status_code == 200
    assert xlsx.data[:2] == b"PK"
    pdf = client.get(f"/statements/{closed.id}/download.pdf")
    assert pdf.status_code == 200
    assert pdf.mimetype == "application/pdf"
    assert pdf.data.startswith(b"%PDF")
    assert client.get(f"/statements/{closed.id}/download.doc").status_code == 404


def test_statement_downloads_are_for_finance_and_the_organisation_only(client, auth, world, closed):
    sign_in(auth, world, "researcher")  # a user of the statement's organisation
    assert client.get(f"/statements/{closed.id}/download.pdf").status_code == 200
    page = text_of(client.get("/account/charges"))
    assert closed.number in page
    assert page.count('data-testid="charge-row"') == 1
    sign_in(auth, world, "enterprise")
    assert client.get(f"/statements/{closed.id}/download.pdf").status_code == 403
    assert closed.number not in text_of(client.get("/account/charges"))


def test_a_credit_note_needs_a_reason_and_then_reverses_the_charge(client, auth, world, db, closed):
    charge = db.scalars(select(Charge).where(Charge.statement_id == closed.id)).one()
    sign_in(auth, world, "finance")
    before = row_counts(db, Charge, AuditEntry)
    response = post(client, auth, f"/finance/charges/{charge.id}/credit-note", {f"c{charge.id}-reason": "  "})
    assert response.status_code == 422
    assert zh("Give a reason.") in html.unescape(text_of(response))
    assert row_counts(db, Charge, AuditEntry) == before

    response = post(client, auth, f"/finance/charges/{charge.id}/credit-note",
                    {f"c{charge.id}-reason": "计费时段有误，全额冲销"})
    assert response.status_code == 302
    credit = db.scalars(select(Charge).where(Charge.credit_of_id == charge.id)).one()
    assert credit.kind == ChargeKind.CREDIT_NOTE
    assert credit.total == -charge.total
    page = text_of(client.get(response.headers["Location"]))
    assert 'data-testid="credit-form"' not in page  # reversed once only
    # a second credit note is refused with the domain error
    response = post(client, auth, f"/finance/charges/{charge.id}/credit-note", {f"c{charge.id}-reason": "again"})
    assert response.status_code == 302
    assert db.scalar(select(Charge.id).where(Charge.credit_of_id == charge.id)) == credit.id


# --- vouchers and claims ---------------------------------------------------------------------------------------

def test_finance_grants_a_voucher_and_sees_the_budget_and_burn_down(client, auth, world, db):
    from tests.billing.voucher_factories import make_holder, make_programme

    begin_write(db)
    programme = make_programme(db)
    holder = make_holder(db, name_zh="成都某科技型中小企业")
    sign_in(auth, world, "admin")
    response = post(client, auth, "/finance/vouchers/grant",
                    {"programme_id": programme.id, "holder_id": holder.id, "amount": "5000"})
    assert response.status_code == 302, text_of(response)
    voucher = db.scalars(select(Voucher).where(Voucher.holder_id == holder.id)).one()
    assert voucher.amount == Decimal("5000.00")
    page = text_of(client.get("/finance/vouchers"))
    assert voucher.number in page
    assert "成都某科技型中小企业" in page
    assert 'data-testid="programme-row"' in page
    assert 'data-testid="burn-down"' in page

    before = row_counts(db, Voucher)
    response = post(client, auth, "/finance/vouchers/grant",
                    {"programme_id": programme.id, "holder_id": world.users["researcher"].organisation_id})
    assert response.status_code == 422  # a university cannot hold the programme's vouchers
    assert row_counts(db, Voucher) == before


def test_the_burn_down_is_the_cumulative_subsidy_per_programme():
    from types import SimpleNamespace

    from web.finance.routes import burn_down_chart

    programme = SimpleNamespace(id=1, code="SC-2026", budget=Decimal("1000.00"),
                                created_at=datetime(2026, 3, 1, tzinfo=UTC))
    unused = SimpleNamespace(id=2, code="OLD", budget=Decimal("5.00"), created_at=datetime(2025, 1, 1, tzinfo=UTC))
    with app_context():
        option = burn_down_chart([programme, unused], [(1, date(2026, 3, 2), Decimal("10.00")),
                                                       (1, date(2026, 3, 2), Decimal("5.50")),
                                                       (1, date(2026, 3, 9), Decimal("4.50"))], date(2026, 4, 1))
    (series,) = option["series"]
    assert series["data"] == [["2026-03-01", "0.00"], ["2026-03-02", "15.50"], ["2026-03-09", "20.00"],
                              ["2026-04-01", "20.00"]]


def test_the_claims_page_lists_claims_and_refuses_a_claim_with_nothing_to_claim(client, auth, world, db, closed):
    from tests.billing.voucher_factories import make_programme

    begin_write(db)
    programme = make_programme(db)
    sign_in(auth, world, "admin")
    assert 'data-testid="claim-form"' in text_of(client.get("/finance/claims"))
    before = row_counts(db, VoucherClaim)
    response = post(client, auth, "/finance/claims", {"programme_id": programme.id, "month": MONTH})
    assert response.status_code == 422  # nothing to claim: said above the form, nothing written
    assert html.escape(zh(NothingToClaim.message)) in text_of(response)
    assert row_counts(db, VoucherClaim) == before


# --- researchers -----------------------------------------------------------------------------------------------

def test_the_booking_preview_shows_the_estimated_cost_and_voucher_coverage(client, auth, db):
    from billing.vouchers import grant_voucher
    from tests.billing.voucher_factories import make_holder, make_programme

    begin_write(db)
    facility = make_facility(db, opening_hours=dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
                                                             "00:00-24:00"))
    resource = make_resource(db, facility=facility)
    make_rate_card(db, resource)  # enterprise: 400/h
    holder = make_holder(db)
    user = make_user(db, organisation=holder)
    programme = make_programme(db)
    grant_voucher(db, None, programme.id, holder.id, on=datetime.now(UTC).date())
    auth.login(user.email, PASSWORD)
    day = (datetime.now(UTC) + timedelta(days=10)).date()
    response = client.post(f"/resources/{resource.id}/preview", data={
        "csrf_token": auth.csrf_token(f"/resources/{resource.id}"), "date": day.isoformat(),
        "time_from": "10:00", "time_to": "12:00", "purpose": "test"})
    page = text_of(response)
    if 'data-testid="preview-ok"' not in page:
        pytest.fail(page)
    assert 'data-testid="cost-estimate"' in page
    assert "¥800.00" in page  # 2 h × 400
    assert 'data-testid="estimate-voucher"' in page
    assert "¥400.00" in page


def test_a_grant_without_a_programme_or_holder_is_refused_next_to_the_form(client, auth, world, db):
    sign_in(auth, world, "admin")
    before = row_counts(db, Voucher)
    response = post(client, auth, "/finance/vouchers/grant", {"programme_id": "", "holder_id": "x", "amount": "-5"})
    assert response.status_code == 422
    assert 'data-testid="grant-form"' in text_of(response)
    assert row_counts(db, Voucher) == before


def test_a_claim_is_drafted_evidenced_submitted_approved_and_paid_on_the_pages(client, auth, db):
    from billing import claims
    from tests.billing.test_claims import World as ClaimWorld

    begin_write(db)
    cw = ClaimWorld(db)
    provider = make_user(db, roles=(Role.FINANCE,), organisation=cw.resource.facility.owner)
    auth.login(provider.email, PASSWORD)
    response = post(client, auth, "/finance/claims", {"programme_id": cw.programme.id, "month": "2026-03"})
    assert response.status_code == 302, text_of(response)
    claim = db.scalars(select(VoucherClaim)).one()
    page = text_of(client.get(response.headers["Location"]))
    assert 'data-testid="evidence-missing"' in page
    assert 'data-state="draft"' in page

    assert post(client, auth, f"/finance/claims/{claim.id}/evidence").status_code == 302
    item = claim.items[0]
    post(client, auth, f"/finance/claims/items/{item.id}/references",
         {"claim_id": claim.id, f"r{item.id}-invoice_number": "INV-9", f"r{item.id}-payment_reference": "PAY-9"})
    post(client, auth, f"/finance/claims/items/{item.id}/confirm", {"claim_id": claim.id})
    claims.confirm_item(db, cw.customer, item.id)
    db.flush()
    db.expire_all()
    assert claims.missing_evidence(db.get(VoucherClaim, claim.id)) == []
    post(client, auth, f"/finance/claims/{claim.id}/submit")
    db.expire_all()
    assert db.get(VoucherClaim, claim.id).state == "submitted"
    assert 'data-testid="claim-evidence"' not in text_of(client.get(f"/finance/claims/{claim.id}"))
    # the digests are re-verified against the time-series store; a point written afterwards is reported.
    # The store reads through this test's connection, so it sees the point the test writes without a commit.
    from telemetry.tsdb import SqlStore

    client.application.extensions["labshare.tsdb"] = SqlStore(db.connection())
    verified = client.post(f"/finance/claims/{claim.id}/verify", data={"csrf_token": auth.csrf_token("/")},
                           follow_redirects=True)
    assert 'data-testid="claim-verify"' in text_of(verified)
    assert "alert-success" in text_of(verified)
    from telemetry.models import TelemetryPoint
    session = cw.session
    db.add(TelemetryPoint(device_id=cw.device.device_id, field="power_w", ts_ns=session.start_ns + 1, value=999.0))
    db.flush()
    tampered = text_of(client.post(f"/finance/claims/{claim.id}/verify", data={"csrf_token": auth.csrf_token("/")},
                                   follow_redirects=True))
    assert "alert-danger" in tampered, tampered[tampered.find("alert"):tampered.find("alert") + 600]
    assert f"#{session.id} (0 → 1)" in tampered
    pdf = client.get(f"/finance/claims/{claim.id}/download.pdf")
    assert pdf.data.startswith(b"%PDF")

    auth.logout()
    auth.login(cw.admin.email, PASSWORD)
    before = row_counts(db, VoucherClaim, AuditEntry)
    response = post(client, auth, f"/finance/claims/{claim.id}/reject", {"reason": ""})
    assert response.status_code == 422
    assert row_counts(db, VoucherClaim, AuditEntry) == before
    post(client, auth, f"/finance/claims/{claim.id}/approve")
    post(client, auth, f"/finance/claims/{claim.id}/paid", {"payout_reference": "SC-2026-0042"})
    db.expire_all()
    paid = db.get(VoucherClaim, claim.id)
    assert paid.state == "paid"
    assert paid.payout_reference == "SC-2026-0042"
    assert 'data-state="paid"' in text_of(client.get("/finance/claims"))
