"""Pricing: pure functions from a tariff and what happened to priced charge lines.

Rounding, documented once: a quantity is rounded UP to the unit's increment (a started hour, quarter hour,
day or batch counts in full); each line's amount is quantity × unit price rounded half-up to 0.01 CNY
(core.money), and a charge's total is the exact sum of its lines. No database, no clock: these functions
are tested on their own, with hypothesis properties.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from billing.models import VOUCHER_ELIGIBLE_LINE_KINDS, BillingUnit, ChargeBasis, ChargeLineKind, CustomerClass
from core.accounts.models import OrganisationKind
from core.errors import N_
from core.money import to_cny

ZERO = Decimal("0.00")
QUARTER_HOUR_MIN = 15
MINUTES_PER_DAY = 1440

# How each unit counts time: minutes per increment, and the line's unit (hours for both hourly units).
_TIME_INCREMENT_MIN = {BillingUnit.HOUR: 60, BillingUnit.QUARTER_HOUR: QUARTER_HOUR_MIN,
                       BillingUnit.DAY: MINUTES_PER_DAY}
_LINE_UNIT = {BillingUnit.HOUR: "hour", BillingUnit.QUARTER_HOUR: "hour", BillingUnit.DAY: "day",
              BillingUnit.BATCH: "batch", BillingUnit.SAMPLE: "sample", BillingUnit.RUN: "run"}

LINE_DESCRIPTIONS = {
    ChargeLineKind.USAGE: N_("Use of the resource"),
    ChargeLineKind.SETUP: N_("Setup fee"),
    ChargeLineKind.TECHNICIAN: N_("Technician time"),
    ChargeLineKind.MINIMUM: N_("Top-up to the minimum charge"),
    ChargeLineKind.NO_SHOW: N_("No-show fee (share of the booked fee)"),
    ChargeLineKind.LATE_CANCELLATION: N_("Late cancellation fee (share of the booked fee)"),
    ChargeLineKind.CREDIT: N_("Credit note"),
}


class Outcome(enum.StrEnum):
    SERVED = "served"  # the resource was used (or, unmetered, the booking stands for the use)
    NO_SHOW = "no_show"
    LATE_CANCELLATION = "late_cancellation"


@dataclass(frozen=True, slots=True)
class Tariff:
    """The terms of one rate card for one customer class."""

    unit: BillingUnit
    unit_price: Decimal  # CNY per unit; per hour for quarter_hour
    minimum_charge: Decimal = ZERO
    setup_fee: Decimal = ZERO
    technician_fee_per_hour: Decimal = ZERO
    no_show_fraction: Decimal = Decimal(0)
    late_cancellation_fraction: Decimal = Decimal(0)
    basis: ChargeBasis = ChargeBasis.BOOKED
    tolerance_min: int = 0
    batch_days: int | None = None  # the resource's batch length, for BillingUnit.BATCH


@dataclass(frozen=True, slots=True)
class Usage:
    """What happened: booked and measured time (measured None = not metered), samples and runs."""

    outcome: Outcome
    booked_minutes: int
    measured_minutes: int | None = None
    booked_samples: int | None = None
    measured_samples: int | None = None
    runs: int = 0
    technician: bool = False
    override_minutes: int | None = None  # a lab manager's adjustment replaces the basis


@dataclass(frozen=True, slots=True)
class Line:
    kind: ChargeLineKind
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal

    @property
    def voucher_eligible(self) -> bool:
        return self.kind in VOUCHER_ELIGIBLE_LINE_KINDS

    @property
    def description(self) -> str:
        return LINE_DESCRIPTIONS[self.kind]


def customer_class(billed_org_id: int, billed_kind: OrganisationKind | str, owner_id: int,
                   *, affiliated: bool) -> CustomerClass:
    """The billed organisation's class at a facility: its owner or a declared affiliate is internal."""
    if billed_org_id == owner_id or affiliated:
        return CustomerClass.INTERNAL
    if OrganisationKind(billed_kind) == OrganisationKind.ENTERPRISE:
        return CustomerClass.ENTERPRISE
    return CustomerClass.ACADEMIC


def round_up(value: Decimal, step: Decimal) -> Decimal:
    """The smallest multiple of `step` (> 0) that is at least `value`."""
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def line_amount(quantity: Decimal, unit_price: Decimal) -> Decimal:
    return to_cny(quantity * unit_price)


def billable_minutes(basis: ChargeBasis, booked: int, measured: int | None, tolerance_min: int = 0) -> int:
    """The minutes a served booking is charged for. Unmetered resources bill the booked time; with LARGER,
    measured time within the tolerance beyond the booking counts as the booking."""
    if measured is None or basis == ChargeBasis.BOOKED:
        return booked
    if basis == ChargeBasis.MEASURED:
        return measured
    return booked if measured <= booked + tolerance_min else measured


