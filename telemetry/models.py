"""The embedded time-series table: the demo's time-series store (`sql:`), one row per point and field."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Double, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base


class TelemetryPoint(Base):
    """One field of one point. The primary key makes a rewrite of the same point idempotent."""

    __tablename__ = "telemetry_point"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts_ns: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # epoch nanoseconds
    value: Mapped[float | None] = mapped_column(Double)  # numbers (float64, exact round-trip)
    flag: Mapped[bool | None] = mapped_column(Boolean)  # booleans

    __table_args__ = (
        CheckConstraint("(value IS NULL) <> (flag IS NULL)", name="value_or_flag"),
        # charts read one device over a time range, all fields at once
        Index("ix_telemetry_point_device_time", "device_id", "ts_ns"),
    )
