"""Rate cards: creating versioned cards (no two valid on one day for a resource) and finding the one in force."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.errors import RateCardOverlap
from billing.models import BillingUnit, ChargeBasis, RateCard
from booking.locking import lock_resource
from booking.permissions import can_manage_facility
from core import audit
from core.accounts.models import Role, User
from core.errors import N_, Forbidden, InvalidInput, NotFound
from core.money import to_cny

MONEY_FIELDS = ("price_internal", "price_academic", "price_enterprise", "minimum_charge", "setup_fee",
                "technician_fee_per_hour")
FRACTION_FIELDS = ("no_show_fraction", "late_cancellation_fraction")
MAX_AMOUNT = Decimal("999999999999.99")  # numeric(14, 2)


@dataclass(frozen=True)
class RateCardData:
    """A new rate card as entered: amounts may be Decimal, int or str (never float)."""

    valid_from: date
    unit: BillingUnit | str
    price_internal: Any
    price_academic: Any
    price_enterprise: Any
    valid_to: date | None = None
    minimum_charge: Any = "0"
    setup_fee: Any = "0"
    technician_fee_per_hour: Any = "0"
    no_show_fraction: Any = "0"
    late_cancellation_fraction: Any = "0"
    basis: ChargeBasis | str = ChargeBasis.BOOKED
    tolerance_min: int = 15
    note: str = ""


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, float | bool) or value is None:
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def validate_rate_card(data: RateCardData) -> dict[str, Any]:
    """The card's column values, or InvalidInput naming every field that is wrong."""
    fields: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for name in MONEY_FIELDS:
        number = _decimal(getattr(data, name))
        if number is None:
            fields[name] = [N_("Enter an amount in CNY, such as 800 or 123.45.")]
        elif number < 0:
            fields[name] = [N_("The amount cannot be negative.")]
        elif number > MAX_AMOUNT or number != to_cny(number):
            fields[name] = [N_("Enter an amount with at most two decimal places.")]
        else:
            values[name] = to_cny(number)
    for name in FRACTION_FIELDS:
        number = _decimal(getattr(data, name))
        if number is None or not (0 <= number <= 1) or number != number.quantize(Decimal("0.0001")):
            fields[name] = [N_("Enter a share from 0 to 1, such as 0.5, with at most four decimal places.")]
        else:
            values[name] = number
    try:
        values["unit"] = BillingUnit(data.unit)
    except ValueError:
        fields["unit"] = [N_("Choose a unit: hour, quarter_hour, sample, day, batch or run.")]
    try:
        values["basis"] = ChargeBasis(data.basis)
    except ValueError:
        fields["basis"] = [N_("Choose a basis: booked, measured or larger.")]
    if not isinstance(data.valid_from, date):
        fields["valid_from"] = [N_("Enter a date.")]
    if data.valid_to is not None and (not isinstance(data.valid_to, date) or
                                      (isinstance(data.valid_from, date) and data.valid_to < data.valid_from)):
        fields["valid_to"] = [N_("The end of the validity must not be before its start.")]
    if isinstance(data.tolerance_min, bool) or not isinstance(data.tolerance_min, int) or \
            not 0 <= data.tolerance_min <= 1440:
        fields["tolerance_min"] = [N_("Enter a tolerance from 0 to 1440 minutes.")]
    if fields:
        raise InvalidInput(fields)
    values.update(valid_from=data.valid_from, valid_to=data.valid_to, tolerance_min=data.tolerance_min,
                  note=data.note or "")
    return values


def check_can_price(db: Session, actor: User | None, facility_id: int) -> None:
    """Lab managers of the facility, finance staff and admins set prices; None is the command line."""
    if actor is None or actor.has_role(Role.FINANCE, Role.ADMIN):
        return
    if not (actor.has_role(Role.LAB_MANAGER) and can_manage_facility(db, actor, facility_id)):
        raise Forbidden()


def _overlapping(db: Session, resource_id: int, valid_from: date, valid_to: date | None,
                 exclude_id: int | None = None) -> RateCard | None:
    query = select(RateCard).where(RateCard.resource_id == resource_id,
                                   (RateCard.valid_to.is_(None)) | (RateCard.valid_to >= valid_from))
    if valid_to is not None:
        query = query.where(RateCard.valid_from <= valid_to)
    if exclude_id is not None:
        query = query.where(RateCard.id != exclude_id)
    return db.scalars(query.order_by(RateCard.valid_from).limit(1)).first()


def _refuse_overlap(other: RateCard) -> None:
    raise RateCardOverlap(other=other.id, start=other.valid_from.isoformat(),
                          end=other.valid_to.isoformat() if other.valid_to else "—",
                          details={"rate_card_id": other.id})


def create_rate_card(db: Session, actor: User | None, resource_id: int, data: RateCardData) -> RateCard:
    """A new card for the resource. Its validity may not overlap another card's: the resource row lock
    (SQLite: the write lock) serialises the check, and PostgreSQL's exclusion constraint backs it up."""
    values = validate_rate_card(data)
    resource = lock_resource(db, resource_id)
    check_can_price(db, actor, resource.facility_id)
    other = _overlapping(db, resource_id, values["valid_from"], values["valid_to"])
    if other is not None:
        _refuse_overlap(other)
    card = RateCard(resource_id=resource_id, created_by_id=actor.id if actor else None, **values)
    db.add(card)
    db.flush()
    audit.record(db, actor, "rate_card.created", card, resource_id=resource_id,
                 **{k: v for k, v in values.items() if k != "note"})
    return card


def end_rate_card(db: Session, actor: User | None, card_id: int, valid_to: date) -> RateCard:
    """Set the last day a card is valid (to make room for its successor). Days already charged with the
    card stay inside its validity."""
    from billing.models import Charge

    card = db.get(RateCard, card_id)
    if card is None:
        raise NotFound("rate_card", card_id)
    lock_resource(db, card.resource_id)
    check_can_price(db, actor, card.resource.facility_id)
    if valid_to < card.valid_from:
        raise InvalidInput({"valid_to": [N_("The end of the validity must not be before its start.")]})
    charged = db.scalar(select(Charge.service_date).where(Charge.rate_card_id == card.id,
                                                          Charge.service_date > valid_to).limit(1))
    if charged is not None:
        raise InvalidInput({"valid_to": [N_("Charges on later days already use this rate card.")]})
    if card.valid_to is not None and valid_to > card.valid_to:
        other = _overlapping(db, card.resource_id, card.valid_from, valid_to, exclude_id=card.id)
        if other is not None:
            _refuse_overlap(other)
    previous = card.valid_to
    card.valid_to = valid_to
    db.flush()
    audit.record(db, actor, "rate_card.ended", card, valid_to=valid_to, previous_valid_to=previous)
    return card


def card_in_force(db: Session, resource_id: int, service_date: date) -> RateCard | None:
    """The card valid on the service date, if any."""
    return db.scalars(select(RateCard).where(
        RateCard.resource_id == resource_id, RateCard.valid_from <= service_date,
        (RateCard.valid_to.is_(None)) | (RateCard.valid_to >= service_date))).first()


def pick_card(cards: list[RateCard], service_date: date) -> RateCard | None:
    """`card_in_force` over cards already loaded (one resource's, in any order)."""
    for card in cards:
        if card.valid_from <= service_date and (card.valid_to is None or service_date <= card.valid_to):
            return card
    return None
