"""API schemas of the telemetry read side: usage sessions, live state, state timelines and dead letters."""

from __future__ import annotations

from datetime import date

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from core.errors import N_
from devices.models import LiveState, StateCause
from telemetry.contract import DEVICE_ID_RE, REASONS
from web.api.schemas import InputSchema, PageQuery, id_field, time_field

STATES = [s.value for s in LiveState]
CAUSES = [c.value for c in StateCause]


class UsageSessionQuery(PageQuery):
    device_id = fields.Str(validate=validate.Regexp(DEVICE_ID_RE), metadata={"description": "the MQTT device id"})
    resource_id = id_field()
    facility_id = id_field()
    from_ = time_field(data_key="from", metadata={"description": "sessions still running at or after this time"})
    to = time_field(metadata={"description": "sessions started before this time"})
    start = time_field(metadata={"description": "the same as `from`"})
    end = time_field(metadata={"description": "the same as `to`"})

    @validates_schema(skip_on_field_errors=True)
    def _window(self, data, **kwargs):
        for one, other in (("from_", "start"), ("to", "end")):
            if one in data and other in data:
                raise ValidationError(N_("Give either from/to or start/end, not both."), other)
        start, end = data.get("from_", data.get("start")), data.get("to", data.get("end"))
        if start is not None and end is not None and end <= start:
            raise ValidationError(N_("The end must be after the start."), "to" if "to" in data else "end")


class UsageSessionSchema(Schema):
    id = fields.Int()
    device_pk = fields.Int(metadata={"description": "the device's numeric id, as in /devices/{id}"})
    device_id = fields.Str(attribute="device.device_id", metadata={"description": "the MQTT device id"})
    resource_id = fields.Int(attribute="device.resource_id")
    facility_id = fields.Int(attribute="device.resource.facility_id")
    started_at = fields.AwareDateTime()
    ended_at = fields.AwareDateTime(allow_none=True, metadata={"description": "null while the session is open"})
    open = fields.Method("_open", metadata={"type": "boolean"})
    duration_s = fields.Method("_duration", metadata={"type": "integer",
                                                      "description": "so far, for an open session"})
    truncated = fields.Bool(metadata={"description": "closed at the device's last message because it went "
                                                     "offline or fell silent for its heartbeat timeout"})
    run_id = fields.Str()
    operator = fields.Str()
    samples = fields.Int(allow_none=True)

    def _open(self, session) -> bool:
        return session.end_ns is None

    def _duration(self, session) -> int:
        from devices.live import session_duration_s

        return session_duration_s(session)


class ReservationBrief(Schema):
    id = fields.Int()
    state = fields.Str()
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    user_id = fields.Int()
    user_name_zh = fields.Str(attribute="user.name_zh")
    user_name_en = fields.Str(attribute="user.name_en")


class DeviceStateSchema(Schema):
    id = fields.Int(attribute="device.id")
    device_id = fields.Str(attribute="device.device_id")
    resource_id = fields.Int(attribute="resource.id")
    facility_id = fields.Int(attribute="facility.id")
    enabled = fields.Bool(attribute="device.enabled")
    state = fields.Str(metadata={"enum": STATES})
    state_since = fields.AwareDateTime(allow_none=True, metadata={
        "description": "the time of the observation that set the state"})
    state_cause = fields.Str(allow_none=True, attribute="device.state_cause", metadata={"enum": CAUSES})
    state_detail = fields.Str(attribute="device.state_detail")
    last_message_at = fields.AwareDateTime(allow_none=True)
    seconds_since_last_message = fields.Int(allow_none=True, attribute="seconds_since")
    current_reservation = fields.Nested(ReservationBrief, allow_none=True, attribute="reservation", metadata={
        "description": "the pending or confirmed reservation on the device's resource right now"})


class TimelineQuery(InputSchema):
    date = fields.Date(validate=validate.Range(min=date(2000, 1, 1), max=date(2099, 12, 31),
                                               error=N_("Give a day between 2000 and 2099.")),
                       metadata={"description": "a day in the facility's time zone (default: today)"})


class SegmentSchema(Schema):
    start = fields.AwareDateTime()
    end = fields.AwareDateTime()
    state = fields.Str(metadata={"enum": STATES})
    cause = fields.Str(allow_none=True, metadata={"enum": CAUSES,
                                                  "description": "null: nothing observed yet (counted offline)"})
    duration_s = fields.Int()


class TimelineSchema(Schema):
    id = fields.Int()
    device_id = fields.Str()
    date = fields.Date()
    timezone = fields.Str()
    start = fields.AwareDateTime()
    end = fields.AwareDateTime(metadata={"description": "midnight after the day, or now for today"})
    segments = fields.List(fields.Nested(SegmentSchema))


class DeadLetterQuery(PageQuery):
    reason = fields.Str(validate=validate.OneOf(REASONS))
    device_id = fields.Str(validate=validate.Length(min=1, max=64))


class DeadLetterSchema(Schema):
    id = fields.Int()
    received_at = fields.AwareDateTime()
    reason = fields.Str(metadata={"enum": list(REASONS)})
    topic = fields.Str()
    device_id = fields.Str(allow_none=True)
    detail = fields.Str()
    payload_head = fields.Str(metadata={"description": "the first 200 bytes, made printable"})
    payload_size = fields.Int()


class ReasonCount(Schema):
    reason = fields.Str(metadata={"enum": list(REASONS)})
    count = fields.Int()


class DeadLetterCountsSchema(Schema):
    total = fields.Int()
    by_reason = fields.List(fields.Nested(ReasonCount))
