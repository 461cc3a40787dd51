"""A year of past use for the demo, so that the open-sharing reports and dashboards have something to show.

Reservations from a year ago up to a month ago on every instrument, busier on some than on others (the
provincial yardsticks of 800 / 1,200 / 1,400 effective hours a year then split the instruments); on metered
instruments each used booking gets a measured usage session inside the booking's tolerance, so reconciliation
finds no exceptions. Then every finished month is reconciled and closed with the real billing services, and the
demo's tech SMEs pay part of their charges with vouchers granted at the start of each quarter.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.charges import close_period
from billing.models import BillingPeriod, Charge, CustomerClass
from billing.reconcile import reconcile_period
from billing.voucher_models import Voucher, VoucherProgramme
from billing.vouchers import apply_voucher_to_charge, create_sichuan_reference_programme, grant_voucher, holder_refusal
from booking.hours import parse_span
from booking.models import Reservation, ReservationState, Resource, ResourceKind
from booking.rules import Rules
from core.accounts.models import Organisation, Role, User, UserRole
from core.errors import DomainError
from core.timeutil import utcnow
from devices.models import Device, UsageSession

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HISTORY_DAYS = 365
RECENT_DAYS = 30  # the last month is left to seed_demo_bookings' calendar around today


def _month_start(day: date) -> date:
    return day.replace(day=1)


def seed_demo_history(db: Session, *, now: datetime | None = None) -> dict[str, int]:
    """Idempotent: does nothing when reservations older than RECENT_DAYS exist. Returns what it made."""
    now = now or utcnow()
    cutoff = now - timedelta(days=RECENT_DAYS)
    if db.scalar(select(func.count()).select_from(Reservation).where(Reservation.starts_at < cutoff)):
        return {}
    rng = random.Random(20261126)  # noqa: S311 -- not for secrets: the same demo history every time
    bookers = list(db.scalars(select(User).join(UserRole).where(UserRole.role == Role.RESEARCHER).order_by(User.id)))
    if not bookers:
        return {}
    insiders: dict[int, list[User]] = {}
    for user in bookers:
        insiders.setdefault(user.organisation_id, []).append(user)
    devices = {d.resource_id: d for d in db.scalars(select(Device).order_by(Device.id))}
    made = {"past reservations": 0, "usage sessions": 0}
    resources = list(db.scalars(select(Resource).where(Resource.kind == ResourceKind.INSTRUMENT)
                                .order_by(Resource.id)))
    for resource in resources:
        busy = rng.choice((0.15, 0.35, 0.55, 0.75, 0.9))  # share of open days with bookings
        rules = Rules.of(resource)
        tz: ZoneInfo = rules.tz
        device = devices.get(resource.id)
        last_day = cutoff.astimezone(tz).date()
        day = last_day - timedelta(days=HISTORY_DAYS - RECENT_DAYS)
        while day < last_day:
            span = rules.hours.get(WEEKDAYS[day.weekday()])
            day_start = datetime.combine(day, time(0), tzinfo=tz)
            day += timedelta(days=1)
            if not span or rng.random() > busy:
                continue
            open_min, close_min = parse_span(span)
            cursor = open_min + 30 * rng.randint(0, 2)
            for _ in range(rng.randint(1, 3)):
                length = min(max(rules.min_duration_min, 60 * rng.randint(2, 5)), rules.max_duration_min)
                if cursor + length > close_min:
                    break
                start = day_start + timedelta(minutes=cursor)
                end = start + timedelta(minutes=length)
                # a facility's own people book their instruments too: about a third of its use is internal
                own = insiders.get(resource.facility.owner_id)
                booker = rng.choice(own) if own and rng.random() < 0.35 else rng.choice(bookers)
                state = ReservationState.NO_SHOW if rng.random() < 0.06 else ReservationState.COMPLETED
                db.add(Reservation(resource_id=resource.id, user_id=booker.id, billed_org_id=booker.organisation_id,
                                   starts_at=start, ends_at=end, state=state, purpose="demo"))
                made["past reservations"] += 1
                if device is not None and state == ReservationState.COMPLETED:
                    # measured inside the card's 15-minute tolerance: a clean reconciliation
                    began = start + timedelta(minutes=rng.randint(0, 8))
                    ended = end - timedelta(minutes=rng.randint(0, 10))
                    start_ns, end_ns = int(began.timestamp()) * 10**9, int(ended.timestamp()) * 10**9
                    db.add(UsageSession(device_pk=device.id, start_ns=start_ns, end_ns=end_ns, started_at=began,
                                        ended_at=ended, truncated=False, run_id="", operator="", samples=None,
                                        start_decided_ns=start_ns, end_decided_ns=end_ns))
                    made["usage sessions"] += 1
                cursor += length + 30 * rng.randint(0, 3)
    db.flush()
    made.update(_close_past_months(db, now, rng))
    return made


def _close_past_months(db: Session, now: datetime, rng: random.Random) -> dict[str, int]:
    """Reconcile and close every finished month of the history; apply the tech SMEs' vouchers."""
    first = db.scalar(select(func.min(Reservation.starts_at)))
    if first is None:
        return {}
    month = _month_start(first.date())
    this_month = _month_start(now.date())
    closed, charges, applied = 0, 0, 0
    while month < this_month:
        if db.scalar(select(BillingPeriod.id).where(BillingPeriod.month == month,
                                                    BillingPeriod.closed_at.is_not(None))):
            month = _month_start(month + timedelta(days=32))
            continue
        reconcile_period(db, None, month, now=now)
        try:
            report = close_period(db, None, month, now=now)
        except DomainError:
            break  # exceptions a lab manager must resolve: leave the rest of the history open, as in real life
        closed += 1
        charges += report.charges
        applied += _apply_vouchers(db, month, rng)
        month = _month_start(month + timedelta(days=32))
    return {"closed months": closed, "charges": charges, "voucher applications": applied}


def _apply_vouchers(db: Session, month: date, rng: random.Random) -> int:
    programme = db.scalar(select(VoucherProgramme).where(VoucherProgramme.year == month.year))
    if programme is None:
        programme = create_sichuan_reference_programme(db, None, month.year, budget=Decimal("3000000.00"))
    quarter = date(month.year, (month.month - 1) // 3 * 3 + 1, 1)
    applied = 0
    for charge in db.scalars(select(Charge).join(BillingPeriod).where(
            BillingPeriod.month == month, Charge.customer_class == CustomerClass.ENTERPRISE).order_by(Charge.id)):
        holder = db.get(Organisation, charge.organisation_id)
        if holder is None or holder_refusal(programme, holder) is not None or rng.random() > 0.6:
            continue
        voucher = db.scalar(select(Voucher).where(Voucher.programme_id == programme.id,
                                                  Voucher.holder_id == holder.id, Voucher.valid_from == quarter))
        if voucher is None:
            try:
                voucher = grant_voucher(db, None, programme.id, holder.id, on=quarter)
            except DomainError:
                continue  # the budget or the holder's annual cap is used up
        try:
            applied += len(apply_voucher_to_charge(db, None, voucher.id, charge.id, on=charge.service_date))
        except DomainError:
            continue
    return applied
