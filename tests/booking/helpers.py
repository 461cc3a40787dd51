"""Clocks, hours and small helpers shared by the booking tests."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.models import Reservation, ReservationSeries
from core.audit import AuditEntry
from core.mail import OutboundEmail
from tests.factories import row_counts

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

# December 2026: Tue 1, Wed 2, Thu 3, Fri 4, Sat 5, Sun 6, Mon 7.
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=SH)
OFFICE_HOURS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "08:00-18:00")
EVERY_DAY_9_TO_17 = dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "09:00-17:00")


def sh(day: int, hour: int, minute: int = 0, *, month: int = 12, year: int = 2026) -> datetime:
    """A wall time in Shanghai (December 2026 unless told otherwise)."""
    return datetime(year, month, day, hour, minute, tzinfo=SH)


def written(db: Session) -> dict[str, int]:
    """What a booking service may write: reservations, series, audit entries, e-mails."""
    return row_counts(db, Reservation, ReservationSeries, AuditEntry, OutboundEmail)


def audit_actions(db: Session, since_id: int = 0) -> list[str]:
    return list(db.scalars(select(AuditEntry.action).where(AuditEntry.id > since_id).order_by(AuditEntry.id)))


def last_audit_id(db: Session) -> int:
    return db.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1)) or 0


def mails(db: Session, topic: str | None = None) -> list[OutboundEmail]:
    query = select(OutboundEmail).order_by(OutboundEmail.id)
    if topic is not None:
        query = query.where(OutboundEmail.topic == topic)
    return list(db.scalars(query))


def mail_topics(db: Session) -> list[tuple[str, str]]:
    """(topic, recipient) of every queued e-mail, in order."""
    return [(m.topic, m.to_address) for m in mails(db)]
