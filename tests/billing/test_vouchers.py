"""Innovation vouchers: the coverage formula, programmes and grants, applying a voucher and every refusal, the
annual cap across a holder's vouchers, the budget across holders, and the constraints behind them."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy.exc
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text

from billing import vouchers
from billing.models import ChargeKind, ChargeLineKind
from billing.voucher_models import RedemptionMode, Voucher, VoucherApplication, VoucherCapUsage, VoucherProgramme
from booking.categories import ServiceCategory
from core.accounts.models import Affiliation, OrganisationKind, Role
from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput, NotFound
from tests.billing.voucher_factories import (
    GRANTED_ON,
    VOUCHER_TABLES,
    make_charge,
    make_holder,
    make_programme,
    make_voucher,
)
from tests.factories import make_facility, make_organisation, make_resource, make_user, row_counts

D = Decimal
TODAY = date(2026, 3, 20)  # inside the validity of a voucher granted on GRANTED_ON


# --- the formula, without a database ------------------------------------------------------------------------------

money = st.decimals(min_value=D("0.00"), max_value=D("1000000.00"), places=2, allow_nan=False,
                    allow_infinity=False)
ratios = st.integers(min_value=1, max_value=10_000).map(lambda bp: D(bp) / 10_000)


@given(ratio=ratios, fee=money, balance=money, cap=money, budget=money)
def test_coverage_never_exceeds_any_limit_and_is_exact(ratio, fee, balance, cap, budget):
    covered = vouchers.coverage(ratio, fee, balance=balance, cap_remaining=cap, budget_remaining=budget)

    assert isinstance(covered.amount, Decimal)
    assert covered.amount == covered.amount.quantize(D("0.01"))  # whole fen
    assert D(0) <= covered.amount
    assert covered.amount <= ratio * fee
    assert covered.amount <= balance
    assert covered.amount <= cap
    assert covered.amount <= budget
    # and it is the largest such amount: the share is only rounded down, never cut further
    assert covered.amount == min(covered.share, balance, cap, budget)
    assert ratio * fee - covered.share < D("0.01")


@pytest.mark.parametrize(("fee", "balance", "cap", "budget", "amount", "limited_by"), [
    ("1000.00", "200000.00", "200000.00", "1000000.00", "500.00", "ratio"),
    ("1000.01", "200000.00", "200000.00", "1000000.00", "500.00", "ratio"),  # 500.005 rounds down
    ("1000.00", "120.00", "200000.00", "1000000.00", "120.00", "balance"),
    ("1000.00", "200000.00", "80.50", "1000000.00", "80.50", "cap"),
    ("1000.00", "200000.00", "200000.00", "0.00", "0.00", "budget"),
    ("0.01", "200000.00", "200000.00", "1000000.00", "0.00", "ratio"),
])
def test_coverage_examples(fee, balance, cap, budget, amount, limited_by):
    covered = vouchers.coverage(D("0.5"), D(fee), balance=D(balance), cap_remaining=D(cap),
                                budget_remaining=D(budget))

    assert (covered.amount, covered.limited_by) == (D(amount), limited_by)


def test_coverage_refuses_a_ratio_outside_0_to_1():
    with pytest.raises(ValueError, match="ratio"):
        vouchers.coverage(D("1.5"), D(100), balance=D(1), cap_remaining=D(1), budget_remaining=D(1))


@pytest.mark.parametrize(("granted", "months", "valid_until"), [
    (date(2026, 3, 15), 3, date(2026, 6, 14)),
    (date(2026, 3, 2), 3, date(2026, 6, 1)),
    (date(2025, 11, 30), 3, date(2026, 2, 27)),  # 30 Feb does not exist: 28 Feb, the day before is the last
    (date(2026, 12, 1), 1, date(2026, 12, 31)),
])
def test_validity_in_months_from_the_grant(granted, months, valid_until):
    programme = VoucherProgramme(validity_months=months, validity_days=None)

    assert vouchers.validity(programme, granted) == (granted, valid_until)


def test_validity_in_days():
    programme = VoucherProgramme(validity_months=None, validity_days=90)

    assert vouchers.validity(programme, date(2026, 1, 1)) == (date(2026, 1, 1), date(2026, 3, 31))


# --- programmes and grants ------------------------------------------------------------------------------------------

def test_the_sichuan_reference_programme(db):
    programme = vouchers.create_sichuan_reference_programme(db, None, 2026, budget=D("5000000"))

    assert programme.code == "SC-2026"
    assert programme.coverage_ratio == D("0.5")
    assert programme.annual_cap == D("200000.00")
    assert programme.validity_months == 3
    assert programme.requires_tech_sme
    assert programme.holder_kinds == ["enterprise"]
    assert programme.redemption_mode == RedemptionMode.PROVIDER_CLAIMS
    assert set(programme.eligible_categories) == {c.value for c in ServiceCategory}
    assert db.scalar(select(AuditEntry.action).where(AuditEntry.target_type == "voucher_programme")) == \
        "voucher_programme.created"


@pytest.mark.parametrize(("field", "value"), [
    ("coverage_ratio", D("0")), ("coverage_ratio", D("1.01")), ("coverage_ratio", D("0.33333")),
    ("annual_cap", D("0")), ("budget", D("-1")), ("validity_months", None), ("holder_cities", ["999999"]),
    ("eligible_categories", ["cooking"]),
])
def test_invalid_programme_settings_are_refused(db, field, value):
    data = vouchers.sichuan_reference_programme(2026, budget=D(1000))
    setattr(data, field, value)
    before = row_counts(db, VoucherProgramme, AuditEntry)

    with pytest.raises(InvalidInput):
        vouchers.create_programme(db, None, data)

    assert row_counts(db, VoucherProgramme, AuditEntry) == before


def test_only_admins_create_programmes(db):
    with pytest.raises(Forbidden):
        vouchers.create_sichuan_reference_programme(db, make_user(db, roles=(Role.FINANCE,)), 2026, budget=D(1))


def test_a_grant_is_valid_three_months_and_audited(db):
    programme, holder = make_programme(db), make_holder(db)

    voucher = make_voucher(db, programme, holder)

    assert (voucher.amount, voucher.balance) == (D("200000.00"), D("200000.00"))
    assert (voucher.valid_from, voucher.valid_until) == (GRANTED_ON, date(2026, 6, 1))
    assert voucher.number == f"{programme.code}-000001"
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "voucher.granted"))
    assert entry.target_id == str(voucher.id)


def test_an_enterprise_user_requests_a_voucher_for_their_organisation(db):
    programme, holder = make_programme(db), make_holder(db)
    user = make_user(db, organisation=holder)

    voucher = vouchers.request_voucher(db, user, programme.id, on=GRANTED_ON)

    assert voucher.holder_id == holder.id
    assert voucher.granted_by_id == user.id


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"tech_sme": False}, "tech_sme"),
    ({"kind": OrganisationKind.UNIVERSITY}, "kind"),
    ({"city": "510700"}, "city"),  # Mianyang, when the programme is for Chengdu only
])
def test_ineligible_holders_get_no_voucher(db, overrides, reason):
    programme = make_programme(db, holder_cities=["510100"])
    holder = make_holder(db, **overrides)
    before = row_counts(db, *VOUCHER_TABLES)

    with pytest.raises(vouchers.HolderNotEligible) as caught:
        make_voucher(db, programme, holder)

    assert caught.value.details["reason"] == reason
    assert caught.value.code == "holder_not_eligible"
    assert row_counts(db, *VOUCHER_TABLES) == before


def test_grants_stop_when_the_budget_is_used_up(db):
    programme = make_programme(db, budget=D("500.00"))
    first, second = make_holder(db), make_holder(db)
    voucher = make_voucher(db, programme, first)
    charge = make_charge(db, first, make_resource(db))
    vouchers.apply_voucher(db, None, voucher.id, charge.lines[0].id, on=TODAY)  # 50 % of 1,000: all of it

    with pytest.raises(vouchers.BudgetExhausted):
        make_voucher(db, programme, second)


def test_finance_of_the_issuer_may_grant_others_may_not(db):
    issuer = make_organisation(db, kind=OrganisationKind.GOVERNMENT)
    programme = make_programme(db, issuer_org_id=issuer.id)
    holder = make_holder(db)

    granted = vouchers.grant_voucher(db, make_user(db, roles=(Role.FINANCE,), organisation=issuer), programme.id,
                                     holder.id, on=GRANTED_ON)
    assert granted.holder_id == holder.id
    with pytest.raises(Forbidden):
        vouchers.grant_voucher(db, make_user(db, roles=(Role.FINANCE,)), programme.id, holder.id, on=GRANTED_ON)


# --- applying a voucher ----------------------------------------------------------------------------------------------

@pytest.fixture
def setup(db):
    """A programme, a holder with a voucher and a user, and a provider's resource."""
    programme, holder = make_programme(db), make_holder(db)
    voucher = make_voucher(db, programme, holder)
    user = make_user(db, organisation=holder)
    resource = make_resource(db, category=ServiceCategory.TESTING)
    return programme, holder, voucher, user, resource


