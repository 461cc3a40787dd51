"""Reservations, repeating series, technician-run sample requests and the waitlist."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Text, func, text
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from booking.models.resource import Resource
from core.accounts.models import Organisation, User
from core.db import Base, str_enum
from core.timeutil import utcnow


class ReservationState(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    NO_SHOW = "no_show"


LIVE_STATES = (ReservationState.PENDING, ReservationState.CONFIRMED)  # they hold their slot

# pending → confirmed | rejected | cancelled; confirmed → cancelled | completed | no_show
TRANSITIONS: dict[ReservationState, frozenset[ReservationState]] = {
    ReservationState.PENDING: frozenset({ReservationState.CONFIRMED, ReservationState.REJECTED,
                                         ReservationState.CANCELLED}),
    ReservationState.CONFIRMED: frozenset({ReservationState.CANCELLED, ReservationState.COMPLETED,
                                           ReservationState.NO_SHOW}),
}


class ReservationKind(enum.StrEnum):
    SELF_SERVICE = "self_service"  # the user operates the resource
    TECHNICIAN = "technician"  # a technician runs the user's samples (送样)


class RepeatFrequency(enum.StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"


class ReservationSeries(Base):
    """Reservations created together by a repeat rule (daily or weekly)."""

    __tablename__ = "reservation_series"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    frequency: Mapped[RepeatFrequency] = mapped_column(str_enum(RepeatFrequency, "repeat_frequency"))
    occurrences: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Reservation(Base):
    __tablename__ = "reservation"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    billed_org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    state: Mapped[ReservationState] = mapped_column(str_enum(ReservationState, "reservation_state"))
    kind: Mapped[ReservationKind] = mapped_column(str_enum(ReservationKind, "reservation_kind"),
                                                  default=ReservationKind.SELF_SERVICE)
    purpose: Mapped[str] = mapped_column(Text, default="")
    sample_count: Mapped[int | None]
    series_id: Mapped[int | None] = mapped_column(ForeignKey("reservation_series.id"), index=True)
    late_cancellation: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str] = mapped_column(Text, default="")
    cancelled_at: Mapped[datetime | None]
    reminder_sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    resource: Mapped[Resource] = relationship(lazy="joined")
    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")
    billed_org: Mapped[Organisation] = relationship(foreign_keys=[billed_org_id])
    series: Mapped[ReservationSeries | None] = relationship()

    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window_positive"),
        CheckConstraint("sample_count IS NULL OR sample_count > 0", name="sample_count_positive"),
        Index("ix_reservation_resource_window", "resource_id", "starts_at", "ends_at"),
        Index("ix_reservation_user_window", "user_id", "starts_at"),
        # The guarantee against double booking on PostgreSQL: no two live reservations of one resource
        # overlap, whatever the application does and however many requests race. ([) ranges, so
        # back-to-back bookings are fine.) SQLite serialises writers instead (see booking.locking).
        # Not declared here: ix_reservation_live_window, a GiST index on tstzrange(starts_at, ends_at, '[)') of the
        # live reservations (resource_id, starts_at, ends_at included) that time-first search uses on PostgreSQL
        # (migration 0009; booking.catalog). Alembic cannot compare expression indexes on SQLite, so it is one of
        # migrations.metadata.DATABASE_ONLY_OBJECTS.
        ExcludeConstraint(
            ("resource_id", "="),
            (func.tstzrange(text("starts_at"), text("ends_at"), text("'[)'")), "&&"),
            name="reservation_no_overlap",
            using="gist",
            where=text("state IN ('pending', 'confirmed')"),
        ).ddl_if(dialect="postgresql"),
    )

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def duration_min(self) -> int:
        return int((self.ends_at - self.starts_at).total_seconds() // 60)


class SampleRequestState(enum.StrEnum):
    REQUESTED = "requested"
    SCHEDULED = "scheduled"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class SampleRequest(Base):
    """A request for a technician to run the user's samples (送样); scheduled into a reservation later."""

    __tablename__ = "sample_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    billed_org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"))
    sample_count: Mapped[int]
    description: Mapped[str] = mapped_column(Text)
    hazards: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[SampleRequestState] = mapped_column(str_enum(SampleRequestState, "sample_request_state"),
                                                      default=SampleRequestState.REQUESTED)
    reservation_id: Mapped[int | None] = mapped_column(ForeignKey("reservation.id"))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    resource: Mapped[Resource] = relationship(lazy="joined")
    user: Mapped[User] = relationship(lazy="joined")
    reservation: Mapped[Reservation | None] = relationship()

    __table_args__ = (CheckConstraint("sample_count > 0", name="sample_count_positive"),)


class WaitlistEntry(Base):
    """A user asking to be told when a window on a busy resource frees up."""

    __tablename__ = "waitlist_entry"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    notified_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]

    resource: Mapped[Resource] = relationship(lazy="joined")
    user: Mapped[User] = relationship(lazy="joined")

    __table_args__ = (CheckConstraint("ends_at > starts_at", name="window_positive"),)
