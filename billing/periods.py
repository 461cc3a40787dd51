"""Billing periods: calendar months of service dates, found or opened on demand, locked while they are worked on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing.errors import PeriodClosed
from billing.models import BillingPeriod, PeriodState
from core.accounts.models import Role, User
from core.errors import N_, Forbidden, InvalidInput
from core.timeutil import DEFAULT_TIMEZONE, to_local, utcnow

# Time zones lie within UTC-12 … UTC+14: a month's service dates, in any facility's zone, fall inside this
# much slack around the month's UTC bounds.
ZONE_SLACK = timedelta(hours=14)


@dataclass(frozen=True, slots=True)
class Month:
    first_day: date

    @property
    def next_first_day(self) -> date:
        return date(self.first_day.year + self.first_day.month // 12, self.first_day.month % 12 + 1, 1)

    @property
    def label(self) -> str:
        return f"{self.first_day:%Y-%m}"

    def contains(self, day: date) -> bool:
        return self.first_day <= day < self.next_first_day

    def utc_bounds(self, slack: timedelta = ZONE_SLACK) -> tuple[datetime, datetime]:
        """UTC instants that enclose the month in every time zone, widened by `slack`."""
        start = datetime(self.first_day.year, self.first_day.month, 1, tzinfo=UTC)
        end = datetime(self.next_first_day.year, self.next_first_day.month, 1, tzinfo=UTC)
        return start - slack, end + slack

    def is_over(self, now: datetime) -> bool:
        """Over in every time zone (the month ends last at UTC-12)."""
        return now >= self.utc_bounds(timedelta(hours=12))[1]


def parse_month(value: str | date | Month) -> Month:
    """`YYYY-MM` (or a date in the month) as a Month; InvalidInput otherwise."""
    if isinstance(value, Month):
        return value
    if isinstance(value, date):
        return Month(value.replace(day=1))
    match = re.fullmatch(r"\s*(\d{4})-(\d{2})\s*", value or "")
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2000:
        raise InvalidInput({"month": [N_("Enter a month as YYYY-MM, such as 2026-11.")]})
    return Month(date(int(match.group(1)), int(match.group(2)), 1))


def current_month(now: datetime | None = None, tz_name: str = DEFAULT_TIMEZONE) -> Month:
    return Month(to_local(now or utcnow(), tz_name).date().replace(day=1))


def check_finance(actor: User | None) -> None:
    """Finance staff and admins run periods and money corrections; None is the trusted command line."""
    if actor is not None and not actor.has_role(Role.FINANCE, Role.ADMIN):
        raise Forbidden()


def find_period(db: Session, month: Month) -> BillingPeriod | None:
    return db.scalar(select(BillingPeriod).where(BillingPeriod.month == month.first_day))


def open_period(db: Session, month: Month, *, lock: bool = False) -> BillingPeriod:
    """The month's period, opened if it does not exist yet; `lock` takes its row lock (PostgreSQL) so that
    two closings or reconciliations of one month run one after the other."""
    period = find_period(db, month)
    if period is None:
        try:
            with db.begin_nested():
                db.add(BillingPeriod(month=month.first_day, state=PeriodState.OPEN))
        except IntegrityError:  # opened concurrently
            pass
    query = select(BillingPeriod).where(BillingPeriod.month == month.first_day)
    if lock and db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return db.execute(query.execution_options(populate_existing=True)).scalar_one()


def require_open(period: BillingPeriod) -> None:
    if period.state == PeriodState.CLOSED:
        raise PeriodClosed(month=f"{period.month:%Y-%m}", details={"period_id": period.id})
