"""Reconciliation of a billing period: each reservation paired with the usage sessions its resource's devices
measured, and every measured use nobody booked; exceptions wait for the facility's lab managers.

Reservations and sessions are streamed resource by resource (server-side cursors on PostgreSQL), so memory
does not grow with their number. Items a person resolved are never recomputed; the others are refreshed
when reconciliation runs again, so running it twice changes nothing.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from billing.models import (
    BillingPeriod,
    ItemStatus,
    RateCard,
    ReconciliationItem,
    ReconciliationKind,
    Resolution,
)
from billing.periods import Month, check_finance, open_period, parse_month, require_open
from billing.rate_cards import pick_card
from booking.models import Facility, Reservation, ReservationKind, ReservationState, Resource
from booking.permissions import can_manage_facility, managed_facility_ids
from core import audit
from core.accounts.models import Role, User
from core.db import begin_write
from core.errors import N_, Forbidden, InvalidInput, NotFound
from core.timeutil import utcnow, zone

DEFAULT_TOLERANCE_MIN = 15
# Sessions are looked for this far around the month, so that a booking near its edge finds its use.
MATCH_SLACK = timedelta(days=2)
STREAM_BATCH = 2000
WRITE_BATCH = 1000

REASON_IN_PROGRESS = N_("Measurement is still in progress: a usage session is open or the booking has not ended.")
REASON_MARKED_NO_SHOW_BUT_USED = N_("Marked as a no-show, but use was measured.")
REASON_OPERATOR = N_("Attributed to the device operator.")


# --- pure matching and classification ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BookingRow:
    id: int
    resource_id: int
    user_id: int
    billed_org_id: int
    starts_at: datetime
    ends_at: datetime
    state: ReservationState
    kind: ReservationKind
    sample_count: int | None
    late_cancellation: bool


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: int
    resource_id: int
    started_at: datetime
    ended_at: datetime | None  # None: still open
    operator: str
    samples: int | None


@dataclass(frozen=True, slots=True)
class ItemValues:
    """What reconciliation concluded about one reservation or one unbooked session."""

    kind: ReconciliationKind
    status: ItemStatus
    booked_minutes: int
    measured_minutes: int
    measured_runs: int
    measured_samples: int | None
    metered: bool
    resolution: Resolution | None = None
    reason: str = ""
    assigned_org_id: int | None = None
    assigned_user_id: int | None = None

    def as_row(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "booked_minutes": self.booked_minutes,
                "measured_minutes": self.measured_minutes, "measured_runs": self.measured_runs,
                "measured_samples": self.measured_samples, "metered": self.metered,
                "resolution": self.resolution, "reason": self.reason, "assigned_org_id": self.assigned_org_id,
                "assigned_user_id": self.assigned_user_id}


def minutes_between(start: datetime, end: datetime) -> int:
    """Whole minutes, a started minute counting in full."""
    return max(0, math.ceil((end - start).total_seconds() / 60))


def match_sessions(bookings: list[BookingRow], sessions: list[SessionRow], tolerance_min: Callable[[BookingRow], int],
                   now: datetime) -> tuple[dict[int, list[SessionRow]], list[SessionRow]]:
    """Each session goes to the booking (sorted by start, not overlapping) whose window ± its tolerance it
    overlaps, the one it overlaps most when several; the rest are unbooked."""
    matched: dict[int, list[SessionRow]] = {b.id: [] for b in bookings}
    unmatched: list[SessionRow] = []
    starts = [b.starts_at for b in bookings]
    widest = timedelta(minutes=max((tolerance_min(b) for b in bookings), default=0))
    for session in sessions:
        end = session.ended_at or max(now, session.started_at)
        best, best_key = None, None
        # bookings that start before the session's end (plus the widest tolerance) are the only candidates
        index = bisect.bisect_left(starts, end + widest)
        for booking in reversed(bookings[:index]):
            tol = timedelta(minutes=tolerance_min(booking))
            if booking.ends_at + widest <= session.started_at:
                break  # earlier bookings end even earlier
            if session.started_at >= booking.ends_at + tol or end <= booking.starts_at - tol:
                continue
            overlap = (min(end, booking.ends_at) - max(session.started_at, booking.starts_at)).total_seconds()
            distance = abs((session.started_at - booking.starts_at).total_seconds())
            key = (overlap, -distance)
            if best_key is None or key > best_key:
                best, best_key = booking, key
        if best is None:
            unmatched.append(session)
        else:
            matched[best.id].append(session)
    return matched, unmatched


def classify(booking: BookingRow, sessions: list[SessionRow], *, tolerance_min: int, metered: bool,
             now: datetime) -> ItemValues:
    """The reconciliation of one billable reservation with the sessions matched to it."""
    booked = minutes_between(booking.starts_at, booking.ends_at)
    closed = [s for s in sessions if s.ended_at is not None]
    seconds = sum((s.ended_at - s.started_at).total_seconds() for s in closed)  # type: ignore[operator]
    measured = max(0, math.ceil(seconds / 60))
    samples = [s.samples for s in closed if s.samples is not None]
    base = dict(booked_minutes=booked, measured_minutes=measured, measured_runs=len(closed),
                measured_samples=sum(samples) if samples else None, metered=metered)
    tol = timedelta(minutes=tolerance_min)
    accepted = dict(status=ItemStatus.RESOLVED, resolution=Resolution.ACCEPT)
    exception = dict(status=ItemStatus.OPEN, resolution=None)

    if booking.state == ReservationState.CANCELLED:
        return ItemValues(ReconciliationKind.LATE_CANCELLATION, **accepted, **base)
    in_progress = len(closed) < len(sessions) or booking.ends_at + tol > now
    if booking.state == ReservationState.NO_SHOW:
        if measured:
            return ItemValues(ReconciliationKind.NO_SHOW, reason=REASON_MARKED_NO_SHOW_BUT_USED, **exception, **base)
        return ItemValues(ReconciliationKind.NO_SHOW, **accepted, **base)
    if in_progress:
        kind = ReconciliationKind.USED if sessions or not metered else ReconciliationKind.NO_SHOW
        return ItemValues(kind, reason=REASON_IN_PROGRESS, **exception, **base)
    if not metered:
        return ItemValues(ReconciliationKind.USED, **accepted, **base)
    if not closed:
        return ItemValues(ReconciliationKind.NO_SHOW, **exception, **base)
    last_end = max(s.ended_at for s in closed)  # type: ignore[type-var]
    if last_end > booking.ends_at + tol:
        return ItemValues(ReconciliationKind.OVERRUN, **exception, **base)
    if measured < booked - tolerance_min and last_end < booking.ends_at - tol:
        return ItemValues(ReconciliationKind.EARLY_FINISH, **accepted, **base)
    return ItemValues(ReconciliationKind.USED, **accepted, **base)


def classify_unbooked(session: SessionRow, operator_user: tuple[int, int] | None, *,
                      metered: bool = True) -> ItemValues:
    """Measured use nobody booked: billed to the operator's organisation when the device named a known user."""
    open_ = session.ended_at is None
    measured = 0 if open_ else minutes_between(session.started_at, session.ended_at)  # type: ignore[arg-type]
    base = dict(booked_minutes=0, measured_minutes=measured, measured_runs=0 if open_ else 1,
                measured_samples=None if open_ else session.samples, metered=metered)
    if open_:
        return ItemValues(ReconciliationKind.UNBOOKED, ItemStatus.OPEN, reason=REASON_IN_PROGRESS, **base)
    if operator_user is None:
        return ItemValues(ReconciliationKind.UNBOOKED, ItemStatus.OPEN, **base)
    user_id, org_id = operator_user
    return ItemValues(ReconciliationKind.UNBOOKED, ItemStatus.RESOLVED, resolution=Resolution.ASSIGN,
                      reason=REASON_OPERATOR, assigned_org_id=org_id, assigned_user_id=user_id, **base)


