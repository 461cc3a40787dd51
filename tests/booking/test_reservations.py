"""Reservation services: booking, clashes, rules, permissions, the state machine, audit, repeating series.

Every test runs on SQLite and PostgreSQL. NOW is Tuesday 1 December 2026, 08:00 in Shanghai; the facility is
open on weekdays 08:00-18:00 and the instrument has the default rules (30-min grid, 30 min to 8 h, booked at
least 1 h ahead, at most 90 days ahead, cancellation deadline 24 h).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from booking.errors import InvalidTransition, ReservationConflict, RuleViolation
from booking.models import (
    OperationMode,
    RepeatFrequency,
    Reservation,
    ReservationKind,
    ReservationSeries,
    ReservationState,
    ResourceKind,
    ResourceStatus,
)
from booking.reservations import (
    MAX_REPEATS,
    BookingRequest,
    approve_reservation,
    cancel_reservation,
    close_reservation,
    create_reservation,
    create_series,
    modify_reservation,
    occurrences,
    preview,
    preview_series,
    reject_reservation,
)
from core.accounts.models import Role
from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput, NotFound
from tests.booking.helpers import (
    BERLIN,
    EVERY_DAY_9_TO_17,
    NOW,
    audit_actions,
    last_audit_id,
    mail_topics,
    sh,
    written,
)
from tests.factories import (
    make_blackout,
    make_facility,
    make_organisation,
    make_qualification,
    make_reservation,
    make_resource,
    make_user,
)

S = ReservationState


def book(db, user, resource, start, end, *, now=NOW, **fields) -> Reservation:
    return create_reservation(db, user, BookingRequest(resource.id, start, end, **fields), now=now)


def reloaded(db, reservation: Reservation) -> Reservation:
    """The row as the database has it (after flushing what the service changed, as the caller's commit would)."""
    db.flush()
    db.expire_all()
    return db.get(Reservation, reservation.id)


def last_audit(db) -> AuditEntry:
    return db.scalar(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1))


# --- creating ----------------------------------------------------------------------------------------------

def test_create_confirms_a_self_service_booking(db, researcher, resource):
    since = last_audit_id(db)
    r = book(db, researcher, resource, sh(2, 9), sh(2, 11), purpose="  imaging of Li-ion cathodes  ")

    assert (r.state, r.kind, r.user_id, r.billed_org_id) == (
        S.CONFIRMED, ReservationKind.SELF_SERVICE, researcher.id, researcher.organisation_id)
    assert r.purpose == "imaging of Li-ion cathodes"
    stored = reloaded(db, r)
    assert (stored.starts_at, stored.ends_at) == (sh(2, 9), sh(2, 11))
    assert stored.starts_at.tzinfo is UTC
    assert stored.starts_at.hour == 1
    assert audit_actions(db, since) == ["reservation.created"]
    entry = last_audit(db)
    assert (entry.actor_id, entry.target_type, entry.target_id) == (researcher.id, "reservation", str(r.id))
    assert entry.data == {"resource_id": resource.id, "state": "confirmed", "starts_at": "2026-12-02T01:00:00+00:00",
                          "ends_at": "2026-12-02T03:00:00+00:00"}
    assert mail_topics(db) == [("reservation.confirmed", researcher.email)]


@pytest.mark.parametrize(("actor", "state", "topics"), [
    ("researcher", S.PENDING, ["reservation.requested", "reservation.requested.manager"]),
    ("other_manager", S.PENDING, ["reservation.requested", "reservation.requested.manager"]),
    ("manager", S.CONFIRMED, ["reservation.confirmed"]),
    ("admin", S.CONFIRMED, ["reservation.confirmed"]),
])
def test_approval_resource_books_pending_except_for_its_own_managers(db, request, facility, manager, actor, state,
                                                                     topics):
    user = request.getfixturevalue(actor)
    resource = make_resource(db, facility=facility, approval_required=True)
    since = last_audit_id(db)
    r = book(db, user, resource, sh(2, 9), sh(2, 11))
    assert r.state == state
    assert [topic for topic, _ in mail_topics(db)] == topics
    if state == S.PENDING:
        assert mail_topics(db)[1] == ("reservation.requested.manager", manager.email)
    assert audit_actions(db, since) == ["reservation.created"]
    assert last_audit(db).data["state"] == state


def test_unknown_resource(db, researcher):
    before = written(db)
    with pytest.raises(NotFound):
        create_reservation(db, researcher, BookingRequest(10**9, sh(2, 9), sh(2, 10)), now=NOW)
    assert written(db) == before


