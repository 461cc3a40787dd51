"""iCal feeds at secret URLs: a user's reservations, a resource's schedule. Regenerating a secret
invalidates the old URL; only a digest of the secret is stored.

Rendered with the icalendar library (escaping, folding and time formats are its business); the events
are read as columns, not objects, because loading each reservation with its relations cost more than
rendering it.
"""

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


def _event(uid: str, summary: str, start: datetime, end: datetime, description: str, status: str,
           stamp: datetime) -> Event:
    event = Event()
    event.add("uid", uid)
    event.add("summary", summary)
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("dtstamp", stamp)
    event.add("description", description or "")
    event.add("status", status)
    return event


def render_feed(db: Session, feed: CalendarFeed, *, locale: str = "zh_CN", now: datetime | None = None) -> bytes:
    now = now or utcnow()
    start, end = now - FEED_WINDOW_PAST, now + FEED_WINDOW_FUTURE
    stamp = utcnow()
    # Columns, not Reservation objects: each of those would bring its resource, facility, user and organisations.
    query = select(Reservation.id, Reservation.starts_at, Reservation.ends_at, Reservation.purpose, Reservation.state)
    query = query.where(Reservation.state.in_((*LIVE_STATES, ReservationState.COMPLETED)),
                        Reservation.ends_at > start, Reservation.starts_at < end)
    if feed.user_id is not None:
        user = db.get(User, feed.user_id)
        locale = str(user.locale)
        name = user.name(locale)
        # each event is titled with the resource (Resource.name)
        query = query.add_columns(Resource.name_zh, Resource.name_en).join(
            Resource, Resource.id == Reservation.resource_id).where(Reservation.user_id == feed.user_id)
    else:
        resource = db.get(Resource, feed.resource_id)
        name = resource.name(locale)
        # each event is titled with who booked it (User.name)
        query = query.add_columns(User.name_zh, User.name_en).join(User, User.id == Reservation.user_id).where(
            Reservation.resource_id == feed.resource_id)
    calendar = Calendar()
    calendar.add("prodid", "-//LabShare//labshare//")
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", f"LabShare · {name}")
    for rid, starts_at, ends_at, purpose, state, name_zh, name_en in db.execute(query.order_by(Reservation.starts_at)):
        calendar.add_component(_event(
            f"reservation-{rid}@labshare", name_en if locale == "en" else name_zh, starts_at, ends_at, purpose,
            "TENTATIVE" if state == ReservationState.PENDING else "CONFIRMED", stamp))
    if feed.resource_id is not None:
        for bid, starts_at, ends_at, kind, reason in db.execute(
                select(Blackout.id, Blackout.starts_at, Blackout.ends_at, Blackout.kind, Blackout.reason).where(
                    Blackout.resource_id == feed.resource_id, Blackout.ends_at > start, Blackout.starts_at < end)):
            calendar.add_component(_event(f"blackout-{bid}@labshare", f"⛔ {kind}", starts_at, ends_at, reason,
                                          "CONFIRMED", stamp))
    return calendar.to_ical()
