"""Pricing as pure functions: quantities rounded up to the unit's increment, amounts half-up to the fen,
fees and penalties per the rate card, and the customer class of a billed organisation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.models import BillingUnit, ChargeBasis, ChargeLineKind, CustomerClass
from billing.pricing import (
    Outcome,
    Tariff,
    Usage,
    billable_minutes,
    customer_class,
    price,
    time_quantity,
    total,
)
from core.accounts.models import OrganisationKind

D = Decimal


def kinds(lines):
    return [line.kind for line in lines]


def test_a_started_quarter_hour_counts_in_full():
    lines = price(Tariff(BillingUnit.QUARTER_HOUR, D("400.00")), Usage(Outcome.SERVED, booked_minutes=61))

    assert [(line.kind, line.quantity, line.unit, line.unit_price, line.amount) for line in lines] == [
        (ChargeLineKind.USAGE, D("1.25"), "hour", D("400.00"), D("500.00"))]


@pytest.mark.parametrize(("unit", "minutes", "batch_days", "quantity"), [
    (BillingUnit.HOUR, 60, None, D(1)),
    (BillingUnit.HOUR, 61, None, D(2)),
    (BillingUnit.QUARTER_HOUR, 1, None, D("0.25")),
    (BillingUnit.QUARTER_HOUR, 90, None, D("1.5")),
    (BillingUnit.DAY, 1440, None, D(1)),
    (BillingUnit.DAY, 1441, None, D(2)),
    (BillingUnit.BATCH, 4 * 1440, 3, D(2)),
    (BillingUnit.BATCH, 3 * 1440, 3, D(1)),
    (BillingUnit.BATCH, 10, None, D(1)),
    (BillingUnit.HOUR, 0, None, D(0)),
])
def test_time_quantities_round_up_to_the_unit(unit, minutes, batch_days, quantity):
    assert time_quantity(unit, minutes, batch_days) == quantity


def test_amounts_round_half_up_to_the_fen():
    # 0.25 h × 0.02 = 0.005 → 0.01 (half-up), and 0.25 h × 0.01 = 0.0025 → 0.00
    assert total(price(Tariff(BillingUnit.QUARTER_HOUR, D("0.02")), Usage(Outcome.SERVED, 15))) == D("0.01")
    assert total(price(Tariff(BillingUnit.QUARTER_HOUR, D("0.01")), Usage(Outcome.SERVED, 15))) == D("0.00")
    # 1.75 h × 333.33 = 583.3275 → 583.33
    assert total(price(Tariff(BillingUnit.QUARTER_HOUR, D("333.33")), Usage(Outcome.SERVED, 105))) == D("583.33")


def test_per_sample_and_per_run_units():
    per_sample = Tariff(BillingUnit.SAMPLE, D("150.00"), basis=ChargeBasis.LARGER)
    assert total(price(per_sample, Usage(Outcome.SERVED, 60, 60, booked_samples=3, measured_samples=5))) == D("750.00")
    assert total(price(per_sample, Usage(Outcome.SERVED, 60, None, booked_samples=3))) == D("450.00")
    per_run = Tariff(BillingUnit.RUN, D("80.00"), basis=ChargeBasis.MEASURED)
    assert total(price(per_run, Usage(Outcome.SERVED, 60, 55, runs=3))) == D("240.00")


def test_minimum_setup_and_technician_fees():
    tariff = Tariff(BillingUnit.QUARTER_HOUR, D("100.00"), minimum_charge=D("200.00"), setup_fee=D("50.00"),
                    technician_fee_per_hour=D("120.00"))

    lines = price(tariff, Usage(Outcome.SERVED, booked_minutes=30, technician=True))

    assert [(line.kind, line.amount) for line in lines] == [
        (ChargeLineKind.USAGE, D("50.00")), (ChargeLineKind.MINIMUM, D("150.00")),
        (ChargeLineKind.SETUP, D("50.00")), (ChargeLineKind.TECHNICIAN, D("60.00"))]
    assert total(lines) == D("310.00")
    assert all(line.voucher_eligible for line in lines)


def test_no_show_and_late_cancellation_are_a_share_of_the_booked_fee_and_not_voucher_eligible():
    tariff = Tariff(BillingUnit.HOUR, D("300.00"), setup_fee=D("80.00"), no_show_fraction=D("0.5"),
                    late_cancellation_fraction=D("0.25"))

    no_show = price(tariff, Usage(Outcome.NO_SHOW, booked_minutes=120))
    late = price(tariff, Usage(Outcome.LATE_CANCELLATION, booked_minutes=120))

    assert [(line.kind, line.quantity, line.unit_price, line.amount) for line in no_show] == [
        (ChargeLineKind.NO_SHOW, D("0.5"), D("600.00"), D("300.00"))]
    assert [(line.kind, line.amount) for line in late] == [(ChargeLineKind.LATE_CANCELLATION, D("150.00"))]
    assert not any(line.voucher_eligible for line in no_show + late)
    assert price(Tariff(BillingUnit.HOUR, D("300.00")), Usage(Outcome.NO_SHOW, 120)) == []  # no fee, no line


@pytest.mark.parametrize(("basis", "booked", "measured", "expected"), [
    (ChargeBasis.BOOKED, 60, 200, 60),
    (ChargeBasis.MEASURED, 60, 200, 200),
    (ChargeBasis.MEASURED, 60, 20, 20),
    (ChargeBasis.LARGER, 60, 20, 60),
    (ChargeBasis.LARGER, 60, 70, 60),  # within the 15-minute tolerance
    (ChargeBasis.LARGER, 60, 80, 80),
    (ChargeBasis.MEASURED, 60, None, 60),  # not metered: the booking stands for the use
])
def test_the_charge_basis(basis, booked, measured, expected):
    assert billable_minutes(basis, booked, measured, 15) == expected


@pytest.mark.parametrize(("billed", "kind", "affiliated", "expected"), [
    (1, OrganisationKind.INSTITUTE, False, CustomerClass.INTERNAL),  # the owner itself
    (2, OrganisationKind.ENTERPRISE, True, CustomerClass.INTERNAL),  # a declared affiliate
    (2, OrganisationKind.UNIVERSITY, False, CustomerClass.ACADEMIC),
    (2, OrganisationKind.INSTITUTE, False, CustomerClass.ACADEMIC),
    (2, OrganisationKind.GOVERNMENT, False, CustomerClass.ACADEMIC),
    (2, OrganisationKind.ENTERPRISE, False, CustomerClass.ENTERPRISE),
])
def test_customer_class_matrix(billed, kind, affiliated, expected):
    assert customer_class(billed, kind, owner_id=1, affiliated=affiliated) == expected


def test_negative_prices_are_refused():
    with pytest.raises(ValueError, match="unit_price"):
        price(Tariff(BillingUnit.HOUR, D("-1")), Usage(Outcome.SERVED, 60))
    with pytest.raises(ValueError, match="no_show_fraction"):
        price(Tariff(BillingUnit.HOUR, D("1"), no_show_fraction=D("1.5")), Usage(Outcome.NO_SHOW, 60))


# --- properties -----------------------------------------------------------------------------------------------

money = st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False, allow_infinity=False)
fractions = st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False)
minutes = st.integers(min_value=0, max_value=60 * 24 * 30)
time_units = st.sampled_from([BillingUnit.HOUR, BillingUnit.QUARTER_HOUR, BillingUnit.DAY, BillingUnit.BATCH])


all_units = st.sampled_from(list(BillingUnit))


@st.composite
def tariffs(draw, units=all_units):
    return Tariff(unit=draw(units), unit_price=draw(money), minimum_charge=draw(money), setup_fee=draw(money),
                  technician_fee_per_hour=draw(money), no_show_fraction=draw(fractions),
                  late_cancellation_fraction=draw(fractions), basis=draw(st.sampled_from(list(ChargeBasis))),
                  tolerance_min=draw(st.integers(0, 60)), batch_days=draw(st.none() | st.integers(1, 10)))


@st.composite
def usages(draw):
    return Usage(outcome=draw(st.sampled_from(list(Outcome))), booked_minutes=draw(minutes),
                 measured_minutes=draw(st.none() | minutes), booked_samples=draw(st.none() | st.integers(1, 50)),
                 measured_samples=draw(st.none() | st.integers(0, 50)), runs=draw(st.integers(0, 20)),
                 technician=draw(st.booleans()), override_minutes=draw(st.none() | minutes))


@settings(max_examples=400, deadline=None, database=None)
@given(tariff=tariffs(), usage=usages())
def test_charges_are_never_negative_and_total_the_lines_exactly(tariff, usage):
    lines = price(tariff, usage)

    assert all(line.amount >= 0 and line.quantity >= 0 for line in lines)
    assert total(lines) == sum((line.amount for line in lines), Decimal(0))
    assert all(line.amount == line.amount.quantize(D("0.01")) for line in lines)


@settings(max_examples=400, deadline=None, database=None)
@given(tariff=tariffs(units=time_units), booked=minutes, measured=st.none() | minutes, extra=minutes,
       technician=st.booleans())
def test_more_time_never_costs_less(tariff, booked, measured, extra, technician):
    def cost(b, m):
        return total(price(tariff, Usage(Outcome.SERVED, b, m, technician=technician)))

    assert cost(booked + extra, measured) >= cost(booked, measured)
    if measured is not None:
        assert cost(booked, measured + extra) >= cost(booked, measured)


@settings(max_examples=400, deadline=None, database=None)
@given(unit=st.sampled_from([BillingUnit.HOUR, BillingUnit.QUARTER_HOUR, BillingUnit.DAY]),
       booked=st.integers(1, 60 * 24 * 30), unit_price=money)
def test_quantity_is_rounded_up_to_the_increment_and_amount_half_up(unit, booked, unit_price):
    step_min = {BillingUnit.HOUR: 60, BillingUnit.QUARTER_HOUR: 15, BillingUnit.DAY: 1440}[unit]
    per = 1440 if unit == BillingUnit.DAY else 60  # the line's unit: days, else hours

    [line] = price(Tariff(unit, unit_price), Usage(Outcome.SERVED, booked))

    covered = line.quantity * per
    assert covered >= booked > covered - step_min  # the smallest number of increments that covers the time
    assert covered % step_min == 0
    exact = line.quantity * unit_price
    assert abs(line.amount - exact) <= D("0.005")
    assert line.amount == (exact + D("0.005")).quantize(D("0.01"), rounding="ROUND_FLOOR")
