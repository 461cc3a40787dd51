"""Voucher claims (兑付申请): the subsidies of one programme and billing period, gathered with their evidence,
and their way draft → submitted → approved or rejected → paid.

Who claims depends on the programme's redemption mode: the provider (the facility owner) in 通兑 mode, the
holder (the enterprise) in 通用 mode. Each item carries its evidence: the reservation, the measured usage
sessions with a SHA-256 digest of their telemetry (billing.evidence; the caller reads the points from the
time-series store and passes them in), the invoice number, the bank payment reference, and the
service-result confirmation signed off in the app by a user of each party, each with its time.

A submitted claim is immutable: the services refuse every edit (`claim_not_editable`), and database triggers
refuse any change to its items (billing.voucher_models). Every change is audited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.evidence import SessionWindow, TelemetryPoint, session_digest, sessions_digest
from billing.models import BillingPeriod, Charge
from billing.voucher_models import (
    ClaimState,
    RedemptionMode,
    VoucherApplication,
    VoucherClaim,
    VoucherClaimItem,
    VoucherProgramme,
)
from billing.vouchers import VoucherRefused, can_administer, get_programme, lock_programme, locked_row, today
from booking.models import Reservation
from core import audit
from core.accounts.models import Role, User
from core.errors import N_, Conflict, Forbidden, InvalidInput, Message, NotFound
from core.timeutil import utcnow
from devices.models import Device, UsageSession

# --- errors -----------------------------------------------------------------------------------------------------


class ClaimNotEditable(Conflict):
    code = "claim_not_editable"
    message = N_("This claim has been submitted and can no longer be changed.")


class InvalidClaimTransition(Conflict):
    code = "invalid_claim_transition"
    message = N_("Not possible: the claim is %(state)s.")

    STATES: ClassVar[dict[str, str]] = {"draft": N_("a draft"), "submitted": N_("submitted"),
                                        "approved": N_("approved"),
                                        "rejected": N_("rejected"), "paid": N_("paid")}

    def __init__(self, state: ClaimState, action: str):
        super().__init__(state=Message(self.STATES[state.value]),
                         details={"state": state.value, "action": action})


class NothingToClaim(VoucherRefused):
    code = "nothing_to_claim"
    message = N_("There are no unclaimed voucher applications of this programme and period for you.")


class ClaimIncomplete(VoucherRefused):
    code = "claim_incomplete"
    message = N_("The claim's evidence is incomplete; see the list of what is missing.")

    def __init__(self, missing: list[dict[str, Any]]):
        super().__init__()
        self.details["missing"] = missing


class ClaimDeadlinePassed(VoucherRefused):
    code = "claim_deadline_passed"
    message = N_("The programme's claim deadline (%(deadline)s) has passed.")


# --- who may do what ----------------------------------------------------------------------------------------------

def claimant_of(programme: VoucherProgramme, application: VoucherApplication) -> int:
    return application.provider_id if programme.redemption_mode == RedemptionMode.PROVIDER_CLAIMS \
        else application.holder_id


def _may_act_for(actor: User | None, org_id: int, mode: RedemptionMode) -> bool:
    if actor is None or actor.has_role(Role.ADMIN):
        return True
    if actor.organisation_id != org_id:
        return False
    # a provider's claim is finance work; an enterprise reclaiming its own subsidy may be any of its users
    return mode == RedemptionMode.ENTERPRISE_REIMBURSED or actor.has_role(Role.FINANCE, Role.LAB_MANAGER)


def can_see_claim(actor: User | None, claim: VoucherClaim) -> bool:
    return (_may_act_for(actor, claim.claimant_id, claim.mode) or can_administer(actor, claim.programme)
            or (actor is not None and actor.organisation_id == claim.claimant_id))


def get_claim(db: Session, actor: User | None, claim_id: int) -> VoucherClaim:
    claim = db.get(VoucherClaim, claim_id)
    if claim is None or not can_see_claim(actor, claim):
        raise NotFound("voucher_claim", claim_id)
    return claim


def _claim_for_edit(db: Session, actor: User | None, claim_id: int) -> VoucherClaim:
    """The claim, locked, for a change by its claimant while it is a draft."""
    claim = get_claim(db, actor, claim_id)
    if not _may_act_for(actor, claim.claimant_id, claim.mode):
        raise Forbidden()
    claim = locked_row(db, VoucherClaim, claim.id)
    if claim.state != ClaimState.DRAFT:
        raise ClaimNotEditable(details={"state": claim.state.value})
    return claim


def _item_for_edit(db: Session, actor: User | None, item_id: int, *,
                   claimant_only: bool = True) -> tuple[VoucherClaim, VoucherClaimItem]:
    item = db.get(VoucherClaimItem, item_id)
    if item is None:
        raise NotFound("voucher_claim_item", item_id)
    claim = get_claim(db, actor, item.claim_id) if claimant_only else item.claim
    if claimant_only and not _may_act_for(actor, claim.claimant_id, claim.mode):
        raise Forbidden()
    claim = locked_row(db, VoucherClaim, claim.id)
    if claim.state != ClaimState.DRAFT:
        raise ClaimNotEditable(details={"state": claim.state.value})
    return claim, item


# --- building a claim ----------------------------------------------------------------------------------------

def measured_sessions(db: Session, charge: Charge) -> list[tuple[UsageSession, Device]]:
    """The closed usage sessions behind a charge: its own session (unbooked use), or the sessions on its
    resource's devices that overlap the reservation's window."""
    query = select(UsageSession, Device).join(Device, UsageSession.device_pk == Device.id).where(
        UsageSession.end_ns.is_not(None))
    if charge.usage_session_id is not None:
        query = query.where(UsageSession.id == charge.usage_session_id)
    elif charge.reservation_id is not None:
        reservation = db.get(Reservation, charge.reservation_id)
        if reservation is None:
            return []
        query = query.where(Device.resource_id == charge.resource_id,
                            UsageSession.started_at < reservation.ends_at,
                            UsageSession.ended_at > reservation.starts_at)
    else:
        return []
    return [(row[0], row[1]) for row in db.execute(query.order_by(Device.device_id, UsageSession.start_ns))]


def _session_entry(session: UsageSession, device: Device) -> dict[str, Any]:
    return {"usage_session_id": session.id, "device_id": device.device_id, "start_ns": session.start_ns,
            "end_ns": session.end_ns, "point_count": None, "digest": None}


def _window(entry: Mapping[str, Any]) -> SessionWindow:
    return SessionWindow(entry["device_id"], entry["start_ns"], entry["end_ns"])


def create_claim(db: Session, actor: User | None, programme_id: int, period_id: int, *,
                 claimant_id: int | None = None) -> VoucherClaim:
    """A draft claim of every unclaimed application of the programme and period whose claimant is
    `claimant_id` (the actor's organisation by default): the provider in 通兑 mode, the holder in 通用 mode."""
    programme = get_programme(db, programme_id)
    if db.get(BillingPeriod, period_id) is None:
        raise NotFound("billing_period", period_id)
    if claimant_id is None:
        if actor is None:
            raise InvalidInput({"claimant_id": [N_("This field is required.")]})
        claimant_id = actor.organisation_id
    if not _may_act_for(actor, claimant_id, programme.redemption_mode):
        raise Forbidden()
    lock_programme(db, programme.id)  # two claims being built at once cannot take the same application
    party = VoucherApplication.provider_id if programme.redemption_mode == RedemptionMode.PROVIDER_CLAIMS \
        else VoucherApplication.holder_id
    claimed = select(VoucherClaimItem.application_id)
    rows = db.execute(select(VoucherApplication, Charge).join(Charge, VoucherApplication.charge_id == Charge.id)
                      .where(VoucherApplication.programme_id == programme.id, Charge.period_id == period_id,
                             party == claimant_id, VoucherApplication.id.not_in(claimed))
                      .order_by(VoucherApplication.service_date, VoucherApplication.id)).all()
    if not rows:
        raise NothingToClaim()
    claim = VoucherClaim(programme_id=programme.id, period_id=period_id, claimant_id=claimant_id,
                         mode=programme.redemption_mode, state=ClaimState.DRAFT,
                         created_by_id=actor.id if actor else None)
    db.add(claim)
    db.flush()
    total = 0
    for application, charge in rows:
        db.add(VoucherClaimItem(
            claim_id=claim.id, application_id=application.id, charge_id=charge.id,
            reservation_id=charge.reservation_id, holder_id=application.holder_id,
            provider_id=application.provider_id, service_date=application.service_date,
            eligible_fee=application.eligible_fee, amount=application.amount,
            sessions=[_session_entry(s, d) for s, d in measured_sessions(db, charge)]))
        total += application.amount
    claim.total = total
    db.flush()
    db.expire(claim, ["items"])
    audit.record(db, actor, "voucher_claim.created", claim, programme_id=programme.id, period_id=period_id,
                 claimant_id=claimant_id, items=len(rows), total=claim.total)
    return claim


def evidence_windows(claim: VoucherClaim) -> dict[int, SessionWindow]:
    """usage_session_id → which points to read for it: `store.query(w.device_id, w.start_ns, w.end_ns)`."""
    return {entry["usage_session_id"]: _window(entry) for item in claim.items for entry in item.sessions}


def _digest_item(item: VoucherClaimItem,
                 points_by_session: Mapping[int, Iterable[TelemetryPoint]]) -> tuple[list[dict], str | None]:
    """The item's sessions with their digests, and the digest over all of them; materialises each iterable once."""
    materialised = {e["usage_session_id"]: list(points_by_session.get(e["usage_session_id"], ()))
                    for e in item.sessions}
    sessions = []
    for entry in item.sessions:
        digest = session_digest(_window(entry), materialised[entry["usage_session_id"]])
        sessions.append({**entry, "point_count": digest.point_count, "digest": digest.sha256})
    overall = sessions_digest((_window(e), materialised[e["usage_session_id"]]) for e in item.sessions)
    return sessions, overall.sha256


def record_evidence(db: Session, actor: User | None, claim_id: int,
                    points_by_session: Mapping[int, Iterable[TelemetryPoint]]) -> VoucherClaim:
    """Digest the telemetry of every usage session of the claim (points as `(ts_ns, field, value)`, read by the
    caller from the time-series store over `evidence_windows(claim)`); a session without points digests the
    empty set. Recording again replaces the digests (drafts only)."""
    claim = _claim_for_edit(db, actor, claim_id)
    unknown = set(points_by_session) - set(evidence_windows(claim))
    if unknown:
        raise InvalidInput({"points_by_session": [N_("These usage sessions are not part of the claim.")]})
    for item in claim.items:
        item.sessions, item.evidence_digest = _digest_item(item, points_by_session)
    db.flush()
    audit.record(db, actor, "voucher_claim.evidence_recorded", claim,
                 digests={str(i.id): i.evidence_digest for i in claim.items})
    return claim


def set_item_references(db: Session, actor: User | None, item_id: int, *, invoice_number: str,
                        payment_reference: str) -> VoucherClaimItem:
    """The invoice number and the bank payment reference of the service (drafts only)."""
    invoice_number, payment_reference = invoice_number.strip(), payment_reference.strip()
    problems = {name: [N_("Give at most 64 characters.")] for name, value in
                (("invoice_number", invoice_number), ("payment_reference", payment_reference)) if len(value) > 64}
    if problems:
        raise InvalidInput(problems)
    claim, item = _item_for_edit(db, actor, item_id)
    item.invoice_number, item.payment_reference = invoice_number, payment_reference
    db.flush()
    audit.record(db, actor, "voucher_claim.references_set", claim, item_id=item.id,
                 invoice_number=invoice_number, payment_reference=payment_reference)
    return item


def confirm_item(db: Session, actor: User, item_id: int) -> VoucherClaimItem:
    """The service-result confirmation: a user of the provider and a user of the customer each sign it off in
    the app, for their own side (decided by the actor's organisation)."""
    item = db.get(VoucherClaimItem, item_id)
    if item is None:
        raise NotFound("voucher_claim_item", item_id)
    if actor.organisation_id not in (item.provider_id, item.holder_id):
        raise Forbidden()
    claim, item = _item_for_edit(db, actor, item_id, claimant_only=False)
    now = utcnow()
    side = "provider" if actor.organisation_id == item.provider_id else "customer"
    if side == "provider":
        if not actor.has_role(Role.LAB_MANAGER, Role.FINANCE, Role.ADMIN):
            raise Forbidden()
        item.provider_confirmed_by_id, item.provider_confirmed_at = actor.id, now
    else:
        item.customer_confirmed_by_id, item.customer_confirmed_at = actor.id, now
    db.flush()
    audit.record(db, actor, "voucher_claim.item_confirmed", claim, item_id=item.id, side=side)
    return item


def remove_item(db: Session, actor: User | None, item_id: int) -> VoucherClaim:
    """Take an application out of a draft claim (it may be claimed again later)."""
    claim, item = _item_for_edit(db, actor, item_id)
    application_id = item.application_id
    claim.total -= item.amount
    db.delete(item)
    db.flush()
    db.expire(claim, ["items"])
    audit.record(db, actor, "voucher_claim.item_removed", claim, item_id=item_id, application_id=application_id,
                 total=claim.total)
    return claim


# --- the way of a claim --------------------------------------------------------------------------------------

def missing_evidence(claim: VoucherClaim) -> list[dict[str, Any]]:
    """What keeps the claim from being submitted, per item: [{"item_id", "missing": [...]}]."""
    problems = []
    for item in claim.items:
        missing = [name for name, ok in (
            ("invoice_number", bool(item.invoice_number)),
            ("payment_reference", bool(item.payment_reference)),
            ("provider_confirmation", item.provider_confirmed_at is not None),
            ("customer_confirmation", item.customer_confirmed_at is not None),
            ("telemetry_digest", item.evidence_digest is not None),
        ) if not ok]
        if missing:
            problems.append({"item_id": item.id, "missing": missing})
    return problems


def submit_claim(db: Session, actor: User | None, claim_id: int, *, on: date | None = None) -> VoucherClaim:
    """Submit a complete draft to the programme, on or before its claim deadline; from now on it is frozen."""
    claim = get_claim(db, actor, claim_id)
    if not _may_act_for(actor, claim.claimant_id, claim.mode):
        raise Forbidden()
    claim = locked_row(db, VoucherClaim, claim.id)
    if claim.state != ClaimState.DRAFT:
        raise InvalidClaimTransition(claim.state, "submit")
    on = on or today()
    if on > claim.programme.claim_deadline:
        raise ClaimDeadlinePassed(deadline=claim.programme.claim_deadline.isoformat())
    if not claim.items:
        raise NothingToClaim()
    missing = missing_evidence(claim)
    if missing:
        raise ClaimIncomplete(missing)
    claim.state, claim.submitted_at, claim.submitted_by_id = ClaimState.SUBMITTED, utcnow(), \
        actor.id if actor else None
    db.flush()
    audit.record(db, actor, "voucher_claim.submitted", claim, total=claim.total, items=len(claim.items),
                 digests={str(i.id): i.evidence_digest for i in claim.items})
    return claim


def _decide(db: Session, actor: User | None, claim_id: int, allowed_from: ClaimState, action: str) -> VoucherClaim:
    claim = db.get(VoucherClaim, claim_id)
    if claim is None:
        raise NotFound("voucher_claim", claim_id)
    if not can_administer(actor, claim.programme):
        raise Forbidden()
    claim = locked_row(db, VoucherClaim, claim.id)
    if claim.state != allowed_from:
        raise InvalidClaimTransition(claim.state, action)
    return claim


def approve_claim(db: Session, actor: User | None, claim_id: int) -> VoucherClaim:
    claim = _decide(db, actor, claim_id, ClaimState.SUBMITTED, "approve")
    claim.state, claim.decided_at, claim.decided_by_id = ClaimState.APPROVED, utcnow(), actor.id if actor else None
    db.flush()
    audit.record(db, actor, "voucher_claim.approved", claim, total=claim.total)
    return claim


def reject_claim(db: Session, actor: User | None, claim_id: int, reason: str) -> VoucherClaim:
    reason = (reason or "").strip()
    if not reason or len(reason) > 2000:
        raise InvalidInput({"reason": [N_("Give the reason for the rejection (at most 2,000 characters).")]})
    claim = _decide(db, actor, claim_id, ClaimState.SUBMITTED, "reject")
    claim.state, claim.decided_at, claim.decided_by_id = ClaimState.REJECTED, utcnow(), actor.id if actor else None
    claim.rejection_reason = reason
    db.flush()
    audit.record(db, actor, "voucher_claim.rejected", claim, reason=reason)
    return claim


def mark_claim_paid(db: Session, actor: User | None, claim_id: int, payout_reference: str) -> VoucherClaim:
    payout_reference = (payout_reference or "").strip()
    if not payout_reference or len(payout_reference) > 64:
        raise InvalidInput({"payout_reference": [N_("Give the bank reference of the payment (at most 64 "
                                                    "characters).")]})
    claim = _decide(db, actor, claim_id, ClaimState.APPROVED, "mark_paid")
    claim.state, claim.paid_at, claim.payout_reference = ClaimState.PAID, utcnow(), payout_reference
    db.flush()
    audit.record(db, actor, "voucher_claim.paid", claim, payout_reference=payout_reference, total=claim.total)
    return claim


# --- checking the evidence later ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EvidenceMismatch:
    item_id: int
    usage_session_id: int | None  # None: the item's overall digest
    recorded_digest: str | None
    actual_digest: str
    recorded_count: int | None
    actual_count: int | None


def verify_claim_evidence(db: Session, claim: VoucherClaim,
                          points_by_session: Mapping[int, Iterable[TelemetryPoint]]) -> list[EvidenceMismatch]:
    """Recompute every digest of the claim from the points the caller read again; an empty list means the
    telemetry is what it was when the evidence was recorded."""
    db.refresh(claim, ["items"])
    mismatches = []
    for item in claim.items:
        sessions, overall = _digest_item(item, points_by_session)
        for recorded, actual in zip(item.sessions, sessions, strict=True):
            if recorded.get("digest") != actual["digest"]:
                mismatches.append(EvidenceMismatch(item.id, recorded["usage_session_id"], recorded.get("digest"),
                                                   actual["digest"], recorded.get("point_count"),
                                                   actual["point_count"]))
        if item.evidence_digest != overall:
            mismatches.append(EvidenceMismatch(item.id, None, item.evidence_digest, overall or "", None, None))
    return mismatches


def claims_of(db: Session, claimant_id: int) -> list[VoucherClaim]:
    return list(db.scalars(select(VoucherClaim).where(VoucherClaim.claimant_id == claimant_id)
                           .order_by(VoucherClaim.created_at.desc(), VoucherClaim.id.desc())))