def time_quantity(unit: BillingUnit, minutes: int, batch_days: int | None = None) -> Decimal:
    """Minutes as a quantity of the unit, rounded up to its increment (quarter hours in hours)."""
    if minutes <= 0:
        return Decimal(0)
    if unit == BillingUnit.BATCH:
        batch_min = MINUTES_PER_DAY * (batch_days or 0)
        return round_up(Decimal(minutes), Decimal(batch_min)) / batch_min if batch_min else Decimal(1)
    step = _TIME_INCREMENT_MIN[unit]
    increments = round_up(Decimal(minutes), Decimal(step)) / step
    return increments * step / 60 if unit != BillingUnit.DAY else increments


def usage_quantity(tariff: Tariff, usage: Usage) -> Decimal:
    """The quantity of the tariff's unit a served booking is charged for."""
    if tariff.unit == BillingUnit.SAMPLE:
        booked = usage.booked_samples or 1
        measured = usage.measured_samples
        if tariff.basis == ChargeBasis.BOOKED or measured is None:
            return Decimal(booked)
        return Decimal(measured if tariff.basis == ChargeBasis.MEASURED else max(booked, measured))
    if tariff.unit == BillingUnit.RUN:
        if tariff.basis == ChargeBasis.BOOKED or usage.measured_minutes is None:
            return Decimal(1)
        return Decimal(usage.runs if tariff.basis == ChargeBasis.MEASURED else max(1, usage.runs))
    minutes = (usage.override_minutes if usage.override_minutes is not None else
               billable_minutes(tariff.basis, usage.booked_minutes, usage.measured_minutes, tariff.tolerance_min))
    return time_quantity(tariff.unit, minutes, tariff.batch_days)


def booked_fee(tariff: Tariff, usage: Usage) -> Decimal:
    """What the booking would have cost as booked (at least the minimum): the base of no-show fees."""
    if tariff.unit == BillingUnit.SAMPLE:
        quantity = Decimal(usage.booked_samples or 1)
    elif tariff.unit == BillingUnit.RUN:
        quantity = Decimal(1)
    else:
        quantity = time_quantity(tariff.unit, usage.booked_minutes, tariff.batch_days)
    return max(line_amount(quantity, tariff.unit_price), to_cny(tariff.minimum_charge))


def price(tariff: Tariff, usage: Usage) -> list[Line]:
    """The charge lines for one booking or one unbooked use; lines of zero amount are left out."""
    _check_tariff(tariff)
    if usage.outcome != Outcome.SERVED:
        fraction = (tariff.no_show_fraction if usage.outcome == Outcome.NO_SHOW
                    else tariff.late_cancellation_fraction)
        kind = ChargeLineKind.NO_SHOW if usage.outcome == Outcome.NO_SHOW else ChargeLineKind.LATE_CANCELLATION
        base = booked_fee(tariff, usage)
        line = Line(kind, Decimal(fraction), "booked_fee", base, line_amount(Decimal(fraction), base))
        return [line] if line.amount else []

    lines: list[Line] = []
    quantity = usage_quantity(tariff, usage)
    usage_line = Line(ChargeLineKind.USAGE, quantity, _LINE_UNIT[tariff.unit], to_cny(tariff.unit_price),
                      line_amount(quantity, tariff.unit_price))
    lines.append(usage_line)
    minimum = to_cny(tariff.minimum_charge)
    if usage_line.amount < minimum:
        top_up = minimum - usage_line.amount
        lines.append(Line(ChargeLineKind.MINIMUM, Decimal(1), "charge", top_up, top_up))
    if tariff.setup_fee:
        fee = to_cny(tariff.setup_fee)
        lines.append(Line(ChargeLineKind.SETUP, Decimal(1), "charge", fee, fee))
    if usage.technician and tariff.technician_fee_per_hour:
        minutes = (usage.override_minutes if usage.override_minutes is not None else
                   billable_minutes(tariff.basis, usage.booked_minutes, usage.measured_minutes,
                                    tariff.tolerance_min))
        hours = time_quantity(BillingUnit.QUARTER_HOUR, minutes)
        fee = to_cny(tariff.technician_fee_per_hour)
        lines.append(Line(ChargeLineKind.TECHNICIAN, hours, "hour", fee, line_amount(hours, fee)))
    return [line for line in lines if line.amount or line.kind == ChargeLineKind.USAGE]


def total(lines: list[Line]) -> Decimal:
    return to_cny(sum((line.amount for line in lines), ZERO))


def _check_tariff(tariff: Tariff) -> None:
    for name in ("unit_price", "minimum_charge", "setup_fee", "technician_fee_per_hour"):
        value = getattr(tariff, name)
        if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
            raise ValueError(f"{name} must be a Decimal of at least 0, not {value!r}")
    for name in ("no_show_fraction", "late_cancellation_fraction"):
        value = getattr(tariff, name)
        if not isinstance(value, Decimal) or not (0 <= value <= 1):
            raise ValueError(f"{name} must be a Decimal from 0 to 1, not {value!r}")
