"""Time helpers: everything is timezone-aware, stored in UTC and shown in a facility's zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Shanghai"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; naive datetimes are refused because their meaning is a guess."""
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        raise ValueError("naive datetime: a time zone offset is required")
    return moment.astimezone(UTC)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "America"
        raise ValueError(f"unknown time zone: {name!r}") from None


def to_local(moment: datetime, tz_name: str = DEFAULT_TIMEZONE) -> datetime:
    return as_utc(moment).astimezone(zone(tz_name))
