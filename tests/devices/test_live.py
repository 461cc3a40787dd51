"""The live read side: the board with current bookings, state timelines (across midnight in the facility's zone,
the state in force at the start, equal timestamps decided by cause), usage sessions and dead letters, and who
may see them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from booking.models import ReservationState
from core.accounts.models import Role
from core.errors import Forbidden, NotFound
from devices import live
from devices.ingest import datetime_to_ns
from devices.models import DeadLetter, LiveState, StateCause, StateObservation, UsageSession
from tests.factories import make_device, make_facility, make_reservation, make_resource, make_user

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai


def local(*args) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


def observe(db, device, at: datetime, state: str, cause: str = "status", detail: str = "") -> None:
    db.add(StateObservation(device_pk=device.id, ts_ns=datetime_to_ns(at), state=LiveState(state),
                            cause=StateCause(cause), detail=detail))
    db.flush()


def spans(segments) -> list[tuple[str, str, str, str | None]]:
    return [(s.start.astimezone(SHANGHAI).strftime("%m-%d %H:%M"), s.end.astimezone(SHANGHAI).strftime("%m-%d %H:%M"),
             s.state.value, s.cause.value if s.cause else None) for s in segments]


@pytest.fixture
def lab(db):
    """Facility A (managed by `manager`) with two devices, facility B with one, and one user per other role."""
    manager = make_user(db, roles=(Role.LAB_MANAGER,))
    other_manager = make_user(db, roles=(Role.LAB_MANAGER,))
    facility_a = make_facility(db, managers=(manager,), name_zh="甲实验室")
    facility_b = make_facility(db, managers=(other_manager,), name_zh="乙实验室")
    sem = make_resource(db, facility=facility_a)
    xrd = make_resource(db, facility=facility_a)
    reactor = make_resource(db, facility=facility_b)

    class Lab:
        pass

    world = Lab()
    world.manager, world.other_manager = manager, other_manager
    world.admin = make_user(db, roles=(Role.ADMIN,))
    world.researcher = make_user(db, roles=(Role.RESEARCHER,))
    world.finance = make_user(db, roles=(Role.FINANCE,))
    world.facility_a, world.facility_b = facility_a, facility_b
    world.sem, world.xrd, world.reactor = sem, xrd, reactor
    world.dev_sem = make_device(db, resource=sem, device_id="a-sem-1")
    world.dev_xrd = make_device(db, resource=xrd, device_id="a-xrd-1")
    world.dev_reactor = make_device(db, resource=reactor, device_id="b-reactor-1")
    return world


# --- timeline -------------------------------------------------------------------------------------------

def test_a_days_timeline_starts_with_the_state_in_force_at_midnight_in_shanghai(db, lab):
    device = lab.dev_sem
    observe(db, device, local(2026, 3, 9, 23, 0), "running")
    observe(db, device, local(2026, 3, 10, 1, 30), "idle")
    observe(db, device, local(2026, 3, 10, 10, 0), "fault", "alarm", "vacuum lost")
    observe(db, device, local(2026, 3, 10, 10, 0), "offline", "heartbeat")  # same time: the alarm outranks it
    observe(db, device, local(2026, 3, 10, 11, 0), "idle", "alarm_cleared")
    observe(db, device, local(2026, 3, 10, 12, 0), "idle")  # no change of state: no new segment
    observe(db, device, local(2026, 3, 11, 0, 30), "running")  # the next day

    start, end = live.day_window(date(2026, 3, 10), "Asia/Shanghai")
    segments = live.timeline(db, device, start, end)

    assert start == datetime(2026, 3, 9, 16, 0, tzinfo=UTC)
    assert spans(segments) == [
        ("03-10 00:00", "03-10 01:30", "running", "status"),
        ("03-10 01:30", "03-10 10:00", "idle", "status"),
        ("03-10 10:00", "03-10 11:00", "fault", "alarm"),
        ("03-10 11:00", "03-11 00:00", "idle", "alarm_cleared"),
    ]
    assert sum(s.duration_s for s in segments) == 24 * 3600


def test_the_day_before_shows_offline_until_the_first_observation(db, lab):
    observe(db, lab.dev_sem, local(2026, 3, 9, 23, 0), "running")

    segments = live.timeline(db, lab.dev_sem, *live.day_window(date(2026, 3, 9), "Asia/Shanghai"))

    assert spans(segments) == [("03-09 00:00", "03-09 23:00", "offline", None),
                               ("03-09 23:00", "03-10 00:00", "running", "status")]


def test_an_observation_exactly_at_the_start_is_in_force_and_status_outranks_heartbeat(db, lab):
    midnight = local(2026, 3, 10, 0, 0)
    observe(db, lab.dev_sem, midnight, "offline", "heartbeat")
    observe(db, lab.dev_sem, midnight, "maintenance", "status")

    segments = live.timeline(db, lab.dev_sem, midnight, local(2026, 3, 10, 6, 0))

    assert spans(segments) == [("03-10 00:00", "03-10 06:00", "maintenance", "status")]


def test_a_device_never_heard_of_is_offline_all_day_and_an_empty_window_has_no_segments(db, lab):
    start, end = live.day_window(date(2026, 3, 10), "Asia/Shanghai")

    assert spans(live.timeline(db, lab.dev_xrd, start, end)) == [("03-10 00:00", "03-11 00:00", "offline", None)]
    assert live.timeline(db, lab.dev_xrd, end, start) == []


# --- board ----------------------------------------------------------------------------------------------

def test_the_board_lists_the_managers_devices_with_state_last_message_and_current_booking(db, lab):
    booker = make_user(db, name_zh="王研究员")
    current = make_reservation(db, resource=lab.sem, user=booker, starts_at=NOW - timedelta(hours=1),
                               ends_at=NOW + timedelta(hours=1))
    make_reservation(db, resource=lab.xrd, starts_at=NOW - timedelta(hours=3), ends_at=NOW - timedelta(hours=2))
    make_reservation(db, resource=lab.xrd, starts_at=NOW - timedelta(minutes=5), ends_at=NOW + timedelta(hours=1),
                     state=ReservationState.CANCELLED)
    lab.dev_sem.state, lab.dev_sem.last_seen_ns = LiveState.RUNNING, datetime_to_ns(NOW - timedelta(seconds=42))
    db.flush()

    rows = live.board(db, lab.manager, now=NOW)

    assert [r.device.device_id for r in rows] == ["a-sem-1", "a-xrd-1"]
    sem, xrd = rows
    assert (sem.state, sem.tone, sem.seconds_since) == (LiveState.RUNNING, "success", 42)
    assert sem.last_message_at == NOW - timedelta(seconds=42)
    assert sem.reservation.id == current.id
    assert sem.reservation.user.name_zh == "王研究员"
    assert sem.facility.id == lab.facility_a.id
    assert (xrd.state, xrd.tone, xrd.last_message_at, xrd.seconds_since, xrd.reservation) == (
        LiveState.OFFLINE, "secondary", None, None, None)
    assert live.state_counts(rows) == {LiveState.OFFLINE: 1, LiveState.IDLE: 0, LiveState.RUNNING: 1,
                                       LiveState.FAULT: 0, LiveState.MAINTENANCE: 0}


def test_a_pending_booking_counts_as_current(db, lab):
    pending = make_reservation(db, resource=lab.reactor, starts_at=NOW - timedelta(minutes=1),
                               ends_at=NOW + timedelta(minutes=30), state=ReservationState.PENDING)

    row = live.device_state(db, lab.other_manager, lab.dev_reactor.id, now=NOW)

    assert row.reservation.id == pending.id


def test_admins_see_every_device_and_may_filter_by_facility(db, lab):
    every = {r.device.device_id for r in live.board(db, lab.admin, now=NOW)}
    only_b = [r.device.device_id for r in live.board(db, lab.admin, lab.facility_b.id, now=NOW)]

    assert {"a-sem-1", "a-xrd-1", "b-reactor-1"} <= every
    assert only_b == ["b-reactor-1"]


@pytest.mark.parametrize("role", ["researcher", "finance"])
def test_only_lab_managers_and_admins_may_watch(db, lab, role):
    actor = getattr(lab, role)
    for call in (lambda: live.board(db, actor), lambda: live.device_state(db, actor, lab.dev_sem.id),
                 lambda: live.sessions(db, actor), lambda: live.dead_letters(db, actor),
                 lambda: live.dead_letter_counts(db, actor)):
        with pytest.raises(Forbidden):
            call()


def test_a_manager_may_not_watch_another_facility(db, lab):
    with pytest.raises(Forbidden):
        live.board(db, lab.manager, lab.facility_b.id)
    with pytest.raises(Forbidden):
        live.device_state(db, lab.manager, lab.dev_reactor.id)
    with pytest.raises(Forbidden):
        live.sessions(db, lab.manager, resource_id=lab.reactor.id)
    with pytest.raises(Forbidden):
        live.sessions(db, lab.manager, device_id="b-reactor-1")
    with pytest.raises(NotFound):
        live.board(db, lab.manager, lab.facility_b.id + 10_000)
    with pytest.raises(NotFound):
        live.device_state(db, lab.manager, lab.dev_reactor.id + 10_000)


# --- usage sessions -------------------------------------------------------------------------------------

def add_session(db, device, start: datetime, end: datetime | None, **extra) -> UsageSession:
    """A usage session written directly, decided at its own edges (as a status-measured one is)."""
    start_ns, end_ns = datetime_to_ns(start), datetime_to_ns(end) if end else None
    row = UsageSession(device_pk=device.id, start_ns=start_ns, end_ns=end_ns, started_at=start, ended_at=end,
                       start_decided_ns=start_ns, end_decided_ns=end_ns, **extra)
    db.add(row)
    db.flush()
    return row


def test_sessions_are_scoped_filtered_by_window_and_paged(db, lab):
    t = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
    early = add_session(db, lab.dev_sem, t, t + timedelta(hours=1), run_id="r1", operator="li", samples=3)
    late = add_session(db, lab.dev_sem, t + timedelta(hours=5), t + timedelta(hours=6), truncated=True)
    running = add_session(db, lab.dev_xrd, t + timedelta(hours=4), None)
    add_session(db, lab.dev_reactor, t, t + timedelta(hours=2))

    mine = live.sessions(db, lab.manager)
    assert [s.id for s in mine.items] == [late.id, running.id, early.id]
    assert mine.total == 3

    window = live.sessions(db, lab.manager, start=t + timedelta(hours=4, minutes=30), end=t + timedelta(hours=7))
    assert [s.id for s in window.items] == [late.id, running.id]  # the open one overlaps everything after it
    assert [s.id for s in live.sessions(db, lab.manager, device_id="a-xrd-1").items] == [running.id]
    assert [s.id for s in live.sessions(db, lab.manager, resource_id=lab.sem.id).items] == [late.id, early.id]
    paged = live.sessions(db, lab.manager, page=2, per_page=2)
    assert ([s.id for s in paged.items], paged.total, paged.pages) == ([early.id], 3, 2)
    assert live.sessions(db, lab.admin, facility_id=lab.facility_b.id).total == 1
    assert live.session_duration_s(running, t + timedelta(hours=4, minutes=10)) == 600
    assert live.open_session_count(db) >= 1


# --- dead letters ---------------------------------------------------------------------------------------

def add_dead_letter(db, reason: str, device_id: str | None, minute: int = 0) -> DeadLetter:
    row = DeadLetter(received_at=NOW + timedelta(minutes=minute), reason=reason,
                     topic=f"labshare/v1/{device_id or '?'}/status", device_id=device_id, detail="x",
                     payload_head="{", payload_size=1)
    db.add(row)
    db.flush()
    return row


def test_managers_see_their_devices_dead_letters_and_admins_also_unknown_devices(db, lab):
    own = add_dead_letter(db, "bad_json", "a-sem-1", 1)
    own_state = add_dead_letter(db, "bad_state", "a-xrd-1", 2)
    add_dead_letter(db, "bad_json", "b-reactor-1", 3)
    unknown = add_dead_letter(db, "unknown_device", "nobody-1", 4)
    add_dead_letter(db, "bad_topic", None, 5)

    assert [d.id for d in live.dead_letters(db, lab.manager).items] == [own_state.id, own.id]
    assert [d.id for d in live.dead_letters(db, lab.manager, reason="bad_json").items] == [own.id]
    assert live.dead_letter_counts(db, lab.manager) == {"bad_json": 1, "bad_state": 1}
    admin_view = live.dead_letters(db, lab.admin)
    assert unknown.id in [d.id for d in admin_view.items]
    assert admin_view.total >= 5
    counts = live.dead_letter_counts(db)
    assert counts["bad_json"] >= 2
    assert counts["unknown_device"] >= 1
    assert counts["bad_topic"] >= 1
    assert next(iter(counts)) == "bad_json"  # most frequent first
    assert live.dead_letter_counts(db, lab.admin) == counts


def test_the_shown_state_knows_silence_and_devices_that_never_report_a_status(db):
    """A device heard from recently but never sending a status is idle (running while a session is open);
    one silent for longer than its heartbeat timeout is offline even before the ingest's sweep says so."""
    from datetime import UTC, datetime

    from devices.ingest import datetime_to_ns
    from devices.live import effective_state
    from devices.models import LiveState
    from tests.factories import make_device

    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    now_ns = datetime_to_ns(now)
    device = make_device(db, usage_source="events", heartbeat_timeout_s=300)
    assert effective_state(device, now) == LiveState.OFFLINE  # never heard of
    device.last_seen_ns = now_ns - 10 * 10**9
    assert effective_state(device, now) == LiveState.IDLE
    device.usage_tail = {"ts": device.last_seen_ns, "open": True}
    assert effective_state(device, now) == LiveState.RUNNING
    device.last_seen_ns = now_ns - 301 * 10**9
    assert effective_state(device, now) == LiveState.OFFLINE  # silent past the timeout
    # a reported state is kept while the device speaks, and an offline newer than its last message stays
    device.last_seen_ns, device.state, device.state_ts_ns = now_ns - 5 * 10**9, LiveState.FAULT, now_ns - 60 * 10**9
    assert effective_state(device, now) == LiveState.FAULT
    device.state, device.state_ts_ns = LiveState.OFFLINE, now_ns - 2 * 10**9
    assert effective_state(device, now) == LiveState.OFFLINE
