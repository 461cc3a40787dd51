"""Closing a period: charges per reservation and unbooked use, one statement per organisation whose total is
the exact sum of its lines, once only; refusals change nothing; corrections are credit notes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from billing.charges import close_period, issue_credit_note
from billing.errors import (
    AlreadyCredited,
    MissingRateCard,
    NotCreditable,
    PeriodClosed,
    PeriodNotOver,
    UnresolvedExceptions,
)
from billing.models import (
    BillingPeriod,
    Charge,
    ChargeKind,
    ChargeLine,
    ChargeLineKind,
    CustomerClass,
    PeriodState,
    ReconciliationItem,
    Statement,
)
from billing.reconcile import reconcile_period, resolve_item
from booking.models import ReservationKind, ReservationState
from core.accounts.models import Affiliation, OrganisationKind, Role
from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput
from tests.billing.factories import AFTER_MONTH, IN_MONTH, MONTH, make_rate_card, make_usage_session
from tests.factories import make_organisation, make_reservation, make_resource, make_user, row_counts

H = timedelta(hours=1)
M = timedelta(minutes=1)
BILLING_TABLES = (BillingPeriod, ReconciliationItem, Charge, ChargeLine, Statement, AuditEntry)


def book(db, resource, user, start=IN_MONTH, hours=2, **kw):
    return make_reservation(db, resource=resource, user=user, starts_at=start, ends_at=start + hours * H, **kw)


def close(db, actor, month=MONTH, now=AFTER_MONTH, **kw):
    return close_period(db, actor, month, now=now, **kw)


def charge_of(db, reservation) -> Charge:
    return db.scalars(select(Charge).where(Charge.reservation_id == reservation.id, Charge.kind == ChargeKind.CHARGE)
                      .execution_options(populate_existing=True)).one()


def test_closing_issues_charges_and_numbered_statements_and_locks_the_period(
        db, finance, resource, device, card, researcher, enterprise_user):
    academic = book(db, resource, researcher)  # 2 h booked, used 1:50 → booked basis: 2 h × 200
    make_usage_session(db, device, IN_MONTH, IN_MONTH + 110 * M)
    enterprise = book(db, resource, enterprise_user, start=IN_MONTH + 3 * H, hours=1, state=ReservationState.NO_SHOW)
    late = book(db, resource, enterprise_user, start=IN_MONTH + 6 * H, hours=1, state=ReservationState.CANCELLED,
                late_cancellation=True)

    report = close(db, finance)

    assert (report.charges, report.statements, report.total) == (3, 2, Decimal("700.00"))
    assert charge_of(db, academic).total == Decimal("400.00")
    assert charge_of(db, academic).customer_class == CustomerClass.ACADEMIC
    assert [(line.kind, line.quantity, line.amount) for line in charge_of(db, academic).lines] == [
        (ChargeLineKind.USAGE, Decimal("2.0000"), Decimal("400.00"))]
    assert [(line.kind, line.amount, line.voucher_eligible) for line in charge_of(db, enterprise).lines] == [
        (ChargeLineKind.NO_SHOW, Decimal("200.00"), False)]  # half of 1 h × 400
    assert charge_of(db, late).total == Decimal("100.00")  # a quarter of 1 h × 400
    statements = db.scalars(select(Statement).order_by(Statement.number)).all()
    assert [s.number for s in statements] == ["ST-2026-09-0001", "ST-2026-09-0002"]
    assert {s.organisation_id: s.total for s in statements} == {
        researcher.organisation_id: Decimal("400.00"), enterprise_user.organisation_id: Decimal("300.00")}
    period = db.scalars(select(BillingPeriod).execution_options(populate_existing=True)).one()
    assert (period.state, period.closed_by_id, period.closed_at) == (PeriodState.CLOSED, finance.id, AFTER_MONTH)
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "billing.period_closed")).data["total"] == "700.00"
    assert len(db.scalars(select(AuditEntry).where(AuditEntry.action == "statement.issued")).all()) == 2


def test_statement_totals_equal_the_sum_of_their_lines_exactly(db, finance, facility, researcher):
    # prices that round on every line: 0.25 h × 333.33 and 1.75 h × 0.03, with setup and technician fees
    resources = [make_resource(db, facility=facility) for _ in range(3)]
    for n, resource in enumerate(resources):
        make_rate_card(db, resource, price_academic=Decimal(("333.33", "0.03", "777.77")[n]),
                       setup_fee=Decimal("0.05"), technician_fee_per_hour=Decimal("33.33"))
        for k in range(4):
            book(db, resource, researcher, start=IN_MONTH + k * 5 * H + n * 24 * H, hours=1 + k,
                 kind=ReservationKind.TECHNICIAN if k % 2 else ReservationKind.SELF_SERVICE)

    close(db, finance)

    statement = db.scalars(select(Statement)).one()
    line_sum = db.scalar(select(func.sum(ChargeLine.amount)).join(Charge).where(Charge.statement_id == statement.id))
    charge_sum = db.scalar(select(func.sum(Charge.total)).where(Charge.statement_id == statement.id))
    assert statement.total == line_sum == charge_sum
    for charge in db.scalars(select(Charge)):
        assert charge.total == sum(line.amount for line in charge.lines)


@pytest.mark.parametrize(("relation", "expected"), [
    ("owner", CustomerClass.INTERNAL), ("affiliate", CustomerClass.INTERNAL),
    (OrganisationKind.UNIVERSITY, CustomerClass.ACADEMIC), (OrganisationKind.GOVERNMENT, CustomerClass.ACADEMIC),
    (OrganisationKind.ENTERPRISE, CustomerClass.ENTERPRISE),
])
def test_customer_class_from_the_billed_organisation(db, finance, owner, resource, card, relation, expected):
    if relation == "owner":
        org = owner
    else:
        org = make_organisation(db, kind=OrganisationKind.ENTERPRISE if relation == "affiliate" else relation)
        if relation == "affiliate":
            db.add(Affiliation(organisation_id=org.id, related_id=owner.id))
            db.flush()
    reservation = book(db, resource, make_user(db, organisation=org))

    close(db, finance)

    charge = charge_of(db, reservation)
    prices = {CustomerClass.INTERNAL: "200.00", CustomerClass.ACADEMIC: "400.00", CustomerClass.ENTERPRISE: "800.00"}
    assert (charge.customer_class, charge.total) == (expected, Decimal(prices[expected]))


def test_the_card_valid_on_the_service_date_prices_the_charge(db, finance, resource, researcher):
    make_rate_card(db, resource, valid_from=date(2026, 1, 1), valid_to=date(2026, 9, 14))
    make_rate_card(db, resource, valid_from=date(2026, 9, 15), price_academic=Decimal("300.00"))
    early = book(db, resource, researcher)
    # 00:30 on 15 September in Shanghai is still 14 September in UTC: the facility's date decides
    late = book(db, resource, researcher, start=datetime(2026, 9, 14, 16, 30, tzinfo=UTC), hours=1)

    close(db, finance)

    assert charge_of(db, early).total == Decimal("400.00")
    assert (charge_of(db, late).service_date, charge_of(db, late).total) == (date(2026, 9, 15), Decimal("300.00"))


def test_unresolved_exceptions_block_closing_and_nothing_changes(db, finance, manager, resource, device, card,
                                                                 researcher):
    reservation = book(db, resource, researcher)  # nothing measured: an open no-show
    reconcile_period(db, finance, MONTH, now=AFTER_MONTH)
    before = row_counts(db, *BILLING_TABLES)

    with pytest.raises(UnresolvedExceptions) as caught:
        close(db, finance)

    assert caught.value.code == "unresolved_exceptions"
    assert "1 reconciliation exceptions of 2026-09" in caught.value.render()
    assert row_counts(db, *BILLING_TABLES) == before
    item = db.scalars(select(ReconciliationItem)).one()
    resolve_item(db, manager, item.id, "accept")  # the no-show fee stands
    close(db, finance)
    assert charge_of(db, reservation).lines[0].kind == ChargeLineKind.NO_SHOW


def test_closing_twice_is_refused_and_changes_nothing(db, finance, resource, device, card, researcher):
    book(db, resource, researcher)
    make_usage_session(db, device, IN_MONTH, IN_MONTH + 2 * H)
    close(db, finance)
    before = row_counts(db, *BILLING_TABLES)

    with pytest.raises(PeriodClosed) as caught:
        close(db, finance)

    assert caught.value.code == "period_closed"
    assert row_counts(db, *BILLING_TABLES) == before


def test_a_month_that_has_not_ended_cannot_be_closed(db, finance, resource, card):
    before = row_counts(db, *BILLING_TABLES)
    with pytest.raises(PeriodNotOver):
        close(db, finance, now=datetime(2026, 9, 30, 20, 0, tzinfo=UTC))
    assert row_counts(db, *BILLING_TABLES) == before


def test_missing_rate_cards_are_named_and_nothing_changes(db, finance, resource, researcher):
    book(db, resource, researcher)
    before = row_counts(db, *BILLING_TABLES)

    with pytest.raises(MissingRateCard) as caught:
        close(db, finance)

    assert caught.value.details["missing"] == [{"resource_id": resource.id, "service_date": "2026-09-08"}]
    assert row_counts(db, *BILLING_TABLES) == before


def test_waived_adjusted_and_assigned_items_are_billed_as_decided(db, finance, manager, resource, device, card,
                                                                  researcher, enterprise_user):
    waived = book(db, resource, researcher)  # no-show, waived
    adjusted = book(db, resource, researcher, start=IN_MONTH + 4 * H)
    make_usage_session(db, device, IN_MONTH + 4 * H, IN_MONTH + 7 * H)  # overrun, adjusted to 150 minutes
    visitor = make_usage_session(db, device, IN_MONTH + 10 * H, IN_MONTH + 10 * H + 40 * M, operator="visitor")
    reconcile_period(db, finance, MONTH, now=AFTER_MONTH)
    items = {i.reservation_id or ("session", i.usage_session_id): i for i in db.scalars(select(ReconciliationItem))}
    resolve_item(db, manager, items[waived.id].id, "waive", reason="power cut")
    resolve_item(db, manager, items[adjusted.id].id, "adjust", reason="ran for the customer", adjusted_minutes=150)
    resolve_item(db, manager, items[("session", visitor.id)].id, "assign", user_id=enterprise_user.id)

    report = close(db, finance)

    assert (report.charges, report.waived) == (2, 1)
    assert charge_of(db, adjusted).total == Decimal("500.00")  # 2.5 h × 200
    unbooked = db.scalars(select(Charge).where(Charge.usage_session_id == visitor.id)).one()
    assert (unbooked.organisation_id, unbooked.user_id, unbooked.total) == (
        enterprise_user.organisation_id, enterprise_user.id, Decimal("300.00"))  # 0.75 h × 400


def test_researchers_and_lab_managers_cannot_close(db, researcher, manager, resource, card):
    for actor in (researcher, manager):
        with pytest.raises(Forbidden):
            close(db, actor)
    assert row_counts(db, BillingPeriod) == {"billing_period": 0}
    admin = make_user(db, roles=(Role.ADMIN,))
    assert close(db, admin).charges == 0


def test_a_credit_note_reverses_a_charge_in_the_current_period(db, finance, researcher, resource, device, card):
    reservation = book(db, resource, researcher)
    make_usage_session(db, device, IN_MONTH, IN_MONTH + 2 * H)
    close(db, finance)
    charge = charge_of(db, reservation)

    credit = issue_credit_note(db, finance, charge.id, "Wrong customer class", now=datetime(2026, 10, 9, tzinfo=UTC))

    assert (credit.kind, credit.credit_of_id, credit.total) == (ChargeKind.CREDIT_NOTE, charge.id, -charge.total)
    assert [(line.kind, line.amount, line.voucher_eligible) for line in credit.lines] == [
        (ChargeLineKind.CREDIT, Decimal("-400.00"), False)]
    assert db.get(BillingPeriod, credit.period_id).month == date(2026, 10, 1)
    assert charge_of(db, reservation).total == Decimal("400.00")  # the charge itself is untouched
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "charge.credited"))
    assert (entry.actor_id, entry.data["reason"], entry.data["total"]) == (finance.id, "Wrong customer class",
                                                                            "-400.00")
    # October's statement carries the credit note
    report = close(db, finance, month="2026-10", now=datetime(2026, 11, 2, tzinfo=UTC))
    assert (report.statements, report.credit_notes, report.total) == (1, 1, Decimal("0.00"))
    october = db.scalars(select(Statement).where(Statement.number == "ST-2026-10-0001")).one()
    assert october.total == Decimal("-400.00")


def test_credit_notes_are_refused_twice_for_credit_notes_without_reason_and_for_researchers(
        db, finance, researcher, resource, device, card):
    reservation = book(db, resource, researcher)
    make_usage_session(db, device, IN_MONTH, IN_MONTH + 2 * H)
    close(db, finance)
    charge = charge_of(db, reservation)
    when = datetime(2026, 10, 9, tzinfo=UTC)
    credit = issue_credit_note(db, finance, charge.id, "duplicate", now=when)
    before = row_counts(db, *BILLING_TABLES)

    with pytest.raises(AlreadyCredited):
        issue_credit_note(db, finance, charge.id, "again", now=when)
    with pytest.raises(NotCreditable):
        issue_credit_note(db, finance, credit.id, "reverse the reversal", now=when)
    with pytest.raises(InvalidInput):
        issue_credit_note(db, finance, charge.id, "  ", now=when)
    with pytest.raises(Forbidden):
        issue_credit_note(db, researcher, charge.id, "mine", now=when)
    assert row_counts(db, *BILLING_TABLES) == before


def test_streaming_handles_more_rows_than_a_batch(db, finance, facility, researcher, monkeypatch):
    import billing.charges
    import billing.reconcile

    monkeypatch.setattr(billing.reconcile, "STREAM_BATCH", 3)
    monkeypatch.setattr(billing.reconcile, "WRITE_BATCH", 4)
    monkeypatch.setattr(billing.charges, "CHARGE_BATCH", 5)
    monkeypatch.setattr(billing.charges, "STREAM_BATCH", 3)
    resources = [make_resource(db, facility=facility) for _ in range(4)]
    for resource in resources:
        make_rate_card(db, resource)
        for day in range(6):
            book(db, resource, researcher, start=IN_MONTH + day * 24 * H)
    progress = []

    report = close(db, finance, progress=lambda done, total: progress.append((done, total)))

    assert (report.charges, report.total) == (24, Decimal("9600.00"))
    assert progress == [(24, 24)]
    assert db.scalar(select(func.count()).select_from(ChargeLine)) == 24
