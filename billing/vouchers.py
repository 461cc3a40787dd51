"""Innovation vouchers (科技创新券): programmes, grants first come first served, and applying a voucher to the
eligible lines of a charge.

Applying covers `min(ratio × eligible fee, voucher balance, holder's remaining annual cap, programme's remaining
budget)`, rounded down to the fen so that it never exceeds the ratio. Concurrent applications are serialised by
row locks taken in one fixed order — programme (budget), then the holder's cap row for the year, then the
voucher — with `SELECT … FOR UPDATE` on PostgreSQL; on SQLite the caller's transaction holds the database's
write lock (core.db.begin_write). CHECK constraints (billing.voucher_models) are the last line of defence.

Services take the session and the acting user, flush but never commit; every change is audited.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any, ClassVar

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing.models import Charge, ChargeLine
from billing.voucher_models import (
    BASIS_POINTS,
    ProgrammeResourceRule,
    RedemptionMode,
    Voucher,
    VoucherApplication,
    VoucherCapUsage,
    VoucherProgramme,
)
from booking.categories import ServiceCategory
from booking.models import Facility, Resource
from core import audit
from core.accounts.models import Organisation, OrganisationKind, Role, User
from core.accounts.services import are_related
from core.db import holds_write_lock
from core.errors import N_, Conflict, Forbidden, InvalidInput, Message, NotFound
from core.money import CNY_STEP, to_cny
from core.regions import SICHUAN_CITIES
from core.timeutil import DEFAULT_TIMEZONE, zone

ZERO = Decimal("0.00")


# --- errors -------------------------------------------------------------------------------------------------

class VoucherRefused(InvalidInput):
    """The voucher cannot be used for this (422); `code` says why, and nothing was changed."""

    code = "voucher_refused"
    message = N_("The voucher cannot be used for this.")

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None, **params: Any):
        super().__init__({}, message, **params)
        self.details.update(details or {})


class VoucherExpired(VoucherRefused):
    code = "voucher_expired"
    message = N_("This voucher expired on %(valid_until)s.")


class ServiceOutsideValidity(VoucherRefused):
    code = "service_outside_validity"
    message = N_("The service on %(service_date)s is outside the voucher's validity (%(valid_from)s to "
                 "%(valid_until)s).")


class NotHoldersCharge(VoucherRefused):
    code = "not_holders_charge"
    message = N_("This charge is billed to another organisation than the voucher holder.")


class RelatedParty(VoucherRefused):
    code = "related_party"
    message = N_("A voucher cannot be used with a service provider the holder is related to.")


class CategoryNotEligible(VoucherRefused):
    code = "category_not_eligible"
    message = N_("The programme does not cover services of this category.")


class ResourceNotEligible(VoucherRefused):
    code = "resource_not_eligible"
    message = N_("Vouchers cannot be used on this resource.")


class ServiceExcluded(VoucherRefused):
    code = "service_excluded"
    message = N_("The programme excludes this service (for example routine production testing or statutory "
                 "inspection).")


class LineNotEligible(VoucherRefused):
    code = "line_not_eligible"
    message = N_("This charge line is not eligible for a voucher (no-show and cancellation fees, credits and "
                 "zero amounts are not).")


class ProgrammeInactive(VoucherRefused):
    code = "programme_inactive"
    message = N_("This voucher programme is closed.")


class HolderNotEligible(VoucherRefused):
    code = "holder_not_eligible"
    message = N_("This organisation cannot hold vouchers of this programme: %(reason)s")

    REASONS: ClassVar[dict[str, str]] = {
        "kind": N_("the programme is for other kinds of organisation."),
        "city": N_("the programme is for organisations registered in other cities."),
        "tech_sme": N_("the programme is for registered tech SMEs."),
    }


class ChargeLineAlreadySubsidised(Conflict):
    code = "charge_line_already_subsidised"
    message = N_("This charge line has already been subsidised by a voucher.")


class VoucherExhausted(Conflict):
    code = "voucher_exhausted"
    message = N_("This voucher has no balance left.")


class AnnualCapReached(Conflict):
    code = "voucher_annual_cap_reached"
    message = N_("The holder has reached the programme's annual cap of %(cap)s CNY for %(year)s.")


class BudgetExhausted(Conflict):
    code = "voucher_budget_exhausted"
    message = N_("The programme's budget has been used up.")


# --- pure rules ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Coverage:
    """What a voucher covers of a fee, and which limit decided it."""

    amount: Decimal
    share: Decimal  # ratio × fee, rounded down to the fen
    limited_by: str  # "ratio", "balance", "cap" or "budget"


def coverage(ratio: Decimal, eligible_fee: Decimal, *, balance: Decimal, cap_remaining: Decimal,
             budget_remaining: Decimal) -> Coverage:
    """`min(ratio × eligible fee, balance, remaining cap, remaining budget)`, never negative, in whole fen.

    The share is rounded down: rounding half-up could cover half a fen more than the ratio allows."""
    if not isinstance(ratio, Decimal) or not Decimal(0) <= ratio <= 1:
        raise ValueError(f"a coverage ratio is a Decimal from 0 to 1, not {ratio!r}")
    share = max(ZERO, (ratio * to_cny(eligible_fee)).quantize(CNY_STEP, rounding=ROUND_DOWN))
    limits = [("ratio", share), ("balance", to_cny(balance)), ("cap", to_cny(cap_remaining)),
              ("budget", to_cny(budget_remaining))]
    limited_by, amount = min(limits, key=lambda item: item[1])  # the first of equals: the ratio wins ties
    return Coverage(max(ZERO, amount), share, limited_by)


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or the month's last day when it has no such day (31 Jan + 1 → 28 Feb)."""
    years, month0 = divmod(day.month - 1 + months, 12)
    year, month = day.year + years, month0 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def validity(programme: VoucherProgramme, granted_on: date) -> tuple[date, date]:
    """First and last valid day of a voucher granted on `granted_on` (both inclusive): 3 months from 15 March
    is 15 March to 14 June."""
    if programme.validity_months is not None:
        return granted_on, add_months(granted_on, programme.validity_months) - timedelta(days=1)
    return granted_on, granted_on + timedelta(days=(programme.validity_days or 1) - 1)


