"""What a booking would cost the researcher's organisation, and what its innovation voucher would cover: the rate
card in force on the day, the organisation's customer class at the facility, billing.pricing and
billing.vouchers.coverage. An estimate for the booking preview; the charge itself is computed when the period
closes, from what was measured."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from billing import pricing, vouchers
from billing.charges import tariff_for
from billing.models import CustomerClass
from billing.rate_cards import card_in_force
from billing.reconcile import minutes_between
from booking.models import OperationMode, Resource
from core.accounts.models import User
from core.accounts.services import are_related
from core.timeutil import to_local

ZERO = Decimal("0.00")


@dataclass(frozen=True, slots=True)
class Estimate:
    customer_class: CustomerClass
    lines: list[pricing.Line]
    total: Decimal
    eligible_fee: Decimal
    voucher: vouchers.VoucherSummary | None = None
    coverage: vouchers.Coverage | None = None

    @property
    def net(self) -> Decimal:
        return self.total - (self.coverage.amount if self.coverage else ZERO)


def estimate_booking(db: Session, user: User, resource: Resource, starts_at: datetime, ends_at: datetime,
                     sample_count: int | None = None) -> Estimate | None:
    """None when no rate card is in force on the day of the booking."""
    facility = resource.facility
    day = to_local(starts_at, facility.timezone).date()
    card = card_in_force(db, resource.id, day)
    if card is None:
        return None
    org = user.organisation
    klass = pricing.customer_class(org.id, org.kind, facility.owner_id,
                                   affiliated=are_related(db, org.id, facility.owner_id))
    usage = pricing.Usage(outcome=pricing.Outcome.SERVED, booked_minutes=minutes_between(starts_at, ends_at),
                          booked_samples=sample_count, technician=resource.operation_mode == OperationMode.TECHNICIAN)
    lines = pricing.price(tariff_for(card, klass, resource.batch_days), usage)
    total = pricing.total(lines)
    eligible = sum((line.amount for line in lines if line.voucher_eligible), ZERO) if resource.voucher_eligible \
        else ZERO
    best: tuple[vouchers.VoucherSummary, vouchers.Coverage] | None = None
    if eligible > 0:
        for summary in vouchers.vouchers_of(db, org.id, on=day, include_expired=False):
            programme = summary.programme
            if summary.status != "active" or not programme.active or day > summary.voucher.valid_until \
                    or vouchers.resource_refusal(programme, resource) is not None \
                    or are_related(db, org.id, facility.owner_id):
                continue
            covered = vouchers.coverage(programme.coverage_ratio, eligible, balance=summary.balance,
                                        cap_remaining=summary.cap_remaining,
                                        budget_remaining=programme.budget_remaining)
            if covered.amount > 0 and (best is None or covered.amount > best[1].amount):
                best = (summary, covered)
    return Estimate(klass, lines, total, eligible, *(best or (None, None)))