# --- the service ---------------------------------------------------------------------------------------------

@dataclass
class ReconcileReport:
    created: int = 0
    updated: int = 0
    removed: int = 0
    kept: int = 0  # resolved by a person: left as they are
    by_kind: Counter = field(default_factory=Counter)
    open_exceptions: int = 0

    def counts(self) -> dict[str, Any]:
        return {"created": self.created, "updated": self.updated, "removed": self.removed, "kept": self.kept,
                "open_exceptions": self.open_exceptions, "by_kind": dict(self.by_kind)}


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    id: int
    facility_id: int
    timezone: str
    owner_id: int
    metered: bool
    batch_days: int | None
    voucher_eligible: bool


def resource_infos(db: Session) -> dict[int, ResourceInfo]:
    """Every resource's facility, zone and owner, and whether a device measures it (one row per resource)."""
    from devices.models import Device

    metered = set(db.scalars(select(Device.resource_id).distinct()))
    rows = db.execute(select(Resource.id, Resource.facility_id, Facility.timezone, Facility.owner_id,
                             Resource.batch_days, Resource.voucher_eligible).join(Facility))
    return {r.id: ResourceInfo(r.id, r.facility_id, r.timezone, r.owner_id, r.id in metered, r.batch_days,
                               r.voucher_eligible) for r in rows}


