"""Voucher claims: gathering applications with their evidence, the way draft → submitted → approved or rejected →
paid, immutability once submitted (services and database triggers), the audit trail, and the telemetry digest."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy.exc
from sqlalchemy import select, text

from billing import claims, evidence, vouchers
from billing.voucher_models import ClaimState, RedemptionMode, VoucherClaim, VoucherClaimItem
from core.accounts.models import Role
from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput
from devices.models import UsageSession
from tests.billing.voucher_factories import (
    SERVICE_DAY,
    VOUCHER_TABLES,
    make_charge,
    make_holder,
    make_programme,
    make_voucher,
    period_of,
)
from tests.factories import make_device, make_reservation, make_resource, make_user, row_counts

D = Decimal
TODAY = date(2026, 3, 20)
START = datetime(2026, 3, 16, 1, 0, tzinfo=UTC)
START_NS = int(START.timestamp()) * 1_000_000_000
HOUR_NS = 3600 * 1_000_000_000


def points(n: int = 5, *, power: float = 812.5) -> list[evidence.TelemetryPoint]:
    """Samples every 10 minutes from START: power and a running flag."""
    out: list[evidence.TelemetryPoint] = []
    for i in range(n):
        ts = START_NS + i * 600 * 1_000_000_000
        out += [(ts, "power_w", power + i), (ts, "running", True)]
    return out


# --- the digest, without a database -------------------------------------------------------------------------------

def test_the_canonical_serialisation_is_documented_and_stable():
    lines = list(evidence.canonical_lines({"sem-1": [(2, "power_w", 3), (1, "running", False), (1, "a", 1e-7)]}))

    assert lines == [b"sem-1\t1\ta\t1e-07\n", b"sem-1\t1\trunning\tfalse\n", b"sem-1\t2\tpower_w\t3.0\n"]


def test_the_digest_does_not_depend_on_the_order_of_the_points():
    window = evidence.SessionWindow("sem-1", START_NS, START_NS + HOUR_NS)
    ordered = points()

    first = evidence.session_digest(window, ordered)
    again = evidence.session_digest(window, list(reversed(ordered)))

    assert first == again
    assert first.point_count == 10
    assert len(first.sha256) == 64


def test_the_digest_detects_a_changed_an_added_or_a_missing_point():
    window = evidence.SessionWindow("sem-1", START_NS, START_NS + HOUR_NS)
    original = evidence.session_digest(window, points()).sha256
    changed = points()
    changed[0] = (changed[0][0], "power_w", 812.6)

    assert evidence.session_digest(window, changed).sha256 != original
    assert evidence.session_digest(window, points()[1:]).sha256 != original
    assert evidence.session_digest(window, [*points(), (START_NS + 1, "temp_c", 21.0)]).sha256 != original


def test_points_outside_the_session_window_do_not_count():
    window = evidence.SessionWindow("sem-1", START_NS, START_NS + HOUR_NS)
    outside = [(START_NS - 1, "power_w", 1.0), (START_NS + HOUR_NS, "power_w", 1.0)]

    assert evidence.session_digest(window, points() + outside) == evidence.session_digest(window, points())


def test_integers_and_floats_of_the_same_value_digest_alike_and_non_finite_values_are_refused():
    assert evidence.canonical_value(3) == evidence.canonical_value(3.0) == "3.0"
    assert evidence.canonical_value(True) == "true"
    with pytest.raises(ValueError, match="finite"):
        evidence.canonical_value(math.nan)


def test_flatten_turns_store_samples_into_triples():
    assert evidence.flatten([(1, {"power_w": 2.0, "running": True})]) == [(1, "power_w", 2.0), (1, "running", True)]


# --- claims ----------------------------------------------------------------------------------------------------------

class World:
    """A 通兑 programme, a provider with a lab manager, a holder with a user and a voucher, one measured
    reservation charged and subsidised in March 2026."""

    def __init__(self, db, mode: RedemptionMode = RedemptionMode.PROVIDER_CLAIMS):
        self.programme = make_programme(db, redemption_mode=mode)
        self.holder = make_holder(db)
        self.customer = make_user(db, organisation=self.holder)
        self.resource = make_resource(db)
        self.provider_id = self.resource.facility.owner_id
        self.provider_user = make_user(db, roles=(Role.LAB_MANAGER,), organisation=self.resource.facility.owner)
        self.admin = make_user(db, roles=(Role.ADMIN,))
        self.device = make_device(db, resource=self.resource)
        reservation = make_reservation(db, resource=self.resource, user=self.customer, starts_at=START,
                                       ends_at=datetime(2026, 3, 16, 3, 0, tzinfo=UTC))
        self.session = UsageSession(device_pk=self.device.id, start_ns=START_NS, end_ns=START_NS + HOUR_NS,
                                    started_at=START, ended_at=datetime(2026, 3, 16, 2, 0, tzinfo=UTC),
                                    start_decided_ns=START_NS, end_decided_ns=START_NS + HOUR_NS)
        db.add(self.session)
        db.flush()
        self.voucher = make_voucher(db, self.programme, self.holder)
        self.charge = make_charge(db, self.holder, self.resource, reservation_id=reservation.id)
        self.application = vouchers.apply_voucher(db, self.customer, self.voucher.id, self.charge.lines[0].id,
                                                  on=TODAY)
        self.period = period_of(db, SERVICE_DAY)
        self.claimant = self.provider_user if mode == RedemptionMode.PROVIDER_CLAIMS else self.customer

    def points_by_session(self, **kwargs) -> dict[int, list]:
        return {self.session.id: points(**kwargs)}

    def complete_draft(self, db) -> VoucherClaim:
        claim = claims.create_claim(db, self.claimant, self.programme.id, self.period.id)
        item = claim.items[0]
        claims.record_evidence(db, self.claimant, claim.id, self.points_by_session())
        claims.set_item_references(db, self.claimant, item.id, invoice_number="INV-2026-0001",
                                   payment_reference="BANK-REF-77")
        claims.confirm_item(db, self.provider_user, item.id)
        claims.confirm_item(db, self.customer, item.id)
        return claim


def actions(db, claim: VoucherClaim) -> list[str]:
    return list(db.scalars(select(AuditEntry.action).where(AuditEntry.target_type == "voucher_claim",
                                                           AuditEntry.target_id == str(claim.id))
                           .order_by(AuditEntry.id)))


def test_a_claim_goes_from_draft_to_paid_with_its_evidence_and_every_step_audited(db):
    world = World(db)

    claim = claims.create_claim(db, world.provider_user, world.programme.id, world.period.id)
    assert (claim.state, claim.claimant_id, claim.mode) == (ClaimState.DRAFT, world.provider_id,
                                                            RedemptionMode.PROVIDER_CLAIMS)
    assert claim.total == D("500.00")
    [item] = claim.items
    assert item.reservation_id == world.charge.reservation_id
    assert [s["usage_session_id"] for s in item.sessions] == [world.session.id]
    assert claims.evidence_windows(claim) == {
        world.session.id: evidence.SessionWindow(world.device.device_id, START_NS, START_NS + HOUR_NS)}

    claims.record_evidence(db, world.provider_user, claim.id, world.points_by_session())
    claims.set_item_references(db, world.provider_user, item.id, invoice_number="INV-1", payment_reference="PAY-1")
    claims.confirm_item(db, world.provider_user, item.id)
    claims.confirm_item(db, world.customer, item.id)
    assert item.sessions[0]["point_count"] == 10
    assert item.provider_confirmed_by_id == world.provider_user.id
    assert item.customer_confirmed_by_id == world.customer.id
    assert item.provider_confirmed_at is not None
    assert item.customer_confirmed_at is not None

    claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)
    claims.approve_claim(db, world.admin, claim.id)
    claims.mark_claim_paid(db, world.admin, claim.id, "PROV-TRANSFER-9")

    assert claim.state == ClaimState.PAID
    assert claim.payout_reference == "PROV-TRANSFER-9"
    assert actions(db, claim) == [
        "voucher_claim.created", "voucher_claim.evidence_recorded", "voucher_claim.references_set",
        "voucher_claim.item_confirmed", "voucher_claim.item_confirmed", "voucher_claim.submitted",
        "voucher_claim.approved", "voucher_claim.paid"]


def test_in_tongyong_mode_the_enterprise_claims(db):
    world = World(db, RedemptionMode.ENTERPRISE_REIMBURSED)

    claim = claims.create_claim(db, world.customer, world.programme.id, world.period.id)

    assert claim.claimant_id == world.holder.id
    with pytest.raises(claims.NothingToClaim):  # the provider has nothing to claim in this mode
        claims.create_claim(db, world.provider_user, world.programme.id, world.period.id)


def test_an_application_is_claimed_once(db):
    world = World(db)
    claims.create_claim(db, world.provider_user, world.programme.id, world.period.id)
    before = row_counts(db, *VOUCHER_TABLES)

    with pytest.raises(claims.NothingToClaim) as caught:
        claims.create_claim(db, world.provider_user, world.programme.id, world.period.id)

    assert caught.value.code == "nothing_to_claim"
    assert row_counts(db, *VOUCHER_TABLES) == before


def test_an_incomplete_claim_cannot_be_submitted(db):
    world = World(db)
    claim = claims.create_claim(db, world.provider_user, world.programme.id, world.period.id)
    claims.confirm_item(db, world.provider_user, claim.items[0].id)
    before = row_counts(db, *VOUCHER_TABLES)

    with pytest.raises(claims.ClaimIncomplete) as caught:
        claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)

    assert caught.value.code == "claim_incomplete"
    assert caught.value.details["missing"] == [{"item_id": claim.items[0].id, "missing": [
        "invoice_number", "payment_reference", "customer_confirmation", "telemetry_digest"]}]
    assert claim.state == ClaimState.DRAFT
    assert row_counts(db, *VOUCHER_TABLES) == before


def test_after_the_claim_deadline_nothing_is_submitted(db):
    world = World(db)
    claim = world.complete_draft(db)

    with pytest.raises(claims.ClaimDeadlinePassed):
        claims.submit_claim(db, world.provider_user, claim.id, on=date(2027, 4, 1))


def test_a_submitted_claim_refuses_every_edit_and_nothing_changes(db):
    world = World(db)
    claim = world.complete_draft(db)
    claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)
    item = claim.items[0]
    before = row_counts(db, *VOUCHER_TABLES)
    snapshot = db.execute(text("SELECT * FROM voucher_claim_item ORDER BY id")).all()

    edits = [
        lambda: claims.set_item_references(db, world.provider_user, item.id, invoice_number="X",
                                           payment_reference="Y"),
        lambda: claims.record_evidence(db, world.provider_user, claim.id, world.points_by_session(power=1.0)),
        lambda: claims.remove_item(db, world.provider_user, item.id),
        lambda: claims.confirm_item(db, world.customer, item.id),
    ]
    for edit in edits:
        with pytest.raises(claims.ClaimNotEditable) as caught:
            edit()
        assert caught.value.code == "claim_not_editable"
    with pytest.raises(claims.InvalidClaimTransition) as caught:
        claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)
    assert caught.value.details == {"state": "submitted", "action": "submit"}

    db.expire_all()
    assert row_counts(db, *VOUCHER_TABLES) == before
    assert db.execute(text("SELECT * FROM voucher_claim_item ORDER BY id")).all() == snapshot


@pytest.mark.parametrize("statement", [
    "UPDATE voucher_claim_item SET invoice_number = 'forged'",
    "DELETE FROM voucher_claim_item",
])
def test_the_database_refuses_changes_to_the_items_of_a_submitted_claim(db, statement):
    world = World(db)
    claim = world.complete_draft(db)
    claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)

    with pytest.raises(sqlalchemy.exc.DatabaseError, match="frozen"), db.begin_nested():
        db.execute(text(statement))


def test_the_database_refuses_new_items_in_a_submitted_claim(db):
    world = World(db)
    claim = world.complete_draft(db)
    claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)
    second = make_charge(db, world.holder, world.resource)
    application = vouchers.apply_voucher(db, world.customer, world.voucher.id, second.lines[0].id, on=TODAY)

    db.add(VoucherClaimItem(claim_id=claim.id, application_id=application.id, charge_id=second.id,
                            holder_id=world.holder.id, provider_id=world.provider_id, service_date=SERVICE_DAY,
                            eligible_fee=D("1000.00"), amount=D("500.00")))

    with pytest.raises(sqlalchemy.exc.DatabaseError, match="frozen"), db.begin_nested():
        db.flush()


def test_a_draft_item_can_be_removed_and_claimed_again(db):
    world = World(db)
    claim = claims.create_claim(db, world.provider_user, world.programme.id, world.period.id)

    claims.remove_item(db, world.provider_user, claim.items[0].id)

    assert claim.items == []
    assert claim.total == D("0.00")
    again = claims.create_claim(db, world.provider_user, world.programme.id, world.period.id)
    assert len(again.items) == 1


def test_a_rejection_needs_a_reason_and_ends_the_claim(db):
    world = World(db)
    claim = world.complete_draft(db)
    claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)

    with pytest.raises(InvalidInput):
        claims.reject_claim(db, world.admin, claim.id, "  ")
    claims.reject_claim(db, world.admin, claim.id, "The invoice does not match the charge.")

    assert (claim.state, claim.rejection_reason) == (ClaimState.REJECTED, "The invoice does not match the charge.")
    for call in (lambda: claims.approve_claim(db, world.admin, claim.id),
                 lambda: claims.mark_claim_paid(db, world.admin, claim.id, "X")):
        with pytest.raises(claims.InvalidClaimTransition):
            call()
    assert actions(db, claim)[-1] == "voucher_claim.rejected"


def test_only_approved_claims_are_paid(db):
    world = World(db)
    claim = world.complete_draft(db)
    claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)

    with pytest.raises(claims.InvalidClaimTransition) as caught:
        claims.mark_claim_paid(db, world.admin, claim.id, "REF")

    assert caught.value.code == "invalid_claim_transition"
    assert "submitted" in caught.value.render()


def test_who_may_do_what(db):
    world = World(db)
    stranger = make_user(db, roles=(Role.FINANCE,))
    researcher_at_provider = make_user(db, organisation=world.resource.facility.owner)

    for user in (stranger, researcher_at_provider, world.customer):
        with pytest.raises(Forbidden):
            claims.create_claim(db, user, world.programme.id, world.period.id, claimant_id=world.provider_id)
    with pytest.raises(claims.NothingToClaim):  # for their own organisation they may, but it has nothing
        claims.create_claim(db, stranger, world.programme.id, world.period.id)
    claim = world.complete_draft(db)
    with pytest.raises(Forbidden):
        claims.confirm_item(db, stranger, claim.items[0].id)
    claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)
    with pytest.raises(Forbidden):  # the claimant does not decide its own claim
        claims.approve_claim(db, world.provider_user, claim.id)


def test_the_evidence_can_be_verified_later_and_a_changed_point_is_found(db):
    world = World(db)
    claim = world.complete_draft(db)
    claims.submit_claim(db, world.provider_user, claim.id, on=TODAY)

    assert claims.verify_claim_evidence(db, claim, world.points_by_session()) == []
    tampered = world.points_by_session()
    tampered[world.session.id][3] = (tampered[world.session.id][3][0], "running", False)

    mismatches = claims.verify_claim_evidence(db, claim, tampered)

    assert [(m.item_id, m.usage_session_id) for m in mismatches] == [
        (claim.items[0].id, world.session.id), (claim.items[0].id, None)]
    assert mismatches[0].recorded_count == mismatches[0].actual_count == 10
    lost = claims.verify_claim_evidence(db, claim, {})
    assert lost[0].actual_count == 0