def test_applying_covers_half_of_the_eligible_fee(db, setup):
    programme, holder, voucher, user, resource = setup
    charge = make_charge(db, holder, resource, lines=((ChargeLineKind.USAGE, "1234.57"),))

    application = vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY)

    assert application.amount == D("617.28")  # 617.285 rounded down: never more than 50 %
    assert application.eligible_fee == D("1234.57")
    assert application.provider_id == resource.facility.owner_id
    db.expire_all()
    assert db.get(Voucher, voucher.id).balance == D("200000.00") - D("617.28")
    assert db.get(VoucherProgramme, programme.id).budget_used == D("617.28")
    assert db.get(VoucherCapUsage, (programme.id, holder.id, 2026)).used == D("617.28")
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "voucher.applied"))
    assert entry.actor_id == user.id
    assert entry.data["amount"] == "617.28"


def test_applying_to_all_eligible_lines_of_a_charge(db, setup):
    _, holder, voucher, user, resource = setup
    charge = make_charge(db, holder, resource, lines=(
        (ChargeLineKind.USAGE, "800.00"), (ChargeLineKind.SETUP, "100.00"), (ChargeLineKind.NO_SHOW, "50.00"),
        (ChargeLineKind.TECHNICIAN, "200.00")))

    applied = vouchers.apply_voucher_to_charge(db, user, voucher.id, charge.id, on=TODAY)

    assert [a.amount for a in applied] == [D("400.00"), D("50.00"), D("100.00")]  # not the no-show fee
    assert vouchers.eligible_lines(db, charge.id) == []


