"""The device registry: equipment attached to a resource, with its own broker credential."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from booking.models import Resource
from core.db import Base, str_enum
from core.timeutil import utcnow


class UsageSource(enum.StrEnum):
    EVENTS = "events"  # run_started … run_finished
    STATUS = "status"  # while the state is running
    POWER = "power"  # while power_w stays at or above the threshold, debounced


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

    resource: Mapped[Resource] = relationship(lazy="joined")

    __table_args__ = (
        CheckConstraint("usage_source <> 'power' OR power_threshold_w IS NOT NULL", name="power_needs_threshold"),
        CheckConstraint("power_threshold_w IS NULL OR power_threshold_w >= 0", name="threshold_not_negative"),
        CheckConstraint("debounce_s >= 0 AND debounce_s <= 3600", name="debounce_range"),
        CheckConstraint("heartbeat_timeout_s >= 10 AND heartbeat_timeout_s <= 86400", name="heartbeat_range"),
    )