def cards_by_resource(db: Session) -> dict[int, list[RateCard]]:
    cards: dict[int, list[RateCard]] = {}
    for card in db.scalars(select(RateCard).order_by(RateCard.resource_id, RateCard.valid_from)):
        cards.setdefault(card.resource_id, []).append(card)
    return cards


def _stream(db: Session, query) -> Iterator[Any]:
    yield from db.execute(query.execution_options(yield_per=STREAM_BATCH))


def _by_resource(rows: Iterable[Any]) -> Iterator[tuple[int, list[Any]]]:
    current, group = None, []
    for row in rows:
        if row.resource_id != current:
            if group:
                yield current, group
            current, group = row.resource_id, []
        group.append(row)
    if group:
        yield current, group


def merge_by_resource(*streams: Iterable[Any]) -> Iterator[tuple[int, list[list[Any]]]]:
    """Streams ordered by resource_id, merged: (resource_id, [its rows from each stream])."""
    iterators = [_by_resource(s) for s in streams]
    heads = [next(it, None) for it in iterators]
    while any(h is not None for h in heads):
        resource_id = min(h[0] for h in heads if h is not None)
        groups = []
        for i, head in enumerate(heads):
            if head is not None and head[0] == resource_id:
                groups.append(head[1])
                heads[i] = next(iterators[i], None)
            else:
                groups.append([])
        yield resource_id, groups


def _booking_query(month: Month):
    lo, hi = month.utc_bounds()
    billable = or_(Reservation.state.in_([ReservationState.CONFIRMED, ReservationState.COMPLETED,
                                          ReservationState.NO_SHOW]),
                   and_(Reservation.state == ReservationState.CANCELLED, Reservation.late_cancellation.is_(True)))
    return (select(Reservation.id, Reservation.resource_id, Reservation.user_id, Reservation.billed_org_id,
                   Reservation.starts_at, Reservation.ends_at, Reservation.state, Reservation.kind,
                   Reservation.sample_count, Reservation.late_cancellation)
            .where(billable, Reservation.starts_at < hi + MATCH_SLACK, Reservation.ends_at > lo - MATCH_SLACK)
            .order_by(Reservation.resource_id, Reservation.starts_at))


def _session_query(month: Month):
    from devices.models import Device, UsageSession

    lo, hi = month.utc_bounds()
    return (select(UsageSession.id, Device.resource_id, UsageSession.started_at, UsageSession.ended_at,
                   UsageSession.operator, UsageSession.samples)
            .join(Device, Device.id == UsageSession.device_pk)
            .where(UsageSession.started_at >= lo - MATCH_SLACK, UsageSession.started_at < hi + MATCH_SLACK)
            .order_by(Device.resource_id, UsageSession.started_at))


def local_date(moment: datetime, tz_name: str) -> date:
    return moment.astimezone(zone(tz_name)).date()


class _OperatorDirectory:
    """Users named by a device's `operator` field (e-mail, Chinese or English name), when exactly one matches."""

    def __init__(self, db: Session):
        self.db, self.cache = db, {}

    def find(self, operator: str) -> tuple[int, int] | None:
        key = operator.strip()
        if not key:
            return None
        if key not in self.cache:
            rows = self.db.execute(select(User.id, User.organisation_id).where(
                or_(User.email == key.lower(), User.name_zh == key, User.name_en == key)).limit(2)).all()
            self.cache[key] = (rows[0].id, rows[0].organisation_id) if len(rows) == 1 else None
        return self.cache[key]


_COMPARED = ("kind", "status", "booked_minutes", "measured_minutes", "measured_runs", "measured_samples",
             "metered", "resolution", "reason", "assigned_org_id", "assigned_user_id", "service_date")
_ITEM_COLUMNS = [ReconciliationItem.__table__.c[name] for name in
                 ("id", "reservation_id", "usage_session_id", "resolved_by_id", *_COMPARED)]


def reconcile_period(db: Session, actor: User | None, month: str | date | Month, *,
                     now: datetime | None = None) -> ReconcileReport:
    """Reconcile a month (finance or admin): create or refresh its reconciliation items."""
    check_finance(actor)
    month = parse_month(month)
    begin_write(db)
    with db.begin_nested():
        period = open_period(db, month, lock=True)
        require_open(period)
        report = reconcile(db, period, now=now)
        audit.record(db, actor, "billing.period_reconciled", period, month=month.label, **report.counts())
    return report


