"""Tables of innovation vouchers (科技创新券): programmes, vouchers, applications to charge lines, claims.

The money invariants are constraints, so that no bug and no race can break them: a voucher's balance never
goes below zero (nor above its face value), a programme never spends more than its budget, a holder never
uses more than the annual cap of a programme, and a charge line is subsidised at most once (a unique
charge_line_id). billing.vouchers also serialises applications with row locks; these are the last line.

Items of a claim that is no longer a draft cannot be inserted, changed or deleted: database triggers refuse
it on SQLite and PostgreSQL alike (as core.audit's do for the audit log).
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, str_enum
from core.timeutil import utcnow

BASIS_POINTS = 10_000  # a coverage ratio is stored exactly, in 1/10,000 (5000 = 50 %)


class RedemptionMode(enum.StrEnum):
    PROVIDER_CLAIMS = "provider_claims"  # 通兑: the holder pays its share, the provider claims the rest
    ENTERPRISE_REIMBURSED = "enterprise_reimbursed"  # 通用: the holder pays in full and claims the subsidy


class ClaimState(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    PAID = "paid"


class VoucherProgramme(Base):
    """A voucher programme (创新券项目): who issues it, what it covers, for whom, and with how much money."""

    __tablename__ = "voucher_programme"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)  # prefix of its voucher numbers
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    issuer_zh: Mapped[str] = mapped_column(String(200))
    issuer_en: Mapped[str] = mapped_column(String(200))
    # the organisation whose finance users decide claims (the platform's admins always may)
    issuer_org_id: Mapped[int | None] = mapped_column(ForeignKey("organisation.id"), index=True)
    year: Mapped[int]
    coverage_bp: Mapped[int] = mapped_column(Integer)  # share of the eligible fee covered, in basis points
    annual_cap: Mapped[Decimal]  # per holder and calendar year of service, over all its vouchers
    voucher_amount: Mapped[Decimal]  # face value of one voucher
    budget: Mapped[Decimal]
    budget_used: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))  # subsidies applied so far
    # ServiceCategory values; empty means every category
    eligible_categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    # who may hold its vouchers: organisation kinds, 市州 codes (empty: all of Sichuan), tech SMEs only
    holder_kinds: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["enterprise"])
    holder_cities: Mapped[list[str]] = mapped_column(JSON, default=list)
    requires_tech_sme: Mapped[bool] = mapped_column(Boolean, default=True)
    # a voucher is valid from its grant for this many months or days (exactly one is set)
    validity_months: Mapped[int | None]
    validity_days: Mapped[int | None]
    claim_deadline: Mapped[date]  # claims must be submitted on or before this day
    redemption_mode: Mapped[RedemptionMode] = mapped_column(str_enum(RedemptionMode, "redemption_mode"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # grants and applications only while active
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    resource_rules: Mapped[list[ProgrammeResourceRule]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="ProgrammeResourceRule.resource_id")

    __table_args__ = (
        CheckConstraint(f"coverage_bp > 0 AND coverage_bp <= {BASIS_POINTS}", name="coverage_range"),
        CheckConstraint("annual_cap > 0 AND voucher_amount > 0", name="amounts_positive"),
        CheckConstraint("budget >= 0 AND budget_used >= 0", name="budget_not_negative"),
        CheckConstraint("budget_used <= budget", name="within_budget"),
        CheckConstraint("(validity_months IS NULL) <> (validity_days IS NULL)", name="one_validity"),
        CheckConstraint("(validity_months IS NULL OR validity_months > 0) AND "
                        "(validity_days IS NULL OR validity_days > 0)", name="validity_positive"),
        CheckConstraint("year >= 2000 AND year <= 2999", name="year_range"),
    )

    @property
    def coverage_ratio(self) -> Decimal:
        return Decimal(self.coverage_bp) / BASIS_POINTS

    @property
    def budget_remaining(self) -> Decimal:
        return self.budget - self.budget_used

    def name(self, locale: str) -> str:
        return self.name_en if locale == "en" else self.name_zh

    def issuer(self, locale: str) -> str:
        return self.issuer_en if locale == "en" else self.issuer_zh


class ProgrammeResourceRule(Base):
    """A resource a programme names: excluded (routine production testing, statutory inspection, …), or
    included — when a programme includes any resource, only its included resources are eligible."""

    __tablename__ = "voucher_programme_resource"

    programme_id: Mapped[int] = mapped_column(ForeignKey("voucher_programme.id", ondelete="CASCADE"),
                                              primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id", ondelete="CASCADE"), primary_key=True,
                                             index=True)
    excluded: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(200), default="")


class Voucher(Base):
    """One electronic voucher granted to a holder (持券企业): a face value, a balance and a validity."""

    __tablename__ = "voucher"

    id: Mapped[int] = mapped_column(primary_key=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("voucher_programme.id"), index=True)
    holder_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    number: Mapped[str] = mapped_column(String(48), unique=True)
    amount: Mapped[Decimal]
    balance: Mapped[Decimal]
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    valid_from: Mapped[date]  # days in Asia/Shanghai, both inclusive
    valid_until: Mapped[date]

    programme: Mapped[VoucherProgramme] = relationship(lazy="joined")

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        CheckConstraint("balance <= amount", name="balance_within_amount"),
        CheckConstraint("valid_until >= valid_from", name="validity_order"),
    )

    @property
    def used(self) -> Decimal:
        return self.amount - self.balance


class VoucherCapUsage(Base):
    """What one holder has used of one programme in one calendar year (of service), against the annual cap.

    Its row is also the lock that serialises a holder's applications across all of its vouchers."""

    __tablename__ = "voucher_cap_usage"

    programme_id: Mapped[int] = mapped_column(ForeignKey("voucher_programme.id", ondelete="CASCADE"),
                                              primary_key=True)
    holder_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), primary_key=True)
    year: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    cap: Mapped[Decimal]  # the programme's annual cap when the row was made
    used: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))

    __table_args__ = (
        CheckConstraint("used >= 0", name="used_not_negative"),
        CheckConstraint("used <= cap", name="within_cap"),
    )

    @property
    def remaining(self) -> Decimal:
        return self.cap - self.used


