"""Tables of the billing area: rate cards, billing periods, reconciliation items, charges and statements.

Money columns are `Mapped[Decimal]` (core.types.Money: exact CNY). Rows that carry money are never edited
once a period is closed: a correction is a credit note, a new `charge` of kind `credit_note` that points at
the charge it reverses.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from booking.models import Resource
from core.db import Base, str_enum
from core.timeutil import utcnow


class CustomerClass(enum.StrEnum):
    INTERNAL = "internal"  # the facility's own organisation, or one it has declared an affiliation with
    ACADEMIC = "academic"  # universities, institutes, government bodies
    ENTERPRISE = "enterprise"


class BillingUnit(enum.StrEnum):
    HOUR = "hour"  # per started hour
    QUARTER_HOUR = "quarter_hour"  # hourly price, billed per started quarter hour
    SAMPLE = "sample"
    DAY = "day"  # per started day
    BATCH = "batch"  # per started batch of Resource.batch_days days (one batch when the resource has none)
    RUN = "run"  # per measured run (usage session); one for a booking without measurements


class ChargeBasis(enum.StrEnum):
    BOOKED = "booked"
    MEASURED = "measured"
    LARGER = "larger"  # the larger of booked and measured time (measured within the tolerance counts as booked)


class PeriodState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ChargeKind(enum.StrEnum):
    CHARGE = "charge"
    CREDIT_NOTE = "credit_note"


class ChargeLineKind(enum.StrEnum):
    USAGE = "usage"
    SETUP = "setup"
    TECHNICIAN = "technician"
    MINIMUM = "minimum"  # the top-up from the usage amount to the card's minimum charge
    NO_SHOW = "no_show"
    LATE_CANCELLATION = "late_cancellation"
    CREDIT = "credit"


# Fees for the service actually rendered may be subsidised by a voucher; penalties may not.
VOUCHER_ELIGIBLE_LINE_KINDS = frozenset({ChargeLineKind.USAGE, ChargeLineKind.SETUP, ChargeLineKind.TECHNICIAN,
                                         ChargeLineKind.MINIMUM})


class ReconciliationKind(enum.StrEnum):
    USED = "used"  # measured use inside the booking window (± the card's tolerance)
    NO_SHOW = "no_show"
    OVERRUN = "overrun"  # use beyond the booking's end
    EARLY_FINISH = "early_finish"
    LATE_CANCELLATION = "late_cancellation"
    UNBOOKED = "unbooked"  # measured use with no reservation


class ItemStatus(enum.StrEnum):
    OPEN = "open"  # an exception a lab manager must resolve before the period can close
    RESOLVED = "resolved"


class Resolution(enum.StrEnum):
    ACCEPT = "accept"  # bill as reconciled
    WAIVE = "waive"  # bill nothing
    ADJUST = "adjust"  # bill adjusted_minutes instead of the reconciled time
    ASSIGN = "assign"  # bill assigned_org_id (unbooked use)


class RateCard(Base):
    """The prices of one resource for a validity range of service dates (both ends inclusive; no end = open)."""

    __tablename__ = "rate_card"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"))
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)
    unit: Mapped[BillingUnit] = mapped_column(str_enum(BillingUnit, "billing_unit"))
    price_internal: Mapped[Decimal]  # CNY per unit (per hour for quarter_hour)
    price_academic: Mapped[Decimal]
    price_enterprise: Mapped[Decimal]
    minimum_charge: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    setup_fee: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    technician_fee_per_hour: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    no_show_fraction: Mapped[Decimal] = mapped_column(Numeric(5, 4), default=Decimal("0"))
    late_cancellation_fraction: Mapped[Decimal] = mapped_column(Numeric(5, 4), default=Decimal("0"))
    basis: Mapped[ChargeBasis] = mapped_column(str_enum(ChargeBasis, "charge_basis"), default=ChargeBasis.BOOKED)
    tolerance_min: Mapped[int] = mapped_column(default=15)  # reconciliation slack around the booking window
    note: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    resource: Mapped[Resource] = relationship(lazy="joined")

    __table_args__ = (
        CheckConstraint("valid_to IS NULL OR valid_to >= valid_from", name="validity_ordered"),
        CheckConstraint("price_internal >= 0 AND price_academic >= 0 AND price_enterprise >= 0",
                        name="prices_not_negative"),
        CheckConstraint("minimum_charge >= 0 AND setup_fee >= 0 AND technician_fee_per_hour >= 0",
                        name="fees_not_negative"),
        CheckConstraint("no_show_fraction >= 0 AND no_show_fraction <= 1 AND late_cancellation_fraction >= 0 "
                        "AND late_cancellation_fraction <= 1", name="fractions_range"),
        CheckConstraint("tolerance_min >= 0 AND tolerance_min <= 1440", name="tolerance_range"),
        Index("ix_rate_card_resource_validity", "resource_id", "valid_from"),
        # No two cards of one resource are valid on the same day, however requests race (PostgreSQL);
        # SQLite serialises writers and billing.rate_cards checks under the write lock.
        ExcludeConstraint(
            ("resource_id", "="),
            (func.daterange(text("valid_from"), text("valid_to"), text("'[]'")), "&&"),
            name="rate_card_no_overlap",
            using="gist",
        ).ddl_if(dialect="postgresql"),
    )

    def price_for(self, customer_class: CustomerClass) -> Decimal:
        return {CustomerClass.INTERNAL: self.price_internal, CustomerClass.ACADEMIC: self.price_academic,
                CustomerClass.ENTERPRISE: self.price_enterprise}[customer_class]


class BillingPeriod(Base):
    """A calendar month of service dates (in each facility's time zone); closed once, then locked."""

    __tablename__ = "billing_period"

    id: Mapped[int] = mapped_column(primary_key=True)
    month: Mapped[date] = mapped_column(Date, unique=True)  # the first day of the month
    state: Mapped[PeriodState] = mapped_column(str_enum(PeriodState, "period_state"), default=PeriodState.OPEN)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    reconciled_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))

    __table_args__ = (
        CheckConstraint("(state = 'closed') = (closed_at IS NOT NULL)", name="closed_when_dated"),
    )


