"""A resource's price list for its public page: the rate card in force today, one price per customer class,
with its fees in words. The cost of one booking is estimated under the booking form (web.finance.estimate)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy.orm import Session

from billing import pricing
from billing.models import BillingUnit, CustomerClass, RateCard
from billing.rate_cards import card_in_force
from booking.models import Resource
from core.accounts.services import are_related
from core.timeutil import to_local

CLASS_LABELS = {
    CustomerClass.ENTERPRISE: _l("Enterprises"),
    CustomerClass.ACADEMIC: _l("Universities, institutes and government bodies"),
    CustomerClass.INTERNAL: _l("The facility's own organisation and its affiliates"),
}
UNIT_LABELS = {
    BillingUnit.HOUR: _l("per started hour"),
    BillingUnit.QUARTER_HOUR: _l("per hour, billed by the started quarter hour"),
    BillingUnit.SAMPLE: _l("per sample"),
    BillingUnit.DAY: _l("per started day"),
    BillingUnit.BATCH: _l("per batch"),
    BillingUnit.RUN: _l("per run"),
}


@dataclass(frozen=True)
class PriceRow:
    customer_class: CustomerClass
    label: str
    amount: Decimal
    yours: bool  # the class the signed-in user's organisation is billed in


@dataclass(frozen=True)
class PriceList:
    card: RateCard
    unit: str
    rows: list[PriceRow]
    minimum_charge: Decimal
    setup_fee: Decimal
    technician_fee_per_hour: Decimal


def price_list(db: Session, resource: Resource, now: datetime) -> PriceList | None:
    """None when no rate card is in force today (the page then says prices are on request)."""
    card = card_in_force(db, resource.id, to_local(now, resource.facility.timezone).date())
    if card is None:
        return None
    yours = None
    if current_user.is_authenticated:
        org, owner_id = current_user.organisation, resource.facility.owner_id
        yours = pricing.customer_class(org.id, org.kind, owner_id, affiliated=are_related(db, org.id, owner_id))
    rows = [PriceRow(klass, str(label), card.price_for(klass), klass == yours)
            for klass, label in CLASS_LABELS.items()]
    return PriceList(card, str(UNIT_LABELS[card.unit]), rows, card.minimum_charge, card.setup_fee,
                     card.technician_fee_per_hour)
