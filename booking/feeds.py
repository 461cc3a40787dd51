"""iCal feeds at secret URLs: a user's reservations, a resource's schedule. Regenerating a secret
invalidates the old URL; only a digest of the secret is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from icalendar import Calendar, Event
from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.models import LIVE_STATES, Blackout, CalendarFeed, Reservation, ReservationState, Resource
from booking.permissions import can_manage_facility
from core import audit
from core.accounts.models import User
from core.errors import Forbidden, NotFound
from core.timeutil import utcnow

FEED_WINDOW_PAST = timedelta(days=30)
FEED_WINDOW_FUTURE = timedelta(days=365)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def regenerate_feed(db: Session, actor: User, *, resource_id: int | None = None) -> str:
    """A new secret for the actor's own feed, or for a resource's feed (its lab managers); old URL stops."""
    if resource_id is not None:
        resource = db.get(Resource, resource_id)
        if resource is None:
            raise NotFound("resource", resource_id)
        if not can_manage_facility(db, actor, resource.facility_id):
            raise Forbidden()
        feed = db.scalar(select(CalendarFeed).where(CalendarFeed.resource_id == resource_id))
    else:
        feed = db.scalar(select(CalendarFeed).where(CalendarFeed.user_id == actor.id))
    secret = secrets.token_urlsafe(24)
    if feed is None:
        feed = CalendarFeed(user_id=None if resource_id else actor.id, resource_id=resource_id, digest=_digest(secret))
        db.add(feed)
    else:
        feed.digest, feed.created_at = _digest(secret), utcnow()
    db.flush()
    audit.record(db, actor, "calendar_feed.regenerated", feed, resource_id=resource_id)
    return secret


def feed_for_secret(db: Session, secret: str) -> CalendarFeed:
    feed = db.scalar(select(CalendarFeed).where(CalendarFeed.digest == _digest(secret or "")))
    if feed is None:
        raise NotFound("calendar_feed", "?")
    return feed


def _event(uid: str, summary: str, start: datetime, end: datetime, description: str, status: str) -> Event:
    event = Event()
    event.add("uid", uid)
    event.add("summary", summary)
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("dtstamp", utcnow())
    event.add("description", description)
    event.add("status", status)
    return event


def render_feed(db: Session, feed: CalendarFeed, *, locale: str = "zh_CN", now: datetime | None = None) -> bytes:
    now = now or utcnow()
    start, end = now - FEED_WINDOW_PAST, now + FEED_WINDOW_FUTURE
    calendar = Calendar()
    calendar.add("prodid", "-//LabShare//labshare//")
    calendar.add("version", "2.0")
    query = select(Reservation).where(Reservation.state.in_((*LIVE_STATES, ReservationState.COMPLETED)),
                                      Reservation.ends_at > start, Reservation.starts_at < end)
    if feed.user_id is not None:
        user = db.get(User, feed.user_id)
        locale = str(user.locale)
        calendar.add("x-wr-calname", f"LabShare · {user.name(locale)}")
        query = query.where(Reservation.user_id == feed.user_id)
    else:
        resource = db.get(Resource, feed.resource_id)
        calendar.add("x-wr-calname", f"LabShare · {resource.name(locale)}")
        query = query.where(Reservation.resource_id == feed.resource_id)
    for r in db.scalars(query.order_by(Reservation.starts_at)):
        title = r.resource.name(locale) if feed.user_id else r.user.name(locale)
        calendar.add_component(_event(f"reservation-{r.id}@labshare", title, r.starts_at, r.ends_at,
                                      r.purpose, "TENTATIVE" if r.state == ReservationState.PENDING else "CONFIRMED"))
    if feed.resource_id is not None:
        for b in db.scalars(select(Blackout).where(Blackout.resource_id == feed.resource_id,
                                                   Blackout.ends_at > start, Blackout.starts_at < end)):
            calendar.add_component(_event(f"blackout-{b.id}@labshare", f"⛔ {b.kind}", b.starts_at, b.ends_at,
                                          b.reason, "CONFIRMED"))
    return calendar.to_ical()