def today(tz_name: str = DEFAULT_TIMEZONE) -> date:
    return datetime.now(zone(tz_name)).date()


def holder_refusal(programme: VoucherProgramme, org: Organisation) -> str | None:
    """Why `org` cannot hold vouchers of `programme` ("kind", "city", "tech_sme"), or None when it can."""
    if org.kind.value not in programme.holder_kinds:
        return "kind"
    if org.city not in (programme.holder_cities or SICHUAN_CITIES):
        return "city"
    if programme.requires_tech_sme and not org.tech_sme:
        return "tech_sme"
    return None


def resource_refusal(programme: VoucherProgramme, resource: Resource) -> VoucherRefused | None:
    """Why a service on `resource` is not eligible under `programme`, or None."""
    if not resource.voucher_eligible:
        return ResourceNotEligible()
    rules = {rule.resource_id: rule for rule in programme.resource_rules}
    rule = rules.get(resource.id)
    if rule is not None and rule.excluded:
        return ServiceExcluded()
    if any(not r.excluded for r in rules.values()) and (rule is None or rule.excluded):
        return ResourceNotEligible()
    if programme.eligible_categories and resource.category.value not in programme.eligible_categories:
        return CategoryNotEligible()
    return None


# --- programmes -------------------------------------------------------------------------------------------------

@dataclass
class ProgrammeData:
    code: str
    name_zh: str
    name_en: str
    issuer_zh: str
    issuer_en: str
    year: int
    coverage_ratio: Decimal
    annual_cap: Decimal
    voucher_amount: Decimal
    budget: Decimal
    claim_deadline: date
    redemption_mode: RedemptionMode = RedemptionMode.PROVIDER_CLAIMS
    validity_months: int | None = 3
    validity_days: int | None = None
    eligible_categories: list[str] = field(default_factory=list)
    holder_kinds: list[str] = field(default_factory=lambda: [OrganisationKind.ENTERPRISE.value])
    holder_cities: list[str] = field(default_factory=list)
    requires_tech_sme: bool = True
    issuer_org_id: int | None = None
    excluded_resource_ids: dict[int, str] = field(default_factory=dict)  # id -> reason
    included_resource_ids: list[int] = field(default_factory=list)


