"""Words and formats for the booking pages: state and kind names, durations, local time windows, and a
resource's rules in plain language; `init_app` makes them available to the templates."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Flask
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from booking.hours import WEEKDAYS
from booking.models import OperationMode, Reservation, ReservationKind, Resource
from booking.rules import Rules
from core.timeutil import utcnow
from web.booking.forms import WEEKDAY_LABELS
from web.i18n import violation_text

STATE_LABELS = {"pending": _l("Waiting for approval"), "confirmed": _l("Confirmed"), "rejected": _l("Rejected"),
                "cancelled": _l("Cancelled"), "completed": _l("Completed"), "no_show": _l("No-show")}
STATE_TONES = {"pending": "warning", "confirmed": "success", "rejected": "danger", "cancelled": "secondary",
               "completed": "primary", "no_show": "dark"}
SAMPLE_STATE_LABELS = {"requested": _l("Waiting to be scheduled"), "scheduled": _l("Scheduled"),
                       "rejected": _l("Rejected"), "cancelled": _l("Withdrawn")}
BLACKOUT_LABELS = {"maintenance": _l("Maintenance"), "calibration": _l("Calibration"), "holiday": _l("Holiday")}
MODE_LABELS = {OperationMode.SELF_SERVICE: _l("Self-service"), OperationMode.TECHNICIAN: _l("Technician-run"),
               OperationMode.BOTH: _l("Self-service or technician-run")}
SLOT_LABELS = {"free": _l("Free"), "past": _l("Past"), "busy": _l("Booked"), "pending": _l("Pending approval"),
               "blackout": _l("Not available"), "closed": _l("Closed"), "partly": _l("Partly booked")}
SHORT_WEEKDAYS = (_l("Mon"), _l("Tue"), _l("Wed"), _l("Thu"), _l("Fri"), _l("Sat"), _l("Sun"))


def duration_text(minutes: int) -> str:
    if minutes and minutes % 1440 == 0:
        return _("%(n)s days", n=minutes // 1440) if minutes != 1440 else _("1 day")
    if minutes and minutes % 60 == 0:
        return _("%(n)s h", n=minutes // 60)
    if minutes > 60:
        return _("%(h)s h %(m)s min", h=minutes // 60, m=minutes % 60)
    return _("%(n)s min", n=minutes)


def rule_lines(resource: Resource) -> list[tuple[str, str]]:
    """(icon, sentence) per booking rule of the resource, for its page."""
    lines: list[tuple[str, str]] = []
    if resource.books_whole_days:
        if resource.batch_days:
            lines.append(("grid-3x3", _("Booked in batches of %(days)s days, from midnight to midnight.",
                                        days=resource.batch_days)))
        else:
            lines.append(("grid-3x3", _("Booked in whole days, from midnight to midnight.")))
    else:
        lines.append(("grid-3x3", _("Bookings start and end on a %(grid)s grid.",
                                    grid=duration_text(resource.granularity_min))))
    lines.append(("arrows-expand", _("Each booking lasts from %(min)s to %(max)s.",
                                     min=duration_text(resource.min_duration_min),
                                     max=duration_text(resource.max_duration_min))))
    if resource.lead_time_min:
        lines.append(("hourglass-split", _("Book at least %(lead)s before the start.",
                                           lead=duration_text(resource.lead_time_min))))
    lines.append(("calendar-range", _("Bookable up to %(days)s days ahead.", days=resource.horizon_days)))
    if not resource.offers_self_service:
        return lines  # technicians book the slots: approvals, qualifications and limits do not concern users
    if resource.approval_required:
        lines.append(("person-check", _("A lab manager approves each booking; until then it is pending.")))
    else:
        lines.append(("check2-circle", _("Bookings are confirmed at once.")))
    if resource.qualification_required:
        lines.append(("mortarboard", _("Operating it yourself needs a qualification from the lab managers.")))
    if resource.max_active_per_user:
        lines.append(("stack", _("At most %(n)s active bookings per user.", n=resource.max_active_per_user)))
    lines.append(("x-circle", _("Free cancellation until %(hours)s hours before the start; later it counts as a "
                                "late cancellation.", hours=resource.cancellation_deadline_h)))
    return lines


def hours_table(resource: Resource) -> list[tuple[str, str]]:
    hours = Rules.of(resource).hours
    return [(str(WEEKDAY_LABELS[day]), hours.get(day) or _("Closed")) for day in WEEKDAYS]


def operation_note(resource: Resource) -> str:
    if resource.operation_mode == OperationMode.TECHNICIAN:
        return _("Technicians run this resource: send a sample request.")
    if resource.operation_mode == OperationMode.BOTH:
        return _("Book it to operate it yourself, or send a sample request for the technicians.")
    return _("Book it to operate it yourself.")


def cancellation_is_late(reservation: Reservation, now: datetime) -> bool:
    """Would the owner cancelling now be a late cancellation (booking.reservations.cancel_reservation)?"""
    deadline = reservation.starts_at - timedelta(hours=reservation.resource.cancellation_deadline_h)
    return now > deadline and reservation.kind != ReservationKind.TECHNICIAN


def when(start: datetime, end: datetime, tz_name: str) -> str:
    """'2025-12-01 10:00–11:00' in the facility's zone; both dates when it runs past midnight."""
    tz = ZoneInfo(tz_name)
    start, end = start.astimezone(tz), end.astimezone(tz)
    if end.date() == start.date():
        return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}"
    if end.date() == start.date() + timedelta(days=1) and end.hour == end.minute == 0 and (start.hour or start.minute):
        return f"{start:%Y-%m-%d %H:%M}–24:00"
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M}"


def window_text(item) -> str:
    """A reservation's (or anything with starts_at, ends_at and resource) time in its facility's zone."""
    return when(item.starts_at, item.ends_at, item.resource.facility.timezone)


def valid_through(expires_at: datetime, tz_name: str) -> str:
    """The last day a qualification is valid: it expires at the midnight that ends that day."""
    return f"{(expires_at - timedelta(seconds=1)).astimezone(ZoneInfo(tz_name)):%Y-%m-%d}"


def init_app(app: Flask) -> None:
    # globals, not a context processor: macros imported from _macros.html see globals only
    app.jinja_env.globals.update(
        state_labels=STATE_LABELS, state_tones=STATE_TONES, slot_labels=SLOT_LABELS, blackout_labels=BLACKOUT_LABELS,
        mode_labels=MODE_LABELS, sample_state_labels=SAMPLE_STATE_LABELS, short_weekdays=SHORT_WEEKDAYS,
        duration_text=duration_text, violation_text=violation_text, when=when, now_utc=utcnow)
    app.jinja_env.filters.update(window=window_text, valid_through=valid_through)
