"""Usage sessions and live state do not depend on the order messages arrive in, on how they are split into
batches, or on redelivery (design.md §5): whatever the arrival, the stored sessions are those the pure
machine derives from the whole stream sorted by time, and the state is the newest observation's."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from devices import usage
from devices.ingest import (
    EventIn,
    Inbound,
    SampleIn,
    StatusIn,
    apply_batch,
    config_of,
    deferred_devices,
    settle_sessions,
)
from devices.models import LiveState, UsageSession
from devices.usage import Item, Kind
from tests.factories import make_device

S = 1_000_000_000
T0 = 1_780_000_000 * S


def _message(device_id: str, kind: str, ts: int, value) -> Inbound:
    inbound = Inbound(topic=f"labshare/v1/{device_id}/{kind}", payload=b"{}", received_ns=ts, device_id=device_id)
    if kind == "metrics":
        inbound.samples = (SampleIn(ts, value),)
    elif kind == "status":
        inbound.status = StatusIn(ts, value)
    else:
        event_type, run_id, event_id = value
        inbound.event = EventIn(event_id, ts, event_type, run_id)
    return inbound


def _item(message: Inbound) -> Item:
    """What the message means to the pure machine (the specification the ingest must agree with)."""
    if message.samples:
        return Item(message.samples[0].ts_ns, Kind.SAMPLE, power_w=message.samples[0].power_w)
    if message.status is not None:
        kind = Kind.OFFLINE if message.status.state == "offline" else Kind.STATUS
        return Item(message.status.ts_ns, kind, message.status.state)
    event = message.event
    return Item(event.ts_ns, Kind.EVENT, event.type, run_id=event.run_id)


@st.composite
def streams(draw, source: str):
    """A device's messages over a few minutes: gaps long enough to time out, runs, blips, offline."""
    count = draw(st.integers(min_value=1, max_value=40))
    ts = T0
    messages = []
    run = 0
    for n in range(count):
        ts += draw(st.sampled_from([1, 5, 20, 45, 90, 400])) * S  # 400 s > the 300 s heartbeat timeout
        kind = draw(st.sampled_from(["metrics", "metrics", "status", "events"]))
        if kind == "metrics":
            value = draw(st.sampled_from([50.0, 900.0, 1500.0, None]))
        elif kind == "status":
            value = draw(st.sampled_from(["idle", "running", "running", "fault", "offline", "maintenance"]))
        else:
            event_type = draw(st.sampled_from(["run_started", "run_finished", "alarm", "alarm_cleared", "note"]))
            if event_type == "run_started":
                run += 1
            run_id = draw(st.sampled_from([f"r{run}", f"r{max(run - 1, 0)}", ""]))
            value = (event_type, run_id, f"e{n}")
        messages.append((kind, ts, value))
    return messages


def _stored(db, device) -> list[tuple]:
    rows = db.scalars(select(UsageSession).where(UsageSession.device_pk == device.id)
                      .order_by(UsageSession.start_ns)).all()
    return [(r.start_ns, r.end_ns, r.truncated, r.run_id) for r in rows]


def _expected(device, messages) -> list[tuple]:
    sessions = usage.derive(config_of(device), [_item(m) for m in messages])
    return [(s.start_ns, s.end_ns, s.truncated, s.run_id) for s in sessions]


def _expected_state(messages) -> LiveState:
    observations = []
    for m in messages:
        if m.status is not None:
            observations.append((m.status.ts_ns, 3, m.status.state))
        elif m.event is not None and m.event.type == "alarm":
            observations.append((m.event.ts_ns, 2, "fault"))
        elif m.event is not None and m.event.type == "alarm_cleared":
            observations.append((m.event.ts_ns, 1, "idle"))
    return LiveState(max(observations)[2]) if observations else LiveState.OFFLINE


def _deliver(db, messages, rng: random.Random) -> None:
    """Shuffle, redeliver some, and split into batches of random size."""
    arrivals = list(messages) + rng.sample(messages, k=len(messages) // 4)
    rng.shuffle(arrivals)
    while arrivals:
        size = rng.randint(1, 8)
        batch, arrivals = arrivals[:size], arrivals[size:]
        apply_batch(db, batch, now_ns=T0)


def _check(db, source: str, stream, seed: int) -> None:
    extra = {"power_threshold_w": Decimal("1000"), "debounce_s": 60} if source == "power" else {}
    device = make_device(db, usage_source=source, heartbeat_timeout_s=300, **extra)
    messages = [_message(device.device_id, kind, ts, value) for kind, ts, value in stream]
    _deliver(db, messages, random.Random(seed))
    assert _stored(db, device) == _expected(device, messages)
    db.refresh(device)
    assert device.state == _expected_state(messages)
    assert device.last_seen_ns == max(ts for kind, ts, _ in stream if not (kind == "status" and _ == "offline")) \
        if any(not (k == "status" and v == "offline") for k, _t, v in stream) else device.last_seen_ns is None


_settings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])


@_settings
@given(stream=streams("power"), seed=st.integers(0, 2**32))
def test_power_sessions_do_not_depend_on_arrival(db, stream, seed):
    _check(db, "power", stream, seed)


