"""E-mails about reservations (booking.notifications) and their delivery from the outbox (core.mail).

Delivery is tested against a real SMTP server (aiosmtpd) on a free loopback port, started by the test.
NOW is Tuesday 1 December 2026, 08:00 in Shanghai.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.parser import BytesParser
from email.policy import default as default_policy

import pytest
from aiosmtpd.controller import Controller

import core.mail
from booking.models import FacilityManager, Reservation, ReservationState
from booking.notifications import SUBJECTS, reservation_event, send_reminders
from booking.reservations import (
    BookingRequest,
    approve_reservation,
    cancel_reservation,
    create_reservation,
    modify_reservation,
    reject_reservation,
)
from core.accounts.models import Role
from core.mail import MAX_ATTEMPTS, OutboundEmail, SmtpSettings, enqueue, send_pending
from core.timeutil import utcnow
from tests.booking.helpers import NOW, OFFICE_HOURS, mails, sh, written
from tests.factories import make_facility, make_reservation, make_resource, make_user

S = ReservationState


WED_9, WED_11 = sh(2, 9), sh(2, 11)


def book(db, user, resource, start=WED_9, end=WED_11) -> Reservation:
    return create_reservation(db, user, BookingRequest(resource.id, start, end), now=NOW)


def new_mails(db, before: set[int]) -> list[OutboundEmail]:
    return [m for m in mails(db) if m.id not in before]


@pytest.fixture
def en_manager(db):
    return make_user(db, roles=(Role.LAB_MANAGER,), locale="en", name_en="Dr. Manager", name_zh="管理员")


@pytest.fixture
def en_researcher(db):
    return make_user(db, locale="en", name_en="Alice Researcher", name_zh="爱丽丝")


@pytest.fixture
def lab(db, en_manager):
    return make_facility(db, managers=(en_manager,), opening_hours=OFFICE_HOURS, name_en="Materials Lab",
                         name_zh="材料实验室")


@pytest.fixture
def sem(db, lab):
    return make_resource(db, facility=lab, name_en="Scanning electron microscope", name_zh="扫描电子显微镜")


@pytest.fixture
def sem_with_approval(db, lab):
    return make_resource(db, facility=lab, name_en="Cryo-TEM", name_zh="冷冻透射电镜", approval_required=True)


# --- which e-mails, to whom, in which language -------------------------------------------------------------

WHEN = "2026-12-02 09:00"


def confirmed(db, user, manager, sem, approval):
    return book(db, user, sem)


def requested(db, user, manager, sem, approval):
    return book(db, user, approval)


def approved(db, user, manager, sem, approval):
    r = book(db, user, approval)
    return approve_reservation(db, manager, r.id, now=NOW)


def rejected(db, user, manager, sem, approval):
    r = book(db, user, approval)
    return reject_reservation(db, manager, r.id, note="Please send the MSDS first.", now=NOW)


def cancelled(db, user, manager, sem, approval):
    r = book(db, user, sem)
    return cancel_reservation(db, user, r.id, now=NOW)


def modified(db, user, manager, sem, approval):
    r = book(db, user, sem)
    return modify_reservation(db, user, r.id, starts_at=sh(3, 9), ends_at=sh(3, 11), now=NOW)


@pytest.mark.parametrize(("action", "expected"), [
    (confirmed, [("reservation.confirmed", "user", "Booking confirmed: Scanning electron microscope, " + WHEN)]),
    (requested, [("reservation.requested", "user", "Booking request received: Cryo-TEM, " + WHEN),
                 ("reservation.requested.manager", "manager",
                  "To approve: Alice Researcher booked Cryo-TEM, " + WHEN)]),
    (approved, [("reservation.approved", "user", "Booking approved: Cryo-TEM, " + WHEN)]),
    (rejected, [("reservation.rejected", "user", "Booking rejected: Cryo-TEM, " + WHEN)]),
    (cancelled, [("reservation.cancelled", "user", "Booking cancelled: Scanning electron microscope, " + WHEN),
                 ("reservation.cancelled.manager", "manager",
                  "Booking cancelled: Scanning electron microscope, " + WHEN)]),
    (modified, [("reservation.modified", "user", "Booking changed: Scanning electron microscope, 2026-12-03 09:00")]),
], ids=lambda v: v.__name__ if callable(v) else "")
def test_each_event_queues_its_mails_in_english(db, en_researcher, en_manager, sem, sem_with_approval, action,
                                                expected):
    # the mails of the setup steps (the booking before an approval, …) are not what this row is about
    setup_topics = {"approved": 2, "rejected": 2, "cancelled": 1, "modified": 1}.get(action.__name__, 0)
    action(db, en_researcher, en_manager, sem, sem_with_approval)
    got = mails(db)[setup_topics:]
    people = {"user": en_researcher, "manager": en_manager}
    assert [(m.topic, m.to_address, m.user_id, m.subject) for m in got] == [
        (topic, people[to].email, people[to].id, "[LabShare] " + subject) for topic, to, subject in expected]


def test_confirmation_body(db, en_researcher, sem):
    r = book(db, en_researcher, sem)
    (mail,) = mails(db)
    assert mail.body.splitlines() == [
        "Scanning electron microscope (Materials Lab)",
        "From 2026-12-02 09:00 to 2026-12-02 11:00 (Asia/Shanghai)",
        "Booked by: Alice Researcher",
        "Status: confirmed",
        f"Reservation number: {r.id}",
    ]


def test_rejection_body_carries_the_note(db, en_researcher, en_manager, sem, sem_with_approval):
    rejected(db, en_researcher, en_manager, sem, sem_with_approval)
    (mail,) = mails(db, "reservation.rejected")
    assert "Status: rejected" in mail.body
    assert mail.body.rstrip().endswith("Please send the MSDS first.")


def test_each_recipient_gets_their_own_language(db, en_manager, sem_with_approval):
    zh_user = make_user(db, locale="zh_CN", name_zh="张三", name_en="Zhang San")
    book(db, zh_user, sem_with_approval)
    to_user, to_manager = mails(db)
    assert (to_user.to_address, to_manager.to_address) == (zh_user.email, en_manager.email)
    # Chinese: the resource's Chinese name (the template is translated once the catalog has it)
    assert to_user.subject.strip()
    assert "冷冻透射电镜" in to_user.subject
    assert "Cryo-TEM" not in to_user.subject
    assert "张三" in to_user.body
    # English for the manager, naming the requester in English
    assert to_manager.subject == f"[LabShare] To approve: Zhang San booked Cryo-TEM, {WHEN}"


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
@pytest.mark.parametrize("event", [e for e in SUBJECTS if e != "waitlist"])
def test_every_event_renders_in_every_language(db, sem, locale, event):
    """A translation whose placeholders do not match the template would fail here, not in the mail queue."""
    user = make_user(db, locale=locale)
    reservation = make_reservation(db, resource=sem, user=user, starts_at=sh(2, 9), ends_at=sh(2, 11))
    reservation_event(db, reservation, event)
    mail, *to_managers = mails(db)  # requests and cancellations also go to the (English) manager
    assert mail.to_address == user.email
    name = sem.name_en if locale == "en" else sem.name_zh
    assert mail.subject.startswith("[LabShare] ")
    assert name in mail.subject
    assert "2026-12-02 09:00" in mail.subject
    assert str(reservation.id) in mail.body
    assert len(to_managers) == (1 if event in ("requested", "cancelled") else 0)
    assert all("%(" not in m.subject + m.body for m in mails(db))


def test_managers_who_are_inactive_or_the_owner_are_not_told(db, en_manager, lab, sem):
    away = make_user(db, roles=(Role.LAB_MANAGER,), active=False)
    colleague = make_user(db, roles=(Role.LAB_MANAGER,))
    for user in (away, colleague):
        db.add(FacilityManager(facility_id=lab.id, user_id=user.id))
    db.flush()
    db.expire(lab, ["managers"])
    r = book(db, en_manager, sem)
    cancel_reservation(db, en_manager, r.id, now=NOW)
    assert [(m.topic, m.to_address) for m in mails(db)] == [
        ("reservation.confirmed", en_manager.email),
        ("reservation.cancelled", en_manager.email),
        ("reservation.cancelled.manager", colleague.email),
    ]


def test_a_rolled_back_booking_sends_nothing(db, en_researcher, sem):
    before = written(db)
    savepoint = db.begin_nested()
    book(db, en_researcher, sem)
    assert len(mails(db)) == 1
    savepoint.rollback()
    assert written(db) == before
    assert mails(db) == []


def test_a_refused_booking_sends_nothing(db, en_researcher, sem):
    book(db, make_user(db), sem)
    before = written(db)
    with pytest.raises(Exception, match="overlaps"):
        book(db, en_researcher, sem, sh(2, 10), sh(2, 12))
    assert written(db) == before


# --- reminders ---------------------------------------------------------------------------------------------

def test_reminders_are_queued_once_per_reservation_within_24_hours(db, en_researcher, sem):
    def at(hours: float) -> Reservation:
        start = NOW + timedelta(hours=hours)
        return make_reservation(db, resource=sem, user=en_researcher, starts_at=start,
                                ends_at=start + timedelta(hours=1))

    soon, edge, tomorrow, started = at(10), at(24), at(30), at(-0.5)
    make_reservation(db, resource=sem, user=en_researcher, starts_at=NOW + timedelta(hours=5),
                     ends_at=NOW + timedelta(hours=6), state=S.PENDING)
    make_reservation(db, resource=sem, user=en_researcher, starts_at=NOW + timedelta(hours=7),
                     ends_at=NOW + timedelta(hours=8), state=S.CANCELLED)

    assert send_reminders(db, now=NOW) == 2
    reminders = mails(db, "reservation.reminder")
    assert [m.to_address for m in reminders] == [en_researcher.email] * 2
    assert sorted(m.subject for m in reminders) == sorted(
        f"[LabShare] Reminder: Scanning electron microscope, {r.starts_at.astimezone(NOW.tzinfo):%Y-%m-%d %H:%M}"
        for r in (soon, edge))
    assert (soon.reminder_sent_at, edge.reminder_sent_at, tomorrow.reminder_sent_at, started.reminder_sent_at) == (
        NOW, NOW, None, None)

    assert send_reminders(db, now=NOW) == 0                        # idempotent
    assert send_reminders(db, now=NOW + timedelta(hours=1)) == 0
    assert send_reminders(db, now=NOW + timedelta(hours=7)) == 1   # tomorrow's is now within 24 h
    assert len(mails(db, "reservation.reminder")) == 3
    assert send_reminders(db, now=NOW + timedelta(hours=7)) == 0


# --- delivery over SMTP ------------------------------------------------------------------------------------

class Inbox:
    """An aiosmtpd handler that keeps what it receives and refuses recipients at @refused.test."""

    def __init__(self):
        self.messages = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.test"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = BytesParser(policy=default_policy).parsebytes(envelope.content)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def received(self) -> list[tuple[str, str, str]]:
        # Python folds a long Subject right after the colon; its parser then keeps the folding space
        return [(rcpt[0], str(msg["To"]), str(msg["Subject"]).lstrip()) for _, rcpt, msg in self.messages]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def smtp_server(port: int, inbox: Inbox) -> Iterator[Inbox]:
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def clock(monkeypatch):
    """core.mail's idea of now, moved by the test (the outbox rows themselves are stamped with real time)."""
    now = [utcnow() + timedelta(seconds=1)]
    monkeypatch.setattr(core.mail, "utcnow", lambda: now[0])
    return now