def test_the_balance_limits_the_last_application(db, setup):
    programme, holder, _, user, resource = setup
    small = make_voucher(db, programme, holder, amount=D("300.00"))
    first = make_charge(db, holder, resource, lines=((ChargeLineKind.USAGE, "400.00"),))
    second = make_charge(db, holder, resource, lines=((ChargeLineKind.USAGE, "400.00"),))

    a = vouchers.apply_voucher(db, user, small.id, first.lines[0].id, on=TODAY)
    b = vouchers.apply_voucher(db, user, small.id, second.lines[0].id, on=TODAY)

    assert (a.amount, b.amount) == (D("200.00"), D("100.00"))
    db.refresh(small)
    assert small.balance == D("0.00")
    third = make_charge(db, holder, resource)
    before = row_counts(db, *VOUCHER_TABLES)
    with pytest.raises(vouchers.VoucherExhausted) as caught:
        vouchers.apply_voucher(db, user, small.id, third.lines[0].id, on=TODAY)
    assert caught.value.code == "voucher_exhausted"
    assert row_counts(db, *VOUCHER_TABLES) == before


def _refused(db, call, error, code):
    """The call raises `error` with `code`, and no row of the voucher tables was written."""
    before = row_counts(db, *VOUCHER_TABLES)
    state = db.execute(text("SELECT id, balance FROM voucher ORDER BY id")).all()
    with pytest.raises(error) as caught:
        call()
    assert caught.value.code == code
    assert caught.value.render()  # a message in English, translated by the web layer
    db.expire_all()
    assert row_counts(db, *VOUCHER_TABLES) == before
    assert db.execute(text("SELECT id, balance FROM voucher ORDER BY id")).all() == state
    return caught.value


def test_a_line_is_subsidised_only_once(db, setup):
    _, holder, voucher, user, resource = setup
    charge = make_charge(db, holder, resource)
    vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY)
    other_voucher = make_voucher(db, make_programme(db), holder)

    for vid in (voucher.id, other_voucher.id):
        _refused(db, lambda v=vid: vouchers.apply_voucher(db, user, v, charge.lines[0].id, on=TODAY),
                 vouchers.ChargeLineAlreadySubsidised, "charge_line_already_subsidised")


