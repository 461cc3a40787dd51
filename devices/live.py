"""What lab managers watch: the live board, a device's state timeline, usage sessions and dead letters.

Read-side services (session and acting user in, rows out, no writes). Lab managers see the devices of the
facilities they manage, admins every device; everyone else is refused. Dead letters of devices that are not
registered are visible to admins only (nobody else can tell whose they are).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from booking.models import Facility, Reservation, Resource
from booking.models.reservation import LIVE_STATES
from booking.permissions import can_manage_facility, managed_facility_ids
from core.accounts.models import Role, User
from core.errors import Forbidden, NotFound
from core.timeutil import as_utc, utcnow, zone
from devices import registry
from devices.ingest import CAUSE_RANK, NS, datetime_to_ns, ns_to_datetime
from devices.models import DeadLetter, Device, DeviceEvent, LiveState, StateCause, StateObservation, UsageSession

MANAGERS = (Role.LAB_MANAGER, Role.ADMIN)
# Bootstrap tones: offline grey, idle blue, running green, fault red, maintenance amber.
STATE_TONES: dict[LiveState, str] = {
    LiveState.OFFLINE: "secondary", LiveState.IDLE: "primary", LiveState.RUNNING: "success",
    LiveState.FAULT: "danger", LiveState.MAINTENANCE: "warning",
}
STATE_COLOURS: dict[LiveState, str] = {  # the same tones as chart colours
    LiveState.OFFLINE: "#6c757d", LiveState.IDLE: "#0d6efd", LiveState.RUNNING: "#198754",
    LiveState.FAULT: "#dc3545", LiveState.MAINTENANCE: "#ffc107",
}
MAX_PER_PAGE = 100


@dataclass(frozen=True, slots=True)
class BoardRow:
    device: Device
    resource: Resource
    facility: Facility
    state: LiveState
    tone: str  # a Bootstrap tone: text-bg-{tone}
    last_message_at: datetime | None
    seconds_since: int | None  # since the last message; None when the device never spoke
    reservation: Reservation | None  # pending or confirmed, over now; its user is reservation.user


@dataclass(frozen=True, slots=True)
class Segment:
    """One stretch of a timeline: the device was in `state` from `start` to `end` (exclusive)."""

    start: datetime
    end: datetime
    state: LiveState
    cause: StateCause | None  # None: nothing was ever observed before (the device counts as offline)

    @property
    def duration_s(self) -> int:
        return int((self.end - self.start).total_seconds())


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


# --- authorisation ----------------------------------------------------------------------------------------

def _scope(db: Session, actor: User) -> set[int] | None:
    """The facility ids the actor may watch (None: all); refuses who is neither lab manager nor admin."""
    if actor is None or not actor.has_role(*MANAGERS):
        raise Forbidden()
    return managed_facility_ids(db, actor)


def _check_facility(db: Session, actor: User, facility_id: int) -> Facility:
    facility = db.get(Facility, facility_id)
    if facility is None:
        raise NotFound("facility", facility_id)
    if not can_manage_facility(db, actor, facility_id):
        raise Forbidden()
    return facility


def managed_device(db: Session, actor: User, device_pk: int) -> Device:
    """The device, if the actor may watch it (NotFound / Forbidden otherwise)."""
    _scope(db, actor)
    return registry.managed_device(db, actor, device_pk)


def watched_facilities(db: Session, actor: User) -> list[Facility]:
    """The facilities whose devices the actor may watch, by name."""
    scope = _scope(db, actor)
    query = select(Facility).order_by(Facility.name_zh, Facility.id)
    if scope is not None:
        query = query.where(Facility.id.in_(scope))
    return list(db.scalars(query))


# --- the live board ---------------------------------------------------------------------------------------

def current_reservations(db: Session, resource_ids: list[int], now: datetime) -> dict[int, Reservation]:
    """The pending or confirmed reservation over `now` per resource (at most one: they never overlap)."""
    if not resource_ids:
        return {}
    rows = db.scalars(select(Reservation).where(
        Reservation.resource_id.in_(resource_ids), Reservation.state.in_(LIVE_STATES),
        Reservation.starts_at <= now, Reservation.ends_at > now).order_by(Reservation.starts_at))
    return {r.resource_id: r for r in rows}


def effective_state(device: Device, now: datetime) -> LiveState:
    """The state to show now. The stored state is the newest observation; two things it cannot know:
    a device silent for longer than its heartbeat timeout is offline even before the ingest's sweep
    records it (the ingest may not be running), and a device that reports only events or power (never a
    status) is online while it speaks — running while a usage session is open, idle otherwise."""
    state = LiveState(device.state)
    seen = device.last_seen_ns
    if seen is None:
        return state
    silent = datetime_to_ns(now) - seen > device.heartbeat_timeout_s * 1_000_000_000
    if silent:
        return LiveState.OFFLINE
    if state == LiveState.OFFLINE and (device.state_ts_ns is None or seen > device.state_ts_ns):
        return LiveState.RUNNING if (device.usage_tail or {}).get("open") else LiveState.IDLE
    return state


def _row(device: Device, reservation: Reservation | None, now: datetime) -> BoardRow:
    state = effective_state(device, now)
    last = ns_to_datetime(device.last_seen_ns) if device.last_seen_ns is not None else None
    since = max(0, int((now - last).total_seconds())) if last is not None else None
    return BoardRow(device, device.resource, device.resource.facility, state, STATE_TONES[state], last, since,
                    reservation)


def board(db: Session, actor: User, facility_id: int | None = None, *, now: datetime | None = None) -> list[BoardRow]:
    """Every device of the facilities the actor manages (admins: all), or of one of them, by facility and id."""
    scope = _scope(db, actor)
    now = as_utc(now) if now is not None else utcnow()
    query = (select(Device).join(Resource, Device.resource_id == Resource.id)
             .join(Facility, Resource.facility_id == Facility.id)
             .order_by(Facility.name_zh, Facility.id, Device.device_id))
    if facility_id is not None:
        _check_facility(db, actor, facility_id)
        query = query.where(Resource.facility_id == facility_id)
    elif scope is not None:
        query = query.where(Resource.facility_id.in_(scope))
    devices = list(db.scalars(query).unique())
    bookings = current_reservations(db, sorted({d.resource_id for d in devices}), now)
    return [_row(d, bookings.get(d.resource_id), now) for d in devices]


def state_counts(rows: list[BoardRow]) -> dict[LiveState, int]:
    """How many devices are in each state (every state listed, zeros included)."""
    counted = Counter(row.state for row in rows)
    return {state: counted.get(state, 0) for state in LiveState}


def device_state(db: Session, actor: User, device_pk: int, *, now: datetime | None = None) -> BoardRow:
    """One device's live state, last message and current reservation."""
    device = managed_device(db, actor, device_pk)
    now = as_utc(now) if now is not None else utcnow()
    return _row(device, current_reservations(db, [device.resource_id], now).get(device.resource_id), now)