class ReconciliationItem(Base):
    """One reservation or one unbooked usage session of a period, with what was booked and what was measured."""

    __tablename__ = "reconciliation_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("billing_period.id"), index=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"), index=True)
    kind: Mapped[ReconciliationKind] = mapped_column(str_enum(ReconciliationKind, "reconciliation_kind"))
    reservation_id: Mapped[int | None] = mapped_column(ForeignKey("reservation.id"))
    # A session the ingest re-derives away (a late message) takes its unbooked item with it.
    usage_session_id: Mapped[int | None] = mapped_column(ForeignKey("usage_session.id", ondelete="CASCADE"))
    service_date: Mapped[date] = mapped_column(Date)  # in the facility's time zone
    booked_minutes: Mapped[int] = mapped_column(default=0)
    measured_minutes: Mapped[int] = mapped_column(default=0)
    measured_runs: Mapped[int] = mapped_column(default=0)
    metered: Mapped[bool] = mapped_column(Boolean, default=True)  # False: the resource has no device to measure
    measured_samples: Mapped[int | None]
    status: Mapped[ItemStatus] = mapped_column(str_enum(ItemStatus, "item_status"), default=ItemStatus.OPEN)
    resolution: Mapped[Resolution | None] = mapped_column(str_enum(Resolution, "item_resolution"))
    adjusted_minutes: Mapped[int | None]
    assigned_org_id: Mapped[int | None] = mapped_column(ForeignKey("organisation.id"))
    assigned_user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    reason: Mapped[str] = mapped_column(Text, default="")
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    resolved_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    resource: Mapped[Resource] = relationship(lazy="joined")
    period: Mapped[BillingPeriod] = relationship()

    __table_args__ = (
        CheckConstraint("(kind = 'unbooked') = (reservation_id IS NULL)", name="subject_matches_kind"),
        CheckConstraint("kind <> 'unbooked' OR usage_session_id IS NOT NULL", name="unbooked_has_session"),
        CheckConstraint("booked_minutes >= 0 AND measured_minutes >= 0 AND measured_runs >= 0 "
                        "AND (adjusted_minutes IS NULL OR adjusted_minutes >= 0)", name="minutes_not_negative"),
        CheckConstraint("status = 'open' OR resolution IS NOT NULL", name="resolved_has_resolution"),
        CheckConstraint("resolution <> 'adjust' OR adjusted_minutes IS NOT NULL", name="adjust_has_minutes"),
        CheckConstraint("resolution <> 'assign' OR assigned_org_id IS NOT NULL", name="assign_has_org"),
        # one item per reservation and per unbooked session: reconciling again finds them
        UniqueConstraint("reservation_id", name="uq_reconciliation_item_reservation"),
        Index("uq_reconciliation_item_unbooked_session", "usage_session_id", unique=True,
              sqlite_where=text("kind = 'unbooked'"), postgresql_where=text("kind = 'unbooked'")),
        Index("ix_reconciliation_item_period_status", "period_id", "status"),
    )

    @property
    def is_exception(self) -> bool:
        return self.status == ItemStatus.OPEN