@_settings
@given(stream=streams("status"), seed=st.integers(0, 2**32))
def test_status_sessions_do_not_depend_on_arrival(db, stream, seed):
    _check(db, "status", stream, seed)


@_settings
@given(stream=streams("events"), seed=st.integers(0, 2**32))
def test_event_sessions_do_not_depend_on_arrival(db, stream, seed):
    _check(db, "events", stream, seed)


def test_in_order_delivery_one_message_at_a_time_matches_the_whole_stream(db):
    """The cheap path (resuming from the saved tail) alone must give the same sessions too."""
    device = make_device(db, usage_source="power", power_threshold_w=Decimal("1000"), debounce_s=60)
    rng = random.Random(7)
    messages, ts, power = [], T0, 50.0
    for _ in range(600):
        ts += rng.choice([10, 10, 10, 30, 400]) * S
        if rng.random() < 0.05:
            power = 1500.0 if power < 1000 else 50.0
        messages.append(_message(device.device_id, "metrics", ts, power if rng.random() > 0.02 else 2000 - power))
    for message in messages:
        apply_batch(db, [message], now_ns=ts)
    assert _stored(db, device) == _expected(device, messages)
    assert len(_stored(db, device)) > 3


@_settings
@given(stream=streams("power"), seed=st.integers(0, 2**32), source=st.sampled_from(["power", "status", "events"]))
def test_a_short_in_memory_window_folds_without_changing_the_sessions(db, monkeypatch, stream, seed, source):
    """The usage tail keeps a window of recent items and folds older ones into its base state; with a window of
    two items, folding and late items beyond the window (re-derived from the database) happen all the time."""
    import devices.ingest

    monkeypatch.setattr(devices.ingest, "HISTORY", 2)
    _check(db, source, stream, seed)


def _deliver_deferring(db, messages, rng: random.Random) -> set[int]:
    """As _deliver, but as the ingest worker applies batches: late items beyond the window are deferred and
    settled now and then; returns the devices still waiting at the end."""
    waiting: set[int] = set()
    arrivals = list(messages) + rng.sample(messages, k=len(messages) // 4)
    rng.shuffle(arrivals)
    while arrivals:
        size = rng.randint(1, 8)
        batch, arrivals = arrivals[:size], arrivals[size:]
        waiting |= apply_batch(db, batch, now_ns=T0, defer_late=True).deferred
        if waiting and rng.random() < 0.2:
            assert settle_sessions(db, waiting) == len(waiting)
            waiting.clear()
    return waiting


@_settings
@given(stream=streams("power"), seed=st.integers(0, 2**32), source=st.sampled_from(["power", "status", "events"]))
def test_deferred_late_items_settle_to_the_same_sessions(db, monkeypatch, stream, seed, source):
    """The worker defers items older than the window (two workers, one behind the other); whenever and however
    often they are settled, the sessions end as the whole stream's. With a window of two, deferral is common."""
    import devices.ingest

    monkeypatch.setattr(devices.ingest, "HISTORY", 2)
    extra = {"power_threshold_w": Decimal("1000"), "debounce_s": 60} if source == "power" else {}
    device = make_device(db, usage_source=source, heartbeat_timeout_s=300, **extra)
    messages = [_message(device.device_id, kind, ts, value) for kind, ts, value in stream]
    waiting = _deliver_deferring(db, messages, random.Random(seed))
    assert set(deferred_devices(db)) == waiting  # what waits is found again, e.g. after a restart
    settle_sessions(db, deferred_devices(db))
    assert deferred_devices(db) == []
    assert _stored(db, device) == _expected(device, messages)


def test_items_in_order_after_a_deferred_one_wait_too_and_a_direct_call_settles(db):
    """While a device waits, batches in order do not derive from its stale tail; apply_batch without deferral
    (the heartbeat sweep, a tool) re-derives it on the spot."""
    import devices.ingest

    device = make_device(db, usage_source="power", power_threshold_w=Decimal("1000"), debounce_s=60,
                         heartbeat_timeout_s=300)
    powers = [50.0] * 5 + [1500.0] * 20 + [50.0] * 20
    messages = [_message(device.device_id, "metrics", T0 + n * 10 * S, p) for n, p in enumerate(powers)]
    late, rest = messages[10], messages[:10] + messages[11:]
    for message in rest:
        apply_batch(db, [message], now_ns=T0, defer_late=True)
    assert len(_stored(db, device)) == 1
    window = devices.ingest.HISTORY
    assert len(rest) - 10 > 2 * window  # the late sample is older than the window
    assert apply_batch(db, [late], now_ns=T0, defer_late=True).deferred == {device.id}
    follow = _message(device.device_id, "metrics", T0 + 60 * 10 * S, 50.0)
    assert apply_batch(db, [follow], now_ns=T0, defer_late=True).deferred == {device.id}
    assert deferred_devices(db) == [device.id]
    extra = _message(device.device_id, "metrics", T0 + 61 * 10 * S, 50.0)
    assert apply_batch(db, [extra], now_ns=T0).deferred == set()
    assert deferred_devices(db) == []
    assert _stored(db, device) == _expected(device, [*messages, follow, extra])