# --- clashes -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "end"), [
    pytest.param(sh(2, 9), sh(2, 11), id="same"),
    pytest.param(sh(2, 9, 30), sh(2, 10, 30), id="inside"),
    pytest.param(sh(2, 8), sh(2, 12), id="around"),
    pytest.param(sh(2, 8), sh(2, 9, 30), id="overlaps-the-start"),
    pytest.param(sh(2, 10, 30), sh(2, 12), id="overlaps-the-end"),
])
def test_overlap_is_a_conflict_naming_the_clash(db, researcher, resource, start, end):
    existing = book(db, make_user(db), resource, sh(2, 9), sh(2, 11))
    before = written(db)
    with pytest.raises(ReservationConflict) as exc:
        book(db, researcher, resource, start, end)
    assert exc.value.details["clashes"] == [{
        "type": "reservation", "id": existing.id, "starts_at": "2026-12-02T01:00:00+00:00",
        "ends_at": "2026-12-02T03:00:00+00:00", "state": "confirmed"}]
    assert str(exc.value) == "The time overlaps another reservation from 2026-12-02 09:00 to 2026-12-02 11:00."
    assert written(db) == before


def test_conflict_message_shows_the_facilitys_local_time(db, researcher, manager):
    facility = make_facility(db, managers=(manager,), timezone="Europe/Berlin", opening_hours=EVERY_DAY_9_TO_17)
    resource = make_resource(db, facility=facility)
    berlin_9 = datetime(2026, 12, 9, 9, tzinfo=BERLIN)  # 08:00 UTC, 16:00 in Shanghai
    book(db, make_user(db), resource, berlin_9, berlin_9 + timedelta(hours=2))
    with pytest.raises(ReservationConflict) as exc:
        book(db, researcher, resource, berlin_9 + timedelta(hours=1), berlin_9 + timedelta(hours=3))
    assert "from 2026-12-09 09:00 to 2026-12-09 11:00" in str(exc.value)


@pytest.mark.parametrize(("start", "end"), [(sh(2, 8), sh(2, 9)), (sh(2, 11), sh(2, 12))],
                         ids=["just-before", "just-after"])
def test_back_to_back_is_allowed(db, researcher, resource, start, end):
    book(db, make_user(db), resource, sh(2, 9), sh(2, 11))
    assert book(db, researcher, resource, start, end).state == S.CONFIRMED


@pytest.mark.parametrize(("state", "blocks"), [
    (S.PENDING, True), (S.CONFIRMED, True),
    (S.CANCELLED, False), (S.REJECTED, False), (S.COMPLETED, False), (S.NO_SHOW, False),
])
def test_only_live_reservations_hold_their_slot(db, researcher, resource, state, blocks):
    make_reservation(db, resource=resource, starts_at=sh(2, 9), ends_at=sh(2, 11), state=state)
    if blocks:
        with pytest.raises(ReservationConflict):
            book(db, researcher, resource, sh(2, 10), sh(2, 12))
    else:
        assert book(db, researcher, resource, sh(2, 10), sh(2, 12)).state == S.CONFIRMED


def test_another_resources_reservation_does_not_clash(db, researcher, resource, facility):
    make_reservation(db, resource=make_resource(db, facility=facility), starts_at=sh(2, 9), ends_at=sh(2, 11))
    assert book(db, researcher, resource, sh(2, 9), sh(2, 11)).state == S.CONFIRMED


def test_blackout_is_a_conflict(db, researcher, resource):
    blackout = make_blackout(db, resource=resource, starts_at=sh(2, 10), ends_at=sh(2, 14))
    before = written(db)
    with pytest.raises(ReservationConflict) as exc:
        book(db, researcher, resource, sh(2, 9), sh(2, 11))
    assert exc.value.details["clashes"] == [{
        "type": "blackout", "id": blackout.id, "starts_at": "2026-12-02T02:00:00+00:00",
        "ends_at": "2026-12-02T06:00:00+00:00", "state": "maintenance"}]
    assert str(exc.value) == "The time overlaps a blackout from 2026-12-02 10:00 to 2026-12-02 14:00."
    assert written(db) == before
    assert book(db, researcher, resource, sh(2, 14), sh(2, 15)).state == S.CONFIRMED  # right after it


# --- rules, qualifications and limits -------------------------------------------------------------------------

def test_rule_violation_names_the_first_and_lists_all(db, researcher, resource):
    before = written(db)
    with pytest.raises(RuleViolation) as exc:
        book(db, researcher, resource, sh(2, 17, 10), sh(2, 19, 10))
    assert exc.value.code == "granularity"
    assert [v["code"] for v in exc.value.details["violations"]] == ["granularity", "outside_bookable_hours"]
    assert written(db) == before


@pytest.mark.parametrize(("actor", "expected"), [("researcher", "lead_time"), ("manager", None), ("admin", None)])
def test_lead_time_binds_researchers_not_managers(db, request, resource, actor, expected):
    user = request.getfixturevalue(actor)
    if expected:
        with pytest.raises(RuleViolation) as exc:
            book(db, user, resource, sh(1, 8, 30), sh(1, 9, 30))
        assert exc.value.code == expected
        assert str(exc.value) == "This resource must be booked at least 1 h in advance."
    else:
        assert book(db, user, resource, sh(1, 8, 30), sh(1, 9, 30)).state == S.CONFIRMED


QUALIFICATIONS = [
    pytest.param(None, "not_qualified", id="none"),
    pytest.param({"expires_at": sh(2, 8)}, "not_qualified", id="expired-before-the-booking-starts"),
    pytest.param({"revoked_at": sh(30, 12, month=11)}, "not_qualified", id="revoked"),
    pytest.param({}, None, id="valid"),
    pytest.param({"expires_at": sh(31, 0)}, None, id="valid-until-later"),
]


