"""Blackouts (no bookings inside), qualifications (who may operate alone) and calendar feed tokens."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from booking.models.resource import Resource
from core.accounts.models import User
from core.db import Base, str_enum
from core.timeutil import utcnow


class BlackoutKind(enum.StrEnum):
    MAINTENANCE = "maintenance"
    CALIBRATION = "calibration"
    HOLIDAY = "holiday"


class Blackout(Base):
    __tablename__ = "blackout"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    kind: Mapped[BlackoutKind] = mapped_column(str_enum(BlackoutKind, "blackout_kind"))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    resource: Mapped[Resource] = relationship(lazy="joined")

    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window_positive"),
        Index("ix_blackout_resource_window", "resource_id", "starts_at", "ends_at"),
    )


class Qualification(Base):
    """`user` may operate `resource` alone, until `expires_at` (if set) or until revoked."""

    __tablename__ = "qualification"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id", ondelete="CASCADE"), index=True)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")
    resource: Mapped[Resource] = relationship(lazy="joined")

    __table_args__ = (UniqueConstraint("user_id", "resource_id"),)

    def valid_at(self, moment: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > moment)


class CalendarFeed(Base):
    """A secret iCal URL: a user's reservations or a resource's schedule. Only a digest is stored."""

    __tablename__ = "calendar_feed"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), unique=True)
    resource_id: Mapped[int | None] = mapped_column(ForeignKey("resource.id", ondelete="CASCADE"), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("(user_id IS NULL) <> (resource_id IS NULL)", name="one_owner"),)
