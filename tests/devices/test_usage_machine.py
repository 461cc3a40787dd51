"""The usage state machine on its own (devices/usage.py, design.md §5): which intervals of real use a device's
messages add up to. Times are seconds after a base instant; power readings are watts on a 1 kW threshold."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.usage import Config, Item, Kind, Machine, Session, derive, expected_open, is_restart_point, sort_key

S = 1_000_000_000
T0 = 1_780_000_000 * S
TIMEOUT = 300  # heartbeat timeout, seconds
IDLE_W, BUSY_W, THRESHOLD_W = 40.0, 1500.0, 1000.0

POWER = Config("power", heartbeat_timeout_ns=TIMEOUT * S, debounce_ns=60 * S, threshold_w=THRESHOLD_W)
POWER_NO_DEBOUNCE = Config("power", heartbeat_timeout_ns=TIMEOUT * S, debounce_ns=0, threshold_w=THRESHOLD_W)
STATUS = Config("status", heartbeat_timeout_ns=TIMEOUT * S)
EVENTS = Config("events", heartbeat_timeout_ns=TIMEOUT * S)


def at(seconds: float) -> int:
    return T0 + int(seconds * S)


def sample(t: float, watts: float | None) -> Item:
    return Item(at(t), Kind.SAMPLE, power_w=watts)


def samples(start: float, stop: float, watts: float, every: float = 10) -> list[Item]:
    """A reading every `every` seconds from `start` up to, not including, `stop`."""
    out, t = [], start
    while t < stop:
        out.append(sample(t, watts))
        t += every
    return out


def status(t: float, state: str) -> Item:
    return Item(at(t), Kind.OFFLINE if state == "offline" else Kind.STATUS, state)


def event(t: float, type_: str, run_id: str = "", operator: str = "", n: int | None = None) -> Item:
    return Item(at(t), Kind.EVENT, type_, run_id=run_id, operator=operator, samples=n)


def heartbeat_timeout(t: float) -> Item:
    return Item(at(t), Kind.OFFLINE, "heartbeat")


def spans(sessions: list[Session]) -> list[tuple]:
    """(start s, end s or None, truncated) per session, for readable assertions."""
    return [((s.start_ns - T0) / S, None if s.end_ns is None else (s.end_ns - T0) / S, s.truncated)
            for s in sessions]


# --- power ---------------------------------------------------------------------------------------------


def test_power_session_starts_and_ends_at_the_first_sample_of_each_debounced_edge():
    stream = samples(0, 100, IDLE_W) + samples(100, 700, BUSY_W) + samples(700, 900, IDLE_W)
    assert spans(derive(POWER, stream)) == [(100, 700, False)]


def test_power_blip_shorter_than_the_debounce_does_not_start_a_session():
    stream = samples(0, 100, IDLE_W) + samples(100, 130, BUSY_W) + samples(130, 400, IDLE_W)  # 30 s above
    assert derive(POWER, stream) == []


def test_power_rising_edge_needs_a_sample_a_full_debounce_after_its_first():
    # above at 100…150 only: the 150 s sample is 50 s after the edge, not 60: nothing confirmed yet
    stream = samples(0, 100, IDLE_W) + samples(100, 160, BUSY_W)
    assert derive(POWER, stream) == []
    # one more sample above at 160 s (60 s after the edge) confirms it, from the edge's first sample
    assert spans(derive(POWER, [*stream, sample(160, BUSY_W)])) == [(100, None, False)]


def test_power_dip_shorter_than_the_debounce_does_not_end_the_session():
    stream = (samples(0, 100, IDLE_W) + samples(100, 400, BUSY_W) + samples(400, 430, IDLE_W)  # 30 s dip
              + samples(430, 800, BUSY_W) + samples(800, 1000, IDLE_W))
    assert spans(derive(POWER, stream)) == [(100, 800, False)]


def test_power_with_sparse_samples_ends_at_the_first_sample_below():
    # the first sample a full debounce after the falling edge (620 s, first at or after 560 s) confirms it
    stream = [*samples(0, 500, BUSY_W, every=50), sample(500, IDLE_W), sample(550, IDLE_W), sample(620, IDLE_W)]
    assert spans(derive(POWER, stream)) == [(0, 500, False)]


def test_power_without_debounce_follows_every_sample():
    stream = [sample(0, IDLE_W), sample(10, BUSY_W), sample(20, IDLE_W), sample(30, BUSY_W), sample(40, BUSY_W),
              sample(50, IDLE_W)]
    assert spans(derive(POWER_NO_DEBOUNCE, stream)) == [(10, 20, False), (30, 50, False)]


def test_power_exactly_at_the_threshold_counts_as_running():
    stream = [sample(0, THRESHOLD_W), sample(10, THRESHOLD_W), sample(20, THRESHOLD_W - 0.01)]
    assert spans(derive(POWER_NO_DEBOUNCE, stream)) == [(0, 20, False)]


def test_samples_without_power_neither_start_nor_end_a_power_session():
    stream = ([*samples(0, 200, BUSY_W), sample(205, None), *samples(210, 300, BUSY_W), *samples(300, 400, IDLE_W)])
    assert spans(derive(POWER, stream)) == [(0, 300, False)]


# --- status --------------------------------------------------------------------------------------------


def test_status_session_is_the_time_spent_running():
    stream = [status(0, "idle"), status(100, "running"), status(160, "running"), status(400, "idle")]
    assert spans(derive(STATUS, stream)) == [(100, 400, False)]


def test_status_running_until_a_fault():
    assert spans(derive(STATUS, [status(100, "running"), status(250, "fault")])) == [(100, 250, False)]


def test_status_alarm_event_ends_a_run_and_only_a_new_running_starts_one():
    stream = [status(100, "running"), event(200, "alarm"), event(260, "alarm_cleared"), event(270, "note"),
              status(300, "running"), status(500, "maintenance")]
    assert spans(derive(STATUS, stream)) == [(100, 200, False), (300, 500, False)]


def test_status_maintenance_is_not_use():
    stream = [status(0, "maintenance"), status(100, "maintenance"), status(200, "idle")]
    assert derive(STATUS, stream) == []


# --- events --------------------------------------------------------------------------------------------


def test_events_run_from_start_to_matching_finish_with_its_details():
    stream = [event(100, "run_started", "r1", "alice"), event(200, "note", "r1"),
              event(280, "run_finished", "r1", n=12)]
    [session] = derive(EVENTS, stream)
    assert spans([session]) == [(100, 280, False)]
    assert (session.run_id, session.operator, session.samples) == ("r1", "alice", 12)


def test_events_without_run_ids_pair_start_and_finish():
    stream = [event(100, "run_started"), event(250, "run_finished", operator="bob")]
    [session] = derive(EVENTS, stream)
    assert spans([session]) == [(100, 250, False)]
    assert session.operator == "bob"  # the finish supplies what the start did not say


def test_events_finish_of_another_run_is_ignored():
    stream = [event(100, "run_started", "r1"), event(200, "run_finished", "r0"), event(380, "run_finished", "r1")]
    assert spans(derive(EVENTS, stream)) == [(100, 380, False)]


def test_events_finish_with_a_run_id_ends_a_run_started_without_one():
    stream = [event(100, "run_started"), event(200, "run_finished", "r7")]
    assert spans(derive(EVENTS, stream)) == [(100, 200, False)]


def test_events_finish_without_a_start_is_ignored():
    assert derive(EVENTS, [event(100, "run_finished", "r1"), event(200, "note")]) == []


def test_events_second_start_truncates_the_first_run_at_its_own_start():
    stream = [event(100, "run_started", "r1"), event(300, "run_started", "r2"), event(500, "run_finished", "r2")]
    sessions = derive(EVENTS, stream)
    assert spans(sessions) == [(100, 300, True), (300, 500, False)]
    assert [s.run_id for s in sessions] == ["r1", "r2"]


# --- truncation ----------------------------------------------------------------------------------------


def test_offline_closes_the_session_at_the_last_message_not_at_the_last_will():
    # readings stop at 390 s; the broker publishes the last will 90 s later
    stream = [*samples(0, 400, BUSY_W), status(480, "offline")]
    assert spans(derive(POWER, stream)) == [(0, 390, True)]


def test_offline_status_session_ends_at_the_last_message():
    stream = [status(100, "running"), sample(200, None), status(260, "offline")]
    assert spans(derive(STATUS, stream)) == [(100, 200, True)]


def test_heartbeat_timeout_closes_an_event_run_at_the_last_message():
    stream = [event(100, "run_started", "r1"), sample(160, None), heartbeat_timeout(460)]
    assert spans(derive(EVENTS, stream)) == [(100, 160, True)]


def test_gap_longer_than_the_timeout_truncates_at_the_message_before_it_and_a_new_session_can_start():
    stream = samples(0, 200, BUSY_W) + samples(600, 800, BUSY_W) + samples(800, 900, IDLE_W)  # silent 190…600 s
    assert spans(derive(POWER, stream)) == [(0, 190, True), (600, 800, False)]


def test_gap_of_exactly_the_timeout_is_not_a_gap():
    stream = [sample(0, BUSY_W), sample(TIMEOUT, BUSY_W), sample(TIMEOUT + 10, IDLE_W)]
    assert spans(derive(POWER_NO_DEBOUNCE, stream)) == [(0, TIMEOUT + 10, False)]
    stream = [sample(0, BUSY_W), sample(TIMEOUT + 1, BUSY_W), sample(TIMEOUT + 10, IDLE_W)]
    # one second more is: the first session is cut at its only sample (no length, dropped), a new one starts
    assert spans(derive(POWER_NO_DEBOUNCE, stream)) == [(TIMEOUT + 1, TIMEOUT + 10, False)]


def test_gap_truncates_a_status_run_and_a_late_idle_starts_nothing():
    stream = [status(100, "running"), sample(200, None), status(700, "idle")]
    assert spans(derive(STATUS, stream)) == [(100, 200, True)]


def test_offline_during_the_falling_edge_closes_at_the_edge():
    stream = samples(0, 300, BUSY_W) + samples(300, 330, IDLE_W) + [status(335, "offline")]
    assert spans(derive(POWER, stream)) == [(0, 300, True)]


def test_gap_during_the_falling_edge_closes_at_the_edge():
    stream = [*samples(0, 300, BUSY_W), sample(300, IDLE_W), sample(310, IDLE_W), sample(900, IDLE_W)]
    assert spans(derive(POWER, stream)) == [(0, 300, True)]


def test_rising_edge_pending_at_a_gap_is_dropped():
    # above at 100 and 110, then silence: after the gap the edge starts again at 500
    stream = [*samples(0, 100, IDLE_W), sample(100, BUSY_W), sample(110, BUSY_W), *samples(500, 600, BUSY_W)]
    assert spans(derive(POWER, stream)) == [(500, None, False)]


def test_rising_edge_pending_at_offline_is_dropped():
    stream = [sample(100, BUSY_W), sample(140, BUSY_W), status(150, "offline"), sample(170, BUSY_W)]
    assert derive(POWER, stream) == []


def test_zero_length_sessions_are_dropped():
    # running reported once, then the last will: closed at the last message, its own start
    assert derive(STATUS, [status(100, "running"), status(200, "offline")]) == []
    # a run replaced by another in the same instant
    stream = [event(100, "run_started", "r1"), event(100, "run_started", "r2"), event(200, "run_finished", "r2")]
    sessions = derive(EVENTS, stream)
    assert spans(sessions) == [(100, 200, False)]
    assert sessions[0].run_id == "r2"
    # power without debounce, one sample above and then gone
    assert derive(POWER_NO_DEBOUNCE, [sample(100, BUSY_W), heartbeat_timeout(400)]) == []
    # a run that starts and finishes in the same instant: no use, and nothing left open afterwards
    for stream in ([event(100, "run_started", "r1"), event(100, "run_finished", "r1")],
                   [event(100, "run_finished", "r1"), event(100, "run_started", "r1")]):
        assert derive(EVENTS, [*stream, sample(150, IDLE_W)]) == []


def test_derive_does_not_depend_on_the_order_of_its_input():
    rng = random.Random(20260101)
    stream = (samples(0, 100, IDLE_W) + samples(100, 400, BUSY_W) + samples(400, 430, IDLE_W)
              + samples(430, 800, BUSY_W) + samples(1200, 1300, BUSY_W) + [status(1310, "offline")])
    shuffled = stream[:]
    rng.shuffle(shuffled)
    assert shuffled != stream
    assert spans(derive(POWER, shuffled)) == spans(derive(POWER, stream)) == [
        (100, 790, True), (1200, 1290, True)]


# --- restart points ------------------------------------------------------------------------------------


def test_restart_points_are_items_after_which_nothing_is_pending():
    assert is_restart_point(POWER, sample(0, BUSY_W))
    assert is_restart_point(POWER, sample(0, IDLE_W))
    assert not is_restart_point(POWER, sample(0, None))  # says nothing about power
    assert not is_restart_point(POWER, status(0, "running"))
    assert is_restart_point(STATUS, status(0, "idle"))
    assert is_restart_point(STATUS, event(0, "alarm"))
    assert not is_restart_point(STATUS, event(0, "note"))
    assert not is_restart_point(STATUS, sample(0, BUSY_W))
    assert is_restart_point(EVENTS, event(0, "note"))
    assert is_restart_point(EVENTS, sample(0, None))
    for config in (POWER, STATUS, EVENTS):
        assert not is_restart_point(config, status(0, "offline"))
        assert not is_restart_point(config, heartbeat_timeout(0))


def test_expected_open_after_a_restart_point():
    assert expected_open(POWER, sample(0, THRESHOLD_W)) is True
    assert expected_open(POWER, sample(0, IDLE_W)) is False
    assert expected_open(STATUS, status(0, "running")) is True
    assert expected_open(STATUS, event(0, "alarm")) is False
    assert expected_open(STATUS, event(0, "alarm_cleared")) is False
    assert expected_open(STATUS, event(0, "note")) is None
    assert expected_open(EVENTS, event(0, "run_started")) is True
    assert expected_open(EVENTS, event(0, "run_finished")) is None  # it may belong to another run
    assert expected_open(EVENTS, sample(0, None)) is None


# --- resuming at a restart point gives the same sessions as feeding everything ---------------------------


@st.composite
def streams(draw):
    config = draw(st.sampled_from([POWER, POWER_NO_DEBOUNCE, STATUS, EVENTS]))
    items, t, run = [], 0, 0
    for n in range(draw(st.integers(1, 50))):
        t += draw(st.sampled_from([1, 10, 10, 30, 60, 90, 400]))  # 400 s is longer than the timeout
        kind = draw(st.sampled_from(["sample", "sample", "status", "event"]))
        if kind == "sample":
            items.append(sample(t, draw(st.sampled_from([IDLE_W, BUSY_W, BUSY_W, THRESHOLD_W, None]))))
        elif kind == "status":
            items.append(status(t, draw(st.sampled_from(["idle", "running", "fault", "maintenance", "offline"]))))
        else:
            type_ = draw(st.sampled_from(["run_started", "run_finished", "alarm", "alarm_cleared", "note"]))
            run += type_ == "run_started"
            items.append(event(t, type_, draw(st.sampled_from([f"r{run}", f"r{run - 1}", ""])), operator=f"u{n}"))
        if draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans()):
            items.append(heartbeat_timeout(t + TIMEOUT))
    return config, sorted(items, key=sort_key)


def _open_at(sessions: list[Session], ts_ns: int) -> Session | None:
    return next((s for s in sessions if s.start_ns <= ts_ns and (s.end_ns is None or s.end_ns > ts_ns)), None)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_resuming_at_any_restart_point_gives_the_same_sessions_after_it(case):
    config, items = case
    full = Machine(config)
    for item in items:
        full.feed(item)
    everything = full.finish()
    assert everything == derive(config, items)
    for index, point in enumerate(items):
        if not is_restart_point(config, point):
            continue
        open_session = _open_at(everything, point.ts_ns)
        machine = Machine.resumed(config, point, open_session)
        for item in items[index + 1:]:
            machine.feed(item)
        replaced_from = open_session.start_ns if open_session is not None else point.ts_ns + 1
        after = [s for s in everything if s.start_ns >= replaced_from]
        assert spans(machine.finish()) == spans(after), f"resumed at {(point.ts_ns - T0) / S} s"
        assert [(s.run_id, s.operator, s.samples) for s in machine.finish()] == [
            (s.run_id, s.operator, s.samples) for s in after]
