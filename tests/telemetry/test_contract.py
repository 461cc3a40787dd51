"""The MQTT contract v1 parser: what is accepted, and the dead-letter reason for everything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.contract import (
    MAX_PAYLOAD_BYTES,
    REASONS,
    Event,
    Invalid,
    Metrics,
    Status,
    parse,
    parse_ts,
    split_topic,
)

RECEIVED_NS = 1_795_572_000_000_000_000  # 2026-11-25T02:00:00Z


def test_status_with_rfc3339_offset_keeps_microseconds_exactly():
    message = parse("labshare/v1/sem-01/status",
                    b'{"ts": "2026-11-25T10:00:00.123456+08:00", "state": "running", "detail": "beam on"}',
                    RECEIVED_NS)
    assert message == Status("sem-01", 1_795_572_000_123_456_000, "running", "beam on")


def test_two_timestamps_a_microsecond_apart_stay_apart():
    a = parse_ts("2026-11-25T10:00:00.000001+08:00", 0)
    b = parse_ts("2026-11-25T10:00:00.000002+08:00", 0)
    assert b - a == 1000


def test_epoch_milliseconds_and_missing_ts():
    assert parse_ts(1_795_572_000_123, 0) == 1_795_572_000_123_000_000
    assert parse_ts(None, RECEIVED_NS) == RECEIVED_NS


def test_metrics_single_and_batch():
    single = parse("labshare/v1/hplc_2/metrics", b'{"values": {"pressure_pa": 1.2e7, "pump_on": true}}', RECEIVED_NS)
    assert single == Metrics("hplc_2", (single.samples[0],))
    assert single.samples[0].values == {"pressure_pa": 1.2e7, "pump_on": True}
    batch = {"batch": [{"ts": 1_795_572_000_000 + i, "values": {"power_w": i}} for i in range(1000)]}
    parsed = parse("labshare/v1/hplc_2/metrics", json.dumps(batch).encode(), RECEIVED_NS)
    assert len(parsed.samples) == 1000
    assert parsed.samples[-1].ts_ns == (1_795_572_000_000 + 999) * 1_000_000


def test_event():
    message = parse("labshare/v1/ferm-1/events",
                    b'{"id": "e-17", "type": "run_started", "run_id": "B2026-11", "operator": "wang", "samples": 3}',
                    RECEIVED_NS)
    assert message == Event("ferm-1", "e-17", RECEIVED_NS, "run_started", "B2026-11", "wang", 3, "")


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("labshare/v2/sem/status", b'{"state": "idle"}', "bad_topic"),
    ("labshare/v1/sem/extra/status", b'{"state": "idle"}', "bad_topic"),
    ("labshare/v1/s e m/status", b'{"state": "idle"}', "bad_topic"),
    ("labshare/v1/" + "x" * 65 + "/status", b'{"state": "idle"}', "bad_topic"),
    ("labshare/v1/sem/telemetry", b'{"state": "idle"}', "unknown_channel"),
    ("labshare/v1/sem/status", b"\xff\xfe", "bad_encoding"),
    ("labshare/v1/sem/status", b"{state: idle}", "bad_json"),
    ("labshare/v1/sem/status", b'["idle"]', "not_an_object"),
    ("labshare/v1/sem/status", b'{"state": "on"}', "bad_state"),
    ("labshare/v1/sem/status", b'{"state": "idle", "detail": 5}', "bad_detail"),
    ("labshare/v1/sem/status", b'{"state": "idle", "ts": "2026-11-25T10:00:00"}', "bad_timestamp"),
    ("labshare/v1/sem/status", b'{"state": "idle", "ts": 1.5}', "bad_timestamp"),
    ("labshare/v1/sem/status", b'{"state": "idle", "ts": 1795572000}', "bad_timestamp"),
    ("labshare/v1/sem/metrics", b'{"values": {"power_w": NaN}}', "bad_value"),
    ("labshare/v1/sem/metrics", b'{"values": {"power_w": Infinity}}', "bad_value"),
    ("labshare/v1/sem/metrics", b'{"values": {"power_w": 1e999}}', "bad_value"),  # a float that overflows
    ("labshare/v1/sem/metrics", b'{"values": {"power_w": -1e400, "temp_c": 1}}', "bad_value"),
    ("labshare/v1/sem/metrics", b'{"values": {"power_w": "812"}}', "bad_value"),
    ("labshare/v1/sem/metrics", b'{"values": {"Power": 1}}', "bad_field_name"),
    ("labshare/v1/sem/metrics", b'{"values": {}}', "bad_values"),
    ("labshare/v1/sem/metrics", b'{"batch": []}', "bad_values"),
    ("labshare/v1/sem/events", b'{"type": "alarm"}', "bad_event"),
    ("labshare/v1/sem/events", b'{"id": "1", "type": "alarm", "samples": -1}', "bad_event"),
    # what passes as JSON but no database can store: NUL, lone surrogates, counts beyond 32 bits, huge integers
    ("labshare/v1/sem/status", b'{"state": "idle", "detail": "a\\u0000b"}', "bad_detail"),
    ("labshare/v1/sem/status", b'{"state": "idle", "detail": "\\ud800"}', "bad_detail"),
    ("labshare/v1/sem/events", b'{"id": "\\udfff", "type": "alarm"}', "bad_event"),
    ("labshare/v1/sem/events", b'{"id": "1", "type": "note", "operator": "x\\u0000"}', "bad_event"),
    ("labshare/v1/sem/events", b'{"id": "1", "type": "alarm", "detail": "\\u0000"}', "bad_detail"),
    ("labshare/v1/sem/events", b'{"id": "1", "type": "run_finished", "samples": 2147483648}', "bad_event"),
    ("labshare/v1/sem/metrics", b'{"values": {"power_w": 1' + b"0" * 400 + b'}}', "bad_value"),
])
def test_rejections_name_their_reason(topic, payload, reason):
    with pytest.raises(Invalid) as caught:
        parse(topic, payload, RECEIVED_NS)
    assert caught.value.reason == reason


def test_limits():
    fields = {f"f{i}": i for i in range(65)}
    with pytest.raises(Invalid, match="too_many_fields"):
        parse("labshare/v1/sem/metrics", json.dumps({"values": fields}).encode(), RECEIVED_NS)
    batch = {"batch": [{"values": {"x": 1}}] * 1001}
    with pytest.raises(Invalid, match="batch_too_large"):
        parse("labshare/v1/sem/metrics", json.dumps(batch).encode(), RECEIVED_NS)
    big = b'{"state": "idle", "detail": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
    with pytest.raises(Invalid, match="payload_too_large"):
        parse("labshare/v1/sem/status", big, RECEIVED_NS)


def test_split_topic_with_a_custom_prefix():
    assert split_topic("plant/a/dev-9/events", prefix="plant/a") == ("dev-9", "events")


@settings(max_examples=300, deadline=None)
@given(topic=st.text(max_size=80), payload=st.binary(max_size=300))
def test_arbitrary_input_is_parsed_or_rejected_with_a_known_reason(topic, payload):
    try:
        parse(topic, payload, RECEIVED_NS)
    except Invalid as exc:
        reason = exc.reason
    else:
        reason = None
    assert reason is None or reason in REASONS


@settings(max_examples=200, deadline=None)
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                        lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=20),
       channel=st.sampled_from(["status", "metrics", "events"]))
def test_arbitrary_json_on_a_valid_topic_never_escapes_as_another_error(doc, channel):
    payload = json.dumps(doc, allow_nan=True).encode()
    try:
        parse(f"labshare/v1/dev-1/{channel}", payload, RECEIVED_NS)
    except Invalid as exc:
        reason = exc.reason
    else:
        reason = None
    assert reason is None or reason in REASONS
