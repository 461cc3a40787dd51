"""Reconciliation: reservations paired with measured usage sessions, each kind of outcome, unbooked use, and
exceptions resolved by the facility's lab managers (audited)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from billing.errors import PeriodClosed
from billing.models import ItemStatus, ReconciliationItem, ReconciliationKind, Resolution
from billing.reconcile import list_items, reconcile_period, resolve_item
from booking.models import ReservationState
from core.accounts.models import Role
from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput
from tests.billing.factories import AFTER_MONTH, IN_MONTH, MONTH, make_rate_card, make_usage_session
from tests.factories import make_organisation, make_reservation, make_resource, make_user, row_counts

H = timedelta(hours=1)
M = timedelta(minutes=1)


def book(db, resource, user, start=IN_MONTH, hours=2, **kw):
    return make_reservation(db, resource=resource, user=user, starts_at=start, ends_at=start + hours * H, **kw)


def run(db, actor=None, now=AFTER_MONTH):
    return reconcile_period(db, actor, MONTH, now=now)


def item_of(db, reservation=None, session=None) -> ReconciliationItem:
    query = select(ReconciliationItem)
    query = query.where(ReconciliationItem.reservation_id == reservation.id) if reservation is not None else \
        query.where(ReconciliationItem.usage_session_id == session.id)
    return db.scalars(query.execution_options(populate_existing=True)).one()


@pytest.mark.parametrize(("session_window", "kind", "status", "measured"), [
    ((5 * M, 110 * M), ReconciliationKind.USED, ItemStatus.RESOLVED, 105),
    ((-10 * M, 120 * M), ReconciliationKind.USED, ItemStatus.RESOLVED, 130),  # started early, within tolerance
    ((0 * M, 150 * M), ReconciliationKind.OVERRUN, ItemStatus.OPEN, 150),
    ((0 * M, 60 * M), ReconciliationKind.EARLY_FINISH, ItemStatus.RESOLVED, 60),
    (None, ReconciliationKind.NO_SHOW, ItemStatus.OPEN, 0),
])
def test_each_outcome_of_a_booking(db, finance, resource, device, card, researcher, session_window, kind, status,
                                   measured):
    reservation = book(db, resource, researcher)
    if session_window is not None:
        make_usage_session(db, device, IN_MONTH + session_window[0], IN_MONTH + session_window[1])

    report = run(db, finance)

    item = item_of(db, reservation)
    assert (item.kind, item.status, item.booked_minutes, item.measured_minutes) == (kind, status, 120, measured)
    assert report.created == 1
    assert report.open_exceptions == (1 if status == ItemStatus.OPEN else 0)


def test_marked_no_shows_and_late_cancellations_need_no_decision(db, resource, device, card, researcher):
    marked = book(db, resource, researcher, state=ReservationState.NO_SHOW)
    late = book(db, resource, researcher, start=IN_MONTH + 5 * H, state=ReservationState.CANCELLED,
                late_cancellation=True)
    in_time = book(db, resource, researcher, start=IN_MONTH + 10 * H, state=ReservationState.CANCELLED)

    run(db)

    assert (item_of(db, marked).kind, item_of(db, marked).status) == (ReconciliationKind.NO_SHOW, ItemStatus.RESOLVED)
    assert (item_of(db, late).kind, item_of(db, late).status) == (ReconciliationKind.LATE_CANCELLATION,
                                                                  ItemStatus.RESOLVED)
    assert db.scalar(select(ReconciliationItem).where(ReconciliationItem.reservation_id == in_time.id)) is None


def test_unbooked_use_is_attributed_to_a_known_operator_or_left_for_the_lab_manager(db, resource, device, card):
    operator = make_user(db, email="wang.li@example.test")
    known = make_usage_session(db, device, IN_MONTH, IN_MONTH + 45 * M, operator="wang.li@example.test")
    unknown = make_usage_session(db, device, IN_MONTH + 5 * H, IN_MONTH + 6 * H, operator="someone")

    report = run(db)

    attributed = item_of(db, session=known)
    assert (attributed.kind, attributed.status, attributed.resolution) == (
        ReconciliationKind.UNBOOKED, ItemStatus.RESOLVED, Resolution.ASSIGN)
    assert (attributed.assigned_user_id, attributed.assigned_org_id, attributed.measured_minutes) == (
        operator.id, operator.organisation_id, 45)
    left = item_of(db, session=unknown)
    assert (left.kind, left.status, left.assigned_org_id) == (ReconciliationKind.UNBOOKED, ItemStatus.OPEN, None)
    assert report.open_exceptions == 1


def test_open_sessions_and_unended_bookings_wait_as_exceptions(db, resource, device, card, researcher):
    reservation = book(db, resource, researcher)
    make_usage_session(db, device, IN_MONTH, None)

    run(db)

    item = item_of(db, reservation)
    assert item.status == ItemStatus.OPEN
    assert "in progress" in item.reason


def test_a_resource_without_a_device_bills_the_booking(db, facility, researcher):
    unmetered = make_resource(db, facility=facility)
    make_rate_card(db, unmetered)
    reservation = book(db, unmetered, researcher)

    run(db)

    item = item_of(db, reservation)
    assert (item.kind, item.status, item.metered, item.measured_minutes) == (
        ReconciliationKind.USED, ItemStatus.RESOLVED, False, 0)


def test_use_near_the_month_edge_belongs_to_its_booking_in_the_other_month(db, resource, device, card, researcher):
    # 23:00-01:00 Shanghai on 31 August: a booking of August whose use runs into September
    august = book(db, resource, researcher, start=datetime(2026, 8, 31, 15, 0, tzinfo=UTC))
    make_usage_session(db, device, datetime(2026, 8, 31, 15, 0, tzinfo=UTC), datetime(2026, 8, 31, 16, 55, tzinfo=UTC))

    report = run(db)

    assert report.created == 0
    assert db.scalar(select(ReconciliationItem).where(ReconciliationItem.reservation_id == august.id)) is None


def test_reconciling_again_changes_nothing_and_refreshes_what_changed(db, resource, device, card, researcher):
    reservation = book(db, resource, researcher)
    make_usage_session(db, device, IN_MONTH, IN_MONTH + 115 * M)
    run(db)
    before = row_counts(db, ReconciliationItem)

    again = run(db)

    assert (again.created, again.updated, again.removed) == (0, 0, 0)
    assert row_counts(db, ReconciliationItem) == before
    make_usage_session(db, device, IN_MONTH + 118 * M, IN_MONTH + 170 * M)  # a late-arriving session
    refreshed = run(db)
    assert refreshed.updated == 1
    assert item_of(db, reservation).kind == ReconciliationKind.OVERRUN


def test_a_lab_manager_resolves_exceptions_with_reasons_and_every_decision_is_audited(
        db, manager, resource, device, card, researcher):
    no_show = book(db, resource, researcher)
    unbooked = make_usage_session(db, device, IN_MONTH + 5 * H, IN_MONTH + 6 * H, operator="visitor")
    run(db)
    customer = make_organisation(db)

    waived = resolve_item(db, manager, item_of(db, no_show).id, "waive", reason="Instrument was down")
    assigned = resolve_item(db, manager, item_of(db, session=unbooked).id, Resolution.ASSIGN, org_id=customer.id)

    assert (waived.status, waived.resolution, waived.resolved_by_id) == (ItemStatus.RESOLVED, Resolution.WAIVE,
                                                                         manager.id)
    assert (assigned.assigned_org_id, assigned.resolution) == (customer.id, Resolution.ASSIGN)
    entries = db.scalars(select(AuditEntry).where(AuditEntry.action == "reconciliation.resolved")
                         .order_by(AuditEntry.id)).all()
    assert [(e.actor_id, e.target_id, e.data["resolution"]) for e in entries] == [
        (manager.id, str(waived.id), "waive"), (manager.id, str(assigned.id), "assign")]
    assert entries[0].data["reason"] == "Instrument was down"
    assert entries[0].data["before"]["status"] == "open"
    # a person's decision survives reconciling again
    run(db)
    assert item_of(db, no_show).resolution == Resolution.WAIVE


@pytest.mark.parametrize(("resolution", "kwargs", "field"), [
    ("waive", {}, "reason"),
    ("adjust", {"reason": "clock skew"}, "adjusted_minutes"),
    ("adjust", {"reason": "clock skew", "adjusted_minutes": -5}, "adjusted_minutes"),
    ("assign", {}, "org_id"),
    ("refund", {}, "resolution"),
])
def test_incomplete_decisions_are_refused_and_change_nothing(db, manager, resource, device, card, researcher,
                                                             resolution, kwargs, field):
    reservation = book(db, resource, researcher)
    run(db)
    item = item_of(db, reservation)
    before = row_counts(db, AuditEntry)

    with pytest.raises(InvalidInput) as caught:
        resolve_item(db, manager, item.id, resolution, **kwargs)

    assert list(caught.value.fields) == [field]
    assert item_of(db, reservation).status == ItemStatus.OPEN
    assert row_counts(db, AuditEntry) == before


def test_only_the_facility_s_lab_managers_resolve(db, other_manager, finance, resource, device, card, researcher):
    reservation = book(db, resource, researcher)
    run(db)
    item = item_of(db, reservation)

    for actor in (other_manager, finance, researcher):
        with pytest.raises(Forbidden):
            resolve_item(db, actor, item.id, "waive", reason="no")
    assert item_of(db, reservation).status == ItemStatus.OPEN
    admin = make_user(db, roles=(Role.ADMIN,))
    assert resolve_item(db, admin, item.id, "accept").status == ItemStatus.RESOLVED


def test_lab_managers_see_their_facilities_items(db, manager, other_manager, resource, device, card, researcher):
    book(db, resource, researcher)
    run(db)

    assert len(list_items(db, manager, MONTH, status=ItemStatus.OPEN)) == 1
    assert list_items(db, other_manager, MONTH) == []


def test_a_researcher_cannot_reconcile(db, researcher, resource, card):
    with pytest.raises(Forbidden):
        run(db, researcher)


def test_items_of_a_closed_period_are_locked(db, manager, finance, resource, device, card, researcher):
    from billing.charges import close_period

    reservation = book(db, resource, researcher)
    make_usage_session(db, device, IN_MONTH, IN_MONTH + 2 * H)
    close_period(db, finance, MONTH, now=AFTER_MONTH)

    with pytest.raises(PeriodClosed) as caught:
        resolve_item(db, manager, item_of(db, reservation).id, "waive", reason="too late")
    assert caught.value.code == "period_closed"
    with pytest.raises(PeriodClosed):
        run(db, finance)


def test_a_booking_moved_to_another_month_keeps_the_decision_made_in_its_first_month(
        db, manager, finance, resource, device, card, researcher):
    reservation = book(db, resource, researcher)
    run(db)
    resolve_item(db, manager, item_of(db, reservation).id, "waive", reason="moved")
    reservation.starts_at += timedelta(days=30)  # now in October
    reservation.ends_at += timedelta(days=30)
    db.flush()

    report = reconcile_period(db, finance, "2026-10", now=datetime(2026, 11, 5, tzinfo=UTC))

    assert report.created == 0
    assert item_of(db, reservation).resolution == Resolution.WAIVE