@pytest.mark.parametrize(("qualification", "expected"), QUALIFICATIONS)
def test_qualification_required(db, researcher, facility, qualification, expected):
    resource = make_resource(db, facility=facility, qualification_required=True)
    if qualification is not None:
        make_qualification(db, researcher, resource, **qualification)
    before = written(db)
    if expected:
        with pytest.raises(RuleViolation) as exc:
            book(db, researcher, resource, sh(2, 9), sh(2, 11))
        assert exc.value.code == expected
        assert written(db) == before
    else:
        assert book(db, researcher, resource, sh(2, 9), sh(2, 11)).state == S.CONFIRMED


def test_qualification_for_another_resource_does_not_count(db, researcher, facility):
    resource = make_resource(db, facility=facility, qualification_required=True)
    make_qualification(db, researcher, make_resource(db, facility=facility))
    with pytest.raises(RuleViolation, match="qualification"):
        book(db, researcher, resource, sh(2, 9), sh(2, 11))


def test_facility_managers_need_no_qualification(db, manager, facility):
    resource = make_resource(db, facility=facility, qualification_required=True)
    assert book(db, manager, resource, sh(2, 9), sh(2, 11)).state == S.CONFIRMED


@pytest.mark.parametrize(("overrides", "code"), [
    ({"status": ResourceStatus.RETIRED}, "resource_unavailable"),
    ({"operation_mode": OperationMode.TECHNICIAN}, "self_service_not_offered"),
])
def test_resource_that_cannot_be_booked_self_service(db, researcher, facility, manager, overrides, code):
    resource = make_resource(db, facility=facility, **overrides)
    for user in (researcher, manager):  # not even its managers book it for themselves
        before = written(db)
        with pytest.raises(RuleViolation) as exc:
            book(db, user, resource, sh(2, 9), sh(2, 11))
        assert exc.value.code == code
        assert written(db) == before


def test_max_active_per_user(db, researcher, manager, facility):
    resource = make_resource(db, facility=facility, max_active_per_user=2)
    # these do not count: cancelled, already over, someone else's
    make_reservation(db, resource=resource, user=researcher, starts_at=sh(3, 9), ends_at=sh(3, 10),
                     state=S.CANCELLED)
    make_reservation(db, resource=resource, user=researcher, starts_at=sh(30, 9, month=11),
                     ends_at=sh(30, 10, month=11))
    make_reservation(db, resource=resource, starts_at=sh(4, 9), ends_at=sh(4, 10))
    book(db, researcher, resource, sh(2, 9), sh(2, 10))
    make_reservation(db, resource=resource, user=researcher, starts_at=sh(2, 14), ends_at=sh(2, 15),
                     state=S.PENDING)  # a pending one does
    before = written(db)
    with pytest.raises(RuleViolation) as exc:
        book(db, researcher, resource, sh(2, 11), sh(2, 12))
    assert exc.value.code == "too_many_active"
    assert str(exc.value) == "You already have 2 active bookings on this resource."
    assert written(db) == before
    assert book(db, manager, resource, sh(2, 11), sh(2, 12))  # managers are not limited


@pytest.mark.parametrize(("actor", "billed", "expected"), [
    ("researcher", "own", None),
    ("researcher", "other", "billed_org_not_allowed"),
    ("manager", "other", None),
])
def test_billed_organisation(db, request, resource, actor, billed, expected):
    user = request.getfixturevalue(actor)
    org_id = user.organisation_id if billed == "own" else make_organisation(db).id
    if expected:
        before = written(db)
        with pytest.raises(RuleViolation) as exc:
            book(db, user, resource, sh(2, 9), sh(2, 11), billed_org_id=org_id)
        assert exc.value.code == expected
        assert written(db) == before
    else:
        assert book(db, user, resource, sh(2, 9), sh(2, 11), billed_org_id=org_id).billed_org_id == org_id


def test_billing_an_unknown_organisation(db, manager, resource):
    before = written(db)
    with pytest.raises(NotFound):
        book(db, manager, resource, sh(2, 9), sh(2, 11), billed_org_id=10**9)
    assert written(db) == before


@pytest.mark.parametrize(("start", "end"), [
    (sh(2, 9).replace(tzinfo=None), sh(2, 11)),
    (sh(2, 9), sh(2, 11).replace(tzinfo=None)),
], ids=["naive-start", "naive-end"])
def test_naive_datetimes_are_refused(db, researcher, resource, start, end):
    before = written(db)
    with pytest.raises(ValueError, match="naive"):
        book(db, researcher, resource, start, end)
    assert written(db) == before


@pytest.mark.parametrize(("fields", "field"), [
    ({"purpose": "x" * 2001}, "purpose"),
    ({"sample_count": 0}, "sample_count"),
    ({"sample_count": 10_001}, "sample_count"),
])
def test_invalid_fields(db, researcher, resource, fields, field):
    before = written(db)
    with pytest.raises(InvalidInput) as exc:
        book(db, researcher, resource, sh(2, 9), sh(2, 11), **fields)
    assert list(exc.value.fields) == [field]
    assert written(db) == before