def test_the_unique_constraint_backs_the_once_rule(db, setup):
    _, holder, voucher, user, resource = setup
    charge = make_charge(db, holder, resource)
    application = vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY)
    copy = {c.name: getattr(application, c.key) for c in VoucherApplication.__table__.columns if c.name != "id"}

    with pytest.raises(sqlalchemy.exc.IntegrityError), db.begin_nested():
        db.execute(VoucherApplication.__table__.insert().values(**copy))


def test_another_holders_charge_is_refused(db, setup):
    _, _, voucher, user, resource = setup
    charge = make_charge(db, make_holder(db), resource)

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY),
             vouchers.NotHoldersCharge, "not_holders_charge")


def test_users_of_another_organisation_cannot_use_the_voucher(db, setup):
    _, holder, voucher, _, resource = setup
    charge = make_charge(db, holder, resource)
    stranger = make_user(db)

    _refused(db, lambda: vouchers.apply_voucher(db, stranger, voucher.id, charge.lines[0].id, on=TODAY),
             NotFound, "not_found")


def test_an_expired_voucher_is_refused(db, setup):
    _, holder, voucher, user, resource = setup
    charge = make_charge(db, holder, resource, service_date=date(2026, 5, 30))
    last_day = voucher.valid_until

    error = _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id,
                                                        on=last_day + timedelta(days=1)),
                     vouchers.VoucherExpired, "voucher_expired")
    assert "2026-06-01" in error.render()
    assert vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=last_day).amount == D("500.00")


def test_a_service_outside_the_validity_is_refused(db, setup):
    _, holder, voucher, user, resource = setup
    before_grant = make_charge(db, holder, resource, service_date=GRANTED_ON - timedelta(days=1))

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, before_grant.lines[0].id, on=TODAY),
             vouchers.ServiceOutsideValidity, "service_outside_validity")


def test_the_holders_own_facility_is_a_related_party(db, setup):
    _, holder, voucher, user, _ = setup
    own = make_resource(db, facility=make_facility(db, owner=holder))
    charge = make_charge(db, holder, own)

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY),
             vouchers.RelatedParty, "related_party")


@pytest.mark.parametrize("declared_by", ["holder", "provider"])
def test_a_declared_affiliation_either_way_is_a_related_party(db, setup, declared_by):
    _, holder, voucher, user, resource = setup
    provider_id = resource.facility.owner_id
    pair = (holder.id, provider_id) if declared_by == "holder" else (provider_id, holder.id)
    db.add(Affiliation(organisation_id=pair[0], related_id=pair[1]))
    db.flush()
    charge = make_charge(db, holder, resource)

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY),
             vouchers.RelatedParty, "related_party")


def test_an_ineligible_category_is_refused(db):
    programme = make_programme(db, eligible_categories=[ServiceCategory.RESEARCH_DEVELOPMENT.value])
    holder = make_holder(db)
    voucher, user = make_voucher(db, programme, holder), make_user(db, organisation=holder)
    charge = make_charge(db, holder, make_resource(db, category=ServiceCategory.TESTING))

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY),
             vouchers.CategoryNotEligible, "category_not_eligible")


def test_a_resource_not_open_to_vouchers_is_refused(db, setup):
    _, holder, voucher, user, _ = setup
    charge = make_charge(db, holder, make_resource(db, voucher_eligible=False))

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY),
             vouchers.ResourceNotEligible, "resource_not_eligible")


def test_excluded_services_are_refused(db):
    routine = make_resource(db, category=ServiceCategory.TESTING)  # routine production testing
    programme = make_programme(db, excluded_resource_ids={routine.id: "routine production testing"})
    holder = make_holder(db)
    voucher, user = make_voucher(db, programme, holder), make_user(db, organisation=holder)
    charge = make_charge(db, holder, routine)

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY),
             vouchers.ServiceExcluded, "service_excluded")