def _require_admin(actor: User | None) -> None:
    if actor is not None and not actor.has_role(Role.ADMIN):
        raise Forbidden()


def _check_programme_data(data: ProgrammeData) -> None:
    problems: dict[str, list[str]] = {}
    ratio = Decimal(data.coverage_ratio)
    bp = ratio * BASIS_POINTS
    if not (0 < ratio <= 1) or bp != bp.to_integral_value():
        problems["coverage_ratio"] = [N_("Give a share above 0 and at most 1, in steps of 0.0001.")]
    for name in ("annual_cap", "voucher_amount"):
        if to_cny(getattr(data, name)) <= 0:
            problems[name] = [N_("Give an amount above zero.")]
    if to_cny(data.budget) < 0:
        problems["budget"] = [N_("The budget cannot be negative.")]
    if (data.validity_months is None) == (data.validity_days is None) or \
            (data.validity_months or data.validity_days or 0) <= 0:
        problems["validity"] = [N_("Give the validity either in months or in days, above zero.")]
    unknown = set(data.eligible_categories) - {c.value for c in ServiceCategory}
    if unknown:
        problems["eligible_categories"] = [N_("Unknown service category.")]
    if set(data.holder_cities) - set(SICHUAN_CITIES):
        problems["holder_cities"] = [N_("Unknown city code.")]
    if set(data.holder_kinds) - {k.value for k in OrganisationKind}:
        problems["holder_kinds"] = [N_("Unknown kind of organisation.")]
    if not 2000 <= data.year <= 2999:
        problems["year"] = [N_("Give a year from 2000 to 2999.")]
    if problems:
        raise InvalidInput(problems)


def create_programme(db: Session, actor: User | None, data: ProgrammeData) -> VoucherProgramme:
    """A new programme (platform admins; `actor` None for the CLI and the demo data)."""
    _require_admin(actor)
    _check_programme_data(data)
    if db.scalar(select(VoucherProgramme.id).where(VoucherProgramme.code == data.code)) is not None:
        raise InvalidInput({"code": [N_("A programme with this code exists already.")]})
    programme = VoucherProgramme(
        code=data.code, name_zh=data.name_zh, name_en=data.name_en, issuer_zh=data.issuer_zh,
        issuer_en=data.issuer_en, issuer_org_id=data.issuer_org_id, year=data.year,
        coverage_bp=int(Decimal(data.coverage_ratio) * BASIS_POINTS), annual_cap=to_cny(data.annual_cap),
        voucher_amount=to_cny(data.voucher_amount), budget=to_cny(data.budget), budget_used=ZERO,
        eligible_categories=sorted(data.eligible_categories), holder_kinds=sorted(data.holder_kinds),
        holder_cities=sorted(data.holder_cities), requires_tech_sme=data.requires_tech_sme,
        validity_months=data.validity_months, validity_days=data.validity_days,
        claim_deadline=data.claim_deadline, redemption_mode=RedemptionMode(data.redemption_mode),
    )
    programme.resource_rules = (
        [ProgrammeResourceRule(resource_id=rid, excluded=True, reason=reason)
         for rid, reason in sorted(data.excluded_resource_ids.items())]
        + [ProgrammeResourceRule(resource_id=rid, excluded=False) for rid in sorted(data.included_resource_ids)
           if rid not in data.excluded_resource_ids])
    db.add(programme)
    db.flush()
    audit.record(db, actor, "voucher_programme.created", programme, code=programme.code,
                 coverage_bp=programme.coverage_bp, annual_cap=programme.annual_cap, budget=programme.budget,
                 mode=programme.redemption_mode.value)
    return programme


# Service categories the Sichuan reference programme covers: all 11 of the sci-tech service plan. Routine
# production testing and statutory inspection are not categories but particular services: exclude those
# resources with `excluded_resource_ids`.
SICHUAN_CATEGORIES = [c.value for c in ServiceCategory]