def test_longest_purpose_and_sample_count_are_accepted(db, researcher, resource):
    r = book(db, researcher, resource, sh(2, 9), sh(2, 11), purpose="研" * 2000, sample_count=10_000)
    assert (len(r.purpose), r.sample_count) == (2000, 10_000)


def test_preview_reports_without_writing(db, researcher, resource):
    existing = book(db, make_user(db), resource, sh(2, 9), sh(2, 11))
    before = written(db)
    problems = preview(db, researcher, BookingRequest(resource.id, sh(2, 10), sh(2, 19)), now=NOW)
    assert [v["code"] for v in problems.violations] == ["too_long", "outside_bookable_hours"]
    assert [c.id for c in problems.clashes] == [existing.id]
    assert not preview(db, researcher, BookingRequest(resource.id, sh(2, 11), sh(2, 12)), now=NOW)
    assert written(db) == before


# --- modifying ---------------------------------------------------------------------------------------------

@pytest.fixture
def booked(db, researcher, resource) -> Reservation:
    """The researcher's confirmed booking, Wednesday 09:00-11:00."""
    reservation = book(db, researcher, resource, sh(2, 9), sh(2, 11))
    return reservation


def test_move_to_free_time(db, researcher, resource, booked):
    since = last_audit_id(db)
    modify_reservation(db, researcher, booked.id, starts_at=sh(3, 14), ends_at=sh(3, 16), now=NOW)
    stored = reloaded(db, booked)
    assert (stored.starts_at, stored.ends_at, stored.state) == (sh(3, 14), sh(3, 16), S.CONFIRMED)
    assert audit_actions(db, since) == ["reservation.modified"]
    assert last_audit(db).data == {
        "before": {"starts_at": "2026-12-02T01:00:00+00:00", "ends_at": "2026-12-02T03:00:00+00:00",
                   "state": "confirmed"},
        "after": {"starts_at": "2026-12-03T06:00:00+00:00", "ends_at": "2026-12-03T08:00:00+00:00",
                  "state": "confirmed"}}
    assert mail_topics(db)[-1] == ("reservation.modified", researcher.email)
    assert book(db, make_user(db), resource, sh(2, 9), sh(2, 11))  # the old slot is free again


def test_moving_an_approved_booking_needs_a_new_approval(db, researcher, manager, resource):
    resource.approval_required = True
    pending = book(db, researcher, resource, sh(2, 9), sh(2, 11))
    approve_reservation(db, manager, pending.id, now=NOW)
    assert pending.state == S.CONFIRMED
    modify_reservation(db, researcher, pending.id, starts_at=sh(3, 14), ends_at=sh(3, 16), now=NOW)
    assert reloaded(db, pending).state == S.PENDING
    assert ("reservation.requested", researcher.email) in mail_topics(db)


def test_withdrawing_a_pending_request_late_is_not_a_late_cancellation(db, researcher, resource):
    resource.approval_required = True
    resource.cancellation_deadline_h = 48
    pending = book(db, researcher, resource, sh(2, 9), sh(2, 11))
    assert pending.state == S.PENDING
    cancel_reservation(db, researcher, pending.id, now=NOW)  # NOW is inside the 48 h deadline
    assert reloaded(db, pending).late_cancellation is False


def test_move_overlapping_its_own_old_window(db, researcher, booked):
    modify_reservation(db, researcher, booked.id, starts_at=sh(2, 10), ends_at=sh(2, 12), now=NOW)
    assert (reloaded(db, booked).starts_at, booked.ends_at) == (sh(2, 10), sh(2, 12))


def test_move_into_a_clash_is_refused_and_changes_nothing(db, researcher, resource, booked):
    other = book(db, make_user(db), resource, sh(3, 14), sh(3, 16))
    before = written(db)
    with pytest.raises(ReservationConflict) as exc:
        modify_reservation(db, researcher, booked.id, starts_at=sh(3, 15), ends_at=sh(3, 17), now=NOW)
    assert [c["id"] for c in exc.value.details["clashes"]] == [other.id]
    assert written(db) == before
    stored = reloaded(db, booked)
    assert (stored.starts_at, stored.ends_at) == (sh(2, 9), sh(2, 11))


def test_move_breaking_a_rule_is_refused(db, researcher, booked):
    before = written(db)
    with pytest.raises(RuleViolation) as exc:
        modify_reservation(db, researcher, booked.id, ends_at=sh(2, 19), now=NOW)
    assert exc.value.code == "too_long"
    assert written(db) == before
    assert reloaded(db, booked).ends_at == sh(2, 11)


@pytest.mark.parametrize(("actor", "allowed"), [
    ("researcher", True), ("manager", True), ("admin", True), ("other_manager", False), ("stranger", False),
])
def test_who_may_modify(db, request, booked, actor, allowed):
    user = make_user(db) if actor == "stranger" else request.getfixturevalue(actor)
    if allowed:
        modify_reservation(db, user, booked.id, starts_at=sh(2, 13), ends_at=sh(2, 15), now=NOW)
        assert reloaded(db, booked).starts_at == sh(2, 13)
    else:
        before = written(db)
        with pytest.raises(Forbidden):
            modify_reservation(db, user, booked.id, starts_at=sh(2, 13), ends_at=sh(2, 15), now=NOW)
        assert written(db) == before
        assert reloaded(db, booked).starts_at == sh(2, 9)


