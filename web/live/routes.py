"""Live pages for lab managers (their facilities) and admins (all): the board of device states that polls
itself every second, one device's day (state timeline, power, usage sessions, events), and dead letters."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from flask import Blueprint, abort, current_app, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from core.accounts.models import Role
from core.errors import Forbidden, NotFound
from core.timeutil import to_local, utcnow
from devices import live
from devices.ingest import datetime_to_ns, ns_to_datetime
from devices.models import LiveState
from telemetry.contract import REASONS
from telemetry.tsdb import StoreError, TimeSeriesStore, store_from_url
from web.authz import roles_required
from web.database import get_db
from web.live import texts

log = logging.getLogger(__name__)

bp = Blueprint("live", __name__, url_prefix="/manage")

MANAGERS = (Role.LAB_MANAGER, Role.ADMIN)
POWER_FIELD = "power_w"
POWER_BUCKET_S = 60  # a day of 1 Hz samples is drawn as per-minute means
TSDB_KEY = "labshare.tsdb"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _call(service, *args, **kwargs):
    """A service call whose refusals become the site's 403 and 404 pages."""
    try:
        return service(*args, **kwargs)
    except Forbidden:
        abort(403)
    except NotFound:
        abort(404)


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdigit() and 0 < int(value) < 2**31 else None


@bp.context_processor
def _texts():
    return {"state_labels": texts.STATE_LABELS, "state_icons": texts.STATE_ICONS, "cause_labels": texts.CAUSE_LABELS,
            "state_tones": live.STATE_TONES, "state_colours": live.STATE_COLOURS,
            "reason_label": texts.reason_label, "reason_text": texts.reason_text,
            "LiveState": LiveState, "ago": ago, "duration": duration}