def sichuan_reference_programme(year: int, *, budget: Decimal, code: str | None = None,
                                excluded_resource_ids: dict[int, str] | None = None,
                                issuer_org_id: int | None = None) -> ProgrammeData:
    """The settings of the reference policy (design.md §6): Sichuan's 2025 province-wide trial — tech SMEs
    registered in Sichuan, first come first served within the budget, 50 % of the fee, at most 200,000 CNY per
    enterprise per year, valid 3 months from the grant, the provider claims the subsidy (通兑)."""
    return ProgrammeData(
        code=code or f"SC-{year}", name_zh=f"四川省{year}年科技创新券", name_en=f"Sichuan innovation vouchers {year}",
        issuer_zh="四川省科学技术厅", issuer_en="Sichuan Provincial Department of Science and Technology",
        year=year, coverage_ratio=Decimal("0.5"), annual_cap=Decimal("200000.00"),
        voucher_amount=Decimal("200000.00"), budget=budget, claim_deadline=date(year + 1, 3, 31),
        redemption_mode=RedemptionMode.PROVIDER_CLAIMS, validity_months=3, validity_days=None,
        eligible_categories=list(SICHUAN_CATEGORIES), holder_kinds=[OrganisationKind.ENTERPRISE.value],
        holder_cities=[], requires_tech_sme=True, issuer_org_id=issuer_org_id,
        excluded_resource_ids=dict(excluded_resource_ids or {}))


def create_sichuan_reference_programme(db: Session, actor: User | None, year: int, *, budget: Decimal,
                                       **options: Any) -> VoucherProgramme:
    """Create the demo's default programme, following the Sichuan reference policy."""
    return create_programme(db, actor, sichuan_reference_programme(year, budget=budget, **options))


def get_programme(db: Session, programme_id: int) -> VoucherProgramme:
    programme = db.get(VoucherProgramme, programme_id)
    if programme is None:
        raise NotFound("voucher_programme", programme_id)
    return programme


def can_administer(actor: User | None, programme: VoucherProgramme) -> bool:
    """Platform admins, and finance users of the issuing organisation (the CLI acts as None)."""
    if actor is None or actor.has_role(Role.ADMIN):
        return True
    return (programme.issuer_org_id is not None and actor.organisation_id == programme.issuer_org_id
            and actor.has_role(Role.FINANCE))


# --- locks ------------------------------------------------------------------------------------------------------

def _is_sqlite(db: Session) -> bool:
    return db.get_bind().dialect.name == "sqlite"


def _require_lock(db: Session) -> None:
    if _is_sqlite(db) and not holds_write_lock(db):
        raise RuntimeError("voucher writes on SQLite need a transaction begun by core.db.begin_write()")


def locked_row(db: Session, model: type, *key: Any) -> Any:
    """The row, read afresh and locked until the transaction ends (SQLite: the write lock is held already)."""
    statement = select(model).execution_options(populate_existing=True)
    for column, value in zip(model.__table__.primary_key.columns, key, strict=True):
        statement = statement.where(column == value)
    if not _is_sqlite(db):
        statement = statement.with_for_update(of=model)
    return db.scalar(statement)


def lock_programme(db: Session, programme_id: int) -> VoucherProgramme:
    _require_lock(db)
    programme = locked_row(db, VoucherProgramme, programme_id)
    if programme is None:
        raise NotFound("voucher_programme", programme_id)
    return programme


def lock_cap(db: Session, programme: VoucherProgramme, holder_id: int, year: int) -> VoucherCapUsage:
    """The holder's cap row for the year, made on first use (concurrent first uses make exactly one)."""
    values = {"programme_id": programme.id, "holder_id": holder_id, "year": year, "cap": programme.annual_cap,
              "used": ZERO}
    dialect_insert = sqlite.insert if _is_sqlite(db) else postgresql.insert
    db.execute(dialect_insert(VoucherCapUsage).values(**values).on_conflict_do_nothing())
    return locked_row(db, VoucherCapUsage, programme.id, holder_id, year)


# --- grants -----------------------------------------------------------------------------------------------------