def test_purpose_only_change_keeps_the_window(db, researcher, booked):
    modify_reservation(db, researcher, booked.id, purpose="  new purpose ", now=NOW)
    stored = reloaded(db, booked)
    assert (stored.purpose, stored.starts_at, stored.ends_at) == ("new purpose", sh(2, 9), sh(2, 11))


def test_a_pending_booking_stays_pending_when_moved(db, researcher, facility):
    resource = make_resource(db, facility=facility, approval_required=True)
    r = book(db, researcher, resource, sh(2, 9), sh(2, 11))
    modify_reservation(db, researcher, r.id, starts_at=sh(3, 9), ends_at=sh(3, 11), now=NOW)
    assert reloaded(db, r).state == S.PENDING


def test_cannot_modify_once_started_or_cancelled(db, researcher, booked):
    before = written(db)
    with pytest.raises(RuleViolation) as exc:
        modify_reservation(db, researcher, booked.id, ends_at=sh(2, 12), now=sh(2, 9, 30))
    assert exc.value.code == "too_late_to_cancel"
    assert written(db) == before
    cancel_reservation(db, researcher, booked.id, now=NOW)
    before = written(db)
    with pytest.raises(InvalidTransition):
        modify_reservation(db, researcher, booked.id, starts_at=sh(3, 9), ends_at=sh(3, 11), now=NOW)
    assert written(db) == before


def test_modify_unknown_reservation(db, researcher):
    with pytest.raises(NotFound):
        modify_reservation(db, researcher, 10**9, purpose="x", now=NOW)


# --- cancelling --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("actor", "now", "late"), [
    pytest.param("researcher", NOW, False, id="owner-25h-ahead"),
    pytest.param("researcher", sh(1, 9), False, id="owner-exactly-at-the-deadline"),
    pytest.param("researcher", sh(1, 10), True, id="owner-23h-ahead"),
    pytest.param("researcher", sh(2, 10), True, id="owner-while-it-runs"),
    pytest.param("manager", sh(1, 10), False, id="manager-inside-the-deadline"),
    pytest.param("admin", sh(2, 8), False, id="admin-inside-the-deadline"),
])
def test_cancel(db, request, researcher, manager, booked, actor, now, late):
    user = request.getfixturevalue(actor)
    since = last_audit_id(db)
    mails_before = len(mail_topics(db))
    cancel_reservation(db, user, booked.id, reason="  plans changed ", now=now)
    stored = reloaded(db, booked)
    assert (stored.state, stored.late_cancellation, stored.cancelled_at, stored.decision_note) == (
        S.CANCELLED, late, now, "plans changed")
    assert audit_actions(db, since) == ["reservation.cancelled"]
    assert last_audit(db).data == {"before": "confirmed", "after": "cancelled"}
    assert mail_topics(db)[mails_before:] == [("reservation.cancelled", researcher.email),
                                              ("reservation.cancelled.manager", manager.email)]


def test_cancelling_a_technician_run_booking_late_is_not_a_late_cancellation(db, researcher, resource):
    r = make_reservation(db, resource=resource, user=researcher, starts_at=sh(2, 9), ends_at=sh(2, 11),
                         kind=ReservationKind.TECHNICIAN)
    cancel_reservation(db, researcher, r.id, now=sh(2, 8))
    assert reloaded(db, r).late_cancellation is False


def test_no_deadline_means_never_late_before_the_start(db, researcher, facility):
    resource = make_resource(db, facility=facility, cancellation_deadline_h=0)
    r = book(db, researcher, resource, sh(2, 9), sh(2, 11))
    cancel_reservation(db, researcher, r.id, now=sh(2, 8, 59))
    assert reloaded(db, r).late_cancellation is False


def test_cancel_twice_is_an_invalid_transition(db, researcher, booked):
    cancel_reservation(db, researcher, booked.id, now=NOW)
    before = written(db)
    with pytest.raises(InvalidTransition) as exc:
        cancel_reservation(db, researcher, booked.id, now=NOW)
    assert (exc.value.details["state"], exc.value.details["action"]) == ("cancelled", "cancelled")
    assert "cancelled" in str(exc.value)
    assert written(db) == before


def test_cannot_cancel_after_the_end(db, researcher, booked):
    before = written(db)
    with pytest.raises(RuleViolation) as exc:
        cancel_reservation(db, researcher, booked.id, now=sh(2, 11))
    assert exc.value.code == "too_late_to_cancel"
    assert written(db) == before
    assert reloaded(db, booked).state == S.CONFIRMED


@pytest.mark.parametrize("actor", ["other_manager", "stranger"])
def test_strangers_cannot_cancel(db, request, booked, actor):
    user = make_user(db) if actor == "stranger" else request.getfixturevalue(actor)
    before = written(db)
    with pytest.raises(Forbidden):
        cancel_reservation(db, user, booked.id, now=NOW)
    assert written(db) == before
    assert reloaded(db, booked).state == S.CONFIRMED