class VoucherApplication(Base):
    """A voucher applied to one charge line: the subsidy, and everything it was computed from."""

    __tablename__ = "voucher_application"

    id: Mapped[int] = mapped_column(primary_key=True)
    voucher_id: Mapped[int] = mapped_column(ForeignKey("voucher.id"), index=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("voucher_programme.id"), index=True)
    holder_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)  # the facility owner
    charge_id: Mapped[int] = mapped_column(ForeignKey("charge.id"), index=True)
    # a charge line is subsidised at most once, by any voucher of any programme
    charge_line_id: Mapped[int] = mapped_column(ForeignKey("charge_line.id"), unique=True)
    eligible_fee: Mapped[Decimal]
    coverage_bp: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal]
    service_date: Mapped[date]
    cap_year: Mapped[int]
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))

    voucher: Mapped[Voucher] = relationship(lazy="joined")

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("amount <= eligible_fee", name="within_fee"),
    )


class VoucherClaim(Base):
    """A claim (兑付申请) for the subsidies of one programme and billing period, by one claimant: the
    provider (通兑) or the holder (通用). draft → submitted → approved or rejected; approved → paid."""

    __tablename__ = "voucher_claim"

    id: Mapped[int] = mapped_column(primary_key=True)
    programme_id: Mapped[int] = mapped_column(ForeignKey("voucher_programme.id"), index=True)
    period_id: Mapped[int] = mapped_column(ForeignKey("billing_period.id"), index=True)
    claimant_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    mode: Mapped[RedemptionMode] = mapped_column(str_enum(RedemptionMode, "claim_mode"))
    state: Mapped[ClaimState] = mapped_column(str_enum(ClaimState, "claim_state"), default=ClaimState.DRAFT)
    total: Mapped[Decimal] = mapped_column(default=Decimal("0.00"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    submitted_at: Mapped[datetime | None]
    submitted_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    rejection_reason: Mapped[str] = mapped_column(Text, default="")
    paid_at: Mapped[datetime | None]
    payout_reference: Mapped[str] = mapped_column(String(64), default="")  # the programme's bank transfer

    programme: Mapped[VoucherProgramme] = relationship(lazy="joined")
    items: Mapped[list[VoucherClaimItem]] = relationship(back_populates="claim", order_by="VoucherClaimItem.id",
                                                         lazy="selectin")

    __table_args__ = (
        CheckConstraint("total >= 0", name="total_not_negative"),
        CheckConstraint("state <> 'rejected' OR rejection_reason <> ''", name="rejection_has_reason"),
    )


class VoucherClaimItem(Base):
    """One subsidised service in a claim, with its evidence: the reservation, the measured usage sessions
    with a digest of their telemetry (billing.evidence), the invoice and the bank payment reference, and the
    service-result confirmation signed off in the app by a user of each party."""

    __tablename__ = "voucher_claim_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    claim_id: Mapped[int] = mapped_column(ForeignKey("voucher_claim.id"), index=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("voucher_application.id"), unique=True)
    charge_id: Mapped[int] = mapped_column(ForeignKey("charge.id"), index=True)
    reservation_id: Mapped[int | None] = mapped_column(ForeignKey("reservation.id"))
    holder_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    provider_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    service_date: Mapped[date]
    eligible_fee: Mapped[Decimal]
    amount: Mapped[Decimal]
    # [{"usage_session_id", "device_id", "start_ns", "end_ns", "point_count", "digest"}]; digest None until
    # the telemetry has been digested (billing.claims.record_evidence)
    sessions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    evidence_digest: Mapped[str | None] = mapped_column(String(64))  # over all the sessions' points
    invoice_number: Mapped[str] = mapped_column(String(64), default="")
    payment_reference: Mapped[str] = mapped_column(String(64), default="")
    provider_confirmed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    provider_confirmed_at: Mapped[datetime | None]
    customer_confirmed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    customer_confirmed_at: Mapped[datetime | None]

    claim: Mapped[VoucherClaim] = relationship(back_populates="items")

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_voucher_claim_item_holder", "holder_id"),
    )

    @property
    def confirmed(self) -> bool:
        return self.provider_confirmed_at is not None and self.customer_confirmed_at is not None


# --- a claim's items are frozen once it leaves draft ------------------------------------------------------------

FROZEN_MESSAGE = "voucher_claim_item is frozen: its claim is no longer a draft"
_NOT_DRAFT = "(SELECT state FROM voucher_claim WHERE id = {row}.claim_id) <> 'draft'"

SQLITE_TRIGGERS = tuple(
    f"CREATE TRIGGER voucher_claim_item_frozen_{op.lower()} BEFORE {op} ON voucher_claim_item "
    f"WHEN {_NOT_DRAFT.format(row=row)} BEGIN SELECT RAISE(ABORT, '{FROZEN_MESSAGE}'); END"
    for op, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD"))
)
POSTGRESQL_TRIGGERS = (
    "CREATE FUNCTION voucher_claim_item_frozen() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "DECLARE claim_state text; BEGIN "
    "SELECT state INTO claim_state FROM voucher_claim "
    "WHERE id = CASE WHEN TG_OP = 'INSERT' THEN NEW.claim_id ELSE OLD.claim_id END; "
    "IF claim_state <> 'draft' THEN "
    "RAISE EXCEPTION 'voucher_claim_item is frozen: its claim is no longer a draft'; END IF; "
    "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$",
    "CREATE TRIGGER voucher_claim_item_frozen BEFORE INSERT OR UPDATE OR DELETE ON voucher_claim_item "
    "FOR EACH ROW EXECUTE FUNCTION voucher_claim_item_frozen()",
)
POSTGRESQL_DROP = (
    "DROP TRIGGER IF EXISTS voucher_claim_item_frozen ON voucher_claim_item",
    "DROP FUNCTION IF EXISTS voucher_claim_item_frozen()",
)

for _sql in SQLITE_TRIGGERS:
    event.listen(VoucherClaimItem.__table__, "after_create", DDL(_sql).execute_if(dialect="sqlite"))
for _sql in POSTGRESQL_TRIGGERS:
    event.listen(VoucherClaimItem.__table__, "after_create", DDL(_sql).execute_if(dialect="postgresql"))

__all__ = [
    "BASIS_POINTS", "ClaimState", "ProgrammeResourceRule", "RedemptionMode", "Voucher",
    "VoucherApplication", "VoucherCapUsage", "VoucherClaim", "VoucherClaimItem", "VoucherProgramme",
]
