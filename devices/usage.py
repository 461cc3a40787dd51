"""Usage sessions from a device's observations (design.md §5): a pure state machine, no I/O.

A device's observations form one stream ordered by time (`Item`s). The machine walks it and emits
sessions; because it only ever looks at the stream *sorted by timestamp*, the result depends on the set of
observations, not on the order they arrived in — which is what makes redelivery, reordering and several
ingest workers give the same sessions.

Sources (one per device):

- `events`: from `run_started` to the matching `run_finished` (by `run_id` when both carry one). A new
  `run_started` while a run is open closes the open one at the new start, truncated (its finish was lost).
- `status`: while the state is `running`.
- `power`: while `power_w` stays at or above the threshold, after a debounce on both edges: a session
  starts at the first sample at or above the threshold once the samples have stayed there for `debounce`
  (the first sample at least `debounce` later is still above), and ends at the first sample below it
  once they have stayed below for `debounce`.

Truncation, for every source: a session still open when the device goes offline (a status `offline`,
its last will, a heartbeat timeout) or when the device sends nothing for its heartbeat timeout (a gap
between two of its messages) is closed at the device's last message and marked truncated. A power session
whose falling edge was still being debounced closes at that edge instead (the device had already stopped).

Restarting: `Machine.restart_state()` says whether the machine's state right after an item is fully
known from the item and the stored sessions alone (no edge being debounced), so recomputation after a
late message can start at that item instead of at the beginning of time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Kind(enum.IntEnum):
    # Order within one timestamp: what the device said before what the broker or the sweep said about it.
    SAMPLE = 0  # a metrics sample (activity; carries power_w when the device reports it)
    EVENT = 1  # an event (activity)
    STATUS = 2  # a status message other than offline (activity)
    OFFLINE = 3  # the device is gone: status offline (usually its last will, published by the broker) or a
    # heartbeat timeout; not activity, so a session it truncates ends at the message before it


@dataclass(frozen=True, slots=True)
class Item:
    ts_ns: int
    kind: Kind
    # SAMPLE: power_w or None; EVENT: (type, run_id); STATUS: state
    key: str = ""
    power_w: float | None = None
    run_id: str = ""
    operator: str = ""
    samples: int | None = None

    @property
    def is_activity(self) -> bool:
        return self.kind != Kind.OFFLINE


@dataclass(slots=True)
class Session:
    start_ns: int
    end_ns: int | None = None  # None while open
    truncated: bool = False
    run_id: str = ""
    operator: str = ""
    samples: int | None = None
    # When the machine decided the start and the end: the timestamps of the items that opened and closed the
    # session. A debounced edge is decided after the time it is dated at, and a truncation when the gap or
    # the offline message is seen; restarting needs to know (see `phase_after`).
    start_decided_ns: int = 0
    end_decided_ns: int | None = None

    def key(self) -> tuple:
        return (self.start_ns, self.end_ns, self.truncated, self.run_id, self.operator, self.samples,
                self.start_decided_ns, self.end_decided_ns)

    def same_as(self, other: Session) -> bool:
        return self.key() == other.key()


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # "events" | "status" | "power"
    heartbeat_timeout_ns: int
    debounce_ns: int = 0
    threshold_w: float | None = None


@dataclass(slots=True)
class Machine:
    """Feed items in timestamp order with `feed`; closed and open sessions collect in `sessions`."""

    config: Config
    last_activity_ns: int | None = None
    open: Session | None = None
    pending_ns: int | None = None  # power: time of the first sample of an edge still being debounced
    sessions: list[Session] = field(default_factory=list)
    _now: int = 0  # the timestamp of the item being fed

    @classmethod
    def resumed(cls, config: Config, item: Item, open_session: Session | None) -> Machine:
        """The machine right after `item`, a restart point (see `is_restart_point`)."""
        machine = cls(config, last_activity_ns=item.ts_ns if item.is_activity else None)
        if open_session is not None:
            machine.open = Session(open_session.start_ns, None, False, open_session.run_id,
                                   open_session.operator, open_session.samples, open_session.start_decided_ns)
            machine.sessions.append(machine.open)
        return machine

    def feed(self, item: Item) -> None:
        self._now = item.ts_ns
        if item.is_activity:
            last = self.last_activity_ns
            if last is not None and item.ts_ns - last > self.config.heartbeat_timeout_ns:
                if self.open is not None:
                    self._truncate()
                self.pending_ns = None  # a rising edge does not survive the device going silent
            self.last_activity_ns = item.ts_ns
        if item.kind == Kind.OFFLINE:
            if self.open is not None:
                self._truncate()
            self.pending_ns = None
            return
        source = self.config.source
        if source == "power" and item.kind == Kind.SAMPLE and item.power_w is not None:
            self._power(item)
        elif source == "status" and item.kind in (Kind.STATUS, Kind.EVENT):
            state = _state_of(item)
            if state == "running" and self.open is None:
                self._start(item.ts_ns)
            elif state is not None and state != "running" and self.open is not None:
                self._close(item.ts_ns)
        elif source == "events" and item.kind == Kind.EVENT:
            self._event(item)

    def finish(self) -> list[Session]:
        return self.sessions

    # --- sources -------------------------------------------------------------------------------------

    def _power(self, item: Item) -> None:
        above = item.power_w >= (self.config.threshold_w or 0.0)
        debounce = self.config.debounce_ns
        if self.open is None:
            if not above:
                self.pending_ns = None
            elif self.pending_ns is None:
                self.pending_ns = item.ts_ns
            if self.pending_ns is not None and item.ts_ns - self.pending_ns >= debounce:
                self._start(self.pending_ns)
                self.pending_ns = None
        else:
            if above:
                self.pending_ns = None
            elif self.pending_ns is None:
                self.pending_ns = item.ts_ns
            if self.pending_ns is not None and item.ts_ns - self.pending_ns >= debounce:
                self._close(self.pending_ns)

    def _event(self, item: Item) -> None:
        if item.key == "run_started":
            if self.open is not None:
                self._close(item.ts_ns, truncated=True)
            self._start(item.ts_ns, item.run_id, item.operator, item.samples)
        elif item.key == "run_finished" and self.open is not None:
            if item.run_id and self.open.run_id and item.run_id != self.open.run_id:
                return  # the finish of another run (its start was lost or is still to come)
            if item.samples is not None:
                self.open.samples = item.samples
            if item.operator and not self.open.operator:
                self.open.operator = item.operator
            self._close(item.ts_ns)

    # --- sessions -------------------------------------------------------------------------------------

    def _start(self, ts_ns: int, run_id: str = "", operator: str = "", samples: int | None = None) -> None:
        self.open = Session(ts_ns, None, False, run_id, operator, samples, start_decided_ns=self._now)
        self.sessions.append(self.open)
        self.pending_ns = None

    def _close(self, ts_ns: int, truncated: bool = False) -> None:
        if self.open is None:
            return
        self.open.end_ns, self.open.truncated, self.open.end_decided_ns = ts_ns, truncated, self._now
        if self.open.end_ns <= self.open.start_ns:
            self.sessions.remove(self.open)  # nothing was measured: a run that ended where it began
        self.open = None
        self.pending_ns = None

    def _truncate(self) -> None:
        if self.open is None:
            return
        if self.pending_ns is not None:
            self._close(self.pending_ns, truncated=True)  # the falling edge was being debounced
        else:
            self._close(max(self.last_activity_ns or self.open.start_ns, self.open.start_ns), truncated=True)


def _state_of(item: Item) -> str | None:
    """The state an item sets for the `status` source: a status message's state, `fault` for an alarm,
    `idle` when an alarm is cleared; other events set nothing."""
    if item.kind == Kind.STATUS:
        return item.key
    if item.key == "alarm":
        return "fault"
    if item.key == "alarm_cleared":
        return "idle"
    return None


def is_restart_point(config: Config, item: Item) -> bool:
    """True when no edge can be pending right after `item`, so that the machine's whole state after it is
    known from the stored sessions: whether one was open (and which), and `item` as the last activity."""
    if not item.is_activity:
        return False
    if config.source == "power":
        return item.kind == Kind.SAMPLE and item.power_w is not None
    if config.source == "status":
        return item.kind == Kind.STATUS or (item.kind == Kind.EVENT and _state_of(item) is not None)
    return item.kind in (Kind.EVENT, Kind.STATUS, Kind.SAMPLE)


def expected_open(config: Config, item: Item) -> bool | None:
    """Whether a session must be open right after restart point `item`, judged from the item alone where
    the source allows it (a power sample above or below the threshold, a running or other state); None
    when the item does not say (the stored sessions decide)."""
    if config.source == "power":
        return (item.power_w or 0.0) >= (config.threshold_w or 0.0)
    if config.source == "status":
        state = _state_of(item)
        return None if state is None else state == "running"
    if item.kind == Kind.EVENT and item.key == "run_started":
        return True  # even when its session was later dropped for having no length
    return None


def phase_after(session: Session | None, ts_ns: int) -> bool | None:
    """Whether a session is open right after an item at `ts_ns`, given the newest session that starts at or
    before it; None when an edge dated before `ts_ns` was only decided after it (the machine was then
    debouncing, or had not yet seen the gap that truncates the session), so the sessions cannot say."""
    if session is None:
        return False
    if session.start_decided_ns > ts_ns:
        return None
    if session.end_decided_ns is None:
        return True
    if ts_ns >= session.end_decided_ns:
        return False
    return True if session.end_ns is not None and ts_ns < session.end_ns else None


_EVENT_RANK = {"run_started": 0, "run_finished": 2}  # a run that starts and ends at one instant has no length


def sort_key(item: Item) -> tuple:
    """The order of the stream: by time, then what the device said before what was said about it."""
    return (item.ts_ns, item.kind, _EVENT_RANK.get(item.key, 1), item.key, item.run_id)


def derive(config: Config, items: list[Item]) -> list[Session]:
    """All sessions of a complete stream (any order: it is sorted here)."""
    machine = Machine(config)
    for item in sorted(items, key=sort_key):
        machine.feed(item)
    return machine.finish()