# --- approving and rejecting ---------------------------------------------------------------------------------

@pytest.fixture
def pending(db, researcher, facility) -> Reservation:
    resource = make_resource(db, facility=facility, approval_required=True)
    return book(db, researcher, resource, sh(2, 9), sh(2, 11))


DECIDERS = [("manager", True), ("admin", True), ("other_manager", False), ("researcher", False),
            ("unscoped_lab_manager", False)]


def decider(db, request, actor):
    if actor == "unscoped_lab_manager":  # has the role but manages no facility
        return make_user(db, roles=(Role.LAB_MANAGER,))
    return request.getfixturevalue(actor)


@pytest.mark.parametrize(("actor", "allowed"), DECIDERS)
def test_who_may_approve(db, request, researcher, pending, actor, allowed):
    user = decider(db, request, actor)
    before, since = written(db), last_audit_id(db)
    if not allowed:
        with pytest.raises(Forbidden):
            approve_reservation(db, user, pending.id, note="ok", now=NOW)
        assert written(db) == before
        assert reloaded(db, pending).state == S.PENDING
        return
    approve_reservation(db, user, pending.id, note=" looks fine ", now=NOW)
    stored = reloaded(db, pending)
    assert (stored.state, stored.decided_by_id, stored.decided_at, stored.decision_note) == (
        S.CONFIRMED, user.id, NOW, "looks fine")
    assert audit_actions(db, since) == ["reservation.approved"]
    assert mail_topics(db)[-1] == ("reservation.approved", researcher.email)


@pytest.mark.parametrize(("actor", "allowed"), DECIDERS)
def test_who_may_reject(db, request, researcher, pending, actor, allowed):
    user = decider(db, request, actor)
    before, since = written(db), last_audit_id(db)
    if not allowed:
        with pytest.raises(Forbidden):
            reject_reservation(db, user, pending.id, note="no", now=NOW)
        assert written(db) == before
        assert reloaded(db, pending).state == S.PENDING
        return
    reject_reservation(db, user, pending.id, note="sample not suitable", now=NOW)
    stored = reloaded(db, pending)
    assert (stored.state, stored.decided_by_id, stored.decision_note) == (S.REJECTED, user.id, "sample not suitable")
    assert audit_actions(db, since) == ["reservation.rejected"]
    assert mail_topics(db)[-1] == ("reservation.rejected", researcher.email)
    # the slot is free again
    assert book(db, make_user(db), stored.resource, sh(2, 9), sh(2, 11)).state == S.PENDING


# --- closing -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("no_show", "state", "action"), [
    (False, S.COMPLETED, "reservation.completed"), (True, S.NO_SHOW, "reservation.marked_no_show")])
def test_close_after_the_start(db, manager, booked, no_show, state, action):
    since = last_audit_id(db)
    close_reservation(db, manager, booked.id, no_show=no_show, now=sh(2, 9))
    assert reloaded(db, booked).state == state
    assert audit_actions(db, since) == [action]


def test_close_only_after_the_start_and_only_by_managers(db, researcher, manager, booked):
    before = written(db)
    with pytest.raises(InvalidTransition):
        close_reservation(db, manager, booked.id, no_show=False, now=sh(2, 8, 59))
    with pytest.raises(Forbidden):
        close_reservation(db, researcher, booked.id, no_show=False, now=sh(2, 12))
    assert written(db) == before
    assert reloaded(db, booked).state == S.CONFIRMED


# --- the state machine -------------------------------------------------------------------------------------

ACTIONS = {
    "approve": lambda db, actor, rid: approve_reservation(db, actor, rid, now=NOW),
    "reject": lambda db, actor, rid: reject_reservation(db, actor, rid, now=NOW),
    "cancel": lambda db, actor, rid: cancel_reservation(db, actor, rid, now=NOW),
    "complete": lambda db, actor, rid: close_reservation(db, actor, rid, no_show=False, now=sh(2, 10)),
    "no_show": lambda db, actor, rid: close_reservation(db, actor, rid, no_show=True, now=sh(2, 10)),
}
# from state → {action: resulting state}; every other action is refused
ALLOWED = {
    S.PENDING: {"approve": S.CONFIRMED, "reject": S.REJECTED, "cancel": S.CANCELLED},
    S.CONFIRMED: {"cancel": S.CANCELLED, "complete": S.COMPLETED, "no_show": S.NO_SHOW},
    S.REJECTED: {}, S.CANCELLED: {}, S.COMPLETED: {}, S.NO_SHOW: {},
}


@pytest.mark.parametrize(("state", "action"), [(s, a) for s in ALLOWED for a in ACTIONS])
def test_state_machine(db, manager, resource, state, action):
    r = make_reservation(db, resource=resource, starts_at=sh(2, 9), ends_at=sh(2, 11), state=state)
    target = ALLOWED[state].get(action)
    before = written(db)
    if target is None:
        with pytest.raises(InvalidTransition):
            ACTIONS[action](db, manager, r.id)
        assert written(db) == before
        assert reloaded(db, r).state == state
    else:
        ACTIONS[action](db, manager, r.id)
        assert reloaded(db, r).state == target
        assert written(db)["audit_entry"] == before["audit_entry"] + 1


