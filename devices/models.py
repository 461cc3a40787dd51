"""The device registry: equipment attached to a resource, with its own broker credential."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from booking.models import Resource
from core.db import Base, str_enum
from core.timeutil import utcnow


class UsageSource(enum.StrEnum):
    EVENTS = "events"  # run_started … run_finished
    STATUS = "status"  # while the state is running
    POWER = "power"  # while power_w stays at or above the threshold, debounced


class LiveState(enum.StrEnum):
    OFFLINE = "offline"
    IDLE = "idle"
    RUNNING = "running"
    FAULT = "fault"
    MAINTENANCE = "maintenance"


class StateCause(enum.StrEnum):
    STATUS = "status"  # a status message (an offline one is usually the device's last will)
    HEARTBEAT = "heartbeat"  # nothing heard for the heartbeat timeout
    ALARM = "alarm"  # an alarm event: fault
    ALARM_CLEARED = "alarm_cleared"  # back to idle until the device reports its state


class Device(Base):
    __tablename__ = "device"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), unique=True)  # the MQTT topic level and user name
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    usage_source: Mapped[UsageSource] = mapped_column(str_enum(UsageSource, "usage_source"))
    power_threshold_w: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    debounce_s: Mapped[int] = mapped_column(default=60)
    heartbeat_timeout_s: Mapped[int] = mapped_column(default=300)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Mosquitto's own password hash ($7$, PBKDF2-SHA512): the secret itself is shown once and never stored
    credential_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Live state: the newest observation by its own timestamp wins (so arrival order does not matter).
    state: Mapped[LiveState] = mapped_column(
        str_enum(LiveState, "live_state"), default=LiveState.OFFLINE, server_default=LiveState.OFFLINE.value)
    state_ts_ns: Mapped[int | None] = mapped_column(BigInteger)
    state_cause: Mapped[StateCause | None] = mapped_column(str_enum(StateCause, "state_cause"))
    state_detail: Mapped[str] = mapped_column(String(500), default="", server_default="")
    last_seen_ns: Mapped[int | None] = mapped_column(BigInteger)  # the newest timestamp of any of its messages
    # The usage machine right after its newest observation, so in-order batches resume without reading back
    usage_tail: Mapped[dict | None] = mapped_column(JSON)

    resource: Mapped[Resource] = relationship(lazy="joined")

    __table_args__ = (
        CheckConstraint("usage_source <> 'power' OR power_threshold_w IS NOT NULL", name="power_needs_threshold"),
        CheckConstraint("power_threshold_w IS NULL OR power_threshold_w >= 0", name="threshold_not_negative"),
        CheckConstraint("debounce_s >= 0 AND debounce_s <= 3600", name="debounce_range"),
        CheckConstraint("heartbeat_timeout_s >= 10 AND heartbeat_timeout_s <= 86400", name="heartbeat_range"),
    )


class StateObservation(Base):
    """Everything that set a device's state, by the device's timestamp; transitions are read from it."""

    __tablename__ = "device_state_observation"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    ts_ns: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[LiveState] = mapped_column(str_enum(LiveState, "observed_state"))
    cause: Mapped[StateCause] = mapped_column(str_enum(StateCause, "observation_cause"))
    detail: Mapped[str] = mapped_column(String(500), default="")

    __table_args__ = (
        # a redelivered message finds its row already there
        UniqueConstraint("device_pk", "ts_ns", "cause", name="uq_device_state_observation_once"),
    )


class DeviceEvent(Base):
    __tablename__ = "device_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))
    ts_ns: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(64), default="")
    operator: Mapped[str] = mapped_column(String(64), default="")
    samples: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(String(500), default="")

    __table_args__ = (
        UniqueConstraint("device_pk", "event_id", name="uq_device_event_once"),  # ids make redelivery harmless
        Index("ix_device_event_device_time", "device_pk", "ts_ns"),
    )


class DeviceSample(Base):
    """One row per metrics sample: when the device spoke (heartbeat gaps, "closed at the last message")
    and, for power-measured devices, what it drew. The values themselves live in the time-series store."""

    __tablename__ = "device_sample"

    device_pk: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), primary_key=True)
    ts_ns: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    power_w: Mapped[float | None] = mapped_column(Double)


class UsageSession(Base):
    """A measured interval of real use: the evidence billing and voucher claims rest on."""

    __tablename__ = "usage_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_pk: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    start_ns: Mapped[int] = mapped_column(BigInteger)
    end_ns: Mapped[int | None] = mapped_column(BigInteger)  # None while the session is open
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    run_id: Mapped[str] = mapped_column(String(64), default="")
    operator: Mapped[str] = mapped_column(String(64), default="")
    samples: Mapped[int | None] = mapped_column(Integer)
    # the timestamps of the observations that decided the start and the end (a debounced edge is dated
    # before it is decided); re-deriving after a late message needs them (devices.usage.phase_after)
    start_decided_ns: Mapped[int] = mapped_column(BigInteger)
    end_decided_ns: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    device: Mapped[Device] = relationship(lazy="joined")

    __table_args__ = (
        UniqueConstraint("device_pk", "start_ns", name="uq_usage_session_start"),
        CheckConstraint("end_ns IS NULL OR end_ns > start_ns", name="positive_length"),
        Index("ix_usage_session_started_at", "started_at"),
    )


class DeadLetter(Base):
    """A message the ingest rejected, kept so integrators can see what their equipment sends wrong."""

    __tablename__ = "dead_letter"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(String(32), index=True)
    topic: Mapped[str] = mapped_column(String(300))
    device_id: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(String(300), default="")
    payload_head: Mapped[str] = mapped_column(String(800), default="")  # the first 200 bytes, made printable
    payload_size: Mapped[int] = mapped_column(Integer)