def grant_voucher(db: Session, actor: User | None, programme_id: int, holder_id: int, *,
                  on: date | None = None, amount: Decimal | None = None) -> Voucher:
    """Grant a voucher of the programme's face value (or `amount`, at most that) to an eligible holder.

    First come first served within the budget: refused once the programme's budget is used up, or when the
    holder has used its annual cap for the year."""
    programme = get_programme(db, programme_id)
    if not can_administer(actor, programme):
        raise Forbidden()
    return _grant(db, actor, programme, holder_id, on or today(), amount)


def request_voucher(db: Session, actor: User, programme_id: int, *, on: date | None = None) -> Voucher:
    """An enterprise user asks for a voucher for their own organisation (申领): granted at once when it is
    eligible and the budget allows, first come first served."""
    programme = get_programme(db, programme_id)
    return _grant(db, actor, programme, actor.organisation_id, on or today(), None)


def _grant(db: Session, actor: User | None, programme: VoucherProgramme, holder_id: int, on: date,
           amount: Decimal | None) -> Voucher:
    holder = db.get(Organisation, holder_id)
    if holder is None:
        raise NotFound("organisation", holder_id)
    if not programme.active:
        raise ProgrammeInactive()
    reason = holder_refusal(programme, holder)
    if reason is not None:
        raise HolderNotEligible(reason=_reason(reason), details={"reason": reason})
    face = programme.voucher_amount if amount is None else to_cny(amount)
    if not ZERO < face <= programme.voucher_amount:
        raise InvalidInput({"amount": [N_("Give an amount above zero and at most the programme's voucher "
                                          "amount.")]})
    programme = lock_programme(db, programme.id)  # grants queue here: first come first served
    if programme.budget_remaining <= 0:
        raise BudgetExhausted()
    cap = lock_cap(db, programme, holder.id, on.year)
    if cap.remaining <= 0:
        raise AnnualCapReached(cap=cap.cap, year=on.year)
    count = db.scalar(select(func.count()).select_from(Voucher).where(Voucher.programme_id == programme.id))
    valid_from, valid_until = validity(programme, on)
    voucher = Voucher(programme_id=programme.id, holder_id=holder.id, number=f"{programme.code}-{count + 1:06d}",
                      amount=face, balance=face, granted_by_id=actor.id if actor else None,
                      valid_from=valid_from, valid_until=valid_until)
    db.add(voucher)
    db.flush()
    audit.record(db, actor, "voucher.granted", voucher, number=voucher.number, programme_id=programme.id,
                 holder_id=holder.id, amount=face, valid_until=valid_until.isoformat())
    return voucher


def _reason(code: str) -> Message:
    return Message(HolderNotEligible.REASONS[code])


# --- applying a voucher ----------------------------------------------------------------------------------------

def get_voucher(db: Session, actor: User | None, voucher_id: int) -> Voucher:
    """A voucher its holder's users (or a platform admin or the programme's administrators) may see."""
    voucher = db.get(Voucher, voucher_id)
    if voucher is None or not can_see_voucher(actor, voucher):
        raise NotFound("voucher", voucher_id)
    return voucher


def can_see_voucher(actor: User | None, voucher: Voucher) -> bool:
    return actor is None or actor.organisation_id == voucher.holder_id or can_administer(actor, voucher.programme)


@dataclass(frozen=True, slots=True)
class Target:
    """A charge line with what eligibility depends on."""

    line: ChargeLine
    charge: Charge
    resource: Resource
    provider_id: int


def _target(db: Session, charge_line_id: int) -> Target:
    line = db.get(ChargeLine, charge_line_id)
    if line is None:
        raise NotFound("charge_line", charge_line_id)
    charge = line.charge
    return Target(line, charge, charge.resource, db.get_one(Facility, charge.facility_id).owner_id)


def _line_is_eligible(target: Target) -> bool:
    kind = getattr(target.charge.kind, "value", target.charge.kind)
    return bool(target.line.voucher_eligible) and target.line.amount > 0 and kind != "credit_note"


