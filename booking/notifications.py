"""E-mails about reservations, in each recipient's language, queued in the outbox (core.mail).

Queued in the same transaction as the change they report: a rolled-back booking sends nothing, and a
committed one is never forgotten because SMTP happened to be down.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime
from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.errors import STATE_LABELS
from booking.models import LIVE_STATES, Blackout, Reservation, ReservationState, Resource, WaitlistEntry
from core.accounts.models import User
from core.errors import N_
from core.i18n import gettext_for
from core.mail import enqueue
from core.timeutil import utcnow

SUBJECTS = {
    "requested": N_("Booking request received: %(resource)s, %(start)s"),
    "confirmed": N_("Booking confirmed: %(resource)s, %(start)s"),
    "approved": N_("Booking approved: %(resource)s, %(start)s"),
    "rejected": N_("Booking rejected: %(resource)s, %(start)s"),
    "cancelled": N_("Booking cancelled: %(resource)s, %(start)s"),
    "modified": N_("Booking changed: %(resource)s, %(start)s"),
    "reminder": N_("Reminder: %(resource)s, %(start)s"),
    "to_approve": N_("To approve: %(user)s booked %(resource)s, %(start)s"),
    "waitlist": N_("A time you waited for is free: %(resource)s, %(start)s"),
}
BODY = N_("%(resource)s (%(facility)s)\nFrom %(start)s to %(end)s (%(timezone)s)\nBooked by: %(user)s\n"
          "Status: %(state)s\nReservation number: %(id)s\n%(note)s")
WAITLIST_BODY = N_("%(resource)s (%(facility)s) is now free from %(start)s to %(end)s (%(timezone)s).\n"
                   "Book it before someone else does.")


@lru_cache(maxsize=8)
def _babel_locale(name: str) -> Locale:
    return Locale.parse(name)  # babel compares the name with every locale it knows: parse each name once


def _when(moment: datetime, tz: str, locale: str) -> str:
    return format_datetime(moment.astimezone(ZoneInfo(tz)), "yyyy-MM-dd HH:mm", locale=_babel_locale(locale))


def _message(reservation: Reservation, recipient: User, event: str) -> tuple[str, str]:
    locale = str(recipient.locale)
    _ = gettext_for(locale)
    resource, facility = reservation.resource, reservation.resource.facility
    values = {
        "resource": resource.name(locale), "facility": facility.name(locale),
        "start": _when(reservation.starts_at, facility.timezone, locale),
        "end": _when(reservation.ends_at, facility.timezone, locale), "timezone": facility.timezone,
        "user": reservation.user.name(locale), "state": _(STATE_LABELS[reservation.state]), "id": reservation.id,
        "note": reservation.decision_note or "",
    }
    return "[LabShare] " + _(SUBJECTS[event]) % values, _(BODY) % values


def _managers(resource: Resource) -> list[User]:
    return [m for m in resource.facility.managers if m.active]


def reservation_event(db: Session, reservation: Reservation, event: str) -> None:
    # The reservation's id is needed for the text. Its resource and user load on first use, from the session's
    # identity map when they are there already (they are, for bookings made through the services).
    db.flush()
    subject, body = _message(reservation, reservation.user, event)
    enqueue(db, to=reservation.user.email, subject=subject, body=body, topic=f"reservation.{event}",
            user_id=reservation.user_id)
    if event in ("requested", "cancelled"):
        for manager in _managers(reservation.resource):
            if manager.id == reservation.user_id:
                continue
            subject, body = _message(reservation, manager, "to_approve" if event == "requested" else event)
            enqueue(db, to=manager.email, subject=subject, body=body, topic=f"reservation.{event}.manager",
                    user_id=manager.id)


def waitlist_freed(db: Session, resource: Resource, start: datetime, end: datetime, *, now: datetime) -> int:
    """Tell waiting users whose window overlapped [start, end) and is now entirely free."""
    entries = db.scalars(select(WaitlistEntry).where(
        WaitlistEntry.resource_id == resource.id, WaitlistEntry.notified_at.is_(None),
        WaitlistEntry.cancelled_at.is_(None), WaitlistEntry.starts_at < end, WaitlistEntry.ends_at > start,
        WaitlistEntry.starts_at > now)).all()
    db.flush()
    told = 0
    for entry in entries:
        busy = db.scalar(select(Reservation.id).where(
            Reservation.resource_id == resource.id, Reservation.state.in_(LIVE_STATES),
            Reservation.starts_at < entry.ends_at, Reservation.ends_at > entry.starts_at).limit(1))
        blocked = db.scalar(select(Blackout.id).where(
            Blackout.resource_id == resource.id, Blackout.starts_at < entry.ends_at,
            Blackout.ends_at > entry.starts_at).limit(1))
        if busy or blocked:
            continue
        locale = str(entry.user.locale)
        _ = gettext_for(locale)
        values = {"resource": resource.name(locale), "facility": resource.facility.name(locale),
                  "start": _when(entry.starts_at, resource.facility.timezone, locale),
                  "end": _when(entry.ends_at, resource.facility.timezone, locale),
                  "timezone": resource.facility.timezone}
        subject = SUBJECTS["waitlist"]
        enqueue(db, to=entry.user.email, subject="[LabShare] " + _(subject) % values,
                body=_(WAITLIST_BODY) % values, topic="waitlist.freed", user_id=entry.user_id)
        entry.notified_at = now
        told += 1
    return told


def send_reminders(db: Session, *, ahead: timedelta = timedelta(hours=24), now: datetime | None = None) -> int:
    """Queue one reminder per confirmed reservation starting within `ahead`; safe to run repeatedly."""
    now = now or utcnow()
    due = db.scalars(select(Reservation).where(
        Reservation.state == ReservationState.CONFIRMED, Reservation.reminder_sent_at.is_(None),
        Reservation.starts_at > now, Reservation.starts_at <= now + ahead)
        # OF reservation: PostgreSQL refuses to lock the nullable side of the eager-loading outer joins
        .with_for_update(skip_locked=True, of=Reservation)).all()
    for reservation in due:
        reservation_event(db, reservation, "reminder")
        reservation.reminder_sent_at = now
    return len(due)