# --- timeline ---------------------------------------------------------------------------------------------

def day_window(day: date, tz_name: str) -> tuple[datetime, datetime]:
    """From midnight to the next midnight of `day` in the zone, in UTC (23 or 25 hours across DST changes)."""
    tz = zone(tz_name)
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return as_utc(start), as_utc(end)


def _winner(observations: list[StateObservation]) -> StateObservation:
    return max(observations, key=lambda o: (o.ts_ns, CAUSE_RANK[StateCause(o.cause)]))


def timeline(db: Session, device: Device, start: datetime, end: datetime) -> list[Segment]:
    """The device's states over [start, end): consecutive segments, the first one the state in force at
    `start`. The state at a time is the observation with the greatest (timestamp, cause rank) at or before
    it; a device never observed before counts as offline."""
    start_ns, end_ns = datetime_to_ns(start), datetime_to_ns(end)
    if end_ns <= start_ns:
        return []
    before_ts = db.scalar(select(func.max(StateObservation.ts_ns)).where(
        StateObservation.device_pk == device.id, StateObservation.ts_ns <= start_ns))
    state, cause = LiveState.OFFLINE, None
    if before_ts is not None:
        first = _winner(list(db.scalars(select(StateObservation).where(
            StateObservation.device_pk == device.id, StateObservation.ts_ns == before_ts))))
        state, cause = LiveState(first.state), StateCause(first.cause)
    inside = db.scalars(select(StateObservation).where(
        StateObservation.device_pk == device.id, StateObservation.ts_ns > start_ns,
        StateObservation.ts_ns < end_ns).order_by(StateObservation.ts_ns))
    by_ts: dict[int, list[StateObservation]] = {}
    for observation in inside:
        by_ts.setdefault(observation.ts_ns, []).append(observation)
    segments: list[Segment] = []
    seg_start_ns = start_ns
    for ts_ns, observations in by_ts.items():
        winner = _winner(observations)
        if LiveState(winner.state) == state:
            continue
        segments.append(Segment(ns_to_datetime(seg_start_ns), ns_to_datetime(ts_ns), state, cause))
        seg_start_ns, state, cause = ts_ns, LiveState(winner.state), StateCause(winner.cause)
    segments.append(Segment(ns_to_datetime(seg_start_ns), ns_to_datetime(end_ns), state, cause))
    return segments


def recent_events(db: Session, device: Device, limit: int = 20) -> list[DeviceEvent]:
    return list(db.scalars(select(DeviceEvent).where(DeviceEvent.device_pk == device.id)
                           .order_by(DeviceEvent.ts_ns.desc(), DeviceEvent.id.desc()).limit(limit)))