def check_applicable(db: Session, programme: VoucherProgramme, voucher: Voucher, target: Target,
                     on: date) -> None:
    """Every refusal that does not depend on money left: raises the first that applies."""
    if target.charge.organisation_id != voucher.holder_id:
        raise NotHoldersCharge()
    if not _line_is_eligible(target):
        raise LineNotEligible()
    if not programme.active:
        raise ProgrammeInactive()
    if on > voucher.valid_until:
        raise VoucherExpired(valid_until=voucher.valid_until.isoformat())
    service_date = target.charge.service_date
    if not voucher.valid_from <= service_date <= voucher.valid_until:
        raise ServiceOutsideValidity(service_date=service_date.isoformat(),
                                     valid_from=voucher.valid_from.isoformat(),
                                     valid_until=voucher.valid_until.isoformat())
    refusal = resource_refusal(programme, target.resource)
    if refusal is not None:
        raise refusal
    if are_related(db, voucher.holder_id, target.provider_id):
        raise RelatedParty()


def _already_subsidised(db: Session, charge_line_id: int) -> bool:
    return db.scalar(select(VoucherApplication.id).where(VoucherApplication.charge_line_id == charge_line_id)) \
        is not None


def preview_application(db: Session, actor: User | None, voucher_id: int, charge_line_id: int, *,
                        on: date | None = None) -> Coverage:
    """What applying the voucher to the line would cover now, without applying it (raises what apply would)."""
    voucher = get_voucher(db, actor, voucher_id)
    target = _target(db, charge_line_id)
    programme = voucher.programme
    check_applicable(db, programme, voucher, target, on or today())
    if _already_subsidised(db, charge_line_id):
        raise ChargeLineAlreadySubsidised()
    cap = db.get(VoucherCapUsage, (programme.id, voucher.holder_id, target.charge.service_date.year))
    return coverage(programme.coverage_ratio, target.line.amount, balance=voucher.balance,
                    cap_remaining=cap.remaining if cap else programme.annual_cap,
                    budget_remaining=programme.budget_remaining)


def apply_voucher(db: Session, actor: User | None, voucher_id: int, charge_line_id: int, *,
                  on: date | None = None) -> VoucherApplication:
    """Apply a voucher to one charge line of its holder: the subsidy is taken from the voucher's balance, the
    holder's annual cap and the programme's budget at once, or not at all."""
    _require_lock(db)
    on = on or today()
    voucher = get_voucher(db, actor, voucher_id)
    if actor is not None and actor.organisation_id != voucher.holder_id and not actor.has_role(Role.ADMIN):
        raise Forbidden()
    target = _target(db, charge_line_id)
    check_applicable(db, voucher.programme, voucher, target, on)

    # Fixed lock order, the same in every writer: programme, cap row, voucher.
    programme = lock_programme(db, voucher.programme_id)
    year = target.charge.service_date.year
    cap = lock_cap(db, programme, voucher.holder_id, year)
    voucher = locked_row(db, Voucher, voucher.id)
    if not programme.active:
        raise ProgrammeInactive()
    if _already_subsidised(db, charge_line_id):
        raise ChargeLineAlreadySubsidised()
    covered = coverage(programme.coverage_ratio, target.line.amount, balance=voucher.balance,
                       cap_remaining=cap.remaining, budget_remaining=programme.budget_remaining)
    if covered.amount <= 0:
        if covered.limited_by == "balance":
            raise VoucherExhausted()
        if covered.limited_by == "cap":
            raise AnnualCapReached(cap=cap.cap, year=year)
        if covered.limited_by == "budget":
            raise BudgetExhausted()
        raise LineNotEligible()  # a fee so small that its share is less than a fen

    application = VoucherApplication(
        voucher_id=voucher.id, programme_id=programme.id, holder_id=voucher.holder_id,
        provider_id=target.provider_id, charge_id=target.charge.id, charge_line_id=target.line.id,
        eligible_fee=target.line.amount, coverage_bp=programme.coverage_bp, amount=covered.amount,
        service_date=target.charge.service_date, cap_year=year, applied_by_id=actor.id if actor else None)
    voucher.balance -= covered.amount
    cap.used += covered.amount
    programme.budget_used += covered.amount
    try:
        with db.begin_nested():  # a line subsidised concurrently through another programme's voucher
            db.add(application)
            db.flush()
    except IntegrityError as error:
        if "charge_line_id" in str(error.orig) or "uq_voucher_application" in str(error.orig):
            raise ChargeLineAlreadySubsidised() from None
        raise
    audit.record(db, actor, "voucher.applied", application, voucher_id=voucher.id, number=voucher.number,
                 charge_line_id=target.line.id, charge_id=target.charge.id, eligible_fee=target.line.amount,
                 amount=covered.amount, limited_by=covered.limited_by, balance=voucher.balance)
    return application


