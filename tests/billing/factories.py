"""Factories for the billing tables and the measured use they reconcile: `make_x(db, **overrides)`, flushed."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from billing.models import BillingUnit, ChargeBasis, RateCard
from devices.models import Device, UsageSession

_seq = itertools.count(1)

# A month safely in the past for every test: closing needs the month to be over.
MONTH = "2026-09"
IN_MONTH = datetime(2026, 9, 8, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai, a Tuesday
AFTER_MONTH = datetime(2026, 10, 5, tzinfo=UTC)  # "now" for reconciling and closing MONTH


def make_rate_card(db: Session, resource: Any, **overrides: Any) -> RateCard:
    """A card valid from 2026-01-01 without end: hourly per started quarter hour, booked basis."""
    values = dict(valid_from=date(2026, 1, 1), valid_to=None, unit=BillingUnit.QUARTER_HOUR,
                  price_internal=Decimal("100.00"), price_academic=Decimal("200.00"),
                  price_enterprise=Decimal("400.00"), minimum_charge=Decimal("0.00"), setup_fee=Decimal("0.00"),
                  technician_fee_per_hour=Decimal("0.00"), no_show_fraction=Decimal("0.5"),
                  late_cancellation_fraction=Decimal("0.25"), basis=ChargeBasis.BOOKED, tolerance_min=15)
    values.update(overrides)
    card = RateCard(resource_id=resource.id, **values)
    db.add(card)
    db.flush()
    return card


def make_usage_session(db: Session, device: Device, started_at: datetime, ended_at: datetime | None,
                       **overrides: Any) -> UsageSession:
    start_ns = int(started_at.timestamp()) * 1_000_000_000 + next(_seq)  # unique per device
    end_ns = int(ended_at.timestamp()) * 1_000_000_000 + 1_000_000 if ended_at is not None else None
    values = dict(device_pk=device.id, start_ns=start_ns, end_ns=end_ns, started_at=started_at,
                  ended_at=ended_at, truncated=False, run_id="", operator="", samples=None,
                  start_decided_ns=start_ns, end_decided_ns=end_ns)
    values.update(overrides)
    row = UsageSession(**values)
    db.add(row)
    db.flush()
    return row
