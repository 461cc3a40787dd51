"""Words for device states, their causes and the dead-letter reasons, in the user's language."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from devices.models import LiveState, StateCause

STATE_LABELS = {
    LiveState.OFFLINE: _l("Offline"), LiveState.IDLE: _l("Idle"), LiveState.RUNNING: _l("Running"),
    LiveState.FAULT: _l("Fault"), LiveState.MAINTENANCE: _l("Maintenance"),
}
STATE_ICONS = {
    LiveState.OFFLINE: "plug", LiveState.IDLE: "pause-circle", LiveState.RUNNING: "play-circle",
    LiveState.FAULT: "exclamation-octagon", LiveState.MAINTENANCE: "tools",
}
CAUSE_LABELS = {
    StateCause.STATUS: _l("Status message"), StateCause.HEARTBEAT: _l("Heartbeat timeout"),
    StateCause.ALARM: _l("Alarm"), StateCause.ALARM_CLEARED: _l("Alarm cleared"),
}
# One line per reason of telemetry.contract.REASONS: what the equipment sent wrong.
REASON_TEXTS = {
    "bad_topic": _l("The topic is not labshare/v1/<device id>/<channel>, or the device id has characters "
                    "other than letters, digits, _ and -."),
    "unknown_channel": _l("The channel is not status, metrics or events."),
    "payload_too_large": _l("The message is larger than 64 KiB."),
    "bad_encoding": _l("The message is not valid UTF-8 text."),
    "bad_json": _l("The message is not valid JSON."),
    "not_an_object": _l("The message is JSON but not an object ({…})."),
    "bad_timestamp": _l("ts is neither an RFC 3339 time with offset nor epoch milliseconds, or is out of range."),
    "bad_state": _l("state is not one of idle, running, fault, maintenance, offline."),
    "bad_detail": _l("detail is not text or is longer than 500 characters."),
    "bad_values": _l("values is missing or is not an object of measurements, or batch is not a non-empty list."),
    "bad_field_name": _l("A measurement name does not match [a-z][a-z0-9_]{0,63}."),
    "too_many_fields": _l("More than 64 measurements in one entry."),
    "bad_value": _l("A measurement is not a number or a boolean, or is NaN or infinite."),
    "batch_too_large": _l("A batch has more than 1,000 entries."),
    "bad_event": _l("The event lacks a valid id or type, or a field has the wrong type or length."),
    "unknown_device": _l("No device with this id is registered."),
    "device_disabled": _l("The device is disabled in the registry."),
}
REASON_LABELS = {
    "bad_topic": _l("Bad topic"), "unknown_channel": _l("Unknown channel"),
    "payload_too_large": _l("Payload too large"), "bad_encoding": _l("Bad encoding"), "bad_json": _l("Bad JSON"),
    "not_an_object": _l("Not an object"), "bad_timestamp": _l("Bad timestamp"), "bad_state": _l("Bad state"),
    "bad_detail": _l("Bad detail"), "bad_values": _l("Bad values"), "bad_field_name": _l("Bad field name"),
    "too_many_fields": _l("Too many fields"), "bad_value": _l("Bad value"),
    "batch_too_large": _l("Batch too large"), "bad_event": _l("Bad event"),
    "unknown_device": _l("Unknown device"), "device_disabled": _l("Device disabled"),
}


def reason_label(reason: str) -> str:
    return str(REASON_LABELS.get(reason, reason))


def reason_text(reason: str) -> str:
    return str(REASON_TEXTS.get(reason, ""))