def eligible_lines(db: Session, charge_id: int) -> list[ChargeLine]:
    """The lines of a charge a voucher may subsidise, not subsidised yet, in order."""
    subsidised = select(VoucherApplication.charge_line_id)
    return list(db.scalars(select(ChargeLine).where(
        ChargeLine.charge_id == charge_id, ChargeLine.voucher_eligible.is_(True), ChargeLine.amount > 0,
        ChargeLine.id.not_in(subsidised)).order_by(ChargeLine.id)))


def apply_voucher_to_charge(db: Session, actor: User | None, voucher_id: int, charge_id: int, *,
                            on: date | None = None) -> list[VoucherApplication]:
    """Apply a voucher to every eligible, unsubsidised line of a charge, in line order, while money is left.

    All or nothing for the first line (its refusal is raised); later lines stop quietly when a limit is reached."""
    lines = eligible_lines(db, charge_id)
    if not lines:
        if db.get(Charge, charge_id) is None:
            raise NotFound("charge", charge_id)
        raise LineNotEligible()
    applied = [apply_voucher(db, actor, voucher_id, lines[0].id, on=on)]
    for line in lines[1:]:
        try:
            with db.begin_nested():
                applied.append(apply_voucher(db, actor, voucher_id, line.id, on=on))
        except (VoucherExhausted, AnnualCapReached, BudgetExhausted):
            break
    return applied


# --- what the holder's pages show ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VoucherSummary:
    voucher: Voucher
    programme: VoucherProgramme
    status: str  # "active", "expired", "used_up", "not_yet_valid"
    days_left: int  # valid days left, today included; 0 when expired
    cap_remaining: Decimal  # of the holder's annual cap, this year
    applications: int

    @property
    def id(self) -> int:
        return self.voucher.id

    @property
    def number(self) -> str:
        return self.voucher.number

    @property
    def holder_id(self) -> int:
        return self.voucher.holder_id

    @property
    def amount(self) -> Decimal:
        return self.voucher.amount

    @property
    def balance(self) -> Decimal:
        return self.voucher.balance

    @property
    def used(self) -> Decimal:
        return self.voucher.used


def summarise(db: Session, voucher: Voucher, *, on: date | None = None) -> VoucherSummary:
    on = on or today()
    programme = voucher.programme
    if on > voucher.valid_until:
        status = "expired"
    elif on < voucher.valid_from:
        status = "not_yet_valid"
    elif voucher.balance <= 0:
        status = "used_up"
    else:
        status = "active"
    days_left = max(0, (voucher.valid_until - max(on, voucher.valid_from)).days + 1) if status != "expired" else 0
    cap = db.get(VoucherCapUsage, (programme.id, voucher.holder_id, on.year))
    count = db.scalar(select(func.count()).select_from(VoucherApplication).where(
        VoucherApplication.voucher_id == voucher.id))
    return VoucherSummary(voucher, programme, status, days_left,
                          cap.remaining if cap else programme.annual_cap, count or 0)


def vouchers_of(db: Session, holder_id: int, *, on: date | None = None,
                include_expired: bool = True) -> list[VoucherSummary]:
    """A holder's vouchers, soonest expiring first, with balance, expiry and what is left of the cap."""
    vouchers: Iterable[Voucher] = db.scalars(select(Voucher).where(Voucher.holder_id == holder_id).order_by(
        Voucher.valid_until, Voucher.id))
    summaries = [summarise(db, v, on=on) for v in vouchers]
    return [s for s in summaries if include_expired or s.status != "expired"]


def applications_of(db: Session, voucher_id: int) -> list[VoucherApplication]:
    return list(db.scalars(select(VoucherApplication).where(VoucherApplication.voucher_id == voucher_id)
                           .order_by(VoucherApplication.id)))