def event_time(event: DeviceEvent) -> datetime:
    return ns_to_datetime(event.ts_ns)


# --- usage sessions ---------------------------------------------------------------------------------------

def _paged(db: Session, query: Select, page: int, per_page: int) -> Page:
    page, per_page = max(1, page), min(max(1, per_page), MAX_PER_PAGE)
    total = db.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = list(db.scalars(query.limit(per_page).offset((page - 1) * per_page)).unique())
    return Page(items, page, per_page, total)


def sessions(db: Session, actor: User, *, device_pk: int | None = None, device_id: str | None = None,
             resource_id: int | None = None, facility_id: int | None = None, start: datetime | None = None,
             end: datetime | None = None, page: int = 1, per_page: int = 50) -> Page:
    """Usage sessions of the watched devices, newest first; `start`/`end` keep those overlapping the window
    (an open session overlaps everything after its start)."""
    scope = _scope(db, actor)
    query = (select(UsageSession).join(Device, UsageSession.device_pk == Device.id)
             .join(Resource, Device.resource_id == Resource.id)
             .order_by(UsageSession.start_ns.desc(), UsageSession.id.desc()))
    if device_pk is not None:
        managed_device(db, actor, device_pk)
        query = query.where(Device.id == device_pk)
    if device_id is not None:
        device = db.scalar(select(Device).where(Device.device_id == device_id))
        if device is None:
            raise NotFound("device", device_id)
        if not can_manage_facility(db, actor, device.resource.facility_id):
            raise Forbidden()
        query = query.where(Device.id == device.id)
    if resource_id is not None:
        resource = db.get(Resource, resource_id)
        if resource is None:
            raise NotFound("resource", resource_id)
        if not can_manage_facility(db, actor, resource.facility_id):
            raise Forbidden()
        query = query.where(Device.resource_id == resource_id)
    if facility_id is not None:
        _check_facility(db, actor, facility_id)
        query = query.where(Resource.facility_id == facility_id)
    if scope is not None:
        query = query.where(Resource.facility_id.in_(scope))
    if end is not None:
        query = query.where(UsageSession.start_ns < datetime_to_ns(end))
    if start is not None:
        query = query.where(or_(UsageSession.end_ns.is_(None), UsageSession.end_ns > datetime_to_ns(start)))
    return _paged(db, query, page, per_page)


def session_duration_s(session: UsageSession, now: datetime | None = None) -> int:
    """Seconds of use so far (an open session counts up to `now`)."""
    end_ns = session.end_ns if session.end_ns is not None else datetime_to_ns(now or utcnow())
    return max(0, (end_ns - session.start_ns) // NS)


def open_session_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(UsageSession).where(UsageSession.end_ns.is_(None))) or 0


def devices_by_state(db: Session) -> dict[LiveState, int]:
    """Every registered device by live state (enabled or not); for operators, no actor."""
    now = utcnow()
    counted = Counter(effective_state(device, now) for device in db.scalars(select(Device)))
    return {state: counted.get(state, 0) for state in LiveState}


# --- dead letters -----------------------------------------------------------------------------------------

def _dead_letter_scope(db: Session, actor: User | None) -> Select | None:
    """A condition keeping the dead letters the actor may see; None for everything."""
    if actor is None:
        return None
    scope = _scope(db, actor)
    if scope is None:
        return None
    return DeadLetter.device_id.in_(select(Device.device_id).join(Resource, Device.resource_id == Resource.id)
                                    .where(Resource.facility_id.in_(scope)))


def dead_letters(db: Session, actor: User, *, reason: str | None = None, device_id: str | None = None,
                 page: int = 1, per_page: int = 50) -> Page:
    """Rejected messages, newest first: lab managers those of their facilities' devices, admins all (also
    those of unknown devices)."""
    if actor is None:
        raise Forbidden()
    condition = _dead_letter_scope(db, actor)
    query = select(DeadLetter).order_by(DeadLetter.received_at.desc(), DeadLetter.id.desc())
    if condition is not None:
        query = query.where(condition)
    if reason:
        query = query.where(DeadLetter.reason == reason)
    if device_id:
        query = query.where(DeadLetter.device_id == device_id)
    return _paged(db, query, page, per_page)


def dead_letter_counts(db: Session, actor: User | None = None) -> dict[str, int]:
    """Dead letters by reason, most frequent first: all of them without an actor (operators' metrics),
    else those the actor may see."""
    condition = _dead_letter_scope(db, actor)
    query = select(DeadLetter.reason, func.count()).group_by(DeadLetter.reason)
    if condition is not None:
        query = query.where(condition)
    counts = db.execute(query).all()
    return dict(sorted(counts, key=lambda item: (-item[1], item[0])))
