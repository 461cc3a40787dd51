"""The ingest worker (design.md §2, §5): MQTT in, relational rows and time-series points out.

One paho network thread receives; one processing thread takes messages off a queue in batches (by size
or by time), parses them against the contract, applies them to the relational store in one transaction,
writes their points to the time-series store (or the disk spool while it is down) and only then
acknowledges them to the broker. So a message is acknowledged only once its effects are durable; a crash
anywhere before the acknowledgement makes the broker deliver it again, which changes nothing.

- QoS 1, persistent session (MQTT 5: clean start off + session expiry; 3.1.1: clean session off), and a
  receive window (MQTT 5 Receive Maximum) the size of a batch, so the broker keeps the backlog.
- Two stages: the processing thread parses and commits a batch, the storing thread writes its points to the
  time-series store (or spool) and then acknowledges it, so a batch is acknowledged only after both, and
  batches reach the time-series store in the order they were committed. The receive window stays one batch:
  two batches measured no faster (bench/ingest.py), as the worker is bound by its CPU time, not by waiting.
- Late items: a device's items older than its in-memory window (devices.ingest.HISTORY) are not re-derived
  batch by batch; their devices are re-derived once (`settle_sessions`) when a batch is not full, after
  `settle_wait_s` while a backlog is caught up, at the heartbeat sweep for those another worker left, and when
  stopping. Re-derived every batch, a worker that fell behind another on a shared subscription paid for it
  with every batch, fell further behind and stalled: two workers ran at a fifth of one.
- A shared subscription (`$share/labshare-ingest/...`) lets several workers split the load.
- Acknowledgements belong to one connection: after a reconnect the broker redelivers what was not
  acknowledged, and acknowledgements for the old connection's packet ids are dropped (acknowledging a
  reused id would acknowledge a different message).
- The database or the spool refusing: nothing is acknowledged and the batch is retried with backoff; the
  receive window then makes the broker hold everything else.
- SIGTERM (`stop()`): finish the batch in hand and what is queued locally, acknowledge, disconnect with the
  session kept.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from core.db import begin_write
from devices.ingest import (
    EventIn,
    Inbound,
    SampleIn,
    StatusIn,
    apply_batch,
    deferred_devices,
    settle_sessions,
    sweep_heartbeats,
)
from telemetry import contract
from telemetry.metrics import IngestMetrics
from telemetry.mqtt_client import IngestClient
from telemetry.points import Point, metric_point
from telemetry.spool import DiskSpool, SpoolFull
from telemetry.tsdb import StoreError, TimeSeriesStore, redacted_url

log = logging.getLogger(__name__)

SHARE_GROUP = "labshare-ingest"


@dataclass(frozen=True)
class IngestConfig:
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "labshare-ingest-1"
    prefix: str = contract.DEFAULT_PREFIX
    protocol: int = 5  # 5 or 311
    shared: bool = True  # $share/labshare-ingest/…; the demo's amqtt has no shared subscriptions
    batch_size: int = 500
    batch_wait_s: float = 0.1  # the longest a message waits for its batch to fill
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    heartbeat_sweep_s: float = 5.0
    # usage sessions of devices whose late items were deferred (devices.ingest.apply_batch) are re-derived as soon
    # as a batch is not full (the ingest keeps up), and while catching up a backlog at the latest this long after
    settle_wait_s: float = 30.0
    retry_max_s: float = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.mqtt_url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"expected mqtt[s]://[user:password@]host[:port], got {self.mqtt_url!r}")
        if self.protocol not in (5, 311):
            raise ValueError("protocol must be 5 (MQTT 5) or 311 (MQTT 3.1.1)")
        if not 1 <= self.batch_size <= 65535:
            raise ValueError("batch size must be between 1 and 65535 (MQTT 5 Receive Maximum)")

    @property
    def receive_maximum(self) -> int:
        """One batch (see the module docstring for why not two)."""
        return self.batch_size

    @property
    def topic_filter(self) -> str:
        own = f"{self.prefix.rstrip('/')}/#"
        return f"$share/{SHARE_GROUP}/{own}" if self.shared else own


@dataclass(slots=True)
class Received:
    topic: str | None  # None when the topic is not UTF-8
    raw_topic: bytes
    payload: bytes
    qos: int
    mid: int
    retain: bool
    received_ns: int
    generation: int  # which connection delivered it (acks belong to that connection)
    # parsed on receipt, in the network thread, while the processing thread waits for the database; used by
    # a batch's first attempt only (apply_batch marks the Inbound, so a retry parses afresh)
    parsed: tuple[Inbound, list[Point]] | None = None


@dataclass(slots=True)
class _Pending:
    messages: list[Received]
    points: list[Point] | None = None  # set once the relational part is committed
    attempts: int = 0  # of the stage that has it
    started: float = field(default_factory=time.monotonic)


class IngestWorker:
    """`start()` connects and processes in background threads; `stop()` drains and disconnects."""

    def __init__(self, config: IngestConfig, engine: Engine, store: TimeSeriesStore, spool: DiskSpool,
                 metrics: IngestMetrics | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        self.config, self.engine, self.store, self.spool = config, engine, store, spool
        self.metrics = metrics or IngestMetrics()
        self.clock = clock
        # SimpleQueue: put() is C code, taken for every message in the network thread
        self._queue: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stop_ns = 0
        self._connected = threading.Event()
        self._generation = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None  # processing: parse, relational store
        self._writer: threading.Thread | None = None  # storing: time-series store or spool, then acknowledge
        self._committed: queue.Queue[_Pending] = queue.Queue(maxsize=1)
        self._processing_done = threading.Event()
        self._last_sweep = 0.0
        self._deferred: set[int] = set()  # device rows whose sessions wait for settle_sessions
        self._deferred_since = 0.0
        self._settle_not_before = 0.0  # after a failure (the database down), not at every turn of the loop
        self._last_batch_full = False
        self.client = self._make_client()

    # --- MQTT -----------------------------------------------------------------------------------------

    def _make_client(self) -> IngestClient:
        config = self.config
        if config.protocol == 5:
            client = IngestClient(CallbackAPIVersion.VERSION2, client_id=config.client_id,
                                  protocol=mqtt.MQTTv5, manual_ack=True)
        else:
            client = IngestClient(CallbackAPIVersion.VERSION2, client_id=config.client_id,
                                  clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        url = urlsplit(config.mqtt_url)
        if url.username:
            client.username_pw_set(unquote(url.username), unquote(url.password or ""))
        if url.scheme == "mqtts":
            client.tls_set()  # the system's CA certificates
        client.reconnect_delay_set(min_delay=1, max_delay=int(config.retry_max_s))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, _userdata, flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        with self._lock:
            self._generation += 1
        self._connected.set()
        self.metrics.connected.set(1)
        # FIX (tests/telemetry/test_ingest_faults.py): subscribe on every connect, not only for a new session.
        # Mosquitto 2.0.11 restores a persistent session and its queued messages after a restart but NOT its
        # shared subscription ($share/…): with "session present" the worker never subscribed again and
        # received nothing published after the broker restart. Subscribing again to the same filter is
        # idempotent; with MQTT 5, retain handling 1 keeps the broker from replaying retained messages to a
        # subscription that already exists.
        if self.config.protocol == 5:
            client.subscribe(self.config.topic_filter, options=SubscribeOptions(qos=1, retainHandling=1))
        else:
            client.subscribe(self.config.topic_filter, qos=1)
        log.info("connected to %s (session present: %s)", redacted_url(self.config.mqtt_url), flags.session_present)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self._connected.clear()
        self.metrics.connected.set(0)
        with self._lock:
            self._generation += 1  # what was delivered before can no longer be acknowledged
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        raw_topic = message._topic  # bytes; .topic raises on invalid UTF-8
        try:
            topic = raw_topic.decode("utf-8")
        except UnicodeDecodeError:
            topic = None
        self.metrics.messages_in.inc()
        received = Received(topic, raw_topic, message.payload, message.qos, message.mid, message.retain,
                            time.time_ns(), self._generation)
        try:
            received.parsed = self._inbound(received)
        except Exception:  # nothing may escape into the network thread: the processing thread parses it again
            received.parsed = None
        self._queue.put(received)

    def _connect_properties(self) -> Properties | None:
        if self.config.protocol != 5:
            return None
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.config.session_expiry_s
        properties.ReceiveMaximum = self.config.receive_maximum
        return properties

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        url = urlsplit(self.config.mqtt_url)
        kwargs = {"clean_start": False, "properties": self._connect_properties()} if self.config.protocol == 5 else {}
        default_port = 8883 if url.scheme == "mqtts" else 1883
        self.client.connect_async(url.hostname, url.port or default_port, keepalive=self.config.keepalive_s, **kwargs)
        self.client.loop_start()
        self._writer = threading.Thread(target=self._store_loop, name="labshare-ingest-store", daemon=True)
        self._writer.start()
        self._thread = threading.Thread(target=self._run, name="labshare-ingest", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand and the messages already received, acknowledge them, disconnect."""
        self._stop_ns = time.time_ns()
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in (self._thread, self._writer):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()

    def kill(self) -> None:
        """Stop without acknowledging anything further (tests: the process dying)."""
        self._stop.set()
        self._queue = queue.SimpleQueue()
        self.client.loop_stop()
        self.client._sock_close()

    # --- processing -----------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            pending: _Pending | None = None
            while True:
                if pending is None:
                    batch = self._take_batch()
                    # a full batch: a backlog is being caught up; not full, or none: the worker keeps up
                    self._last_batch_full = len(batch) >= self.config.batch_size
                    if batch:
                        pending = _Pending(batch)
                    elif self._stop.is_set():
                        self._settle()
                        return  # drained: the storing thread acknowledges what was handed over
                if pending is not None:
                    if self._commit(pending):
                        if not self._hand_over(pending):
                            return  # the storing thread gave up (stopping, stores down): the broker redelivers
                        pending = None
                    elif self._back_off(pending):
                        return  # stopping and the database stays down: the broker keeps the messages
                self._maybe_settle()
                self._maybe_sweep()
        finally:
            self._processing_done.set()

    def _hand_over(self, pending: _Pending) -> bool:
        pending.attempts = 0
        while True:
            try:
                self._committed.put(pending, timeout=0.2)  # waits while the storing thread is behind
                return True
            except queue.Full:
                if self._writer is None or not self._writer.is_alive():
                    return False

    def _store_loop(self) -> None:
        pending: _Pending | None = None
        while True:
            if pending is None:
                try:
                    pending = self._committed.get(timeout=0.2)
                except queue.Empty:
                    if self._processing_done.is_set() and self._committed.empty():
                        return  # nothing more can be handed over
                    self._replay_spool()
                    continue
            if self._store_and_ack(pending):
                pending = None
                self._replay_spool()
            elif self._back_off(pending):
                return  # stopping and the stores stay down: the broker keeps the messages

    def _back_off(self, pending: _Pending) -> bool:
        """Wait before retrying a refused batch; True when stopping and it is time to give up."""
        pending.attempts += 1
        delay = min(self.config.retry_max_s, 0.2 * 2 ** min(pending.attempts, 8))
        return self._stop.wait(delay) and pending.attempts > 3

    def _take_batch(self) -> list[Received]:
        config = self.config
        batch: list[Received] = []
        try:
            batch.append(self._queue.get(timeout=0.05 if self._stop.is_set() else 0.2))
        except queue.Empty:
            return batch
        deadline = time.monotonic() + config.batch_wait_s
        while len(batch) < config.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        if self._stop.is_set():
            # draining: only what arrived before stop(); later messages stay unacknowledged for redelivery
            batch = [m for m in batch if m.received_ns <= self._stop_ns]
            if not batch:
                return batch
        self.metrics.queue_depth.set(self._queue.qsize())
        self.metrics.lag.set(max(0.0, (time.time_ns() - batch[0].received_ns) / 1e9))
        return batch

    def _commit(self, pending: _Pending) -> bool:
        """True when the batch's relational part is committed; False to retry it later."""
        try:
            pending.points = self._apply(pending.messages, first_attempt=pending.attempts == 0)
            return True
        except (OperationalError, DBAPIError) as error:
            self.metrics.retries.labels("database").inc()
            log.warning("database unavailable, batch of %d kept for retry: %s", len(pending.messages),
                        str(error).splitlines()[0])
            return False

    def _store_and_ack(self, pending: _Pending) -> bool:
        """True when the batch's points are stored or spooled and it is acknowledged; False to retry it."""
        try:
            self._write_points(pending.points or [])
        except SpoolFull:
            self.metrics.retries.labels("spool_full").inc()
            log.warning("time-series store down and spool full: not acknowledging (the broker keeps the backlog)")
            return False
        self._ack(pending.messages)
        self.metrics.batch_seconds.observe(time.monotonic() - pending.started)
        return True

    def _apply(self, messages: Sequence[Received], first_attempt: bool = True) -> list[Point]:
        parsed = [m.parsed if first_attempt and m.parsed is not None else self._inbound(m) for m in messages]
        inbound = [message for message, _points in parsed]
        with Session(self.engine, expire_on_commit=False) as db:
            begin_write(db)
            result = apply_batch(db, inbound, self.clock(), defer_late=True)
            db.commit()
        self._defer(result.deferred)
        for reason, count in result.dead_letters.items():
            self.metrics.dead_letters.labels(reason).inc(count)
        return [point for message, points in parsed if message.accepted for point in points]

    def _inbound(self, message: Received) -> tuple[Inbound, list[Point]]:
        """The message for the relational store, and the points it becomes if its device is accepted."""
        inbound = Inbound(topic=message.topic if message.topic is not None else
                          message.raw_topic.decode("utf-8", "backslashreplace"),
                          payload=message.payload, received_ns=message.received_ns)
        if message.topic is None:
            inbound.reject_reason, inbound.reject_detail = "bad_topic", "topic is not UTF-8"
            return inbound, []
        try:
            inbound.device_id, channel = contract.split_topic(message.topic, self.config.prefix)
            parsed = contract.parse_payload(inbound.device_id, channel, message.payload, message.received_ns)
        except contract.Invalid as invalid:
            inbound.reject_reason, inbound.reject_detail = invalid.reason, invalid.detail
            return inbound, []
        if isinstance(parsed, contract.Status):
            inbound.status = StatusIn(parsed.ts_ns, parsed.state, parsed.detail)
            inbound.retained_without_ts = message.retain and parsed.ts_ns == message.received_ns
        elif isinstance(parsed, contract.Event):
            inbound.event = EventIn(parsed.event_id, parsed.ts_ns, parsed.type, parsed.run_id, parsed.operator,
                                    parsed.samples, parsed.detail)
        else:
            inbound.samples = tuple(SampleIn(s.ts_ns, _power(s.values)) for s in parsed.samples)
            return inbound, [metric_point(parsed.device_id, s.ts_ns, s.values) for s in parsed.samples]
        return inbound, []

    def _write_points(self, points: list[Point]) -> None:
        if not points:
            return
        if self.spool.pending_count == 0:
            try:
                self.store.write(points)
                self.metrics.points_written.inc(len(points))
                return
            except StoreError as error:
                # unavailable: keep them for replay; rejected for good: the spool quarantines them on replay
                self.metrics.retries.labels("tsdb").inc()
                log.warning("time-series store refused %d points (%s); spooling", len(points), error)
        self.spool.append(points)  # behind what is already spooled, so points reach the store in order
        self.metrics.spool_bytes.set(self.spool.depth_bytes)

    def _replay_spool(self) -> None:
        if self.spool.pending_count:
            self.spool.replay(self.store, max_batches=20)  # stops quietly while the store is still down
            self.metrics.spool_bytes.set(self.spool.depth_bytes)

    def _ack(self, messages: Sequence[Received]) -> None:
        with self._lock:
            generation = self._generation
        mids = [m.mid for m in messages if m.qos == 1 and m.generation == generation]
        self.client.ack_many(mids)
        self.metrics.acknowledged.inc(len(mids))

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.config.heartbeat_sweep_s:
            return
        self._last_sweep = now
        try:
            with Session(self.engine, expire_on_commit=False) as db:
                begin_write(db)
                sweep_heartbeats(db, self.clock())
                found = set(deferred_devices(db))  # also those another worker (or this one before a restart) left
                db.commit()
        except (OperationalError, DBAPIError) as error:
            log.warning("heartbeat sweep skipped: %s", str(error).splitlines()[0])
            return
        self._defer(found)

    def _defer(self, device_pks: set[int]) -> None:
        """Remember devices whose sessions wait for `_settle`; the wait is counted from the first of them."""
        if device_pks and not self._deferred:
            self._deferred_since = time.monotonic()
        self._deferred |= device_pks
        self.metrics.deferred_devices.set(len(self._deferred))

    def _maybe_settle(self) -> None:
        if not self._deferred or time.monotonic() < self._settle_not_before:
            return
        waited = time.monotonic() - self._deferred_since
        if self._last_batch_full and waited < self.config.settle_wait_s:
            return  # catching up a backlog: more late items are likely, re-derive them all at once later
        self._settle()

    def _settle(self) -> None:
        """Re-derive the sessions deferred so far (see devices.ingest.apply_batch)."""
        if not self._deferred:
            return
        started = time.monotonic()
        try:
            with Session(self.engine, expire_on_commit=False) as db:
                begin_write(db)
                settled = settle_sessions(db, self._deferred)
                db.commit()
        except (OperationalError, DBAPIError) as error:
            log.warning("re-deriving deferred usage sessions failed, kept for later: %s", str(error).splitlines()[0])
            self._settle_not_before = time.monotonic() + self.config.heartbeat_sweep_s
            return
        self.metrics.sessions_settled.inc(settled)
        log.debug("re-derived the deferred usage sessions of %d devices in %.2f s", settled,
                  time.monotonic() - started)
        self._deferred.clear()
        self.metrics.deferred_devices.set(0)


def _power(values) -> float | None:
    power = values.get("power_w")
    return float(power) if isinstance(power, int | float) and not isinstance(power, bool) else None
