"""Schemathesis against the app's own /api/v1/openapi.json: no generated request may get a 5xx.

Every operation of the document is exercised in-process through the WSGI app with bounded, derandomised
Hypothesis runs: valid inputs (with random ids, and with ids of rows that exist so that requests get past the
404s) and invalid inputs. The caller has the lab_manager and admin roles, so most endpoints get past
authorisation. One fresh database per backend, migrated and loaded with the demo data set and its bookings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from sqlalchemy import select
from sqlalchemy.engine import Engine

from billing.models import (
    BillingPeriod,
    BillingUnit,
    Charge,
    ChargeLine,
    ChargeLineKind,
    CustomerClass,
    ItemStatus,
    RateCard,
    ReconciliationItem,
    ReconciliationKind,
    Statement,
)
from billing.voucher_models import Voucher, VoucherClaim
from billing.vouchers import create_programme, sichuan_reference_programme
from booking.models import (
    Blackout,
    BlackoutKind,
    Qualification,
    Reservation,
    ReservationState,
    Resource,
    SampleRequest,
    WaitlistEntry,
)
from core.accounts.models import Role, User
from core.accounts.tokens import create_token
from core.db import make_engine, make_sessionmaker
from core.settings import load_settings
from core.timeutil import utcnow
from devices.registry import DeviceData, add_device
from migrations import runner
from tests.conftest import BACKENDS, create_pg_database, drop_pg_database
from tests.factories import make_token, make_user
from web.demo.seed import seed_demo, seed_demo_bookings

MAX_EXAMPLES = 25  # per operation, once with valid and once with invalid input
HYPOTHESIS_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a 5xx is reported as found; shrinking would only cost time
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Target:
    app: Flask
    engine: Engine
    user_id: int
    known_ids: dict[str, int | str]
    tokens_made: int = 0
    statuses: Counter = field(default_factory=Counter)

    def fresh_token(self) -> str:
        """A new token for the caller: an operation under test (DELETE /tokens/{id}) may revoke the previous one."""
        self.tokens_made += 1
        with make_sessionmaker(self.engine)() as db:
            user = db.get(User, self.user_id)
            secret = create_token(db, user, user, f"schemathesis {self.tokens_made}")[1]
            db.commit()
        return secret


def _known_ids(db, user: User) -> dict[str, int | str]:
    """Rows of every kind a path names, so that generated requests also reach the code behind the 404s."""
    now = utcnow()
    resource = db.scalar(select(Resource).order_by(Resource.id).limit(1))
    upcoming = db.scalar(select(Reservation.id).where(Reservation.state.in_(
        (ReservationState.PENDING, ReservationState.CONFIRMED)), Reservation.starts_at > now).limit(1))
    later = now.replace(microsecond=0) + timedelta(days=400)
    blackout = Blackout(resource_id=resource.id, starts_at=later, ends_at=later + timedelta(hours=2),
                        kind=BlackoutKind.MAINTENANCE)
    sample = SampleRequest(resource_id=resource.id, user_id=user.id, billed_org_id=user.organisation_id,
                           sample_count=1, description="fuzz")
    entry = WaitlistEntry(resource_id=resource.id, user_id=user.id, starts_at=later, ends_at=later + timedelta(hours=1))
    qualification = Qualification(resource_id=resource.id, user_id=user.id)
    db.add_all([blackout, sample, entry, qualification])
    spare_token = make_token(db, user, name="spare")[0]
    device = add_device(db, None, DeviceData("fuzz-device", resource.id, "status"))[0]
    programme = create_programme(db, None, sichuan_reference_programme(now.year, budget=Decimal("1000000")))
    db.flush()
    # written directly: the grant service takes SQLite's write lock first, and this session has begun already
    voucher = Voucher(programme_id=programme.id, holder_id=user.organisation_id, number="FUZZ-1",
                      amount=Decimal("1000.00"), balance=Decimal("1000.00"), valid_from=now.date(),
                      valid_until=now.date() + timedelta(days=90))
    db.add(voucher)
    # billing rows for the billing API's paths (written directly, as the voucher above)
    card = RateCard(resource_id=resource.id, valid_from=date(2099, 1, 1), unit=BillingUnit.HOUR,
                    price_internal=Decimal("1.00"), price_academic=Decimal("2.00"), price_enterprise=Decimal("3.00"))
    period = BillingPeriod(month=date(2025, 1, 1))
    db.add_all([card, period])
    db.flush()
    item = ReconciliationItem(period_id=period.id, resource_id=resource.id, kind=ReconciliationKind.USED,
                              reservation_id=upcoming, service_date=date(2025, 1, 15), status=ItemStatus.OPEN)
    statement = Statement(period_id=period.id, organisation_id=user.organisation_id, number="ST-2025-01-9999",
                          total=Decimal("10.00"))
    db.add_all([item, statement])
    db.flush()
    charge = Charge(period_id=period.id, organisation_id=user.organisation_id, resource_id=resource.id,
                    facility_id=resource.facility_id, service_date=date(2025, 1, 15),
                    customer_class=CustomerClass.ACADEMIC, total=Decimal("10.00"), statement_id=statement.id,
                    lines=[ChargeLine(kind=ChargeLineKind.USAGE, description="fuzz", quantity=Decimal(1),
                                      unit="hour", unit_price=Decimal("10.00"), amount=Decimal("10.00"))])
    claim = VoucherClaim(programme_id=programme.id, period_id=period.id, claimant_id=user.organisation_id,
                         mode=programme.redemption_mode)
    db.add_all([charge, claim])
    db.flush()
    return {"resource_id": resource.id, "reservation_id": upcoming, "token_id": spare_token.id,
            "blackout_id": blackout.id, "request_id": sample.id, "entry_id": entry.id,
            "qualification_id": qualification.id, "facility_id": resource.facility_id,
            "user_id": make_user(db).id, "device_pk": device.id, "voucher_id": voucher.id,
            "rate_card_id": card.id, "month": "2025-01", "item_id": item.id, "charge_id": charge.id,
            "statement_id": statement.id, "claim_id": claim.id}


@pytest.fixture(scope="module", params=BACKENDS)
def target(request, tmp_path_factory) -> Iterator[Target]:
    backend = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'labshare.db'}"
    else:
        url = create_pg_database("labshare_fuzz")
    runner.upgrade(url)
    engine = make_engine(url)
    with make_sessionmaker(engine)() as db:
        seed_demo(db)
        seed_demo_bookings(db)
        user = make_user(db, roles=(Role.LAB_MANAGER, Role.ADMIN))
        known = _known_ids(db, user)
        user_id = user.id
        db.commit()
    from web import create_app

    app = create_app(load_settings(environ={}, env="test", database_url=url), engine=engine)
    try:
        yield Target(app, engine, user_id, known)
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_pg_database(url)


def _exercise(target: Target, strategy, headers: dict[str, str]) -> None:
    @HYPOTHESIS_SETTINGS
    @given(case=strategy)
    def exercise(case):
        response = case.call(headers=headers)
        target.statuses[response.status_code // 100] += 1
        case.validate_response(response, checks=[not_a_server_error])

    exercise()


def test_no_generated_request_gets_a_server_error(target):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", target.app)
    failures: list[str] = []
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        headers = {"Authorization": f"Bearer {target.fresh_token()}"}
        names = [p.name for p in operation.path_parameters]
        valid = [operation.as_strategy()]
        if names:
            valid.append(operation.as_strategy(path_parameters={n: target.known_ids[n] for n in names}))
        invalid = operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)
        for strategy in (st.one_of(valid), invalid):
            try:
                _exercise(target, strategy, headers)
            except (Exception, BaseExceptionGroup) as exc:  # every operation's failure, reported together
                failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert len(labels) >= 36
    assert {"POST /api/v1/reservations", "GET /api/v1/resources/{resource_id}/availability",
            "POST /api/v1/reservations/series", "POST /api/v1/calendar-feeds"} <= set(labels)
    # the run got past authentication and validation often enough to mean something
    assert target.statuses[2] >= 100, target.statuses
    assert target.statuses[4] >= 100, target.statuses