def test_a_programme_naming_its_resources_covers_only_those(db):
    named, other = make_resource(db), make_resource(db)
    programme = make_programme(db, included_resource_ids=[named.id])
    holder = make_holder(db)
    voucher, user = make_voucher(db, programme, holder), make_user(db, organisation=holder)

    ok = vouchers.apply_voucher(db, user, voucher.id, make_charge(db, holder, named).lines[0].id, on=TODAY)
    assert ok.amount == D("500.00")
    charge = make_charge(db, holder, other)
    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY),
             vouchers.ResourceNotEligible, "resource_not_eligible")


@pytest.mark.parametrize("kind", [ChargeLineKind.NO_SHOW, ChargeLineKind.LATE_CANCELLATION])
def test_penalty_lines_are_refused(db, setup, kind):
    _, holder, voucher, user, resource = setup
    charge = make_charge(db, holder, resource, lines=((kind, "300.00"),))

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY),
             vouchers.LineNotEligible, "line_not_eligible")


def test_credit_notes_are_refused(db, setup):
    _, holder, voucher, user, resource = setup
    original = make_charge(db, holder, resource)
    credit = make_charge(db, holder, resource, lines=((ChargeLineKind.USAGE, "-1000.00"),),
                         kind=ChargeKind.CREDIT_NOTE, credit_of_id=original.id)

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, credit.lines[0].id, on=TODAY),
             vouchers.LineNotEligible, "line_not_eligible")


def test_a_closed_programme_is_refused(db, setup):
    programme, holder, voucher, user, resource = setup
    charge = make_charge(db, holder, resource)
    programme.active = False
    db.flush()

    _refused(db, lambda: vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY),
             vouchers.ProgrammeInactive, "programme_inactive")


def test_unknown_voucher_and_line(db, setup):
    _, _, voucher, user, _ = setup
    with pytest.raises(NotFound):
        vouchers.apply_voucher(db, user, 999_999, 1, on=TODAY)
    with pytest.raises(NotFound):
        vouchers.apply_voucher(db, user, voucher.id, 999_999, on=TODAY)


# --- the annual cap and the budget ---------------------------------------------------------------------------------

def test_the_annual_cap_spans_all_vouchers_of_a_holder(db):
    programme = make_programme(db, annual_cap=D("1000.00"), voucher_amount=D("800.00"))
    holder = make_holder(db)
    user = make_user(db, organisation=holder)
    first, second = make_voucher(db, programme, holder), make_voucher(db, programme, holder)
    resource = make_resource(db)
    fees = [make_charge(db, holder, resource, lines=((ChargeLineKind.USAGE, "1200.00"),)) for _ in range(3)]

    a = vouchers.apply_voucher(db, user, first.id, fees[0].lines[0].id, on=TODAY)   # 600 of 800
    b = vouchers.apply_voucher(db, user, second.id, fees[1].lines[0].id, on=TODAY)  # 400: the cap's rest

    assert (a.amount, b.amount) == (D("600.00"), D("400.00"))
    db.refresh(second)
    assert second.balance == D("400.00")  # money left on the voucher, but not under the cap
    _refused(db, lambda: vouchers.apply_voucher(db, user, first.id, fees[2].lines[0].id, on=TODAY),
             vouchers.AnnualCapReached, "voucher_annual_cap_reached")
    summary = vouchers.summarise(db, second, on=TODAY)
    assert summary.cap_remaining == D("0.00")


def test_the_cap_starts_again_in_a_new_year(db):
    programme = make_programme(db, annual_cap=D("100.00"), voucher_amount=D("100.00"), validity_months=12)
    holder = make_holder(db)
    user = make_user(db, organisation=holder)
    voucher = make_voucher(db, programme, holder, on=date(2026, 11, 2), amount=D("100.00"))
    second = make_voucher(db, programme, holder, on=date(2026, 11, 2), amount=D("100.00"))
    resource = make_resource(db)
    december = make_charge(db, holder, resource, service_date=date(2026, 12, 1))
    january = make_charge(db, holder, resource, service_date=date(2027, 1, 5))

    vouchers.apply_voucher(db, user, voucher.id, december.lines[0].id, on=date(2026, 12, 2))
    in_2027 = vouchers.apply_voucher(db, user, second.id, january.lines[0].id, on=date(2027, 1, 6))

    assert in_2027.amount == D("100.00")
    assert in_2027.cap_year == 2027