class Statement(Base):
    """What one organisation owes for one period: the sum of its charges and credit notes, numbered."""

    __tablename__ = "statement"

    id: Mapped[int] = mapped_column(primary_key=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("billing_period.id"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)  # ST-2026-11-0001
    total: Mapped[Decimal]
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    issued_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))

    __table_args__ = (UniqueConstraint("period_id", "organisation_id", name="uq_statement_period_org"),)


class Charge(Base):
    """Money owed for one reservation or one unbooked usage session; or a credit note reversing a charge."""

    __tablename__ = "charge"

    id: Mapped[int] = mapped_column(primary_key=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("billing_period.id"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)  # billed
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))  # who used the resource
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"), index=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    reservation_id: Mapped[int | None] = mapped_column(ForeignKey("reservation.id"))
    # Charges outlive the evidence the ingest may re-derive (a late message can replace a session).
    usage_session_id: Mapped[int | None] = mapped_column(ForeignKey("usage_session.id", ondelete="SET NULL"))
    reconciliation_item_id: Mapped[int | None] = mapped_column(ForeignKey("reconciliation_item.id",
                                                                          ondelete="SET NULL"), index=True)
    service_date: Mapped[date] = mapped_column(Date)  # in the facility's time zone
    customer_class: Mapped[CustomerClass] = mapped_column(str_enum(CustomerClass, "customer_class"))
    rate_card_id: Mapped[int | None] = mapped_column(ForeignKey("rate_card.id"))
    total: Mapped[Decimal]
    kind: Mapped[ChargeKind] = mapped_column(str_enum(ChargeKind, "charge_kind"), default=ChargeKind.CHARGE)
    credit_of_id: Mapped[int | None] = mapped_column(ForeignKey("charge.id"))
    reason: Mapped[str] = mapped_column(Text, default="")  # why a credit note was issued
    statement_id: Mapped[int | None] = mapped_column(ForeignKey("statement.id"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    lines: Mapped[list[ChargeLine]] = relationship(back_populates="charge", order_by="ChargeLine.id",
                                                   cascade="all, delete-orphan")
    resource: Mapped[Resource] = relationship()

    __table_args__ = (
        CheckConstraint("(kind = 'credit_note') = (credit_of_id IS NOT NULL)", name="credit_note_has_origin"),
        CheckConstraint("kind = 'credit_note' OR total >= 0", name="charge_not_negative"),
        CheckConstraint("kind = 'charge' OR total <= 0", name="credit_not_positive"),
        # a reservation, or an unbooked session, is charged once; a charge is credited at most once
        Index("uq_charge_reservation", "reservation_id", unique=True,
              sqlite_where=text("kind = 'charge' AND reservation_id IS NOT NULL"),
              postgresql_where=text("kind = 'charge' AND reservation_id IS NOT NULL")),
        Index("uq_charge_usage_session", "usage_session_id", unique=True,
              sqlite_where=text("kind = 'charge' AND usage_session_id IS NOT NULL"),
              postgresql_where=text("kind = 'charge' AND usage_session_id IS NOT NULL")),
        UniqueConstraint("credit_of_id", name="uq_charge_credit_of"),
        Index("ix_charge_period_org", "period_id", "organisation_id"),
    )


class ChargeLine(Base):
    """One priced line of a charge; a charge's total is the exact sum of its lines' amounts."""

    __tablename__ = "charge_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    charge_id: Mapped[int] = mapped_column(ForeignKey("charge.id", ondelete="CASCADE"), index=True)
    kind: Mapped[ChargeLineKind] = mapped_column(str_enum(ChargeLineKind, "charge_line_kind"))
    description: Mapped[str] = mapped_column(String(300))
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    unit: Mapped[str] = mapped_column(String(32))
    unit_price: Mapped[Decimal]
    amount: Mapped[Decimal]
    voucher_eligible: Mapped[bool] = mapped_column(Boolean, default=False)

    charge: Mapped[Charge] = relationship(back_populates="lines")
