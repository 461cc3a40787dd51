"""Blackouts: maintenance, calibration and holiday windows in which a resource cannot be booked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from booking import notifications
from booking.errors import RuleViolation
from booking.locking import lock_resource
from booking.models import Blackout, BlackoutKind, Reservation
from booking.permissions import can_manage_facility
from booking.reservations import cancel_reservation, clashes, conflict_error
from core import audit
from core.accounts.models import User
from core.errors import N_, Forbidden, InvalidInput, NotFound
from core.timeutil import as_utc, utcnow


def create_blackout(db: Session, actor: User, resource_id: int, starts_at: datetime, ends_at: datetime,
                    kind: str, reason: str = "", *, cancel_conflicting: bool = False,
                    now: datetime | None = None) -> Blackout:
    """Block a window. Live reservations inside it are refused as a conflict, unless the manager asks to
    cancel them (their owners are told)."""
    now = now or utcnow()
    resource = lock_resource(db, resource_id)
    if not can_manage_facility(db, actor, resource.facility_id):
        raise Forbidden()
    if kind not in {k.value for k in BlackoutKind}:
        raise InvalidInput({"kind": [N_("Choose maintenance, calibration or holiday.")]})
    start, end = as_utc(starts_at), as_utc(ends_at)
    if end <= start:
        raise RuleViolation("invalid_window")
    found = [c for c in clashes(db, resource.id, start, end) if c.kind == "reservation"]
    if found and not cancel_conflicting:
        raise conflict_error(found, resource.facility.timezone)
    blackout = Blackout(resource_id=resource.id, starts_at=start, ends_at=end, kind=BlackoutKind(kind),
                        reason=(reason or "").strip()[:2000], created_by_id=actor.id)
    db.add(blackout)
    db.flush()  # before the cancellations: they must not tell the waitlist that the window is free
    for clash in found:
        reservation = db.get(Reservation, clash.id)
        if reservation.ends_at > now:
            cancel_reservation(db, actor, clash.id, reason=reason or kind, now=now)
    audit.record(db, actor, "blackout.created", blackout, resource_id=resource.id, kind=kind,
                 starts_at=start.isoformat(), ends_at=end.isoformat(), cancelled=[c.id for c in found])
    return blackout


def delete_blackout(db: Session, actor: User, blackout_id: int, *, now: datetime | None = None) -> None:
    blackout = db.get(Blackout, blackout_id)
    if blackout is None:
        raise NotFound("blackout", blackout_id)
    resource = lock_resource(db, blackout.resource_id)
    if not can_manage_facility(db, actor, resource.facility_id):
        raise Forbidden()
    audit.record(db, actor, "blackout.deleted", blackout, resource_id=resource.id,
                 starts_at=blackout.starts_at.isoformat(), ends_at=blackout.ends_at.isoformat())
    window = (blackout.starts_at, blackout.ends_at)
    db.delete(blackout)
    db.flush()
    notifications.waitlist_freed(db, resource, *window, now=now or utcnow())
