"""iCal feeds at secret URLs (`/ical/<secret>.ics`), for calendar apps that cannot send tokens."""

from __future__ import annotations

from flask import Blueprint, Response, abort

from booking.feeds import feed_for_secret, render_feed
from core.errors import NotFound
from web.database import get_db
from web.templating import current_locale

bp = Blueprint("calendar", __name__)


@bp.get("/ical/<secret>.ics")
def feed(secret: str):
    db = get_db()
    try:
        calendar_feed = feed_for_secret(db, secret)
    except NotFound:
        abort(404)
    body = render_feed(db, calendar_feed, locale=current_locale())
    return Response(body, mimetype="text/calendar", headers={"Cache-Control": "private, max-age=60"})