def reconcile(db: Session, period: BillingPeriod, *, now: datetime | None = None) -> ReconcileReport:
    """The work of reconcile_period, for a period the caller has opened and locked."""
    now = now or utcnow()
    month = parse_month(period.month)
    resources = resource_infos(db)
    cards = cards_by_resource(db)
    operators = _OperatorDirectory(db)
    report = ReconcileReport()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []

    def tolerance(info: ResourceInfo, day: date) -> int:
        card = pick_card(cards.get(info.id, []), day)
        return card.tolerance_min if card is not None else DEFAULT_TOLERANCE_MIN

    bookings_stream = (BookingRow(*row) for row in _stream(db, _booking_query(month)))
    sessions_stream = (SessionRow(*row) for row in _stream(db, _session_query(month)))
    for resource_id, (bookings, sessions) in merge_by_resource(bookings_stream, sessions_stream):
        info = resources[resource_id]
        days = {b.id: local_date(b.starts_at, info.timezone) for b in bookings}
        served = [b for b in bookings if b.state != ReservationState.CANCELLED]
        matched, unmatched = match_sessions(served, sessions,
                                            lambda b, info=info, days=days: tolerance(info, days[b.id]), now)

        wanted: dict[tuple[str, int], dict[str, Any]] = {}
        for booking in bookings:
            day = days[booking.id]
            if not month.contains(day):
                continue  # another month's booking, loaded only so that its use is not taken for unbooked
            values = classify(booking, matched.get(booking.id, []), tolerance_min=tolerance(info, day),
                              metered=info.metered, now=now)
            wanted[("reservation", booking.id)] = {**values.as_row(), "service_date": day}
        for session in unmatched:
            day = local_date(session.started_at, info.timezone)
            if month.contains(day):
                values = classify_unbooked(session, operators.find(session.operator))
                wanted[("session", session.id)] = {**values.as_row(), "service_date": day}

        existing = db.execute(select(*_ITEM_COLUMNS).where(
            ReconciliationItem.period_id == period.id, ReconciliationItem.resource_id == resource_id)).all()
        stale: list[int] = []
        for item in existing:
            key = ("reservation", item.reservation_id) if item.reservation_id is not None else \
                ("session", item.usage_session_id)
            values = wanted.pop(key, None)
            if item.resolved_by_id is not None:
                report.kept += 1
                report.by_kind[str(item.kind)] += 1
                continue
            if values is None:
                stale.append(item.id)
                continue
            report.by_kind[str(values["kind"])] += 1
            if any(getattr(item, name) != values[name] for name in _COMPARED):
                updates.append({"id": item.id, **values,
                                "resolved_at": now if values["status"] == ItemStatus.RESOLVED else None})
        for (subject, subject_id), values in wanted.items():
            report.by_kind[str(values["kind"])] += 1
            inserts.append({**values, "period_id": period.id, "resource_id": resource_id,
                            "reservation_id": subject_id if subject == "reservation" else None,
                            "usage_session_id": subject_id if subject == "session" else None,
                            "resolved_at": now if values["status"] == ItemStatus.RESOLVED else None,
                            "adjusted_minutes": None, "resolved_by_id": None, "created_at": now})
        if stale:
            db.execute(delete(ReconciliationItem).where(ReconciliationItem.id.in_(stale)))
            report.removed += len(stale)
        if len(inserts) >= WRITE_BATCH or len(updates) >= WRITE_BATCH:
            _write(db, inserts, updates, report)
    _write(db, inserts, updates, report)
    period.reconciled_at = now
    report.open_exceptions = count_open(db, period)
    db.flush()
    return report


def _write(db: Session, inserts: list[dict[str, Any]], updates: list[dict[str, Any]], report: ReconcileReport) -> None:
    if inserts:
        # A booking moved to another month keeps the item a person resolved in the month it was in.
        item = ReconciliationItem
        reservation_ids = [row["reservation_id"] for row in inserts if row["reservation_id"] is not None]
        session_ids = [row["usage_session_id"] for row in inserts if row["usage_session_id"] is not None]
        taken = set(db.scalars(select(item.reservation_id).where(item.reservation_id.in_(reservation_ids))))
        taken_sessions = set(db.scalars(select(item.usage_session_id).where(
            item.kind == ReconciliationKind.UNBOOKED, item.usage_session_id.in_(session_ids))))
        if taken or taken_sessions:
            inserts[:] = [row for row in inserts if row["reservation_id"] not in taken
                          and (row["reservation_id"] is not None or row["usage_session_id"] not in taken_sessions)]
    if inserts:
        db.execute(insert(ReconciliationItem.__table__), inserts)
        report.created += len(inserts)
        inserts.clear()
    if updates:
        db.execute(update(ReconciliationItem), updates)
        report.updated += len(updates)
        updates.clear()


