"""Virtual instruments that speak the MQTT contract (design.md §5), for the demo, tests and benchmarks.

Three layers, so that the behaviour can be tested without a broker or a clock:

- behaviour models (`SemModel`, `HplcModel`, `FermenterModel`, `GenericModel`): deterministic state
  machines driven by `random.Random(seed)` and simulated time; `advance(until_ms)` returns the contract
  messages `(channel, payload)` the instrument would send up to that moment;
- `VirtualDevice`: one model plus its network life — planned outages (an abrupt drop, so the broker
  publishes the last will), store-and-forward while offline, and the batches sent after a reconnect;
  it returns actions (`Publish`, `Drop`, `Reconnect`) and still does no I/O;
- `Simulator`: the MQTT side (paho-mqtt 2), one client per device, all stepped by one thread.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import random
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from telemetry.contract import DEFAULT_PREFIX, DEVICE_ID_RE, MAX_BATCH, MAX_PAYLOAD_BYTES

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

Message = tuple[str, dict]  # (channel, payload) of one contract message

CHINA = timezone(timedelta(hours=8), "CST")  # status and events carry the facility's offset, as real devices do
OPERATORS = ("wang.xiaoyu", "li.na", "zhang.wei", "chen.jing", "liu.yang", "yang.fan", "zhao.lei", "huang.min")
# A payload must stay under 64 KiB; keep a margin for the JSON around the entries.
BATCH_BYTES = MAX_PAYLOAD_BYTES - 2048


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rfc3339(ms: int) -> str:
    """RFC 3339 with the +08:00 offset, built from integer milliseconds (no float rounding)."""
    moment = datetime.fromtimestamp(ms // 1000, CHINA) + timedelta(milliseconds=ms % 1000)
    return moment.isoformat(timespec="milliseconds")


def encode(payload: dict) -> bytes:
    """The bytes sent: compact JSON, the form the 64 KiB payload limit is checked against."""
    return json.dumps(payload, separators=(",", ":")).encode()


def _minutes(low: float, high: float) -> tuple[int, int]:
    return int(low * 60_000), int(high * 60_000)


@dataclass
class Run:
    """One run (SEM session, HPLC sequence, fermentation batch) as planned when it starts."""

    run_id: str
    started_ms: int
    ends_ms: int
    fault_at_ms: int | None
    operator: str | None
    samples: int | None = None
    params: dict[str, float] = field(default_factory=dict)


class InstrumentModel:
    """A generic instrument: idle gaps, runs, occasional faults and maintenance, and its measurements.

    Subclasses set the durations and power levels of their kind and compute their own values; the state
    machine (idle → running → idle, running → fault → idle, idle → maintenance → idle) is shared.
    Power is always consistent with the state: at or above `power_threshold_w` exactly while running, so
    a power-threshold usage source sees the same runs as the status and events sources.
    """

    kind = "generic"
    sample_interval_s = 10
    power_threshold_w = 300.0
    run_ms = _minutes(20, 120)
    gap_ms = _minutes(10, 240)
    fault_ms = _minutes(5, 45)
    maintenance_ms = _minutes(60, 240)
    maintenance_chance = 0.02  # per idle gap
    fault_details = ("overtemperature", "controller error E42", "interlock open")

    def __init__(self, device_id: str, *, seed: int | str = 0, start_ms: int | None = None,
                 fault_rate: float = 0.05, heartbeat_s: int = 60, sample_interval_s: float | None = None):
        if not DEVICE_ID_RE.fullmatch(device_id):
            raise ValueError(f"bad device id {device_id!r}: [A-Za-z0-9_-]{{1,64}}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError("fault rate must be between 0 and 1")
        self.device_id = device_id
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes.
        self.rng = random.Random(f"{seed}:{device_id}")  # noqa: S311 -- simulation, not security
        self.fault_rate = fault_rate
        self.heartbeat_ms = heartbeat_s * 1000
        self.sample_ms = max(1, int((sample_interval_s or self.sample_interval_s) * 1000))
        self.now_ms = now_ms() if start_ms is None else start_ms
        # Ids carry the start time, so a restarted simulator never reuses one (the ingest would drop it).
        self._id_base = f"{self.now_ms:x}"
        self._event_seq = 0
        self._run_seq = 0
        self.state = "idle"
        self.detail = "ready"
        self.state_since_ms = self.now_ms
        self.run: Run | None = None
        self.last_run: Run | None = None
        self.fault_detail = ""
        # The first gap is short, so that a freshly started demo shows activity soon.
        self._state_until_ms = self.now_ms + int(self.rng.uniform(0.0, 0.5) * self.gap_ms[1])
        self._next_sample_ms = self.now_ms
        self._next_heartbeat_ms = self.now_ms + self.heartbeat_ms
        self._pending: list[Message] = [self._status(self.now_ms)]

    # --- the state machine ---------------------------------------------------------------------------

    def advance(self, until_ms: int) -> list[Message]:
        """Every message the instrument sends from the last call up to and including `until_ms`."""
        out, self._pending = self._pending, []
        while True:
            transition = self._next_transition_ms()
            moment = min(transition, self._next_heartbeat_ms, self._next_sample_ms)
            if moment > until_ms:
                break
            # At one moment: the state changes first, so a sample taken then already shows the new state.
            if moment == transition:
                out += self._transition(moment)
            elif moment == self._next_heartbeat_ms:
                out.append(self._status(moment))
                self._next_heartbeat_ms += self.heartbeat_ms
            else:
                out += self._sample(moment)
                self._next_sample_ms += self.sample_ms
        self.now_ms = max(self.now_ms, until_ms)
        return out

    def _next_transition_ms(self) -> int:
        if self.run is not None and self.run.fault_at_ms is not None:
            return self.run.fault_at_ms
        return self._state_until_ms

    def _transition(self, t: int) -> list[Message]:
        if self.state == "running":
            return self._fault(t) if self._current.fault_at_ms == t else self._finish_run(t)
        if self.state == "fault":
            return [self._event(t, "alarm_cleared", detail=self.fault_detail), *self._enter(t, "idle", "ready")]
        if self.state == "idle" and self.rng.random() < self.maintenance_chance:
            return self._enter(t, "maintenance", "scheduled maintenance", self._draw(self.maintenance_ms))
        if self.state == "idle":
            return self._start_run(t)
        return self._enter(t, "idle", "ready")  # maintenance over

    def _enter(self, t: int, state: str, detail: str, duration_ms: int | None = None) -> list[Message]:
        self.state, self.detail, self.state_since_ms = state, detail, t
        self._state_until_ms = t + (duration_ms if duration_ms is not None else self._draw(self.gap_ms))
        self._next_heartbeat_ms = t + self.heartbeat_ms  # a status was just sent
        return [self._status(t)]

    def _start_run(self, t: int) -> list[Message]:
        self._run_seq += 1
        length = self._run_length()
        fault_at = None
        if self.rng.random() < self.fault_rate:
            fault_at = t + int(length * self.rng.uniform(0.1, 0.9))
        operator = self.rng.choice(OPERATORS) if self.rng.random() < 0.7 else None
        self.run = Run(f"R{self._id_base}-{self._run_seq:05d}", t, t + length, fault_at, operator)
        self._plan_run(self.run)
        event = self._event(t, "run_started", run_id=self.run.run_id, operator=operator,
                            samples=self.run.samples)
        return [event, *self._enter(t, "running", self._running_detail(t), length)]

    def _finish_run(self, t: int, detail: str | None = None) -> list[Message]:
        run = self._current
        self.last_run, self.run = run, None
        event = self._event(t, "run_finished", run_id=run.run_id, samples=self._samples_done(run, t), detail=detail)
        return [event, *self._enter(t, "idle", "ready")]

    def _fault(self, t: int) -> list[Message]:
        self.fault_detail = self.rng.choice(self.fault_details)
        alarm = self._event(t, "alarm", detail=self.fault_detail)
        finished = self._finish_run(t, detail=f"aborted: {self.fault_detail}")
        return [alarm, finished[0], *self._enter(t, "fault", self.fault_detail, self._draw(self.fault_ms))]

    @property
    def _current(self) -> Run:
        if self.run is None:
            raise RuntimeError(f"{self.device_id}: no run in progress")
        return self.run

    def _draw(self, bounds: tuple[int, int]) -> int:
        return int(self.rng.uniform(*bounds))

    # --- messages ------------------------------------------------------------------------------------

    def _status(self, t: int) -> Message:
        return "status", {"ts": rfc3339(t), "state": self.state, "detail": self.detail}

    def current_status(self, t: int) -> Message:
        """The status as of now, e.g. to restore it after the broker published the last will."""
        return self._status(t)

    def _event(self, t: int, kind: str, **fields: object) -> Message:
        self._event_seq += 1
        payload: dict = {"id": f"{self._id_base}-{self._event_seq:06d}", "ts": rfc3339(t), "type": kind}
        payload.update({name: value for name, value in fields.items() if value is not None})
        return "events", payload

    def _sample(self, t: int) -> list[Message]:
        out: list[Message] = []
        detail = self._running_detail(t) if self.state == "running" else self.detail
        if detail != self.detail:  # e.g. the SEM's beam went on: worth a status, not only a metric
            self.detail = detail
            out.append(self._status(t))
            self._next_heartbeat_ms = t + self.heartbeat_ms
        values = {"power_w": round(self._power(t), 1), **self._values(t)}
        out.append(("metrics", {"ts": t, "values": values}))
        return out

    def _around(self, centre: float, spread: float, low: float, high: float) -> float:
        return min(high, max(low, self.rng.gauss(centre, spread)))

    def _since(self, t: int) -> float:
        """Seconds in the current state."""
        return (t - self.state_since_ms) / 1000

    # --- what a kind of instrument overrides ------------------------------------------------------------

    def _run_length(self) -> int:
        return self._draw(self.run_ms)

    def _plan_run(self, run: Run) -> None:
        run.params["level"] = self.rng.uniform(600, 900)

    def _running_detail(self, t: int) -> str:
        return "running"

    def _samples_done(self, run: Run, t: int) -> int | None:
        return None

    def _power(self, t: int) -> float:
        if self.state == "running":
            return self._around(self._current.params["level"], 15, 500, 1000)
        return self._around(80, 8, 50, 120)

    def _values(self, t: int) -> dict[str, float | bool]:
        centre = 30.0 if self.state == "running" else 23.0
        return {"temp_c": round(self._around(centre, 0.3, 15, 45), 2)}


class GenericModel(InstrumentModel):
    pass


class SemModel(InstrumentModel):
    """Scanning electron microscope: a session pumps the chamber down, turns the beam on, then off and vents.

    Idle (pumps on standby) 300–600 W; pumping down ~1.1–1.45 kW; beam on 1.5–2.5 kW.
    """

    kind = "sem"
    power_threshold_w = 1000.0
    run_ms = _minutes(30, 180)
    gap_ms = _minutes(15, 360)
    fault_ms = _minutes(10, 90)
    fault_details = ("vacuum fault: chamber pressure rising", "high-voltage arc detected",
                     "emission current unstable", "stage interlock tripped")
    ATMOSPHERE_PA = 101_325.0
    BEAM_READY_PA = 5e-3
    VENT_S = 60.0

    def _plan_run(self, run: Run) -> None:
        tau = self.rng.uniform(12, 18)  # pump-down time constant, s
        base = self.rng.uniform(2e-4, 8e-4)  # the chamber's ultimate pressure, Pa
        ready_s = tau * math.log((self.ATMOSPHERE_PA - base) / (self.BEAM_READY_PA - base))
        run.params.update(tau=tau, base=base, kv=self.rng.choice((5, 10, 15, 20, 30)),
                          level=self.rng.uniform(1600, 2400),
                          beam_on_ms=run.started_ms + int((ready_s + self.rng.uniform(30, 120)) * 1000),
                          beam_off_ms=run.ends_ms - int(self.rng.uniform(60, 180) * 1000))

    def _beam_on(self, t: int) -> bool:
        run = self.run
        return (self.state == "running" and run is not None
                and run.params["beam_on_ms"] <= t < run.params["beam_off_ms"])

    def _running_detail(self, t: int) -> str:
        if self._beam_on(t):
            return f"beam on, {self._current.params['kv']:.0f} kV"
        return "pumping down" if t < self._current.params["beam_on_ms"] else "beam off"

    def _pressure(self, t: int) -> float:
        if self.state == "running":
            p = self._current.params
            pressure = p["base"] + (self.ATMOSPHERE_PA - p["base"]) * math.exp(-self._since(t) / p["tau"])
            return pressure * self._around(1.0, 0.02, 0.9, 1.1)
        # After a run (or when a fault stops it) the chamber is vented to air within a minute.
        fraction = min(1.0, self._since(t) / self.VENT_S)
        start = self.last_run.params["base"] if self.last_run is not None else self.ATMOSPHERE_PA
        return 10 ** (math.log10(start) + (math.log10(self.ATMOSPHERE_PA) - math.log10(start)) * fraction)

    def _power(self, t: int) -> float:
        if self.state == "running":
            if self._beam_on(t):
                return self._around(self._current.params["level"], 40, 1500, 2500)
            return self._around(1250, 50, 1100, 1450)  # turbo pump spinning up / running
        if self.state == "maintenance":
            return self._around(250, 20, 150, 299)
        return self._around(450, 50, 300, 600)

    def _values(self, t: int) -> dict[str, float | bool]:
        return {"chamber_pressure_pa": float(f"{self._pressure(t):.3g}"), "beam_on": self._beam_on(t)}


class HplcModel(InstrumentModel):
    """HPLC: sequences of injections at a constant flow; the pressure follows the solvent gradient.

    Idle ~150 W with the pump stopped; running ~400 W.
    """

    kind = "hplc"
    power_threshold_w = 250.0
    run_ms = _minutes(10, 60)
    gap_ms = _minutes(5, 120)
    fault_ms = _minutes(5, 60)
    fault_details = ("pressure limit exceeded", "leak detected", "pump seal failure", "detector lamp failure")

    def _plan_run(self, run: Run) -> None:
        length_min = (run.ends_ms - run.started_ms) / 60_000
        # Injections of 8–15 minutes each; a short run is one injection.
        run.samples = max(1, round(length_min / self.rng.uniform(8, 15)))
        run.params.update(flow=self.rng.choice((0.2, 0.3, 0.5, 1.0, 1.5)),
                          bar_per_flow=self.rng.uniform(150, 250),
                          injection_ms=(run.ends_ms - run.started_ms) / run.samples)

    def _samples_done(self, run: Run, t: int) -> int | None:
        samples = run.samples or 1
        # integers: a float quotient of 2.9999 would make the last injection look unfinished
        return min(samples, (t - run.started_ms) * samples // (run.ends_ms - run.started_ms))

    def _running_detail(self, t: int) -> str:
        run = self._current
        total = run.samples or 1
        done = self._samples_done(run, t) or 0
        return f"injection {min(done + 1, total)} of {total}"

    def _power(self, t: int) -> float:
        if self.state == "running":
            return self._around(400, 10, 370, 430)
        return self._around(150, 5, 135, 165)

    def _values(self, t: int) -> dict[str, float | bool]:
        if self.state != "running":
            return {"pressure_pa": round(self._around(50_000, 5_000, 0, 100_000)), "flow_ml_min": 0.0}
        p = self._current.params
        ramp = min(1.0, self._since(t) / 60)  # the pump ramps up over the first minute
        flow = p["flow"] * ramp * self._around(1.0, 0.002, 0.99, 1.01)
        phase = ((t - self._current.started_ms) % p["injection_ms"]) / p["injection_ms"]
        gradient = 1.0 + 0.15 * math.sin(math.pi * phase)  # viscosity peaks mid-gradient
        bar = flow * p["bar_per_flow"] * gradient
        return {"pressure_pa": round(bar * 100_000), "flow_ml_min": round(flow, 3)}


class FermenterModel(InstrumentModel):
    """Pilot fermenter: batches of 1–4 days; growth drives oxygen demand, acid production and power.

    Idle (between batches, cleaned and cold) ~120 W; a batch draws 1–3 kW for stirring, aeration, heat.
    """

    kind = "fermenter"
    sample_interval_s = 60
    power_threshold_w = 600.0
    run_ms = _minutes(24 * 60, 4 * 24 * 60)
    gap_ms = _minutes(6 * 60, 48 * 60)
    fault_ms = _minutes(30, 240)
    maintenance_chance = 0.05
    fault_details = ("temperature excursion", "foam level high", "pH control failure", "contamination suspected")

    def _plan_run(self, run: Run) -> None:
        run.params.update(temp=self.rng.choice((30.0, 32.0, 37.0)), ph=self.rng.uniform(6.7, 7.0))

    def _running_detail(self, t: int) -> str:
        hours = (t - self._current.started_ms) / 3_600_000
        return f"batch hour {int(hours)}, {self._current.params['temp']:.0f} °C"

    def _demand(self, t: int) -> tuple[float, float]:
        """(growth 0..1, oxygen demand 0..1): logistic growth, demand falling once substrate runs out."""
        length = self._current.ends_ms - self._current.started_ms
        x = (t - self._current.started_ms) / length
        growth = 1 / (1 + math.exp(-(x - 0.4) / 0.08))
        demand = growth * (1 - max(0.0, (x - 0.8) / 0.2))
        return growth, demand

    def _power(self, t: int) -> float:
        if self.state == "running":
            _, demand = self._demand(t)
            heating = 300 if self._since(t) < 3600 else 0
            return self._around(1000 + heating + 1700 * demand, 40, 1000, 3000)
        return self._around(120, 10, 90, 160)

    def _values(self, t: int) -> dict[str, float | bool]:
        if self.state != "running":
            return {"temp_c": round(self._around(22, 0.3, 15, 30), 2), "ph": round(self._around(7.0, 0.02, 6, 8), 3),
                    "do_pct": round(self._around(99, 0.5, 95, 100), 1)}
        p = self._current.params
        growth, demand = self._demand(t)
        temp = p["temp"] + (22 - p["temp"]) * math.exp(-self._since(t) / 1800)  # heating up from room
        ph = max(p["ph"] - 0.05, 7.1 - 0.5 * growth)  # acids lower it until the base pump holds it
        do = max(20.0, 100 - 75 * demand)
        return {"temp_c": round(self._around(temp, 0.05, 0, 60), 2), "ph": round(self._around(ph, 0.01, 5, 8), 3),
                "do_pct": round(self._around(do, 0.8, 0, 100), 1)}


MODELS: dict[str, type[InstrumentModel]] = {
    "sem": SemModel, "hplc": HplcModel, "fermenter": FermenterModel, "generic": GenericModel}


def make_model(kind: str, device_id: str, **options) -> InstrumentModel:
    try:
        cls = MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown device type {kind!r} (one of {', '.join(MODELS)})") from None
    return cls(device_id, **options)


# --- a device's network life: outages, store-and-forward -------------------------------------------------

@dataclass(frozen=True)
class Publish:
    channel: str
    payload: dict


@dataclass(frozen=True)
class Drop:
    """Drop the connection abruptly (no DISCONNECT), so that the broker publishes the last will."""


@dataclass(frozen=True)
class Reconnect:
    """The planned outage is over: connect again; call `VirtualDevice.link_up` once connected."""


Action = Publish | Drop | Reconnect


def batches(entries: list[dict], max_entries: int = MAX_BATCH, max_bytes: int = BATCH_BYTES) -> list[dict]:
    """Store-and-forward payloads: at most 1,000 entries and under the 64 KiB payload limit each."""
    out: list[dict] = []
    chunk: list[dict] = []
    size = 0
    for entry in entries:
        entry_size = len(encode(entry)) + 1
        if chunk and (len(chunk) >= max_entries or size + entry_size > max_bytes):
            out.append({"batch": chunk})
            chunk, size = [], 0
        chunk.append(entry)
        size += entry_size
    if chunk:
        out.append({"batch": chunk})
    return out


class VirtualDevice:
    """A model plus its connection: it goes offline now and then, buffers, and forwards after a reconnect.

    Starts offline: the first `link_up` sends what happened before the connection was made.
    """

    def __init__(self, model: InstrumentModel, *, seed: int | str = 0, outage_rate_per_day: float = 2.0,
                 outage_s: tuple[float, float] = (120, 1800), max_buffer: int = 100_000):
        self.model = model
        self.rng = random.Random(f"{seed}:{model.device_id}:network")  # noqa: S311 -- simulation
        self.outage_rate_per_day = outage_rate_per_day
        self.outage_s = outage_s
        self.max_buffer = max_buffer
        self.online = False
        self.buffered_dropped = 0  # samples a full buffer had to give up (a real device's storage is finite)
        self.outages: list[list[int | None]] = []  # [went offline, came back (None while away)], simulated ms
        self._status_buffer: list[Message] = []  # status and events, in order
        self._metrics_buffer: list[dict] = []
        self._back_at_ms: int | None = None  # end of a planned outage
        self._next_outage_ms = self._draw_next_outage(model.now_ms)
        self._forced_s: float | None = None

    @property
    def device_id(self) -> str:
        return self.model.device_id

    def _draw_next_outage(self, after_ms: int) -> int | None:
        if self.outage_rate_per_day <= 0:
            return None
        wait_days = self.rng.expovariate(self.outage_rate_per_day)
        if wait_days > 36_500:  # a vanishing rate draws "never" (even infinity): no outage in this run
            return None
        return after_ms + int(wait_days * 86_400_000)

    def force_outage(self, offline_s: float) -> None:
        """Drop at the next step and stay away `offline_s` simulated seconds (tests, demos)."""
        self._forced_s = offline_s
        self._next_outage_ms = self.model.now_ms

    def advance(self, until_ms: int) -> list[Action]:
        actions: list[Action] = []
        while True:
            boundary = self._back_at_ms if self._back_at_ms is not None else self._next_outage_ms
            if boundary is None or boundary > until_ms:
                break
            self._route(self.model.advance(boundary), actions)
            if self._back_at_ms is not None:
                self._back_at_ms = None
                self._next_outage_ms = self._draw_next_outage(boundary)
                actions.append(Reconnect())
            elif self.online:
                actions.append(Drop())
                self._went_offline(boundary)
                duration_s = self._forced_s if self._forced_s is not None else self.rng.uniform(*self.outage_s)
                self._forced_s = None
                self._back_at_ms = boundary + int(duration_s * 1000)
            else:  # already away (link lost): skip this outage
                self._next_outage_ms = self._draw_next_outage(boundary)
        self._route(self.model.advance(until_ms), actions)
        return actions

    def link_down(self, t: int) -> None:
        """The connection broke without being planned: buffer from now on."""
        if self.online:
            self._went_offline(t)

    def link_up(self, t: int) -> list[Publish]:
        """Connected (again): replay status and events, forward the buffered samples, restore the status."""
        self.online = True
        out = []
        if self.outages and self.outages[-1][1] is None:
            went = self.outages[-1][0]
            self.outages[-1][1] = t
            # The broker's will carries no timestamp (the ingest uses its receipt time); this one says
            # when the link really went, which matters when simulated time runs ahead of the clock.
            out.append(Publish("status", {"ts": rfc3339(went), "state": "offline", "detail": "connection lost"}))
        out += [Publish(channel, payload) for channel, payload in self._status_buffer]
        restored = any(channel == "status" for channel, _ in self._status_buffer)
        entries, self._status_buffer, self._metrics_buffer = self._metrics_buffer, [], []
        if len(entries) == 1:
            out.append(Publish("metrics", entries[0]))
        elif entries:
            out += [Publish("metrics", payload) for payload in batches(entries)]
        if not restored:  # the broker holds the last will now; say what the device is really doing
            channel, payload = self.model.current_status(t)
            out.append(Publish(channel, payload))
        return out

    def _went_offline(self, t: int) -> None:
        self.online = False
        self.outages.append([t, None])

    def _route(self, messages: list[Message], actions: list[Action]) -> None:
        if self.online:
            actions += [Publish(channel, payload) for channel, payload in messages]
            return
        for channel, payload in messages:
            if channel == "metrics":
                self._metrics_buffer.append(payload)
            elif channel == "status" and self._same_status(payload):
                continue  # heartbeats are pointless once stored; keep changes only
            else:
                self._status_buffer.append((channel, payload))
        if len(self._metrics_buffer) > self.max_buffer:
            excess = len(self._metrics_buffer) - self.max_buffer
            del self._metrics_buffer[:excess]
            self.buffered_dropped += excess

    def _same_status(self, payload: dict) -> bool:
        for channel, earlier in reversed(self._status_buffer):
            if channel == "status":
                return (earlier["state"], earlier.get("detail")) == (payload["state"], payload.get("detail"))
        return False


# --- MQTT -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    kind: str = "generic"
    password: str | None = None


SPEC_RE = re.compile(r"^(?P<id>[^:]+):(?P<kind>[^:]+)(?::(?P<password>.*))?$")


def parse_device_spec(text: str) -> DeviceSpec:
    """`ID:TYPE[:PASSWORD]` as given on the command line."""
    match = SPEC_RE.match(text)
    if not match:
        raise ValueError(f"bad device {text!r}: expected ID:TYPE[:PASSWORD]")
    spec = DeviceSpec(match["id"], match["kind"].lower(), match["password"] or None)
    if not DEVICE_ID_RE.fullmatch(spec.device_id):
        raise ValueError(f"bad device id {spec.device_id!r}: [A-Za-z0-9_-]{{1,64}}")
    if spec.kind not in MODELS:
        raise ValueError(f"unknown device type {spec.kind!r} (one of {', '.join(MODELS)})")
    return spec


KIND_KEYWORDS = (
    ("sem", re.compile(r"\bsem\b|electron microscop|electron probe|电镜|电子显微镜|电子探针", re.I)),
    ("hplc", re.compile(r"hplc|uhplc|liquid chromatograph|液相色谱", re.I)),
    ("fermenter", re.compile(r"ferment|bioreactor|发酵|生物反应器", re.I)),
)


def kind_for(*texts: str) -> str:
    """The behaviour model for a registered device, guessed from its resource's names and description."""
    text = " ".join(t for t in texts if t)
    for kind, pattern in KIND_KEYWORDS:
        if pattern.search(text):
            return kind
    return "generic"


