"""MQTT contract, version 1 (design.md §5): topics and payloads parsed into frozen values.

`parse()` never trusts its input: anything that breaks the contract raises `Invalid` with a stable reason
(the dead-letter reasons), and nothing else escapes. No broker, database or clock is needed to test it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson

DEFAULT_PREFIX = "labshare/v1"
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_BATCH = 1000
MAX_FIELDS = 64
MAX_DETAIL = 500
MAX_EVENT_ID = 64
MAX_SAMPLES = 2**31 - 1  # a 32-bit count: what the relational store keeps
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FIELD_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CHANNELS = ("status", "metrics", "events")
STATES = ("idle", "running", "fault", "maintenance", "offline")
MEANINGFUL_EVENTS = ("run_started", "run_finished", "alarm", "alarm_cleared")
# Timestamps outside this range are typos or unit mistakes (seconds sent as milliseconds, …).
MIN_TS_NS = 946_684_800 * 10**9  # 2000-01-01
MAX_TS_NS = 4_102_444_800 * 10**9  # 2100-01-01

REASONS = (
    "bad_topic", "unknown_channel", "payload_too_large", "bad_encoding", "bad_json", "not_an_object",
    "bad_timestamp", "bad_state", "bad_detail", "bad_values", "bad_field_name", "too_many_fields",
    "bad_value", "batch_too_large", "bad_event", "unknown_device", "device_disabled",
)


class Invalid(ValueError):
    """The message breaks the contract; `reason` is one of REASONS, `detail` says where."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class Status:
    device_id: str
    ts_ns: int
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    ts_ns: int
    values: Mapping[str, float | bool]


@dataclass(frozen=True, slots=True)
class Metrics:
    device_id: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class Event:
    device_id: str
    event_id: str
    ts_ns: int
    type: str
    run_id: str = ""
    operator: str = ""
    samples: int | None = None
    detail: str = ""


Message = Status | Metrics | Event


_SPLIT: dict[tuple[str, str], tuple[str, str]] = {}  # valid topics seen: devices use the same three for ever


def split_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str]:
    """(device_id, channel) of `{prefix}/{device_id}/{channel}`."""
    found = _SPLIT.get((topic, prefix))
    if found is not None:
        return found
    found = _split_topic(topic, prefix)
    if len(_SPLIT) < 100_000:
        _SPLIT[topic, prefix] = found
    return found


def _split_topic(topic: str, prefix: str) -> tuple[str, str]:
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        raise Invalid("bad_topic", topic[:200])
    parts = topic[len(head):].split("/")
    if len(parts) != 2 or not DEVICE_ID_RE.fullmatch(parts[0]):
        raise Invalid("bad_topic", topic[:200])
    if parts[1] not in CHANNELS:
        raise Invalid("unknown_channel", parts[1][:64])
    return parts[0], parts[1]


def parse_ts(raw: object, received_ns: int) -> int:
    """Integer nanoseconds since the epoch, computed without floating point."""
    if raw is None:
        return received_ns
    if isinstance(raw, bool):
        raise Invalid("bad_timestamp", "boolean")
    if isinstance(raw, int):
        ns = raw * 1_000_000  # epoch milliseconds
    elif isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise Invalid("bad_timestamp", raw[:64]) from None
        if moment.tzinfo is None or moment.utcoffset() is None or "T" not in raw.upper():
            raise Invalid("bad_timestamp", "RFC 3339 with an offset is required")
        # exact: whole seconds from the date arithmetic, microseconds added as integers
        epoch_s = int(moment.timestamp()) if moment.microsecond == 0 else int(
            moment.replace(microsecond=0).timestamp())
        ns = epoch_s * 10**9 + moment.microsecond * 1000
    else:
        raise Invalid("bad_timestamp", type(raw).__name__)
    if not MIN_TS_NS <= ns < MAX_TS_NS:
        raise Invalid("bad_timestamp", "out of range")
    return ns


