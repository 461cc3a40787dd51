"""The billing REST API on both backends: who may call what, a month reconciled, refused while an exception is
open (nothing changes), resolved by the facility's lab manager and closed; charges and statements with money as
strings and exports; credit notes; rate cards; voucher claims from draft to paid."""

from __future__ import annotations

import csv
import io
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from billing import claims
from billing.models import BillingPeriod, Charge, ChargeLine, PeriodState, RateCard, ReconciliationItem, Statement
from billing.voucher_models import ClaimState, VoucherClaim, VoucherClaimItem
from booking.models import Resource
from core.accounts.models import OrganisationKind, Role, User
from core.audit import AuditEntry
from core.db import begin_write
from tests.billing.factories import make_rate_card, make_usage_session
from tests.factories import (
    make_device,
    make_facility,
    make_organisation,
    make_reservation,
    make_resource,
    make_token,
    make_user,
    row_counts,
)

MONTH = "2026-09"
IN_MONTH = datetime(2026, 9, 8, 1, 0, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
WRITTEN = (BillingPeriod, ReconciliationItem, Charge, ChargeLine, Statement, RateCard, VoucherClaim,
           VoucherClaimItem, AuditEntry)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]["details"]


@contextmanager
def writes_nothing(db):
    db.expire_all()
    before = row_counts(db, *WRITTEN)
    yield
    db.expire_all()
    assert row_counts(db, *WRITTEN) == before


@dataclass
class World:
    users: dict[str, User]
    tokens: dict[str, dict[str, str]]
    resource: Resource

    def call(self, client, who: str, method: str, path: str, **kwargs):
        headers = self.tokens[who] if who != "anonymous" else {}
        return client.open(f"/api/v1{path}", method=method, headers=headers, **kwargs)


@pytest.fixture
def world(db) -> World:
    """As in the page tests: an academic customer overran a 2 h booking by 40 min (an open exception); an
    enterprise customer used its 1 h booking as booked."""
    manager = make_user(db, roles=(Role.LAB_MANAGER,))
    facility = make_facility(db, managers=(manager,), owner=make_organisation(db, kind=OrganisationKind.INSTITUTE))
    resource = make_resource(db, facility=facility)
    device = make_device(db, resource=resource)
    make_rate_card(db, resource)
    researcher = make_user(db, organisation=make_organisation(db, kind=OrganisationKind.UNIVERSITY,
                                                              name_zh="西南交通大学测试学院"))
    make_reservation(db, resource=resource, user=researcher, starts_at=IN_MONTH, ends_at=IN_MONTH + 2 * H)
    make_usage_session(db, device, IN_MONTH, IN_MONTH + 160 * M)
    enterprise = make_user(db, organisation=make_organisation(db, kind=OrganisationKind.ENTERPRISE))
    make_reservation(db, resource=resource, user=enterprise, starts_at=IN_MONTH + 4 * H, ends_at=IN_MONTH + 5 * H)
    make_usage_session(db, device, IN_MONTH + 4 * H, IN_MONTH + 4 * H + 55 * M)
    other_manager = make_user(db, roles=(Role.LAB_MANAGER,))
    make_facility(db, managers=(other_manager,))
    users = {"researcher": researcher, "enterprise": enterprise, "manager": manager, "other_manager": other_manager,
             "finance": make_user(db, roles=(Role.FINANCE,)), "admin": make_user(db, roles=(Role.ADMIN,))}
    tokens = {who: bearer(make_token(db, user)[1]) for who, user in users.items()}
    return World(users, tokens, resource)


def reconciled(client, world: World) -> int:
    """Reconciles MONTH as finance; the id of its one open exception."""
    response = world.call(client, "finance", "POST", f"/periods/{MONTH}/reconcile")
    assert response.status_code == 200, response.json
    assert response.json["open_exceptions"] == 1
    (item,) = [i for i in response.json["items"] if i["status"] == "open"]
    return item["id"]


def closed(client, world: World) -> None:
    item_id = reconciled(client, world)
    response = world.call(client, "manager", "POST", f"/reconciliation-items/{item_id}/resolve",
                          json={"resolution": "accept"})
    assert response.status_code == 200, response.json
    response = world.call(client, "finance", "POST", f"/periods/{MONTH}/close")
    assert response.status_code == 200, response.json


