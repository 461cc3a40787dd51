"""API: what the devices did — usage sessions, live state, a day's state timeline and dead letters. Lab managers
see their facilities' devices, admins all; others get 403."""

from __future__ import annotations

from datetime import datetime

from flask.views import MethodView

from core.timeutil import to_local, utcnow
from devices import live
from devices.ingest import ns_to_datetime
from web.api.auth import current_api_user
from web.api.blueprint import blp
from web.api.schemas import page_of
from web.api.telemetry_schemas import (
    DeadLetterCountsSchema,
    DeadLetterQuery,
    DeadLetterSchema,
    DeviceStateSchema,
    TimelineQuery,
    TimelineSchema,
    UsageSessionQuery,
    UsageSessionSchema,
)
from web.database import get_db


def _page(result: live.Page) -> dict:
    return {"items": result.items, "page": result.page, "per_page": result.per_page, "total": result.total}


@blp.route("/usage-sessions")
class UsageSessions(MethodView):
    @blp.arguments(UsageSessionQuery, location="query")
    @blp.response(200, page_of(UsageSessionSchema))
    def get(self, args):
        """Measured usage sessions of the devices you may watch, newest first. `from`/`to` (or `start`/`end`)
        keep the sessions overlapping that window; an open session has `ended_at` null."""
        start: datetime | None = args.get("from_", args.get("start"))
        end: datetime | None = args.get("to", args.get("end"))
        return _page(live.sessions(
            get_db(), current_api_user(), device_id=args.get("device_id"), resource_id=args.get("resource_id"),
            facility_id=args.get("facility_id"), start=start, end=end, page=args["page"], per_page=args["per_page"]))


@blp.route("/devices/<id:device_pk>/state")
class DeviceState(MethodView):
    @blp.response(200, DeviceStateSchema)
    def get(self, device_pk: int):
        """A device's live state, its last message and the current reservation on its resource."""
        row = live.device_state(get_db(), current_api_user(), device_pk)
        since = ns_to_datetime(row.device.state_ts_ns) if row.device.state_ts_ns is not None else None
        return {"device": row.device, "resource": row.resource, "facility": row.facility, "state": row.state.value,
                "state_since": since, "last_message_at": row.last_message_at, "seconds_since": row.seconds_since,
                "reservation": row.reservation}


@blp.route("/devices/<id:device_pk>/timeline")
class DeviceTimeline(MethodView):
    @blp.arguments(TimelineQuery, location="query")
    @blp.response(200, TimelineSchema)
    def get(self, args, device_pk: int):
        """The device's states over one day in its facility's time zone (`date`, default today), as
        consecutive segments from midnight (the state in force then) to the next midnight, or to now for today."""
        db, now = get_db(), utcnow()
        device = live.managed_device(db, current_api_user(), device_pk)
        tz_name = device.resource.facility.timezone
        day = args.get("date") or to_local(now, tz_name).date()
        start, end = live.day_window(day, tz_name)
        end = min(end, max(start, now))
        return {"id": device.id, "device_id": device.device_id, "date": day, "timezone": tz_name,
                "start": start, "end": end, "segments": live.timeline(db, device, start, end)}


@blp.route("/dead-letters")
class DeadLetters(MethodView):
    @blp.arguments(DeadLetterQuery, location="query")
    @blp.response(200, page_of(DeadLetterSchema))
    def get(self, args):
        """Messages the ingest rejected, newest first: lab managers see those of their facilities' devices, admins
        all (also those naming unknown devices)."""
        return _page(live.dead_letters(get_db(), current_api_user(), reason=args.get("reason"),
                                       device_id=args.get("device_id"), page=args["page"], per_page=args["per_page"]))


@blp.route("/dead-letters/counts")
class DeadLetterCounts(MethodView):
    @blp.response(200, DeadLetterCountsSchema)
    def get(self):
        """How many dead letters you may see, by reason (most frequent first)."""
        counts = live.dead_letter_counts(get_db(), current_api_user())
        return {"total": sum(counts.values()),
                "by_reason": [{"reason": reason, "count": n} for reason, n in counts.items()]}