def count_open(db: Session, period: BillingPeriod) -> int:
    return db.scalar(select(func.count()).select_from(ReconciliationItem).where(
        ReconciliationItem.period_id == period.id, ReconciliationItem.status == ItemStatus.OPEN)) or 0


# --- exceptions: listing and resolving -----------------------------------------------------------------------

def list_items(db: Session, actor: User, month: str | date | Month, *, status: ItemStatus | None = None,
               limit: int = 200) -> list[ReconciliationItem]:
    """The items of a month that the actor may see: finance and admins all, lab managers their facilities'."""
    month = parse_month(month)
    query = (select(ReconciliationItem).join(BillingPeriod).join(Resource)
             .where(BillingPeriod.month == month.first_day).order_by(ReconciliationItem.id).limit(limit))
    if status is not None:
        query = query.where(ReconciliationItem.status == status)
    if not actor.has_role(Role.FINANCE, Role.ADMIN):
        scope = managed_facility_ids(db, actor)
        if scope is not None:
            query = query.where(Resource.facility_id.in_(scope or {-1}))
    return list(db.scalars(query))


def resolve_item(db: Session, actor: User, item_id: int, resolution: Resolution | str, *, reason: str = "",
                 adjusted_minutes: int | None = None, org_id: int | None = None,
                 user_id: int | None = None) -> ReconciliationItem:
    """A lab manager of the resource's facility (or an admin) decides an item: accept it as reconciled,
    waive it, bill adjusted minutes, or assign it to an organisation (and user). Waiving and adjusting need
    a reason. Every decision is audited; a closed period's items are locked."""
    from core.accounts.models import Organisation

    item = db.get(ReconciliationItem, item_id)
    if item is None:
        raise NotFound("reconciliation_item", item_id)
    if not (actor.has_role(Role.LAB_MANAGER, Role.ADMIN) and can_manage_facility(db, actor, item.resource.facility_id)):
        raise Forbidden()
    require_open(item.period)
    try:
        resolution = Resolution(resolution)
    except ValueError:
        raise InvalidInput({"resolution": [N_("Choose accept, waive, adjust or assign.")]}) from None
    reason = (reason or "").strip()
    fields: dict[str, list[str]] = {}
    if resolution in (Resolution.WAIVE, Resolution.ADJUST) and not reason:
        fields["reason"] = [N_("Give a reason.")]
    if resolution == Resolution.ADJUST and (isinstance(adjusted_minutes, bool) or not isinstance(adjusted_minutes, int)
                                            or not 0 <= adjusted_minutes <= 366 * 1440):
        fields["adjusted_minutes"] = [N_("Enter the minutes to bill, from 0 to 527040.")]
    assigned_user = db.get(User, user_id) if user_id is not None else None
    if user_id is not None and assigned_user is None:
        fields["user_id"] = [N_("There is no such user.")]
    if org_id is None and assigned_user is not None:
        org_id = assigned_user.organisation_id
    if org_id is not None and db.get(Organisation, org_id) is None:
        fields["org_id"] = [N_("There is no such organisation.")]
    if resolution == Resolution.ASSIGN and org_id is None:
        fields["org_id"] = [N_("Choose the organisation to bill.")]
    if resolution in (Resolution.ACCEPT, Resolution.ADJUST) and item.kind == ReconciliationKind.UNBOOKED \
            and item.assigned_org_id is None and org_id is None:
        fields["org_id"] = [N_("Unbooked use must be assigned to an organisation before it can be billed.")]
    if fields:
        raise InvalidInput(fields)

    before = {"status": item.status, "resolution": item.resolution, "adjusted_minutes": item.adjusted_minutes,
              "assigned_org_id": item.assigned_org_id, "assigned_user_id": item.assigned_user_id}
    item.status, item.resolution, item.reason = ItemStatus.RESOLVED, resolution, reason
    item.adjusted_minutes = adjusted_minutes if resolution == Resolution.ADJUST else None
    if org_id is not None:
        item.assigned_org_id = org_id
        item.assigned_user_id = assigned_user.id if assigned_user is not None else None
    item.resolved_by_id, item.resolved_at = actor.id, utcnow()
    db.flush()
    audit.record(db, actor, "reconciliation.resolved", item, resolution=resolution, reason=reason,
                 adjusted_minutes=item.adjusted_minutes, assigned_org_id=item.assigned_org_id,
                 assigned_user_id=item.assigned_user_id, before=before, kind=item.kind,
                 booked_minutes=item.booked_minutes, measured_minutes=item.measured_minutes)
    return item