# --- who may call what ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("who", "method", "path", "status"), [
    ("anonymous", "GET", "/charges", 401),
    ("researcher", "POST", f"/periods/{MONTH}/reconcile", 403),
    ("manager", "POST", f"/periods/{MONTH}/reconcile", 403),
    ("finance", "POST", f"/periods/{MONTH}/reconcile", 200),
    ("admin", "POST", f"/periods/{MONTH}/reconcile", 200),
    ("researcher", "GET", f"/periods/{MONTH}/reconciliation", 403),
    ("manager", "GET", f"/periods/{MONTH}/reconciliation", 200),
    ("finance", "GET", f"/periods/{MONTH}/reconciliation", 200),
    ("researcher", "POST", f"/periods/{MONTH}/close", 403),
    ("manager", "POST", f"/periods/{MONTH}/close", 403),
    ("finance", "GET", "/charges", 200),
    ("researcher", "GET", "/charges", 200),
    ("researcher", "GET", "/statements", 200),
    ("finance", "GET", "/claims", 200),
    ("researcher", "GET", "/claims", 200),
    ("finance", "GET", "/periods/2026-13/reconciliation", 422),
    ("finance", "POST", "/charges/999999/credit-note", 422),  # no body: the reason is required
])
def test_who_may_call_what(client, world, who, method, path, status):
    assert world.call(client, who, method, path).status_code == status


def test_researchers_see_only_their_own_organisations_charges_and_statements(client, world):
    closed(client, world)
    mine = world.call(client, "researcher", "GET", "/charges").json
    assert mine["total"] == 1
    assert {c["organisation_id"] for c in mine["items"]} == {world.users["researcher"].organisation_id}
    other = world.users["enterprise"].organisation_id
    assert_error(world.call(client, "researcher", "GET", f"/charges?organisation_id={other}"), 403, "forbidden")
    statements = world.call(client, "finance", "GET", f"/statements?month={MONTH}").json
    assert statements["total"] == 2
    theirs = next(s for s in statements["items"] if s["organisation_id"] == other)
    assert_error(world.call(client, "researcher", "GET", f"/statements/{theirs['id']}"), 404, "not_found")
    assert_error(world.call(client, "researcher", "GET", f"/statements/{theirs['id']}/export?format=csv"), 404,
                 "not_found")


# --- closing a period -----------------------------------------------------------------------------------------

def test_closing_is_refused_while_an_exception_is_open_and_succeeds_once_it_is_resolved(client, world, db):
    item_id = reconciled(client, world)
    listing = world.call(client, "manager", "GET", f"/periods/{MONTH}/reconciliation?status=open").json
    assert [(i["id"], i["kind"], i["booked_minutes"], i["measured_minutes"]) for i in listing["items"]] == [
        (item_id, "overrun", 120, 160)]
    assert world.call(client, "other_manager", "GET", f"/periods/{MONTH}/reconciliation").json["items"] == []

    with writes_nothing(db):
        details = assert_error(world.call(client, "finance", "POST", f"/periods/{MONTH}/close"), 409,
                               "unresolved_exceptions")
        assert details["item_ids"] == [item_id]
        assert_error(world.call(client, "other_manager", "POST", f"/reconciliation-items/{item_id}/resolve",
                                json={"resolution": "accept"}), 403, "forbidden")
        assert_error(world.call(client, "manager", "POST", f"/reconciliation-items/{item_id}/resolve",
                                json={"resolution": "waive"}), 422, "invalid_input")  # a reason is required
        assert_error(world.call(client, "manager", "POST", f"/reconciliation-items/{item_id}/resolve",
                                json={"resolution": "nonsense"}), 422, "invalid_input")

    response = world.call(client, "manager", "POST", f"/reconciliation-items/{item_id}/resolve",
                          json={"resolution": "adjust", "adjusted_minutes": 150, "reason": "换样超时"})
    assert response.status_code == 200
    assert response.json["resolution"] == "adjust"
    report = world.call(client, "finance", "POST", f"/periods/{MONTH}/close").json
    assert report["charges"] == 2
    assert report["statements"] == 2
    assert report["total"] == "900.00"  # 150 min × 200/h + 1 h × 400/h, as a string
    period = db.scalars(select(BillingPeriod).execution_options(populate_existing=True)).one()
    assert period.state == PeriodState.CLOSED
    assert_error(world.call(client, "finance", "POST", f"/periods/{MONTH}/close"), 409, "period_closed")


