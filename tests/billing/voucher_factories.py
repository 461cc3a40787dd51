"""Factories for the voucher tests: billing periods, charges with lines, programmes, holders and vouchers."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing import vouchers
from billing.models import BillingPeriod, Charge, ChargeKind, ChargeLine, ChargeLineKind, CustomerClass
from billing.voucher_models import (
    Voucher,
    VoucherApplication,
    VoucherCapUsage,
    VoucherClaim,
    VoucherClaimItem,
    VoucherProgramme,
)
from booking.models import Resource
from core.accounts.models import Organisation
from core.audit import AuditEntry
from tests.factories import make_organisation

GRANTED_ON = date(2026, 3, 2)  # a voucher granted then is valid until 1 June 2026 (3 months)
SERVICE_DAY = date(2026, 3, 16)
_seq = itertools.count(1)

# Everything applying a voucher or working on a claim may write: a refused request leaves every count as it was.
VOUCHER_TABLES = (Voucher, VoucherApplication, VoucherCapUsage, VoucherClaim, VoucherClaimItem, AuditEntry)


def make_holder(db: Session, **overrides: Any) -> Organisation:
    """A tech SME registered in Chengdu: eligible under the Sichuan reference programme."""
    return make_organisation(db, **{"tech_sme": True, "city": "510100", **overrides})


def make_programme(db: Session, **overrides: Any) -> VoucherProgramme:
    """The Sichuan reference programme for 2026 (budget 1,000,000 CNY) with `overrides` of its settings."""
    n = next(_seq)
    data = vouchers.sichuan_reference_programme(2026, budget=Decimal("1000000.00"), code=f"T{n}-2026")
    for key, value in overrides.items():
        setattr(data, key, value)
    return vouchers.create_programme(db, None, data)


def make_voucher(db: Session, programme: VoucherProgramme, holder: Organisation, *, on: date = GRANTED_ON,
                 amount: Decimal | None = None) -> Voucher:
    return vouchers.grant_voucher(db, None, programme.id, holder.id, on=on, amount=amount)


def period_of(db: Session, day: date) -> BillingPeriod:
    month = day.replace(day=1)
    period = db.scalar(select(BillingPeriod).where(BillingPeriod.month == month))
    if period is None:
        period = BillingPeriod(month=month)
        db.add(period)
        db.flush()
    return period


def make_charge(db: Session, organisation: Organisation, resource: Resource, *,
                lines: tuple[tuple[ChargeLineKind, str], ...] = ((ChargeLineKind.USAGE, "1000.00"),),
                service_date: date = SERVICE_DAY, **overrides: Any) -> Charge:
    """A charge billed to `organisation` for a service on `resource`; lines as (kind, amount), voucher-eligible
    when their kind is."""
    from billing.models import VOUCHER_ELIGIBLE_LINE_KINDS

    charge_lines = [ChargeLine(kind=kind, description=kind.value, quantity=Decimal(1), unit="run",
                               unit_price=Decimal(amount), amount=Decimal(amount),
                               voucher_eligible=kind in VOUCHER_ELIGIBLE_LINE_KINDS) for kind, amount in lines]
    values = dict(period_id=period_of(db, service_date).id, organisation_id=organisation.id,
                  resource_id=resource.id, facility_id=resource.facility_id, service_date=service_date,
                  customer_class=CustomerClass.ENTERPRISE, total=sum(line.amount for line in charge_lines),
                  kind=ChargeKind.CHARGE)
    values.update(overrides)
    charge = Charge(lines=charge_lines, **values)
    db.add(charge)
    db.flush()
    return charge