def test_the_budget_is_first_come_first_served_across_holders(db):
    programme = make_programme(db, budget=D("1000.00"))
    resource = make_resource(db)
    holders = [make_holder(db) for _ in range(3)]
    granted = [make_voucher(db, programme, h) for h in holders]
    charges = [make_charge(db, h, resource, lines=((ChargeLineKind.USAGE, "1600.00"),)) for h in holders]

    first = vouchers.apply_voucher(db, None, granted[0].id, charges[0].lines[0].id, on=TODAY)
    second = vouchers.apply_voucher(db, None, granted[1].id, charges[1].lines[0].id, on=TODAY)

    assert (first.amount, second.amount) == (D("800.00"), D("200.00"))  # the second gets what is left
    _refused(db, lambda: vouchers.apply_voucher(db, None, granted[2].id, charges[2].lines[0].id, on=TODAY),
             vouchers.BudgetExhausted, "voucher_budget_exhausted")
    db.expire_all()
    assert db.get(VoucherProgramme, programme.id).budget_used == D("1000.00")


@pytest.mark.parametrize(("table", "assignment"), [
    ("voucher", "balance = -1"),
    ("voucher", "balance = amount + 1"),
    ("voucher_programme", "budget_used = budget + 1"),
    ("voucher_cap_usage", "used = cap + 1"),
])
def test_constraints_are_the_last_line_of_defence(db, setup, table, assignment):
    _, holder, voucher, user, resource = setup
    vouchers.apply_voucher(db, user, voucher.id, make_charge(db, holder, resource).lines[0].id, on=TODAY)

    with pytest.raises(sqlalchemy.exc.IntegrityError), db.begin_nested():
        db.execute(text(f"UPDATE {table} SET {assignment}"))  # noqa: S608 -- constant test parameters


# --- what the holder sees ---------------------------------------------------------------------------------------------

def test_the_holder_sees_balance_expiry_and_status(db, setup):
    programme, holder, voucher, user, resource = setup
    vouchers.apply_voucher(db, user, voucher.id, make_charge(db, holder, resource).lines[0].id, on=TODAY)
    old = make_voucher(db, programme, holder, on=date(2025, 12, 1), amount=D("10.00"))

    summaries = vouchers.vouchers_of(db, holder.id, on=TODAY)

    assert [s.voucher.id for s in summaries] == [old.id, voucher.id]  # soonest expiry first
    expired, active = summaries
    assert (expired.status, expired.days_left) == ("expired", 0)
    assert (active.status, active.balance, active.used, active.applications) == (
        "active", D("199500.00"), D("500.00"), 1)
    assert active.days_left == (date(2026, 6, 1) - TODAY).days + 1
    assert active.cap_remaining == D("199500.00")
    assert [s.voucher.id for s in vouchers.vouchers_of(db, holder.id, on=TODAY, include_expired=False)] == \
        [voucher.id]


def test_a_preview_says_what_applying_would_cover_and_writes_nothing(db, setup):
    _, holder, voucher, user, resource = setup
    charge = make_charge(db, holder, resource, lines=((ChargeLineKind.USAGE, "99.99"),))
    before = row_counts(db, *VOUCHER_TABLES)

    covered = vouchers.preview_application(db, user, voucher.id, charge.lines[0].id, on=TODAY)

    assert (covered.amount, covered.limited_by) == (D("49.99"), "ratio")
    assert row_counts(db, *VOUCHER_TABLES) == before


def test_a_subsidised_charge_cannot_be_reversed_by_a_credit_note(db, setup):
    """A credit note would refund the charge but leave the voucher's subsidy spent (and claimable): refused, with
    nothing written, until subsidies can be given back."""
    from billing.charges import issue_credit_note
    from billing.errors import SubsidisedCharge
    from billing.models import Charge

    _, holder, voucher, user, resource = setup
    charge = make_charge(db, holder, resource)
    vouchers.apply_voucher(db, user, voucher.id, charge.lines[0].id, on=TODAY)
    finance = make_user(db, roles=(Role.FINANCE,))
    before = row_counts(db, Charge, *VOUCHER_TABLES)

    with pytest.raises(SubsidisedCharge) as caught:
        issue_credit_note(db, finance, charge.id, "customer complaint")

    assert caught.value.code == "subsidised_charge"
    assert row_counts(db, Charge, *VOUCHER_TABLES) == before