def test_charges_and_statements_carry_money_as_strings_and_export_exactly(client, world):
    closed(client, world)
    charges = world.call(client, "finance", "GET", f"/charges?month={MONTH}").json
    assert charges["total"] == 2
    charge = next(c for c in charges["items"] if c["organisation_id"] == world.users["researcher"].organisation_id)
    assert charge["total"] == "400.00"
    assert charge["net"] == "400.00"
    assert charge["voucher_coverage"] == "0.00"
    assert charge["lines"][0]["amount"] == "400.00"
    assert charge["month"] == MONTH
    statement = world.call(client, "researcher", "GET", f"/statements/{charge['statement_id']}").json
    assert statement["total"] == "400.00"
    assert statement["lines"][0]["amount"] == "400.00"
    assert statement["organisation"] == "西南交通大学测试学院"

    body = world.call(client, "researcher", "GET", f"/statements/{statement['id']}/export?format=csv")
    assert body.status_code == 200
    assert body.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(body.data.decode("utf-8-sig"))))
    assert rows[1][9] == "400.00"
    assert rows[-1][9] == "400.00"
    body = world.call(client, "researcher", "GET", f"/statements/{statement['id']}/export?format=xlsx&locale=en")
    sheet = load_workbook(io.BytesIO(body.data)).active
    values = [row for row in sheet.iter_rows(values_only=True) if row and row[0] == "Total"]
    assert values[0][9] == 400
    body = world.call(client, "researcher", "GET", f"/statements/{statement['id']}/export?format=pdf")
    assert body.mimetype == "application/pdf"
    assert body.data.startswith(b"%PDF")
    assert_error(world.call(client, "researcher", "GET", f"/statements/{statement['id']}/export?format=doc"), 422,
                 "invalid_input")


def test_a_credit_note_needs_a_reason_and_is_issued_once(client, world, db):
    closed(client, world)
    charge_id = world.call(client, "finance", "GET", "/charges").json["items"][0]["id"]
    with writes_nothing(db):
        assert_error(world.call(client, "finance", "POST", f"/charges/{charge_id}/credit-note", json={"reason": " "}),
                     422, "invalid_input")
        assert_error(world.call(client, "researcher", "POST", f"/charges/{charge_id}/credit-note",
                                json={"reason": "mine"}), 403, "forbidden")
    response = world.call(client, "finance", "POST", f"/charges/{charge_id}/credit-note", json={"reason": "开错了"})
    assert response.status_code == 201, response.json
    assert response.json["kind"] == "credit_note"
    assert response.json["total"].startswith("-")
    assert response.json["credit_of_id"] == charge_id
    with writes_nothing(db):
        assert_error(world.call(client, "finance", "POST", f"/charges/{charge_id}/credit-note",
                                json={"reason": "again"}), 409, "already_credited")


# --- rate cards -----------------------------------------------------------------------------------------------

CARD = {"valid_from": "2027-01-01", "unit": "hour", "price_internal": "100", "price_academic": "250.50",
        "price_enterprise": "500"}