def ago(seconds: int) -> str:
    """How long ago, in the largest sensible unit: "12 s ago", "5 min ago", "3 h ago", "2 d ago"."""
    if seconds < 60:
        return _("%(n)s s ago", n=seconds)
    if seconds < 3600:
        return _("%(n)s min ago", n=seconds // 60)
    if seconds < 86400:
        return _("%(n)s h ago", n=seconds // 3600)
    return _("%(n)s d ago", n=seconds // 86400)


def duration(seconds: int) -> str:
    """A length of time: "45 s", "12 min", "3 h 05 min"."""
    if seconds < 60:
        return _("%(s)s s", s=seconds)
    minutes = seconds // 60
    if minutes < 60:
        return _("%(m)s min", m=minutes)
    return _("%(h)s h %(m)02d min", h=minutes // 60, m=minutes % 60)


def time_series_store() -> TimeSeriesStore:
    """The app's time-series store, made on first use from LABSHARE_TSDB_URL (ValueError when it is wrong)."""
    store = current_app.extensions.get(TSDB_KEY)
    if store is None:
        settings = current_app.config["LABSHARE_SETTINGS"]
        store = store_from_url(settings.tsdb_url, current_app.extensions["labshare.engine"])
        current_app.extensions[TSDB_KEY] = store
    return store


# --- the board --------------------------------------------------------------------------------------------

def _board_context() -> dict:
    db = get_db()
    facility_id = _int_arg("facility")
    rows = _call(live.board, db, current_user, facility_id)
    return {"rows": rows, "counts": live.state_counts(rows), "facility_id": facility_id, "now": utcnow()}


@bp.get("/live")
@roles_required(*MANAGERS)
def board():
    context = _board_context()
    return render_template("live/board.html", facilities=live.watched_facilities(get_db(), current_user), **context)


@bp.get("/live/board")
def board_fragment():
    """The counts and the table, for the board's polling (htmx, every second). A poll whose session has
    ended gets 401 and an HX-Redirect to the sign-in page, rather than the sign-in page swapped into the table."""
    if request.headers.get("HX-Request") and not current_user.is_authenticated:
        return "", 401, {"HX-Redirect": url_for("auth.login", next=url_for(".board"))}
    return _board_fragment()


@roles_required(*MANAGERS)
def _board_fragment():
    return render_template("live/_board.html", **_board_context())


# --- one device ---------------------------------------------------------------------------------------------

def _local_ms(moment: datetime, tz_name: str) -> int:
    """Milliseconds of the facility's wall-clock time read as UTC: the charts run with useUTC, so their axes
    show the facility's time whatever the browser's zone."""
    local = to_local(moment, tz_name)
    return int((local.replace(tzinfo=UTC) - EPOCH).total_seconds() * 1000)


def timeline_chart(segments: list[live.Segment], tz_name: str, day_start: datetime, day_end: datetime) -> dict:
    """A horizontal band coloured by state: one filled area series per state, broken between its segments."""
    series = []
    for state in LiveState:
        data: list = []
        for segment in segments:
            if segment.state == state:
                data += [[_local_ms(segment.start, tz_name), 1], [_local_ms(segment.end, tz_name), 1],
                         [_local_ms(segment.end, tz_name), "-"]]
        series.append({"name": str(texts.STATE_LABELS[state]), "type": "line", "data": data, "symbol": "none",
                       "connectNulls": False, "lineStyle": {"width": 0}, "color": live.STATE_COLOURS[state],
                       "areaStyle": {"opacity": 1, "color": live.STATE_COLOURS[state]}, "silent": True})
    return {
        "useUTC": True, "animation": False,
        "legend": {"top": 0, "selectedMode": False},
        "grid": {"left": 16, "right": 24, "top": 32, "bottom": 28},
        "xAxis": {"type": "time", "min": _local_ms(day_start, tz_name), "max": _local_ms(day_end, tz_name),
                  "axisLabel": {"formatter": "{HH}:{mm}"}, "splitNumber": 12},
        "yAxis": {"type": "value", "min": 0, "max": 1, "show": False},
        "series": series,
    }


def power_chart(points: list[tuple[datetime, float]], tz_name: str, day_start: datetime, day_end: datetime) -> dict:
    return {
        "useUTC": True, "animation": False,
        "tooltip": {"trigger": "axis"},
        "grid": {"left": 56, "right": 24, "top": 24, "bottom": 28},
        "xAxis": {"type": "time", "min": _local_ms(day_start, tz_name), "max": _local_ms(day_end, tz_name),
                  "axisLabel": {"formatter": "{HH}:{mm}"}, "splitNumber": 12},
        "yAxis": {"type": "value", "name": "W", "min": 0},
        "series": [{"name": _("Power (W)"), "type": "line", "showSymbol": False, "sampling": "lttb",
                    "areaStyle": {"opacity": 0.15}, "color": "#198754",
                    "data": [[_local_ms(at, tz_name), round(value, 1)] for at, value in points]}],
    }


def power_points(device_id: str, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
    """power_w of the device over the window as per-minute means (raises StoreError, ValueError)."""
    points = time_series_store().query(device_id, datetime_to_ns(start), datetime_to_ns(end), [POWER_FIELD])
    buckets: dict[int, list[float]] = {}
    bucket_ns = POWER_BUCKET_S * 1_000_000_000
    for point in points:
        value = point.fields.get(POWER_FIELD)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        buckets.setdefault(point.ts_ns // bucket_ns, []).append(float(value))
    return [(ns_to_datetime(key * bucket_ns), sum(values) / len(values)) for key, values in sorted(buckets.items())]


@bp.get("/devices/<int:device_pk>/live")
@roles_required(*MANAGERS)
def device(device_pk: int):
    db, now = get_db(), utcnow()
    device = _call(live.managed_device, db, current_user, device_pk)
    facility = device.resource.facility
    tz_name = facility.timezone
    today = to_local(now, tz_name).date()
    try:
        day = date.fromisoformat(request.args.get("date", ""))
    except ValueError:
        day = today
    if not date(2000, 1, 1) <= day <= today:
        day = today
    day_start, day_end = live.day_window(day, tz_name)
    until = min(day_end, now)
    segments = live.timeline(db, device, day_start, until)
    power_error = None
    points: list[tuple[datetime, float]] = []
    try:
        points = power_points(device.device_id, day_start, until)
    except (StoreError, ValueError, OSError) as error:
        log.warning("time-series store unavailable for %s: %s", device.device_id, error)
        power_error = str(error)
    page = max(1, _int_arg("page") or 1)
    usage = live.sessions(db, current_user, device_pk=device.id, page=page, per_page=20)
    return render_template(
        "live/device.html", device=device, facility=facility, tz_name=tz_name, day=day, today=today,
        previous_day=day - timedelta(days=1), next_day=day + timedelta(days=1) if day < today else None,
        row=live.device_state(db, current_user, device.id, now=now), segments=segments,
        timeline_chart=timeline_chart(segments, tz_name, day_start, day_end),
        power_chart=power_chart(points, tz_name, day_start, day_end) if points else None,
        power_error=power_error, usage=usage, duration_s=lambda s: live.session_duration_s(s, now),
        events=live.recent_events(db, device), event_time=live.event_time,
    )


# --- dead letters -----------------------------------------------------------------------------------------

@bp.get("/dead-letters")
@roles_required(*MANAGERS)
def dead_letters():
    db = get_db()
    reason = request.args.get("reason", "")
    reason = reason if reason in REASONS else None
    page = max(1, _int_arg("page") or 1)
    letters = _call(live.dead_letters, db, current_user, reason=reason, page=page, per_page=50)
    counts = live.dead_letter_counts(db, current_user)
    chart = None
    if counts:
        chart = {
            "animation": False, "tooltip": {"trigger": "axis"},
            "grid": {"left": 140, "right": 24, "top": 8, "bottom": 24},
            "xAxis": {"type": "value", "minInterval": 1},
            "yAxis": {"type": "category", "inverse": True, "data": [texts.reason_label(r) for r in counts]},
            "series": [{"type": "bar", "name": _("Dead letters"), "data": list(counts.values()),
                        "color": "#dc3545", "label": {"show": True, "position": "right"}}],
        }
    return render_template("live/dead_letters.html", letters=letters, counts=counts, reason=reason, reason_chart=chart,
                           reasons=REASONS, total=sum(counts.values()))