def _storable(text: str) -> bool:
    """No NUL (PostgreSQL text cannot hold it) and no lone surrogate (from a JSON escape such as "\\udfff": not
    encodable as UTF-8, so no database driver can send it)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _detail(raw: object) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str) or len(raw) > MAX_DETAIL:
        raise Invalid("bad_detail", f"a string of at most {MAX_DETAIL} characters")
    if not _storable(raw):
        raise Invalid("bad_detail", "NUL or an unpaired surrogate")
    return raw


_GOOD_NAMES: set[str] = set()  # field names that passed FIELD_RE: devices send the same few in every message


def _values(raw: object) -> dict[str, float | bool]:
    if not isinstance(raw, dict) or not raw:
        raise Invalid("bad_values", "an object of named numbers")
    if len(raw) > MAX_FIELDS:
        raise Invalid("too_many_fields", str(len(raw)))
    values: dict[str, float | bool] = {}
    for name, value in raw.items():
        if name not in _GOOD_NAMES:
            if not FIELD_RE.fullmatch(name):
                raise Invalid("bad_field_name", name[:64])
            if len(_GOOD_NAMES) < 10_000:
                _GOOD_NAMES.add(name)
        kind = type(value)  # exact types first: this runs for every value of every message
        if kind is float:
            if value - value != 0.0:  # NaN or an infinity
                raise Invalid("bad_value", name)
            values[name] = value
        elif kind is bool:
            values[name] = value
        elif isinstance(value, int | float) and _finite(value):  # (bool, an int, is taken above)
            values[name] = float(value)
        else:
            raise Invalid("bad_value", name)
    return values


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)  # an integer too large for a float raises OverflowError here
    except OverflowError:
        return False


def _reject_constants(token: str):
    raise Invalid("bad_value", token)  # NaN, Infinity, -Infinity are not JSON


# orjson reads an integer of 19 digits or more as a float where json keeps it exact (and the checks below then
# refuse it by its exact value): such payloads take the json path, so the answer is json's for every payload.
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def _object(payload: bytes) -> dict:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Invalid("payload_too_large", str(len(payload)))
    if not _LONG_NUMBER.search(payload):
        # Speed (bench/ingest.py): orjson parses valid JSON to the same values several times faster; anything it
        # refuses (bad UTF-8, NaN, lone surrogates, …) goes on to json below for the reason the contract gives.
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            pass
        else:
            if not isinstance(data, dict):
                raise Invalid("not_an_object", type(data).__name__)
            return data
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("bad_encoding", "payloads are UTF-8 JSON") from None
    try:
        data = json.loads(text, parse_constant=_reject_constants)
    except Invalid:
        raise
    except (ValueError, RecursionError):
        raise Invalid("bad_json", text[:64]) from None
    if not isinstance(data, dict):
        raise Invalid("not_an_object", type(data).__name__)
    return data


def parse(topic: str, payload: bytes, received_ns: int, prefix: str = DEFAULT_PREFIX) -> Message:
    device_id, channel = split_topic(topic, prefix)
    return parse_payload(device_id, channel, payload, received_ns)


def parse_payload(device_id: str, channel: str, payload: bytes, received_ns: int) -> Message:
    """`parse` for a topic already split by `split_topic`."""
    data = _object(payload)
    if channel == "status":
        state = data.get("state")
        if state not in STATES:
            raise Invalid("bad_state", str(state)[:32])
        return Status(device_id, parse_ts(data.get("ts"), received_ns), state, _detail(data.get("detail")))
    if channel == "metrics":
        if "batch" in data:
            batch = data["batch"]
            if not isinstance(batch, list) or not batch:
                raise Invalid("bad_values", "batch must be a non-empty list")
            if len(batch) > MAX_BATCH:
                raise Invalid("batch_too_large", str(len(batch)))
            samples = []
            for entry in batch:
                if not isinstance(entry, dict):
                    raise Invalid("not_an_object", "batch entry")
                samples.append(Sample(parse_ts(entry.get("ts"), received_ns), _values(entry.get("values"))))
            return Metrics(device_id, tuple(samples))
        return Metrics(device_id, (Sample(parse_ts(data.get("ts"), received_ns), _values(data.get("values"))),))
    event_id, event_type = data.get("id"), data.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID:
        raise Invalid("bad_event", "id: a string of 1 to 64 characters")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 64:
        raise Invalid("bad_event", "type: a string of 1 to 64 characters")
    samples = data.get("samples")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                or not 0 <= samples <= MAX_SAMPLES):
        raise Invalid("bad_event", f"samples: a whole number from 0 to {MAX_SAMPLES}")
    for name in ("run_id", "operator"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 64):
            raise Invalid("bad_event", f"{name}: a string of at most 64 characters")
    for name in ("id", "type", "run_id", "operator"):
        if isinstance(data.get(name), str) and not _storable(data[name]):
            raise Invalid("bad_event", f"{name}: NUL or an unpaired surrogate")
    return Event(device_id, event_id, parse_ts(data.get("ts"), received_ns), event_type,
                 data.get("run_id") or "", data.get("operator") or "", samples, _detail(data.get("detail")))
