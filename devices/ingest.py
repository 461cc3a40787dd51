"""Applying a batch of device messages to the relational store: live state, events, usage sessions and
dead letters (design.md §5). One call per ingest batch, inside the caller's transaction.

Order does not matter, by construction:

- every device's rows are locked (`SELECT … FOR UPDATE`, in id order so two workers cannot deadlock;
  SQLite serialises writers anyway), so two workers never interleave on one device;
- the live state is the observation with the newest *device* timestamp, whatever arrived last;
- usage sessions are what `devices.usage` derives from the device's observations sorted by timestamp.
  A batch whose observations are all newer than everything seen resumes the machine from its saved tail
  (the common, cheap case); a late observation makes the machine restart at the newest restart point
  before it and re-derive everything after it;
- redelivered messages find their rows already there (unique keys on events, samples and observations)
  and add nothing.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import Text, and_, any_, bindparam, cast, delete, inspect, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, lazyload

from devices import usage
from devices.models import (
    DeadLetter,
    Device,
    DeviceEvent,
    DeviceSample,
    LiveState,
    StateCause,
    StateObservation,
    UsageSession,
    UsageSource,
)
from devices.usage import Item, Kind

NS = 1_000_000_000
PAYLOAD_HEAD_BYTES = 200
# At equal timestamps the device's own status outranks an alarm, which outranks its clearing and a timeout.
CAUSE_RANK = {StateCause.HEARTBEAT: 0, StateCause.ALARM_CLEARED: 1, StateCause.ALARM: 2, StateCause.STATUS: 3}


@dataclass(frozen=True, slots=True)
class StatusIn:
    ts_ns: int
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EventIn:
    event_id: str
    ts_ns: int
    type: str
    run_id: str = ""
    operator: str = ""
    samples: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SampleIn:
    ts_ns: int
    power_w: float | None = None


@dataclass(slots=True)
class Inbound:
    """One MQTT message: either parsed (`device_id` and one of status/event/samples) or rejected."""

    topic: str
    payload: bytes
    received_ns: int
    device_id: str | None = None
    status: StatusIn | None = None
    event: EventIn | None = None
    samples: tuple[SampleIn, ...] = ()
    retained_without_ts: bool = False  # a retained status replayed by the broker, stamped at receipt
    reject_reason: str | None = None
    reject_detail: str = ""
    accepted: bool = False  # set by apply_batch: the message's metrics may go to the time-series store


@dataclass(slots=True)
class BatchResult:
    accepted: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    state_changes: list[tuple[str, str]] = field(default_factory=list)  # (device_id, new state)
    deferred: set[int] = field(default_factory=set)  # device rows whose sessions wait for `settle_sessions`


@dataclass(frozen=True, slots=True)
class _Obs:
    ts_ns: int
    state: LiveState
    cause: StateCause
    detail: str = ""

    @property
    def rank(self) -> tuple[int, int, str]:
        return (self.ts_ns, CAUSE_RANK[self.cause], self.state.value)


_DEVICE = Device.__table__
# what the ingest writes back to a device row (the rest of the row it only reads)
_WRITTEN = ("state", "state_ts_ns", "state_cause", "state_detail", "last_seen_ns", "usage_tail")


class DeviceRow:
    """A locked device row as plain attributes (the names of Device's), read and written with Core statements:
    building and flushing hundreds of ORM objects per batch was most of the ingest's time (bench/ingest.py)."""

    __slots__ = ("_saved", "_tail_text", "debounce_s", "device_id", "enabled", "heartbeat_timeout_s", "id",
                 "last_seen_ns", "power_threshold_w", "state", "state_cause", "state_detail", "state_ts_ns",
                 "timeout_after", "usage_source", "usage_tail")

    def __init__(self, row) -> None:
        (self.id, self.device_id, self.enabled, self.usage_source, self.power_threshold_w, self.debounce_s,
         self.heartbeat_timeout_s, self.state, self.state_ts_ns, self.state_cause, self.state_detail,
         self.last_seen_ns, self._tail_text, *timeout_after) = row
        # whether a heartbeat timeout of the device is later than the batch's oldest message (see _store)
        self.timeout_after = bool(timeout_after and timeout_after[0])
        self.usage_tail = _decoded_tail(self.id, self._tail_text)
        self._saved = self._values()

    def _values(self) -> tuple:
        return (self.state, self.state_ts_ns, self.state_cause, self.state_detail, self.last_seen_ns,
                id(self.usage_tail))

    def changed(self) -> bool:
        return self._values() != self._saved

    def tail_text(self) -> str | None:
        if id(self.usage_tail) == self._saved[-1]:
            return self._tail_text
        return None if self.usage_tail is None else _encoded_tail(self.id, self.usage_tail)


# The tail each device row was last written with, decoded: the next batch reads the same text back and need not
# decode it again (decoding ~500 tails of ~1.5 KB was a twentieth of the ingest's CPU time, bench/ingest.py).
# Keyed by row id, and used only when the text read is exactly the text written, so another process writing
# the row (a second worker) or another database with the same ids simply misses. Tails are values: the code
# below replaces a device's tail, never changes one in place.
# Likewise for encoding: a batch in order only appends items to the tail's window, so the window's text is the
# previous one with the new items' text appended (encoding whole windows was about a fifth of the processing).
_TAILS: dict[int, tuple[str, dict, str | None]] = {}  # row id: (the tail's text, the tail, its window's text)


def _decoded_tail(device_pk: int, text: str | None) -> dict | None:
    if text is None:
        return None
    known = _TAILS.get(device_pk)
    if known is not None and known[0] == text:
        return known[1]
    # orjson, not the driver's json module: decoding the tail was a tenth of a batch's time
    tail = orjson.loads(text)
    _TAILS[device_pk] = (text, tail, None)  # the window's text only once a tail that extends it is written
    return tail


def _encoded_tail(device_pk: int, tail: dict) -> str:
    window = tail.get("items")
    if window is None:
        text = orjson.dumps(tail).decode()
        _TAILS[device_pk] = (text, tail, None)
        return text
    known = _TAILS.get(device_pk)
    before = known[1].get("items", []) if known is not None and known[2] is not None else None
    if before is not None and before is window:
        window_text = known[2]
    elif before is not None and len(window) > len(before) and all(
            new is old for new, old in zip(window, before, strict=False)):  # the same items, then more
        added = orjson.dumps(window[len(before):]).decode()
        window_text = known[2][:-1] + ("," if before else "") + added[1:]
    else:
        window_text = orjson.dumps(window).decode()
    text = orjson.dumps({**tail, "items": orjson.Fragment(window_text)}).decode()
    _TAILS[device_pk] = (text, tail, window_text)
    return text


_READ = (_DEVICE.c.id, _DEVICE.c.device_id, _DEVICE.c.enabled, _DEVICE.c.usage_source, _DEVICE.c.power_threshold_w,
         _DEVICE.c.debounce_s, _DEVICE.c.heartbeat_timeout_s, _DEVICE.c.state, _DEVICE.c.state_ts_ns,
         _DEVICE.c.state_cause, _DEVICE.c.state_detail, _DEVICE.c.last_seen_ns, cast(_DEVICE.c.usage_tail, Text))


@dataclass(slots=True)
class _DeviceBatch:
    device: DeviceRow
    observations: list[_Obs] = field(default_factory=list)
    events: dict[str, EventIn] = field(default_factory=dict)
    samples: dict[int, SampleIn] = field(default_factory=dict)


def ns_to_datetime(ts_ns: int) -> datetime:
    seconds, rest = divmod(ts_ns, NS)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest // 1000)


def datetime_to_ns(moment: datetime) -> int:
    moment = moment.astimezone(UTC)
    whole = int(moment.replace(microsecond=0).timestamp())
    return whole * NS + moment.microsecond * 1000


def apply_batch(db: Session, inbound: Sequence[Inbound], now_ns: int, *, defer_late: bool = False) -> BatchResult:
    """Apply the messages; marks each accepted one, dead-letters the rest. Flushes, does not commit.

    `defer_late`: a device's items older than its in-memory window do not re-derive its sessions now; the
    device is marked (`BatchResult.deferred`) and `settle_sessions` re-derives them once, later. Without it
    the sessions are always current when the call returns."""
    result = BatchResult()
    db.flush()  # the Core statements below do not autoflush the caller's pending ORM changes
    wanted = {m.device_id for m in inbound if m.reject_reason is None and m.device_id}
    devices = _lock_devices(db, wanted, _oldest(inbound))
    batches: dict[int, _DeviceBatch] = {}
    for message in inbound:
        device = devices.get(message.device_id or "") if message.reject_reason is None else None
        if message.reject_reason is None and device is None:
            message.reject_reason = "unknown_device"
        elif device is not None and not device.enabled:
            message.reject_reason = "device_disabled"
        if message.reject_reason is not None or device is None:
            _dead_letter(db, message)
            result.dead_letters[message.reject_reason] += 1
            continue
        message.accepted = True
        result.accepted += 1
        _collect(batches.setdefault(device.id, _DeviceBatch(device)), message)
    if batches:
        _store(db, batches.values(), result, defer_late)
    db.flush()
    return result


def settle_sessions(db: Session, device_pks: Iterable[int]) -> int:
    """Re-derive the sessions of the devices whose late items were deferred (see `apply_batch`); the number
    of devices that needed it (another worker may have settled the others already)."""
    pks = sorted(set(device_pks))
    if not pks:
        return 0
    db.flush()
    replacements = []
    devices = [d for d in _lock_rows(db, _one_of(db, _DEVICE.c.id, pks)) if _dirty_of(d) is not None]
    for device in devices:
        replacements.append((device, *_rederive(db, device, config_of(device), _dirty_of(device))))
    _replace_sessions(db, replacements)
    _write_devices(db, devices)
    db.flush()
    return len(devices)


def deferred_devices(db: Session) -> list[int]:
    """Devices whose sessions wait for `settle_sessions` (marked by any worker, also before a restart)."""
    return list(db.scalars(select(Device.id).where(cast(Device.usage_tail, Text).like('%"dirty"%'))))


def _dirty_of(device: DeviceRow) -> int | None:
    """Where a deferred re-derivation must start (the oldest late item's time), if one is pending."""
    tail = device.usage_tail
    return tail.get("dirty") if tail else None


def sweep_heartbeats(db: Session, now_ns: int) -> BatchResult:
    """Record a heartbeat timeout for every device that has been silent for longer than its timeout and is
    not already offline: the state becomes offline at last message + timeout, and an open session is
    truncated at the last message. A later message that turns out to fall inside the silence undoes it."""
    result = BatchResult()
    # Fix (tests/devices/test_ingest_apply.py): a device whose state is offline only because it never sent a
    # status (events or power source) can still have an open session; it must be swept too, or that session
    # stays open for as long as the device stays silent.
    with_open = set(db.scalars(select(UsageSession.device_pk).where(UsageSession.end_ns.is_(None))).all())
    silent = db.scalars(
        select(Device.id).where(Device.enabled, (Device.state != LiveState.OFFLINE) | Device.id.in_(with_open),
                                Device.last_seen_ns.is_not(None))
    ).all()
    candidates = _lock_rows(db, _DEVICE.c.id.in_(silent)) if silent else []
    batches = []
    for device in candidates:
        if (device.state == LiveState.OFFLINE and device.id not in with_open) or device.last_seen_ns is None:
            continue
        timeout_at = device.last_seen_ns + device.heartbeat_timeout_s * NS
        if timeout_at < now_ns:
            batch = _DeviceBatch(device)
            batch.observations.append(_Obs(timeout_at, LiveState.OFFLINE, StateCause.HEARTBEAT))
            batches.append(batch)
    if batches:
        _store(db, batches, result)
        db.flush()
    return result


# --- collecting -------------------------------------------------------------------------------------


def _lock_devices(db: Session, device_ids: Iterable[str], oldest_ns: int | None) -> dict[str, DeviceRow]:
    ids = sorted(set(device_ids))
    if not ids:
        return {}
    return {d.device_id: d for d in _lock_rows(db, _one_of(db, _DEVICE.c.device_id, ids), oldest_ns)}


def _oldest(inbound: Sequence[Inbound]) -> int | None:
    """The oldest timestamp in the messages, accepted or not: a lower bound of the batch's oldest activity."""
    times = [s.ts_ns for m in inbound if m.reject_reason is None for s in m.samples]
    times += [m.status.ts_ns for m in inbound if m.reject_reason is None and m.status is not None]
    times += [m.event.ts_ns for m in inbound if m.reject_reason is None and m.event is not None]
    return min(times, default=None)


def _one_of(db: Session, column, values: list):
    """`column IN values`; on PostgreSQL `= ANY(array)`: one parameter instead of one per value, whose
    expansion cost SQLAlchemy about 10 ms for 500 values (bench/ingest.py profile)."""
    if db.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


def _lock_rows(db: Session, where, timeouts_after_ns: int | None = None) -> list[DeviceRow]:
    columns = _READ
    if timeouts_after_ns is not None:
        columns += (select(StateObservation.id).where(
            StateObservation.device_pk == _DEVICE.c.id, StateObservation.cause == StateCause.HEARTBEAT,
            StateObservation.ts_ns > timeouts_after_ns).exists(),)
    statement = select(*columns).where(where).order_by(_DEVICE.c.id).with_for_update(of=_DEVICE)
    return [DeviceRow(row) for row in db.execute(statement)]


# PostgreSQL: the batch's rows as one JSON document (orjson writes it in C; the server unpacks it with
# json_to_recordset), so one short statement, prepared after a few batches, carries them all. A statement with a
# placeholder per value, or array parameters, cost more in the driver to build than the server took to run.
_PG_UPDATE_DEVICES = text(
    f"UPDATE {_DEVICE.name} SET state = v.state, state_ts_ns = v.state_ts_ns, state_cause = v.state_cause, "  # noqa: S608
    "state_detail = v.state_detail, last_seen_ns = v.last_seen_ns, usage_tail = v.usage_tail "
    "FROM json_to_recordset(CAST(:rows AS JSON)) AS v(id INTEGER, state VARCHAR, state_ts_ns BIGINT, "
    "state_cause VARCHAR, state_detail VARCHAR, last_seen_ns BIGINT, usage_tail JSON) "
    f"WHERE {_DEVICE.name}.id = v.id")
_PG_INSERT_SAMPLES = text(
    f"INSERT INTO {DeviceSample.__tablename__} (device_pk, ts_ns, power_w) "  # noqa: S608
    "SELECT device_pk, ts_ns, power_w FROM json_to_recordset(CAST(:rows AS JSON)) "
    "AS v(device_pk INTEGER, ts_ns BIGINT, power_w DOUBLE PRECISION) ON CONFLICT DO NOTHING RETURNING device_pk, ts_ns")


def _write_devices(db: Session, devices: Iterable[DeviceRow]) -> None:
    """One UPDATE for the rows that changed; ORM copies of them the caller holds are expired so they read the
    new values."""
    changed = [d for d in devices if d.changed()]
    if not changed:
        return
    if db.get_bind().dialect.name == "postgresql":
        rows = [{"id": d.id, "state": d.state, "state_ts_ns": d.state_ts_ns, "state_cause": d.state_cause,
                 "state_detail": d.state_detail, "last_seen_ns": d.last_seen_ns,
                 "usage_tail": None if (text := d.tail_text()) is None else orjson.Fragment(text)}
                for d in changed]
        db.execute(_PG_UPDATE_DEVICES, {"rows": orjson.dumps(rows).decode()})  # enums are StrEnums: their values
    else:
        values = {name: bindparam(f"w_{name}", type_=_DEVICE.c[name].type) for name in _WRITTEN[:-1]}
        values["usage_tail"] = bindparam("w_usage_tail", type_=Text)
        db.execute(update(_DEVICE).where(_DEVICE.c.id == bindparam("w_id")).values(values),
                   [{"w_id": d.id, **{f"w_{name}": getattr(d, name) for name in _WRITTEN[:-1]},
                     "w_usage_tail": d.tail_text()} for d in changed])
    ids = {d.id for d in changed}
    for obj in list(db.identity_map.values()):
        if isinstance(obj, Device) and inspect(obj).identity[0] in ids:
            db.expire(obj)


def _collect(batch: _DeviceBatch, message: Inbound) -> None:
    device = batch.device
    if message.status is not None:
        state = LiveState(message.status.state)
        if message.retained_without_ts and device.state == state:
            return  # the broker replaying a retained status we already hold, with a fresh receipt time
        batch.observations.append(_Obs(message.status.ts_ns, state, StateCause.STATUS, message.status.detail))
    elif message.event is not None:
        event = message.event
        batch.events.setdefault(event.event_id, event)
        if event.type == "alarm":
            batch.observations.append(_Obs(event.ts_ns, LiveState.FAULT, StateCause.ALARM, event.detail))
        elif event.type == "alarm_cleared":
            batch.observations.append(_Obs(event.ts_ns, LiveState.IDLE, StateCause.ALARM_CLEARED, event.detail))
    for sample in message.samples:
        batch.samples.setdefault(sample.ts_ns, sample)


# --- storing ----------------------------------------------------------------------------------------


def _store(db: Session, batches: Iterable[_DeviceBatch], result: BatchResult, defer_late: bool = False) -> None:
    batches = list(batches)
    _insert_new_rows(db, batches)
    all_items = [_new_items(batch) for batch in batches]
    # Performance (bench/ingest.py): the query that locks the devices also says which have a heartbeat timeout
    # at all after the batch's oldest message (timeout_after); only those need _undo_timeouts' per-device query
    # (which, with the autoflush of the device row it triggered, was about half the time of a batch).
    replacements: list[tuple[DeviceRow, list[usage.Session], int | None]] = []
    for batch, items in zip(batches, all_items, strict=True):
        device = batch.device
        activity = [i.ts_ns for i in items if i.kind is not Kind.OFFLINE]  # Item.is_activity, without the calls
        forced = False
        if activity:
            newest = max(activity)
            if device.last_seen_ns is None or newest > device.last_seen_ns:
                device.last_seen_ns = newest
            forced = device.timeout_after and _undo_timeouts(db, device, activity)
        before = device.state
        _update_state(db, device, batch.observations, recompute=forced)
        if device.state != before:
            result.state_changes.append((device.device_id, device.state.value))
        if items or forced:
            replacement = _update_sessions(db, device, items, forced, defer_late)
            if replacement is not None:
                replacements.append((device, *replacement))
            elif _dirty_of(device) is not None:
                result.deferred.add(device.id)
    _replace_sessions(db, replacements)
    _write_devices(db, (b.device for b in batches))


_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _insert_new_rows(db: Session, batches: list[_DeviceBatch]) -> None:
    """Insert the batch's observations, events and samples, and keep in each device's batch only those that were
    not stored yet (a redelivered message's rows are already there). ON CONFLICT DO NOTHING … RETURNING tells
    which in the statement that inserts them, instead of a query per table before; the device is locked, so
    nobody else can be inserting its rows now."""
    obs_rows, event_rows, sample_rows = [], [], []
    for b in batches:
        pk = b.device.id
        unique: dict[tuple, _Obs] = {}
        for o in b.observations:
            unique.setdefault((o.ts_ns, o.cause), o)  # the first of a batch's twins wins, as with redelivery
        b.observations = list(unique.values())
        obs_rows += [{"device_pk": pk, "ts_ns": o.ts_ns, "state": o.state, "cause": o.cause, "detail": o.detail}
                     for o in b.observations]
        event_rows += [{"device_pk": pk, "event_id": e.event_id, "ts_ns": e.ts_ns, "type": e.type,
                        "run_id": e.run_id, "operator": e.operator, "samples": e.samples, "detail": e.detail}
                       for e in b.events.values()]
        sample_rows += [{"device_pk": pk, "ts_ns": s.ts_ns, "power_w": s.power_w} for s in b.samples.values()]
    new_obs = _insert_missing(db, StateObservation.__table__, obs_rows, ("device_pk", "ts_ns", "cause"))
    new_events = _insert_missing(db, DeviceEvent.__table__, event_rows, ("device_pk", "event_id"))
    if sample_rows and db.get_bind().dialect.name == "postgresql":
        found = db.execute(_PG_INSERT_SAMPLES, {"rows": orjson.dumps(sample_rows).decode()})
        new_samples = {tuple(row) for row in found}
    else:
        new_samples = _insert_missing(db, DeviceSample.__table__, sample_rows, ("device_pk", "ts_ns"))
    for b in batches:
        pk = b.device.id
        if b.observations:
            b.observations = [o for o in b.observations if (pk, o.ts_ns, o.cause.value) in new_obs]
        if b.events:
            b.events = {k: e for k, e in b.events.items() if (pk, k) in new_events}
        if b.samples:
            b.samples = {ts: s for ts, s in b.samples.items() if (pk, ts) in new_samples}


def _insert_missing(db: Session, table, rows: list[dict], key: tuple[str, ...]) -> set[tuple]:
    """Insert the rows whose unique key is not taken yet; the keys of those inserted."""
    if not rows:
        return set()
    statement = _INSERT[db.get_bind().dialect.name](table).on_conflict_do_nothing()
    inserted = db.execute(statement.returning(*(table.c[k] for k in key)), rows)
    return {tuple(str(v) if isinstance(v, StateCause) else v for v in row) for row in inserted}


def _new_items(batch: _DeviceBatch) -> list[Item]:
    items = [Item(s.ts_ns, Kind.SAMPLE, power_w=s.power_w) for s in batch.samples.values()]
    items += [Item(e.ts_ns, Kind.EVENT, e.type, run_id=e.run_id, operator=e.operator, samples=e.samples)
              for e in batch.events.values()]
    for o in batch.observations:
        if o.cause == StateCause.STATUS:
            kind = Kind.OFFLINE if o.state == LiveState.OFFLINE else Kind.STATUS
            items.append(Item(o.ts_ns, kind, o.state.value))
        elif o.cause == StateCause.HEARTBEAT:
            items.append(Item(o.ts_ns, Kind.OFFLINE, "heartbeat"))
    return items


def _undo_timeouts(db: Session, device: DeviceRow, activity: list[int]) -> bool:
    """Delete heartbeat timeouts a late message shows were wrong (it fell inside the silence). True when
    any was deleted: the state and the sessions must then be re-derived."""
    timeout_ns = device.heartbeat_timeout_s * NS
    doomed = db.scalars(select(StateObservation.id).where(
        StateObservation.device_pk == device.id, StateObservation.cause == StateCause.HEARTBEAT,
        StateObservation.ts_ns > min(activity), StateObservation.ts_ns <= max(activity) + timeout_ns,
    )).all()
    if not doomed:
        return False
    wrong = [i for i in doomed if _inside_silence(db, i, activity, timeout_ns)]
    if not wrong:
        return False
    db.execute(delete(StateObservation).where(StateObservation.id.in_(wrong)))
    return True


def _inside_silence(db: Session, observation_id: int, activity: list[int], timeout_ns: int) -> bool:
    ts = db.scalar(select(StateObservation.ts_ns).where(StateObservation.id == observation_id))
    return ts is not None and any(t < ts <= t + timeout_ns for t in activity)


def _update_state(db: Session, device: DeviceRow, observations: list[_Obs], *, recompute: bool) -> None:
    current = None
    if device.state_ts_ns is not None and device.state_cause is not None and not recompute:
        current = _Obs(device.state_ts_ns, device.state, device.state_cause, device.state_detail)
    if recompute:
        current = _newest_stored(db, device.id)
    newest = max(list(observations) + ([current] if current else []), key=lambda o: o.rank, default=None)
    if newest is None:
        device.state, device.state_ts_ns, device.state_cause, device.state_detail = LiveState.OFFLINE, None, None, ""
        return
    device.state, device.state_ts_ns = newest.state, newest.ts_ns
    device.state_cause, device.state_detail = newest.cause, newest.detail


def _newest_stored(db: Session, device_pk: int) -> _Obs | None:
    rows = db.scalars(select(StateObservation).where(StateObservation.device_pk == device_pk)
                      .order_by(StateObservation.ts_ns.desc()).limit(8)).all()
    observations = [_Obs(r.ts_ns, LiveState(r.state), StateCause(r.cause), r.detail) for r in rows]
    return max(observations, key=lambda o: o.rank, default=None)


# --- usage sessions ---------------------------------------------------------------------------------


def config_of(device: Device | DeviceRow) -> usage.Config:
    return _config(device.usage_source, device.heartbeat_timeout_s, device.debounce_s, device.power_threshold_w)


@functools.lru_cache(maxsize=1024)  # per device and batch otherwise; devices share a handful of settings
def _config(usage_source, heartbeat_timeout_s: int, debounce_s: int, power_threshold_w) -> usage.Config:
    source = UsageSource(usage_source).value
    return usage.Config(
        source=source,
        heartbeat_timeout_ns=heartbeat_timeout_s * NS,
        debounce_ns=debounce_s * NS if source == "power" else 0,
        threshold_w=float(power_threshold_w) if power_threshold_w is not None else None,
    )


# The tail keeps the machine's state after its newest item ("cur"), and the state after an older base item
# with the items since, so an item that arrives a little late (two workers on one shared subscription split a
# device's messages between them, so one worker's items are often one or two behind the other's) is merged
# in memory instead of re-derived from the database. The window holds HISTORY to 2 × HISTORY items: folding
# happens once every HISTORY items, so replaying is amortised. Items older than the window are re-derived from
# the database, or, in the ingest worker, deferred and re-derived once for many batches (`settle_sessions`).
# Every late item costs a replay of the window, and every batch encodes the window's new items: a small window
# is cheaper for one worker and for two (bench/ingest.py, 200,000 messages: with 16, two workers ran at
# 10,600 msg/s; with 8, 10,500-11,600; with 4, 12,900-13,600, one worker 9,900).
HISTORY = 4


def _update_sessions(db: Session, device: DeviceRow, items: list[Item], forced: bool,
                     defer_late: bool = False) -> tuple[list[usage.Session], int | None] | None:
    """The device's sessions from (the stored start of) `from_ns` on, when they changed."""
    config = config_of(device)
    items.sort(key=_sort_key)
    dirty = _dirty_of(device)
    if dirty is not None:  # a re-derivation from `dirty` on is pending: the tail's state is not to be trusted
        if forced or not defer_late:
            return _rederive(db, device, config, min(dirty, items[0].ts_ns))
        if items[0].ts_ns < dirty:
            device.usage_tail = {**device.usage_tail, "dirty": items[0].ts_ns}
        return None
    tail = device.usage_tail if device.usage_tail and "cur" in device.usage_tail else None
    if not forced and (tail is not None or device.usage_tail is None):
        # (no tail at all: every item ever stored for the device came through here and set one, so none was)
        base_key = tuple(tail["base_key"]) if tail is not None and tail["base_key"] is not None else None
        if base_key is None or _sort_key(items[0]) > base_key:
            return _merge_in_memory(device, config, tail, items)
    if defer_late and not forced:
        # Late beyond the window. Re-deriving costs the device's items from a restart point before the late one
        # to the newest, and several late batches in a row (a worker that fell behind another on a shared
        # subscription) would pay it each time, fall further behind and stall (bench/ingest.py: two workers at
        # half the rate of one). Deferred, a late batch costs less than one in order, and the items of many
        # batches are re-derived once.
        device.usage_tail = {**(device.usage_tail or {}), "dirty": items[0].ts_ns}
        return None
    return _rederive(db, device, config, items[0].ts_ns)


def _rederive(db: Session, device: DeviceRow, config: usage.Config,
              before_ns: int) -> tuple[list[usage.Session], int | None]:
    """Re-derive the sessions from a restart point in the database before `before_ns`; a fresh tail."""
    restart = _restart_point(db, device, config, before_ns)
    if restart is None:
        machine, replace_from = usage.Machine(config), None
        feed = load_items(db, device)
    else:
        point, open_row = restart
        machine = usage.Machine.resumed(config, point, _session_of(open_row) if open_row else None)
        replace_from = open_row.start_ns if open_row is not None else point.ts_ns + 1
        feed = [i for i in load_items(db, device, since_ns=point.ts_ns) if _sort_key(i) > _sort_key(point)]
    for item in feed:
        machine.feed(item)
    if feed:
        state = _state_of(machine)
        device.usage_tail = {"base": state, "base_key": list(_sort_key(feed[-1])), "items": [], "cur": state,
                             "ts": feed[-1].ts_ns, "open": machine.open is not None}
    elif _dirty_of(device) is not None:
        device.usage_tail = {k: v for k, v in device.usage_tail.items() if k != "dirty"}
    return machine.finish(), replace_from


def _merge_in_memory(device: DeviceRow, config: usage.Config, tail: dict | None,
                     new: list[Item]) -> tuple[list[usage.Session], int] | None:
    base = tail["base"] if tail is not None else None
    base_key = tail["base_key"] if tail is not None else None
    # the window stays in its stored form unless a late item must be sorted in: most batches only append
    window = tail["items"] if tail is not None else []
    merged: list[Item] | None = None
    if not window or _sort_key(new[0]) > _sort_key(_item_of(window[-1])):
        # in order: carry on from the current state with just the new items
        before = _machine_at(config, tail["cur"] if tail is not None else None, []).finish()
        machine = _machine_at(config, tail["cur"] if tail is not None else None, new)
        window = window + [_raw(i) for i in new]
    else:
        history = [_item_of(raw) for raw in window]
        before = _machine_at(config, base, history).finish()
        merged = sorted(history + new, key=_sort_key)
        machine = _machine_at(config, base, merged)
        window = [_raw(i) for i in merged]
    after = machine.finish()
    if len(window) > 2 * HISTORY:
        fold = len(window) - HISTORY
        folded = merged[:fold] if merged is not None else [_item_of(raw) for raw in window[:fold]]
        base = _state_of(_machine_at(config, base, folded))
        base_key, window = list(_sort_key(folded[-1])), window[fold:]
    device.usage_tail = {"base": base, "base_key": base_key, "items": window,
                         "cur": _state_of(machine), "ts": window[-1][0], "open": machine.open is not None}
    if len(before) == len(after) and all(x.same_as(y) for x, y in zip(before, after, strict=True)):
        return None  # nothing changed: still idle, or the open session simply goes on
    return after, min(s.start_ns for s in before + after)


def _machine_at(config: usage.Config, base: dict | None, items: list[Item]) -> usage.Machine:
    machine = usage.Machine(config)
    if base is not None:
        machine.last_activity_ns, machine.pending_ns = base["last_activity"], base["pending"]
        if base["open"] is not None:
            machine.open = usage.Session(*base["open"])
            machine.sessions.append(machine.open)
    for item in items:
        machine.feed(item)
    return machine


def _state_of(machine: usage.Machine) -> dict:
    return {"last_activity": machine.last_activity_ns, "pending": machine.pending_ns,
            "open": list(machine.open.key()) if machine.open is not None else None}


_RAW_DEFAULTS = ("", None, "", "", None)  # of Item.key, power_w, run_id, operator, samples


def _raw(item: Item) -> list:
    """The item as the tail stores it: the fields in Item's order, without trailing defaults (a power sample is
    [ts, 0, "", power_w]). Every tail is encoded for every batch, so its size is the ingest's time."""
    raw = [item.ts_ns, int(item.kind), item.key, item.power_w, item.run_id, item.operator, item.samples]
    while len(raw) > 2 and raw[-1] == _RAW_DEFAULTS[len(raw) - 3]:
        raw.pop()
    return raw


def _item_of(raw: list) -> Item:
    return Item(raw[0], Kind(raw[1]), *raw[2:])


_sort_key = usage.sort_key


def _session_of(row: UsageSession) -> usage.Session:
    return usage.Session(row.start_ns, row.end_ns, row.truncated, row.run_id, row.operator, row.samples,
                         row.start_decided_ns, row.end_decided_ns)


def _restart_point(db: Session, device: DeviceRow, config: usage.Config,
                   before_ns: int | None) -> tuple[Item, UsageSession | None] | None:
    """The newest item before `before_ns` after which the machine's state is known from the stored
    sessions, with the session open right after it; None: derive from the beginning."""
    if before_ns is None:
        return None
    limit = 64
    while True:
        candidates = load_items(db, device, before_ns=before_ns, newest_first=limit)
        for item in candidates:
            if not usage.is_restart_point(config, item):
                continue
            row = db.scalar(select(UsageSession).options(lazyload(UsageSession.device)).where(
                UsageSession.device_pk == device.id, UsageSession.start_ns <= item.ts_ns,
            ).order_by(UsageSession.start_ns.desc()).limit(1))
            phase = usage.phase_after(_session_of(row) if row is not None else None, item.ts_ns)
            if phase is None:
                continue
            expected = usage.expected_open(config, item)
            if expected is None or expected == phase:
                return item, row if phase else None
        if len(candidates) < limit:
            return None
        limit *= 4


def load_items(db: Session, device: DeviceRow, *, since_ns: int | None = None, before_ns: int | None = None,
               newest_first: int | None = None) -> list[Item]:
    """The device's observations as machine items: oldest first, or the newest `newest_first` ones (newest
    first) before `before_ns`."""
    def window(query, column):
        if since_ns is not None:
            query = query.where(column >= since_ns)
        if before_ns is not None:
            query = query.where(column < before_ns)
        if newest_first is not None:
            query = query.order_by(column.desc()).limit(newest_first)
        return query

    samples = db.execute(window(select(DeviceSample.ts_ns, DeviceSample.power_w)
                                .where(DeviceSample.device_pk == device.id), DeviceSample.ts_ns)).all()
    events = db.execute(window(select(DeviceEvent.ts_ns, DeviceEvent.type, DeviceEvent.run_id,
                                      DeviceEvent.operator, DeviceEvent.samples)
                               .where(DeviceEvent.device_pk == device.id), DeviceEvent.ts_ns)).all()
    observations = db.execute(window(select(StateObservation.ts_ns, StateObservation.state, StateObservation.cause)
                                     .where(StateObservation.device_pk == device.id,
                                            StateObservation.cause.in_([StateCause.STATUS, StateCause.HEARTBEAT])),
                                     StateObservation.ts_ns)).all()
    items = [Item(ts, Kind.SAMPLE, power_w=power) for ts, power in samples]
    items += [Item(ts, Kind.EVENT, type_, run_id=run_id, operator=operator, samples=n)
              for ts, type_, run_id, operator, n in events]
    for ts, state, cause in observations:
        if cause == StateCause.HEARTBEAT:
            items.append(Item(ts, Kind.OFFLINE, "heartbeat"))
        else:
            state = LiveState(state)
            items.append(Item(ts, Kind.OFFLINE if state == LiveState.OFFLINE else Kind.STATUS, state.value))
    items.sort(key=_sort_key, reverse=newest_first is not None)
    return items[:newest_first] if newest_first is not None else items


def _replace_sessions(db: Session, replacements: list[tuple[DeviceRow, list[usage.Session], int | None]]) -> None:
    """Store each device's derived sessions in place of those stored from `from_ns` on (all when None): one
    query and one flush for the batch, not one of each per device."""
    if not replacements:
        return
    wanted = [UsageSession.device_pk == device.id if from_ns is None else
              and_(UsageSession.device_pk == device.id, UsageSession.start_ns >= from_ns)
              for device, _derived, from_ns in replacements]
    stored: dict[tuple[int, int], UsageSession] = {}
    for start in range(0, len(wanted), 100):  # SQLite limits the depth of an expression (a chain of ORs)
        stored.update(((row.device_pk, row.start_ns), row) for row in db.scalars(
            select(UsageSession).options(lazyload(UsageSession.device)).where(or_(*wanted[start:start + 100]))))
    for device, derived, _from_ns in replacements:
        for session in derived:
            row = stored.pop((device.id, session.start_ns), None)
            if row is not None and _session_of(row).same_as(session):
                continue
            if row is None:
                row = UsageSession(device_pk=device.id, start_ns=session.start_ns)
                db.add(row)
            row.end_ns, row.truncated = session.end_ns, session.truncated
            row.started_at = ns_to_datetime(session.start_ns)
            row.ended_at = ns_to_datetime(session.end_ns) if session.end_ns is not None else None
            row.run_id, row.operator, row.samples = session.run_id, session.operator, session.samples
            row.start_decided_ns, row.end_decided_ns = session.start_decided_ns, session.end_decided_ns
    for row in stored.values():
        db.delete(row)
    db.flush()


# --- dead letters -----------------------------------------------------------------------------------


def printable(text: str) -> str:
    # FIX (tests/telemetry/test_ingest_fuzz.py): a dead letter's detail quotes the offending value, which can
    # hold a lone surrogate from a JSON escape ({"ts": "\\ud800"}); no driver can encode it, and the failed
    # insert killed the ingest's processing thread. Surrogates become \\udXXX like NUL becomes \\x00.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")  # PostgreSQL text cannot hold NUL


def _dead_letter(db: Session, message: Inbound) -> None:
    head = message.payload[:PAYLOAD_HEAD_BYTES].decode("utf-8", "backslashreplace")
    db.add(DeadLetter(
        received_at=ns_to_datetime(message.received_ns),
        reason=message.reject_reason,
        topic=printable(message.topic)[:300],
        device_id=message.device_id,
        detail=printable(message.reject_detail)[:300],
        payload_head=printable(head)[:800],
        payload_size=len(message.payload),
    ))