def settings_for(port: int) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, sender="LabShare <noreply@labshare.test>", timeout_s=5)


def test_send_pending_delivers_the_outbox(db, port, en_researcher, sem):
    zh_user = make_user(db)
    book(db, en_researcher, sem)
    book(db, zh_user, sem, sh(3, 9), sh(3, 11))
    enqueue(db, to="ops@example.test", subject="[LabShare] 测试 ✓", body="第一行\nsecond line", topic="test")
    db.flush()
    queued = mails(db)
    with smtp_server(port, Inbox()) as inbox:
        assert send_pending(db, settings_for(port)) == (3, 0)
        assert send_pending(db, settings_for(port)) == (0, 0)  # nothing is sent twice
    assert inbox.received() == [(m.to_address, m.to_address, m.subject) for m in queued]
    assert {frm for frm, _, _ in inbox.messages} == {"noreply@labshare.test"}
    assert str(inbox.messages[0][2]["From"]) == "LabShare <noreply@labshare.test>"
    assert inbox.messages[2][2].get_content().splitlines() == ["第一行", "second line"]  # CRLF on the wire
    assert "扫描电子显微镜" in inbox.messages[1][2]["Subject"]
    for message in queued:
        db.refresh(message)
        assert (message.attempts, message.last_error) == (1, "")
        assert message.sent_at is not None


