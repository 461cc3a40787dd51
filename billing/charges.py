"""Closing a billing period (charges and per-organisation statements) and correcting it with credit notes.

Closing runs once: it reconciles the month again, refuses while exceptions are open, prices every item with
the rate card in force on its service date, numbers one statement per billed organisation and locks the
period. A closed period is never edited; a correction is a credit note in the current open period.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from billing import pricing
from billing.errors import (
    AlreadyCredited,
    MissingRateCard,
    NotCreditable,
    PeriodNotOver,
    SubsidisedCharge,
    UnresolvedExceptions,
)
from billing.models import (
    BillingPeriod,
    Charge,
    ChargeKind,
    ChargeLine,
    ChargeLineKind,
    CustomerClass,
    ItemStatus,
    PeriodState,
    RateCard,
    ReconciliationItem,
    ReconciliationKind,
    Resolution,
    Statement,
)
from billing.periods import Month, check_finance, current_month, open_period, parse_month, require_open
from billing.rate_cards import pick_card
from billing.reconcile import (
    STREAM_BATCH,
    ReconcileReport,
    ResourceInfo,
    cards_by_resource,
    reconcile,
    resource_infos,
)
from billing.voucher_models import VoucherApplication
from booking.models import Reservation, ReservationKind
from core import audit
from core.accounts.models import Affiliation, Organisation, User
from core.db import begin_write
from core.errors import N_, InvalidInput, NotFound
from core.money import to_cny
from core.timeutil import utcnow

CHARGE_BATCH = 500
ZERO = Decimal("0.00")


@dataclass
class CloseReport:
    month: str
    reconciliation: ReconcileReport
    charges: int = 0
    waived: int = 0
    free: int = 0  # priced at zero: nothing to bill
    credit_notes: int = 0  # issued earlier into this period, now on its statements
    statements: int = 0
    total: Decimal = ZERO
    statement_numbers: list[str] = field(default_factory=list)


def statement_number(month: Month, n: int) -> str:
    return f"ST-{month.first_day:%Y-%m}-{n:04d}"


def tariff_for(card: RateCard, customer_class: CustomerClass, batch_days: int | None) -> pricing.Tariff:
    return pricing.Tariff(
        unit=card.unit, unit_price=card.price_for(customer_class), minimum_charge=card.minimum_charge,
        setup_fee=card.setup_fee, technician_fee_per_hour=card.technician_fee_per_hour,
        no_show_fraction=Decimal(card.no_show_fraction),
        late_cancellation_fraction=Decimal(card.late_cancellation_fraction),
        basis=card.basis, tolerance_min=card.tolerance_min, batch_days=batch_days)


def usage_of(item: Any) -> pricing.Usage:
    """What a reconciliation item (a row of _item_query) says happened, for pricing."""
    outcome = {ReconciliationKind.NO_SHOW: pricing.Outcome.NO_SHOW,
               ReconciliationKind.LATE_CANCELLATION: pricing.Outcome.LATE_CANCELLATION}.get(
        item.kind, pricing.Outcome.SERVED)
    override = None
    if item.resolution == Resolution.ADJUST:
        outcome, override = pricing.Outcome.SERVED, item.adjusted_minutes
    elif item.kind == ReconciliationKind.UNBOOKED:
        override = item.measured_minutes  # nothing was booked: the measured time is the use
    unbooked = item.kind == ReconciliationKind.UNBOOKED
    return pricing.Usage(
        outcome=outcome, booked_minutes=item.booked_minutes,
        measured_minutes=item.measured_minutes if item.metered else None,
        booked_samples=(item.measured_samples if unbooked else item.sample_count),
        measured_samples=item.measured_samples, runs=item.measured_runs or (1 if unbooked else 0),
        technician=item.reservation_kind == ReservationKind.TECHNICIAN, override_minutes=override)


def _item_query(period: BillingPeriod):
    ri = ReconciliationItem
    return (select(ri.id, ri.resource_id, ri.kind, ri.reservation_id, ri.usage_session_id, ri.service_date,
                   ri.booked_minutes, ri.measured_minutes, ri.measured_runs, ri.measured_samples, ri.metered,
                   ri.resolution, ri.adjusted_minutes, ri.assigned_org_id, ri.assigned_user_id,
                   Reservation.user_id, Reservation.billed_org_id, Reservation.kind.label("reservation_kind"),
                   Reservation.sample_count)
            .outerjoin(Reservation, Reservation.id == ri.reservation_id)
            .where(ri.period_id == period.id)
            .order_by(ri.resource_id, ri.id)
            .execution_options(yield_per=STREAM_BATCH))


class CustomerClasses:
    """Customer classes from the billed organisation and the facility's owner (organisations and declared
    affiliations are few next to reservations, so they are loaded once)."""

    def __init__(self, db: Session):
        self.kinds = dict(db.execute(select(Organisation.id, Organisation.kind)).all())
        self.related: set[tuple[int, int]] = set()
        for a, b in db.execute(select(Affiliation.organisation_id, Affiliation.related_id)).all():
            self.related.update({(a, b), (b, a)})

    def of(self, org_id: int, owner_id: int) -> CustomerClass:
        return pricing.customer_class(org_id, self.kinds[org_id], owner_id,
                                      affiliated=(org_id, owner_id) in self.related)


def issue_charges(db: Session, actor: User | None, period: BillingPeriod, report: CloseReport, *,
                  now: datetime, progress: Callable[[int, int], None] | None = None) -> None:
    """Price every item of the period and write its charge and lines (in batches, items streamed);
    `progress(done, total)` is called every 100 items and at the end."""
    resources = resource_infos(db)
    cards = cards_by_resource(db)
    classes = CustomerClasses(db)
    missing: list[tuple[int, date]] = []
    charges: list[dict[str, Any]] = []
    lines: list[list[dict[str, Any]]] = []
    count = db.scalar(select(func.count()).select_from(ReconciliationItem)
                      .where(ReconciliationItem.period_id == period.id)) or 0
    done = 0
    for item in db.execute(_item_query(period)):
        done += 1
        if progress is not None and (done % 100 == 0 or done == count):
            progress(done, count)
        if item.resolution == Resolution.WAIVE:
            report.waived += 1
            continue
        info: ResourceInfo = resources[item.resource_id]
        card = pick_card(cards.get(item.resource_id, []), item.service_date)
        if card is None:
            missing.append((item.resource_id, item.service_date))
            continue
        org_id = item.assigned_org_id or item.billed_org_id
        customer_class = classes.of(org_id, info.owner_id)
        priced = pricing.price(tariff_for(card, customer_class, info.batch_days), usage_of(item))
        amount = pricing.total(priced)
        if not amount:
            report.free += 1
            continue
        charges.append({
            "period_id": period.id, "organisation_id": org_id,
            "user_id": item.assigned_user_id or item.user_id, "resource_id": item.resource_id,
            "facility_id": info.facility_id, "reservation_id": item.reservation_id,
            "usage_session_id": item.usage_session_id, "reconciliation_item_id": item.id,
            "service_date": item.service_date, "customer_class": customer_class, "rate_card_id": card.id,
            "total": amount, "kind": ChargeKind.CHARGE, "credit_of_id": None, "reason": "", "statement_id": None,
            "created_by_id": actor.id if actor else None, "created_at": now})
        lines.append([{"kind": line.kind, "description": line.description, "quantity": line.quantity,
                       "unit": line.unit, "unit_price": line.unit_price, "amount": line.amount,
                       "voucher_eligible": line.voucher_eligible and info.voucher_eligible} for line in priced])
        report.total += amount
        if len(charges) >= CHARGE_BATCH:
            _write_charges(db, charges, lines, report)
    if missing:
        resource_id, day = missing[0]
        raise MissingRateCard(count=len(missing), resource=resource_id, date=day.isoformat(),
                              details={"missing": [{"resource_id": r, "service_date": d.isoformat()}
                                                   for r, d in missing[:50]]})
    _write_charges(db, charges, lines, report)


def _write_charges(db: Session, charges: list[dict[str, Any]], lines: list[list[dict[str, Any]]],
                   report: CloseReport) -> None:
    if not charges:
        return
    # A plain executemany (pipelined on PostgreSQL) and one SELECT for the new ids is several times faster
    # than INSERT … RETURNING over many rows; each charge of a closing has its own reconciliation item.
    table = Charge.__table__
    db.execute(insert(table), charges)
    item_ids = [charge["reconciliation_item_id"] for charge in charges]
    ids = dict(db.execute(select(table.c.reconciliation_item_id, table.c.id).where(
        table.c.kind == ChargeKind.CHARGE, table.c.reconciliation_item_id.in_(item_ids))).all())
    db.execute(insert(ChargeLine.__table__),
               [{**line, "charge_id": ids[item_id]}
                for item_id, group in zip(item_ids, lines, strict=True) for line in group])
    report.charges += len(charges)
    charges.clear()
    lines.clear()


def issue_statements(db: Session, actor: User | None, period: BillingPeriod, report: CloseReport, *,
                     now: datetime) -> None:
    """One numbered statement per organisation with charges or credit notes in the period; its total is the
    exact sum (fen on SQLite, numeric on PostgreSQL) of its charges, each the exact sum of its lines."""
    month = parse_month(period.month)
    credits = func.sum(case((Charge.kind == ChargeKind.CREDIT_NOTE, 1), else_=0))
    sums = db.execute(select(Charge.organisation_id, func.sum(Charge.total), func.count(), credits)
                      .where(Charge.period_id == period.id, Charge.statement_id.is_(None))
                      .group_by(Charge.organisation_id).order_by(Charge.organisation_id)).all()
    taken = db.scalar(select(func.count()).select_from(Statement).where(Statement.period_id == period.id)) or 0
    rows = [{"period_id": period.id, "organisation_id": org_id, "number": statement_number(month, taken + n),
             "total": to_cny(total), "issued_at": now, "issued_by_id": actor.id if actor else None}
            for n, (org_id, total, _count, _credits) in enumerate(sums, start=1)]
    if not rows:
        return
    table = Statement.__table__
    ids = db.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows).scalars().all()
    charge = Charge.__table__
    db.execute(update(charge).where(charge.c.period_id == bindparam("p_id"),
                                    charge.c.organisation_id == bindparam("org_id"),
                                    charge.c.statement_id.is_(None)).values(statement_id=bindparam("s_id")),
               [{"p_id": period.id, "org_id": row["organisation_id"], "s_id": sid} for row, sid in zip(rows, ids,
                                                                                                        strict=True)])
    for row, sid, (_org, _total, count, credits) in zip(rows, ids, sums, strict=True):
        audit.record(db, actor, "statement.issued", SimpleNamespace(__tablename__="statement", id=sid),
                     number=row["number"], organisation_id=row["organisation_id"], total=row["total"],
                     charges=count, credit_notes=int(credits or 0))
        report.credit_notes += int(credits or 0)
        report.statement_numbers.append(row["number"])
    report.statements = len(rows)


def close_period(db: Session, actor: User | None, month: str | date | Month, *, now: datetime | None = None,
                 progress: Callable[[int, int], None] | None = None) -> CloseReport:
    """Close a month (finance or admin; None is the command line). Refuses while exceptions are open, when the
    month is not over and when it is closed already; on any refusal nothing has changed."""
    check_finance(actor)
    month = parse_month(month)
    now = now or utcnow()
    if not month.is_over(now):
        raise PeriodNotOver(month=month.label)
    begin_write(db)
    with db.begin_nested():
        period = open_period(db, month, lock=True)
        require_open(period)
        reconciliation = reconcile(db, period, now=now)
        if reconciliation.open_exceptions:
            ids = db.scalars(select(ReconciliationItem.id).where(
                ReconciliationItem.period_id == period.id, ReconciliationItem.status == ItemStatus.OPEN)
                .order_by(ReconciliationItem.id).limit(50)).all()
            raise UnresolvedExceptions(count=reconciliation.open_exceptions, month=month.label,
                                       details={"item_ids": list(ids)})
        report = CloseReport(month=month.label, reconciliation=reconciliation)
        issue_charges(db, actor, period, report, now=now, progress=progress)
        issue_statements(db, actor, period, report, now=now)
        period.state, period.closed_at = PeriodState.CLOSED, now
        period.closed_by_id = actor.id if actor else None
        db.flush()
        audit.record(db, actor, "billing.period_closed", period, month=month.label, charges=report.charges,
                     waived=report.waived, free=report.free, statements=report.statements,
                     credit_notes=report.credit_notes, total=report.total)
    return report


def issue_credit_note(db: Session, actor: User | None, charge_id: int, reason: str, *,
                      now: datetime | None = None) -> Charge:
    """Reverse a charge in full (finance or admin): a credit note with the negated lines, in the current open
    period, so it appears on the organisation's next statement. The charge itself is never edited."""
    check_finance(actor)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput({"reason": [N_("Give a reason.")]})
    begin_write(db)
    query = select(Charge).where(Charge.id == charge_id)
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    charge = db.scalar(query)
    if charge is None:
        raise NotFound("charge", charge_id)
    if charge.kind != ChargeKind.CHARGE:
        raise NotCreditable(details={"charge_id": charge.id})
    existing = db.scalar(select(Charge.id).where(Charge.credit_of_id == charge.id))
    if existing is not None:
        raise AlreadyCredited(charge=charge.id, details={"credit_note_id": existing})
    # Reversing a subsidised charge would need the subsidy given back to the voucher, the annual cap and the
    # budget, and taken out of any claim; until that exists, refuse rather than leave a refunded charge subsidised.
    subsidies = db.scalars(select(VoucherApplication.id).where(VoucherApplication.charge_id == charge.id)).all()
    if subsidies:
        raise SubsidisedCharge(charge=charge.id, details={"voucher_application_ids": list(subsidies)})
    now = now or utcnow()
    with db.begin_nested():
        period = open_period(db, current_month(now), lock=True)
        require_open(period)
        credit = Charge(
            period_id=period.id, organisation_id=charge.organisation_id, user_id=charge.user_id,
            resource_id=charge.resource_id, facility_id=charge.facility_id, reservation_id=charge.reservation_id,
            usage_session_id=charge.usage_session_id, reconciliation_item_id=charge.reconciliation_item_id,
            service_date=charge.service_date, customer_class=charge.customer_class, rate_card_id=charge.rate_card_id,
            total=-charge.total, kind=ChargeKind.CREDIT_NOTE, credit_of_id=charge.id, reason=reason,
            created_by_id=actor.id if actor else None, created_at=now,
            lines=[ChargeLine(kind=ChargeLineKind.CREDIT, description=line.description, quantity=-line.quantity,
                              unit=line.unit, unit_price=line.unit_price, amount=-line.amount,
                              voucher_eligible=False) for line in charge.lines])
        db.add(credit)
        db.flush()
        audit.record(db, actor, "charge.credited", credit, credit_of_id=charge.id, reason=reason,
                     total=credit.total, organisation_id=charge.organisation_id, period_id=period.id)
    return credit