# --- repeating series --------------------------------------------------------------------------------------

def berlin(month: int, day: int, hour: int = 0, year: int = 2027) -> datetime:
    return datetime(year, month, day, hour, tzinfo=BERLIN)


@pytest.fixture
def berlin_resource(db, manager):
    """An instrument in Berlin, bookable every day 09:00-17:00, up to a year ahead."""
    facility = make_facility(db, managers=(manager,), timezone="Europe/Berlin", opening_hours=EVERY_DAY_9_TO_17)
    return make_resource(db, facility=facility, horizon_days=365)


def series_request(resource, start: datetime, hours: int = 2) -> BookingRequest:
    return BookingRequest(resource.id, start, start + timedelta(hours=hours), purpose="weekly run")


@pytest.mark.parametrize(("frequency", "start", "now", "utc_hours", "dates"), [
    pytest.param(RepeatFrequency.WEEKLY, berlin(3, 16, 9), berlin(3, 1), [8, 8, 7, 7],
                 ["03-16", "03-23", "03-30", "04-06"], id="weekly-across-spring-forward"),
    pytest.param(RepeatFrequency.DAILY, berlin(3, 26, 9), berlin(3, 1), [8, 8, 7, 7],
                 ["03-26", "03-27", "03-28", "03-29"], id="daily-across-spring-forward"),
    pytest.param(RepeatFrequency.DAILY, berlin(10, 29, 9), berlin(10, 1), [7, 7, 8, 8],
                 ["10-29", "10-30", "10-31", "11-01"], id="daily-across-fall-back"),
])
def test_series_keeps_the_local_wall_time_across_dst(db, researcher, berlin_resource, frequency, start, now,
                                                    utc_hours, dates):
    since = last_audit_id(db)
    outcome = create_series(db, researcher, series_request(berlin_resource, start), frequency, 4,
                            skip_conflicts=False, now=now)
    assert outcome.skipped == []
    created = sorted(outcome.created, key=lambda r: r.starts_at)
    local = [(r.starts_at.astimezone(BERLIN), r.ends_at.astimezone(BERLIN)) for r in created]
    assert [f"{s:%m-%d}" for s, _ in local] == dates
    assert {(s.hour, s.minute, e.hour) for s, e in local} == {(9, 0, 11)}
    assert [r.starts_at.astimezone(UTC).hour for r in created] == utc_hours
    assert all(r.ends_at - r.starts_at == timedelta(hours=2) for r in created)
    series = outcome.series
    assert (series.frequency, series.occurrences, series.user_id) == (frequency, 4, researcher.id)
    assert {r.series_id for r in created} == {series.id}
    assert audit_actions(db, since) == ["reservation.created"] * 4 + ["reservation_series.created"]
    assert last_audit(db).data == {"created": 4, "skipped": 0}


def test_series_all_or_nothing_aborts_without_writing(db, researcher, berlin_resource):
    clash = make_reservation(db, resource=berlin_resource, starts_at=berlin(3, 30, 10), ends_at=berlin(3, 30, 12))
    before = written(db)
    with pytest.raises(ReservationConflict) as exc:
        create_series(db, researcher, series_request(berlin_resource, berlin(3, 16, 9)), RepeatFrequency.WEEKLY, 4,
                      skip_conflicts=False, now=berlin(3, 1))
    assert [c["id"] for c in exc.value.details["clashes"]] == [clash.id]
    assert "2027-03-30 10:00" in str(exc.value)  # Berlin time
    assert written(db) == before


def test_series_all_or_nothing_aborts_on_a_rule_too(db, researcher, manager):
    facility = make_facility(db, managers=(manager,), timezone="Europe/Berlin", opening_hours=EVERY_DAY_9_TO_17)
    resource = make_resource(db, facility=facility, horizon_days=20)
    before = written(db)
    with pytest.raises(RuleViolation) as exc:
        create_series(db, researcher, series_request(resource, berlin(3, 16, 9)), RepeatFrequency.WEEKLY, 4,
                      skip_conflicts=False, now=berlin(3, 1))
    assert exc.value.code == "beyond_horizon"
    assert written(db) == before


def test_series_skipping_conflicts_books_the_rest(db, researcher, berlin_resource):
    clash = make_reservation(db, resource=berlin_resource, starts_at=berlin(3, 30, 10), ends_at=berlin(3, 30, 12))
    since = last_audit_id(db)
    outcome = create_series(db, researcher, series_request(berlin_resource, berlin(3, 16, 9)),
                            RepeatFrequency.WEEKLY, 4, skip_conflicts=True, now=berlin(3, 1))
    assert [f"{r.starts_at.astimezone(BERLIN):%m-%d %H:%M}" for r in outcome.created] == [
        "03-16 09:00", "03-23 09:00", "04-06 09:00"]
    ((skipped_request, problems),) = outcome.skipped
    assert skipped_request.starts_at == berlin(3, 30, 9)
    assert [c.id for c in problems.clashes] == [clash.id]
    assert problems.violations == []
    assert outcome.series.occurrences == 4
    assert audit_actions(db, since) == ["reservation.created"] * 3 + ["reservation_series.created"]
    assert last_audit(db).data == {"created": 3, "skipped": 1}


