"""The booking rules of a resource, checked on a proposed window. Pure: no database, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from booking.hours import ALL_DAY, within_hours
from booking.models import Resource, ResourceKind


@dataclass(frozen=True)
class Rules:
    granularity_min: int
    min_duration_min: int
    max_duration_min: int
    lead_time_min: int
    horizon_days: int
    hours: dict
    tz: ZoneInfo
    batch_days: int | None = None

    @classmethod
    def of(cls, resource: Resource, facility: Any = None) -> Rules:
        """The rules of a resource. `resource` and `facility` may also be rows holding just the columns of the
        same names (the catalog's time-first search reads those, not whole resources)."""
        facility = resource.facility if facility is None else facility
        hours = resource.bookable_hours or (
            ALL_DAY if resource.kind == ResourceKind.PILOT_LINE else facility.opening_hours)
        return cls(resource.granularity_min, resource.min_duration_min, resource.max_duration_min,
                   resource.lead_time_min, resource.horizon_days, hours, ZoneInfo(facility.timezone),
                   resource.batch_days)


def _human_duration(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440} d"
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"


def window_violations(rules: Rules, start: datetime, end: datetime, now: datetime, *,
                      enforce_lead_time: bool = True) -> list[dict[str, Any]]:
    """Every rule the window [start, end) breaks, as {"code": …, params…}; empty when it is bookable."""
    if end <= start:
        return [{"code": "invalid_window"}]
    problems: list[dict[str, Any]] = []
    if start < now:
        problems.append({"code": "starts_in_past"})
    elif enforce_lead_time and start < now + timedelta(minutes=rules.lead_time_min):
        problems.append({"code": "lead_time", "lead": _human_duration(rules.lead_time_min)})
    if start > now + timedelta(days=rules.horizon_days):
        problems.append({"code": "beyond_horizon", "days": rules.horizon_days})
    minutes = (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() / 60  # real minutes, not wall clock
    local_start, local_end = start.astimezone(rules.tz), end.astimezone(rules.tz)
    if rules.granularity_min == 1440:
        if (local_start.hour, local_start.minute, local_end.hour, local_end.minute) != (0, 0, 0, 0) or \
                local_start.second or local_end.second:
            problems.append({"code": "whole_days"})
        days = (local_end.date() - local_start.date()).days
        if rules.batch_days and days % rules.batch_days:
            problems.append({"code": "batch_length", "days": rules.batch_days})
        # a day across a DST change has 23 or 25 hours: compare days, not minutes
        minutes = days * 1440
    else:
        for moment in (local_start, local_end):
            if moment.second or moment.microsecond or (moment.hour * 60 + moment.minute) % rules.granularity_min:
                problems.append({"code": "granularity", "minutes": rules.granularity_min})
                break
    if minutes < rules.min_duration_min:
        problems.append({"code": "too_short", "minutes": rules.min_duration_min})
    if minutes > rules.max_duration_min:
        problems.append({"code": "too_long", "minutes": rules.max_duration_min})
    if not within_hours(rules.hours, rules.tz, start.astimezone(UTC), end.astimezone(UTC)):
        problems.append({"code": "outside_bookable_hours"})
    return problems
