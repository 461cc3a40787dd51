"""The waitlist: be told when a busy window of a resource frees up (booking.notifications tells)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.errors import RuleViolation, WaitlistNotNeeded
from booking.models import Resource, WaitlistEntry
from booking.reservations import clashes
from core.accounts.models import User
from core.errors import N_, Conflict, NotFound
from core.timeutil import as_utc, utcnow


class AlreadyWaiting(Conflict):
    code = "already_waiting"
    message = N_("You are already on the waitlist for this time.")


def join_waitlist(db: Session, actor: User, resource_id: int, starts_at: datetime, ends_at: datetime, *,
                  now: datetime | None = None) -> WaitlistEntry:
    resource = db.get(Resource, resource_id)
    if resource is None:
        raise NotFound("resource", resource_id)
    start, end = as_utc(starts_at), as_utc(ends_at)
    if end <= start:
        raise RuleViolation("invalid_window")
    if start <= (now or utcnow()):
        raise RuleViolation("starts_in_past")
    if not clashes(db, resource_id, start, end):
        raise WaitlistNotNeeded()
    if db.scalar(select(WaitlistEntry.id).where(
            WaitlistEntry.resource_id == resource_id, WaitlistEntry.user_id == actor.id,
            WaitlistEntry.starts_at == start, WaitlistEntry.ends_at == end,
            WaitlistEntry.cancelled_at.is_(None), WaitlistEntry.notified_at.is_(None))):
        raise AlreadyWaiting()
    entry = WaitlistEntry(resource_id=resource_id, user_id=actor.id, starts_at=start, ends_at=end)
    db.add(entry)
    db.flush()
    return entry


def leave_waitlist(db: Session, actor: User, entry_id: int, *, now: datetime | None = None) -> None:
    entry = db.get(WaitlistEntry, entry_id)
    if entry is None or entry.user_id != actor.id:
        raise NotFound("waitlist_entry", entry_id)
    entry.cancelled_at = entry.cancelled_at or now or utcnow()


def waitlist_of(db: Session, user: User) -> list[WaitlistEntry]:
    return list(db.scalars(select(WaitlistEntry).where(
        WaitlistEntry.user_id == user.id, WaitlistEntry.cancelled_at.is_(None)).order_by(WaitlistEntry.starts_at)))
