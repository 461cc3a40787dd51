"""Blackouts, qualifications, the waitlist and technician-run sample requests (送样).

NOW is Tuesday 1 December 2026, 08:00 in Shanghai; the facility is open on weekdays 08:00-18:00.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from booking import reservations
from booking.blackouts import create_blackout, delete_blackout
from booking.errors import InvalidTransition, ReservationConflict, RuleViolation, WaitlistNotNeeded
from booking.models import (
    Blackout,
    OperationMode,
    Qualification,
    Reservation,
    ReservationKind,
    ReservationState,
    ResourceStatus,
    SampleRequest,
    SampleRequestState,
    WaitlistEntry,
)
from booking.qualifications import grant_qualification, qualifications_for_resource, revoke_qualification
from booking.reservations import (
    BookingRequest,
    cancel_reservation,
    create_reservation,
    modify_reservation,
    reject_reservation,
)
from booking.samples import (
    cancel_sample_request,
    create_sample_request,
    open_sample_requests,
    reject_sample_request,
    schedule_sample_request,
)
from booking.waitlist import AlreadyWaiting, join_waitlist, leave_waitlist, waitlist_of
from core.accounts.models import Role
from core.audit import AuditEntry
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.mail import OutboundEmail
from tests.booking.helpers import NOW, audit_actions, last_audit_id, mails, sh
from tests.factories import (
    make_blackout,
    make_organisation,
    make_qualification,
    make_reservation,
    make_resource,
    make_user,
    row_counts,
)

S = ReservationState


def book(db, user, resource, start, end, **fields) -> Reservation:
    return create_reservation(db, user, BookingRequest(resource.id, start, end, **fields), now=NOW)


def counts(db) -> dict[str, int]:
    return row_counts(db, Reservation, Blackout, Qualification, WaitlistEntry, SampleRequest, AuditEntry,
                      OutboundEmail)


def last_audit(db) -> AuditEntry:
    return db.scalar(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1))


def who(db, request, actor: str):
    if actor == "stranger":
        return make_user(db)
    if actor == "unscoped_lab_manager":
        return make_user(db, roles=(Role.LAB_MANAGER,))
    return request.getfixturevalue(actor)


MANAGERS_ONLY = [("manager", True), ("admin", True), ("other_manager", False), ("researcher", False),
                 ("unscoped_lab_manager", False)]


# --- blackouts ---------------------------------------------------------------------------------------------

def test_create_blackout(db, manager, resource):
    since = last_audit_id(db)
    blackout = create_blackout(db, manager, resource.id, sh(3, 8), sh(3, 18), "calibration", "  yearly  ", now=NOW)
    db.flush()
    db.expire_all()
    stored = db.get(Blackout, blackout.id)
    assert (stored.starts_at, stored.ends_at, stored.kind, stored.reason, stored.created_by_id) == (
        sh(3, 8), sh(3, 18), "calibration", "yearly", manager.id)
    assert audit_actions(db, since) == ["blackout.created"]
    assert last_audit(db).data == {"resource_id": resource.id, "kind": "calibration", "cancelled": [],
                                   "starts_at": "2026-12-03T00:00:00+00:00", "ends_at": "2026-12-03T10:00:00+00:00"}


@pytest.mark.parametrize(("actor", "allowed"), MANAGERS_ONLY)
def test_who_may_create_a_blackout(db, request, resource, actor, allowed):
    user = who(db, request, actor)
    before = counts(db)
    if allowed:
        assert create_blackout(db, user, resource.id, sh(3, 8), sh(3, 18), "maintenance", now=NOW).id
    else:
        with pytest.raises(Forbidden):
            create_blackout(db, user, resource.id, sh(3, 8), sh(3, 18), "maintenance", now=NOW)
        assert counts(db) == before


@pytest.mark.parametrize(("start", "end", "kind", "error", "detail"), [
    (sh(3, 8), sh(3, 18), "party", InvalidInput, "kind"),
    (sh(3, 8), sh(3, 8), "maintenance", RuleViolation, "invalid_window"),
    (sh(3, 18), sh(3, 8), "holiday", RuleViolation, "invalid_window"),
    (sh(3, 8).replace(tzinfo=None), sh(3, 18), "holiday", ValueError, "naive"),
])
def test_invalid_blackouts(db, manager, resource, start, end, kind, error, detail):
    before = counts(db)
    with pytest.raises(error) as exc:
        create_blackout(db, manager, resource.id, start, end, kind, now=NOW)
    if error is InvalidInput:
        assert list(exc.value.fields) == [detail]
    elif error is RuleViolation:
        assert exc.value.code == detail
    else:
        assert detail in str(exc.value)
    assert counts(db) == before


def test_blackout_over_live_reservations_is_a_conflict(db, manager, researcher, resource):
    confirmed = book(db, researcher, resource, sh(3, 9), sh(3, 10))
    pending = make_reservation(db, resource=resource, starts_at=sh(3, 14), ends_at=sh(3, 15), state=S.PENDING)
    make_reservation(db, resource=resource, starts_at=sh(3, 11), ends_at=sh(3, 12), state=S.CANCELLED)
    book(db, researcher, resource, sh(3, 17), sh(3, 18))  # right after the blackout: no conflict
    before = counts(db)
    with pytest.raises(ReservationConflict) as exc:
        create_blackout(db, manager, resource.id, sh(3, 8), sh(3, 17), "maintenance", now=NOW)
    assert isinstance(exc.value, Conflict)  # 409
    assert [c["id"] for c in exc.value.details["clashes"]] == [confirmed.id, pending.id]
    assert counts(db) == before
    assert {r.state for r in db.scalars(select(Reservation).where(Reservation.resource_id == resource.id))} == {
        S.CONFIRMED, S.PENDING, S.CANCELLED}


def test_blackout_cancelling_the_conflicting_reservations_tells_their_owners(db, manager, resource):
    alice, bob = make_user(db, locale="en"), make_user(db)
    first = book(db, alice, resource, sh(3, 9), sh(3, 10))
    second = book(db, bob, resource, sh(3, 14), sh(3, 15))
    untouched = book(db, bob, resource, sh(4, 9), sh(4, 10))
    ended = make_reservation(db, resource=resource, starts_at=sh(30, 9, month=11), ends_at=sh(30, 10, month=11))
    mail_ids = {m.id for m in mails(db)}
    since = last_audit_id(db)

    blackout = create_blackout(db, manager, resource.id, sh(30, 8, month=11), sh(3, 18), "maintenance",
                               "vacuum pump replaced", cancel_conflicting=True, now=NOW)

    db.flush()
    db.expire_all()
    for reservation in (first, second):
        stored = db.get(Reservation, reservation.id)
        assert (stored.state, stored.cancelled_at, stored.late_cancellation, stored.decision_note) == (
            S.CANCELLED, NOW, False, "vacuum pump replaced")
    assert db.get(Reservation, untouched.id).state == S.CONFIRMED
    assert db.get(Reservation, ended.id).state == S.CONFIRMED  # already over: left for closing, not cancelled
    new_mail = [m for m in mails(db) if m.id not in mail_ids]
    assert sorted((m.topic, m.to_address) for m in new_mail if m.topic == "reservation.cancelled") == sorted(
        [("reservation.cancelled", alice.email), ("reservation.cancelled", bob.email)])
    english = next(m for m in new_mail if m.to_address == alice.email)
    assert english.subject.startswith("[LabShare] Booking cancelled: ")
    assert "vacuum pump replaced" in english.body
    assert audit_actions(db, since) == ["reservation.cancelled", "reservation.cancelled", "blackout.created"]
    assert sorted(last_audit(db).data["cancelled"]) == sorted([first.id, second.id, ended.id])
    assert db.get(Blackout, blackout.id) is not None


def test_blackout_cancelling_reservations_does_not_tell_the_waitlist_the_time_is_free(db, manager, researcher,
                                                                                      resource):
    book(db, researcher, resource, sh(3, 9), sh(3, 11))
    waiting = make_user(db)
    join_waitlist(db, waiting, resource.id, sh(3, 9), sh(3, 11), now=NOW)
    create_blackout(db, manager, resource.id, sh(3, 8), sh(3, 18), "maintenance", cancel_conflicting=True, now=NOW)
    assert mails(db, "waitlist.freed") == []


def test_delete_blackout_tells_the_waitlist(db, manager, resource):
    blackout = make_blackout(db, resource=resource, starts_at=sh(3, 8), ends_at=sh(3, 18))
    waiting = make_user(db, locale="en")
    entry = join_waitlist(db, waiting, resource.id, sh(3, 10), sh(3, 12), now=NOW)
    since = last_audit_id(db)
    delete_blackout(db, manager, blackout.id, now=NOW)
    assert db.get(Blackout, blackout.id) is None
    assert audit_actions(db, since) == ["blackout.deleted"]
    assert [(m.to_address, m.subject) for m in mails(db, "waitlist.freed")] == [
        (waiting.email, f"[LabShare] A time you waited for is free: {resource.name_en}, 2026-12-03 10:00")]
    assert entry.notified_at == NOW


@pytest.mark.parametrize("actor", ["other_manager", "researcher"])
def test_only_managers_delete_blackouts(db, request, resource, actor):
    blackout = make_blackout(db, resource=resource, starts_at=sh(3, 8), ends_at=sh(3, 18))
    before = counts(db)
    with pytest.raises(Forbidden):
        delete_blackout(db, request.getfixturevalue(actor), blackout.id, now=NOW)
    assert counts(db) == before


def test_delete_unknown_blackout(db, manager):
    with pytest.raises(NotFound):
        delete_blackout(db, manager, 10**9, now=NOW)


# --- qualifications ----------------------------------------------------------------------------------------

@pytest.fixture
def restricted(db, facility):
    """An instrument only qualified users may operate alone."""
    return make_resource(db, facility=facility, qualification_required=True)


def test_grant_lets_the_user_book(db, manager, researcher, restricted):
    with pytest.raises(RuleViolation, match="qualification"):
        book(db, researcher, restricted, sh(2, 9), sh(2, 10))
    since = last_audit_id(db)
    q = grant_qualification(db, manager, researcher.id, restricted.id, sh(31, 0), now=NOW)
    assert (q.user_id, q.resource_id, q.granted_by_id, q.granted_at, q.expires_at, q.revoked_at) == (
        researcher.id, restricted.id, manager.id, NOW, sh(31, 0), None)
    assert audit_actions(db, since) == ["qualification.granted"]
    assert last_audit(db).data == {"user_id": researcher.id, "resource_id": restricted.id,
                                   "expires_at": "2026-12-30T16:00:00+00:00"}
    assert book(db, researcher, restricted, sh(2, 9), sh(2, 10)).state == S.CONFIRMED
    with pytest.raises(RuleViolation, match="qualification"):  # after the expiry
        book(db, researcher, restricted, sh(31, 9), sh(31, 10))


def test_renewing_updates_the_one_qualification(db, manager, researcher, restricted):
    first = grant_qualification(db, manager, researcher.id, restricted.id, sh(10, 0), now=NOW)
    revoke_qualification(db, manager, first.id, now=NOW)
    renewed = grant_qualification(db, manager, researcher.id, restricted.id, None, now=sh(2, 8))
    assert renewed.id == first.id
    assert (renewed.expires_at, renewed.revoked_at, renewed.granted_at) == (None, None, sh(2, 8))
    assert row_counts(db, Qualification)["qualification"] == 1
    assert [q.id for q in qualifications_for_resource(db, restricted.id)] == [first.id]
    assert book(db, researcher, restricted, sh(2, 9), sh(2, 10))


@pytest.mark.parametrize("expires_at", [NOW, sh(30, 8, month=11), sh(1, 7, 59)])
def test_expiry_must_be_in_the_future(db, manager, researcher, restricted, expires_at):
    before = counts(db)
    with pytest.raises(InvalidInput) as exc:
        grant_qualification(db, manager, researcher.id, restricted.id, expires_at, now=NOW)
    assert list(exc.value.fields) == ["expires_at"]
    assert counts(db) == before


def test_revoke(db, manager, researcher, restricted):
    q = make_qualification(db, researcher, restricted)
    since = last_audit_id(db)
    revoke_qualification(db, manager, q.id, now=NOW)
    revoke_qualification(db, manager, q.id, now=sh(2, 8))  # again: nothing changes
    assert q.revoked_at == NOW
    assert audit_actions(db, since) == ["qualification.revoked"]
    with pytest.raises(RuleViolation, match="qualification"):
        book(db, researcher, restricted, sh(2, 9), sh(2, 10))


@pytest.mark.parametrize(("actor", "allowed"), MANAGERS_ONLY)
def test_who_may_grant_and_revoke(db, request, researcher, restricted, actor, allowed):
    user = who(db, request, actor)
    before = counts(db)
    if not allowed:
        with pytest.raises(Forbidden):
            grant_qualification(db, user, researcher.id, restricted.id, now=NOW)
        q = make_qualification(db, researcher, restricted)
        before = counts(db)
        with pytest.raises(Forbidden):
            revoke_qualification(db, user, q.id, now=NOW)
        assert counts(db) == before
        assert q.revoked_at is None
        return
    q = grant_qualification(db, user, researcher.id, restricted.id, now=NOW)
    assert revoke_qualification(db, user, q.id, now=NOW).revoked_at == NOW


@pytest.mark.parametrize("missing", ["resource", "user", "qualification"])
def test_qualification_of_unknown_things(db, manager, researcher, restricted, missing):
    def attempt():
        if missing == "qualification":
            return revoke_qualification(db, manager, 10**9, now=NOW)
        return grant_qualification(db, manager, 10**9 if missing == "user" else researcher.id,
                                   10**9 if missing == "resource" else restricted.id, now=NOW)

    with pytest.raises(NotFound):
        attempt()


# --- waitlist ----------------------------------------------------------------------------------------------

@pytest.fixture
def waiting(db):
    return make_user(db, locale="en")


def test_join_a_free_window_is_not_needed(db, waiting, resource):
    before = counts(db)
    with pytest.raises(WaitlistNotNeeded):
        join_waitlist(db, waiting, resource.id, sh(2, 9), sh(2, 11), now=NOW)
    assert counts(db) == before


def test_join_and_join_again(db, waiting, researcher, resource):
    book(db, researcher, resource, sh(2, 9), sh(2, 11))
    entry = join_waitlist(db, waiting, resource.id, sh(2, 10), sh(2, 12), now=NOW)
    assert (entry.user_id, entry.starts_at, entry.ends_at) == (waiting.id, sh(2, 10), sh(2, 12))
    before = counts(db)
    with pytest.raises(AlreadyWaiting):
        join_waitlist(db, waiting, resource.id, sh(2, 10), sh(2, 12), now=NOW)
    assert counts(db) == before
    assert join_waitlist(db, make_user(db), resource.id, sh(2, 10), sh(2, 12), now=NOW)  # someone else may
    assert join_waitlist(db, waiting, resource.id, sh(2, 9), sh(2, 12), now=NOW)       # another window too
    leave_waitlist(db, waiting, entry.id, now=NOW)
    assert join_waitlist(db, waiting, resource.id, sh(2, 10), sh(2, 12), now=NOW)       # after leaving
    assert [e.starts_at for e in waitlist_of(db, waiting)] == [sh(2, 9), sh(2, 10)]


def test_join_a_blacked_out_window(db, waiting, resource):
    make_blackout(db, resource=resource, starts_at=sh(2, 8), ends_at=sh(2, 18))
    assert join_waitlist(db, waiting, resource.id, sh(2, 9), sh(2, 10), now=NOW)


@pytest.mark.parametrize(("start", "end", "code"), [
    (sh(2, 11), sh(2, 9), "invalid_window"), (sh(1, 7), sh(1, 9), "starts_in_past"), (NOW, sh(1, 9), "starts_in_past")])
def test_join_invalid_windows(db, waiting, resource, start, end, code):
    with pytest.raises(RuleViolation) as exc:
        join_waitlist(db, waiting, resource.id, start, end, now=NOW)
    assert exc.value.code == code


def test_leave_someone_elses_entry(db, waiting, researcher, resource):
    book(db, researcher, resource, sh(2, 9), sh(2, 11))
    entry = join_waitlist(db, waiting, resource.id, sh(2, 9), sh(2, 11), now=NOW)
    with pytest.raises(NotFound):
        leave_waitlist(db, researcher, entry.id, now=NOW)
    assert entry.cancelled_at is None


def test_cancelling_the_clash_tells_the_waiting_user_once(db, waiting, researcher, resource):
    booked = book(db, researcher, resource, sh(2, 9), sh(2, 11))
    entry = join_waitlist(db, waiting, resource.id, sh(2, 10), sh(2, 11), now=NOW)
    cancel_reservation(db, researcher, booked.id, now=NOW)
    freed = mails(db, "waitlist.freed")
    assert [(m.to_address, m.user_id) for m in freed] == [(waiting.email, waiting.id)]
    assert freed[0].subject == f"[LabShare] A time you waited for is free: {resource.name_en}, 2026-12-02 10:00"
    assert "2026-12-02 11:00" in freed[0].body
    assert entry.notified_at == NOW
    # booked and freed again: the entry was already answered
    again = book(db, make_user(db), resource, sh(2, 9), sh(2, 11))
    cancel_reservation(db, again.user, again.id, now=NOW)
    assert len(mails(db, "waitlist.freed")) == 1


def test_no_news_while_another_reservation_still_blocks(db, waiting, researcher, resource):
    early = book(db, researcher, resource, sh(2, 9), sh(2, 10))
    late = book(db, make_user(db), resource, sh(2, 11), sh(2, 12))
    join_waitlist(db, waiting, resource.id, sh(2, 9), sh(2, 12), now=NOW)
    cancel_reservation(db, researcher, early.id, now=NOW)
    assert mails(db, "waitlist.freed") == []
    cancel_reservation(db, late.user, late.id, now=NOW)
    assert [m.to_address for m in mails(db, "waitlist.freed")] == [waiting.email]


def test_no_news_while_a_blackout_still_blocks(db, waiting, researcher, resource):
    booked = book(db, researcher, resource, sh(2, 9), sh(2, 10))
    make_blackout(db, resource=resource, starts_at=sh(2, 10), ends_at=sh(2, 12))
    join_waitlist(db, waiting, resource.id, sh(2, 9), sh(2, 12), now=NOW)
    cancel_reservation(db, researcher, booked.id, now=NOW)
    assert mails(db, "waitlist.freed") == []


@pytest.mark.parametrize("how", ["reject", "move"])
def test_rejecting_or_moving_frees_the_window(db, manager, waiting, researcher, facility, how):
    resource = make_resource(db, facility=facility, approval_required=True)
    booked = book(db, researcher, resource, sh(2, 9), sh(2, 11))
    join_waitlist(db, waiting, resource.id, sh(2, 9), sh(2, 11), now=NOW)
    if how == "reject":
        reject_reservation(db, manager, booked.id, now=NOW)
    else:
        modify_reservation(db, researcher, booked.id, starts_at=sh(3, 9), ends_at=sh(3, 11), now=NOW)
    assert [m.to_address for m in mails(db, "waitlist.freed")] == [waiting.email]


def test_entries_that_have_started_or_were_left_are_not_told(db, waiting, researcher, resource):
    booked = book(db, researcher, resource, sh(2, 9), sh(2, 11))
    join_waitlist(db, waiting, resource.id, sh(2, 9), sh(2, 10), now=NOW)
    other = make_user(db)
    left = join_waitlist(db, other, resource.id, sh(2, 10), sh(2, 11), now=NOW)
    leave_waitlist(db, other, left.id, now=NOW)
    cancel_reservation(db, researcher, booked.id, now=sh(2, 9, 30))  # the first entry has started
    assert mails(db, "waitlist.freed") == []


# --- sample requests ---------------------------------------------------------------------------------------

def sample_request(db, user, resource, **fields) -> SampleRequest:
    values = dict(sample_count=3, description="  XRD of three cathode powders  ", hazards=" none ")
    values.update(fields)
    return create_sample_request(db, user, resource.id, **values)


def test_create_sample_request(db, researcher, resource):
    since = last_audit_id(db)
    request = sample_request(db, researcher, resource)
    assert (request.state, request.user_id, request.billed_org_id, request.sample_count, request.description,
            request.hazards) == (SampleRequestState.REQUESTED, researcher.id, researcher.organisation_id, 3,
                                 "XRD of three cathode powders", "none")
    assert audit_actions(db, since) == ["sample_request.created"]
    assert last_audit(db).data == {"resource_id": resource.id, "samples": 3}


@pytest.mark.parametrize(("fields", "field"), [
    ({"sample_count": 0}, "sample_count"),
    ({"sample_count": 10_001}, "sample_count"),
    ({"sample_count": "3"}, "sample_count"),
    ({"description": ""}, "description"),
    ({"description": "   "}, "description"),
    ({"description": "x" * 4001}, "description"),
    ({"hazards": "x" * 2001}, "hazards"),
    ({"billed_org_id": "other"}, "billed_org_id"),
])
def test_invalid_sample_requests(db, researcher, resource, fields, field):
    if fields.get("billed_org_id") == "other":
        fields = {"billed_org_id": make_organisation(db).id}
    before = counts(db)
    with pytest.raises(InvalidInput) as exc:
        sample_request(db, researcher, resource, **fields)
    assert list(exc.value.fields) == [field]
    assert counts(db) == before


def test_several_invalid_fields_are_reported_together(db, researcher, resource):
    with pytest.raises(InvalidInput) as exc:
        sample_request(db, researcher, resource, sample_count=0, description="", hazards="x" * 2001)
    assert sorted(exc.value.fields) == ["description", "hazards", "sample_count"]


@pytest.mark.parametrize(("overrides", "code"), [
    ({"operation_mode": OperationMode.SELF_SERVICE}, "technician_service_not_offered"),
    ({"status": ResourceStatus.RETIRED}, "resource_unavailable"),
])
def test_sample_requests_need_a_technician_service(db, researcher, facility, overrides, code):
    resource = make_resource(db, facility=facility, **overrides)
    before = counts(db)
    with pytest.raises(RuleViolation) as exc:
        sample_request(db, researcher, resource)
    assert exc.value.code == code
    assert counts(db) == before


def test_sample_request_for_unknown_resource(db, researcher):
    with pytest.raises(NotFound):
        create_sample_request(db, researcher, 10**9, sample_count=1, description="x")


@pytest.fixture
def technician_only(db, facility):
    return make_resource(db, facility=facility, operation_mode=OperationMode.TECHNICIAN, qualification_required=True)


def test_schedule_books_a_technician_run_slot_for_the_requester(db, manager, researcher, technician_only):
    request = sample_request(db, researcher, technician_only)
    since = last_audit_id(db)
    # 30 minutes ahead: inside the lead time, which binds researchers, not the technicians who schedule
    reservation = schedule_sample_request(db, manager, request.id, sh(1, 8, 30), sh(1, 10), now=NOW)
    assert (reservation.state, reservation.kind, reservation.user_id, reservation.billed_org_id,
            reservation.sample_count, reservation.purpose, reservation.decided_by_id) == (
        S.CONFIRMED, ReservationKind.TECHNICIAN, researcher.id, researcher.organisation_id, 3,
        "XRD of three cathode powders", manager.id)
    assert (request.state, request.reservation_id) == (SampleRequestState.SCHEDULED, reservation.id)
    assert audit_actions(db, since) == ["sample_request.scheduled"]
    assert [(m.topic, m.to_address) for m in mails(db)] == [("reservation.confirmed", researcher.email)]


def test_schedule_respects_clashes_and_rules(db, manager, researcher, technician_only):
    request = sample_request(db, researcher, technician_only)
    existing = make_reservation(db, resource=technician_only, starts_at=sh(2, 9), ends_at=sh(2, 11))
    before = counts(db)
    with pytest.raises(ReservationConflict) as exc:
        schedule_sample_request(db, manager, request.id, sh(2, 10), sh(2, 12), now=NOW)
    assert [c["id"] for c in exc.value.details["clashes"]] == [existing.id]
    with pytest.raises(RuleViolation) as exc:
        schedule_sample_request(db, manager, request.id, sh(2, 17), sh(2, 19), now=NOW)
    assert exc.value.code == "outside_bookable_hours"
    assert counts(db) == before
    assert request.state == SampleRequestState.REQUESTED
    assert schedule_sample_request(db, manager, request.id, sh(2, 11), sh(2, 12), now=NOW)  # back to back


def test_schedule_is_guarded_by_the_database_too(db, backend, manager, researcher, technician_only, monkeypatch):
    request = sample_request(db, researcher, technician_only)
    make_reservation(db, resource=technician_only, starts_at=sh(2, 9), ends_at=sh(2, 11))
    monkeypatch.setattr(reservations, "clashes", lambda *args, **kwargs: [])
    monkeypatch.setattr("booking.samples.check_request", lambda *args, **kwargs: reservations.Problems())
    before = counts(db)
    if backend == "postgresql":
        with pytest.raises(ReservationConflict):
            schedule_sample_request(db, manager, request.id, sh(2, 10), sh(2, 12), now=NOW)
        assert counts(db) == before
        assert request.state == SampleRequestState.REQUESTED
    else:  # no exclusion constraint on SQLite: the write lock and the check are the guard there
        schedule_sample_request(db, manager, request.id, sh(2, 10), sh(2, 12), now=NOW)
        assert counts(db)["reservation"] == before["reservation"] + 1


@pytest.mark.parametrize(("actor", "allowed"), MANAGERS_ONLY)
def test_who_may_schedule_and_reject(db, request, researcher, technician_only, actor, allowed):
    user = who(db, request, actor)
    scheduled = sample_request(db, researcher, technician_only)
    rejected = sample_request(db, researcher, technician_only)
    before = counts(db)
    if not allowed:
        with pytest.raises(Forbidden):
            schedule_sample_request(db, user, scheduled.id, sh(2, 9), sh(2, 10), now=NOW)
        with pytest.raises(Forbidden):
            reject_sample_request(db, user, rejected.id, "no")
        assert counts(db) == before
        assert {scheduled.state, rejected.state} == {SampleRequestState.REQUESTED}
        return
    schedule_sample_request(db, user, scheduled.id, sh(2, 9), sh(2, 10), now=NOW)
    since = last_audit_id(db)
    reject_sample_request(db, user, rejected.id, "  hazardous: send an MSDS first ")
    assert (rejected.state, rejected.note) == (SampleRequestState.REJECTED, "hazardous: send an MSDS first")
    assert audit_actions(db, since) == ["sample_request.rejected"]


def test_cancel_sample_request_by_its_owner_only(db, researcher, technician_only):
    request = sample_request(db, researcher, technician_only)
    before = counts(db)
    with pytest.raises(NotFound):  # others do not even learn that it exists
        cancel_sample_request(db, make_user(db), request.id)
    assert counts(db) == before
    since = last_audit_id(db)
    cancel_sample_request(db, researcher, request.id)
    assert request.state == SampleRequestState.CANCELLED
    assert audit_actions(db, since) == ["sample_request.cancelled"]


@pytest.mark.parametrize("done", ["scheduled", "rejected", "cancelled"])
def test_sample_request_state_errors(db, manager, researcher, technician_only, done):
    request = sample_request(db, researcher, technician_only)
    if done == "scheduled":
        schedule_sample_request(db, manager, request.id, sh(2, 9), sh(2, 10), now=NOW)
    elif done == "rejected":
        reject_sample_request(db, manager, request.id, "no")
    else:
        cancel_sample_request(db, researcher, request.id)
    before = counts(db)
    with pytest.raises(InvalidTransition):
        schedule_sample_request(db, manager, request.id, sh(3, 9), sh(3, 10), now=NOW)
    with pytest.raises(InvalidTransition):
        reject_sample_request(db, manager, request.id, "no")
    with pytest.raises(InvalidTransition):
        cancel_sample_request(db, researcher, request.id)
    assert counts(db) == before
    assert request.state == done


def test_open_sample_requests_per_manager(db, manager, other_manager, admin, researcher, technician_only):
    mine = sample_request(db, researcher, technician_only)
    done = sample_request(db, researcher, technician_only)
    reject_sample_request(db, manager, done.id, "no")
    elsewhere = sample_request(db, researcher, make_resource(db))
    assert [r.id for r in open_sample_requests(db, manager)] == [mine.id]
    assert mine.id not in [r.id for r in open_sample_requests(db, other_manager)]
    assert {mine.id, elsewhere.id} <= {r.id for r in open_sample_requests(db, admin)}
    assert open_sample_requests(db, researcher) == []
