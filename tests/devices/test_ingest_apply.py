"""Applying device messages to the database (devices/ingest.py, design.md §5): live state, the observation
history, redelivery, dead letters, heartbeat timeouts and the stored usage sessions. Every test runs on
SQLite and on PostgreSQL. Times are seconds after a base instant."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from devices import usage
from devices.ingest import (
    EventIn,
    Inbound,
    SampleIn,
    StatusIn,
    apply_batch,
    config_of,
    datetime_to_ns,
    ns_to_datetime,
    sweep_heartbeats,
)
from devices.models import (
    DeadLetter,
    Device,
    DeviceEvent,
    DeviceSample,
    LiveState,
    StateCause,
    StateObservation,
    UsageSession,
)
from devices.usage import Item, Kind
from tests.factories import make_device, row_counts

S = 1_000_000_000
T0 = 1_780_000_000 * S
IDLE_W, BUSY_W = 40.0, 1500.0
ALL_TABLES = (Device, StateObservation, DeviceEvent, DeviceSample, UsageSession, DeadLetter)


def at(seconds: float) -> int:
    return T0 + int(seconds * S)


def status(device: Device, t: float, state: str, detail: str = "") -> Inbound:
    return Inbound(topic=f"labshare/v1/{device.device_id}/status", payload=b"{}", received_ns=at(t) + S,
                   device_id=device.device_id, status=StatusIn(at(t), state, detail))


def event(device: Device, t: float, event_id: str, type_: str, run_id: str = "", **extra) -> Inbound:
    return Inbound(topic=f"labshare/v1/{device.device_id}/events", payload=b"{}", received_ns=at(t) + S,
                   device_id=device.device_id, event=EventIn(event_id, at(t), type_, run_id, **extra))


def sample(device: Device, t: float, watts: float | None = None) -> Inbound:
    return Inbound(topic=f"labshare/v1/{device.device_id}/metrics", payload=b"{}", received_ns=at(t) + S,
                   device_id=device.device_id, samples=(SampleIn(at(t), watts),))


def apply(db, *messages: Inbound, now: float = 10_000):
    return apply_batch(db, list(messages), now_ns=at(now))


def sessions(db, device: Device) -> list[tuple]:
    """(start s, end s or None, truncated, run_id) of the stored sessions, oldest first."""
    rows = db.scalars(select(UsageSession).where(UsageSession.device_pk == device.id)
                      .order_by(UsageSession.start_ns)).all()
    return [((r.start_ns - T0) / S, None if r.end_ns is None else (r.end_ns - T0) / S, r.truncated, r.run_id)
            for r in rows]


def history(db, device: Device) -> list[tuple]:
    """The stored observations: (t s, state, cause), oldest first."""
    rows = db.scalars(select(StateObservation).where(StateObservation.device_pk == device.id)
                      .order_by(StateObservation.ts_ns, StateObservation.cause)).all()
    return [((r.ts_ns - T0) / S, LiveState(r.state).value, StateCause(r.cause).value) for r in rows]


def live(db, device: Device) -> tuple:
    db.refresh(device)
    state_t = None if device.state_ts_ns is None else (device.state_ts_ns - T0) / S
    return device.state.value, state_t, None if device.state_cause is None else device.state_cause.value


def power_device(db, **extra) -> Device:
    return make_device(db, usage_source="power", power_threshold_w=Decimal("1000"), debounce_s=60, **extra)


# --- live state ----------------------------------------------------------------------------------------


def test_late_older_status_does_not_override_the_newer_one_but_is_kept(db):
    device = make_device(db)
    result = apply(db, status(device, 200, "running"))
    assert result.state_changes == [(device.device_id, "running")]
    result = apply(db, status(device, 100, "idle"))  # sent earlier, delivered later
    assert result.state_changes == []
    assert live(db, device) == ("running", 200, "status")
    assert history(db, device) == [(100, "idle", "status"), (200, "running", "status")]


def test_alarm_is_a_fault_and_its_clearing_is_idle(db):
    device = make_device(db)
    apply(db, status(device, 100, "running"))
    apply(db, event(device, 200, "e1", "alarm", detail="vacuum lost"))
    assert live(db, device) == ("fault", 200, "alarm")
    assert device.state_detail == "vacuum lost"
    apply(db, event(device, 300, "e2", "alarm_cleared"))
    assert live(db, device) == ("idle", 300, "alarm_cleared")
    apply(db, event(device, 350, "e3", "note"))  # other events do not touch the state
    assert live(db, device) == ("idle", 300, "alarm_cleared")
    assert history(db, device) == [(100, "running", "status"), (200, "fault", "alarm"),
                                   (300, "idle", "alarm_cleared")]


@pytest.mark.parametrize(("first", "second", "expected"), [
    ("status", "alarm", ("idle", 100, "status")),  # the device's own word outranks an alarm
    ("alarm", "status", ("idle", 100, "status")),
    ("alarm", "alarm_cleared", ("fault", 100, "alarm")),  # an alarm outranks its clearing
    ("alarm_cleared", "alarm", ("fault", 100, "alarm")),
])
@pytest.mark.parametrize("same_batch", [True, False])
def test_equal_timestamps_are_ranked_not_ordered_by_arrival(db, first, second, expected, same_batch):
    device = make_device(db)
    made = {"status": lambda: status(device, 100, "idle"), "alarm": lambda: event(device, 100, "a", "alarm"),
            "alarm_cleared": lambda: event(device, 100, "c", "alarm_cleared")}
    if same_batch:
        apply(db, made[first](), made[second]())
    else:
        apply(db, made[first]())
        apply(db, made[second]())
    assert live(db, device) == expected
    assert len(history(db, device)) == 2


def test_alarm_cleared_outranks_a_heartbeat_timeout_at_the_same_instant(db):
    device = make_device(db, heartbeat_timeout_s=300)
    apply(db, status(device, 0, "running"))
    sweep_heartbeats(db, at(301))
    assert live(db, device) == ("offline", 300, "heartbeat")
    apply(db, event(device, 300, "c", "alarm_cleared"))
    assert live(db, device) == ("idle", 300, "alarm_cleared")


def test_last_seen_is_the_newest_message_of_the_device_itself(db):
    device = make_device(db)
    apply(db, sample(device, 500))
    apply(db, event(device, 100, "e1", "note"), status(device, 300, "idle"))
    db.refresh(device)
    assert device.last_seen_ns == at(500)
    apply(db, status(device, 900, "offline"))  # the last will is the broker speaking, not the device
    db.refresh(device)
    assert device.last_seen_ns == at(500)
    assert device.state == LiveState.OFFLINE


def test_redelivered_messages_add_no_rows(db):
    device = make_device(db, usage_source="events")

    def messages():  # fresh objects each time, as the broker redelivers bytes, not our objects
        return [status(device, 100, "running"), event(device, 110, "e1", "run_started", "r1"),
                sample(device, 120, 830.0), event(device, 130, "e2", "alarm"),
                event(device, 200, "e3", "run_finished", "r1", samples=4)]

    apply(db, *messages())
    counts = row_counts(db, *ALL_TABLES)
    state = live(db, device)
    stored = sessions(db, device)
    assert counts["device_event"] == 3
    assert counts["device_sample"] == 1
    assert stored == [(110, 200, False, "r1")]
    apply(db, *messages())  # the whole batch again
    apply(db, *messages()[::-1], *messages())  # and each twice in one batch, reversed
    assert row_counts(db, *ALL_TABLES) == counts
    assert live(db, device) == state
    assert sessions(db, device) == stored


def test_redelivered_event_is_stored_once_even_if_its_copy_differs(db):
    device = make_device(db, usage_source="events")
    apply(db, event(device, 100, "e1", "run_started", "r1"))
    apply(db, event(device, 150, "e1", "run_started", "r1"))  # same id: the same event, whatever it says now
    rows = db.scalars(select(DeviceEvent).where(DeviceEvent.device_pk == device.id)).all()
    assert [(r.event_id, r.ts_ns) for r in rows] == [("e1", at(100))]
    assert sessions(db, device) == [(100, None, False, "r1")]


# --- dead letters --------------------------------------------------------------------------------------


def test_message_of_an_unknown_device_is_dead_lettered_and_changes_nothing_else(db):
    known = make_device(db)
    apply(db, status(known, 0, "idle"))
    before = row_counts(db, *ALL_TABLES)
    prefix = b'{"ts": 1780000000000, "state": "running", "detail": "'
    payload = prefix + b"\xff\xfe\x00" + b"x" * 300 + b'"}'
    ghost = Inbound(topic="labshare/v1/ghost-7/status", payload=payload, received_ns=at(5), device_id="ghost-7",
                    status=StatusIn(at(5), "running"))
    result = apply(db, ghost, status(known, 5, "idle"))
    assert result.dead_letters == {"unknown_device": 1}
    assert result.accepted == 1
    assert (ghost.accepted, ghost.reject_reason) == (False, "unknown_device")
    letter = db.scalars(select(DeadLetter)).one()
    assert (letter.reason, letter.topic, letter.device_id) == ("unknown_device", "labshare/v1/ghost-7/status",
                                                               "ghost-7")
    assert letter.payload_size == len(payload)
    # the first 200 bytes: invalid UTF-8 as backslash escapes, NUL made printable
    assert letter.payload_head == prefix.decode() + "\\xff\\xfe\\x00" + "x" * (200 - len(prefix) - 3)
    assert letter.received_at == datetime.fromtimestamp(1_780_000_005, UTC)
    after = row_counts(db, *ALL_TABLES)
    assert after == {**before, "dead_letter": before["dead_letter"] + 1,
                     "device_state_observation": before["device_state_observation"] + 1}  # the known one's


def test_payload_head_cut_inside_a_character_shows_the_cut_bytes(db):
    payload = b"a" * 199 + "é".encode()
    apply(db, Inbound(topic="labshare/v1/nobody/events", payload=payload, received_ns=at(0), device_id="nobody"))
    letter = db.scalars(select(DeadLetter)).one()
    assert letter.payload_head == "a" * 199 + "\\xc3"
    assert letter.payload_size == 201


def test_message_of_a_disabled_device_is_dead_lettered_and_the_device_left_alone(db):
    device = make_device(db, usage_source="events")
    apply(db, status(device, 0, "idle"))
    device.enabled = False
    db.flush()
    before = row_counts(db, *ALL_TABLES)
    state = live(db, device)
    result = apply(db, status(device, 10, "running"), event(device, 20, "e1", "run_started", "r1"),
                   sample(device, 30, 900.0))
    assert result.dead_letters == {"device_disabled": 3}
    assert result.accepted == 0
    assert row_counts(db, *ALL_TABLES) == {**before, "dead_letter": before["dead_letter"] + 3}
    assert live(db, device) == state
    assert device.last_seen_ns == at(0)
    letters = db.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
    assert [(d.reason, d.device_id, d.topic.rsplit("/", 1)[1]) for d in letters] == [
        ("device_disabled", device.device_id, "status"), ("device_disabled", device.device_id, "events"),
        ("device_disabled", device.device_id, "metrics")]


def test_rejected_message_keeps_its_reason_and_detail(db):
    device = make_device(db)
    before = row_counts(db, *ALL_TABLES)
    bad = Inbound(topic=f"labshare/v1/{device.device_id}/status", payload=b'{"state": "on\x00fire"}',
                  received_ns=at(0), device_id=device.device_id, reject_reason="invalid_payload",
                  reject_detail="state: 'on\x00fire' is not one of the states")
    result = apply(db, bad)
    assert result.dead_letters == {"invalid_payload": 1}
    letter = db.scalars(select(DeadLetter)).one()
    assert letter.detail == "state: 'on\\x00fire' is not one of the states"
    assert letter.payload_head == '{"state": "on\\x00fire"}'
    assert row_counts(db, *ALL_TABLES) == {**before, "dead_letter": 1}


# --- retained status -----------------------------------------------------------------------------------


def test_retained_status_replayed_without_ts_adds_nothing_when_the_state_is_unchanged(db):
    device = make_device(db)
    apply(db, status(device, 100, "running"))
    before = row_counts(db, *ALL_TABLES)
    replay = status(device, 5000, "running")  # stamped at receipt on reconnect
    replay.retained_without_ts = True
    result = apply(db, replay)
    assert result.accepted == 1
    assert row_counts(db, *ALL_TABLES) == before
    assert live(db, device) == ("running", 100, "status")
    assert device.last_seen_ns == at(100)


def test_retained_status_replayed_without_ts_counts_when_the_state_differs(db):
    device = make_device(db)
    apply(db, status(device, 100, "running"))
    replay = status(device, 5000, "offline")  # the last will we never saw
    replay.retained_without_ts = True
    apply(db, replay)
    assert live(db, device) == ("offline", 5000, "status")


# --- heartbeat timeouts --------------------------------------------------------------------------------


def test_silent_device_goes_offline_at_last_message_plus_timeout_and_its_session_is_truncated(db):
    device = make_device(db, usage_source="status", heartbeat_timeout_s=300)
    apply(db, status(device, 0, "running"), sample(device, 100))
    assert sweep_heartbeats(db, at(400)).state_changes == []  # exactly at the timeout: not yet
    assert live(db, device) == ("running", 0, "status")
    result = sweep_heartbeats(db, at(460))
    assert result.state_changes == [(device.device_id, "offline")]
    assert live(db, device) == ("offline", 400, "heartbeat")
    assert sessions(db, device) == [(0, 100, True, "")]
    assert history(db, device)[-1] == (400, "offline", "heartbeat")


def test_events_run_is_truncated_by_a_heartbeat_timeout(db):
    device = make_device(db, usage_source="events", heartbeat_timeout_s=60)
    apply(db, event(device, 0, "e1", "run_started", "r1"), sample(device, 30, 12.0))
    assert live(db, device)[0] == "offline"  # it never sent a status: its state was never known
    sweep_heartbeats(db, at(100))
    assert sessions(db, device) == [(0, 30, True, "r1")]
    assert history(db, device) == [(90, "offline", "heartbeat")]
    counts = row_counts(db, *ALL_TABLES)
    sweep_heartbeats(db, at(1000))  # swept once
    assert row_counts(db, *ALL_TABLES) == counts


def test_late_message_inside_the_silence_undoes_the_timeout(db):
    device = make_device(db, usage_source="status", heartbeat_timeout_s=300)
    apply(db, status(device, 0, "running"), sample(device, 100))
    sweep_heartbeats(db, at(460))
    assert live(db, device)[0] == "offline"
    # store-and-forward: a sample from inside the silence arrives after the sweep
    result = apply(db, sample(device, 250), now=470)
    assert result.state_changes == [(device.device_id, "running")]
    assert live(db, device) == ("running", 0, "status")
    assert all(cause != "heartbeat" for _, _, cause in history(db, device))
    assert sessions(db, device) == [(0, None, False, "")]  # as if the timeout had never happened
    # the device is still silent after 250 s: the next sweep times it out again, from there
    sweep_heartbeats(db, at(560))
    assert live(db, device) == ("offline", 550, "heartbeat")
    assert sessions(db, device) == [(0, 250, True, "")]


def test_message_after_the_silence_leaves_the_timeout_in_place(db):
    device = make_device(db, usage_source="status", heartbeat_timeout_s=300)
    apply(db, status(device, 0, "running"), sample(device, 100))
    sweep_heartbeats(db, at(460))
    apply(db, status(device, 700, "running"), now=700)
    assert (400, "offline", "heartbeat") in history(db, device)
    assert live(db, device) == ("running", 700, "status")
    assert sessions(db, device) == [(0, 100, True, ""), (700, None, False, "")]


def test_device_already_offline_is_not_swept_again(db):
    device = make_device(db, heartbeat_timeout_s=300)
    other = make_device(db, heartbeat_timeout_s=300)
    apply(db, status(device, 0, "running"), status(device, 50, "offline"), status(other, 0, "idle"))
    sweep_heartbeats(db, at(1000))
    assert live(db, device) == ("offline", 50, "status")
    assert live(db, other) == ("offline", 300, "heartbeat")
    counts = row_counts(db, *ALL_TABLES)
    assert sweep_heartbeats(db, at(5000)).state_changes == []
    assert row_counts(db, *ALL_TABLES) == counts


def test_disabled_device_is_not_swept(db):
    device = make_device(db, heartbeat_timeout_s=300)
    apply(db, status(device, 0, "running"))
    device.enabled = False
    db.flush()
    counts = row_counts(db, *ALL_TABLES)
    sweep_heartbeats(db, at(1000))
    assert row_counts(db, *ALL_TABLES) == counts
    assert live(db, device) == ("running", 0, "status")


# --- usage sessions ------------------------------------------------------------------------------------


def test_session_times_are_also_stored_as_datetimes_to_the_microsecond(db):
    device = make_device(db, usage_source="status")
    apply(db, Inbound(topic="t", payload=b"{}", received_ns=at(0), device_id=device.device_id,
                      status=StatusIn(at(100) + 123_456_789, "running")))
    apply(db, Inbound(topic="t", payload=b"{}", received_ns=at(0), device_id=device.device_id,
                      status=StatusIn(at(200) + 999, "idle")))
    db.expire_all()
    row = db.scalars(select(UsageSession).where(UsageSession.device_pk == device.id)).one()
    assert row.started_at == datetime.fromtimestamp(1_780_000_100, UTC).replace(microsecond=123_456)
    assert row.ended_at == datetime.fromtimestamp(1_780_000_200, UTC)
    assert row.started_at == ns_to_datetime(row.start_ns)
    assert row.ended_at == ns_to_datetime(row.end_ns)
    assert datetime_to_ns(row.started_at) == row.start_ns - 789


def _power_stream(device: Device) -> list[Inbound]:
    """Ten minutes of a real run: idle, a blip, a run with a dip, a falling edge, silence, a run cut off."""
    readings = [(t, IDLE_W) for t in range(0, 100, 10)] + [(t, BUSY_W) for t in range(100, 130, 10)]  # blip
    readings += [(t, IDLE_W) for t in range(130, 200, 10)] + [(t, BUSY_W) for t in range(200, 500, 10)]
    readings += [(t, IDLE_W) for t in range(500, 530, 10)] + [(t, BUSY_W) for t in range(530, 800, 10)]  # dip
    readings += [(t, IDLE_W) for t in range(800, 900, 10)]
    readings += [(t, BUSY_W) for t in range(1300, 1500, 10)]  # after 400 s of silence
    messages = [sample(device, t, w) for t, w in readings]
    return [*messages, status(device, 1520, "offline")]


def test_power_sessions_in_order_and_reversed_agree_with_the_machine(db):
    in_order, reversed_ = power_device(db), power_device(db)
    for message in _power_stream(in_order):
        apply(db, message)  # each batch newer than everything: resumes from the saved tail
    for message in reversed(_power_stream(reversed_)):
        apply(db, message)  # each batch older than everything: re-derives from a restart point
    expected = [(200, 800, False, ""), (1300, 1490, True, "")]
    assert sessions(db, in_order) == expected
    assert sessions(db, reversed_) == expected
    machine = usage.derive(config_of(in_order), [Item(m.samples[0].ts_ns, Kind.SAMPLE, power_w=m.samples[0].power_w)
                                                 for m in _power_stream(in_order) if m.samples]
                           + [Item(at(1520), Kind.OFFLINE, "offline")])
    assert [((s.start_ns - T0) / S, (s.end_ns - T0) / S, s.truncated, "") for s in machine] == expected
    db.refresh(in_order)
    assert in_order.usage_tail["ts"] == at(1520)
    assert in_order.usage_tail["open"] is False


def test_late_reading_below_the_threshold_inside_a_rising_edge_moves_the_start(db):
    device = power_device(db)
    readings = [(0, IDLE_W)] + [(t, BUSY_W) for t in range(10, 300, 10)] + [(t, IDLE_W) for t in range(300, 400, 10)]
    late = 30  # the 30 s reading was below the threshold, but arrives last
    for t, w in readings:
        if t != late:
            apply(db, sample(device, t, w))
    assert sessions(db, device) == [(10, 300, False, "")]
    apply(db, sample(device, late, IDLE_W))
    assert sessions(db, device) == [(40, 300, False, "")]  # the rising edge started again at 40 s


def test_late_reading_above_the_threshold_inside_a_falling_edge_keeps_the_session_going(db):
    device = power_device(db)
    readings = [(t, BUSY_W) for t in range(0, 300, 10)] + [(t, IDLE_W) for t in range(300, 400, 10)]
    readings += [(t, BUSY_W) for t in range(400, 500, 10)] + [(t, IDLE_W) for t in range(500, 600, 10)]
    late = 330  # the 330 s reading was above the threshold, but arrives last
    for t, w in readings:
        if t != late:
            apply(db, sample(device, t, w))
    assert sessions(db, device) == [(0, 300, False, ""), (400, 500, False, "")]
    apply(db, sample(device, late, BUSY_W))
    # the dip at 300 s was only 30 s long: one session; it ends at the falling edge that lasted
    assert sessions(db, device) == [(0, 500, False, "")]