def specs_from_registry(session: Session, passwords: Mapping[str, str] | None = None) -> list[DeviceSpec]:
    """Enabled devices of the registry; passwords are not stored there (only hashes), so they come separately."""
    from sqlalchemy import select

    from devices.models import Device

    passwords = passwords or {}
    devices = session.scalars(select(Device).where(Device.enabled.is_(True)).order_by(Device.device_id))
    return [DeviceSpec(d.device_id, kind_for(d.resource.name_en, d.resource.name_zh, d.resource.model,
                                             d.description), passwords.get(d.device_id))
            for d in devices]


def parse_password_file(text: str) -> dict[str, str]:
    """`device_id:password` lines; blank lines and # comments are skipped."""
    passwords = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        device_id, sep, password = line.partition(":")
        if not sep or not DEVICE_ID_RE.fullmatch(device_id):
            raise ValueError(f"password file line {number}: expected device_id:password")
        passwords[device_id] = password
    return passwords


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def parse_mqtt_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), tls)


def check_broker(url: str, timeout_s: float = 3.0) -> None:
    """Fail early, in one line, when nothing listens at the broker's address (OSError)."""
    broker = parse_mqtt_url(url)
    with socket.create_connection((broker.host, broker.port), timeout=timeout_s):
        pass


def numbered_specs(count: int, prefix: str = "sim") -> list[DeviceSpec]:
    """`count` anonymous devices, the kinds taken in turn: sim-sem-001, sim-hplc-002, …"""
    kinds = list(MODELS)
    return [DeviceSpec(f"{prefix}-{kinds[i % len(kinds)]}-{i + 1:03d}", kinds[i % len(kinds)]) for i in range(count)]