def test_send_pending_when_the_server_is_down_backs_off_and_loses_nothing(db, port, clock, en_researcher, sem):
    with smtp_server(port, Inbox()):
        pass  # started and stopped: nothing listens on the port any more
    book(db, en_researcher, sem)
    enqueue(db, to="ops@example.test", subject="[LabShare] second", body="…", topic="test")
    db.flush()
    queued = mails(db)

    assert send_pending(db, settings_for(port)) == (0, 2)
    first_failure = clock[0]
    for message in queued:
        db.refresh(message)
        assert (message.sent_at, message.attempts) == (None, 1)
        assert message.last_error.startswith("ConnectionRefusedError")
        assert message.next_attempt_at == first_failure + timedelta(minutes=2)

    clock[0] += timedelta(minutes=1)
    assert send_pending(db, settings_for(port)) == (0, 0)  # not due yet
    clock[0] += timedelta(minutes=1)
    assert send_pending(db, settings_for(port)) == (0, 2)  # due, still down: the back-off doubles
    for message in queued:
        db.refresh(message)
        assert message.attempts == 2
        assert message.next_attempt_at == clock[0] + timedelta(minutes=4)

    clock[0] += timedelta(minutes=4)
    with smtp_server(port, Inbox()) as inbox:
        assert send_pending(db, settings_for(port)) == (2, 0)
        clock[0] += timedelta(hours=1)
        assert send_pending(db, settings_for(port)) == (0, 0)
    assert inbox.received() == [(m.to_address, m.to_address, m.subject) for m in queued]  # once each
    for message in queued:
        db.refresh(message)
        assert message.attempts == 3
        assert message.sent_at == clock[0] - timedelta(hours=1)


def test_a_refused_recipient_fails_alone(db, port, clock):
    enqueue(db, to="a@example.test", subject="one", body="1", topic="test")
    refused = enqueue(db, to="nobody@refused.test", subject="two", body="2", topic="test")
    enqueue(db, to="c@example.test", subject="three", body="3", topic="test")
    db.flush()
    with smtp_server(port, Inbox()) as inbox:
        assert send_pending(db, settings_for(port)) == (2, 1)
    assert [subject for _, _, subject in inbox.received()] == ["one", "three"]
    db.refresh(refused)
    assert (refused.sent_at, refused.attempts) == (None, 1)
    assert "SMTPRecipientsRefused" in refused.last_error
    assert refused.next_attempt_at == clock[0] + timedelta(minutes=2)


def test_send_pending_gives_up_after_max_attempts(db, port, clock):
    message = enqueue(db, to="a@example.test", subject="old", body="1", topic="test")
    message.attempts = MAX_ATTEMPTS
    db.flush()
    with smtp_server(port, Inbox()) as inbox:
        assert send_pending(db, settings_for(port)) == (0, 0)
    assert inbox.messages == []
    db.refresh(message)
    assert message.sent_at is None