def test_series_with_nothing_bookable_writes_nothing(db, researcher, berlin_resource):
    make_blackout(db, resource=berlin_resource, starts_at=berlin(3, 1), ends_at=berlin(5, 1))
    before = written(db)
    outcome = create_series(db, researcher, series_request(berlin_resource, berlin(3, 16, 9)),
                            RepeatFrequency.WEEKLY, 3, skip_conflicts=True, now=berlin(3, 1))
    assert (outcome.series, outcome.created, len(outcome.skipped)) == (None, [], 3)
    assert written(db) == before


def test_series_respects_the_active_booking_limit(db, researcher, manager):
    """The limit counts the series' own earlier occurrences: skipped when skipping, refused otherwise."""
    facility = make_facility(db, managers=(manager,), timezone="Europe/Berlin", opening_hours=EVERY_DAY_9_TO_17)
    resource = make_resource(db, facility=facility, horizon_days=365, max_active_per_user=2)
    request = series_request(resource, berlin(3, 16, 9))
    before = written(db)
    with pytest.raises(RuleViolation) as exc:
        create_series(db, researcher, request, RepeatFrequency.WEEKLY, 3, skip_conflicts=False, now=berlin(3, 1))
    assert exc.value.code == "too_many_active"
    assert written(db) == before
    outcome = create_series(db, researcher, request, RepeatFrequency.WEEKLY, 3, skip_conflicts=True,
                            now=berlin(3, 1))
    assert len(outcome.created) == 2
    ((skipped_request, problems),) = outcome.skipped
    assert skipped_request.starts_at == berlin(3, 30, 9)
    assert [v["code"] for v in problems.violations] == ["too_many_active"]


@pytest.mark.parametrize("count", [0, MAX_REPEATS + 1, 100])
def test_series_length_is_limited(db, researcher, berlin_resource, count):
    before = written(db)
    with pytest.raises(InvalidInput) as exc:
        create_series(db, researcher, series_request(berlin_resource, berlin(3, 16, 9)), RepeatFrequency.DAILY,
                      count, skip_conflicts=True, now=berlin(3, 1))
    assert list(exc.value.fields) == ["occurrences"]
    assert written(db) == before


def test_occurrences_allows_exactly_52():
    got = occurrences(BookingRequest(1, berlin(1, 4, 9), berlin(1, 4, 11)), RepeatFrequency.WEEKLY, MAX_REPEATS,
                      BERLIN)
    assert MAX_REPEATS == 52
    assert len(got) == 52
    assert {g.starts_at.astimezone(BERLIN).hour for g in got} == {9}
    assert got[-1].starts_at.astimezone(BERLIN).date() == (berlin(1, 4) + timedelta(weeks=51)).date()


def test_preview_series_writes_nothing(db, researcher, berlin_resource):
    make_reservation(db, resource=berlin_resource, starts_at=berlin(3, 17, 9), ends_at=berlin(3, 17, 10))
    before = written(db)
    previews = preview_series(db, researcher, series_request(berlin_resource, berlin(3, 16, 9)),
                              RepeatFrequency.DAILY, 3, now=berlin(3, 1))
    assert [bool(problems) for _, problems in previews] == [False, True, False]
    assert written(db) == before
    assert db.scalar(select(ReservationSeries).where(ReservationSeries.resource_id == berlin_resource.id)) is None


def test_series_occurrences_that_overlap_each_other(db, researcher, manager):
    """Daily two-day batches on a pilot line: every other one overlaps its predecessor."""
    facility = make_facility(db, managers=(manager,), timezone="Europe/Berlin")
    line = make_resource(db, facility=facility, kind=ResourceKind.PILOT_LINE, granularity_min=1440,
                         min_duration_min=1440, max_duration_min=10 * 1440, lead_time_min=0, horizon_days=365)
    request = series_request(line, berlin(3, 27), hours=48)
    before = written(db)
    with pytest.raises(ReservationConflict):
        create_series(db, researcher, request, RepeatFrequency.DAILY, 3, skip_conflicts=False, now=berlin(3, 1))
    assert written(db) == before
    outcome = create_series(db, researcher, request, RepeatFrequency.DAILY, 3, skip_conflicts=True,
                            now=berlin(3, 1))
    assert [(f"{r.starts_at.astimezone(BERLIN):%m-%d %H:%M}", f"{r.ends_at.astimezone(BERLIN):%m-%d %H:%M}")
            for r in outcome.created] == [("03-27 00:00", "03-29 00:00"), ("03-29 00:00", "03-31 00:00")]
    ((skipped_request, problems),) = outcome.skipped
    assert skipped_request.starts_at == berlin(3, 28)
    assert [c.id for c in problems.clashes] == [outcome.created[0].id]