class _Link:
    """One device's paho client. Only the simulator's thread touches it (callbacks run inside loop())."""

    RETRY_S = 2.0

    def __init__(self, device: VirtualDevice, spec: DeviceSpec, broker: BrokerAddress, prefix: str,
                 protocol: str):
        self.device = device
        self.broker = broker
        self.prefix = prefix.rstrip("/")
        self.v5 = v5 = protocol == "5"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=spec.device_id,
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        self.client.username_pw_set(spec.device_id, spec.password)
        self.client.will_set(self.topic("status"), b'{"state":"offline"}', qos=1, retain=True)
        self.client.max_inflight_messages_set(200)
        if broker.tls:
            self.client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.state = "down"  # down → connecting → up
        self.last_sent = None  # paho's MQTTMessageInfo of the newest publish
        self.wanted = True  # False during a planned outage
        self.retry_at = 0.0
        self.just_up = False
        self.lost = False
        self.error = ""

    def topic(self, channel: str) -> str:
        return f"{self.prefix}/{self.device.device_id}/{channel}"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.error = f"refused: {reason_code}"
            return  # the broker closes the connection; _on_disconnect follows
        self.state, self.just_up, self.error = "up", True, ""

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.state == "up" and self.wanted:
            self.lost = True
        self.state = "down"
        self.retry_at = time.monotonic() + self.RETRY_S

    def connect(self) -> None:
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        except OSError as exc:
            self.error = f"cannot connect to {self.broker.host}:{self.broker.port}: {exc}"
            self.retry_at = time.monotonic() + self.RETRY_S
            return
        self.state = "connecting"

    def drop(self) -> None:
        """Leave so that the broker publishes the last will, like a device losing power or network.

        MQTT 5 has a reason code for exactly this (0x04, "disconnect with will message"); Mosquitto then
        logs a plain disconnect. MQTT 3.1.1 has none, so the TCP connection is closed without DISCONNECT.
        """
        self.wanted = False
        if self.state != "down":
            if self.v5:
                # Read the broker's last acknowledgements first: closing a socket with unread data sends a
                # TCP reset, and the broker would lose the DISCONNECT (Mosquitto logs "out of memory").
                self.wait_published(1.0)
                self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
                self.finish_disconnect()
            elif (sock := self.client.socket()) is not None:
                with contextlib.suppress(OSError):  # already broken: the broker has noticed too
                    sock.shutdown(socket.SHUT_RDWR)
                self.client.loop(timeout=0)  # paho sees EOF, closes its socket, calls on_disconnect
        self.state = "down"

    def finish_disconnect(self, timeout_s: float = 1.0) -> None:
        """Let paho write what is queued and the DISCONNECT: it closes the socket after it.

        Without this, a big batch still being written would be cut off by the next connect(), and the
        broker would see a truncated packet instead of a DISCONNECT.
        """
        deadline = time.monotonic() + timeout_s
        while self.client.socket() is not None and time.monotonic() < deadline:
            self.client.loop(timeout=0.01)

    def wait_published(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (self.last_sent is not None and not self.last_sent.is_published() and self.state == "up"
               and time.monotonic() < deadline):
            self.client.loop(timeout=0.01)

    def publish(self, action: Publish) -> None:
        body = encode(action.payload)
        self.last_sent = self.client.publish(self.topic(action.channel), body, qos=1,
                                             retain=action.channel == "status")

    def pump(self) -> None:
        if self.state != "down":
            self.client.loop(timeout=0)
        if self.wanted and self.state == "down" and time.monotonic() >= self.retry_at:
            self.connect()


class Simulator:
    """N virtual devices on one broker, one paho client each, stepped by a single thread.

    Simulated time runs `time_scale` times faster than real time from `start_ms` (default: now), so at
    the default 1.0 the timestamps are the wall clock. Use `run(duration_s)` in the calling thread, or
    `start()` / `stop()` to run it in a background thread.
    """

    def __init__(self, mqtt_url: str, devices: Iterable[DeviceSpec], *, prefix: str = DEFAULT_PREFIX,
                 time_scale: float = 1.0, seed: int | str = 0, fault_rate: float = 0.05,
                 outage_rate_per_day: float = 2.0, outage_s: tuple[float, float] = (120, 1800),
                 protocol: str = "5", start_ms: int | None = None, tick_s: float = 0.1,
                 sample_interval_s: float | None = None):
        if time_scale <= 0 or not math.isfinite(time_scale):
            raise ValueError("time scale must be a positive number")
        if protocol not in ("5", "3.1.1"):
            raise ValueError("protocol must be '5' or '3.1.1'")
        broker = parse_mqtt_url(mqtt_url)
        specs = list(devices)
        if not specs:
            raise ValueError("no devices to simulate")
        ids = [s.device_id for s in specs]
        if len(set(ids)) != len(ids):
            raise ValueError("device ids must be unique")
        self.time_scale = time_scale
        self.start_ms = now_ms() if start_ms is None else start_ms
        self.tick_s = tick_s
        self.sent: Counter[str] = Counter()  # messages per channel, plus "samples" inside batches
        self.links = []
        for spec in specs:
            model = make_model(spec.kind, spec.device_id, seed=seed, start_ms=self.start_ms, fault_rate=fault_rate,
                               sample_interval_s=sample_interval_s)
            device = VirtualDevice(model, seed=seed, outage_rate_per_day=outage_rate_per_day, outage_s=outage_s)
            self.links.append(_Link(device, spec, broker, prefix, protocol))
        self._by_id = {link.device.device_id: link for link in self.links}
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0: float | None = None

    @property
    def devices(self) -> dict[str, VirtualDevice]:
        return {device_id: link.device for device_id, link in self._by_id.items()}

    def sim_now_ms(self) -> int:
        if self._t0 is None:
            return self.start_ms
        return self.start_ms + int((time.monotonic() - self._t0) * self.time_scale * 1000)

    def force_outage(self, device_id: str, offline_s: float) -> None:
        """Thread-safe: drop `device_id` at the next tick for `offline_s` simulated seconds."""
        device = self._by_id[device_id].device
        self._commands.put(lambda: device.force_outage(offline_s))

    def start(self, duration_s: float | None = None) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, args=(duration_s,), name="labshare-simulator", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run(self, duration_s: float | None = None) -> None:
        """Step every device until `duration_s` real seconds have passed or `stop()` is called."""
        self._t0 = time.monotonic()
        deadline = None if duration_s is None else self._t0 + duration_s
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                self._tick()
                self._stop.wait(self.tick_s)
        finally:
            self._shut_down()

    def _tick(self) -> None:
        while not self._commands.empty():
            self._commands.get_nowait()()
        now = self.sim_now_ms()
        for link in self.links:
            for action in link.device.advance(now):
                self._execute(link, action)
            link.pump()
            if link.lost:
                link.lost = False
                link.device.link_down(now)
            if link.just_up:
                link.just_up = False
                for action in link.device.link_up(now):
                    self._execute(link, action)

    def _execute(self, link: _Link, action: Action) -> None:
        if isinstance(action, Publish):
            link.publish(action)
            self.sent[action.channel] += 1
            if "batch" in action.payload:
                self.sent["batches"] += 1
                self.sent["batched samples"] += len(action.payload["batch"])
        elif isinstance(action, Drop):
            link.drop()
            self.sent["drops"] += 1
        else:
            link.wanted, link.retry_at = True, 0.0

    def _shut_down(self) -> None:
        """A clean stop: say "offline" (retained) ourselves, wait briefly for the broker, disconnect."""
        pending = []
        for link in self.links:
            if link.state == "up":
                payload = {"ts": rfc3339(self.sim_now_ms()), "state": "offline", "detail": "simulator stopped"}
                body = encode(payload)
                pending.append((link, link.client.publish(link.topic("status"), body, qos=1, retain=True)))
        deadline = time.monotonic() + 3.0
        for link, info in pending:
            while not info.is_published() and link.state == "up" and time.monotonic() < deadline:
                link.client.loop(timeout=0.05)
        for link in self.links:
            if link.state != "down":
                link.wanted = False
                link.client.disconnect()
                link.finish_disconnect()
                link.state = "down"

    def online_count(self) -> int:
        return sum(link.state == "up" for link in self.links)

    def errors(self) -> list[str]:
        return [f"{link.device.device_id}: {link.error}" for link in self.links if link.error]

    def summary(self) -> str:
        counts = ", ".join(f"{name} {self.sent[name]}" for name in ("status", "metrics", "events"))
        extra = ""
        if self.sent["batches"]:
            extra = f" ({self.sent['batches']} batches, {self.sent['batched samples']} samples)"
        moment = datetime.fromtimestamp(self.sim_now_ms() // 1000, CHINA)
        return (f"sent {counts}{extra}; online {self.online_count()}/{len(self.links)}; "
                f"simulated time {moment:%Y-%m-%d %H:%M}")