def test_lab_managers_of_the_facility_set_rate_cards(client, world, db):
    path = f"/resources/{world.resource.id}/rate-cards"
    with writes_nothing(db):
        assert_error(world.call(client, "researcher", "POST", path, json=CARD), 403, "forbidden")
        assert_error(world.call(client, "other_manager", "POST", path, json=CARD), 403, "forbidden")
        assert_error(world.call(client, "manager", "POST", path, json={**CARD, "price_academic": 250.5}), 422,
                     "invalid_input")  # a JSON number is not exact money
        details = assert_error(world.call(client, "manager", "POST", path, json={**CARD, "valid_from": "2026-06-01"}),
                               409, "rate_card_overlap")  # the card from make_rate_card has no end
        assert details["rate_card_id"]
    cards = world.call(client, "researcher", "GET", path).json
    assert len(cards) == 1
    ended = world.call(client, "manager", "POST", f"/rate-cards/{cards[0]['id']}/end", json={"valid_to": "2026-12-31"})
    assert ended.status_code == 200
    assert ended.json["valid_to"] == "2026-12-31"
    created = world.call(client, "manager", "POST", path, json=CARD)
    assert created.status_code == 201, created.json
    assert created.json["price_academic"] == "250.50"
    assert_error(world.call(client, "manager", "GET", "/resources/999999/rate-cards"), 404, "not_found")


# --- claims ---------------------------------------------------------------------------------------------------

def test_a_claim_goes_from_draft_to_paid(client, db):
    from tests.billing.test_claims import World as ClaimWorld

    begin_write(db)
    cw = ClaimWorld(db)
    finance = make_user(db, roles=(Role.FINANCE,), organisation=cw.resource.facility.owner)
    tokens = {"provider": bearer(make_token(db, finance)[1]), "admin": bearer(make_token(db, cw.admin)[1]),
              "customer": bearer(make_token(db, cw.customer)[1])}
    month = f"{cw.period.month:%Y-%m}"

    def call(who, method, path, **kwargs):
        return client.open(f"/api/v1{path}", method=method, headers=tokens[who], **kwargs)

    with writes_nothing(db):
        assert_error(call("provider", "POST", "/claims", json={"programme_id": cw.programme.id, "month": "2020-01"}),
                     404, "not_found")
    created = call("provider", "POST", "/claims", json={"programme_id": cw.programme.id, "month": month})
    assert created.status_code == 201, created.json
    claim = created.json
    assert claim["state"] == "draft"
    assert claim["total"] == "500.00"
    assert len(claim["items"]) == 1
    assert claim["missing_evidence"][0]["missing"]
    with writes_nothing(db):
        details = assert_error(call("provider", "POST", f"/claims/{claim['id']}/submit"), 422, "claim_incomplete")
        assert "invoice_number" in details["missing"][0]["missing"]

    item_id = claim["items"][0]["id"]
    claims.record_evidence(db, finance, claim["id"], cw.points_by_session())
    claims.set_item_references(db, finance, item_id, invoice_number="INV-1", payment_reference="PAY-1")
    claims.confirm_item(db, finance, item_id)
    claims.confirm_item(db, cw.customer, item_id)
    db.flush()
    assert call("provider", "POST", f"/claims/{claim['id']}/submit").json["state"] == "submitted"
    with writes_nothing(db):
        assert_error(call("provider", "POST", f"/claims/{claim['id']}/approve"), 403, "forbidden")
        assert_error(call("admin", "POST", f"/claims/{claim['id']}/reject", json={"reason": ""}), 422,
                     "invalid_input")
        assert_error(call("admin", "POST", f"/claims/{claim['id']}/mark-paid", json={"payout_reference": "X"}), 409,
                     "invalid_claim_transition")
    assert call("admin", "POST", f"/claims/{claim['id']}/approve").json["state"] == "approved"
    paid = call("admin", "POST", f"/claims/{claim['id']}/mark-paid", json={"payout_reference": "SC-PAY-2026-1"}).json
    assert paid["state"] == ClaimState.PAID.value
    assert paid["payout_reference"] == "SC-PAY-2026-1"
    listing = call("provider", "GET", "/claims?state=paid").json
    assert [c["id"] for c in listing["items"]] == [claim["id"]]
    pdf = call("provider", "GET", f"/claims/{claim['id']}/export?format=pdf")
    assert pdf.status_code == 200
    assert pdf.data.startswith(b"%PDF")
    rows = list(csv.reader(io.StringIO(call("provider", "GET", f"/claims/{claim['id']}/export?format=csv")
                                       .data.decode("utf-8-sig"))))
    assert rows[-1][8] == "500.00"
    assert call("customer", "GET", f"/claims/{claim['id']}").status_code == 404  # the holder is not the claimant
    assert Decimal(paid["total"]) == Decimal("500.00")
