"""Outgoing e-mail through an outbox table: written in the same transaction as the change it reports,
sent afterwards by `send_pending`, so a message is neither lost when SMTP is down nor sent for a change
that was rolled back."""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base
from core.timeutil import utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8


class OutboundEmail(Base):
    __tablename__ = "outbound_email"

    id: Mapped[int] = mapped_column(primary_key=True)
    to_address: Mapped[str] = mapped_column(String(254))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"), index=True)
    topic: Mapped[str] = mapped_column(String(64))  # e.g. reservation.approved, for tests and the admin
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_s: float = 10.0


def enqueue(db: Session, *, to: str, subject: str, body: str, topic: str, user_id: int | None = None) -> OutboundEmail:
    message = OutboundEmail(to_address=to, subject=subject, body=body, topic=topic, user_id=user_id)
    db.add(message)
    return message


def send_pending(db: Session, smtp: SmtpSettings, limit: int = 100) -> tuple[int, int]:
    """Send due messages; returns (sent, failed). Failures back off exponentially and are retried."""
    now = utcnow()
    due = db.scalars(select(OutboundEmail).where(
        OutboundEmail.sent_at.is_(None), OutboundEmail.attempts < MAX_ATTEMPTS,
        OutboundEmail.next_attempt_at <= now).order_by(OutboundEmail.id).limit(limit)).all()
    if not due:
        return 0, 0
    sent = failed = 0
    try:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
    except OSError as exc:
        for message in due:
            _failed(message, exc, now)
        db.commit()
        return 0, len(due)
    with client:
        try:
            if smtp.starttls:
                client.starttls()
            if smtp.username:
                client.login(smtp.username, smtp.password)
        except (smtplib.SMTPException, OSError) as exc:  # the server is there but will not take mail
            for message in due:
                _failed(message, exc, now)
            db.commit()
            return 0, len(due)
        for message in due:
            email = EmailMessage()
            email["From"], email["To"], email["Subject"] = smtp.sender, message.to_address, message.subject
            email.set_content(message.body)
            try:
                client.send_message(email)
            except (smtplib.SMTPException, OSError) as exc:
                _failed(message, exc, now)
                failed += 1
            else:
                message.sent_at, message.attempts = utcnow(), message.attempts + 1
                sent += 1
            db.commit()  # each message's outcome is durable on its own
    return sent, failed


def _failed(message: OutboundEmail, exc: Exception, now: datetime) -> None:
    message.attempts += 1
    message.last_error = f"{type(exc).__name__}: {exc}"[:1000]
    message.next_attempt_at = now + timedelta(minutes=2 ** message.attempts)
    log.warning("e-mail %s to %s failed (attempt %s): %s", message.id, message.to_address, message.attempts, exc)
